"""Construction time and memory of featx's truncated extractors against the usual code, for every family.

For each family of ``featx.backbones.catalog.FAMILIES`` (VGG, AlexNet, SqueezeNet, DINOv2 when timm is
installed, and any ResNet or ConvNeXt the catalog holds) one representative architecture and a deep-ish
tap (:func:`plan`: VGG19 with ``ttsr_lte``, the acceptance case; otherwise the tap two thirds down
``available_taps``) are built three ways, each in a fresh Python process:

- ``common``: the usual code: the whole torchvision model (``torchvision.models.<arch>()``; DINOv2:
  ``timm.create_model``), initialised, then ``load_state_dict(torch.load(path, weights_only=True))``;
- ``featx_cold``: ``build_backbone(arch, tap, weights=path)`` with an empty ``FEATX_HOME``: hash,
  unpickle, check the values, write the features cache;
- ``featx_warm``: the same again: the features cache exists and its values were checked when it was
  written (the index remembers that by its sha256 and size), so only the kept tensors are read;
- ``featx_warm_cold_pages``: ``featx_warm`` after the page cache of every file in ``FEATX_HOME``
  (checkpoint, features cache, index) was dropped (``posix_fadvise(DONTNEED)``, those files only):
  what a later run pays when the cache is no longer in memory. Its ratio is conservative: the
  common side keeps the pages of the checkpoint it just read.

The checkpoint is fabricated in ``FEATX_HOME``: random tensors with the real file's keys and shapes
(every tensor of the model, classifier included), in the real file's format (torchvision's older
files are legacy pickles, ConvNeXt and DINOv2 zip files). It is loaded by path under a name no
registry entry has, so featx checks it as an unverified file.

Memory, per fresh process: ``peak_added_mib`` is the peak resident set size added by construction
(``VmHWM`` after, minus the RSS after the imports, with the peak reset by ``/proc/self/clear_refs``);
``pss_added_mib`` is the proportional set size still held after it (``/proc/self/smaps_rollup``).
The page cache is as the previous step left it (the checkpoint was just written or read).

Usage:
    python benchmarks/bench_construction.py                  # every family, 3 repeats: benchmarks/results/construction.json
    python benchmarks/bench_construction.py --families vgg --repeats 5
    python benchmarks/bench_construction.py --tiny --out /tmp/bench   # smoke run: SqueezeNet, 1 repeat
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Optional

import common

VARIANTS = ("common", "featx_cold", "featx_warm", "featx_warm_cold_pages")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "construction.json"
PREFERRED = {"vgg": "vgg19", "resnet": "resnet50", "convnext": "convnext_tiny", "dinov2": "dinov2_vits14"}
FIXED_TAPS = {"vgg19": "ttsr_lte"}  # the acceptance case: deepest tap relu3_1, features[:12]
LEGACY_FORMAT = ("vgg", "alexnet", "squeezenet", "resnet")  # torchvision files saved before torch 1.6
TINY_FAMILIES = ("squeezenet",)  # a 5 MiB checkpoint: the whole path in seconds
TARGET = {"family": "vgg", "time": 50.0, "memory": 50.0}  # issue 20: VGG19 ttsr_lte, warm
TIMM_NAMES = {"dinov2_vits14": "vit_small_patch14_dinov2", "dinov2_vitb14": "vit_base_patch14_dinov2"}


def has_timm() -> bool:
    return importlib.util.find_spec("timm") is not None


def plan(families: Optional[list[str]] = None) -> dict[str, dict[str, str]]:
    """Family -> ``{"arch", "tap"}``: a representative architecture and a deep-ish tap of each family
    in the catalog (DINOv2 only with timm installed).

    Raises:
        SystemExit: a requested family is not in the catalog (or needs timm).
    """
    from featx.backbones.catalog import FAMILIES, available_taps

    chosen = {}
    for family, archs in FAMILIES.items():
        if families is not None and family not in families:
            continue
        if family == "dinov2" and not has_timm():
            continue
        arch = PREFERRED.get(family) if PREFERRED.get(family) in archs else archs[0]
        taps = [info.name for info in available_taps(arch)]
        chosen[family] = {"arch": arch, "tap": FIXED_TAPS.get(arch, taps[(2 * len(taps)) // 3])}
    unknown = sorted(set(families or ()) - set(chosen))
    if unknown:
        raise SystemExit(f"families {unknown} are not in featx's catalog here (or need timm): {sorted(FAMILIES)}")
    return chosen


# ---------------------------------------------------------------------------------------------
# In fresh processes
# ---------------------------------------------------------------------------------------------


def _full_model(family: str, arch: str, meta: bool) -> Any:
    """The whole reference model: torchvision's, or timm's for DINOv2 (``meta``: shapes only)."""
    import torch

    with torch.device("meta" if meta else "cpu"):
        if family == "dinov2":
            import timm

            extra = {"weight_init": "skip"} if meta else {}
            return timm.create_model(TIMM_NAMES[arch], pretrained=False, num_classes=0, dynamic_img_size=True, **extra)
        import torchvision

        return getattr(torchvision.models, arch)()


def fabricate(family: str, arch: str, path: str) -> dict:
    """Write random tensors with the real checkpoint's keys, shapes and file format."""
    import torch

    shapes = {key: value.shape for key, value in _full_model(family, arch, meta=True).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    if family == "dinov2":
        state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])  # in DINOv2's released files
    torch.save(state, path, _use_new_zipfile_serialization=family not in LEGACY_FORMAT)
    return {"checkpoint_bytes": os.path.getsize(path), "tensors": len(state)}


def _pss_mib() -> Optional[float]:
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return float(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _drop_pages(folder: Path) -> None:
    """Ask the kernel to drop the cached pages of every file under ``folder`` (best effort)."""
    for path in folder.rglob("*"):
        if not path.is_file() or not hasattr(os, "posix_fadvise"):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def construct(variant: str, family: str, arch: str, tap: str, checkpoint: str) -> dict:
    """Build one variant (inside a fresh process); wall time, PSS added and kept parameters."""
    import gc
    import time
    import warnings

    import torch

    if variant == "featx_warm_cold_pages":
        _drop_pages(Path(os.environ["FEATX_HOME"]))
    gc.collect()
    pss_before = _pss_mib()
    start = time.perf_counter()
    if variant == "common":
        model = _full_model(family, arch, meta=False)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state.pop("mask_token", None)  # as timm's checkpoint filter does
        model.load_state_dict(state)
        del state
        module = model.eval().requires_grad_(False)
    else:
        from featx.backbones.catalog import build_backbone

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            module = build_backbone(arch, tap, weights=checkpoint)
    elapsed = time.perf_counter() - start
    gc.collect()
    pss_after = _pss_mib()
    return {
        "time_s": elapsed,
        "pss_added_mib": None if pss_before is None or pss_after is None else pss_after - pss_before,
        "params": sum(p.numel() for p in module.parameters()),
    }


def _preload(family: str) -> tuple[str, ...]:
    """Modules both sides import before the baseline (construction alone is measured)."""
    modules = ["torch", "torchvision", "featx.weights", "featx.backbones.catalog"]
    if family == "dinov2":
        modules.append("timm")
    for name in (f"featx.backbones.{family}.features", f"featx.backbones.{family}"):
        try:
            importlib.import_module(name)
        except ImportError:  # a one-file family: featx.backbones.alexnet
            continue
        modules.append(name)
        break
    return tuple(modules)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _median(values: list[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ratio(numerator: Optional[float], denominator: Optional[float], floor: float) -> Optional[float]:
    if numerator is None or denominator is None:
        return None
    return numerator / max(denominator, floor)


def measure_family(family: str, arch: str, tap: str, repeats: int, root: Path, *, tiny: bool = False) -> dict:
    """Fabricate the checkpoint, then ``repeats`` rounds of common, featx cold, featx warm."""
    store = root / f"{family}-store"
    store.mkdir()
    source = store / f"{arch}-fabricated.pth"
    kwargs = {"family": family, "arch": arch, "path": str(source)}
    # Full size in a fresh process (the driver stays small); --tiny here, which saves starting one.
    made = fabricate(**kwargs) if tiny else common.run_isolated(__file__, "fabricate", kwargs)["result"]
    preload = _preload(family)
    samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for repeat in range(repeats):
        home = root / f"{family}-home-{repeat}"  # empty: the first featx run is cold
        home.mkdir()
        checkpoint = home / source.name  # in FEATX_HOME, as a user keeps it
        try:
            os.link(source, checkpoint)
        except OSError:
            import shutil

            shutil.copyfile(source, checkpoint)
        env = {"FEATX_HOME": str(home), "TORCH_HOME": str(root / "torch")}
        for variant in VARIANTS:
            kwargs = {"variant": variant, "family": family, "arch": arch, "tap": tap, "checkpoint": str(checkpoint)}
            run = common.run_isolated(__file__, "construct", kwargs, env=env, preload=preload)
            samples[variant].append({**run["result"], "peak_added_mib": run["peak_added_mb"]})
    results: dict[str, Any] = {}
    for variant, values in samples.items():
        results[variant] = {
            "time_s": [v["time_s"] for v in values],
            "peak_added_mib": [v["peak_added_mib"] for v in values],
            "pss_added_mib": [v["pss_added_mib"] for v in values],
            "time_s_median": statistics.median(v["time_s"] for v in values),
            "peak_added_mib_median": statistics.median(v["peak_added_mib"] for v in values),
            "pss_added_mib_median": _median([v["pss_added_mib"] for v in values]),
            "params": values[0]["params"],
        }
    ratios = {}
    for variant in VARIANTS[1:]:
        ours, base = results[variant], results["common"]
        ratios[variant] = {
            "time": _ratio(base["time_s_median"], ours["time_s_median"], 1e-6),
            "peak_memory": _ratio(base["peak_added_mib_median"], ours["peak_added_mib_median"], 0.05),
            "pss": _ratio(base["pss_added_mib_median"], ours["pss_added_mib_median"], 0.05),
        }
    return {
        "arch": arch,
        "tap": tap,
        "checkpoint_bytes": made["checkpoint_bytes"],
        "checkpoint_format": "torch.save legacy (non-zip)" if family in LEGACY_FORMAT else "torch.save (zip)",
        "common": (f"timm.create_model({TIMM_NAMES.get(arch)!r})" if family == "dinov2" else f"torchvision.models.{arch}()")
        + "; load_state_dict(torch.load(path, weights_only=True))",
        "featx": f"build_backbone({arch!r}, {tap!r}, weights=path)",
        "results": results,
        "common_over_featx": ratios,
    }


def _rows(families: dict[str, dict]) -> list[list[Any]]:
    rows = []
    for entry in families.values():
        for variant in VARIANTS:
            res = entry["results"][variant]
            ratio = entry["common_over_featx"].get(variant, {})
            rows.append(
                [
                    f"{entry['arch']} {entry['tap']}" if variant == "common" else "",
                    variant,
                    res["time_s_median"],
                    res["peak_added_mib_median"],
                    res["pss_added_mib_median"],
                    f"{ratio['time']:.1f}x" if ratio else "",
                    f"{ratio['peak_memory']:.1f}x" if ratio else "",
                ]
            )
    return rows


def main(argv: Optional[list[str]] = None) -> dict:
    """Run the benchmark; print the table; write JSON. Returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", "--small", action="store_true", help=f"smoke run: {', '.join(TINY_FAMILIES)}, 1 repeat")
    parser.add_argument("--families", help="comma-separated families of the catalog (default: all; --tiny: squeezenet)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per family (default 3; 1 with --tiny)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file, or a directory for construction.json")
    args = parser.parse_args(argv)
    requested = args.families.split(",") if args.families else (list(TINY_FAMILIES) if args.tiny else None)
    chosen = plan(requested)
    repeats = args.repeats or (1 if args.tiny else 3)
    out = args.out if args.out.suffix == ".json" else args.out / "construction.json"
    families = {}
    with tempfile.TemporaryDirectory(prefix="featx-bench-construction-") as scratch:
        for family, choice in chosen.items():
            families[family] = measure_family(family, choice["arch"], choice["tap"], repeats, Path(scratch), tiny=args.tiny)
    result: dict[str, Any] = {
        "benchmark": "construction",
        "config": {"tiny": args.tiny, "repeats": repeats, "families": list(chosen)},
        "machine": common.machine_info(),
        "memory_metric": (
            "peak_added_mib: peak RSS added by construction in a fresh process (VmHWM after minus RSS after the "
            "imports, peak reset with /proc/self/clear_refs); pss_added_mib: PSS held after construction minus before"
        ),
        "families": families,
    }
    if TARGET["family"] in families:
        warm = families[TARGET["family"]]["common_over_featx"]["featx_warm"]
        result["target"] = {
            "case": f"{families[TARGET['family']]['arch']} {families[TARGET['family']]['tap']}, featx_warm",
            "time_ratio_min": TARGET["time"],
            "memory_ratio_min": TARGET["memory"],
            "met": warm["time"] >= TARGET["time"] and warm["peak_memory"] >= TARGET["memory"],
        }
    print(f"construction, median of {repeats} fresh processes per variant ({result['machine']['date_utc']})")
    headers = ["model and tap", "variant", "time (s)", "peak added (MiB)", "PSS added (MiB)", "common/it time", "memory"]
    print(common.format_table(headers, _rows(families)))
    if "target" in result:
        target = result["target"]
        verdict = "met" if target["met"] else "NOT met"
        print(f"target ({target['case']}): >= {TARGET['time']:.0f}x faster and less peak memory: {verdict}")
    common.write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
