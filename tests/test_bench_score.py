"""The score benchmark runs end to end at a tiny size and writes consistent JSON (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_score_small_writes_json(tmp_path):
    out = tmp_path / "score.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_score.py"), "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["benchmark"] == "score" and results["config"]["small"] is True
    medians = results["median_s"]
    assert set(medians) == {"packages_loop", "featx_score"} and all(v > 0 for v in medians.values())
    assert abs(results["speedup_featx_vs_packages"] - medians["packages_loop"] / medians["featx_score"]) < 0.01
    # both sides score the same pairs with the same networks: the scores agree
    assert results["max_score_difference"] < 1e-4
