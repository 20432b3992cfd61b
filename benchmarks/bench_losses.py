"""Loss benchmark: one training step of featx losses against the common torchvision pattern and piq.

A training step is ``forward(pred) + forward(target) without autograd + backward to pred``, in fp32
on the CPU with a fixed number of threads (default 2). Every ratio is measured in the same run, with
the implementations timed round-robin so that load on a shared machine hits each alike.

Sections (see ``benchmarks/README.md`` for what each compares and why):

- ``single``: one perceptual term (``ttsr_lte`` taps, the ``real_esrgan`` preset, ``conv5_4``):
  featx ``PerceptualLoss`` vs the common approach (full ``torchvision.models.vgg19``,
  ``features[:k]`` run layer by layer with a ``.clone()`` per tap) vs ``piq.ContentLoss``. Time,
  peak added memory (fresh process) and percent of the measured fp32 matmul peak.
- ``combined``: perceptual + style (+ texture) from one ``FeatureLoss`` pass vs ``piq.ContentLoss``
  + ``piq.StyleLoss`` as separate modules.
- ``cached``: a fixed style target cached with ``set_target`` vs recomputing it every step.
- ``bf16``: bf16 autocast speed and loss/gradient fidelity against fp32 (l1 and mse).
- ``allocator``: the featx ``ttsr_lte`` step at the largest size in two fresh processes, glibc's
  default malloc settings vs tunables that keep freed memory mapped (system time, page faults).

All implementations load the same random VGG19 ``features`` state dict (torchvision's init, seed 0)
from one safetensors file; nothing is downloaded. piq takes it through its documented
``feature_extractor=`` argument: the module passed is exactly what piq builds for ``"vgg19"``
(``torchvision.models.vgg19().features``, all 37 layers), so no monkeypatching is needed.

Usage:
    python benchmarks/bench_losses.py                      # full run, writes benchmarks/results/losses.json
    python benchmarks/bench_losses.py --quick --out /tmp/x.json   # tiny smoke run (numbers meaningless)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import common
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "losses.json"

# Modules every fresh memory-measuring process imports before its baseline is taken.
PRELOAD = ("torch", "torchvision", "piq", "safetensors.torch", "featx.losses")

# glibc: serve every allocation >= 64 KiB with mmap and return it on free, so RSS follows the live
# tensors (without it the dynamic mmap threshold makes the step peak vary by +-30 MiB run to run).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

FULL_SIZES = ((4, 128), (1, 512))
QUICK_SIZES = ((1, 32),)
SECTIONS = ("single", "combined", "cached", "bf16", "allocator")

# glibc tunables that keep freed memory mapped (no page faults on the next step's allocations).
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),  # glibc's maximum
    "MALLOC_TRIM_THRESHOLD_": str(64 * 1024**3),
    "MALLOC_TOP_PAD_": str(1024**3),
}

# docs/design.md, "Performance model": forward GFLOP of VGG19 per 128x128 image.
DESIGN_GFLOP_128 = {"relu3_1": 3.68, "conv5_4": 12.74}

TARGETS = {
    "single_time_vs_common": 1.0,  # featx time / common time <= 1
    "single_time_vs_piq": 1.0,
    "single_memory_vs_common": 1.0,  # featx memory / common memory < 1 (strictly lower)
    "single_memory_vs_piq": 1.0,  # <= 1
    "combined_time_vs_piq": 0.6,
    "cached_time_vs_uncached": 0.75,
    "percent_of_peak": 75.0,
}

# ---------------------------------------------------------------------------------------------
# loss configurations
# ---------------------------------------------------------------------------------------------

GATYS_STYLE = {f"relu{block}_1": 0.2 for block in range(1, 6)}

SINGLE = {
    # TTSR LTE levels (relu1_1, relu2_1, relu3_1) with L1.
    "ttsr_lte": {"layer_weights": {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}, "criterion": "l1"},
    # Real-ESRGAN preset: conv1_2 .. conv5_4 (pre-activation), L1.
    "real_esrgan": {"preset": "real_esrgan", "criterion": "l1"},
    # ESRGAN: conv5_4 alone, L1.
    "conv5_4": {"layer_weights": {"conv5_4": 1.0}, "criterion": "l1"},
}

# Gatys-style content (relu4_2, MSE) + style (relu1_1..relu5_1, Gram MSE), max pooling as piq uses.
COMBINED = {
    "perceptual": {"relu4_2": 1.0},
    "style": GATYS_STYLE,
    "texture": {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0},  # sliced Wasserstein, featx only
}
COMBINED_IMPLS = ("featx_ps", "featx_pst", "piq")
CACHED_IMPLS = ("uncached", "uncached_b1", "cached")


def single_layer_weights(config: str) -> dict[str, float]:
    """The ``{layer: weight}`` of a single-term configuration."""
    from featx.presets import PRESETS

    spec = SINGLE[config]
    if "preset" in spec:
        return dict(PRESETS[spec["preset"]].layer_weights)
    return dict(spec["layer_weights"])


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def forward_gflop(deepest: str, height: int, width: int, *, arch: str = "vgg19", pooling: str = "max") -> float:
    """Convolution GFLOP of one forward pass up to ``deepest``: ``2 * Cin * Cout * 9 * H * W`` per conv.

    Sizes come from ``featx.backbones.vgg.layers.layer_specs`` (stride of each conv's output); biases,
    activations and pools are not counted.
    """
    from featx.backbones.vgg.layers import layer_specs

    total = 0
    for spec in layer_specs(arch, pooling=pooling):
        if spec.kind == "conv":
            total += 2 * spec.in_channels * spec.out_channels * 9 * (height // spec.stride) * (width // spec.stride)
        if spec.name == deepest:
            return total / 1e9
    raise ValueError(f"unknown layer {deepest!r} for {arch}")


def deepest_tap(layers: Sequence[str], arch: str = "vgg19") -> str:
    from featx.backbones.vgg.layers import layer_names

    order = layer_names(arch)
    return max(layers, key=order.index)


# ---------------------------------------------------------------------------------------------
# weights and inputs
# ---------------------------------------------------------------------------------------------


def write_weights(directory: Path) -> Path:
    """Save VGG19 ``features`` with torchvision's random init (seed 0) as ``features.*`` safetensors."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    features = torchvision.models.vgg19(weights=None).features
    path = directory / "vgg19_features_random.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, str(path))
    return path


def features_state(weights_path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {key.removeprefix("features."): value for key, value in load_file(weights_path).items()}


def make_inputs(batch: int, size: int, *, closeness: str = "near", seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, target)``: target uniform in [0, 1]; pred = target + N(0, 0.05) clamped ("near") or
    an independent uniform image ("far"). ``pred`` requires grad."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 3, size, size, generator=gen)
    if closeness == "near":
        pred = (target + 0.05 * torch.randn(batch, 3, size, size, generator=gen)).clamp(0.0, 1.0)
    else:
        pred = torch.rand(batch, 3, size, size, generator=gen)
    return pred.requires_grad_(True), target


# ---------------------------------------------------------------------------------------------
# the baselines
# ---------------------------------------------------------------------------------------------


_BUILT: dict[str, nn.Sequential] = {}


def torchvision_vgg19_features(weights_path: str, reuse: bool = False) -> nn.Sequential:
    """What most repositories (and piq for ``"vgg19"``) build: the full ``vgg19()``, then ``.features``.

    The classifier (about 124M parameters) is built and initialised, then dropped with ``model``.
    ``reuse=True`` (timing in the parent process only, where construction is not measured) returns
    a deep copy of an earlier build instead of initialising the classifier again.
    """
    import copy

    import torchvision

    if reuse and weights_path in _BUILT:
        return copy.deepcopy(_BUILT[weights_path])
    model = torchvision.models.vgg19(weights=None)
    model.features.load_state_dict(features_state(weights_path))
    if reuse:
        _BUILT[weights_path] = copy.deepcopy(model.features)
    return model.features


class CommonPerceptualLoss(nn.Module):
    """The common repository pattern: ``vgg19().features[:k]`` run layer by layer, ``.clone()`` per tap.

    The clone is what keeps a ``conv`` tap intact when the following in-place ReLU runs, and most
    code clones every tap. The target features are computed under ``torch.no_grad()``.
    """

    def __init__(
        self, layer_weights: Mapping[str, float], criterion: str, weights_path: str, reuse: bool = False
    ) -> None:
        super().__init__()
        from featx.backbones.vgg.layers import layer_specs

        index = {spec.name: spec.index for spec in layer_specs("vgg19")}
        self.taps = {index[name]: name for name in layer_weights}
        self.layer_weights = dict(layer_weights)
        self.criterion = criterion
        self.features = torchvision_vgg19_features(weights_path, reuse)[: max(self.taps) + 1]
        for param in self.features.parameters():
            param.requires_grad_(False)
        self.features.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out[self.taps[i]] = x.clone()
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_feats = self.extract(pred)
        with torch.no_grad():
            target_feats = self.extract(target)
        distance = F.l1_loss if self.criterion == "l1" else F.mse_loss
        total = None
        for name, weight in self.layer_weights.items():
            term = weight * distance(pred_feats[name], target_feats[name])
            total = term if total is None else total + term
        return total


def piq_loss(
    kind: str, layer_weights: Mapping[str, float], criterion: str, weights_path: str, reuse: bool = False
) -> nn.Module:
    """``piq.ContentLoss`` / ``piq.StyleLoss`` on the shared random weights, through ``feature_extractor=``."""
    import piq
    from piq.perceptual import VGG19_LAYERS

    cls = piq.ContentLoss if kind == "content" else piq.StyleLoss
    return cls(
        feature_extractor=torchvision_vgg19_features(weights_path, reuse),
        layers=[VGG19_LAYERS[name] for name in layer_weights],
        weights=list(layer_weights.values()),
        distance={"l1": "mae", "mse": "mse"}[criterion],
        reduction="mean",
    )


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------


def _grad_step(loss_fn: Callable[[], torch.Tensor], pred: torch.Tensor) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        pred.grad = None
        value = loss_fn()
        value.backward()
        return value.detach()

    return step


def make_step(
    section: str, config: str, impl: str, batch: int, size: int, weights_path: str, reuse: bool = False
) -> Callable[[], Any]:
    """Build one implementation and its inputs; return a function running one training step.

    ``reuse`` lets the baselines copy an earlier torchvision build (see :func:`torchvision_vgg19_features`).
    """
    from featx.losses import FeatureLoss, PerceptualLoss, StyleLoss

    pred, target = make_inputs(batch, size)
    if section == "single":
        spec = SINGLE[config]
        if impl == "featx":
            if "preset" in spec:
                loss = PerceptualLoss(preset=spec["preset"], weights=weights_path)
            else:
                loss = PerceptualLoss(spec["layer_weights"], criterion=spec["criterion"], weights=weights_path)
        elif impl == "common":
            loss = CommonPerceptualLoss(single_layer_weights(config), spec["criterion"], weights_path, reuse)
        elif impl == "piq":
            loss = piq_loss("content", single_layer_weights(config), spec["criterion"], weights_path, reuse)
        else:
            raise ValueError(f"unknown impl {impl!r}")
        return _grad_step(lambda: loss(pred, target), pred)
    if section == "combined":
        if impl == "piq":
            content = piq_loss("content", COMBINED["perceptual"], "mse", weights_path, reuse)
            style = piq_loss("style", COMBINED["style"], "mse", weights_path, reuse)
            return _grad_step(lambda: content(pred, target) + style(pred, target), pred)
        texture = COMBINED["texture"] if impl == "featx_pst" else None
        options = {"seed": 0} if texture else None
        loss = FeatureLoss(
            perceptual=COMBINED["perceptual"],
            style=COMBINED["style"],
            texture=texture,
            texture_options=options,
            criterion="mse",
            weights=weights_path,
        )
        return _grad_step(lambda: loss(pred, target), pred)
    if section == "cached":
        # A fixed style image (batch 1), the Gatys preset (relu1_1..relu5_1, avg pooling).
        loss = StyleLoss(preset="gatys", weights=weights_path)
        style_image = target[:1]
        if impl == "cached":
            loss.set_target(style_image)
            return _grad_step(lambda: loss(pred), pred)
        if impl == "uncached":  # the style image repeated to the batch, as repositories usually feed it
            repeated = style_image.repeat(batch, 1, 1, 1)
            return _grad_step(lambda: loss(pred, repeated), pred)
        if impl == "uncached_b1":  # featx broadcasts a target batch of 1: its target pass is 1 image
            return _grad_step(lambda: loss(pred, style_image), pred)
        raise ValueError(f"unknown impl {impl!r}")
    raise ValueError(f"unknown section {section!r}")


def memory_worker(section: str, config: str, impl: str, batch: int, size: int, weights_path: str, threads: int) -> dict:
    """Runs in a fresh process: build, run one step; return timings and RSS marks (MiB).

    ``step_added_mb`` is the peak during the step above the RSS before it (the peak mark is reset
    after construction); ``peak_mb`` is the overall peak (construction or step) for the caller.
    """
    torch.set_num_threads(threads)
    start = time.perf_counter()
    step = make_step(section, config, impl, batch, size, weights_path)
    built = time.perf_counter()
    build_peak = common.reset_peak_rss()
    rss_before_step = common.current_rss_mb()
    value = step()
    done = time.perf_counter()
    step_peak = common.peak_rss_mb()
    step_added = None if build_peak is None or rss_before_step is None else step_peak - rss_before_step
    return {
        "construct_s": built - start,
        "first_step_s": done - built,
        "build_peak_mb": build_peak,
        "step_added_mb": step_added,
        "peak_mb": max(step_peak, build_peak or 0.0),
        "loss": float(value),
    }


def timing_worker(config: str, batch: int, size: int, weights_path: str, threads: int, repeats: int) -> dict:
    """Runs in a fresh process: featx single-term steps; wall, user and system time, page faults."""
    import resource

    torch.set_num_threads(threads)
    step = make_step("single", config, "featx", batch, size, weights_path)
    step()
    walls, before = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "median_s": statistics.median(walls),
        "times_s": walls,
        "user_s_per_step": (after.ru_utime - before.ru_utime) / repeats,
        "system_s_per_step": (after.ru_stime - before.ru_stime) / repeats,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / repeats,
    }


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace, weights_path: Path, env: dict[str, str]) -> None:
        self.args = args
        self.weights_path = str(weights_path)
        self.env = env
        self.quick = args.quick
        self.matrix = torch.randn(args.matmul_size, args.matmul_size)

    def timing_plan(self, batch: int, size: int) -> int:
        """Timed rounds for an input size (after one warm-up round)."""
        if self.quick:
            return 1
        return self.args.repeats if batch * size * size <= 4 * 128 * 128 else self.args.repeats_large

    def matmul(self) -> None:
        torch.mm(self.matrix, self.matrix)

    def time_group(
        self, steps: Mapping[str, Callable[[], Any]], batch: int, size: int
    ) -> tuple[dict[str, dict], dict[str, float]]:
        """Warm up (one call each, whose loss values are returned), then time round-robin."""
        repeats = self.timing_plan(batch, size)
        self.matmul()
        values = {name: float(step()) for name, step in steps.items()}
        group = {"matmul": self.matmul, **steps}
        return common.time_interleaved(group, warmup=0, repeats=repeats), values

    def interleaved_peak(self, timing: Mapping[str, dict]) -> float:
        return 2.0 * self.args.matmul_size**3 / timing["matmul"]["median_s"] / 1e9

    def memory(self, section: str, config: str, impls: Sequence[str], batch: int, size: int) -> dict:
        """Memory of each implementation, each in its own fresh process (``--memory-jobs`` at a time).

        Memory does not depend on timing, so the processes may share the cores; their
        ``construct_s``/``first_step_s`` are then not clean timings (and are not reported as such).
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.args.memory_jobs)) as pool:
            futures = {impl: pool.submit(self._memory_one, section, config, impl, batch, size) for impl in impls}
            return {impl: future.result() for impl, future in futures.items()}

    def _memory_one(self, section: str, config: str, impl: str, batch: int, size: int) -> Optional[dict]:
        """Peak added RSS of a fresh process (construction + one step); ``None`` when skipped."""
        if self.quick and (section, config, impl) != ("single", next(iter(SINGLE)), "featx"):
            return None  # --quick: exercise the fresh-process path once (the first case's featx)
        kwargs = {
            "section": section,
            "config": config,
            "impl": impl,
            "batch": batch,
            "size": size,
            "weights_path": self.weights_path,
            "threads": self.args.threads,
        }
        run = common.run_isolated(__file__, "memory_worker", kwargs, env={**self.env, **MEMORY_ENV}, preload=PRELOAD)
        result = run["result"]
        build_peak = result["build_peak_mb"]
        return {
            "peak_added_mb": run["peak_added_mb"],
            "construct_added_mb": None if build_peak is None else build_peak - run["baseline_mb"],
            "step_added_mb": result["step_added_mb"],
            "construct_s": result["construct_s"],
            "first_step_s": result["first_step_s"],
            "baseline_mb": run["baseline_mb"],
        }

    # ------------------------------------------------------------------ sections

    def single(self, batch: int, size: int) -> list[dict]:
        rows = []
        for config in SINGLE:
            impls = ("featx", "common", "piq")
            steps = {
                impl: make_step("single", config, impl, batch, size, self.weights_path, reuse=True) for impl in impls
            }
            timing, losses = self.time_group(steps, batch, size)
            del steps
            memory = self.memory("single", config, impls, batch, size)
            layers = single_layer_weights(config)
            deepest = deepest_tap(list(layers))
            step_gflop = 3 * batch * forward_gflop(deepest, size, size)
            featx_s = timing["featx"]["median_s"]
            peak = self.interleaved_peak(timing)
            row = {
                "config": config,
                "batch": batch,
                "size": size,
                "layers": layers,
                "deepest": deepest,
                "step_gflop": step_gflop,
                "timing": timing,
                "memory": memory,
                "loss_values": losses,
                "featx_vs_common_loss_rel_diff": abs(losses["featx"] - losses["common"]) / abs(losses["common"]),
                "ratios": {
                    "time_featx_over_common": featx_s / timing["common"]["median_s"],
                    "time_featx_over_piq": featx_s / timing["piq"]["median_s"],
                    "time_featx_over_common_paired": _paired(timing, "featx", "common"),
                    "time_featx_over_piq_paired": _paired(timing, "featx", "piq"),
                    "memory_featx_over_common": _mem_ratio(memory, "featx", "common"),
                    "memory_featx_over_piq": _mem_ratio(memory, "featx", "piq"),
                },
                "featx_gflops": step_gflop / featx_s,
                "matmul_peak_gflops_interleaved": peak,
                "percent_of_peak": 100.0 * step_gflop / featx_s / peak,
            }
            rows.append(row)
            self.log(f"single {config} {batch}x{size}: featx {featx_s:.3f}s")
        return rows

    def combined(self, batch: int, size: int) -> dict:
        steps = {
            impl: make_step("combined", "gatys_max", impl, batch, size, self.weights_path, reuse=True)
            for impl in COMBINED_IMPLS
        }
        timing, _ = self.time_group(steps, batch, size)
        del steps
        memory = self.memory("combined", "gatys_max", COMBINED_IMPLS, batch, size)
        piq_s = timing["piq"]["median_s"]
        step_gflop = 3 * batch * forward_gflop("relu5_1", size, size)
        self.log(f"combined {batch}x{size}: featx {timing['featx_ps']['median_s']:.3f}s piq {piq_s:.3f}s")
        return {
            "batch": batch,
            "size": size,
            "terms": COMBINED,
            "timing": timing,
            "memory": memory,
            "ratios": {
                "time_featx_ps_over_piq": timing["featx_ps"]["median_s"] / piq_s,
                "time_featx_pst_over_piq": timing["featx_pst"]["median_s"] / piq_s,
                "time_featx_ps_over_piq_paired": _paired(timing, "featx_ps", "piq"),
                "memory_featx_ps_over_piq": _mem_ratio(memory, "featx_ps", "piq"),
                "memory_featx_pst_over_piq": _mem_ratio(memory, "featx_pst", "piq"),
            },
            "featx_ps_percent_of_peak": 100.0
            * step_gflop
            / timing["featx_ps"]["median_s"]
            / self.interleaved_peak(timing),
        }

    def cached(self, batch: int, size: int) -> dict:
        impls = [impl for impl in CACHED_IMPLS if not (impl == "uncached_b1" and batch == 1)]
        steps = {impl: make_step("cached", "gatys", impl, batch, size, self.weights_path) for impl in impls}
        timing, _ = self.time_group(steps, batch, size)
        cached_s = timing["cached"]["median_s"]
        ratios = {
            "time_cached_over_uncached": cached_s / timing["uncached"]["median_s"],
            "time_cached_over_uncached_paired": _paired(timing, "cached", "uncached"),
        }
        if "uncached_b1" in timing:
            ratios["time_cached_over_uncached_b1"] = cached_s / timing["uncached_b1"]["median_s"]
        self.log(f"cached {batch}x{size}: cached {cached_s:.3f}s uncached {timing['uncached']['median_s']:.3f}s")
        return {"batch": batch, "size": size, "loss": "StyleLoss(preset='gatys')", "timing": timing, "ratios": ratios}

    def bf16(self, batch: int, size: int) -> dict:
        from featx.losses import PerceptualLoss

        fidelity = []
        speed = []
        for config in ("ttsr_lte",) if self.quick else ("ttsr_lte", "conv5_4"):
            layers = single_layer_weights(config)
            for criterion in ("l1", "mse"):
                loss = PerceptualLoss(layers, criterion=criterion, weights=self.weights_path)
                for closeness in ("near", "far"):
                    pred, target = make_inputs(batch, size, closeness=closeness)
                    ref_value, ref_grad = _value_and_grad(loss, pred, target, None)
                    value, grad = _value_and_grad(loss, pred, target, torch.bfloat16)
                    fidelity.append(
                        {
                            "config": config,
                            "criterion": criterion,
                            "pred": closeness,
                            "loss_fp32": ref_value,
                            "loss_bf16": value,
                            "loss_rel_err": abs(value - ref_value) / abs(ref_value),
                            "grad_cosine": float(F.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0)),
                            "grad_rel_err": float((grad - ref_grad).norm() / ref_grad.norm()),
                        }
                    )
                if criterion == "l1":
                    pred, target = make_inputs(batch, size)
                    steps = {
                        "fp32": _grad_step(lambda loss=loss, pred=pred, target=target: loss(pred, target), pred),
                        "bf16": _grad_step(
                            lambda loss=loss, pred=pred, target=target: _autocast_call(loss, pred, target), pred
                        ),
                    }
                    timing, _ = self.time_group(steps, batch, size)
                    speed.append(
                        {
                            "config": config,
                            "criterion": criterion,
                            "timing": timing,
                            "speedup_bf16": timing["fp32"]["median_s"] / timing["bf16"]["median_s"],
                            "speedup_bf16_paired": _paired(timing, "fp32", "bf16"),
                        }
                    )
        self.log(f"bf16 {batch}x{size} done")
        return {"batch": batch, "size": size, "fidelity": fidelity, "speed": speed}

    def allocator(self, batch: int, size: int, peak_gflops: float) -> dict:
        """featx ``ttsr_lte`` step in two fresh processes: glibc defaults vs :data:`ALLOCATOR_ENV`."""
        config = "ttsr_lte"
        kwargs = {
            "config": config,
            "batch": batch,
            "size": size,
            "weights_path": self.weights_path,
            "threads": self.args.threads,
            "repeats": self.timing_plan(batch, size),
        }
        step_gflop = 3 * batch * forward_gflop(deepest_tap(list(single_layer_weights(config))), size, size)
        runs = {}
        for name, extra in (("glibc_default", {}), ("glibc_tuned", ALLOCATOR_ENV)):
            result = common.run_isolated(__file__, "timing_worker", kwargs, env={**self.env, **extra}, preload=PRELOAD)
            runs[name] = {**result["result"], "env": extra}
            runs[name]["percent_of_peak"] = 100.0 * step_gflop / runs[name]["median_s"] / peak_gflops
        default_s, tuned_s = runs["glibc_default"]["median_s"], runs["glibc_tuned"]["median_s"]
        self.log(f"allocator {batch}x{size}: {default_s:.3f}s -> {tuned_s:.3f}s")
        return {
            "config": config,
            "batch": batch,
            "size": size,
            "runs": runs,
            "time_tuned_over_default": runs["glibc_tuned"]["median_s"] / runs["glibc_default"]["median_s"],
            "note": "sequential fresh processes (not interleaved); percent of the global matmul peak",
        }

    def log(self, message: str) -> None:
        if self.args.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _paired(timing: Mapping[str, dict], a: str, b: str) -> float:
    """Median over rounds of ``time_a / time_b`` measured back to back in the same round."""
    pairs = [ta / tb for ta, tb in zip(timing[a]["times_s"], timing[b]["times_s"], strict=True)]
    return statistics.median(pairs)


def _mem_ratio(memory: Mapping[str, Optional[dict]], a: str, b: str) -> Optional[float]:
    if memory.get(a) is None or memory.get(b) is None:
        return None
    return memory[a]["peak_added_mb"] / memory[b]["peak_added_mb"]


def _autocast_call(loss: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return loss(pred, target)


def _value_and_grad(
    loss: nn.Module, pred: torch.Tensor, target: torch.Tensor, dtype: Optional[torch.dtype]
) -> tuple[float, torch.Tensor]:
    pred = pred.detach().clone().requires_grad_(True)
    if dtype is None:
        value = loss(pred, target)
    else:
        with torch.autocast("cpu", dtype=dtype):
            value = loss(pred, target)
    value.backward()
    return float(value), pred.grad.detach().clone()


# ---------------------------------------------------------------------------------------------
# targets, tables, main
# ---------------------------------------------------------------------------------------------


def conv_reference_gflops(*, repeats: int = 5, quick: bool = False) -> dict:
    """Throughput of one large 3x3 convolution (oneDNN), a second reference next to ``torch.mm``."""
    batch, channels, size = (1, 32, 16) if quick else (4, 256, 64)
    x = torch.randn(batch, channels, size, size)
    weight = torch.randn(channels, channels, 3, 3)
    timing = common.time_calls(lambda: F.conv2d(x, weight, padding=1), warmup=1, repeats=1 if quick else repeats)
    flops = 2.0 * channels * channels * 9 * size * size * batch
    return {"shape": [batch, channels, size, size], "median_gflops": flops / timing["median_s"] / 1e9, "timing": timing}


def flops_check() -> dict:
    counted = {tap: forward_gflop(tap, 128, 128) for tap in DESIGN_GFLOP_128}
    return {
        "per_128x128_image_gflop": counted,
        "design_gflop": DESIGN_GFLOP_128,
        "reproduced": all(abs(counted[tap] - DESIGN_GFLOP_128[tap]) < 0.01 for tap in counted),
    }


def evaluate_targets(results: Mapping[str, Any]) -> list[dict]:
    checks: list[dict] = []

    def add(name: str, where: str, value: Optional[float], target: float, strict: bool = False) -> None:
        if value is None:
            return
        met = value < target if strict else value <= target
        checks.append({"name": name, "case": where, "value": value, "target": target, "met": met})

    for row in results.get("single", []):
        where = f"{row['config']} {row['batch']}x{row['size']}"
        ratios = row["ratios"]
        add("time featx/common", where, ratios["time_featx_over_common"], TARGETS["single_time_vs_common"])
        add("time featx/piq", where, ratios["time_featx_over_piq"], TARGETS["single_time_vs_piq"])
        add("memory featx/common", where, ratios["memory_featx_over_common"], TARGETS["single_memory_vs_common"], True)
        add("memory featx/piq", where, ratios["memory_featx_over_piq"], TARGETS["single_memory_vs_piq"])
        checks.append(
            {
                "name": "percent of fp32 matmul peak",
                "case": where,
                "value": row["percent_of_peak"],
                "target": TARGETS["percent_of_peak"],
                "met": row["percent_of_peak"] >= TARGETS["percent_of_peak"],
            }
        )
    for row in results.get("combined", []):
        where = f"{row['batch']}x{row['size']}"
        value = row["ratios"]["time_featx_ps_over_piq"]
        add("time FeatureLoss(p+s)/piq(content+style)", where, value, TARGETS["combined_time_vs_piq"])
    for row in results.get("cached", []):
        where = f"{row['batch']}x{row['size']}"
        value = row["ratios"]["time_cached_over_uncached"]
        add("time cached/uncached target", where, value, TARGETS["cached_time_vs_uncached"])
    return checks


def _mb(memory: Optional[dict]) -> Optional[float]:
    return None if memory is None else memory["peak_added_mb"]


def _step_mb(memory: Optional[dict]) -> Optional[float]:
    return None if memory is None else memory["step_added_mb"]


def render(results: Mapping[str, Any]) -> str:
    """The human-readable tables."""
    out = []
    machine = results["machine"]
    out.append(
        f"featx loss benchmark ({results['mode']}): {machine['cpu_model']}, {machine['torch_threads']} threads, "
        f"torch {machine['torch']}, {machine['date_utc']}"
    )
    peak = results["matmul_peak"]
    out.append(
        f"fp32 matmul peak ({peak['size']}^3, median of {peak['timing']['repeats']}): "
        f"{peak['median_gflops']:.0f} GFLOP/s"
        f" (best {peak['best_gflops']:.0f}); one 3x3 conv {results['conv_reference']['median_gflops']:.0f} GFLOP/s;"
        f" FLOP counter: relu3_1 "
        f"{results['flops_check']['per_128x128_image_gflop']['relu3_1']:.2f}, conv5_4 "
        f"{results['flops_check']['per_128x128_image_gflop']['conv5_4']:.2f} GFLOP per 128x128 image"
    )
    if results.get("single"):
        out.append(
            "\nSingle perceptual term: median step time (s), ratio featx/peer; peak added RSS (MiB) of a fresh process"
        )
        headers = ["config", "input", "featx s", "common s", "piq s", "f/common", "f/piq",
                   "featx MiB", "common MiB", "piq MiB", "f/common", "f/piq", "step MiB f/c/p", "% peak"]  # fmt: skip
        rows = []
        for r in results["single"]:
            t, m, q = r["timing"], r["memory"], r["ratios"]
            steps = "/".join(
                "-" if _step_mb(m[i]) is None else f"{_step_mb(m[i]):.0f}" for i in ("featx", "common", "piq")
            )
            rows.append(
                [r["config"], f"{r['batch']}x{r['size']}", t["featx"]["median_s"], t["common"]["median_s"],
                 t["piq"]["median_s"], q["time_featx_over_common"], q["time_featx_over_piq"], _mb(m["featx"]),
                 _mb(m["common"]), _mb(m["piq"]), q["memory_featx_over_common"], q["memory_featx_over_piq"], steps,
                 r["percent_of_peak"]]
            )  # fmt: skip
        out.append(common.format_table(headers, rows))
    if results.get("combined"):
        out.append("\nPerceptual + style (+ texture): one FeatureLoss pass vs piq.ContentLoss + piq.StyleLoss")
        headers = ["input", "featx p+s s", "featx p+s+t s", "piq c+s s", "p+s/piq", "p+s+t/piq",
                   "p+s MiB", "p+s+t MiB", "piq MiB", "% peak p+s"]  # fmt: skip
        rows = []
        for r in results["combined"]:
            t, m, q = r["timing"], r["memory"], r["ratios"]
            rows.append(
                [f"{r['batch']}x{r['size']}", t["featx_ps"]["median_s"], t["featx_pst"]["median_s"],
                 t["piq"]["median_s"],
                 q["time_featx_ps_over_piq"], q["time_featx_pst_over_piq"], _mb(m["featx_ps"]), _mb(m["featx_pst"]),
                 _mb(m["piq"]), r["featx_ps_percent_of_peak"]]
            )  # fmt: skip
        out.append(common.format_table(headers, rows))
    if results.get("cached"):
        out.append("\nFixed style target (StyleLoss gatys): set_target() vs recomputing the target each step")
        headers = ["input", "cached s", "uncached s", "cached/uncached", "uncached(b=1) s", "cached/uncached(b=1)"]
        rows = []
        for r in results["cached"]:
            t, q = r["timing"], r["ratios"]
            b1 = t.get("uncached_b1")
            rows.append(
                [f"{r['batch']}x{r['size']}", t["cached"]["median_s"], t["uncached"]["median_s"],
                 q["time_cached_over_uncached"], None if b1 is None else b1["median_s"],
                 q.get("time_cached_over_uncached_b1")]
            )  # fmt: skip
        out.append(common.format_table(headers, rows))
    if results.get("bf16"):
        for r in results["bf16"]:
            out.append(f"\nbf16 autocast vs fp32 ({r['batch']}x{r['size']}): speed (L1 step)")
            out.append(
                common.format_table(
                    ["config", "fp32 s", "bf16 s", "speedup"],
                    [[s["config"], s["timing"]["fp32"]["median_s"], s["timing"]["bf16"]["median_s"], s["speedup_bf16"]]
                     for s in r["speed"]],
                )  # fmt: skip
            )
            out.append("fidelity vs fp32 (pred 'near' = target + N(0, 0.05); 'far' = independent image)")
            out.append(
                common.format_table(
                    ["config", "criterion", "pred", "loss rel err", "grad cosine", "grad rel err"],
                    [[f["config"], f["criterion"], f["pred"], f["loss_rel_err"], f["grad_cosine"], f["grad_rel_err"]]
                     for f in r["fidelity"]],
                )  # fmt: skip
            )
    for r in results.get("allocator", []):
        out.append(
            f"\nAllocator (featx {r['config']} {r['batch']}x{r['size']}, fresh processes): glibc defaults vs "
            "MALLOC_MMAP_THRESHOLD_=32MiB, MALLOC_TRIM_THRESHOLD_=64GiB, MALLOC_TOP_PAD_=1GiB"
        )
        out.append(
            common.format_table(
                ["malloc", "step s", "user s", "system s", "page faults", "% peak"],
                [[name, v["median_s"], v["user_s_per_step"], v["system_s_per_step"], v["minor_faults_per_step"],
                  v["percent_of_peak"]] for name, v in r["runs"].items()],
            )  # fmt: skip
        )
    checks = results.get("targets", [])
    if checks:
        out.append("\nTargets")
        out.append(
            common.format_table(
                ["check", "case", "value", "target", "met"],
                [[c["name"], c["case"], c["value"], c["target"], "yes" if c["met"] else "NO"] for c in checks],
            )
        )
    return "\n".join(out)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (a smoke test; numbers meaningless)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; --quick: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds at batch 4 x 128^2 (default 5)")
    parser.add_argument("--repeats-large", type=int, default=3, help="timed rounds at larger inputs (default 3)")
    parser.add_argument(
        "--memory-jobs", type=int, default=2, help="fresh memory-measuring processes run at once (default 2)"
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n^3 peak matmul (default 2048)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--sizes", default=None, help="e.g. '4x128,1x512' (default: those; --quick: 1x32)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    args.sections = sections
    if args.sizes:
        args.sizes = tuple(tuple(int(v) for v in item.lower().split("x")) for item in args.sizes.split(","))
    else:
        args.sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    if args.quick:
        args.matmul_size = min(args.matmul_size, 256)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark, print the tables, write the JSON and return the results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="featx-bench-") as tmp:
        home = Path(tmp) / "featx_home"
        env = {"FEATX_HOME": str(home), "TORCH_HOME": str(Path(tmp) / "torch_home")}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                results = _run(args, write_weights(Path(tmp)), env)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    results["wall_s"] = time.perf_counter() - started
    common.write_json(args.out, results)
    print(render(results))
    print(f"\nwrote {args.out} ({results['wall_s']:.0f} s)")
    return results


def _run(args: argparse.Namespace, weights_path: Path, env: dict[str, str]) -> dict:
    runner = Runner(args, weights_path, env)
    peak_repeats = 1 if args.quick else 7
    results: dict[str, Any] = {
        "benchmark": "losses",
        "mode": "quick" if args.quick else "full",
        "machine": common.machine_info(),
        "settings": {
            "threads": args.threads,
            "dtype": "float32",
            "sizes": [list(s) for s in args.sizes],
            "warmup_rounds": 1,
            "repeats": 1 if args.quick else args.repeats,
            "repeats_large": 1 if args.quick else args.repeats_large,
            "timing": "median of round-robin rounds (all implementations of a case interleaved, with a "
            f"{args.matmul_size}^3 matmul in each round for the percent-of-peak)",
            "memory": "peak RSS (Linux VmHWM; ru_maxrss elsewhere) of a fresh process running construction + "
            "one step, minus its RSS after importing torch, torchvision, piq and featx; construct_added_mb: "
            "the peak during construction; step_added_mb: the peak during the step above the RSS before it "
            f"(peak mark reset after construction); {args.memory_jobs} such processes at a time, with "
            f"{MEMORY_ENV} so that freed tensors leave the RSS"
            + ("; --quick measures only the first case" if args.quick else ""),
            "weights": "torchvision vgg19 random init (seed 0), features only, one safetensors file for all",
            "piq": "piq.ContentLoss/StyleLoss(feature_extractor=torchvision vgg19().features with the same state "
            "dict): what piq builds for 'vgg19' (all 37 layers), without the download; no monkeypatch",
            "inputs": "target uniform [0,1]; pred = target + N(0, 0.05), clamped",
        },
        "targets_spec": TARGETS,
        "flops_check": flops_check(),
        "matmul_peak": common.matmul_peak_gflops(args.matmul_size, repeats=peak_repeats, warmup=1),
        "conv_reference": conv_reference_gflops(quick=args.quick),
    }
    for section in args.sections:
        if section == "single":
            results["single"] = [row for b, s in args.sizes for row in runner.single(b, s)]
        elif section == "combined":
            results["combined"] = [runner.combined(b, s) for b, s in args.sizes]
        elif section == "cached":
            results["cached"] = [runner.cached(b, s) for b, s in args.sizes]
        elif section == "bf16":
            results["bf16"] = [runner.bf16(*args.sizes[0])]
        elif section == "allocator":
            peak = results["matmul_peak"]["median_gflops"]
            results["allocator"] = [runner.allocator(*max(args.sizes, key=lambda bs: bs[0] * bs[1] ** 2), peak)]
    results["targets"] = evaluate_targets(results)
    results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


if __name__ == "__main__":
    main()
