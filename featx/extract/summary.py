"""The end of an extraction run: :class:`ExtractSummary`, the merged ``manifest.jsonl``, ``summary.json``,
and the removal of temporary files left by killed runs.

Order matters for what a failure leaves: the manifest is published first (atomically; the previous
one stays if it cannot be written), and only then are the outputs of images that failed in this
run deleted (their lines say ``removed``), so no manifest on disk ever names a file that is gone.
Manifest parts are read without following symlinks.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from featx.errors import ExtractionError, OutputWriteError
from featx.extract.owner import earlier_records
from featx.extract.plan import MANIFEST, ImagePlan, feature_path, manifest_record, record_source, remove_failed_output
from featx.io.atomic import is_temp_name, read_no_follow, write_atomic
from featx.io.discovery import ImageSource

__all__ = ["SUMMARY", "ExtractSummary", "dry_run_summary", "finish_run", "remove_stale_temps"]

SUMMARY = "summary.json"
"""Name of the run summary in the output folder (counts, seconds, images/s, configuration)."""


@dataclass
class ExtractSummary:
    """What a run did. On rank 0 (and single-process runs) the counts cover all ranks.

    Attributes:
        files: images considered.
        ok: feature files written by this run.
        skipped: images whose up-to-date output already existed.
        errors: images that failed (decoding, size, or writing).
        seconds: wall time of the run.
        images_per_second: ``ok / seconds``.
        output: the output folder.
        manifest: path of ``manifest.jsonl`` (``None`` for dry runs).
        failures: ``(key, reason)`` of every failed image.
        shapes: per-tap shape of the first image (in key order) with features.
        example: that image's feature file (``None`` if no image has features).
        weights_id: the extractor's weights id (``"random"`` for random weights).
        weights_verified: whether the weights file's sha256 matched its known checkpoint
            (``None``: nothing to check against, such as a custom file or random weights).
        world_size: number of ranks.
        planned: dry runs only: ``(key, action)`` with action ``"extract"``, ``"skip"`` or ``"error: ..."``.
        stale: ``(key, reason)`` of outputs left from earlier runs whose image is gone or was not
            among this run's inputs (listed, not deleted; see :func:`featx.extract.owner.earlier_records`).
        other_inputs: manifest lines kept for images of the folder's other input roots.
        ignored: ``(key, reason)`` of entries that are not regular files (a FIFO named ``x.png``):
            never opened, listed in the manifest with status ``"ignored"``, not failures.
        interrupted: the run was stopped by Ctrl-C (``SIGINT``); the counts cover what it did.
        pending: images an interrupted run did not reach (a rerun does them).
        tiled: ``(key, tile side in pixels)`` of the images computed in tiles (their manifest lines
            say ``"tile"``); for a dry run, those the run would tile.
        disk_bytes: dry runs only: the bytes of the feature files the run would write (the maps
            or descriptors, without the small headers); ``None`` otherwise.
    """

    files: int = 0
    ok: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    output: str = ""
    manifest: Optional[str] = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    example: Optional[str] = None
    weights_id: str = ""
    weights_verified: Optional[bool] = None
    world_size: int = 1
    planned: list[tuple[str, str]] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)
    other_inputs: int = 0
    ignored: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    pending: int = 0
    tiled: list[tuple[str, int]] = field(default_factory=list)
    disk_bytes: Optional[int] = None


def _key(record: dict[str, Any]) -> tuple[str, Optional[str]]:
    return str(record["path"]), record.get("path_b64")


def finish_run(
    output: Path,
    world: int,
    expected: int,
    config: dict[str, str],
    weights_id: str,
    start: float,
    wall_start: float,
    prefix: str = "",
    interrupted_sources: Optional[Sequence[ImageSource]] = None,
) -> ExtractSummary:
    """Rank 0, after the barrier: merge the manifest parts, write ``summary.json``, remove leftovers.

    Args:
        output: the output folder.
        world: number of ranks (``manifest.rank{r}.jsonl`` for each).
        expected: number of images; each must appear exactly once.
        config: the run's common metadata (``summary.json``'s ``config``).
        weights_id: the extractor's weights id.
        start: ``time.perf_counter()`` at the start of the run.
        wall_start: ``time.time()`` at the start (older temporary files are stale).
        prefix: this run's key prefix (:func:`featx.extract.owner.claim_output`).
        interrupted_sources: all of this run's images when it was interrupted (Ctrl-C): the
            manifest then lists those it reached, keeps the previous lines of the others, and the
            summary says ``interrupted`` with the number ``pending``.

    Raises:
        RuntimeError: the parts do not list every image exactly once (a finished run).
        featx.errors.OutputWriteError: the manifest or summary cannot be written (a full disk); the
            previous file is kept.
    """
    records: list[dict[str, Any]] = []
    for rank in range(world):
        text = read_no_follow(output / f"manifest.rank{rank}.jsonl").decode("utf-8")
        records.extend(json.loads(line) for line in text.splitlines() if line.strip())
    records.sort(key=lambda record: record["path"])
    done = {_key(record) for record in records}
    pending = frozenset(
        key for key in (_key(manifest_record(source, "ok")) for source in interrupted_sources or ()) if key not in done
    )
    kept, stale = earlier_records(output, MANIFEST, done, prefix, pending)
    lines = sorted([*records, *kept], key=lambda record: str(record["path"]))
    _write(output / MANIFEST, [(json.dumps(r, sort_keys=True) + "\n").encode("utf-8") for r in lines], world)
    for record in records:  # the manifest that says so is published: now the files go
        if record["status"] == "error" and "removed" in record:
            remove_failed_output(output, record_source(record))
    for rank in range(world):
        (output / f"manifest.rank{rank}.jsonl").unlink()
    remove_stale_temps(output, wall_start)
    counts = {"ok": 0, "skipped": 0, "error": 0, "ignored": 0}
    failures = []
    ignored: list[tuple[str, str]] = []
    shapes: dict[str, list[int]] = {}
    example = None
    for record in records:
        counts[record["status"]] += 1
        if record["status"] == "error":
            failures.append((record["path"], record["error"]))
        elif record["status"] == "ignored":
            ignored.append((record["path"], record["reason"]))
        elif example is None:
            shapes, example = record["shapes"], str(feature_path(output, record_source(record).key))
    seconds = time.perf_counter() - start
    summary = ExtractSummary(
        files=len(records),
        ok=counts["ok"],
        skipped=counts["skipped"],
        errors=counts["error"],
        seconds=seconds,
        images_per_second=counts["ok"] / seconds if seconds > 0 else 0.0,
        output=str(output),
        manifest=str(output / MANIFEST),
        failures=failures,
        shapes=shapes,
        example=example,
        weights_id=weights_id,
        weights_verified={"true": True, "false": False}.get(config.get("weights_verified", "none")),
        world_size=world,
        stale=stale,
        other_inputs=len(kept),
        ignored=ignored,
        interrupted=interrupted_sources is not None,
        pending=len(pending),
        tiled=[(str(record["path"]), int(record["tile"])) for record in records if "tile" in record],
    )
    payload = {
        "files": summary.files,
        "ok": summary.ok,
        "skipped": summary.skipped,
        "error": summary.errors,
        "ignored": len(ignored),
        "seconds": round(seconds, 3),
        "images_per_second": round(summary.images_per_second, 3),
        "world_size": world,
        "output": str(output),
        "config": config,
        "stale": [{"path": key, "reason": reason} for key, reason in stale],
        "other_inputs": len(kept),
        "interrupted": summary.interrupted,
        "pending": summary.pending,
        "tiled": [{"path": key, "tile": tile} for key, tile in summary.tiled],
    }
    _write(output / SUMMARY, [(json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8")], 0)
    if interrupted_sources is None and (len(records) != expected or len(done) != expected):
        raise ExtractionError(f"manifest has {len(records)} entries for {expected} images")  # each image exactly once
    return summary


def _write(path: Path, chunks: list[bytes], parts: int) -> None:
    """Write the manifest or the summary atomically; a failure (a full disk) keeps the previous file."""
    try:
        write_atomic(path, chunks)
    except OSError as error:
        kept = "the previous one is kept" if path.exists() else "none was written"
        names = "manifest.rank0.jsonl" if parts == 1 else f"manifest.rank0.jsonl ... manifest.rank{parts - 1}.jsonl"
        where = f"; this run's manifest lines stay in {names}" if parts else ""
        raise OutputWriteError(
            f"cannot write {path} ({error.strerror or error}): {kept}{where}. Free space and rerun: "
            "finished feature files are skipped",
            path=str(path),
        ) from None


def remove_stale_temps(output: Path, before: float) -> None:
    """Delete featx's own temporary files (``.NAME.featx-TOKEN.tmp``, :func:`featx.io.atomic.is_temp_name`)
    left by killed runs (modified before ``before - 1 s``); any other file, hidden or not, is left alone,
    and symlinks are neither followed nor removed."""
    for folder, _, files in os.walk(output):
        for name in files:
            if is_temp_name(name):
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path, follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode) and info.st_mtime < before - 1:
                        os.unlink(path)
                except OSError:
                    pass


def dry_run_summary(
    sources: list[ImageSource],
    plans: list[ImagePlan],
    output: Path,
    weights_id: str,
    weights_verified: Optional[bool],
    world: int,
    start: float,
    *,
    tiles: Optional[dict[tuple[int, int], int]] = None,
    disk_bytes: Optional[int] = None,
) -> ExtractSummary:
    """The summary of a dry run: counts and ``planned`` actions, nothing written.

    Args:
        tiles: the tile side the run would use per image size ``(H, W)`` (sizes not listed: untiled).
        disk_bytes: the bytes the run's feature files would take (see :attr:`ExtractSummary.disk_bytes`).
    """
    tiles = tiles or {}
    tiled = [
        (source.key, tiles[plan.size])
        for source, plan in zip(sources, plans, strict=True)
        if plan.state == "todo" and plan.size in tiles
    ]
    sides = dict(tiled)
    actions = {"todo": "extract", "done": "skip (up to date)"}
    planned = [
        (
            source.key,
            f"extract (tiles of {sides[source.key]} px)"
            if source.key in sides
            else actions.get(plan.state, f"{plan.state}: {plan.reason}"),
        )
        for source, plan in zip(sources, plans, strict=True)
    ]
    return ExtractSummary(
        files=len(sources),
        skipped=sum(plan.state == "done" for plan in plans),
        errors=sum(plan.state == "error" for plan in plans),
        seconds=time.perf_counter() - start,
        output=str(output),
        failures=[(s.key, p.reason) for s, p in zip(sources, plans, strict=True) if p.state == "error"],
        weights_id=weights_id,
        weights_verified=weights_verified,
        world_size=world,
        planned=planned,
        ignored=[(s.key, p.reason) for s, p in zip(sources, plans, strict=True) if p.state == "ignored"],
        tiled=tiled,
        disk_bytes=disk_bytes,
    )
