"""The machinery behind the image-taking loss modules of :mod:`featx.losses.modules`: loss terms, the
shared or owned extractor, one pass per image, target caching, and the term builders.

Private to featx; the public classes live in :mod:`featx.losses.modules`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Optional, overload

import torch
from torch import nn

from featx._checks import InputRange, check_choice, check_layer_weights, check_number
from featx.backbones.base import BackboneFeatures
from featx.backbones.family_options import build_with_options
from featx.errors import FeatxTypeError, FeatxValueError
from featx.losses._features import LossResult, check_finite, check_reduction
from featx.losses.functional import CRITERIA, GRAM_NORMALIZATIONS, gram_matrices, perceptual_loss, style_loss
from featx.losses.texture import (
    ContextualOnFeatures,
    MomentsOnFeatures,
    SlicedWassersteinOnFeatures,
    contextual_loss,
    moment_loss,
    sliced_wasserstein_loss,
)
from featx.presets import Preset, get_preset

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = [
    "TEXTURE_KINDS",
    "Backbone",
    "ImageLoss",
    "Term",
    "check_term_weight",
    "explicit_or_preset",
    "optional_preset",
    "perceptual_term",
    "style_term",
    "style_weights_of",
    "texture_term",
]


TEXTURE_KINDS: tuple[str, ...] = ("sliced_wasserstein", "moments", "contextual", "gram")
"""Texture statistics :class:`TextureLoss` can match."""

_TEXTURE_FUNCTIONS: dict[str, tuple[Callable[..., LossResult], Callable[..., nn.Module]]] = {
    "sliced_wasserstein": (sliced_wasserstein_loss, SlicedWassersteinOnFeatures),
    "moments": (moment_loss, MomentsOnFeatures),
    "contextual": (contextual_loss, ContextualOnFeatures),
}
_GRAM_OPTIONS: tuple[str, ...] = ("criterion", "normalize", "eps")
_COMMON = ("reduction", "check_finite", "return_terms")


@dataclass(frozen=True)
class Term:
    """One loss term: its key prefix, what it computes, on which layers, with which weight."""

    group: str  # "perceptual", "style" or "texture": the prefix of the return_terms keys
    kind: str  # "perceptual", "gram" or a texture kind
    layer_weights: dict[str, float]
    weight: float
    options: dict[str, Any] = field(default_factory=dict)


class Backbone(NamedTuple):
    """The constructor arguments that pick or build the extractor (see :class:`PerceptualLoss`)."""

    arch: Optional[str]
    weights: WeightsSpec
    input_range: Optional[InputRange]
    pooling: Optional[str]
    gray: Optional[str]
    extractor: Optional[BackboneFeatures]


def optional_preset(preset: Optional[str]) -> Optional[Preset]:
    return None if preset is None else get_preset(preset)


def check_term_weight(name: str, value: object) -> float:
    return check_number(name, value)


def texture_options(kind: str, options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Validate the keyword options of a texture kind against its function's signature."""
    check_choice("texture kind", kind, TEXTURE_KINDS)
    options = dict(options or {})
    if kind == "gram":
        valid = _GRAM_OPTIONS
    else:
        parameters = inspect.signature(_TEXTURE_FUNCTIONS[kind][0]).parameters.values()
        valid = tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON)
    for name in options:
        check_choice("option", name, valid, context=f" for texture kind {kind!r}")
    if kind == "gram":
        check_choice("criterion", options.get("criterion", "mse"), CRITERIA)
        check_choice("normalize", options.get("normalize", "chw"), GRAM_NORMALIZATIONS)
    else:
        generator = options.get("generator")
        if generator is not None:
            raise FeatxValueError("a texture loss module takes seed=, not generator= (a generator cannot be copied)")
        _TEXTURE_FUNCTIONS[kind][1]({"_": 1.0}, **options)  # the thin module validates the values
    return options


class ImageLoss(nn.Module):
    """Shared machinery: one extractor pass per image, the terms on its features, target caching."""

    def _setup(
        self, terms: Sequence[Term], preset: Optional[Preset], reduction: str, check_finite: bool, backbone: Backbone
    ) -> None:
        arch, weights, input_range, pooling, gray, extractor = backbone
        check_reduction(reduction)
        if not terms:
            raise FeatxValueError("the loss has no terms: give layer weights for at least one term, or a preset")
        self.terms: tuple[Term, ...] = tuple(terms)
        self.reduction = reduction
        self.check_finite = bool(check_finite)
        needed: list[str] = []
        for term in self.terms:
            needed += [name for name in term.layer_weights if name not in needed]
        extra: dict[str, Any] = {}
        if preset is not None:
            if arch is not None and arch != preset.arch:
                raise FeatxValueError(f"arch={arch!r} conflicts with the preset's arch {preset.arch!r}")
            if pooling is not None and pooling != preset.pooling:
                raise FeatxValueError(f"pooling={pooling!r} conflicts with the preset's pooling {preset.pooling!r}")
            arch = preset.arch
            # "max" is every preset's default (VGG's own); families without pooling never see it
            pooling = preset.pooling if preset.pooling != "max" else pooling
            extra = dict(preset.extractor_options)  # e.g. DINOv2's size rules of dino_perceptual_v2
        if extractor is None:
            self.extractor = build_with_options(
                arch or "vgg19",
                needed,
                {"pooling": pooling, "gray": gray, **extra},
                weights=weights,
                input_range=(0.0, 1.0) if input_range is None else input_range,
            )
        else:
            self.extractor = self._check_extractor(extractor, needed, backbone)
        self._target: Optional[list[dict[str, torch.Tensor]]] = None
        self._target_shape: tuple[int, ...] = ()

    @staticmethod
    def _check_batches(pred: object, target_shape: tuple[int, ...], target_name: str) -> None:
        """A target has the batch of ``pred`` or a batch of 1; a pred batch is never broadcast."""
        if not isinstance(pred, torch.Tensor) or pred.ndim != 4 or len(target_shape) != 4:
            return  # the extractor says what is wrong with such inputs
        if target_shape[0] not in (1, pred.shape[0]):
            raise FeatxValueError(
                f"pred of shape {tuple(pred.shape)} and {target_name} of shape {target_shape} do not fit: they "
                "need the same batch, or a target batch of 1 (a pred batch is never broadcast)"
            )

    @staticmethod
    def _check_extractor(extractor: BackboneFeatures, needed: list[str], backbone: Backbone) -> BackboneFeatures:
        arch, weights, input_range, pooling, gray, _ = backbone
        if not isinstance(extractor, BackboneFeatures):
            raise FeatxTypeError(
                "extractor must be a featx.VGGFeatures or another featx backbone (a BackboneFeatures, e.g. from "
                f"featx.backbones.catalog.build_backbone), got {type(extractor).__name__}"
            )
        if not (isinstance(weights, str) and weights == "DEFAULT"):
            raise FeatxValueError(
                f"weights={weights!r} cannot be combined with extractor=: the loss uses the extractor's "
                f"weights ({extractor.weights_id!r}); drop weights="
            )
        given: dict[str, object] = {"arch": arch, "pooling": pooling, "gray": gray}
        if input_range is not None:
            given["input_range"] = input_range if isinstance(input_range, str) else tuple(map(float, input_range))
        for name, value in given.items():
            if value is not None and not hasattr(extractor, name):
                raise FeatxValueError(
                    f"{name}={value!r} given, but the shared {extractor.arch} extractor has no {name} option; drop {name}="
                )
            if value is not None and value != getattr(extractor, name):
                raise FeatxValueError(
                    f"{name}={value!r} does not match the shared extractor's {name} {getattr(extractor, name)!r}; "
                    f"drop {name}= or build the extractor with it"
                )
        missing = [name for name in needed if name not in extractor.taps]
        if missing:
            raise FeatxValueError(
                f"the shared extractor has no tap {', '.join(map(repr, missing))} needed by the loss; it has "
                f"{', '.join(extractor.taps)}. Build it with taps={needed!r} (or a superset)"
            )
        return extractor

    # ---------------------------------------------------------------- targets

    def _prepare(self, feats: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per term: the target features it needs, or its Gram matrices."""
        prepared = []
        for term in self.terms:
            if self.check_finite:
                for name in term.layer_weights:
                    check_finite(feats[name], name, "target")
            if term.kind == "gram":
                normalize = term.options.get("normalize", "chw")
                prepared.append(gram_matrices(feats, layers=term.layer_weights, normalize=normalize))
            else:
                prepared.append({name: feats[name] for name in term.layer_weights})
        return prepared

    def _target_features(self, target: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        with torch.no_grad():
            return self._prepare(self.extractor(target))

    def set_target(self, target: torch.Tensor) -> None:
        """Cache a fixed target (e.g. a style image): later calls with ``target=None`` run one pass.

        The features (or Gram matrices for Gram terms) are computed once under ``torch.no_grad()``
        and kept outside the ``state_dict``; a target batch of 1 broadcasts over any pred batch.

        Args:
            target: images ``(B, 3, H, W)`` in the extractor's ``input_range``.
        """
        self._target = self._target_features(target)
        self._target_shape = tuple(target.shape)

    def clear_target(self) -> None:
        """Drop the cached target."""
        self._target = None

    @property
    def has_target(self) -> bool:
        """Whether :meth:`set_target` holds a cached target."""
        return self._target is not None

    # ---------------------------------------------------------------- forward

    def _term_value(
        self, term: Term, pred_feats: Mapping[str, torch.Tensor], target: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One term's value and its per-layer parts."""
        common = {"reduction": self.reduction, "check_finite": self.check_finite}
        options = {**term.options, **common}
        if term.kind == "perceptual":
            return perceptual_loss(pred_feats, target, term.layer_weights, return_terms=True, **options)
        if term.kind == "gram":
            return style_loss(pred_feats, None, term.layer_weights, target_grams=target, return_terms=True, **options)
        function = _TEXTURE_FUNCTIONS[term.kind][0]
        value, layer_terms = function(pred_feats, target, term.layer_weights, return_terms=True, **options)
        return value, layer_terms

    @overload
    def forward(
        self, pred: torch.Tensor, target: Optional[torch.Tensor] = ..., *, return_terms: Literal[False] = ...
    ) -> torch.Tensor: ...
    @overload
    def forward(
        self, pred: torch.Tensor, target: Optional[torch.Tensor] = ..., *, return_terms: Literal[True]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def forward(self, pred: torch.Tensor, target: Optional[torch.Tensor] = None, *, return_terms: bool = False) -> LossResult:
        """Compute the loss of ``pred`` against ``target`` (or the cached target).

        One extractor pass over ``pred`` and, unless a target is cached, one over ``target`` under
        ``torch.no_grad()``.

        Args:
            pred: images ``(B, 3, H, W)`` in ``input_range``; gradients flow back to them.
            target: images in ``input_range`` (a batch of 1 broadcasts), or ``None`` to use the
                target cached by :meth:`set_target`.
            return_terms: also return ``{"group/layer": weighted term}`` (e.g.
                ``"perceptual/conv5_4"``); the terms add up to the total.

        Returns:
            The loss (a scalar, or ``(B,)`` with ``reduction="none"``), or ``(loss, terms)``.

        Raises:
            ValueError: no target given and none cached; a target batch other than the pred batch
                or 1 (the message shows both shapes); bad images (see the extractor's ``forward``).
        """
        if target is None:
            if self._target is None:
                raise FeatxValueError("no target: pass target= or cache one with set_target(image) first")
            self._check_batches(pred, self._target_shape, "the target cached by set_target")
            prepared = [{k: v.to(pred.device) for k, v in part.items()} for part in self._target]
        else:
            if isinstance(target, torch.Tensor):
                self._check_batches(pred, tuple(target.shape), "target")
            prepared = self._target_features(target)
        pred_feats = self.extractor(pred)
        total: Optional[torch.Tensor] = None
        terms: dict[str, torch.Tensor] = {}
        for term, target_part in zip(self.terms, prepared, strict=True):
            value, layer_terms = self._term_value(term, pred_feats, target_part)
            for layer, layer_value in layer_terms.items():
                terms[f"{term.group}/{layer}"] = term.weight * layer_value
            value = term.weight * value
            total = value if total is None else total + value
        return (total, terms) if return_terms else total  # type: ignore[return-value]

    def extra_repr(self) -> str:
        parts = [
            f"{t.group}({t.kind}, weight={t.weight:g}, layers={t.layer_weights}"
            + "".join(f", {k}={v!r}" for k, v in t.options.items())
            + ")"
            for t in self.terms
        ]
        return ", ".join(parts) + f", reduction={self.reduction!r}"


def perceptual_term(
    layer_weights: Mapping[str, float],
    weight: float,
    criterion: str,
    normalize_channels: bool,
    eps: float,
) -> Term:
    check_choice("criterion", criterion, CRITERIA)
    options = {"criterion": criterion, "normalize_channels": bool(normalize_channels), "eps": eps}
    return Term("perceptual", "perceptual", check_layer_weights(layer_weights), weight, options)


def style_term(
    group: str, layer_weights: Mapping[str, float], weight: float, criterion: str, normalize: Optional[str], eps: float
) -> Term:
    check_choice("criterion", criterion, CRITERIA)
    check_choice("normalize", normalize, GRAM_NORMALIZATIONS)
    options = {"criterion": criterion, "normalize": normalize, "eps": eps}
    return Term(group, "gram", check_layer_weights(layer_weights), weight, options)


def style_weights_of(preset: Preset) -> dict[str, float]:
    """A preset's Gram layers, or its feature layers when it has none (BasicSR reuses them)."""
    return dict(preset.style_weights or preset.layer_weights)


def texture_term(layer_weights: Mapping[str, float], weight: float, kind: str, options: Any) -> Term:
    options = texture_options(kind, options)
    if kind == "gram":
        return style_term(
            "texture",
            layer_weights,
            weight,
            options.get("criterion", "mse"),
            options.get("normalize", "chw"),
            options.get("eps", 1e-3),
        )
    return Term("texture", kind, check_layer_weights(layer_weights), weight, options)


def explicit_or_preset(
    group: str, explicit: Optional[Mapping[str, float]], weight: float, from_preset: Optional[dict[str, float]]
) -> Optional[Mapping[str, float]]:
    """The layers of a term: the explicit ones (a zero term weight on them is an error), else the
    preset's, which a zero term weight leaves out (BasicSR's ``perceptual_weight=0``/``style_weight=0``)."""
    if explicit is not None:
        if weight == 0:
            raise FeatxValueError(f"{group}_weight=0 would drop the {group} term given by {group}=; remove one of them")
        return explicit
    return from_preset if weight != 0 else None
