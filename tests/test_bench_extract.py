"""The extraction benchmark runs end to end at tiny sizes and writes the documented JSON fields.

No timing asserts: only that every measurement exists, is positive and is consistent with the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_extract_small_writes_json(tmp_path):
    out = tmp_path / "extract.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_extract.py"), "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,  # 97 s on a loaded 2-core machine (2026-12-04), 280 s seen on a busier one: 5x that
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["benchmark"] == "extract" and results["config"]["small"] is True
    variants = ("model_only", "model_only_engine", "featx", "featx_python", "naive", "naive_tuned")
    assert set(results["images_per_second"]) == set(variants)
    for name in variants:
        assert results["images_per_second"][name] > 0
        assert len(results["seconds"][name]) == results["config"]["repeats"]
    ips = results["images_per_second"]
    # the ratios are the quotients of the reported throughputs (rounded to 3 decimals)
    assert abs(results["ratios"]["featx_vs_model_only"] - ips["featx"] / ips["model_only"]) < 0.01
    assert abs(results["ratios"]["featx_vs_naive"] - ips["featx"] / ips["naive"]) < 0.01
    assert abs(results["ratios"]["featx_vs_model_only_engine"] - ips["featx"] / ips["model_only_engine"]) < 0.01
    assert sorted(results["memory"], key=int) == [str(n) for n in results["config"]["memory_images"]]
    for entry in results["memory"].values():
        assert entry["peak_rss_mb"] > 0 and entry["seconds"] > 0
        assert entry["rss_samples_mb"] and len(entry["rss_second_half_mb"]) == 2
    assert results["config"]["gflop_per_image"] > 0 and results["matmul_peak_gflops"] > 0
    assert "featx / variant" in done.stdout and "peak RSS MiB" in done.stdout


def test_bench_extract_uses_the_shared_helpers():
    # the extraction benchmark imports benchmarks/common.py's helpers instead of keeping copies
    import ast

    script = ROOT / "benchmarks" / "bench_extract.py"
    tree = ast.parse(script.read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    common = ast.parse((ROOT / "benchmarks" / "common.py").read_text())
    shared = {node.name for node in common.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    assert not defined & shared
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "common"
                for alias in node.names}  # fmt: skip
    assert {"machine_info", "matmul_peak_gflops", "write_json", "format_table"} <= imported
