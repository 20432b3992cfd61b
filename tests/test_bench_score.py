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
        [sys.executable, str(ROOT / "benchmarks" / "bench_score.py"), "--small", "--part", "all", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # 71 s on a loaded 2-core machine (2026-12-04): 12x that
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["benchmark"] == "score" and results["config"]["small"] is True
    assert "date_utc" in results["machine"]
    fidelity = results["fidelity"]
    per_pair = fidelity["seconds_per_pair"]
    assert {"featx_score", "basicsr_script"} <= set(per_pair) and all(v > 0 for v in per_pair.values())
    ratio = per_pair["basicsr_script"] / per_pair["featx_score"]
    assert abs(fidelity["speedup"]["featx_vs_basicsr_script"] - ratio) < 0.01
    # featx score and BasicSR's script logic give the same numbers (BasicSR's luma is float32)
    assert fidelity["max_psnr_difference_db"] < 1e-6 and fidelity["max_ssim_difference"] < 1e-6
    assert ("pyiqa" in per_pair) == fidelity["pyiqa"]["installed"]
    deep = results["deep"]
    medians = deep["median_s"]
    assert set(medians) == {"packages_loop", "featx_score"} and all(v > 0 for v in medians.values())
    assert abs(deep["speedup_featx_vs_packages"] - medians["packages_loop"] / medians["featx_score"]) < 0.01
    # both sides score the same pairs with the same networks: the scores agree
    assert deep["max_score_difference"] < 1e-4
