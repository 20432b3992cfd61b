"""Scoring SR outputs against references, folder against folder (the engine of ``featx score``).

Images are paired by relative path (or by path without extension), decoded by
:mod:`featx.io.images`' rules (8/16-bit, EXIF orientation, alpha policy) to ``[0, 1]``, and scored:

- ``psnr``: :func:`skimage.metrics.peak_signal_noise_ratio` with ``data_range=1`` on the decoded
  values, the same number as on the integer pixels with ``data_range = 2**bits - 1``;
- ``ssim``: :func:`skimage.metrics.structural_similarity` with ``gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1`` (over the RGB channels, or on Y);
- ``lpips``, ``dists``: :class:`featx.LPIPS` (v0.1, AlexNet by default, VGG16 with
  ``lpips_net="vgg"``) and :class:`featx.DISTS`, batched by image size on the device.

Each number is stored under its column name, which says what it is: ``lpips`` (AlexNet),
``lpips_vgg`` (VGG16), ``dists``; with ``weights=None`` (random backbones, unit learned layers,
for trying the command without downloads) they carry a ``_random`` suffix (``lpips_random``,
``dists_random``), since they are not LPIPS/DISTS numbers.

``crop_border=N`` removes ``N`` pixels on every side before every metric; ``y_channel=True``
computes PSNR and SSIM on BT.601 luma ``Y = (65.481 R + 128.553 G + 24.966 B + 16) / 255`` (the
convention of BasicSR's ``calculate_psnr(..., test_y_channel=True)``); LPIPS and DISTS always
see RGB.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from featx._checks import check_bool, check_choice, check_int
from featx._choices import ALPHA_MODES, METRICS, PAIR_BY
from featx.errors import FeatxValueError, ImageDecodeError, InputNotFoundError
from featx.io.atomic import write_atomic
from featx.io.discovery import find_images
from featx.io.images import load_image

__all__ = [
    "METRICS",
    "PAIR_BY",
    "ScoredPair",
    "ScoreSummary",
    "pair_folders",
    "score_column",
    "score_folders",
    "write_scores",
]

_RANDOM_SEED = 0  # of the random backbones of weights=None (as featx extract's), so reruns agree

PathLike = Union[str, "os.PathLike[str]"]
MetricModule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A batched metric: ``(pred (B, 3, H, W), ref (B, 3, H, W)) -> (B,)`` for images in ``[0, 1]``."""


@dataclass
class ScoredPair:
    """One prediction/reference pair.

    Attributes:
        key: the pairing key (relative path, or relative path without extension).
        pred: the prediction file (``None`` if missing).
        ref: the reference file (``None`` if missing).
        scores: ``{column: value}`` (see :func:`score_column`); empty when the pair failed.
        error: why the pair was not scored, or ``None``.
    """

    key: str
    pred: Optional[str]
    ref: Optional[str]
    scores: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None


@dataclass
class ScoreSummary:
    """What :func:`score_folders` computed.

    Attributes:
        pairs: every pair (scored or failed) in key order.
        means: ``{column: mean over the scored pairs}`` (``nan`` if none was scored).
        config: the settings (``metrics``, their ``columns``, ``lpips_net``, ``random_weights``, ...)
            and, under ``weights``, the ids and sha256 of the weights LPIPS/DISTS used.
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
        """The pairs that failed."""
        return [pair for pair in self.pairs if pair.error is not None]


def _pair_key(key: str, pair_by: str) -> str:
    return os.path.splitext(key)[0] if pair_by == "stem" else key


def pair_folders(pred_dir: PathLike, ref_dir: PathLike, *, pair_by: str = "path") -> list[ScoredPair]:
    """Pair the images of two folders (recursively), in key order; unpaired files are error pairs.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: unknown ``pair_by``, or two files of one folder with the same stem (``pair_by="stem"``).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("sr/a.png", "sr/b.png", "hr/a.png", "hr/c.png"):
        ...         p = pathlib.Path(d, name); p.parent.mkdir(exist_ok=True); p.touch()
        ...     [(p.key, p.error) for p in pair_folders(pathlib.Path(d, "sr"), pathlib.Path(d, "hr"))]
        [('a.png', None), ('b.png', 'no reference image'), ('c.png', 'no prediction image')]
    """
    check_choice("pair_by", pair_by, PAIR_BY)
    sides: list[dict[str, str]] = []
    for folder in (pred_dir, ref_dir):
        if not os.path.isdir(folder):
            raise InputNotFoundError(f"folder not found: {os.fspath(folder)}")
        found: dict[str, str] = {}
        for source in find_images([folder]):
            key = _pair_key(source.key, pair_by)
            if key in found:
                raise FeatxValueError(
                    f"{found[key]} and {source.path} have the same key {key!r} with pair_by={pair_by!r}; "
                    "use pair_by='path'"
                )
            found[key] = source.path
        sides.append(found)
    preds, refs = sides
    pairs = []
    for key in sorted(preds.keys() | refs.keys()):
        pred, ref = preds.get(key), refs.get(key)
        error = "no reference image" if ref is None else "no prediction image" if pred is None else None
        pairs.append(ScoredPair(key, pred, ref, error=error))
    return pairs


def _luma(image: np.ndarray) -> np.ndarray:
    """BT.601 Y of an ``(H, W, 3)`` RGB image in ``[0, 1]``, in ``[16/255, 235/255]``."""
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    return np.asarray(image @ weights + 16.0 / 255.0)


def _classic(pred: np.ndarray, ref: np.ndarray, metrics: Sequence[str], y_channel: bool) -> dict[str, float]:
    """PSNR / SSIM of one pair (``(H, W, 3)`` float64 in ``[0, 1]``) with scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if y_channel:
        pred, ref = _luma(pred), _luma(ref)
    scores = {}
    if "psnr" in metrics:
        scores["psnr"] = float(peak_signal_noise_ratio(ref, pred, data_range=1.0))  # type: ignore[no-untyped-call]
    if "ssim" in metrics:
        scores["ssim"] = float(
            structural_similarity(  # type: ignore[no-untyped-call]
                ref, pred, data_range=1.0, channel_axis=None if y_channel else 2,
                gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            )
        )  # fmt: skip
    return scores


def score_column(metric: str, *, lpips_net: str = "alex", random_weights: bool = False) -> str:
    """The column (and ``scores``/``means`` key) of a metric: ``lpips`` for AlexNet LPIPS, the number
    most SR tables quote, ``lpips_vgg`` for VGG16 LPIPS (a different number), and a ``_random``
    suffix on ``lpips``/``dists`` computed with random weights.

    Example:
        >>> score_column("lpips"), score_column("lpips", lpips_net="vgg"), score_column("dists", random_weights=True)
        ('lpips', 'lpips_vgg', 'dists_random')
    """
    if metric not in ("lpips", "dists"):
        return metric
    base = "lpips_vgg" if metric == "lpips" and lpips_net == "vgg" else metric
    return f"{base}_random" if random_weights else base


def _describe(name: str, module: object, random_weights: bool, given: bool) -> dict[str, Any]:
    """The summary's record of a metric module: what it is and the ids/sha256 of its weights
    (``"unit"`` learned layers for the random-weights modules :func:`default_metric` builds)."""
    title = "LPIPS v0.1" if name == "lpips" else "DISTS"
    if given:
        title = f"{title.split()[0]} (given module {type(module).__name__})"
    elif random_weights:
        title = f"random weights: not {title.split()[0]}"
    record: dict[str, Any] = {"metric": title}
    if name == "lpips":
        record["net"] = getattr(module, "net", None)
        holder, learned = module, "lin_weights"
    else:
        holder, learned = getattr(module, "extractor", None), "dists_weights"
    record["backbone"] = getattr(holder, "weights_id", None)
    record["backbone_sha256"] = getattr(holder, "weights_sha256", None)
    record["learned"] = "unit" if random_weights else getattr(module, f"{learned}_id", None)
    record["learned_sha256"] = None if random_weights else getattr(module, f"{learned}_sha256", None)
    return record


def default_metric(
    name: str, device: torch.device, *, lpips_net: str = "alex", random_weights: bool = False
) -> MetricModule:
    """The module behind ``lpips`` / ``dists``: the registry's ImageNet backbone and learned layers
    (``LPIPS_<NET>_V0_1``, ``DISTS_VGG16``), or with ``random_weights`` a random backbone (seed
    0) and unit learned layers (all ones: every channel weighs the same)."""
    import warnings

    from featx.errors import RandomWeightsWarning
    from featx.metrics.dists import DISTS, DISTS_CHANNELS
    from featx.metrics.lpips import LPIPS
    from featx.metrics.lpips import LPIPS_NETS as NETS

    module: torch.nn.Module
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", RandomWeightsWarning)  # score_folders warns once, for both
        torch.manual_seed(_RANDOM_SEED)
        if name == "dists":
            if random_weights:
                unit = torch.ones(1, sum(DISTS_CHANNELS), 1, 1)
                module = DISTS(weights=None, dists_weights={"alpha": unit, "beta": unit}, reduction="none")
            else:
                module = DISTS(reduction="none")
        elif random_weights:
            lin = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate(NETS[lpips_net][2])}
            module = LPIPS(net=lpips_net, weights=None, lin_weights=lin, reduction="none")
        else:
            module = LPIPS(net=lpips_net, reduction="none")
    return module.to(device)


def score_folders(
    pred_dir: PathLike,
    ref_dir: PathLike,
    *,
    metrics: Iterable[str] = ("psnr", "ssim"),
    crop_border: int = 0,
    y_channel: bool = False,
    pair_by: str = "path",
    alpha: str = "error",
    device: str = "cpu",
    batch_size: Optional[int] = None,
    lpips_net: str = "alex",
    weights: Optional[str] = "DEFAULT",
    modules: Optional[Mapping[str, MetricModule]] = None,
    progress: bool = False,
) -> ScoreSummary:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    A pair that cannot be scored (unpaired, undecodable, sizes that differ, an image smaller than
    the crop) is recorded with its error; the others are scored.

    Args:
        pred_dir: the SR outputs.
        ref_dir: the ground truth.
        metrics: names from :data:`METRICS`.
        crop_border: pixels removed on each side before every metric (the SR scale, as in BasicSR).
        y_channel: PSNR and SSIM on BT.601 luma.
        pair_by: ``"path"`` or ``"stem"`` (ignore extensions).
        alpha: ``"error"`` or ``"drop"`` for images with an alpha channel.
        device: where LPIPS and DISTS run.
        batch_size: pairs of one size per LPIPS/DISTS batch; ``None``: 8 on an accelerator, 1 on
            CPU, where batches of large images run slower than single images (measured: DISTS on
            8 pairs of 256x256, 7.1 s one by one, 9.1 s as one batch; the activations leave the cache).
        lpips_net: ``"alex"`` (the LPIPS most SR tables quote; column ``lpips``) or ``"vgg"``
            (column ``lpips_vgg``).
        weights: ``"DEFAULT"``: the registry's checkpoints from the local cache (ImageNet
            backbones, ``LPIPS_<NET>_V0_1``, ``DISTS_VGG16``); ``None``: random backbones (seed
            0) and unit learned layers, to try the scoring without
            downloads. Warns :class:`~featx.errors.RandomWeightsWarning`; the columns get a
            ``_random`` suffix, as the numbers are not LPIPS/DISTS.
        modules: ``{"lpips" | "dists": module}`` to use instead of the modules ``weights`` builds
            (on CPU they run ``channels_last``: their parameters are converted in place); a
            :class:`featx.LPIPS` must have ``net == lpips_net``. Their columns carry no ``_random``
            suffix (``weights`` applies to the modules built here); the summary records their ids.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`ScoreSummary`.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: an unknown metric or pairing rule, a bad number.
        WeightsNotFoundError: LPIPS/DISTS weights are not on disk (their message says how to get them).
    """
    chosen = [check_choice("metric", name, METRICS) for name in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    if not chosen:
        raise FeatxValueError(f"metrics must name at least one of {', '.join(METRICS)}")
    check_int("crop_border", crop_border, minimum=0)
    check_bool("y_channel", y_channel)
    check_choice("alpha", alpha, ALPHA_MODES)
    torch_device = torch.device(device)
    if batch_size is None:
        batch_size = 1 if torch_device.type == "cpu" else 8
    check_int("batch_size", batch_size)
    from featx.metrics.lpips import LPIPS_NETS

    check_choice("lpips_net", lpips_net, tuple(LPIPS_NETS))
    if weights is not None and weights != "DEFAULT":
        raise FeatxValueError(
            "weights must be 'DEFAULT' (the registry's LPIPS/DISTS checkpoints, from the local cache) or None "
            f"(random backbones and unit learned layers, to try featx score), got {weights!r}"
        )
    deep = [name for name in chosen if name in ("lpips", "dists")]
    given = set(deep) & set(modules or {})
    random_weights = weights is None
    randomised = [name for name in deep if random_weights and name not in given]
    columns = {name: score_column(name, lpips_net=lpips_net, random_weights=name in randomised) for name in chosen}
    pairs = pair_folders(pred_dir, ref_dir, pair_by=pair_by)
    if randomised:
        import warnings

        from featx.errors import RandomWeightsWarning

        warnings.warn(
            f"weights=None: {' and '.join(randomised)} run on random backbones (seed {_RANDOM_SEED}) with "
            f"unit learned layers; the numbers (columns {', '.join(columns[name] for name in randomised)}) are not "
            "LPIPS/DISTS and only show that scoring works. Use weights='DEFAULT' with the files of "
            "`featx weights download NAME` for real numbers.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    nets: dict[str, MetricModule] = {}
    described: dict[str, dict[str, Any]] = {}
    for name in deep:
        if modules is not None and name in given:
            nets[name] = modules[name]
            net = getattr(nets[name], "net", lpips_net)
            if name == "lpips" and net != lpips_net:
                raise FeatxValueError(f"modules['lpips'] is LPIPS net={net!r} but lpips_net={lpips_net!r}")
    from functools import partial

    from featx.weights import gather_missing

    builders = {
        name: partial(default_metric, name, torch_device, lpips_net=lpips_net, random_weights=random_weights)
        for name in deep
        if name not in nets
    }
    built = dict(zip(builders, gather_missing(*builders.values()), strict=True))  # all missing files in one error
    nets = {name: nets[name] if name in nets else built[name] for name in deep}
    for name in deep:
        described[name] = _describe(name, nets[name], name in randomised, name in given)
    from tqdm.auto import tqdm

    by_size: dict[tuple[int, ...], list[tuple[ScoredPair, torch.Tensor, torch.Tensor]]] = {}
    for pair in tqdm(pairs, desc="featx score", unit="pair", disable=not progress):
        if pair.error is not None or pair.pred is None or pair.ref is None:
            continue
        try:
            pred, ref = load_image(pair.pred, alpha=alpha), load_image(pair.ref, alpha=alpha)
        except ImageDecodeError as error:
            pair.error = str(error)
            continue
        if pred.shape != ref.shape:
            pair.error = f"sizes differ: prediction {tuple(pred.shape[1:])}, reference {tuple(ref.shape[1:])} (H, W)"
            continue
        if crop_border:
            if min(pred.shape[1:]) <= 2 * crop_border:
                pair.error = f"image {tuple(pred.shape[1:])} is not larger than twice crop_border={crop_border}"
                continue
            pred = pred[:, crop_border:-crop_border, crop_border:-crop_border]
            ref = ref[:, crop_border:-crop_border, crop_border:-crop_border]
        classic = [name for name in chosen if name in ("psnr", "ssim")]
        if classic:
            as_array = [t.double().permute(1, 2, 0).numpy() for t in (pred, ref)]
            pair.scores.update(_classic(as_array[0], as_array[1], classic, y_channel))  # psnr/ssim: own columns
        if deep:
            by_size.setdefault(tuple(pred.shape), []).append((pair, pred, ref))
    # channels_last on CPU, where oneDNN then skips its layout reorders (1.3x for DISTS' VGG16 at
    # 256x256, as for featx extract); the modules' parameters change layout in place, not value
    layout = torch.channels_last if torch_device.type == "cpu" else torch.contiguous_format
    for net in nets.values():
        if isinstance(net, torch.nn.Module):
            net.to(memory_format=layout)
    for group in by_size.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            preds = torch.stack([p for _, p, _ in chunk]).to(torch_device).contiguous(memory_format=layout)
            refs = torch.stack([r for _, _, r in chunk]).to(torch_device).contiguous(memory_format=layout)
            with torch.no_grad():
                for name in deep:
                    values = nets[name](preds, refs).reshape(-1).double().cpu().tolist()
                    for (pair, _, _), value in zip(chunk, values, strict=True):
                        pair.scores[columns[name]] = value
    scored = [pair for pair in pairs if pair.error is None]
    means = {
        column: (sum(p.scores[column] for p in scored) / len(scored)) if scored else math.nan
        for column in columns.values()
    }
    config = {
        "metrics": chosen,
        "columns": [columns[name] for name in chosen],
        "lpips_net": lpips_net,
        "random_weights": randomised,
        "crop_border": crop_border,
        "y_channel": y_channel,
        "pair_by": pair_by,
        "alpha": alpha,
        "weights": described,
        "pred_dir": os.fspath(pred_dir),
        "ref_dir": os.fspath(ref_dir),
    }
    return ScoreSummary(pairs, means, config)


def write_scores(summary: ScoreSummary, csv_path: PathLike) -> Path:
    """Write the per-pair CSV (``key,<column>,...``, scored pairs in key order) and, next to it, a
    JSON summary (means, counts, errors, configuration); both atomically. Returns the JSON path.

    Example:
        >>> import tempfile, os, json
        >>> s = ScoreSummary([ScoredPair("a.png", "x", "y", {"psnr": 30.0})], {"psnr": 30.0}, {"metrics": ["psnr"]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     j = write_scores(s, os.path.join(d, "scores.csv"))
        ...     print(open(os.path.join(d, "scores.csv")).read().strip(), json.loads(j.read_text())["means"])
        key,psnr
        a.png,30.0 {'psnr': 30.0}
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    metrics = summary.columns
    lines = [_csv_line(["key", *metrics])]
    for pair in summary.pairs:
        if pair.error is None:
            row = [pair.key, *(repr(pair.scores[name]) for name in metrics)]
            lines.append(_csv_line(row))
    write_atomic(csv_path, [line.encode("utf-8") for line in lines])
    payload = {
        "means": summary.means,
        "scored": len(summary.pairs) - len(summary.errors),
        "failed": len(summary.errors),
        "errors": [{"key": p.key, "pred": p.pred, "ref": p.ref, "error": p.error} for p in summary.errors],
        "config": summary.config,
    }
    json_path = csv_path.with_suffix(".json")
    write_atomic(json_path, [(json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8")])
    return json_path


def _csv_line(row: Sequence[str]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()
