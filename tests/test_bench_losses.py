"""Smoke test of the loss benchmark: ``--quick`` runs every section on tiny inputs and writes JSON.

No timing asserts: the numbers of a quick run mean nothing. What is checked is the structure of
the results, the FLOP counter against docs/design.md's figures and an independent per-layer sum, and
that featx and the torchvision baseline compute the same loss (so the benchmark compares like
with like).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield importlib.import_module("bench_losses")
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "x.json"
    threads = torch.get_num_threads()
    try:
        results = bench.main(["--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return results, json.loads(out.read_text())


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_forward_gflop_matches_design_and_manual_sum(bench):
    # Reference 1: docs/design.md, "Performance model" (3.68 GFLOP to relu3_1, 12.74 to conv5_4 per 128x128 image).
    assert bench.forward_gflop("relu3_1", 128, 128) == pytest.approx(3.68, abs=0.005)
    assert bench.forward_gflop("conv5_4", 128, 128) == pytest.approx(12.74, abs=0.005)
    # Reference 2: the VGG19 conv widths written out by hand, 2*Cin*Cout*9*H*W per conv.
    convs = [(3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 2), (128, 256, 4)]
    manual = sum(2 * cin * cout * 9 * (64 // s) * (48 // s) for cin, cout, s in convs) / 1e9
    assert bench.forward_gflop("relu3_1", 64, 48) == pytest.approx(manual, rel=1e-12)


def test_quick_run_json_structure(quick_run):
    results, on_disk = quick_run
    assert on_disk == json.loads(json.dumps(results))  # what main returns is what it wrote
    assert on_disk["mode"] == "quick"
    machine = on_disk["machine"]
    for key in ("cpu_model", "logical_cores", "torch_threads", "torch", "date_utc"):
        assert key in machine
    assert on_disk["flops_check"]["reproduced"] is True
    assert _finite(on_disk["matmul_peak"]["median_gflops"])

    single = on_disk["single"]
    assert [row["config"] for row in single] == ["ttsr_lte", "real_esrgan", "conv5_4"]
    for row in single:
        assert set(row["timing"]) == {"matmul", "featx", "common", "piq"}
        for impl in ("featx", "common", "piq"):
            assert _finite(row["timing"][impl]["median_s"]) and row["timing"][impl]["median_s"] > 0
        for key in ("time_featx_over_common", "time_featx_over_piq", "time_featx_over_common_paired"):
            assert _finite(row["ratios"][key])
        assert _finite(row["percent_of_peak"]) and row["step_gflop"] > 0
    # --quick measures memory in a fresh process once: the first case's featx.
    memory = single[0]["memory"]["featx"]
    assert memory["peak_added_mb"] > 0 and memory["step_added_mb"] > 0

    combined = on_disk["combined"][0]
    assert set(combined["timing"]) == {"matmul", "featx_ps", "featx_pst", "piq"}
    assert _finite(combined["ratios"]["time_featx_ps_over_piq"])
    cached = on_disk["cached"][0]
    assert _finite(cached["ratios"]["time_cached_over_uncached"])
    bf16 = on_disk["bf16"][0]
    assert {(f["criterion"], f["pred"]) for f in bf16["fidelity"]} == {
        ("l1", "near"),
        ("l1", "far"),
        ("mse", "near"),
        ("mse", "far"),
    }
    for f in bf16["fidelity"]:
        assert 0.0 <= f["loss_rel_err"] < 0.5 and -1.0 <= f["grad_cosine"] <= 1.0
    allocator = on_disk["allocator"][0]
    assert set(allocator["runs"]) == {"glibc_default", "glibc_tuned"}
    for run in allocator["runs"].values():
        assert run["median_s"] > 0 and run["system_s_per_step"] >= 0 and run["minor_faults_per_step"] >= 0
    names = {check["name"] for check in on_disk["targets"]}
    assert {"time featx/common", "percent of fp32 matmul peak", "time cached/uncached target"} <= names
    assert all(isinstance(check["met"], bool) for check in on_disk["targets"])


def test_featx_and_baselines_compute_the_same_loss(quick_run):
    # Reference: the benchmark's torchvision baseline (full vgg19, clone per tap, F.l1_loss) with the
    # same weights; featx must give the same L1 perceptual loss, or the timings compare different work.
    _, on_disk = quick_run
    for row in on_disk["single"]:
        assert row["featx_vs_common_loss_rel_diff"] < 1e-4, row["config"]


def test_render_prints_every_section(bench, quick_run):
    results, _ = quick_run
    text = bench.render(results)
    titles = ("Single perceptual term", "Perceptual + style", "Fixed style target", "bf16 autocast", "Allocator", "Targets")
    for title in titles:
        assert title in text
