"""Construction time and memory: ``VGGFeatures("vgg19", "ttsr_lte", weights=PATH)`` versus the common approach.

The common approach (most SR repositories): build ``torchvision.models.vgg19()``, load the full
checkpoint with ``torch.load``, slice ``features[:12]``. The checkpoint is fabricated: random
tensors in torchvision's layout and legacy (non-zip) file format, like the real
``vgg19-dcbb9e9d.pth`` (548 MiB). Each variant runs in a fresh Python process; memory is the peak
resident set size (``ru_maxrss``) added after the imports. featx is measured cold (empty
``FEATX_HOME``: hash + unpickle + write the features cache) and cached (the cache exists).

Usage:
    python benchmarks/bench_construction.py                 # full size, writes benchmarks/results/construction.json
    python benchmarks/bench_construction.py --small --out /tmp/bench   # a quick smoke run (numbers not representative)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ARCH, TAPS, DEPTH = "vgg19", "ttsr_lte", 12  # ttsr_lte's deepest tap relu3_1 is features[11]
VARIANTS = ("common", "featx_cold", "featx_cached")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "construction.json"


# ---------------------------------------------------------------------------------------------
# Worker: one construction in a fresh process
# ---------------------------------------------------------------------------------------------


def _rusage_peak_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _vmhwm_kb() -> int | None:
    """Peak RSS of this process's memory map (``VmHWM``), which ``clear_refs`` can reset; None if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs`` 5), so import-time spikes do not hide
    what construction adds. ``ru_maxrss`` alone also includes the parent's peak at ``exec``."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _vmhwm_kb() is not None
    except OSError:
        return False


def _worker(variant: str, checkpoint: str, small: bool) -> dict[str, float]:
    """Construct once and return wall time and peak added RSS (runs inside a fresh process)."""
    import gc
    import time
    import warnings

    import torch

    if variant == "common":
        import torchvision
        from torchvision.models.vgg import cfgs, make_layers
    else:
        import featx.weights  # noqa: F401  (imported lazily by VGGFeatures; keep import cost out of the timing)
        from featx.backbones.vgg.features import VGGFeatures

    gc.collect()
    reset = _reset_peak()
    baseline_ru, baseline_hwm = _rusage_peak_kb(), _vmhwm_kb()
    start = time.perf_counter()
    if variant == "common":
        if small:  # the --small checkpoint only holds features[:12]: build and load just those layers
            features = make_layers(cfgs["E"])[:DEPTH]
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            features.load_state_dict({key.removeprefix("features."): value for key, value in state.items()})
        else:
            model = torchvision.models.vgg19()
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
            features = model.features[:DEPTH]
            del model
        module = features.eval().requires_grad_(False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            module = VGGFeatures(ARCH, TAPS, weights=checkpoint)
    elapsed = time.perf_counter() - start
    added_ru = max(0, _rusage_peak_kb() - baseline_ru) / 1024
    added_hwm = max(0, _vmhwm_kb() - baseline_hwm) / 1024 if reset else None
    return {
        "time_s": elapsed,
        "peak_rss_added_mib": added_hwm if added_hwm is not None else added_ru,
        "ru_maxrss_added_mib": added_ru,
        "kept_params": sum(p.numel() for p in module.parameters()),
    }


def _run_worker(variant: str, checkpoint: Path, small: bool, featx_home: Path, torch_home: Path) -> dict:
    """Run one step in a fresh interpreter and return the JSON it prints last."""
    env = dict(os.environ, FEATX_HOME=str(featx_home), TORCH_HOME=str(torch_home))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--checkpoint", str(checkpoint)]
    if small:
        command.append("--small")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {variant} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def fabricate_checkpoint(path: Path, small: bool) -> dict:
    """Write random tensors in torchvision's vgg19 layout, legacy format; return size and machine info."""
    import torch
    import torchvision

    with torch.device("meta"):  # shapes only: no 548 MB initialisation
        shapes = {key: value.shape for key, value in torchvision.models.vgg19().state_dict().items()}
    if small:
        shapes = {k: s for k, s in shapes.items() if k.startswith("features.") and int(k.split(".")[1]) < DEPTH}
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=generator) * 0.01 for key, shape in shapes.items()}
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the real files' (pre-1.6) format
    return {"checkpoint_bytes": path.stat().st_size, "machine": _machine()}


def _summary(samples: list[dict[str, float]]) -> dict[str, object]:
    times = [s["time_s"] for s in samples]
    memory = [s["peak_rss_added_mib"] for s in samples]
    return {
        "time_s": times,
        "peak_rss_added_mib": memory,
        "time_s_median": statistics.median(times),
        "peak_rss_added_mib_median": statistics.median(memory),
        "ru_maxrss_added_mib": [s["ru_maxrss_added_mib"] for s in samples],
        "kept_params": samples[0]["kept_params"],
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / max(denominator, 1e-9)


def _machine() -> dict[str, object]:
    import torch
    import torchvision

    import featx

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "featx": featx.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _table(result: dict) -> str:
    config, res, ratios = result["config"], result["results"], result["ratios"]
    lines = [
        f"construction of VGGFeatures({ARCH!r}, {TAPS!r}) from a {config['checkpoint_mib']:.1f} MiB legacy-format "
        f"checkpoint (median of {config['repeats']}, fresh process each)",
        f"{'variant':<16}{'time (s)':>10}{'peak added RSS (MiB)':>22}",
    ]
    for name in VARIANTS:
        lines.append(f"{name:<16}{res[name]['time_s_median']:>10.3f}{res[name]['peak_rss_added_mib_median']:>22.1f}")
    lines.append(f"{'common / featx':<16}{'time':>10}{'memory':>22}")
    for name in ("first", "cached"):
        lines.append(f"{name:<16}{ratios[name]['time']:>9.1f}x{ratios[name]['memory']:>21.1f}x")
    targets = result["targets"]
    lines.append(
        f"target (cached): >= {targets['cached_time_ratio_min']}x faster and >= {targets['cached_memory_ratio_min']}x "
        f"less added memory: {'met' if targets['met'] else 'NOT met'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table; write JSON. Returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny checkpoint (features[:12] only), one repeat")
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant (default 3; 1 with --small)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file, or a directory for construction.json")
    parser.add_argument("--worker", choices=(*VARIANTS, "fabricate"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "fabricate":
        print(json.dumps(fabricate_checkpoint(Path(args.checkpoint), args.small)))
        return {}
    if args.worker:
        print(json.dumps(_worker(args.worker, args.checkpoint, args.small)))
        return {}

    repeats = args.repeats or (1 if args.small else 3)
    out = args.out if args.out.suffix == ".json" else args.out / "construction.json"
    with tempfile.TemporaryDirectory(prefix="featx-bench-") as scratch:
        root = Path(scratch)
        checkpoint = root / "vgg19-checkpoint.pth"
        torch_home = root / "torch"
        if args.small:  # tiny: write it here (saves starting an interpreter)
            made = fabricate_checkpoint(checkpoint, small=True)
        else:  # in a subprocess: the driver stays small, since children inherit its peak RSS in ru_maxrss
            made = _run_worker("fabricate", checkpoint, False, root / "unused", torch_home)
        size = made["checkpoint_bytes"]
        samples: dict[str, list] = {name: [] for name in VARIANTS}
        for repeat in range(repeats):
            home = root / f"featx-{repeat}"  # empty: the first featx run is cold, the next ones cached
            samples["common"].append(_run_worker("common", checkpoint, args.small, home, torch_home))
            samples["featx_cold"].append(_run_worker("featx_cold", checkpoint, args.small, home, torch_home))
            samples["featx_cached"].append(_run_worker("featx_cached", checkpoint, args.small, home, torch_home))
    results = {name: _summary(values) for name, values in samples.items()}

    def ratios(featx_variant: str) -> dict[str, float]:
        common, ours = results["common"], results[featx_variant]
        return {
            "time": _ratio(common["time_s_median"], ours["time_s_median"]),
            "memory": _ratio(common["peak_rss_added_mib_median"], ours["peak_rss_added_mib_median"]),
        }

    result = {
        "benchmark": "construction",
        "config": {
            "arch": ARCH,
            "taps": TAPS,
            "small": args.small,
            "repeats": repeats,
            "checkpoint_bytes": size,
            "checkpoint_mib": size / 2**20,
            "checkpoint_format": "torch.save legacy (non-zip), torchvision layout, random values",
            "common": (
                "make_layers(cfgs['E'])[:12].load_state_dict(torch.load(path, weights_only=True))"
                if args.small
                else "torchvision.models.vgg19(); load_state_dict(torch.load(path, weights_only=True)); features[:12]"
            ),
            "featx": f"VGGFeatures({ARCH!r}, {TAPS!r}, weights=path)",
        },
        "machine": made["machine"],
        "memory_metric": (
            "peak RSS added by construction in a fresh process: VmHWM after minus RSS after the imports "
            "(peak reset with /proc/self/clear_refs); ru_maxrss_added_mib is the getrusage equivalent"
        ),
        "results": results,
        "ratios": {"first": ratios("featx_cold"), "cached": ratios("featx_cached")},
    }
    cached = result["ratios"]["cached"]
    result["targets"] = {
        "cached_time_ratio_min": 10,
        "cached_memory_ratio_min": 5,
        "met": cached["time"] >= 10 and cached["memory"] >= 5,
    }
    print(_table(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
