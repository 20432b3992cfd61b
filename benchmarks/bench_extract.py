"""``featx extract`` throughput and memory versus the model alone and a naive per-image loop.

Ways to turn N PNG images (256x256, crops of the scikit-image samples) into ``ttsr_lte`` features
(VGG19 relu1_1, relu2_1, relu3_1; fp32; random weights). Every variant runs in its own fresh
Python process (allocator settings are process-wide and must not leak between variants); the
variants take turns, round-robin, and the best of the repeats is reported:

- ``model_only``: ``VGGFeatures("vgg19", "ttsr_lte")`` called on batches already in memory, as a
  user calls it (``contiguous_format``, glibc's default allocator); no decoding, no output.
- ``model_only_engine``: the same forward with the settings ``featx extract`` runs it with
  (``channels_last`` model and input, malloc tuning); outputs stay ``channels_last`` (no
  conversion to ``C x H x W``). The strict compute ceiling of the tool.
- ``featx``: the command itself, ``featx extract IMAGES OUT --weights random --quiet`` with its
  defaults (2 DataLoader workers, batch 8, fsync per file, malloc tuning); the time is the
  ``seconds`` of its ``summary.json`` (discovery, header scan, decoding, forward, writing, manifest;
  not the interpreter start-up).
- ``featx_python``: :func:`featx.extract.extract_features` with the same options in a process
  that did not tune malloc (the library never changes process-wide allocator settings itself).
- ``naive``: the common loop, ``PIL.Image.open(...).convert("RGB")``, to tensor, a torchvision
  ``vgg19().features[:12]`` forward with a clone per tap, ``torch.save`` per image (no fsync),
  in a plain process; ``naive_tuned`` is the same loop after the same malloc tuning.

Targets: featx >= 0.9x the model alone, >= 1.5x the naive loop. Both model-only
figures are reported, so the ratio against either can be read off.

Memory: peak RSS (``VmHWM``) of ``extract`` (after malloc tuning, as the command runs) in a fresh
process for a small and a large image count (smaller images, same taps, so the disk holds the
outputs); it should be flat (no per-image growth). The worker column is ``ru_maxrss`` of the
DataLoader workers, which counts pages they share with the parent.

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

from common import (
    current_rss_mb,
    format_table,
    machine_info,
    matmul_peak_gflops,
    peak_rss_mb,
    reset_peak_rss,
    write_json,
)

TAPS = "ttsr_lte"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "extract.json"


# ---------------------------------------------------------------------------------------------
# the three variants
# ---------------------------------------------------------------------------------------------


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` PNGs of ``size x size``: random crops (and flips) of the scikit-image samples."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [
        np.asarray(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "chelsea", "camera", "brick")
    ]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = sources[i % len(sources)]
        crop = min(image.shape[0], image.shape[1], 2 * size)
        y = int(rng.integers(0, image.shape[0] - crop + 1))
        x = int(rng.integers(0, image.shape[1] - crop + 1))
        patch = (
            Image.fromarray(image[y : y + crop, x : x + crop])
            .convert("RGB")
            .resize((size, size), Image.Resampling.BILINEAR)
        )
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"img{i:05d}.png"
        patch.save(path)
        paths.append(path)
    return paths


def conv_gflops(taps: str, size: int) -> float:
    """Forward GFLOP per image: ``2 * Cin * Cout * 9 * H * W`` summed over the kept convolutions."""
    from featx.backbones.taps import resolve_taps
    from featx.backbones.vgg.layers import layer_specs

    deepest = resolve_taps("vgg19", taps)[-1].index
    total = 0.0
    for spec in layer_specs("vgg19")[: deepest + 1]:
        if spec.kind == "conv":
            side = size // spec.stride
            total += 2.0 * spec.in_channels * spec.out_channels * 9 * side * side
    return total / 1e9


def _quiet_extractor(taps: str) -> Any:
    from featx.backbones.vgg.features import VGGFeatures

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures("vgg19", taps, weights=None)


def _tune_malloc() -> None:
    from featx.allocator import tune_malloc

    tune_malloc()


def run_model_only(folder: Path, batch_size: int, taps: str, engine: bool) -> float:
    """Seconds for the forward passes alone (images decoded beforehand, in memory)."""
    import torch

    from featx.io.images import load_image

    if engine:
        _tune_malloc()
    layout = torch.channels_last if engine else torch.contiguous_format
    model = _quiet_extractor(taps).to(memory_format=layout)
    images = [load_image(path) for path in sorted(folder.iterdir())]
    batches = [
        torch.stack(images[i : i + batch_size]).contiguous(memory_format=layout)
        for i in range(0, len(images), batch_size)
    ]
    with torch.inference_mode():
        model(batches[0][:1])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        return time.perf_counter() - start


def run_featx_command(folder: Path, out: Path, batch_size: int, workers: int, taps: str) -> float:
    """``featx extract`` as a user runs it (a fresh process); seconds from its ``summary.json``."""
    shutil.rmtree(out, ignore_errors=True)
    featx = Path(sys.executable).with_name("featx")
    command = [str(featx)] if featx.exists() else [sys.executable, "-c", "from featx_cli.main import cli; cli()"]
    command += ["extract", str(folder), str(out), "--taps", taps, "--weights", "random", "--quiet",
                "--batch-size", str(batch_size), "--workers", str(workers)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"featx extract failed (rc={done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    if summary["error"]:
        raise RuntimeError(f"featx extract failed on {summary['error']} images")
    return float(summary["seconds"])


def run_featx(
    folder: Path, out: Path, batch_size: int, workers: int, taps: str, on_record: Any = None
) -> dict[str, Any]:
    """One :func:`extract_features` run into a fresh folder; returns seconds and counts."""
    from featx.extract import ExtractOptions, extract_features

    shutil.rmtree(out, ignore_errors=True)
    options = ExtractOptions(taps=taps, weights=None, batch_size=batch_size, num_workers=workers, on_record=on_record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        summary = extract_features([str(folder)], str(out), options)
        seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    if summary.errors:
        raise RuntimeError(f"extract failed on {summary.errors} images: {summary.failures[:3]}")
    return {"seconds": seconds, "ok": summary.ok}


def run_naive(folder: Path, out: Path, tuned: bool) -> float:
    """Seconds for the common per-image loop (torchvision slice, clone per tap, torch.save)."""
    if tuned:
        _tune_malloc()
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
        for path in sorted(folder.iterdir()):
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


VARIANTS = ("model_only", "model_only_engine", "featx", "featx_python", "naive", "naive_tuned")


def timing_child(variant: str, folder: str, out: str, batch_size: int, workers: int, taps: str) -> dict[str, Any]:
    """Runs in a fresh process (see :func:`in_fresh_process`): one timed run of ``variant``."""
    folder_path, out_path = Path(folder), Path(out)
    if variant in ("model_only", "model_only_engine"):
        seconds = run_model_only(folder_path, batch_size, taps, engine=variant == "model_only_engine")
    elif variant == "featx_python":
        seconds = run_featx(folder_path, out_path, batch_size, workers, taps)["seconds"]
    elif variant in ("naive", "naive_tuned"):
        seconds = run_naive(folder_path, out_path, tuned=variant == "naive_tuned")
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return {"seconds": seconds}


def time_variant(variant: str, **kwargs: Any) -> float:
    """Seconds of one run of ``variant``, in a fresh process."""
    if variant == "featx":
        return run_featx_command(
            Path(kwargs["folder"]), Path(kwargs["out"]), kwargs["batch_size"], kwargs["workers"], kwargs["taps"]
        )
    return in_fresh_process("--timing-child", variant=variant, **kwargs)["seconds"]


_MARKER = "@@EXTRACT_CHILD@@"


def in_fresh_process(mode: str, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`timing_child` or :func:`memory_child` (``mode``) in a fresh Python process."""
    command = [sys.executable, str(Path(__file__).resolve()), mode, json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} {kwargs} failed (rc={done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(_MARKER) :])


def memory_child(folder: str, out: str, batch_size: int, workers: int, taps: str) -> dict[str, Any]:
    """Runs in a fresh process (see :func:`in_fresh_process`): one extract after malloc tuning (as
    the command runs it), peak RSS from ``VmHWM``.

    ``ru_maxrss`` of an exec'd child starts at its parent's peak, so the peak is read from the
    kernel's per-process high-water mark instead, reset after the imports.
    """
    import featx.extract  # noqa: F401  (imports belong to the baseline)

    _tune_malloc()

    count = len(list(Path(folder).iterdir()))
    every = max(1, count // 20)
    samples: list[float] = []

    def sample(record: dict) -> None:  # current RSS every 5% of the images, from the writer thread
        samples.append(current_rss_mb() or 0.0)

    baseline = current_rss_mb() or 0.0
    reset_peak_rss()
    result = run_featx(Path(folder), Path(out), batch_size, workers, taps, on_record=sample)
    peak = peak_rss_mb()
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
    parser.add_argument(
        "--targets", action=argparse.BooleanOptionalAction, default=None,
        help="also measure the memory and streaming targets (bench_memory.py, bench_stream.py) in this run "
        "(default: on, off with --small)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.small:
        args.images, args.size, args.repeats, args.mem_images, args.mem_size = 6, 32, 1, (4, 12), 32
    if args.targets is None:
        args.targets = not args.small

    import torch

    with tempfile.TemporaryDirectory(prefix="featx-bench-") as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images, args.size)
        common = {"folder": str(root / "images"), "out": str(root / "out"), "batch_size": args.batch_size,
                  "workers": args.workers, "taps": TAPS}  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):  # round-robin, so machine load drifts hit all variants alike
            for name in VARIANTS:
                times[name].append(time_variant(name, **common))

        print("seconds per run:", {name: [round(t, 2) for t in values] for name, values in times.items()}, flush=True)
        memory = {}
        for count in args.mem_images:
            folder = root / f"mem{count}"
            make_images(folder, count, args.mem_size, seed=1)
            child = in_fresh_process(
                "--memory-child",
                folder=str(folder),
                out=str(root / "memout"),
                batch_size=args.batch_size,
                workers=args.workers,
                taps=TAPS,
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
    peak = matmul_peak_gflops(512 if args.small else 2048, repeats=3 if args.small else 7)["best_gflops"]  # GFLOP/s
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
            "featx_vs_model_only_engine": round(throughput["featx"] / throughput["model_only_engine"], 3),
            "featx_vs_naive_tuned": round(throughput["featx"] / throughput["naive_tuned"], 3),
            "featx_python_vs_model_only": round(throughput["featx_python"] / throughput["model_only"], 3),
            "featx_python_vs_naive": round(throughput["featx_python"] / throughput["naive"], 3),
            "target_vs_model_only": 0.9,
            "target_vs_naive": 1.5,
        },
        "memory": memory,
        "memory_growth_mb": round(many["peak_rss_mb"] - few["peak_rss_mb"], 1),
    }
    if args.targets:
        import bench_memory
        import bench_stream

        results["memory_targets"] = bench_memory.measure(args.small)
        side, budget = (1200, "768MiB") if args.small else (10000, "4GiB")
        results["stream"] = bench_stream.measure(side=side, budget_text=budget, windows=4, small=args.small)
        results["targets"] = target_rows(results)
        if args.json == DEFAULT_JSON:  # the same run's figures in the scripts' own files
            write_json(bench_memory.DEFAULT_OUT, results["memory_targets"])
            write_json(bench_stream.DEFAULT_OUT, results["stream"])
    write_json(args.json, results)

    rows = [
        [name, throughput[name], throughput[name] * gflop, 100 * throughput[name] * gflop / peak,
         throughput["featx"] / throughput[name]]
        for name in times
    ]  # fmt: skip
    print(
        f"featx extract, {args.images} images {args.size}x{args.size}, {TAPS}, fp32, batch {args.batch_size}, "
        f"{args.workers} workers, {torch.get_num_threads()} threads; best of {args.repeats}; "
        f"matmul peak {peak:.0f} GFLOP/s; load average {results['machine'].get('load_average')}"
    )
    print(format_table(["variant", "img/s", "GFLOP/s", "% peak", "featx / variant"], rows))
    print()
    mem_rows = [
        [m["images"], m["peak_rss_mb"], m["peak_added_mb"], "{:.0f}-{:.0f}".format(*m["rss_second_half_mb"]),
         m["workers_peak_mb"], m["seconds"]]
        for m in (few, many)
    ]  # fmt: skip
    print(f"memory: extract in a fresh process, {args.mem_size}x{args.mem_size} images")
    print(
        format_table(
            ["images", "peak RSS MiB", "added MiB", "RSS 2nd half MiB", "worker maxrss MiB", "seconds"], mem_rows
        )
    )
    if args.targets:
        print("\n" + bench_memory.render(results["memory_targets"]))
        print("\n" + bench_stream.render(results["stream"]))
        rows = [[t["target"], t["measured"], t["limit"], "met" if t["met"] else "NOT MET"] for t in results["targets"]]
        print("\ntargets of `featx extract` at scale, this run:")
        print(format_table(["target", "measured", "limit", ""], rows))
    print(f"\nresults: {args.json}")
    return results


PREVIOUS_256 = {"featx_vs_model_only": 1.536, "featx_vs_naive_tuned": 1.531}
"""The 256x256 ratios before the memory budget and streaming (2026-11-25, same machine): they must
not regress. Run-to-run spread of this VM is a few per cent, so "no regression" is read as at
least 0.95x the previous figure."""


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of extraction at scale, measured in this run: name, value, limit, met."""
    ratios, memory, stream = results["ratios"], results["memory_targets"], results["stream"]
    peaks = memory["results"]
    rows = [
        ("256x256: featx / model alone", ratios["featx_vs_model_only"], ">= 0.9", ratios["featx_vs_model_only"] >= 0.9),
        ("256x256: featx / naive loop", ratios["featx_vs_naive"], ">= 1.5", ratios["featx_vs_naive"] >= 1.5),
    ]
    for name, before in PREVIOUS_256.items():
        rows.append((f"256x256: {name} no regression from {before}", ratios[name], f">= {0.95 * before:.3f}",
                     ratios[name] >= 0.95 * before))  # fmt: skip
    tiled_error = max(memory["square_tiled_vs_untiled_rel_error"].values())
    speed = memory["throughput_4GiB"]["ratio"]
    rows += [
        ("5 x 2040x1356, --max-memory 3GiB: peak PSS GiB", peaks["div2k_5_gap_3GiB"]["peak_pss_gib"], "< 3.75",
         memory["met"]["div2k_5_gap_3GiB"]),
        ("2400x2400, --max-memory 1GiB: peak PSS GiB", peaks["square_2400_gap_1GiB"]["peak_pss_gib"], "< 1.5",
         memory["met"]["square_2400_gap_1GiB"]),
        ("2400x2400 tiled vs untiled: relative error", tiled_error, "< 1e-5", tiled_error < 1e-5),
        ("2040x1356 under 4GiB: featx / model alone", speed, ">= 0.9", speed >= 0.9),
        (f"{stream['config']['megapixels']:.0f} MP --reduce none, {stream['config']['max_memory']}: peak / budget",
         stream["peak_over_budget"], "< 1.25", stream["met"]),
        ("streamed file vs untiled passes: relative error", max(stream["window_rel_errors"]), "< 1e-5",
         max(stream["window_rel_errors"]) < 1e-5),
    ]  # fmt: skip
    return [{"target": name, "measured": value, "limit": limit, "met": bool(met)} for name, value, limit, met in rows]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--memory-child", "--timing-child"):
        child = memory_child if sys.argv[1] == "--memory-child" else timing_child
        print(_MARKER + json.dumps(child(**json.loads(sys.argv[2]))), flush=True)
    else:
        main()
