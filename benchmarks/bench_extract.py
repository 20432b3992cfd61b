"""``featx extract`` throughput and memory versus the model alone and a naive per-image loop.

Three ways to turn N PNG images (256x256, crops of the scikit-image samples) into ``ttsr_lte``
features (VGG19 relu1_1, relu2_1, relu3_1; fp32; random weights), timed round-robin in one run:

- ``model_only``: the same ``VGGFeatures`` forward on the images already in memory as tensors,
  in batches; no decoding, no output. The ceiling for the tool (target: featx >= 0.9x of it).
- ``featx``: :func:`featx.extract.extract_features` end to end (discovery, header scan, decoding in 2
  DataLoader workers, forward, atomic fsynced safetensors writes, manifest and summary), with
  its defaults; ``featx_no_fsync`` is the same with ``fsync=False`` (``--no-fsync``).
- ``naive``: the common loop: ``PIL.Image.open(...).convert("RGB")``, to tensor, a torchvision
  ``vgg19().features[:12]`` forward with a clone per tap, ``torch.save`` per image (no fsync).
  Target: featx >= 1.5x.

Memory: peak RSS (``VmHWM``) of ``extract`` in a fresh process for a small and a large image
count (smaller images, same taps, so the disk holds the outputs); it should be flat (no
per-image growth). The worker column is ``ru_maxrss`` of the DataLoader workers, which counts
pages they share with the parent.

Usage:
    python benchmarks/bench_extract.py            # full run, writes benchmarks/results/extract.json
    python benchmarks/bench_extract.py --small --json /tmp/extract.json   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

TAPS = "ttsr_lte"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "extract.json"


# ---------------------------------------------------------------------------------------------
# small helpers (self-contained so the script runs on its own)
# ---------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU, cores, torch threads, versions, load average and the UTC date."""
    import datetime
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def matmul_peak_gflops(size: int, repeats: int) -> float:
    """Best measured fp32 ``torch.mm`` throughput of two ``size x size`` matrices, in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def write_json(path: Path, data: Any) -> None:
    """Indented JSON, written to a temporary name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    temp.replace(path)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Right-aligned plain-text table; floats to 3 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the three variants
# ---------------------------------------------------------------------------------------------


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` PNGs of ``size x size``: random crops (and flips) of the scikit-image samples."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [np.asarray(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "chelsea", "camera", "brick")]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = sources[i % len(sources)]
        crop = min(image.shape[0], image.shape[1], 2 * size)
        y = int(rng.integers(0, image.shape[0] - crop + 1))
        x = int(rng.integers(0, image.shape[1] - crop + 1))
        patch = Image.fromarray(image[y : y + crop, x : x + crop]).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"img{i:05d}.png"
        patch.save(path)
        paths.append(path)
    return paths


def conv_gflops(taps: str, size: int) -> float:
    """Forward GFLOP per image: ``2 * Cin * Cout * 9 * H * W`` summed over the kept convolutions."""
    from featx.layers import layer_specs, resolve_taps

    deepest = resolve_taps("vgg19", taps)[-1].index
    total = 0.0
    for spec in layer_specs("vgg19")[: deepest + 1]:
        if spec.kind == "conv":
            side = size // spec.stride
            total += 2.0 * spec.in_channels * spec.out_channels * 9 * side * side
    return total / 1e9


def _quiet_extractor(taps: str) -> Any:
    from featx.extractor import VGGFeatures

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures("vgg19", taps, weights=None)


def run_model_only(images: list[Any], batch_size: int, taps: str) -> float:
    """Seconds for the forward passes alone (images already decoded, in memory)."""
    import torch

    model = _quiet_extractor(taps)
    batches = [torch.stack(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    with torch.inference_mode():
        model(batches[0][:1])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        return time.perf_counter() - start


def run_featx(
    folder: Path, out: Path, batch_size: int, workers: int, taps: str, fsync: bool = True, on_record: Any = None
) -> dict[str, Any]:
    """One ``extract`` run into a fresh folder; returns seconds and counts."""
    from featx.extract import extract_features

    shutil.rmtree(out, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        summary = extract_features(
            [str(folder)],
            str(out),
            taps=taps,
            weights=None,
            batch_size=batch_size,
            num_workers=workers,
            fsync=fsync,
            on_record=on_record,
        )
        seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    if summary.errors:
        raise RuntimeError(f"extract failed on {summary.errors} images: {summary.failures[:3]}")
    return {"seconds": seconds, "ok": summary.ok}


def run_naive(paths: list[Path], out: Path) -> float:
    """Seconds for the common per-image loop (torchvision slice, clone per tap, torch.save)."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    vgg = torchvision.models.vgg19(weights=None).features[:12].eval()  # relu3_1 = index 11
    taps = {1: "relu1_1", 6: "relu2_1", 11: "relu3_1"}
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            x = (x - mean) / std
            feats = {}
            for index, layer in enumerate(vgg):
                x = layer(x)
                if index in taps:
                    feats[taps[index]] = x[0].clone()
            torch.save(feats, out / (path.name + ".pt"))
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds


_MARKER = "@@EXTRACT_MEMORY@@"


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_peak() -> None:
    """Reset this process's peak-RSS mark to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def measure_memory(**kwargs: Any) -> dict[str, Any]:
    """Run :func:`memory_child` in a fresh Python process and return its result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory run {kwargs} failed (rc={done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(_MARKER) :])


def memory_child(folder: str, out: str, batch_size: int, workers: int, taps: str) -> dict[str, Any]:
    """Runs in a fresh process (see :func:`measure_memory`): one extract, peak RSS from ``VmHWM``.

    ``ru_maxrss`` of an exec'd child starts at its parent's peak, so the peak is read from the
    kernel's per-process high-water mark instead, reset after the imports.
    """
    import featx.extract  # noqa: F401  (imports belong to the baseline)

    count = len(list(Path(folder).iterdir()))
    every = max(1, count // 20)
    samples: list[float] = []

    def sample(record: dict) -> None:  # current RSS every 5% of the images, from the writer thread
        samples.append(_status_mib("VmRSS"))

    baseline = _status_mib("VmRSS")
    _reset_peak()
    result = run_featx(Path(folder), Path(out), batch_size, workers, taps, on_record=sample)
    peak = _status_mib("VmHWM")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rss = samples[every - 1 :: every]
    return {**result, "baseline_mb": baseline, "peak_mb": peak, "workers_peak_mb": children, "rss_samples_mb": rss}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes for a smoke run (numbers not representative)")
    parser.add_argument("--images", type=int, default=96, help="images for the throughput comparison")
    parser.add_argument("--size", type=int, default=256, help="image side for the throughput comparison")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin repeats (the best is reported)")
    parser.add_argument("--mem-images", type=int, nargs=2, default=(100, 2000), metavar=("FEW", "MANY"))
    parser.add_argument("--mem-size", type=int, default=64, help="image side for the memory runs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.small:
        args.images, args.size, args.repeats, args.mem_images, args.mem_size = 6, 32, 1, (4, 12), 32

    import torch

    from featx.io import load_image

    with tempfile.TemporaryDirectory(prefix="featx-bench-") as tmp:
        root = Path(tmp)
        paths = make_images(root / "images", args.images, args.size)
        images = [load_image(path) for path in paths]
        times: dict[str, list[float]] = {"model_only": [], "featx": [], "featx_no_fsync": [], "naive": []}
        for _ in range(args.repeats):  # round-robin, so machine load drifts hit all variants alike
            times["model_only"].append(run_model_only(images, args.batch_size, TAPS))
            for name, fsync in (("featx", True), ("featx_no_fsync", False)):
                run = run_featx(root / "images", root / "out", args.batch_size, args.workers, TAPS, fsync=fsync)
                times[name].append(run["seconds"])
            times["naive"].append(run_naive(paths, root / "naive"))

        print("seconds per run:", {name: [round(t, 2) for t in values] for name, values in times.items()}, flush=True)
        memory = {}
        for count in args.mem_images:
            folder = root / f"mem{count}"
            make_images(folder, count, args.mem_size, seed=1)
            child = measure_memory(
                folder=str(folder), out=str(root / "memout"), batch_size=args.batch_size, workers=args.workers, taps=TAPS
            )
            memory[str(count)] = {
                "images": count,
                "peak_rss_mb": round(child["peak_mb"], 1),
                "peak_added_mb": round(child["peak_mb"] - child["baseline_mb"], 1),
                "workers_peak_mb": round(child["workers_peak_mb"], 1),
                "seconds": round(child["seconds"], 2),
                "rss_samples_mb": [round(v, 1) for v in child["rss_samples_mb"]],
                "rss_second_half_mb": [
                    round(min(child["rss_samples_mb"][len(child["rss_samples_mb"]) // 2 :]), 1),
                    round(max(child["rss_samples_mb"][len(child["rss_samples_mb"]) // 2 :]), 1),
                ],
            }
            shutil.rmtree(folder)

    gflop = conv_gflops(TAPS, args.size)
    peak = matmul_peak_gflops(size=512 if args.small else 2048, repeats=3 if args.small else 7)  # GFLOP/s
    # best of the round-robin repeats: on a shared machine other processes only ever slow a run down
    best = {name: min(values) for name, values in times.items()}
    throughput = {name: args.images / seconds for name, seconds in best.items()}
    ratio_model = throughput["featx"] / throughput["model_only"]
    ratio_naive = throughput["featx"] / throughput["naive"]
    few, many = (memory[str(n)] for n in args.mem_images)
    results = {
        "benchmark": "extract",
        "config": {
            "small": args.small,
            "images": args.images,
            "size": args.size,
            "taps": TAPS,
            "dtype": "float32",
            "batch_size": args.batch_size,
            "workers": args.workers,
            "repeats": args.repeats,
            "weights": "random (VGGFeatures weights=None)",
            "memory_images": list(args.mem_images),
            "memory_size": args.mem_size,
            "gflop_per_image": gflop,
        },
        "machine": machine_info(),
        "matmul_peak_gflops": round(peak, 1),
        "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
        "throughput_statistic": "best (minimum time) of the round-robin repeats",
        "images_per_second": {name: round(value, 3) for name, value in throughput.items()},
        "gflops": {name: round(value * gflop, 1) for name, value in throughput.items()},
        "ratios": {
            "featx_vs_model_only": round(ratio_model, 3),
            "featx_vs_naive": round(ratio_naive, 3),
            "featx_no_fsync_vs_model_only": round(throughput["featx_no_fsync"] / throughput["model_only"], 3),
            "featx_no_fsync_vs_naive": round(throughput["featx_no_fsync"] / throughput["naive"], 3),
            "target_vs_model_only": 0.9,
            "target_vs_naive": 1.5,
        },
        "memory": memory,
        "memory_growth_mb": round(many["peak_rss_mb"] - few["peak_rss_mb"], 1),
    }
    write_json(args.json, results)

    rows = [
        [name, throughput[name], throughput[name] * gflop, 100 * throughput[name] * gflop / peak,
         throughput["featx"] / throughput[name]]
        for name in times
    ]  # fmt: skip
    print(f"featx extract, {args.images} images {args.size}x{args.size}, {TAPS}, fp32, batch {args.batch_size}, "
          f"{args.workers} workers, {torch.get_num_threads()} threads; best of {args.repeats}; "
          f"matmul peak {peak:.0f} GFLOP/s; load average {results['machine']['load_average']}")
    print(format_table(["variant", "img/s", "GFLOP/s", "% peak", "featx / variant"], rows))
    print()
    mem_rows = [
        [m["images"], m["peak_rss_mb"], m["peak_added_mb"], "{:.0f}-{:.0f}".format(*m["rss_second_half_mb"]),
         m["workers_peak_mb"], m["seconds"]]
        for m in (few, many)
    ]  # fmt: skip
    print(f"memory: extract in a fresh process, {args.mem_size}x{args.mem_size} images")
    print(format_table(["images", "peak RSS MiB", "added MiB", "RSS 2nd half MiB", "worker maxrss MiB", "seconds"], mem_rows))
    print(f"\nresults: {args.json}")
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(_MARKER + json.dumps(memory_child(**json.loads(sys.argv[2]))), flush=True)
    else:
        main()
