"""Scoring SR outputs against references, folder against folder (the engine of ``featx score``).

Pairs come from :mod:`featx.metrics.pairing`, are read by :mod:`featx.metrics.conventions` and
scored here:

- ``psnr``, ``ssim``: computed from the decoded integer pixels by
  :func:`featx.metrics.pixel_fidelity.fidelity_scores` (float64, no float32 RGB copies), equal to
  :func:`featx.metrics.fidelity.psnr` / :func:`~featx.metrics.fidelity.ssim` on
  :func:`featx.io.images.load_image`'s tensors (``data_range=1``) after ``crop_border``; with
  ``y_channel`` on BT.601 luma. The numbers of BasicSR's ``calculate_psnr``/``calculate_ssim``.
- ``lpips``, ``dists``: :class:`featx.LPIPS` (v0.1, AlexNet by default, VGG16 with
  ``lpips_net="vgg"``) and :class:`featx.DISTS` on RGB, batched by image size on the device;
  ``crop_border`` applies to them only with ``crop_scope="all"`` (BasicSR's ``calculate_lpips.py``
  does not crop). Columns are named by :func:`featx.metrics.score_models.score_column`.

Pairs are decoded and their PSNR/SSIM computed in ``num_workers`` threads (Pillow's decoding,
numpy and OpenCV release the GIL); the float32 tensors LPIPS and DISTS need are made only when
they are asked for, and those run in the calling thread. A pair that cannot
be scored (undecodable, sizes that differ, too small for a metric) is that pair's error; the
others are scored.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Optional, Union

import torch

from featx._checks import check_bool, check_choice, check_int
from featx._choices import ALPHA_MODES, METRICS, PAIR_BY
from featx.errors import FeatxError, FeatxValueError, FeatxWarning, RandomWeightsWarning
from featx.io.discovery import printable_name
from featx.io.pillow_settings import strict_loading
from featx.metrics.conventions import CROP_SCOPES, GRAY_MODES, PAIR_ERRORS, DecodedPair, PixelPair, crop, read_pixel_pair
from featx.metrics.fidelity import SSIM_WINDOW
from featx.metrics.pairing import ScoredPair, count_pairs, gray_rgb_warning, pair_folders
from featx.metrics.pixel_fidelity import fidelity_scores
from featx.metrics.score_models import (
    RANDOM_SEED,
    MetricModule,
    default_metric,
    describe_metric,
    min_side,
    score_column,
    weights_provenance,
)
from featx.metrics.score_output import ScoreSummary, write_scores

__all__ = ["METRICS", "PAIR_BY", "ScoreSummary", "ScoredPair", "pair_folders", "score_column", "score_folders", "write_scores"]

PathLike = Union[str, "os.PathLike[str]"]
_DEEP = ("lpips", "dists")


def _check_options(metrics: Union[str, Iterable[str]], options: dict[str, Any]) -> list[str]:
    names = metrics.split(",") if isinstance(metrics, str) else metrics
    chosen = [check_choice("metric", name.strip() if isinstance(name, str) else name, METRICS) for name in names]
    if not chosen:
        raise FeatxValueError(f"metrics must name at least one of {', '.join(METRICS)}")
    check_int("crop_border", options["crop_border"], minimum=0)
    check_choice("crop_scope", options["crop_scope"], CROP_SCOPES)
    check_bool("y_channel", options["y_channel"])
    check_choice("gray", options["gray"], GRAY_MODES)
    check_int("modcrop", options["modcrop"], minimum=1, allow_none=True)
    check_choice("alpha", options["alpha"], ALPHA_MODES)
    check_int("num_workers", options["num_workers"], minimum=0, allow_none=True)
    weights = options["weights"]
    if weights is not None and weights != "DEFAULT":
        raise FeatxValueError(
            "weights must be 'DEFAULT' (the registry's LPIPS/DISTS checkpoints, from the local cache) or None "
            f"(random backbones and unit learned layers, to try featx score), got {weights!r}"
        )
    return chosen


def _no_pairs_error(pairs: list[ScoredPair], pred_dir: PathLike, ref_dir: PathLike) -> Optional[str]:
    counts = count_pairs(pairs)
    where = f"{printable_name(os.fspath(pred_dir))} and {printable_name(os.fspath(ref_dir))}"
    if not pairs:
        return f"no images found in {where}: nothing to score"
    if counts["scored"] + counts["failed"] == 0:
        return (
            f"no prediction has a reference in {where} ({counts['unpaired_pred']} predictions, "
            f"{counts['unpaired_ref']} references without a partner); check pair_by / pred_pattern (--pair-by, --pred-suffix)"
        )
    return None


def _fidelity(decoded: PixelPair, classic: list[str], crop_border: int, y_channel: bool) -> dict[str, float]:
    """PSNR / SSIM of one decoded pair, from its integer pixels (:mod:`featx.metrics.pixel_fidelity`)."""
    need = SSIM_WINDOW if "ssim" in classic else 1
    height, width = decoded.pred.shape[:2]
    if min(height, width) - 2 * crop_border < need:
        name = "ssim" if need > 1 else "psnr"
        raise FeatxValueError(
            f"too small for {name}: needs at least {need}x{need} pixels after crop_border={crop_border} "
            f"(at least {need + 2 * crop_border}x{need + 2 * crop_border}), got {height}x{width}"
        )
    return fidelity_scores(decoded.pred, decoded.ref, classic, crop_border=crop_border, y_channel=y_channel,
                           rgb=decoded.channels == 3)  # fmt: skip


def _ordered(tasks: Iterable[Any], work: Callable[[Any], Any], workers: int) -> Iterator[Any]:
    """``work(task)`` for each task in order, ``workers`` threads ahead (inline for 0)."""
    if workers == 0:
        yield from map(work, tasks)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featx-score") as pool:
        pending: deque[Future[Any]] = deque()
        for task in tasks:
            pending.append(pool.submit(work, task))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _DeepBatches:
    """LPIPS/DISTS over pairs grouped by size, ``batch_size`` at a time; a failing batch is retried
    pair by pair, so one pair's failure stays that pair's error."""

    def __init__(self, nets: Mapping[str, MetricModule], columns: Mapping[str, str], device: torch.device, batch_size: int):
        self.nets, self.columns, self.device, self.batch_size = nets, columns, device, batch_size
        # channels_last on CPU, where oneDNN then skips its layout reorders (1.3x for DISTS' VGG16 at
        # 256x256, as for featx extract); the modules' parameters change layout in place, not value
        self.layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        for net in nets.values():
            if isinstance(net, torch.nn.Module):
                net.to(memory_format=self.layout)
        self.groups: dict[tuple[int, ...], list[tuple[ScoredPair, torch.Tensor, torch.Tensor]]] = {}

    def add(self, pair: ScoredPair, pred: torch.Tensor, ref: torch.Tensor) -> None:
        for name, net in self.nets.items():
            side = min_side(net)
            if side is not None and min(pred.shape[1:]) < side:
                pair.error = f"too small for {name}: needs at least {side}x{side} pixels, got {pred.shape[1]}x{pred.shape[2]}"
                pair.scores.clear()
                return
        group = self.groups.setdefault(tuple(pred.shape), [])
        group.append((pair, pred, ref))
        if len(group) >= self.batch_size:
            self._run(self.groups.pop(tuple(pred.shape)))

    def finish(self) -> None:
        for group in self.groups.values():
            self._run(group)
        self.groups.clear()

    def _run(self, chunk: list[tuple[ScoredPair, torch.Tensor, torch.Tensor]]) -> None:
        try:
            preds = torch.stack([p for _, p, _ in chunk]).to(self.device).contiguous(memory_format=self.layout)
            refs = torch.stack([r for _, _, r in chunk]).to(self.device).contiguous(memory_format=self.layout)
            results = {}
            with torch.no_grad():
                for name, net in self.nets.items():
                    results[name] = net(preds, refs).reshape(-1).double().cpu().tolist()
        except (FeatxError, ValueError, RuntimeError) as error:
            if len(chunk) > 1:
                for item in chunk:
                    self._run([item])
                return
            chunk[0][0].error = f"cannot score: {str(error).splitlines()[0]}"
            chunk[0][0].scores.clear()
            return
        for name, values in results.items():
            for (pair, _, _), value in zip(chunk, values, strict=True):
                pair.scores[self.columns[name]] = value


def _build_nets(
    deep: list[str], modules: Optional[Mapping[str, MetricModule]], device: torch.device, options: dict[str, Any]
) -> tuple[dict[str, MetricModule], dict[str, str], dict[str, dict[str, Any]]]:
    """The LPIPS/DISTS modules, their provenance and their summary records."""
    from featx.weights import gather_missing, verify_mode

    strict = verify_mode(options["verify_weights"]) == "error"
    random_weights = options["weights"] is None
    given: dict[str, MetricModule] = {}
    builders: dict[str, Callable[[], MetricModule]] = {}
    for name in deep:
        if modules is not None and name in modules:
            given[name] = modules[name]
            net = getattr(given[name], "net", options["lpips_net"])
            if name == "lpips" and net != options["lpips_net"]:
                raise FeatxValueError(f"modules['lpips'] is LPIPS net={net!r} but lpips_net={options['lpips_net']!r}")
        else:
            builders[name] = partial(default_metric, name, device, lpips_net=options["lpips_net"],
                                     random_weights=random_weights, verify_weights="error" if strict else None)  # fmt: skip
    built = dict(zip(builders, gather_missing(*builders.values()), strict=True)) if builders else {}  # every missing file at once
    nets = {name: given[name] if name in given else built[name] for name in deep}
    provenance: dict[str, str] = {}
    described: dict[str, dict[str, Any]] = {}
    for name in deep:
        provenance[name] = weights_provenance(name, nets[name], random_weights=random_weights and name not in given)
        if strict and provenance[name] != "verified":
            raise FeatxValueError(
                f"{name}: its weights are {provenance[name]} (not every part matched a known checkpoint's sha256) and "
                "verified weights are required (verify_weights='error' or FEATX_REQUIRE_VERIFIED=1)"
            )
        described[name] = describe_metric(name, nets[name], provenance=provenance[name], given=name in given)
    return nets, provenance, described


def score_folders(
    pred_dir: PathLike,
    ref_dir: PathLike,
    *,
    metrics: Union[str, Iterable[str]] = ("psnr", "ssim"),
    crop_border: int = 0,
    crop_scope: str = "psnr_ssim",
    y_channel: bool = False,
    gray: str = "keep",
    modcrop: Optional[int] = None,
    pair_by: str = "path",
    pred_pattern: Optional[str] = None,
    alpha: str = "error",
    device: str = "cpu",
    batch_size: Optional[int] = None,
    lpips_net: str = "alex",
    weights: Optional[str] = "DEFAULT",
    verify_weights: Optional[str] = None,
    modules: Optional[Mapping[str, MetricModule]] = None,
    num_workers: Optional[int] = None,
    progress: bool = False,
) -> ScoreSummary:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    Args:
        pred_dir: the SR outputs.
        ref_dir: the ground truth.
        metrics: names from :data:`METRICS` (a list or ``"psnr,ssim"``).
        crop_border: pixels removed on each side (the SR scale, as in BasicSR).
        crop_scope: ``"psnr_ssim"`` (BasicSR's scripts) or ``"all"`` (LPIPS and DISTS too).
        y_channel: PSNR and SSIM on BT.601 luma of RGB images.
        gray: ``"keep"`` 1-channel images for PSNR/SSIM (BasicSR's ``calculate_psnr_ssim.py``) or
            ``"repeat"`` them to RGB (BasicSR's ``test.py``); see :mod:`featx.metrics.conventions`.
        modcrop: crop each reference to a multiple of this scale (BasicSR's ``mod_crop``).
        pair_by: ``"path"`` or ``"stem"`` (ignore extensions).
        pred_pattern: prediction names from reference names, ``"{stem}_ESRGAN_x4"``
            (:func:`~featx.metrics.pairing.pair_folders`).
        alpha: ``"error"`` or ``"drop"`` for images with an alpha channel (both sides).
        device: where LPIPS and DISTS run.
        batch_size: pairs of one size per LPIPS/DISTS batch; ``None``: 8 on an accelerator, 1 on
            CPU, where batches of large images run slower than single images (measured: DISTS on
            8 pairs of 256x256, 7.1 s one by one, 9.1 s as one batch; the activations leave the cache).
        lpips_net: ``"alex"`` (column ``lpips``), ``"vgg"`` (column ``lpips_vgg``) or ``"squeeze"``
            (column ``lpips_squeeze``).
        weights: ``"DEFAULT"``: the registry's checkpoints from the local cache; ``None``: random
            backbones (seed 0) and unit learned layers, to try the scoring without downloads
            (warns :class:`~featx.errors.RandomWeightsWarning`; columns ``*_random``).
        verify_weights: ``"error"`` refuses LPIPS/DISTS weights that are not sha256-verified;
            ``None``: ``FEATX_REQUIRE_VERIFIED`` decides; ``"warn"``: score them, in
            ``*_unverified`` columns.
        modules: ``{"lpips" | "dists": module}`` to use instead of the modules ``weights`` builds
            (on CPU they run ``channels_last``: their parameters are converted in place); a
            :class:`featx.LPIPS` must have ``net == lpips_net``. Their columns follow their provenance.
        num_workers: threads decoding pairs and computing PSNR/SSIM; ``None``: up to 4, one per core.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`ScoreSummary`.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: an unknown metric or option, a bad number, no images, no pair, unverified
            weights under ``verify_weights="error"``.
        WeightsNotFoundError: LPIPS/DISTS weights are not on disk (their message says how to get them).
    """
    options = dict(crop_border=crop_border, crop_scope=crop_scope, y_channel=y_channel, gray=gray, modcrop=modcrop,
                   alpha=alpha, weights=weights, verify_weights=verify_weights, lpips_net=lpips_net,
                   num_workers=num_workers)  # fmt: skip
    chosen = _check_options(metrics, options)
    torch_device = torch.device(device)
    if batch_size is None:
        batch_size = 1 if torch_device.type == "cpu" else 8
    check_int("batch_size", batch_size)
    from featx.metrics.lpips import LPIPS_NETS

    check_choice("lpips_net", lpips_net, tuple(LPIPS_NETS))
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    pairs = pair_folders(pred_dir, ref_dir, pair_by=pair_by, pred_pattern=pred_pattern)
    problem = _no_pairs_error(pairs, pred_dir, ref_dir)
    if problem is not None:
        raise FeatxValueError(problem)
    deep = [name for name in chosen if name in _DEEP]
    classic = [name for name in chosen if name not in _DEEP]
    nets, provenance, described = _build_nets(deep, modules, torch_device, options)
    columns = {name: score_column(name, lpips_net=lpips_net, provenance=provenance.get(name, "verified")) for name in chosen}
    randomised = [name for name in deep if provenance[name] == "random"]
    if randomised and weights is None:
        warnings.warn(
            f"weights=None: {' and '.join(randomised)} run on random backbones (seed {RANDOM_SEED}) with "
            f"unit learned layers; the numbers (columns {', '.join(columns[name] for name in randomised)}) are not "
            "LPIPS/DISTS and only show that scoring works. Use weights='DEFAULT' with the files of "
            "`featx weights download NAME` for real numbers.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    deep_border = crop_border if crop_scope == "all" else 0

    def read(pair: ScoredPair) -> tuple[ScoredPair, Optional[DecodedPair]]:
        if pair.error is not None or pair.pred is None or pair.ref is None:
            return pair, None
        try:
            pixels = read_pixel_pair(pair.pred, pair.ref, alpha=alpha, gray=gray, modcrop=modcrop)
            pair.warning = pixels.warning
            pair.scores.update(_fidelity(pixels, classic, crop_border, y_channel) if classic else {})
            if deep and min(pixels.pred.shape[:2]) - 2 * deep_border < 1:
                raise FeatxValueError(f"nothing left of {tuple(pixels.pred.shape[:2])} (H, W) after crop_border={crop_border}")
            decoded = pixels.tensors() if deep else None
        except (*PAIR_ERRORS, FeatxValueError) as error:
            pair.error, decoded = printable_name(str(error)), None
            pair.scores.clear()
        except Exception as error:  # one pair's failure of any kind (out of memory, ...) never ends the run
            pair.error, decoded = printable_name(f"cannot score: {type(error).__name__}: {error}"), None
            pair.scores.clear()
        return pair, decoded if deep else None

    from tqdm.auto import tqdm

    batches = _DeepBatches(nets, columns, torch_device, batch_size)
    with strict_loading():  # decoding threads share Pillow's truncation flag: held off for the whole run
        results = _ordered(pairs, read, workers)
        for pair, decoded in tqdm(results, total=len(pairs), desc="featx score", unit="pair", disable=not progress):
            if decoded is not None and pair.error is None:
                pred, ref = decoded.rgb()
                batches.add(pair, crop(pred, deep_border), crop(ref, deep_border))
        batches.finish()
    _warn_gray(pairs)
    scored = [pair for pair in pairs if pair.error is None and not pair.unpaired]
    means = {column: (sum(p.scores[column] for p in scored) / len(scored)) if scored else math.nan for column in columns.values()}
    config = {
        "metrics": chosen,
        "columns": [columns[name] for name in chosen],
        "lpips_net": lpips_net,
        "random_weights": randomised,
        "unverified_weights": [name for name in deep if provenance[name] == "unverified"],
        "crop_border": crop_border,
        "crop_scope": crop_scope,
        "y_channel": y_channel,
        "gray": gray,
        "modcrop": modcrop,
        "pair_by": pair_by,
        "pred_pattern": pred_pattern,
        "alpha": alpha,
        "weights": described,
        "pred_dir": printable_name(os.fspath(pred_dir)),
        "ref_dir": printable_name(os.fspath(ref_dir)),
    }
    return ScoreSummary(pairs, means, config)


def _warn_gray(pairs: list[ScoredPair]) -> None:
    """One warning for every scored pair that compared a gray image with an RGB one."""
    message = gray_rgb_warning(pairs)
    if message is not None:
        warnings.warn(message, FeatxWarning, stacklevel=3)
