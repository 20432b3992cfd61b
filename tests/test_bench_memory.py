"""The memory benchmark runs end to end on small images and writes consistent JSON (no limits
asserted: the peaks depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_memory_small_writes_json(tmp_path):
    out = tmp_path / "memory.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,  # 262 s on a loaded 2-core machine (2026-12-04): 7x that
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["benchmark"] == "memory" and results["config"]["small"] is True
    cases = results["results"]
    assert set(cases) == {"div2k_5_gap_3GiB", "div2k_5_gap_4GiB", "square_2400_gap_1GiB", "square_2400_gap_untiled"}
    speed = results["throughput_4GiB"]
    ratio = speed["featx_extract_images_per_second"] / speed["model_only_images_per_second"]
    assert abs(speed["ratio"] - ratio) < 0.01
    assert all(case["peak_pss_gib"] > 0 and case["seconds"] > 0 for case in cases.values())
    targets = results["targets_peak_pss_gib"]
    assert results["met"] == {name: cases[name]["peak_pss_gib"] < limit for name, limit in targets.items()}
    # the tiled image's features equal the untiled run's
    assert max(results["square_tiled_vs_untiled_rel_error"].values()) < 1e-5
