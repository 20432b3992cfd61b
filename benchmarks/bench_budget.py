"""Does ``featx extract --max-memory`` hold on mixed folders? The peak PSS (proportional set size:
shared pages split between the processes) of the whole process tree, the command and its decoding
workers, sampled every 0.1 s with psutil, against the budget (issue 18, item 4: at most 1.25x).

Cases (``--weights random``, the default taps and ``--reduce none``):
- ``mixed_1GiB``: three 2040x1356 images, one 640x480 and one 4000x3000, ``--max-memory 1GiB``;
- ``mixed_2GiB``: the same folder, ``--max-memory 2GiB``;
- ``huge_1GiB``: the 4000x3000 image alone, ``--max-memory 1GiB``;
- ``huge_1GiB_workers0``: the same, decoded in the main process (``--workers 0``).

Usage:
    python benchmarks/bench_budget.py            # writes benchmarks/results/budget.json
    python benchmarks/bench_budget.py --tiny --json /tmp/budget.json   # eighth-size images, seconds
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "budget.json"
FEATX = [sys.executable, "-m", "featx_cli.main"]
TARGET_RATIO = 1.25
"""Issue 18's bound on the peak PSS of the process tree, as a multiple of ``--max-memory``."""

MIXED = {"a.png": (1356, 2040), "b.png": (1356, 2040), "c.png": (1356, 2040), "d.png": (480, 640), "e.png": (3000, 4000)}
"""``(height, width)`` of the mixed folder's images; ``e.png`` alone is the huge case."""


def tree_pss(process: psutil.Process) -> int:
    """PSS bytes of ``process`` and all its descendants (processes that vanish meanwhile count 0)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_full_info().pss
        except psutil.Error:
            continue
    return total


def run_sampled(args: list[str], interval: float = 0.1) -> dict[str, Any]:
    """Run ``featx ARGS``, sampling the tree's PSS every ``interval`` seconds.

    Returns:
        ``{"peak_pss_bytes", "seconds", "samples", "returncode"}``.

    Raises:
        RuntimeError: the command failed (its stderr's end is quoted).
    """
    start = time.perf_counter()
    child = subprocess.Popen([*FEATX, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = psutil.Process(child.pid)
    peak, samples, done = 0, 0, threading.Event()

    def sample() -> None:
        nonlocal peak, samples
        while not done.is_set():
            peak = max(peak, tree_pss(handle))
            samples += 1
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = child.communicate()
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"featx {' '.join(args)} failed ({child.returncode}):\n{err[-3000:]}")
    return {"peak_pss_bytes": peak, "seconds": time.perf_counter() - start, "samples": samples}


def write_images(folder: Path, sizes: dict[str, tuple[int, int]], scale: int) -> None:
    """Noise PNGs (fast to write, incompressible like photographs) of ``sizes`` divided by ``scale``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        pixels = rng.integers(0, 256, (height // scale, width // scale, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, compress_level=1)


def measure(tiny: bool, out: Path | None = None) -> dict[str, Any]:
    """Run every case (eighth-size images with ``tiny``) and return the results payload; with
    ``out``, the payload so far is written there after each case (a long run keeps what it measured)."""
    scale = 8 if tiny else 1
    common = ["--weights", "random", "--quiet", "--overwrite", "--no-fsync"]
    cases = {
        "mixed_1GiB": ("mixed", 2**30, []),
        "mixed_2GiB": ("mixed", 2 * 2**30, []),
        "huge_1GiB": ("huge", 2**30, []),
        "huge_1GiB_workers0": ("huge", 2**30, ["--workers", "0"]),
    }
    if tiny:  # one case with decoding workers, one without: each run is mostly featx's start-up
        cases = {name: cases[name] for name in ("mixed_1GiB", "huge_1GiB_workers0")}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "mixed", MIXED, scale)
        write_images(root / "huge", {"e.png": MIXED["e.png"]}, scale)
        for name, (folder, budget, extra) in cases.items():
            args = ["extract", str(root / folder), str(root / f"out-{name}"), "--max-memory", str(budget), *common, *extra]
            run = run_sampled(args)
            shutil.rmtree(root / f"out-{name}")  # gigabytes of feature files: free the disk for the next case
            run["budget_bytes"] = budget
            run["ratio"] = round(run["peak_pss_bytes"] / budget, 3)
            results[name] = run
            if out is not None:
                write_json(out, payload(tiny, scale, results))
    return payload(tiny, scale, results)


def payload(tiny: bool, scale: int, results: dict[str, Any]) -> dict[str, Any]:
    """The JSON written: the machine (with the date), the configuration and each case's ratio."""
    return {
        "benchmark": "budget",
        "machine": machine_info(),
        "config": {"tiny": tiny, "scale": scale, "sizes_hw": MIXED, "taps": "default (ttsr_lte)", "reduce": "none"},
        "results": results,
        "target_ratio": TARGET_RATIO,
        "met": {name: run["ratio"] <= TARGET_RATIO for name, run in results.items()},
    }


def render(payload: dict[str, Any]) -> str:
    """The printed report of a :func:`measure` payload."""
    rows = [
        [name, run["budget_bytes"] / 2**30, run["peak_pss_bytes"] / 2**30, run["ratio"], run["seconds"]]
        for name, run in payload["results"].items()
    ]
    return format_table(["case", "budget GiB", "peak PSS GiB", "ratio", "seconds"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="eighth-size images: a smoke run of seconds")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    results = measure(args.tiny, args.json)
    print(render(results))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
