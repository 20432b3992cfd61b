"""What ``featx score`` computed (:class:`ScoreSummary`) and how it is written: the per-pair CSV and the JSON summary beside it.

- The CSV (``key,<column>,...``, scored pairs in key order) is written first and on its own, so a
  summary that cannot be written never costs the rows. Values are Python's ``repr`` of the float
  (full precision; ``inf`` for the PSNR of an identical pair).
- The JSON summary is strict JSON (no ``NaN``/``Infinity``): a mean that is not finite is
  ``null``; ``infinite`` counts the infinite values per column and ``finite_means`` holds the mean
  of the others (an identical pair has PSNR ``inf``, so the PSNR mean of a folder holding one is
  ``null``, with the finite mean beside it).
- Names that are not UTF-8 are written as :func:`featx.io.discovery.printable_name` (``\\xNN`` for
  each invalid byte) in both files, and the JSON's ``names_b64`` maps each such key to its exact
  bytes (base64), as ``featx extract``'s manifest does.
- Both files are written atomically (:func:`featx.io.atomic.write_atomic`): a failed write leaves
  the previous file as it was.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from featx.errors import FeatxValueError, OutputWriteError
from featx.io.atomic import write_atomic
from featx.io.discovery import name_bytes, printable_name
from featx.metrics.pairing import ScoredPair, count_pairs

__all__ = [
    "ScoreSummary",
    "check_output",
    "csv_text",
    "summary_path",
    "summary_payload",
    "write_csv",
    "write_scores",
    "write_summary",
]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class ScoreSummary:
    """What :func:`score_folders` computed.

    Attributes:
        pairs: every pair and unpaired file, in key order.
        means: ``{column: mean over the scored pairs}`` (``inf`` for PSNR when a pair is identical,
            ``nan`` when no pair was scored).
        config: the settings (``metrics``, their ``columns``, ``crop_border``, ``crop_scope``,
            ``gray``, ...) and, under ``weights``, the provenance of LPIPS/DISTS's weights.
    """

    pairs: list[ScoredPair]
    means: dict[str, float]
    config: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        """The score columns, in metric order (``config["columns"]``, else the metric names)."""
        return list(self.config.get("columns", self.config["metrics"]))

    @property
    def errors(self) -> list[ScoredPair]:
        """The entries not scored: failed pairs and unpaired files."""
        return [pair for pair in self.pairs if pair.error is not None]

    @property
    def counts(self) -> dict[str, int]:
        """``scored``, ``failed`` (pairs not scored), ``unpaired_pred`` and ``unpaired_ref``."""
        return count_pairs(self.pairs)

    def finite_means(self) -> dict[str, tuple[Optional[float], int]]:
        """``{column: (mean of the finite values or None, count of infinite values)}``."""
        result: dict[str, tuple[Optional[float], int]] = {}
        scored = [pair for pair in self.pairs if pair.error is None and not pair.unpaired]
        for column in self.columns:
            values = [pair.scores[column] for pair in scored if column in pair.scores]
            finite = [value for value in values if math.isfinite(value)]
            result[column] = (sum(finite) / len(finite) if finite else None, len(values) - len(finite))
        return result


def summary_path(csv_path: PathLike) -> Path:
    """The JSON summary beside a CSV: the same name with ``.json``.

    Raises:
        ValueError: the CSV path already ends in ``.json`` (the summary would replace it).

    Example:
        >>> summary_path("out/scores.csv").as_posix()
        'out/scores.json'
    """
    csv_path = Path(csv_path)
    json_path = csv_path.with_suffix(".json")
    if json_path == csv_path:
        raise FeatxValueError(
            f"--out {printable_name(str(csv_path))} names the per-pair CSV, and its JSON summary would be written to the "
            "same file; give a .csv name (the summary goes beside it as NAME.json)"
        )
    return json_path


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def check_output(csv_path: PathLike, inputs: Sequence[PathLike]) -> Path:
    """Check, before any scoring, where the CSV and its summary go; returns the summary's path.

    Raises:
        ValueError: the CSV ends in ``.json``, or it or its summary would be written inside an
            input folder (or is an input).
        OutputNotWritableError: the folder cannot be created.
    """
    from featx.errors import OutputNotWritableError

    json_path = summary_path(csv_path)
    for target in (Path(csv_path), json_path):
        real = os.path.realpath(target)
        for folder in inputs:
            root = os.path.realpath(folder)
            if real == root or _inside(real, root):
                raise FeatxValueError(
                    f"--out {printable_name(str(csv_path))}: {printable_name(str(target))} would be written inside the input "
                    f"folder {printable_name(os.fspath(folder))}; write the scores somewhere else"
                )
    try:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputNotWritableError(
            f"cannot create the folder of --out {printable_name(str(csv_path))}: {error.strerror or error}"
        ) from None
    return json_path


def _csv_line(row: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode("utf-8")


def _write(path: Path, chunks: list[bytes]) -> None:
    try:
        write_atomic(path, chunks)
    except OSError as error:
        raise OutputWriteError(f"cannot write {printable_name(str(path))}: {error.strerror or error}", path=str(path)) from None


def write_csv(summary: ScoreSummary, csv_path: PathLike) -> Path:
    """Write the per-pair CSV: ``key,<column>,...``, one row per scored pair, in key order.

    Raises:
        OutputWriteError: the file cannot be written (a full disk, no permission); an earlier file
            at the path is left as it was.

    Example:
        >>> import tempfile, os
        >>> from featx.metrics.pairing import ScoredPair
        >>> s = ScoreSummary([ScoredPair("a.png", "x", "y", {"psnr": 30.0})], {"psnr": 30.0}, {"metrics": ["psnr"]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = write_csv(s, os.path.join(d, "scores.csv"))
        ...     print(open(os.path.join(d, "scores.csv")).read().strip())
        key,psnr
        a.png,30.0
    """
    _write(Path(csv_path), _csv_lines(summary))
    return Path(csv_path)


def _csv_lines(summary: ScoreSummary) -> list[bytes]:
    columns = summary.columns
    lines = [_csv_line(["key", *columns])]
    for pair in summary.pairs:
        if pair.error is None and not pair.unpaired:
            lines.append(_csv_line([printable_name(pair.key), *(repr(pair.scores[name]) for name in columns)]))
    return lines


def csv_text(summary: ScoreSummary) -> str:
    """The per-pair CSV :func:`write_csv` writes, as text (what ``featx score`` prints when the
    file cannot be written, so that no score is lost).

    Example:
        >>> from featx.metrics.pairing import ScoredPair
        >>> s = ScoreSummary([ScoredPair("a.png", "x", "y", {"psnr": 30.0})], {"psnr": 30.0}, {"metrics": ["psnr"]})
        >>> print(csv_text(s), end="")
        key,psnr
        a.png,30.0
    """
    return b"".join(_csv_lines(summary)).decode("utf-8")


def _finite(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def _names(pair_key: str, pred: Optional[str], ref: Optional[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"key": printable_name(pair_key), "pred": None, "ref": None}
    for field, value in (("pred", pred), ("ref", ref)):
        if value is not None:
            record[field] = printable_name(value)
    for field, value in (("key_b64", pair_key), ("pred_b64", pred), ("ref_b64", ref)):
        raw = None if value is None else name_bytes(value)
        if raw is not None:
            record[field] = raw
    return record


def summary_payload(summary: ScoreSummary) -> dict[str, Any]:
    """The JSON summary as a dict of strict-JSON values (see the module docstring).

    Example:
        >>> from featx.metrics.pairing import ScoredPair
        >>> s = ScoreSummary([ScoredPair("a.png", "x", "y", {"psnr": float("inf")})], {"psnr": float("inf")},
        ...                  {"metrics": ["psnr"]})
        >>> p = summary_payload(s)
        >>> p["means"], p["infinite"], p["finite_means"], p["scored"]
        ({'psnr': None}, {'psnr': 1}, {'psnr': None}, 1)
    """
    finite = summary.finite_means()
    counts = summary.counts
    return {
        "means": {column: _finite(value) for column, value in summary.means.items()},
        "infinite": {column: count for column, (_, count) in finite.items()},
        "finite_means": {column: mean for column, (mean, _) in finite.items()},
        **counts,
        "errors": [
            {**_names(p.key, p.pred, p.ref), "error": p.error} for p in summary.pairs if p.error is not None and not p.unpaired
        ],
        "unpaired": [{**_names(p.key, p.pred, p.ref), "error": p.error} for p in summary.pairs if p.unpaired],
        "warnings": [{**_names(p.key, p.pred, p.ref), "warning": p.warning} for p in summary.pairs if p.warning],
        "names_b64": {printable_name(p.key): name_bytes(p.key) for p in summary.pairs if name_bytes(p.key) is not None},
        "config": summary.config,
    }


def write_summary(summary: ScoreSummary, json_path: PathLike) -> Path:
    """Write the JSON summary (:func:`summary_payload`), strict JSON, atomically.

    Raises:
        OutputWriteError: the file cannot be written; an earlier file is left as it was.
    """
    text = json.dumps(summary_payload(summary), indent=2, sort_keys=True, allow_nan=False) + "\n"
    _write(Path(json_path), [text.encode("utf-8")])
    return Path(json_path)


def write_scores(summary: ScoreSummary, csv_path: PathLike) -> Path:
    """Write the per-pair CSV, then the JSON summary beside it (:func:`summary_path`); returns the
    JSON path. The CSV is complete before the summary is attempted.

    Raises:
        ValueError: the CSV path ends in ``.json``.
        OutputWriteError: a file cannot be written (the CSV stays if only the summary failed).
    """
    json_path = summary_path(csv_path)
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    write_csv(summary, csv_path)
    return write_summary(summary, json_path)
