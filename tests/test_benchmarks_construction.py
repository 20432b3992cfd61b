"""Smoke test of benchmarks/bench_construction.py: the --small run completes and writes the documented JSON.

No timing or memory asserts (those depend on the machine); only structure and exact facts.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
from pathlib import Path

import torch
from torchvision.models.vgg import cfgs, make_layers

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_construction.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_construction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_writes_json(tmp_path, capsys):
    result = load_script().main(["--small", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "construction.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["config"]["small"] is True and written["config"]["checkpoint_bytes"] > 0
    machine = written["machine"]
    assert machine["cpu_count"] == os.cpu_count()
    assert machine["torch"] == torch.__version__
    datetime.datetime.fromisoformat(machine["date"])
    # Reference: torchvision's own VGG19 layers up to relu3_1 (what ttsr_lte keeps).
    kept = sum(p.numel() for p in make_layers(cfgs["E"])[:12].parameters())
    for variant in ("common", "featx_cold", "featx_cached"):
        entry = written["results"][variant]
        assert entry["kept_params"] == kept
        assert entry["time_s_median"] > 0 and entry["peak_rss_added_mib_median"] >= 0
        assert len(entry["time_s"]) == len(entry["peak_rss_added_mib"]) == written["config"]["repeats"]
    for row in ("first", "cached"):
        assert set(written["ratios"][row]) == {"time", "memory"}
    assert set(written["targets"]) == {"cached_time_ratio_min", "cached_memory_ratio_min", "met"}
    printed = capsys.readouterr().out
    assert "featx_cached" in printed and "common / featx" in printed
