"""Smoke test of benchmarks/bench_dinov2.py: the --small run completes and writes consistent JSON.

No timing or memory asserts (those depend on the machine); only structure and exact facts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm  # in the test extra: a broken install fails here instead of skipping
import torch

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("timm_full", "timm_depth", "timm_slice", "featx_cold", "featx_cached")


def test_small_run_writes_json(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_dinov2.py"), "--small", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=2400,  # 425 s seen on a loaded 2-core machine (2026-12-04): several times that
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "dinov2.json").read_text())
    assert result["config"]["small"] is True and result["config"]["kept_blocks"] == 6
    assert result["machine"]["torch"] == torch.__version__
    # Reference: timm's own model with 6 blocks, its final norm aside (what blocks.5 keeps).
    with torch.device("meta"):
        six = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, depth=6)
    kept = sum(p.numel() for name, p in six.named_parameters() if not name.startswith("norm."))
    for variant in VARIANTS:
        entry = result["results"][variant]
        assert entry["params"] == (kept + 2 * 384 if variant == "timm_full" else kept), variant
        assert entry["time_s_median"] > 0 and entry["peak_added_mb_median"] >= 0
    for variant in VARIANTS[1:]:
        ratio = result["ratios_timm_full_over"][variant]
        expected = result["results"]["timm_full"]["time_s_median"] / result["results"][variant]["time_s_median"]
        assert ratio["time"] == pytest.approx(expected)
    assert "featx_cached" in done.stdout and "timm_full / it" in done.stdout
