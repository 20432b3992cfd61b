"""Peak memory of ``featx extract`` under ``--max-memory`` on DIV2K-size images, measured as the
PSS (proportional set size: shared pages split between the processes) of the whole process tree,
the command and its decoding workers, sampled every 20 ms from ``/proc/<pid>/smaps_rollup``.

Cases (targets in parentheses):
- five 2040x1356 images, ``--preset ttsr_lte --reduce gap --max-memory 3GiB`` (peak < 3.75 GiB);
- the same under ``--max-memory 4GiB``: throughput against the model alone (``VGGFeatures`` on
  decoded tensors, one image a batch: the largest batch that fits 4 GiB), in images per second
  (>= 0.9x);
- one 2400x2400 image, ``--max-memory 1GiB`` (peak < 1.5 GiB), with its features compared to an
  untiled run (relative error < 1e-5);
- the same five images without a budget, for comparison (the default budget is half the memory
  available at start).

Usage:
    python benchmarks/bench_memory.py                  # writes benchmarks/results/memory.json
    python benchmarks/bench_memory.py --small --json /tmp/memory.json   # small images, quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "memory.json"
FEATX = [sys.executable, "-m", "featx_cli.main"]


def tree_pss_bytes(root: int) -> int:
    """PSS of ``root`` and all its descendants (0 for processes that vanish meanwhile)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def run_measured(args: list[str]) -> dict[str, float]:
    """Run featx with ``args``; return the peak tree PSS (GiB) and the wall time."""
    start = time.perf_counter()
    process = subprocess.Popen([*FEATX, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss_bytes(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"featx {' '.join(args)} failed ({process.returncode}):\n{err[-3000:]}")
    return {"peak_pss_gib": peak / 2**30, "seconds": time.perf_counter() - start}


def write_images(folder: Path, count: int, height: int, width: int) -> None:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(data.astronaut())
    rng = np.random.default_rng(0)
    for index in range(count):
        resized = np.asarray(picture.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(resized + rng.integers(-8, 9, resized.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{index:04d}.png", compress_level=1)


def model_only_seconds(folder: Path) -> float:
    """The model alone on the decoded images, one a batch, with the gap descriptor (best of 2)."""
    import warnings

    import torch

    from featx.backbones.vgg.features import VGGFeatures
    from featx.extract.descriptors import reduce_features
    from featx.io.images import load_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vgg = VGGFeatures.from_preset("ttsr_lte", weights=None)
    images = [load_image(path)[None] for path in sorted(folder.iterdir())]
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        with torch.inference_mode():
            for image in images:
                reduce_features(vgg(image), "gap")
        best = min(best, time.perf_counter() - start)
    return best


def measure(small: bool) -> dict[str, Any]:
    """Run every case (quarter-size images with ``small``) and return the results payload."""
    scale = 4 if small else 1
    common = ["--weights", "random", "--quiet", "--overwrite"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        div2k, square = root / "div2k", root / "square"
        write_images(div2k, 5, 1356 // scale, 2040 // scale)
        write_images(square, 1, 2400 // scale, 2400 // scale)
        gap = ["--preset", "ttsr_lte", "--reduce", "gap"]
        budget = ["--max-memory", "3GiB"]
        results["div2k_5_gap_3GiB"] = run_measured(["extract", str(div2k), str(root / "a"), *gap, *budget, *common])
        results["div2k_5_gap_4GiB"] = run_measured(
            ["extract", str(div2k), str(root / "e"), *gap, "--max-memory", "4GiB", *common]
        )
        extract_seconds = json.loads((root / "e" / "summary.json").read_text())["seconds"]
        model_seconds = model_only_seconds(div2k)
        if not small:  # the default budget, for comparison
            results["div2k_5_gap_default"] = run_measured(["extract", str(div2k), str(root / "b"), *gap, *common])
        results["square_2400_gap_1GiB"] = run_measured(
            ["extract", str(square), str(root / "c"), *gap, "--max-memory", "1GiB", *common]
        )
        untiled = run_measured(["extract", str(square), str(root / "d"), *gap, "--tile", "off", *common])
        results["square_2400_gap_untiled"] = untiled
        from featx.io.featfile import load_features

        tiled_feats, _ = load_features(root / "c" / "0000.png.safetensors")
        untiled_feats, _ = load_features(root / "d" / "0000.png.safetensors")
        errors = {
            tap: float((tiled_feats[tap].double() - value.double()).norm() / value.double().norm())
            for tap, value in untiled_feats.items()
        }
    targets = {"div2k_5_gap_3GiB": 3.75, "square_2400_gap_1GiB": 1.5}
    throughput = {
        "featx_extract_images_per_second": 5 / extract_seconds,
        "model_only_images_per_second": 5 / model_seconds,
        "ratio": round(model_seconds / extract_seconds, 3),
        "target_ratio": 0.9,
    }
    return {
        "benchmark": "memory",
        "machine": machine_info(),
        "config": {"small": small, "preset": "ttsr_lte", "reduce": "gap", "workers": 2},
        "results": results,
        "targets_peak_pss_gib": targets,
        "met": {name: results[name]["peak_pss_gib"] < limit for name, limit in targets.items()},
        "square_tiled_vs_untiled_rel_error": errors,
        "throughput_4GiB": throughput,
    }


def render(payload: dict[str, Any]) -> str:
    """The printed report of a :func:`measure` payload."""
    results, targets = payload["results"], payload["targets_peak_pss_gib"]
    errors, throughput = payload["square_tiled_vs_untiled_rel_error"], payload["throughput_4GiB"]
    rows = [[name, r["peak_pss_gib"], r["seconds"], targets.get(name, "-")] for name, r in results.items()]
    return "\n".join([
        format_table(["case", "peak PSS GiB", "seconds", "target GiB"], rows),
        "2400x2400 tiled vs untiled, relative error per tap: " + str({k: f"{v:.1e}" for k, v in errors.items()}),
        f"4 GiB throughput: featx extract {throughput['featx_extract_images_per_second']:.3f} img/s, model alone "
        f"{throughput['model_only_images_per_second']:.3f} img/s: {throughput['ratio']:.2f}x",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="quarter-size images, a quick smoke run")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    payload = measure(args.small)
    print(render(payload))
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
