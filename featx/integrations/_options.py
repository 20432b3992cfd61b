"""Option handling shared by the BasicSR loss classes and metric functions: BasicSR's input-range
switches, term weights, and missing-weights errors that name the options-file key to set.

Private to :mod:`featx.integrations`; nothing here imports BasicSR.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from featx._checks import InputRange, check_bool, check_number
from featx.errors import FeatxValueError, WeightsNotFoundError

__all__ = ["check_term_weight", "input_options", "options_file_hint", "range_norm_input"]


def input_options(use_input_norm: object, range_norm: object) -> InputRange:
    """featx's ``input_range`` for BasicSR's ``use_input_norm``/``range_norm`` switches.

    BasicSR's ``VGGFeatureExtractor`` maps ``x -> (x + 1) / 2`` when ``range_norm`` and then
    ImageNet-normalises when ``use_input_norm``. With normalisation that is ``input_range=(-1, 1)``
    or ``(0, 1)``; without it the backbone takes its inputs as they are (``"normalized"``), after
    :func:`range_norm_input` when ``range_norm``.

    Raises:
        TypeError: a switch is not a bool.

    Example:
        >>> input_options(True, True), input_options(True, False), input_options(False, True)
        ((-1.0, 1.0), (0.0, 1.0), 'normalized')
    """
    use_norm = check_bool("use_input_norm", use_input_norm)
    from_minus_one = check_bool("range_norm", range_norm)
    if not use_norm:
        return "normalized"
    return (-1.0, 1.0) if from_minus_one else (0.0, 1.0)


def range_norm_input(x: torch.Tensor, *, use_input_norm: bool, range_norm: bool) -> torch.Tensor:
    """The one mapping :func:`input_options` leaves to the caller: ``(x + 1) / 2`` when
    ``range_norm`` is on and ``use_input_norm`` off (BasicSR's order of operations); else ``x``."""
    return (x + 1) / 2 if range_norm and not use_input_norm else x


def check_term_weight(name: str, value: object) -> float:
    """A term weight of BasicSR's style: a finite number >= 0, where 0 switches the term off.

    Raises:
        TypeError: not a finite number.
        ValueError: negative (BasicSR would silently drop the term; featx says so).

    Example:
        >>> check_term_weight("style_weight", 0)
        0.0
    """
    weight = check_number(name, value)
    if weight < 0:
        raise FeatxValueError(
            f"{name} must be >= 0 (0 switches the term off, as in BasicSR), got {value!r}; "
            "a negative weight would maximise the loss"
        )
    return weight


@contextlib.contextmanager
def options_file_hint(*options: str) -> Iterator[None]:
    """Re-raise a :class:`~featx.errors.WeightsNotFoundError` with the options-file keys that take
    a local copy, since a BasicSR user writes YAML, not Python arguments."""
    try:
        yield
    except WeightsNotFoundError as error:
        keys = " and ".join(f"`{option}: /path/to/file`" for option in options)
        raise WeightsNotFoundError(
            f"{error}\nIn a BasicSR options file, point the block at local copies with {keys}.",
            path=error.path,
            searched=error.searched,
        ) from error
