"""Input validation helpers that raise ``TypeError``/``ValueError`` with expected and actual values."""

from __future__ import annotations

from typing import Union

import torch

__all__ = ["check_image_batch", "check_input_range", "check_choice"]

InputRange = Union[tuple[float, float], str]


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``choices``.

    Args:
        name: argument name, for the message.
        value: what the caller passed.
        choices: valid values.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: ``value`` is not a valid choice; the message lists the choices.

    Example:
        >>> check_choice("gray", "repeat", ("error", "repeat"))
        'repeat'
    """
    if value not in choices:
        from featx.layers import closest

        hint = closest(value, choices) if isinstance(value, str) else ""
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.{hint}")
    return value  # type: ignore[return-value]


def check_input_range(input_range: InputRange) -> InputRange:
    """Validate an ``input_range`` argument: a ``(lo, hi)`` pair with ``lo < hi``, or ``"normalized"``.

    Returns:
        ``"normalized"`` or a ``(float, float)`` tuple.

    Raises:
        TypeError: neither a pair of numbers nor a string.
        ValueError: an unknown string, a pair with ``lo >= hi`` or non-finite bounds.

    Example:
        >>> check_input_range((0, 255))
        (0.0, 255.0)
    """
    if isinstance(input_range, str):
        if input_range != "normalized":
            raise ValueError(f"input_range must be a (lo, hi) pair or 'normalized', got {input_range!r}")
        return input_range
    try:
        lo, hi = (float(v) for v in input_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(
            f"input_range must be a (lo, hi) pair such as (0, 1) or (-1, 1), or 'normalized'; got {input_range!r}"
        ) from None
    if not (lo < hi) or not all(map(lambda v: v == v and abs(v) != float("inf"), (lo, hi))):
        raise ValueError(f"input_range must satisfy lo < hi with finite bounds, got ({lo}, {hi})")
    return (lo, hi)


def check_image_batch(x: object, *, gray: str, min_size: int, deepest_tap: str, dtype: torch.dtype) -> torch.Tensor:
    """Validate a batch of images for a VGG extractor and return it with 3 channels.

    Args:
        x: the input.
        gray: ``"repeat"`` to accept 1-channel input by repeating it to RGB, ``"error"`` otherwise.
        min_size: smallest height and width the deepest tap needs.
        deepest_tap: name of that tap, for the message.
        dtype: the extractor's parameter dtype; a different floating dtype is only accepted under autocast.

    Returns:
        ``x`` with shape ``(B, 3, H, W)`` (a broadcast view when a gray input was repeated).

    Raises:
        TypeError: not a tensor, not floating point, or a dtype that does not match the weights.
        ValueError: wrong number of dimensions or channels, an empty batch, a meta-device tensor,
            or too small for ``deepest_tap``.

    Shape:
        ``(B, 3, H, W)``, or ``(B, 1, H, W)`` with ``gray="repeat"``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"expected a floating point tensor, got dtype {x.dtype}; convert it first, "
            "e.g. x.float() / 255 for uint8 images (and keep input_range=(0, 1))"
        )
    if x.ndim != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
        raise ValueError(f"expected a 4-D tensor (B, 3, H, W), got shape {tuple(x.shape)}.{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"expected at least one image, got an empty batch of shape {tuple(x.shape)}")
    if x.is_meta:
        raise ValueError(
            "got a tensor on the meta device, which has a shape but no data; "
            "move it to a real device (x.to('cpu') or x.to('cuda')) first"
        )
    channels = x.shape[1]
    if channels == 1:
        if gray != "repeat":
            raise ValueError(
                f"expected 3 channels (RGB), got 1 channel in shape {tuple(x.shape)}; "
                "pass gray='repeat' to repeat a gray or Y-channel image to RGB"
            )
        x = x.expand(-1, 3, -1, -1)
    elif channels != 3:
        hint = " Drop the alpha channel with x[:, :3]." if channels == 4 else ""
        raise ValueError(f"expected 3 channels (RGB), got {channels} in shape {tuple(x.shape)}.{hint}")
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(
            f"input of size {height}x{width} is too small for tap {deepest_tap!r}: "
            f"it needs at least {min_size}x{min_size}"
        )
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"input dtype {x.dtype} does not match the extractor's dtype {dtype}; "
            f"cast the input (x.to({dtype})), the extractor (.to({x.dtype})), or run under torch.autocast"
        )
    return x
