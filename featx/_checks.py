"""Argument checks shared by every featx module: names and choices (with the closest valid name),
integers, numbers, layer weights and value ranges. Each raises ``TypeError``/``ValueError`` with
what was expected and what was received. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar, Union

from featx.errors import FeatxTypeError, FeatxValueError

__all__ = [
    "InputRange",
    "check_bool",
    "check_choice",
    "check_input_range",
    "check_int",
    "check_layer_weights",
    "check_number",
    "closest",
    "range_problem",
    "range_warning",
]

T = TypeVar("T")

InputRange = Union[tuple[float, float], str]
"""``(lo, hi)`` of the input values, or ``"normalized"`` for ImageNet-normalised inputs."""


def closest(name: object, choices: Iterable[object]) -> str:
    """A "did you mean" hint for an unknown name, or an empty string.

    Example:
        >>> closest("rleu3_1", ["relu3_1", "conv3_1"])
        " Did you mean 'relu3_1'?"
        >>> closest(5, ["a"])
        ''
    """
    if not isinstance(name, str):
        return ""
    matches = difflib.get_close_matches(name, [c for c in choices if isinstance(c, str)], n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def check_choice(name: str, value: object, choices: Sequence[T], *, context: str = "") -> T:
    """Check that ``value`` is one of ``choices`` and return it.

    The one wording featx uses for every named choice (archs, taps, presets, criteria, ...):
    ``unknown NAME VALUE CONTEXT. Did you mean 'X'? Valid choices: 'a', 'b'``.

    Args:
        name: what the value names, for the message (``"arch"``, ``"tap"``, ``"criterion"``).
        value: what the caller passed.
        choices: the valid values.
        context: words after the value, e.g. ``" for vgg19"``.

    Returns:
        ``value``, as the matching element of ``choices``.

    Raises:
        ValueError: ``value`` is not a valid choice; the message lists the choices and the closest one.

    Example:
        >>> check_choice("gray", "repeat", ("error", "repeat"))
        'repeat'
        >>> check_choice("pooling", "mean", ("max", "avg"))
        Traceback (most recent call last):
        ...
        featx.errors.FeatxValueError: unknown pooling 'mean'. Valid choices: 'max', 'avg'
    """
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return choice
    valid = ", ".join(map(repr, choices))
    raise FeatxValueError(f"unknown {name} {value!r}{context}.{closest(value, choices)} Valid choices: {valid}")


def check_int(name: str, value: object, *, minimum: int = 1, allow_none: bool = False) -> int:
    """Check that ``value`` is an ``int`` (not a ``bool``) of at least ``minimum``.

    Raises:
        TypeError: not an integer.
        ValueError: below ``minimum``.

    Example:
        >>> check_int("batch_size", 8)
        8
        >>> check_int("num_workers", -1, minimum=0)
        Traceback (most recent call last):
        ...
        featx.errors.FeatxValueError: num_workers must be an integer >= 0, got -1
    """
    if value is None and allow_none:
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int):
        none = " or None" if allow_none else ""
        raise FeatxTypeError(f"{name} must be an integer >= {minimum}{none}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise FeatxValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Check that ``value`` is a ``bool`` (not ``0``/``1`` or another truthy object) and return it.

    Raises:
        TypeError: not a bool.

    Example:
        >>> check_bool("requires_grad", True)
        True
    """
    if not isinstance(value, bool):
        raise FeatxTypeError(f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__})")
    return value


def check_number(name: str, value: object, *, positive: bool = False) -> float:
    """Check that ``value`` is a finite real number (not a ``bool``), positive if asked; return it as float.

    Raises:
        TypeError: not a real number, or NaN/inf.
        ValueError: ``positive`` and ``value <= 0``.

    Example:
        >>> check_number("band_width", 0.5, positive=True)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FeatxTypeError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise FeatxValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_layer_weights(layer_weights: object, name: str = "layer_weights") -> dict[str, float]:
    """Check a ``{layer: weight}`` mapping: string keys, finite numbers, at least one entry.

    Returns:
        A plain dict with float weights, in the given order.

    Raises:
        TypeError: not a mapping, a non-string key or a non-number weight.
        ValueError: empty.

    Example:
        >>> check_layer_weights({"conv5_4": 1})
        {'conv5_4': 1.0}
    """
    if not isinstance(layer_weights, Mapping):
        raise FeatxTypeError(
            f"{name} must be a mapping {{layer: weight}} such as {{'conv5_4': 1.0}}, got {type(layer_weights).__name__}"
        )
    if not layer_weights:
        raise FeatxValueError(f"{name} must name at least one layer, got an empty mapping")
    checked: dict[str, float] = {}
    for layer, weight in layer_weights.items():
        if not isinstance(layer, str):
            raise FeatxTypeError(f"{name} keys must be layer names (str), got {layer!r}")
        checked[layer] = check_number(f"{name}[{layer!r}]", weight)
    return checked


def check_input_range(input_range: object) -> InputRange:
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
        return check_choice("input_range", input_range, ("normalized",), context=" (or pass a (lo, hi) pair)")
    try:
        lo, hi = (float(v) for v in input_range)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise FeatxTypeError(
            f"input_range must be a (lo, hi) pair such as (0, 1) or (-1, 1), or 'normalized'; got {input_range!r}"
        ) from None
    if not (lo < hi) or not (math.isfinite(lo) and math.isfinite(hi)):
        raise FeatxValueError(f"input_range must satisfy lo < hi with finite bounds, got ({lo}, {hi})")
    return (lo, hi)


def range_problem(low: float, high: float, input_range: tuple[float, float]) -> Union[str, None]:
    """Why inputs spanning ``[low, high]`` look like another value range than ``input_range``, or ``None``.

    With ``span = hi - lo``, ``width = high - low`` and ``beyond`` how far the values pass the
    nearer end of the range (``max(lo - low, high - hi)``), the inputs look wrong when

    - ``beyond > 2 span``: far outside (``[0, 255]`` images or ImageNet-normalised values fed to
      ``(0, 1)``);
    - ``beyond > span / 2`` and ``width > 1.5 span``: outside and wider than the range itself, as
      images in ``[-1, 1]`` fed to ``(0, 1)`` are (a real picture uses most of its range);
    - ``span >= 100`` and every value lies in ``[-1.5, 1.5]`` (``[0, 1]`` or ``[-1, 1]`` images fed
      to ``(0, 255)``).

    An untrained SR network's first outputs pass: they overshoot ``[0, 1]`` a little but stay
    narrow (measured ``[-0.52, 0.33]`` at step 0: width 0.85), and so does a trained network's
    overshoot (``[-0.3, 1.3]``). Check each image batch on its own: a prediction and its target
    taken together are wider than either. The rule of the first-call check of every extractor,
    ``LPIPS`` and ``DISTS`` (``InputRangeWarning``); :func:`range_warning` words the warning.

    Example:
        >>> range_problem(-1.0, 1.0, (0.0, 1.0)), range_problem(-0.52, 0.33, (0.0, 1.0))
        ('lies clearly outside', None)
        >>> range_problem(0.0, 255.0, (0.0, 1.0)), range_problem(0.0, 1.0, (0.0, 255.0))
        ('lies clearly outside', 'uses a tiny part (as [0, 1] or [-1, 1] data would) of')
    """
    lo, hi = input_range
    span = hi - lo
    width = high - low
    beyond = max(lo - low, high - hi)
    if beyond > 2 * span or (beyond > span / 2 and width > 1.5 * span):
        return "lies clearly outside"
    if span >= 100 and -1.5 <= low <= high <= 1.5:
        return "uses a tiny part (as [0, 1] or [-1, 1] data would) of"
    return None


_IMAGENET_BOUNDS = (-2.2, 2.7)  # [0, 1] images after ImageNet's mean/std: (0 - 0.485) / 0.229, (1 - 0.406) / 0.225


def _likely_range(low: float, high: float) -> str:
    """The ``input_range`` argument that fits values spanning ``[low, high]``, as text."""
    if -0.05 <= low and high <= 1.05:
        return "(0, 1)"
    if -1.05 <= low and high <= 1.05:
        return "(-1, 1), as for tanh outputs or lpips-style images"
    if _IMAGENET_BOUNDS[0] <= low and high <= _IMAGENET_BOUNDS[1]:
        return "'normalized', as for ImageNet-normalised images"
    if -1.0 <= low and high <= 255 * 1.05:
        return "(0, 255), as for 8-bit values"
    return "(lo, hi) with the bounds your images use"


def range_warning(
    low: float, high: float, input_range: tuple[float, float], *, subject: str = "input values"
) -> Union[str, None]:
    """The ``InputRangeWarning`` message for values spanning ``[low, high]``, or ``None`` if they fit.

    The message names the observed span, the declared range, and the ``input_range`` that fits
    the values (see :func:`range_problem` for when values do not fit).

    Args:
        low: the smallest value of the batch.
        high: the largest value.
        input_range: the declared ``(lo, hi)``.
        subject: what the values are, for the message (``"input values"``, ``"LPIPS pred"``).

    Returns:
        The warning text, or ``None``.

    Example:
        >>> print(range_warning(-1.0, 1.0, (0.0, 1.0)))  # doctest: +ELLIPSIS
        input values span [-1, 1], which lies clearly outside input_range=(0, 1); they look like input_range=(-1, 1), ...
        >>> range_warning(-0.52, 0.33, (0.0, 1.0)) is None  # an untrained SR network's first output
        True
    """
    problem = range_problem(low, high, input_range)
    if problem is None:
        return None
    lo, hi = input_range
    return (
        f"{subject} span [{low:.3g}, {high:.3g}], which {problem} input_range=({lo:g}, {hi:g}); they look like "
        f"input_range={_likely_range(low, high)}. Pass the range your images use "
        "(checked on the first calls only; silence with "
        "warnings.filterwarnings('ignore', category=featx.InputRangeWarning))"
    )
