"""Smoke test of benchmarks/bench_construction.py: the plan covers every family of the catalog, and the
--tiny run (SqueezeNet, one repeat) completes and writes the documented JSON.

No timing or memory asserts (those depend on the machine); only structure and exact facts.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from featx.backbones.catalog import FAMILIES, available_taps

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports benchmarks/common.py
    try:
        spec = importlib.util.spec_from_file_location("bench_construction", BENCHMARKS / "bench_construction.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_the_plan_has_one_arch_and_a_deep_tap_per_family():
    bench = load_script()
    chosen = bench.plan()
    expected = set(FAMILIES) if bench.has_timm() else set(FAMILIES) - {"dinov2"}
    assert set(chosen) == expected
    assert chosen["vgg"] == {"arch": "vgg19", "tap": "ttsr_lte"}  # the acceptance case of issue 20
    for family, choice in chosen.items():
        assert choice["arch"] in FAMILIES[family]
        if family != "vgg":
            names = [info.name for info in available_taps(choice["arch"])]
            assert names.index(choice["tap"]) == (2 * len(names)) // 3
    with pytest.raises(SystemExit, match="not in featx's catalog"):
        bench.plan(["lenet"])


def test_tiny_run_writes_json(tmp_path, capsys):
    result = load_script().main(["--tiny", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "construction.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["config"] == {"tiny": True, "repeats": 1, "families": ["squeezenet"]}
    machine = written["machine"]
    assert machine["torch"] == torch.__version__ and machine["torchvision"] == torchvision.__version__
    datetime.datetime.fromisoformat(machine["date_utc"])
    entry = written["families"]["squeezenet"]
    assert (entry["arch"], entry["checkpoint_format"]) == ("squeezenet1_1", "torch.save legacy (non-zip)")
    # Reference: torchvision's own model, whose every tensor the fabricated checkpoint holds.
    full = torchvision.models.squeezenet1_1()
    assert entry["results"]["common"]["params"] == sum(p.numel() for p in full.parameters())
    assert entry["results"]["featx_cold"]["params"] == entry["results"]["featx_warm"]["params"]
    assert 0 < entry["results"]["featx_warm"]["params"] < entry["results"]["common"]["params"]
    assert entry["results"]["featx_warm_cold_pages"]["params"] == entry["results"]["featx_warm"]["params"]
    for variant in ("common", "featx_cold", "featx_warm", "featx_warm_cold_pages"):
        res = entry["results"][variant]
        assert res["time_s_median"] > 0 and len(res["time_s"]) == len(res["peak_added_mib"]) == 1
    for variant in ("featx_cold", "featx_warm", "featx_warm_cold_pages"):
        assert set(entry["common_over_featx"][variant]) == {"time", "peak_memory", "pss"}
    assert "target" not in written  # only the VGG family carries the 50x target
    printed = capsys.readouterr().out
    assert "featx_warm" in printed and "squeezenet1_1 fire7.squeeze" in printed and str(tmp_path) in printed
