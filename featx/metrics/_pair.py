"""What every featx metric on an image pair shares (docs/api.md, "Metrics"): the input checks
(types, shapes, the batch rule, ``gray``, the smallest size), the first-call ``input_range``
check, and the frozen eval mode.

Private to featx: :mod:`featx.metrics.lpips` and :mod:`featx.metrics.dists` build on it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from featx._checks import InputRange, check_choice, check_input_range, range_warning
from featx.errors import FeatxTypeError, FeatxValueError, InputRangeWarning

__all__ = ["GRAY_MODES", "RANGE_CHECKED_CALLS", "PairMetric", "check_image", "check_pair"]

GRAY_MODES: tuple[str, ...] = ("error", "repeat")
"""``gray="error"`` refuses 1-channel images; ``"repeat"`` repeats them to RGB."""

RANGE_CHECKED_CALLS = 4
"""Forward calls whose input min/max are checked against ``input_range``, as in the extractors."""


def check_image(role: str, value: object, *, gray: str, metric: str) -> torch.Tensor:
    """A floating point ``(B, 3, H, W)`` batch (``(B, 1, H, W)`` repeated to RGB with ``gray="repeat"``).

    Raises:
        TypeError: not a floating point tensor.
        ValueError: not 4-D, an empty batch, or channels other than 3 (1 without ``gray="repeat"``).
    """
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise FeatxTypeError(f"{metric} {role} must be a floating point tensor of shape (B, 3, H, W), got {got}")
    if value.ndim != 4 or value.shape[0] == 0:
        raise FeatxValueError(f"{metric} {role} must have shape (B, 3, H, W) with B >= 1, got {tuple(value.shape)}")
    channels = value.shape[1]
    if channels == 1 and gray == "repeat":
        return value.expand(-1, 3, -1, -1)
    if channels != 3:
        hint = " Pass gray='repeat' to repeat gray or Y-channel images to RGB." if channels == 1 else ""
        hint = " Drop the alpha channel with x[:, :3]." if channels == 4 else hint
        raise FeatxValueError(
            f"{metric} {role} must have shape (B, 3, H, W), got {channels} channel(s) in {tuple(value.shape)}.{hint}"
        )
    return value


def check_pair(
    pred: object, target: object, *, gray: str, min_size: int, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check an image pair and return it with 3 channels each.

    The batch rule: ``target`` has the batch of ``pred`` or a batch of 1 (one reference for every
    prediction); a ``pred`` batch is never broadcast over a larger ``target`` batch.

    Args:
        pred: the predictions.
        target: the references.
        gray: ``"error"`` or ``"repeat"`` (see :data:`GRAY_MODES`).
        min_size: the smallest height and width the metric's deepest layer needs.
        metric: the metric's name, for the messages.

    Raises:
        TypeError: not floating point tensors.
        ValueError: bad shapes, batches that do not fit the batch rule (the message shows both
            shapes), or images smaller than ``min_size``.

    Example:
        >>> check_pair(torch.zeros(1, 3, 8, 8), torch.zeros(3, 3, 8, 8), gray="error", min_size=1, metric="DISTS")
        Traceback (most recent call last):
        ...
        featx.errors.FeatxValueError: DISTS: pred of shape (1, 3, 8, 8) and target of shape (3, 3, 8, 8) do not fit: ...
    """
    pred = check_image("pred", pred, gray=gray, metric=metric)
    target = check_image("target", target, gray=gray, metric=metric)
    p, t = tuple(pred.shape), tuple(target.shape)
    if p[1:] != t[1:] or t[0] not in (1, p[0]):
        raise FeatxValueError(
            f"{metric}: pred of shape {p} and target of shape {t} do not fit: they need the same (C, H, W) "
            "and the same batch, or a target batch of 1 (a pred batch is never broadcast)"
        )
    height, width = p[2:]
    if height < min_size or width < min_size:
        raise FeatxValueError(f"{metric} needs images of at least {min_size}x{min_size}, got {height}x{width}")
    return pred, target


class PairMetric(nn.Module):
    """Base of the metrics on an image pair: frozen, always in eval mode, with the shared checks.

    A subclass calls :meth:`setup_inputs` in its constructor and :meth:`check_inputs` first in
    ``forward``.

    Attributes:
        input_range: ``(lo, hi)`` of the images, or ``"normalized"``.
        gray: ``"error"`` or ``"repeat"``.
        min_input_size: the smallest height and width the metric accepts.
    """

    metric_name = "metric"
    input_range: InputRange
    gray: str
    min_input_size: int

    def setup_inputs(self, input_range: object, gray: object) -> None:
        """Validate and keep ``input_range`` and ``gray``; arm the first-call range check."""
        self.input_range = check_input_range(input_range)
        self.gray = check_choice("gray", gray, GRAY_MODES)
        self.range_checks_left = 0 if isinstance(self.input_range, str) else RANGE_CHECKED_CALLS

    def train(self, mode: bool = True) -> PairMetric:
        """A metric is frozen: it stays in eval mode whatever a parent asks."""
        return super().train(False)

    def check_inputs(self, pred: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`check_pair`, then, on the first calls, the range check (one host sync a call)."""
        pred, target = check_pair(pred, target, gray=self.gray, min_size=self.min_input_size, metric=self.metric_name)
        if self.range_checks_left > 0 and not torch.compiler.is_compiling():
            self.check_range(pred, target)
        return pred, target

    def check_range(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Warn :class:`~featx.InputRangeWarning` once if ``pred`` or ``target`` looks like another range.

        Each batch is judged on its own (a narrow, overshooting prediction next to a full-range
        target is fine; see :func:`featx._checks.range_problem`).
        """
        self.range_checks_left -= 1
        bounds = torch.stack([t.detach().float() for t in (pred.min(), pred.max(), target.min(), target.max())])
        low_pred, high_pred, low_target, high_target = bounds.tolist()
        input_range = self.input_range
        if isinstance(input_range, str):
            return
        for role, low, high in (("pred", low_pred, high_pred), ("target", low_target, high_target)):
            message = range_warning(low, high, input_range, subject=f"{self.metric_name} {role} values")
            if message is not None:
                self.range_checks_left = 0
                warnings.warn(message, InputRangeWarning, stacklevel=6)  # the caller of the module
                return
