"""``featx score --metrics lpips,dists`` versus a loop over the lpips and DISTS_pytorch packages.

Both sides score the same pairs of PNG files with the same networks: random AlexNet / VGG16
backbones (no ImageNet weights are downloaded here; the speed does not depend on the values)
copied into both, and the learned LPIPS v0.1 / DISTS weights that ship inside the two packages.
The loop is what an evaluation script usually does: decode each pair with PIL, then call
``lpips.LPIPS(net="alex")`` and ``DISTS_pytorch.DISTS()`` on it, one pair at a time. featx
decodes once for both metrics and batches pairs of one size. Both are timed round-robin in one
process (best and median of the repeats); the scores of the two sides are compared as a check.

Usage:
    python benchmarks/bench_score.py                      # 32 pairs of 256x256, writes results/score.json
    python benchmarks/bench_score.py --small --json /tmp/score.json   # a quick smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, time_interleaved, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "score.json"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="4 pairs of 64x64, 1 repeat (smoke test)")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: featx score's (1 on CPU, 8 on GPU)")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.small:
        args.pairs, args.size, args.repeats = 4, 64, 1
    from featx.metrics.score import score_folders

    ref_lpips, ref_dists, ours_lpips, ours_dists = build_models()
    with tempfile.TemporaryDirectory() as tmp:
        pred, ref = make_pairs(Path(tmp), args.pairs, args.size)
        names = sorted(p.name for p in pred.iterdir())
        results: dict[str, dict[str, float]] = {}

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
            results["featx"] = {p.key: (p.scores["lpips"], p.scores["dists"]) for p in summary.pairs}

        timing = time_interleaved({"packages_loop": packages_loop, "featx_score": featx_score},
                                  warmup=0 if args.small else 1, repeats=args.repeats)  # fmt: skip
    differences = [
        max(abs(a - b) for a, b in zip(results["featx"][name], results["packages"][name], strict=True)) for name in names
    ]
    speedup = timing["packages_loop"]["median_s"] / timing["featx_score"]["median_s"]
    payload = {
        "benchmark": "score",
        "machine": machine_info(),
        "config": {"pairs": args.pairs, "size": args.size, "repeats": args.repeats, "batch_size": args.batch_size,
                   "small": args.small},  # fmt: skip
        "seconds": {name: t["times_s"] for name, t in timing.items()},
        "median_s": {name: t["median_s"] for name, t in timing.items()},
        "pairs_per_second": {name: args.pairs / t["median_s"] for name, t in timing.items()},
        "speedup_featx_vs_packages": round(speedup, 3),
        "max_score_difference": max(differences),
    }
    print(format_table(["variant", "median s", "pairs/s"],
                       [[n, t["median_s"], args.pairs / t["median_s"]] for n, t in timing.items()]))  # fmt: skip
    print(f"featx score vs the packages' loop: {speedup:.2f}x; largest score difference {max(differences):.2e}")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
