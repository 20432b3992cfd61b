"""Construction time and memory of a truncated DINOv2: ``DINOv2Features("dinov2_vits14", "blocks.5",
weights=PATH)`` against building timm's model and loading the checkpoint.

Variants, each in a fresh Python process (memory: peak resident set size added after the imports):

- ``timm_full``: the usual code: ``timm.create_model("vit_small_patch14_dinov2")`` (all 12 blocks,
  initialised), ``load_state_dict(torch.load(path))``;
- ``timm_depth``: timm's model created with ``depth=6`` (initialised), then loaded with the kept keys;
- ``timm_slice``: the full model created (initialised), sliced to 6 blocks before loading the kept keys;
- ``featx_cold``: featx with an empty ``FEATX_HOME`` (hash, unpickle, write the features cache);
- ``featx_cached``: featx again (the features cache exists).

The checkpoint is fabricated: random tensors in DINOv2's released layout (``dinov2_vits14_pretrain.pth``
keys, with ``mask_token``), saved with ``torch.save``.

Usage:
    python benchmarks/bench_dinov2.py                          # writes benchmarks/results/dinov2.json
    python benchmarks/bench_dinov2.py --small --out /tmp/bench   # a quick smoke run (numbers not representative)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import common

ARCH, TIMM_NAME, TAP, KEPT = "dinov2_vits14", "vit_small_patch14_dinov2", "blocks.5", 6
VARIANTS = ("timm_full", "timm_depth", "timm_slice", "featx_cold", "featx_cached")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "dinov2.json"
PRELOAD = ("torch", "timm", "featx.weights", "featx.backbones.dinov2.features")


def _kept(key: str) -> bool:
    """Keys of the modules a model up to ``blocks.5`` has (no final norm, no mask_token)."""
    if key.startswith("blocks."):
        return int(key.split(".")[1]) < KEPT
    return not key.startswith("norm.") and key != "mask_token"


def construct(variant: str, checkpoint: str, blocks: int) -> dict:
    """Build one variant (runs in a fresh process); wall time and kept parameters."""
    import time
    import warnings

    import timm
    import torch

    from featx.backbones.dinov2.features import DINOv2Features

    start = time.perf_counter()
    if variant.startswith("featx"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            module = DINOv2Features(ARCH, TAP, weights=checkpoint)
    else:
        depth = KEPT if variant == "timm_depth" else blocks
        model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, depth=depth, dynamic_img_size=True)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state.pop("mask_token", None)  # as timm's checkpoint filter does
        if variant == "timm_full":
            model.load_state_dict(state)
        else:
            model.blocks = model.blocks[:KEPT]
            model.norm = torch.nn.Identity()
            model.load_state_dict({key: value for key, value in state.items() if _kept(key)})
        module = model.eval().requires_grad_(False)
    elapsed = time.perf_counter() - start
    return {"time_s": elapsed, "params": sum(p.numel() for p in module.parameters())}


def fabricate(path: Path, blocks: int) -> int:
    """Random tensors in DINOv2's released layout for a model of ``blocks`` blocks; returns the file size."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, depth=blocks, weight_init="skip")
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(value.shape, generator=generator) * 0.02 for key, value in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    torch.save(state, path)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table; write JSON. Returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 6-block checkpoint and one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant (default 3; 1 with --small)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file, or a directory for dinov2.json")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.small else 3)
    blocks = KEPT if args.small else 12
    out = args.out if args.out.suffix == ".json" else args.out / "dinov2.json"
    samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="featx-bench-dinov2-") as scratch:
        root = Path(scratch)
        checkpoint = root / "dinov2_vits14_pretrain.pth"
        size = fabricate(checkpoint, blocks)
        for repeat in range(repeats):
            env = {"FEATX_HOME": str(root / f"featx-{repeat}")}  # empty: the first featx run is cold
            for variant in VARIANTS:
                kwargs = {"variant": variant, "checkpoint": str(checkpoint), "blocks": blocks}
                run = common.run_isolated(__file__, "construct", kwargs, env=env, preload=PRELOAD)
                samples[variant].append({**run["result"], "peak_added_mb": run["peak_added_mb"]})
    results = {}
    for variant, values in samples.items():
        results[variant] = {
            "time_s": [v["time_s"] for v in values],
            "peak_added_mb": [v["peak_added_mb"] for v in values],
            "time_s_median": statistics.median(v["time_s"] for v in values),
            "peak_added_mb_median": statistics.median(v["peak_added_mb"] for v in values),
            "params": values[0]["params"],
        }
    full = results["timm_full"]
    ratios = {
        variant: {
            "time": full["time_s_median"] / max(results[variant]["time_s_median"], 1e-9),
            "memory": full["peak_added_mb_median"] / max(results[variant]["peak_added_mb_median"], 1e-3),
        }
        for variant in VARIANTS[1:]
    }
    result = {
        "benchmark": "dinov2_construction",
        "config": {
            "arch": ARCH,
            "tap": TAP,
            "kept_blocks": KEPT,
            "checkpoint_blocks": blocks,
            "small": args.small,
            "repeats": repeats,
            "checkpoint_bytes": size,
            "checkpoint_format": "torch.save (zip), DINOv2's released key layout, random values",
        },
        "machine": common.machine_info(),
        "memory_metric": "peak RSS added by construction in a fresh process (VmHWM after minus RSS after the imports)",
        "results": results,
        "ratios_timm_full_over": ratios,
    }
    rows = [
        [variant, results[variant]["time_s_median"], results[variant]["peak_added_mb_median"], results[variant]["params"]]
        + ([ratios[variant]["time"], ratios[variant]["memory"]] if variant in ratios else ["-", "-"])
        for variant in VARIANTS
    ]
    print(f"construction of DINOv2Features({ARCH!r}, {TAP!r}) from a {size / 2**20:.1f} MiB checkpoint (median of {repeats})")
    print(common.format_table(["variant", "time (s)", "peak added (MiB)", "params", "timm_full / it: time", "memory"], rows))
    common.write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
