"""The budget benchmark runs end to end on eighth-size images and writes consistent JSON (no
ratio asserted: the tiny images do not load the budget; the real figures are in the results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_budget_tiny_writes_json(tmp_path):
    out = tmp_path / "budget.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_budget.py"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # two runs of featx extract, each seconds of work: far inside on a loaded machine
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["benchmark"] == "budget" and results["config"]["tiny"] is True
    assert "date_utc" in results["machine"] and results["machine"]["logical_cores"] >= 1
    cases = results["results"]
    assert set(cases) == {"mixed_1GiB", "huge_1GiB_workers0"}
    for case in cases.values():
        assert case["budget_bytes"] == 2**30 and case["peak_pss_bytes"] > 0 and case["samples"] >= 1
        assert case["ratio"] == round(case["peak_pss_bytes"] / case["budget_bytes"], 3)
    assert results["met"] == {name: case["ratio"] <= results["target_ratio"] for name, case in cases.items()}
