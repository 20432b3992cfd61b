"""The streaming benchmark runs end to end on a small image and writes consistent JSON (no limits
asserted: the peak depends on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_stream_small_writes_json(tmp_path):
    out = tmp_path / "stream.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_stream.py"), "--small", "--side", "600",
               "--max-memory", "640MiB", "--windows", "2", "--json", str(out)]  # fmt: skip
    # 116 s on a loaded 2-core machine (2026-12-04): the timeout is 10x that
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["benchmark"] == "stream" and results["config"]["side"] == 600
    assert results["peak_pss_gib"] > 0 and results["seconds"] > 0
    assert results["met"] == (results["peak_over_budget"] < results["target_peak_over_budget"])
    assert abs(results["peak_over_budget"] - results["peak_pss_gib"] / (640 / 1024)) < 1e-6
    # the file holds the maps (plus its header), which an untiled run would need more than the budget for
    assert 0 < results["feature_file_gib"] - results["maps_gib"] < 1e-5
    assert results["untiled_estimate_gib"] > 640 / 1024 - 0.52  # more than the budget left after the process
    assert len(results["window_rel_errors"]) == 2 and max(results["window_rel_errors"]) < 1e-5
