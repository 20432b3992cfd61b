"""``featx extract --reduce none`` on one image whose feature maps are far larger than the memory
budget: the maps are streamed into the feature file tile by tile.

One 100-megapixel image (10000x10000, the scikit-image astronaut resized, with noise), the
``relu3_1`` tap of VGG19 (random weights), fp32, ``--max-memory 4GiB``. Measured: the peak PSS of
the process tree (the command and its decoding workers, sampled every 20 ms), the wall time, the
file size, and what one untiled pass would need (the budget model's estimate,
``featx.extract.budget.image_bytes``). Target: the peak stays within 1.25x the budget.

Exactness: windows of the file are compared with one untiled pass of the network over the same
window of the image plus a margin of the receptive field (aligned to the tap's stride), which
gives exactly the untiled features inside the window; relative error < 1e-5 expected.

Usage:
    python benchmarks/bench_stream.py                  # writes benchmarks/results/stream.json
    python benchmarks/bench_stream.py --small --json /tmp/stream.json   # 1200x1200, 768 MiB
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import run_measured  # noqa: E402
from common import format_table, machine_info, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "stream.json"


def write_image(path: Path, side: int) -> None:
    from skimage import data

    picture = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(0)
    pixels = np.asarray(picture, dtype=np.int16)
    pixels += rng.integers(-8, 9, pixels.shape, dtype=np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, compress_level=1)


def random_extractor(tap: str):  # the network `featx extract --weights random` builds
    import torch

    from featx.backbones.vgg.features import VGGFeatures
    from featx.extract.engine import RANDOM_WEIGHTS_SEED

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return VGGFeatures("vgg19", [tap], weights=None)


def window_errors(image_path: Path, feature_file: Path, tap: str, windows: int, size: int) -> list[float]:
    """Relative error of ``windows`` random ``size``-pixel windows of the file against one pass
    over each window with its receptive-field margin."""
    import torch
    from safetensors import safe_open

    from featx.extract.tiling import tile_geometry
    from featx.io.images import load_image

    vgg = random_extractor(tap)
    geometry = tile_geometry("vgg19", tap)
    stride, halo = geometry.stride, geometry.halo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = load_image(image_path, max_pixels=10**9)[None]
    height, width = image.shape[2:]
    rng = np.random.default_rng(1)
    errors = []
    with safe_open(str(feature_file), framework="pt") as handle:
        stored = handle.get_slice(tap)
        for _ in range(windows):
            y0 = int(rng.integers(0, (height - size) // stride + 1)) * stride
            x0 = int(rng.integers(0, (width - size) // stride + 1)) * stride
            ey0, ex0 = max(0, y0 - halo), max(0, x0 - halo)
            ey1, ex1 = min(height, y0 + size + halo), min(width, x0 + size + halo)
            with torch.inference_mode():
                local = vgg(image[:, :, ey0:ey1, ex0:ex1])[tap][0]
            top, left, rows, cols = (y0 - ey0) // stride, (x0 - ex0) // stride, size // stride, size // stride
            expected = local[:, top : top + rows, left : left + cols].double()
            got = stored[:, y0 // stride : y0 // stride + rows, x0 // stride : x0 // stride + cols].double()
            errors.append(float((got - expected).norm() / expected.norm()))
    return errors


def measure(*, side: int, budget_text: str, tap: str = "relu3_1", windows: int = 4, small: bool = False) -> dict[str, Any]:
    """Extract one ``side`` x ``side`` image with ``--reduce none --max-memory budget_text``; return the payload."""
    from featx.extract.budget import image_bytes, parse_size, stored_bytes

    budget = parse_size(budget_text)
    vgg = random_extractor(tap)
    untiled = image_bytes(vgg, side, side, reduce="none")
    maps = stored_bytes(vgg, side, side, reduce="none")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        start = time.perf_counter()
        write_image(root / "in" / "big.png", side)
        write_seconds = time.perf_counter() - start
        command = [
            "extract", str(root / "in"), str(root / "out"), "--weights", "random", "--quiet", "--overwrite",
            "--taps", tap, "--reduce", "none", "--max-memory", budget_text, "--max-pixels", str(side * side),
        ]  # fmt: skip
        run = run_measured(command)
        feature_file = root / "out" / "big.png.safetensors"
        file_bytes = feature_file.stat().st_size
        errors = window_errors(root / "in" / "big.png", feature_file, tap, windows, min(256, side // 4))
    peak = run["peak_pss_gib"] * 2**30
    return {
        "benchmark": "stream",
        "machine": machine_info(),
        "config": {"side": side, "megapixels": side * side / 1e6, "tap": tap, "dtype": "float32",
                   "max_memory": budget_text, "small": small, "workers": 2},  # fmt: skip
        "peak_pss_gib": run["peak_pss_gib"],
        "seconds": run["seconds"],
        "image_write_seconds": write_seconds,
        "feature_file_gib": file_bytes / 2**30,
        "maps_gib": maps / 2**30,
        "untiled_estimate_gib": untiled / 2**30,
        "peak_over_budget": peak / budget,
        "target_peak_over_budget": 1.25,
        "met": peak / budget < 1.25,
        "window_rel_errors": errors,
    }


def render(payload: dict[str, Any]) -> str:
    """The printed report of a :func:`measure` payload."""
    config = payload["config"]
    rows = [[f"{config['side']}x{config['side']}", config["tap"], config["max_memory"], payload["peak_pss_gib"],
             payload["untiled_estimate_gib"], payload["feature_file_gib"], payload["seconds"]]]  # fmt: skip
    table = format_table(["image", "tap", "budget", "peak PSS GiB", "untiled needs GiB", "file GiB", "seconds"], rows)
    return table + (
        f"\npeak / budget {payload['peak_over_budget']:.2f} (target < 1.25); windows vs untiled passes: "
        + ", ".join(f"{e:.1e}" for e in payload["window_rel_errors"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a 1200x1200 image under 768 MiB, a quick smoke run")
    parser.add_argument("--side", type=int, default=None, help="image side (default 10000, --small 1200)")
    parser.add_argument("--max-memory", default=None, help="budget (default 4GiB, --small 768MiB)")
    parser.add_argument("--tap", default="relu3_1")
    parser.add_argument("--windows", type=int, default=4, help="windows checked against untiled passes")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    side = args.side or (1200 if args.small else 10000)
    budget_text = args.max_memory or ("768MiB" if args.small else "4GiB")
    payload = measure(side=side, budget_text=budget_text, tap=args.tap, windows=args.windows, small=args.small)
    print(render(payload))
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
