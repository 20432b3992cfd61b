"""Pairing the images of two folders for ``featx score``: prediction against reference.

A prediction pairs with the reference of the same relative path (``pair_by="path"``) or the same
path without extension (``pair_by="stem"``). SR codebases name their outputs after the input with
a tag, BasicSR as ``{stem}_{suffix}`` (``baboon_ESRGAN_x4.png`` for ``baboon.png``): a
``pred_pattern`` such as ``"{stem}_ESRGAN_x4"`` says how a prediction's file name (without
extension) is made from its reference's. Files without a partner are kept as unpaired entries,
counted apart from the pairs. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional, Union

from featx._checks import check_choice
from featx._choices import PAIR_BY
from featx.errors import FeatxTypeError, FeatxValueError, InputNotFoundError
from featx.io.discovery import find_images, printable_name

__all__ = ["GRAY_RGB_CONVENTION", "PAIR_BY", "ScoredPair", "count_pairs", "gray_rgb_warning", "pair_folders", "pattern_matcher"]

PathLike = Union[str, "os.PathLike[str]"]

NO_REFERENCE, NO_PREDICTION = "no reference image", "no prediction image"

GRAY_RGB_CONVENTION = (
    "the gray image is repeated to RGB for every metric, as BasicSR's test.py reads images (cv2.IMREAD_COLOR); "
    "BasicSR's calculate_psnr_ssim.py would stop on such a pair"
)
"""How ``featx score`` scores a gray image paired with an RGB one (whatever ``gray`` says)."""

SHOWN_GRAY_PAIRS = 5
"""How many gray-against-RGB pairs :func:`gray_rgb_warning` names (all are in the JSON summary)."""


@dataclass
class ScoredPair:
    """One prediction/reference pair, or an unpaired file.

    Attributes:
        key: the pairing key: the reference's relative path (without extension for
            ``pair_by="stem"``); for an unpaired prediction, its own key.
        pred: the prediction file (``None`` if missing).
        ref: the reference file (``None`` if missing).
        scores: ``{column: value}``; empty unless the pair was scored.
        error: why the pair was not scored (``"no reference image"``, ``"no prediction image"`` for
            unpaired files), or ``None``.
        warning: something scored but worth knowing (a gray image against an RGB one), or ``None``.
    """

    key: str
    pred: Optional[str]
    ref: Optional[str]
    scores: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
    warning: Optional[str] = None

    @property
    def unpaired(self) -> bool:
        """A file without a partner (not a pair at all)."""
        return self.pred is None or self.ref is None


def pattern_matcher(pred_pattern: Optional[str]) -> Optional[re.Pattern[str]]:
    """The regular expression a prediction's stem must match for ``pred_pattern``; ``None`` for none.

    Raises:
        TypeError: not a string.
        ValueError: the pattern does not hold ``{stem}`` exactly once.

    Example:
        >>> pattern_matcher("{stem}_ESRGAN_x4").fullmatch("baboon_ESRGAN_x4")["stem"]
        'baboon'
    """
    if pred_pattern is None:
        return None
    if not isinstance(pred_pattern, str):
        raise FeatxTypeError(f"pred_pattern must be a string such as '{{stem}}_x4', got {type(pred_pattern).__name__}")
    if pred_pattern.count("{stem}") != 1 or "/" in pred_pattern:
        raise FeatxValueError(
            "pred_pattern must hold {stem} exactly once and no '/' (the prediction's file name without extension, "
            f"made from the reference's: '{{stem}}_ESRGAN_x4' for baboon_ESRGAN_x4.png), got {pred_pattern!r}"
        )
    before, after = pred_pattern.split("{stem}")
    return re.compile(f"{re.escape(before)}(?P<stem>.+){re.escape(after)}", re.S)


def _side(folder: PathLike, pair_by: str, matcher: Optional[re.Pattern[str]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``{key: path}`` of one folder, and ``(key, path)`` of files the pattern leaves unpaired."""
    if not os.path.isdir(folder):
        raise InputNotFoundError(f"folder not found: {printable_name(os.fspath(folder))}")
    found: dict[str, str] = {}
    unmatched: list[tuple[str, str]] = []
    for source in find_images([folder]):
        head, name = os.path.split(source.key)
        stem, ext = os.path.splitext(name)
        if matcher is not None:
            match = matcher.fullmatch(stem)
            if match is None:
                unmatched.append((source.key, source.path))
                continue
            stem = match["stem"]
        key = os.path.join(head, stem) if pair_by == "stem" else os.path.join(head, stem + ext)
        if key in found:
            raise FeatxValueError(
                f"{printable_name(found[key])} and {printable_name(source.path)} have the same key "
                f"{printable_name(key)!r} with pair_by={pair_by!r}; use pair_by='path'"
            )
        found[key] = source.path
    return found, unmatched


def pair_folders(
    pred_dir: PathLike, ref_dir: PathLike, *, pair_by: str = "path", pred_pattern: Optional[str] = None
) -> list[ScoredPair]:
    """Pair the images of two folders (recursively), in key order; unpaired files are kept as entries
    with ``pred`` or ``ref`` ``None`` (:attr:`ScoredPair.unpaired`).

    Args:
        pred_dir: the SR outputs.
        ref_dir: the references.
        pair_by: ``"path"`` (same relative path) or ``"stem"`` (same relative path without extension).
        pred_pattern: how a prediction's file name without extension is made from its reference's,
            with ``{stem}`` for the reference's (``"{stem}_ESRGAN_x4"``, BasicSR's ``suffix``); ``None``:
            the same name.

    Returns:
        The pairs and unpaired files, sorted by key.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: unknown ``pair_by``, a bad ``pred_pattern``, or two files of one folder with the
            same key (``pair_by="stem"``).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("sr/a_x4.png", "sr/b_x4.png", "sr/notes.png", "hr/a.png", "hr/c.png"):
        ...         p = pathlib.Path(d, name); p.parent.mkdir(exist_ok=True); p.touch()
        ...     pairs = pair_folders(pathlib.Path(d, "sr"), pathlib.Path(d, "hr"), pred_pattern="{stem}_x4")
        >>> [(p.key, p.error) for p in pairs]
        [('a.png', None), ('b.png', 'no reference image'), ('c.png', 'no prediction image'), ('notes.png', 'no reference image')]
    """
    check_choice("pair_by", pair_by, PAIR_BY)
    matcher = pattern_matcher(pred_pattern)
    preds, unmatched = _side(pred_dir, pair_by, matcher)
    refs, _ = _side(ref_dir, pair_by, None)
    pairs = [ScoredPair(key, path, None, error=NO_REFERENCE) for key, path in unmatched]
    for key in preds.keys() | refs.keys():
        pred, ref = preds.get(key), refs.get(key)
        error = NO_REFERENCE if ref is None else NO_PREDICTION if pred is None else None
        pairs.append(ScoredPair(key, pred, ref, error=error))
    return sorted(pairs, key=lambda pair: (pair.key, pair.pred or ""))


def count_pairs(pairs: Iterable[ScoredPair]) -> dict[str, int]:
    """``scored``, ``failed`` (pairs not scored), ``unpaired_pred`` and ``unpaired_ref`` counts.

    Example:
        >>> count_pairs([ScoredPair("a", "x", "y"), ScoredPair("b", "x", None, error=NO_REFERENCE)])
        {'scored': 1, 'failed': 0, 'unpaired_pred': 1, 'unpaired_ref': 0}
    """
    counts = {"scored": 0, "failed": 0, "unpaired_pred": 0, "unpaired_ref": 0}
    for pair in pairs:
        if pair.ref is None:
            counts["unpaired_pred"] += 1
        elif pair.pred is None:
            counts["unpaired_ref"] += 1
        else:
            counts["failed" if pair.error is not None else "scored"] += 1
    return counts


def gray_rgb_warning(pairs: Iterable[ScoredPair]) -> Optional[str]:
    """The one warning for the scored pairs that compared a gray image with an RGB one: how many,
    which (the first :data:`SHOWN_GRAY_PAIRS`, each with its gray side) and the convention used;
    ``None`` when there is none.

    Example:
        >>> note = "gray reference against an RGB prediction: scored as RGB"
        >>> print(gray_rgb_warning([ScoredPair("a.png", "x", "y", {"psnr": 30.0}, warning=note)]))
        1 pair(s) compare a gray image with an RGB one: a.png (gray reference); the gray image is repeated to RGB ...
    """
    noted = [pair for pair in pairs if pair.warning is not None and pair.error is None and not pair.unpaired]
    if not noted:
        return None
    shown = noted[:SHOWN_GRAY_PAIRS]  # each with its gray side: "gray prediction" or "gray reference"
    names = ", ".join(f"{printable_name(pair.key)} ({str(pair.warning).split(' against ')[0]})" for pair in shown)
    more = len(noted) - SHOWN_GRAY_PAIRS
    names += f" and {more} more (all under warnings in the JSON summary)" if more > 0 else ""
    return f"{len(noted)} pair(s) compare a gray image with an RGB one: {names}; {GRAY_RGB_CONVENTION}"
