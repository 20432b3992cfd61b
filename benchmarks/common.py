"""Small, generic helpers shared by the benchmark scripts: timing, memory, machine info, JSON and tables.

Timing runs warm-up calls, then reports the median of N timed calls. Memory is the peak resident set
size of a *fresh* Python process minus its resident size right after its imports, so allocator caches
and earlier runs in the parent cannot hide or inflate it (see :func:`peak_rss_mb` for why Linux reads
``VmHWM`` rather than ``ru_maxrss``).

Run a function in a fresh process with :func:`run_isolated`; the child entry point is this file
(``python common.py --isolated SCRIPT FUNCTION JSON_KWARGS PRELOAD_MODULES``).
"""

from __future__ import annotations

import datetime
import gc
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "current_rss_mb",
    "format_table",
    "machine_info",
    "matmul_peak_gflops",
    "peak_rss_mb",
    "reset_peak_rss",
    "run_isolated",
    "time_calls",
    "time_interleaved",
    "write_json",
]

_RESULT_MARKER = "@@BENCH_RESULT@@"


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def _summary(times: Sequence[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
        "times_s": [round(t, 6) for t in times],
    }


def time_calls(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> dict[str, Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns:
        ``{"median_s", "min_s", "max_s", "repeats", "times_s"}``.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _summary(times)


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 5) -> dict[str, dict]:
    """Time several functions round-robin (a, b, c, a, b, c, ...) so that load drift on a shared
    machine affects each one alike; the ratios of the medians are then comparable.

    Returns:
        ``{name: summary}`` with the summary of :func:`time_calls`.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: _summary(values) for name, values in times.items()}


def matmul_peak_gflops(size: int = 2048, *, repeats: int = 7, warmup: int = 2) -> dict[str, Any]:
    """Measured fp32 matmul throughput (``torch.mm`` of two ``size x size`` matrices), in GFLOP/s.

    Counts ``2 * size**3`` FLOPs per product; reports the median and the best call.
    """
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    timing = time_calls(lambda: torch.mm(a, b), warmup=warmup, repeats=repeats)
    flops = 2.0 * size**3
    return {
        "size": size,
        "median_gflops": flops / timing["median_s"] / 1e9,
        "best_gflops": flops / timing["min_s"] / 1e9,
        "timing": timing,
    }


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


def _status_kb(field: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. ``ru_maxrss`` is not used there because a child
    started by ``fork`` + ``exec`` inherits its parent's ``ru_maxrss`` (a fresh process launched by
    a 1 GiB benchmark reports 1 GiB before doing anything); ``VmHWM`` belongs to the new address
    space. Elsewhere: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.
    """
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / divisor


def current_rss_mb() -> Optional[float]:
    """Current resident set size in MiB (Linux ``VmRSS``), or ``None`` where unavailable."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> Optional[float]:
    """Reset the peak-RSS mark to the current RSS (Linux ``clear_refs`` 5).

    Returns the peak (MiB) just *before* the reset, so a caller can keep the overall peak, or
    ``None`` when the platform cannot reset it (then nothing changed).
    """
    before = _status_kb("VmHWM")
    if before is None:
        return None
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return before / 1024


def run_isolated(
    script: os.PathLike | str,
    function: str,
    kwargs: Mapping[str, Any],
    *,
    env: Optional[Mapping[str, str]] = None,
    preload: Sequence[str] = (),
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run ``function(**kwargs)`` from ``script`` in a fresh Python process and measure its memory.

    The child imports the ``preload`` modules and ``script``, resets the peak mark (so a transient
    peak during the imports is not the baseline), records the baseline, calls the function and
    reads the peak again. A function that resets the peak mark itself (:func:`reset_peak_rss`)
    must return the overall peak it saw as ``"peak_mb"``; the larger of the two counts.

    Args:
        script: path of a Python file defining ``function``.
        function: name of a function returning a JSON-serialisable dict.
        kwargs: JSON-serialisable keyword arguments.
        env: extra environment variables for the child.
        preload: modules to import before the baseline (those the function imports lazily).
        timeout: seconds before the child is killed.

    Returns:
        ``{"result": <the function's dict>, "import_peak_mb", "baseline_mb", "peak_mb", "peak_added_mb"}``
        (MiB).

    Raises:
        RuntimeError: the child failed (its stderr tail is in the message).
    """
    child_env = dict(os.environ)
    child_env.update(env or {})
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--isolated",
        str(script),
        function,
        json.dumps(kwargs),
        ",".join(preload),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=child_env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"isolated run of {function}({kwargs}) failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(_RESULT_MARKER) :])


def _isolated_main(script: str, function: str, kwargs_json: str, preload: str) -> None:
    for name in filter(None, preload.split(",")):
        importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("_isolated_bench_module", script)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gc.collect()
    import_peak = peak_rss_mb()
    reset = reset_peak_rss()
    baseline = peak_rss_mb() if reset is not None else import_peak
    result = getattr(module, function)(**json.loads(kwargs_json))
    peak = max(peak_rss_mb(), float(result.get("peak_mb") or 0.0))
    payload = {
        "result": result,
        "import_peak_mb": import_peak,
        "baseline_mb": baseline,
        "peak_mb": peak,
        "peak_added_mb": peak - baseline,
    }
    print(_RESULT_MARKER + json.dumps(payload), flush=True)


# ---------------------------------------------------------------------------------------------
# machine info, JSON, tables
# ---------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags(wanted: Sequence[str]) -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [flag for flag in wanted if flag in flags]


def machine_info() -> dict[str, Any]:
    """CPU model, core count, torch threads and versions, platform and the UTC date."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": _cpu_flags(("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def write_json(path: os.PathLike | str, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (floats to 3 significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "-" if value is None else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--isolated":
        _isolated_main(*sys.argv[2:])
    else:
        raise SystemExit("usage: python common.py --isolated SCRIPT FUNCTION JSON_KWARGS PRELOAD_MODULES")
