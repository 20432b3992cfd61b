"""Shared machinery of the loss functions on feature dicts: lookups and shape checks with clear
messages, the compute dtype and autocast rules, the batch reduction and the per-layer loop.

Private to featx: :mod:`featx.losses.functional`, :mod:`featx.losses.texture`, :mod:`featx.losses.transferal` and
:mod:`featx.losses.modules` build on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import torch

from featx._checks import check_choice, check_layer_weights, closest
from featx.errors import FeatxTypeError, FeatxValueError

__all__ = [
    "REDUCTIONS",
    "FeatureDict",
    "LossResult",
    "Term",
    "autocast_off",
    "check_reduction",
    "check_4d",
    "check_finite",
    "compute_dtype",
    "cpu_generator",
    "flat_positions",
    "layer_loop",
    "lookup",
    "match_batch",
    "per_sample_l1",
    "reduce_batch",
]

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
"""Batch reductions of per-sample loss values ``v`` (shape ``(B,)``): ``v.mean()``, ``v.sum()``, ``v``."""

FeatureDict = Mapping[str, torch.Tensor]
"""Feature maps by layer name, ``{layer: (B, C, H, W)}``."""

LossResult = Union[torch.Tensor, tuple[torch.Tensor, dict[str, torch.Tensor]]]
Term = Callable[[str, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]

_HALF = (torch.float16, torch.bfloat16)


def lookup(feats: object, layer: str, role: str) -> torch.Tensor:
    """``feats[layer]``, with messages that list the available layers and check the value."""
    if not isinstance(feats, Mapping):
        raise FeatxTypeError(f"{role} features must be a dict {{layer: tensor}}, got {type(feats).__name__}")
    if layer not in feats:
        available = list(feats)
        raise FeatxValueError(
            f"layer {layer!r} is missing from the {role} features.{closest(layer, available)} "
            f"Available layers: {', '.join(available) or '(none)'}"
        )
    value = feats[layer]
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise FeatxTypeError(f"{role} feature {layer!r} must be a floating point tensor, got {type(value).__name__}")
    return value


def check_4d(value: torch.Tensor, layer: str, role: str) -> None:
    """A feature map must be ``(B, C, H, W)`` with at least one element."""
    if value.ndim != 4:
        raise FeatxValueError(f"{role} feature {layer!r} must be 4-D (B, C, H, W), got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise FeatxValueError(
            f"{role} feature {layer!r} is empty (shape {tuple(value.shape)}): a loss needs at least one "
            "sample with at least one channel and position"
        )


def check_finite(value: torch.Tensor, layer: str, role: str) -> None:
    """Raise if ``value`` holds NaN or Inf (one host sync)."""
    if not bool(torch.isfinite(value).all()):
        raise FeatxValueError(f"{role} feature {layer!r} contains NaN or Inf values (check_finite=True)")


def match_batch(pred: torch.Tensor, target: torch.Tensor, layer: str, *, same_size: bool) -> torch.Tensor:
    """Check shapes; a target batch of 1 broadcasts over the pred batch, a pred batch is never
    broadcast over a larger target batch. Returns the (expanded) target."""
    p, t = tuple(pred.shape), tuple(target.shape)
    ok_batch = t[0] in (p[0], 1)
    ok_rest = t[1:] == p[1:] if same_size else t[1] == p[1]
    if not (ok_batch and ok_rest and len(p) == len(t)):
        need = "the same shape" if same_size else "the same channels"
        raise FeatxValueError(
            f"layer {layer!r}: pred shape {p} and target shape {t} differ; they need {need} "
            "(a target batch of 1 broadcasts; a pred batch never does)"
        )
    if t[0] != p[0]:
        target = target.expand(p[0], *t[1:])
    return target


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 stays float64, float32 stays float32, fp16/bf16 accumulate in float32."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.float32 if dtype in _HALF else dtype


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast for ``device`` if it is on (``torch.autocast(..., enabled=False)``)."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except (RuntimeError, TypeError):
        enabled = False
    return torch.autocast(device_type=device.type, enabled=False) if enabled else contextlib.nullcontext()


class _PerSampleL1(torch.autograd.Function):
    """Per-sample mean of ``|a - b|`` that saves only the int8 sign of ``a - b`` for backward.

    ``(a - b).abs().mean(...)`` keeps the whole float difference alive until the backward pass;
    the gradient only needs its sign (0 where ``a == b``, as for ``abs``), a quarter of the bytes.
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b
        per_sample = diff.abs().flatten(1).mean(dim=1)
        ctx.save_for_backward(diff.sign_().to(torch.int8))  # in place: no second float temporary
        ctx.b_shape = b.shape
        return per_sample

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        (sign,) = ctx.saved_tensors
        count = sign[0].numel()
        grad_a = sign.to(grad.dtype) * (grad / count).view(-1, *([1] * (sign.ndim - 1)))
        grad_b = -grad_a.sum_to_size(ctx.b_shape) if ctx.needs_input_grad[1] else None
        return (grad_a if ctx.needs_input_grad[0] else None), grad_b


def per_sample_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a - b).abs().flatten(1).mean(1)`` with a quarter of the saved memory (an int8 sign).

    Shape:
        ``(B, ...)`` and ``(B or 1, ...)`` -> ``(B,)``.
    """
    result: torch.Tensor = _PerSampleL1.apply(a, b)
    return result


def reduce_batch(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-sample values ``(B,)``: ``"mean"``, ``"sum"`` over the batch, or ``"none"``."""
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def layer_loop(
    pred_feats: FeatureDict,
    target_feats: Optional[FeatureDict],
    layer_weights: Mapping[str, float],
    term: Term,
    *,
    return_terms: bool,
    check_finite_values: bool,
    same_size: bool = True,
) -> LossResult:
    """Validate every layer, call ``term(layer, pred, target)`` and add the weighted terms."""
    weights = check_layer_weights(layer_weights)
    terms: dict[str, torch.Tensor] = {}
    for layer, weight in weights.items():
        pred = lookup(pred_feats, layer, "pred")
        check_4d(pred, layer, "pred")
        target = None
        if target_feats is not None:
            target = lookup(target_feats, layer, "target")
            check_4d(target, layer, "target")
            target = match_batch(pred, target, layer, same_size=same_size)
        if check_finite_values:
            check_finite(pred, layer, "pred")
            if target is not None:
                check_finite(target, layer, "target")
        terms[layer] = weight * term(layer, pred, target)
    values = list(terms.values())
    total = values[0]
    for value in values[1:]:
        total = total + value
    return (total, terms) if return_terms else total


def check_reduction(reduction: object) -> str:
    """Validate a ``reduction`` argument (one of :data:`REDUCTIONS`)."""
    return check_choice("reduction", reduction, REDUCTIONS)


def cpu_generator(seed: Optional[int], generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """The CPU generator to draw from: ``generator``, a fresh one seeded with ``seed``, or the global RNG."""
    if generator is not None and seed is not None:
        raise FeatxValueError("pass either seed= or generator=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise FeatxTypeError(f"generator must be a CPU torch.Generator, got {generator!r}")
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FeatxTypeError(f"seed must be an int or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def flat_positions(feat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, H*W)`` in the compute dtype."""
    return feat.reshape(feat.shape[0], feat.shape[1], -1).to(dtype)
