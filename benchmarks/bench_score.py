"""``featx score`` side by side with the tools SR papers use, on the same pairs, in one run.

Part ``fidelity`` (the table of most SR papers: ``--metrics psnr,ssim --y-channel --crop-border 4``)
on DIV2K-size pairs (2040x1356 by default; references cut and resized from scikit-image's
pictures, "SR outputs" made by bicubic x4 down- and up-sampling), against

- BasicSR's ``scripts/metrics/calculate_psnr_ssim.py`` logic: its numpy ``calculate_psnr`` /
  ``calculate_ssim`` in a loop, each pair read with ``cv2.imread(..., IMREAD_UNCHANGED) / 255`` and
  ``bgr2ycbcr(y_only=True)``, as the script does;
- pyiqa's ``psnry`` and ``ssim`` (its Y-channel SSIM; ``ssimc`` is its RGB one) with
  ``crop_border=4``, called on the file paths, when pyiqa is installed (``pip install -e .[bench]``).
  pyiqa takes its Y from another colour conversion, so its numbers differ (recorded, not asserted);
  it is timed on the first ``--pyiqa-pairs`` pairs only (its float64 11x11 convolution takes tens of
  seconds per DIV2K pair) and compared per pair.

featx and BasicSR must agree (PSNR within 1e-6 dB, SSIM within 1e-6; the largest differences are
recorded). Part ``deep``: ``featx score --metrics lpips,dists`` against a loop over the ``lpips``
and ``DISTS_pytorch`` packages on the same pairs and the same random backbones (their learned
weights shipped inside the packages).

Timings are interleaved round-robin in one process (medians of the repeats), so load on a shared
machine affects each side alike. The script prints the ratios and writes JSON (date, machine).

The fidelity pairs take seconds each to make (bicubic resizes and PNG encoding of 2040x1356
pictures); ``--data DIR`` keeps them under ``DIR/{pairs}x{height}x{width}`` and reuses them in
later runs (the first N pairs are the same for every count), outside the timings either way.

Usage:
    python benchmarks/bench_score.py                           # fidelity: 100 DIV2K-size pairs, writes results/score.json
    python benchmarks/bench_score.py --pairs 20 --data /tmp/pairs --json /tmp/score.json   # iterate on kept pairs
    python benchmarks/bench_score.py --part all --pairs 20     # both parts
    python benchmarks/bench_score.py --small --part all --json /tmp/score.json   # a quick smoke run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, time_interleaved, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "score.json"


def make_sr_pairs(root: Path, count: int, height: int, width: int, scale: int = 4) -> tuple[Path, Path]:
    """``count`` references of ``height x width`` (crops of scikit-image's pictures resized up) and
    bicubic x``scale`` "SR outputs" of them."""
    from skimage import data

    pictures = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(0)
    pred, ref = root / "pred", root / "ref"
    pred.mkdir(parents=True), ref.mkdir(parents=True)
    for index in range(count):
        picture = pictures[index % len(pictures)]
        top, left = (int(rng.integers(0, side // 4)) for side in picture.shape[:2])
        crop = Image.fromarray(picture[top:, left:]).resize((width, height), Image.BICUBIC)
        small = crop.resize((width // scale, height // scale), Image.BICUBIC)
        crop.save(ref / f"{index:04d}.png")
        small.resize((width, height), Image.BICUBIC).save(pred / f"{index:04d}.png")
    return pred, ref


def fidelity_pairs(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path, bool]:
    """The fidelity part's pairs, and whether they were reused: made in ``tmp``, or in ``--data``
    (kept, and reused by later runs with the same count and size)."""
    if args.data is None:
        return (*make_sr_pairs(tmp, args.pairs, args.height, args.width), False)
    root = args.data / f"{args.pairs}x{args.height}x{args.width}"
    reused = (root / "ref" / f"{args.pairs - 1:04d}.png").exists()
    if not reused:
        shutil.rmtree(root, ignore_errors=True)
        make_sr_pairs(root, args.pairs, args.height, args.width)
    return root / "pred", root / "ref", reused


def basicsr_functions():
    """BasicSR's calculate_psnr, calculate_ssim and bgr2ycbcr (imported before any timing)."""
    import torchvision

    # BasicSR 1.4.2 imports a torchvision module that newer torchvision renamed
    sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import bgr2ycbcr

    return calculate_psnr, calculate_ssim, bgr2ycbcr


def basicsr_script_loop(pred: Path, ref: Path, names: list[str], crop_border: int, functions) -> dict[str, tuple[float, float]]:
    """BasicSR's calculate_psnr_ssim.py with test_y_channel=True, for every pair."""
    import cv2

    calculate_psnr, calculate_ssim, bgr2ycbcr = functions
    scores = {}
    for name in names:
        img_gt = cv2.imread(str(ref / name), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
        img_restored = cv2.imread(str(pred / name), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
        if img_gt.ndim == 3 and img_gt.shape[2] == 3:
            img_gt, img_restored = bgr2ycbcr(img_gt, y_only=True), bgr2ycbcr(img_restored, y_only=True)
        scores[name] = (
            float(calculate_psnr(img_gt * 255, img_restored * 255, crop_border=crop_border, input_order="HWC")),
            float(calculate_ssim(img_gt * 255, img_restored * 255, crop_border=crop_border, input_order="HWC")),
        )
    return scores


def pyiqa_metrics(crop_border: int):
    """pyiqa's psnry and (Y-channel) ssim on CPU, or None when pyiqa is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pyiqa
    except ImportError:
        return None
    return [pyiqa.create_metric(name, device="cpu", crop_border=crop_border) for name in ("psnry", "ssim")]


def fidelity_part(args: argparse.Namespace) -> dict:
    """featx score vs BasicSR's script logic vs pyiqa, PSNR/SSIM on Y with crop_border."""
    from featx.metrics.score import score_folders, write_scores

    border = 4
    functions = basicsr_functions()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pred, ref, reused = fidelity_pairs(Path(tmp), args)
        made = time.perf_counter() - start
        names = sorted(p.name for p in pred.iterdir())
        results: dict[str, dict[str, tuple[float, float]]] = {}

        def featx_score() -> None:
            summary = score_folders(pred, ref, metrics=["psnr", "ssim"], y_channel=True, crop_border=border)
            write_scores(summary, Path(tmp) / "out" / "scores.csv")
            results["featx"] = {p.key: (p.scores["psnr"], p.scores["ssim"]) for p in summary.pairs}

        def basicsr() -> None:
            results["basicsr"] = basicsr_script_loop(pred, ref, names, border, functions)

        timing = time_interleaved({"basicsr_script": basicsr, "featx_score": featx_score}, warmup=0, repeats=args.repeats)
        per_pair = {name: t["median_s"] / args.pairs for name, t in timing.items()}
        metrics = pyiqa_metrics(border)
        pyiqa_record: dict = {"installed": metrics is not None}
        if metrics is not None:
            subset = names[: args.pyiqa_pairs]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                values = {n: tuple(float(m(str(pred / n), str(ref / n))) for m in metrics) for n in subset}
                elapsed = time.perf_counter() - start
            per_pair["pyiqa"] = elapsed / len(subset)
            pyiqa_record.update(
                pairs=len(subset),
                seconds=elapsed,
                max_psnr_difference_db=max(abs(values[n][0] - results["featx"][n][0]) for n in subset),
                max_ssim_difference=max(abs(values[n][1] - results["featx"][n][1]) for n in subset),
            )
    difference = [max(abs(a - b) for a, b in zip(results["featx"][n], results["basicsr"][n], strict=True)) for n in names]
    psnr_difference = max(abs(results["featx"][n][0] - results["basicsr"][n][0]) for n in names)
    ssim_difference = max(abs(results["featx"][n][1] - results["basicsr"][n][1]) for n in names)
    speedups = {f"featx_vs_{name}": per_pair[name] / per_pair["featx_score"] for name in per_pair if name != "featx_score"}
    print(format_table(["variant", "s per pair", "pairs/s"], [[n, v, 1 / v] for n, v in per_pair.items()]))
    for name, value in speedups.items():
        print(f"{name}: {value:.2f}x")
    print(f"featx vs BasicSR: largest PSNR difference {psnr_difference:.2e} dB, SSIM {ssim_difference:.2e}")
    return {
        "config": {
            "pairs": args.pairs,
            "height": args.height,
            "width": args.width,
            "crop_border": border,
            "y_channel": True,
            "repeats": args.repeats,
            "pyiqa_pairs": args.pyiqa_pairs,
            "making_pairs_s": made,
            "pairs_reused": reused,
        },  # fmt: skip
        "seconds": {name: t["times_s"] for name, t in timing.items()},
        "median_s": {name: t["median_s"] for name, t in timing.items()},
        "seconds_per_pair": per_pair,
        "speedup": {name: round(value, 3) for name, value in speedups.items()},
        "max_psnr_difference_db": psnr_difference,
        "max_ssim_difference": ssim_difference,
        "max_score_difference": max(difference),
        "pyiqa": pyiqa_record,
    }


def make_pairs(root: Path, count: int, size: int) -> tuple[Path, Path]:
    """``count`` reference crops of scikit-image's pictures and noisy "SR outputs" of them."""
    from skimage import data

    pictures = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    pred, ref = root / "pred", root / "ref"
    pred.mkdir(parents=True), ref.mkdir(parents=True)
    for index in range(count):
        picture = pictures[index % len(pictures)]
        top = rng.integers(0, picture.shape[0] - size)
        left = rng.integers(0, picture.shape[1] - size)
        crop = picture[top : top + size, left : left + size]
        noisy = np.clip(crop + rng.normal(0, 12, crop.shape), 0, 255).astype(np.uint8)
        Image.fromarray(crop).save(ref / f"{index:04d}.png")
        Image.fromarray(noisy).save(pred / f"{index:04d}.png")
    return pred, ref


def build_models():
    """(lpips package, DISTS_pytorch, featx LPIPS, featx DISTS) on shared random backbones."""
    import DISTS_pytorch.DISTS_pt as dists_pt
    import lpips
    import torchvision

    from featx.metrics.dists import DISTS
    from featx.metrics.lpips import LPIPS

    torch.manual_seed(0)
    vgg16 = torchvision.models.vgg16(weights=None)
    original = dists_pt.models.vgg16
    dists_pt.models.vgg16 = lambda *args, **kwargs: vgg16  # no download
    try:
        ref_dists = dists_pt.DISTS(load_weights=False).eval()
    finally:
        dists_pt.models.vgg16 = original
    shipped = torch.load(Path(dists_pt.__file__).with_name("weights.pt"), map_location="cpu", weights_only=True)
    ref_dists.alpha.data, ref_dists.beta.data = shipped["alpha"], shipped["beta"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_lpips = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
        lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        ours_lpips = LPIPS(net="alex", weights=_alexnet_state(ref_lpips), lin_weights=lin_file, reduction="none")
        ours_dists = DISTS(weights=vgg16.state_dict(), dists_weights=Path(dists_pt.__file__).with_name("weights.pt"),
                           reduction="none")  # fmt: skip
    return ref_lpips, ref_dists, ours_lpips.eval(), ours_dists.eval()


def _alexnet_state(ref_lpips) -> dict[str, torch.Tensor]:
    """The lpips package's AlexNet slices as torchvision ``features.{i}`` keys."""
    state = {}
    for name, value in ref_lpips.net.state_dict().items():
        _, index, param = name.split(".")  # slice{k}.{i}.{weight|bias}
        state[f"features.{index}.{param}"] = value
    return state


def deep_part(args: argparse.Namespace) -> dict:
    """featx score --metrics lpips,dists vs a loop over the lpips and DISTS_pytorch packages."""
    from featx.metrics.score import score_folders

    ref_lpips, ref_dists, ours_lpips, ours_dists = build_models()
    with tempfile.TemporaryDirectory() as tmp:
        pred, ref = make_pairs(Path(tmp), args.deep_pairs, args.deep_size)
        names = sorted(p.name for p in pred.iterdir())
        results: dict[str, dict[str, tuple[float, float]]] = {}

        def packages_loop() -> None:
            to_tensor = __import__("torchvision").transforms.functional.to_tensor
            with torch.no_grad():
                for name in names:
                    x = to_tensor(Image.open(pred / name).convert("RGB"))[None]
                    y = to_tensor(Image.open(ref / name).convert("RGB"))[None]
                    results.setdefault("packages", {})[name] = (
                        float(ref_lpips(x * 2 - 1, y * 2 - 1)),
                        float(ref_dists(x, y)),
                    )

        def featx_score() -> None:
            summary = score_folders(pred, ref, metrics=["lpips", "dists"], batch_size=args.batch_size,
                                    modules={"lpips": ours_lpips, "dists": ours_dists})  # fmt: skip
            # the backbones are random (no trained weights here): the columns say so
            results["featx"] = {p.key: (p.scores["lpips_unverified"], p.scores["dists_unverified"]) for p in summary.pairs}

        timing = time_interleaved({"packages_loop": packages_loop, "featx_score": featx_score},
                                  warmup=0 if args.small else 1, repeats=args.repeats)  # fmt: skip
    differences = [
        max(abs(a - b) for a, b in zip(results["featx"][name], results["packages"][name], strict=True)) for name in names
    ]
    speedup = timing["packages_loop"]["median_s"] / timing["featx_score"]["median_s"]
    print(format_table(["variant", "median s", "pairs/s"],
                       [[n, t["median_s"], args.deep_pairs / t["median_s"]] for n, t in timing.items()]))  # fmt: skip
    print(f"featx score vs the packages' loop: {speedup:.2f}x; largest score difference {max(differences):.2e}")
    return {
        "config": {"pairs": args.deep_pairs, "size": args.deep_size, "repeats": args.repeats, "batch_size": args.batch_size},
        "seconds": {name: t["times_s"] for name, t in timing.items()},
        "median_s": {name: t["median_s"] for name, t in timing.items()},
        "pairs_per_second": {name: args.deep_pairs / t["median_s"] for name, t in timing.items()},
        "speedup_featx_vs_packages": round(speedup, 3),
        "max_score_difference": max(differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("fidelity", "deep", "all"), default="fidelity")
    parser.add_argument("--small", action="store_true", help="a few tiny pairs, 1 repeat (smoke test)")
    parser.add_argument("--pairs", type=int, default=100, help="fidelity pairs")
    parser.add_argument("--height", type=int, default=1356)
    parser.add_argument("--width", type=int, default=2040)
    parser.add_argument("--pyiqa-pairs", type=int, default=2, help="pairs pyiqa is timed on (its SSIM is slow)")
    parser.add_argument("--deep-pairs", type=int, default=32)
    parser.add_argument("--deep-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="deep part: default featx score's (1 on CPU, 8 on GPU)")
    parser.add_argument("--data", type=Path, default=None, help="fidelity: keep the pairs under this folder and reuse them")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.small:
        args.pairs, args.height, args.width, args.pyiqa_pairs = 3, 48, 64, 1
        args.deep_pairs, args.deep_size, args.repeats = 2, 64, 1
    payload: dict = {"benchmark": "score", "machine": machine_info(), "config": {"small": args.small, "part": args.part}}
    if args.part in ("fidelity", "all"):
        payload["fidelity"] = fidelity_part(args)
    if args.part in ("deep", "all"):
        payload["deep"] = deep_part(args)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
