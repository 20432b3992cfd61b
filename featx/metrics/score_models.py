"""The LPIPS and DISTS modules behind ``featx score``, and what their numbers may be called.

A column is named ``lpips`` (AlexNet), ``lpips_vgg`` or ``dists`` only when every part of the
metric's weights (backbone and learned layers) matched the full sha256 of the named checkpoint
(``*_verified`` is ``True``; a prefix-verified file is not verified).
Random weights (``weights=None``) give ``*_random`` columns, anything else (a file at a known name
with another hash, an unnamed file, an in-memory state dict) ``*_unverified`` ones:
:func:`weights_provenance` decides, :func:`score_column` names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Optional

import torch

__all__ = ["PROVENANCES", "MetricModule", "default_metric", "describe_metric", "min_side", "score_column", "weights_provenance"]

RANDOM_SEED = 0
"""Seed of the random backbones of ``weights=None`` (as ``featx extract``'s), so reruns agree."""

PROVENANCES: tuple[str, ...] = ("verified", "unverified", "random")
"""What a metric's weights are: every part sha256-verified, not all verified, or random."""

MetricModule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A batched metric: ``(pred (B, 3, H, W), ref (B, 3, H, W)) -> (B,)`` for images in ``[0, 1]``."""

_LEARNED = {"lpips": "lin_weights", "dists": "dists_weights"}


def _backbone(module: object) -> object:
    """The object carrying the backbone's provenance: the module itself, or its ``extractor``."""
    return module if hasattr(module, "weights_id") else getattr(module, "extractor", module)


def weights_provenance(name: str, module: object, *, random_weights: bool = False) -> str:
    """``"verified"`` when the backbone's and the learned layers' ``*_verified`` are both ``True``,
    ``"random"`` for random weights, else ``"unverified"``.

    Example:
        >>> class Stub:
        ...     weights_id, weights_verified, lin_weights_verified = "ALEXNET_IMAGENET1K_V1", True, False
        >>> weights_provenance("lpips", Stub()), weights_provenance("lpips", Stub(), random_weights=True)
        ('unverified', 'random')
    """
    if random_weights or getattr(_backbone(module), "weights_id", None) == "random":
        return "random"
    parts = (getattr(_backbone(module), "weights_verified", None), getattr(module, f"{_LEARNED[name]}_verified", None))
    return "verified" if all(part is True for part in parts) else "unverified"


def score_column(metric: str, *, lpips_net: str = "alex", provenance: str = "verified") -> str:
    """The column (and ``scores``/``means`` key) of a metric: ``lpips`` for AlexNet LPIPS, the number
    most SR tables quote, ``lpips_vgg`` / ``lpips_squeeze`` for VGG16 / SqueezeNet LPIPS (other
    numbers), ``dists``; with a
    ``_random`` or ``_unverified`` suffix unless the weights are verified (:func:`weights_provenance`).

    Example:
        >>> score_column("lpips"), score_column("lpips", lpips_net="vgg"), score_column("dists", provenance="random")
        ('lpips', 'lpips_vgg', 'dists_random')
        >>> score_column("lpips", provenance="unverified"), score_column("psnr")
        ('lpips_unverified', 'psnr')
        >>> score_column("lpips", lpips_net="squeeze", provenance="random")
        'lpips_squeeze_random'
    """
    if metric not in _LEARNED:
        return metric
    base = {"vgg": "lpips_vgg", "squeeze": "lpips_squeeze"}.get(lpips_net, "lpips") if metric == "lpips" else metric
    return base if provenance == "verified" else f"{base}_{provenance}"


def describe_metric(name: str, module: object, *, provenance: str, given: bool) -> dict[str, Any]:
    """The summary's record of a metric module: what it is, its provenance and the ids/sha256 of its
    weights (``"unit"`` learned layers for the random-weights modules of :func:`default_metric`)."""
    title = "LPIPS v0.1" if name == "lpips" else "DISTS"
    if given:
        title = f"{title.split()[0]} (given module {type(module).__name__})"
    elif provenance == "random":
        title = f"random weights: not {title.split()[0]}"
    backbone, learned = _backbone(module), _LEARNED[name]
    unit = provenance == "random" and not given
    record: dict[str, Any] = {"metric": title, "provenance": provenance}
    if name == "lpips":
        record["net"] = getattr(module, "net", None)
    record["backbone"] = getattr(backbone, "weights_id", None)
    record["backbone_sha256"] = getattr(backbone, "weights_sha256", None)
    record["backbone_verified"] = getattr(backbone, "weights_verified", None)
    record["backbone_verification"] = _state(getattr(backbone, "weights_verification", None))
    record["learned"] = "unit" if unit else getattr(module, f"{learned}_id", None)
    record["learned_sha256"] = None if unit else getattr(module, f"{learned}_sha256", None)
    record["learned_verified"] = None if unit else getattr(module, f"{learned}_verified", None)
    record["learned_verification"] = None if unit else _state(getattr(module, f"{learned}_verification", None))
    return record


def _state(verification: object) -> Optional[str]:
    """A verification state as its string (``"sha256"``, ``"prefix"``, ``"mismatch"``, ``"unknown"``), or ``None``."""
    return None if verification is None else str(verification)


def min_side(module: object) -> Optional[int]:
    """The smallest image side a metric module accepts (its ``min_input_size``, or its extractor's)."""
    for holder in (module, getattr(module, "extractor", None)):
        size: object = getattr(holder, "min_input_size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, tuple) and size and all(isinstance(v, int) for v in size):
            return int(max(size))
    return None


def default_metric(
    name: str,
    device: torch.device,
    *,
    lpips_net: str = "alex",
    random_weights: bool = False,
    verify_weights: Optional[str] = None,
) -> torch.nn.Module:
    """The module behind ``lpips`` / ``dists``: the registry's ImageNet backbone and learned layers
    (``LPIPS_<NET>_V0_1``, ``DISTS_VGG16``), or with ``random_weights`` a random backbone (seed
    0) and unit learned layers (all ones: every channel weighs the same). ``verify_weights`` is
    passed on (``"error"`` refuses a file whose sha256 does not match its name)."""
    from featx.errors import RandomWeightsWarning
    from featx.metrics.dists import DISTS, DISTS_CHANNELS
    from featx.metrics.lpips import LPIPS
    from featx.metrics.lpips import LPIPS_NETS as NETS

    module: torch.nn.Module
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", RandomWeightsWarning)  # score_folders warns once, for both
        torch.manual_seed(RANDOM_SEED)
        if name == "dists":
            if random_weights:
                unit = torch.ones(1, sum(DISTS_CHANNELS), 1, 1)
                module = DISTS(weights=None, dists_weights={"alpha": unit, "beta": unit}, reduction="none")
            else:
                module = DISTS(reduction="none", verify_weights=verify_weights)
        elif random_weights:
            lin = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate(NETS[lpips_net][2])}
            module = LPIPS(net=lpips_net, weights=None, lin_weights=lin, reduction="none")
        else:
            module = LPIPS(net=lpips_net, reduction="none", verify_weights=verify_weights)
    return module.to(device)
