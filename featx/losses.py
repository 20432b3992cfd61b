"""Loss modules on images: they own (or share) a :class:`~featx.extractor.VGGFeatures` and call
:mod:`featx.functional` / :mod:`featx.texture` on its feature dicts.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

from featx.extractor import VGGFeatures
from featx.functional import (
    CRITERIA,
    GRAM_NORMALIZATIONS,
    REDUCTIONS,
    TPL_CRITERIA,
    LossResult,
    _check_finite,
    _check_layer_weights,
    _check_name,
    gram_matrices,
    perceptual_loss,
    style_loss,
    transferal_perceptual_loss,
)
from featx.layers import PRESETS, Preset, closest
from featx.texture import (
    ContextualLoss,
    MomentLoss,
    SlicedWassersteinLoss,
    contextual_loss,
    moment_loss,
    sliced_wasserstein_loss,
)

__all__ = [
    "TEXTURE_KINDS",
    "FeatureLoss",
    "PerceptualLoss",
    "StyleLoss",
    "TextureLoss",
    "TransferalPerceptualLoss",
]

TEXTURE_KINDS: tuple[str, ...] = ("sliced_wasserstein", "moments", "contextual", "gram")
"""Texture statistics :class:`TextureLoss` can match."""

_TEXTURE_FUNCTIONS = {
    "sliced_wasserstein": (sliced_wasserstein_loss, SlicedWassersteinLoss),
    "moments": (moment_loss, MomentLoss),
    "contextual": (contextual_loss, ContextualLoss),
}
_GRAM_OPTIONS = ("criterion", "normalize", "eps")
_COMMON = ("reduction", "check_finite", "return_terms")


@dataclass(frozen=True)
class _Term:
    """One loss term: its key prefix, what it computes, on which layers, with which weight."""

    group: str  # "perceptual", "style" or "texture": the prefix of the return_terms keys
    kind: str  # "perceptual", "gram" or a texture kind
    layer_weights: dict[str, float]
    weight: float
    options: dict[str, Any] = field(default_factory=dict)


def _get_preset(preset: Optional[str]) -> Optional[Preset]:
    if preset is None:
        return None
    if not isinstance(preset, str) or preset not in PRESETS:
        hint = closest(preset, PRESETS) if isinstance(preset, str) else ""
        raise ValueError(f"unknown preset {preset!r}.{hint} Valid presets: {', '.join(PRESETS)}")
    return PRESETS[preset]


def _check_term_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _texture_options(kind: str, options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Validate the keyword options of a texture kind against its function's signature."""
    _check_name("texture kind", kind, TEXTURE_KINDS)
    options = dict(options or {})
    if kind == "gram":
        valid = _GRAM_OPTIONS
    else:
        parameters = inspect.signature(_TEXTURE_FUNCTIONS[kind][0]).parameters.values()
        valid = tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON)
    for name in options:
        if name not in valid:
            raise ValueError(
                f"unknown option {name!r} for texture kind {kind!r}.{closest(name, valid)} "
                f"Valid options: {', '.join(valid)}"
            )
    if kind == "gram":
        _check_name("criterion", options.get("criterion", "mse"), CRITERIA)
        _check_name("normalize", options.get("normalize", "chw"), GRAM_NORMALIZATIONS)
    else:
        generator = options.get("generator")
        if generator is not None:
            raise ValueError("a texture loss module takes seed=, not generator= (a generator cannot be copied)")
        _TEXTURE_FUNCTIONS[kind][1]({"_": 1.0}, **options)  # the thin module validates the values
    return options


class _ImageLoss(nn.Module):
    """Shared machinery: one extractor pass per image, the terms on its features, target caching."""

    def _setup(
        self,
        terms: Sequence[_Term],
        *,
        preset: Optional[Preset],
        reduction: str,
        check_finite: bool,
        arch: Optional[str],
        weights: Any,
        input_range: Any,
        pooling: Optional[str],
        gray: Optional[str],
        extractor: Optional[VGGFeatures],
    ) -> None:
        _check_name("reduction", reduction, REDUCTIONS)
        if not terms:
            raise ValueError("the loss has no terms: give layer weights for at least one term, or a preset")
        self.terms: tuple[_Term, ...] = tuple(terms)
        self.reduction = reduction
        self.check_finite = bool(check_finite)
        needed: list[str] = []
        for term in self.terms:
            needed += [name for name in term.layer_weights if name not in needed]
        if preset is not None:
            if arch is not None and arch != preset.arch:
                raise ValueError(f"arch={arch!r} conflicts with the preset's arch {preset.arch!r}")
            if pooling is not None and pooling != preset.pooling:
                raise ValueError(f"pooling={pooling!r} conflicts with the preset's pooling {preset.pooling!r}")
            arch, pooling = preset.arch, preset.pooling
        if extractor is None:
            self.extractor = VGGFeatures(
                arch or "vgg19",
                needed,
                weights=weights,
                input_range=(0.0, 1.0) if input_range is None else input_range,
                pooling=pooling or "max",
                gray=gray or "error",
            )
        else:
            self.extractor = self._check_extractor(extractor, needed, arch, weights, input_range, pooling, gray)
        self._target: Optional[list[dict[str, torch.Tensor]]] = None

    @staticmethod
    def _check_extractor(
        extractor: VGGFeatures,
        needed: list[str],
        arch: Optional[str],
        weights: Any,
        input_range: Any,
        pooling: Optional[str],
        gray: Optional[str],
    ) -> VGGFeatures:
        if not isinstance(extractor, VGGFeatures):
            raise TypeError(f"extractor must be a featx.VGGFeatures, got {type(extractor).__name__}")
        if not (isinstance(weights, str) and weights == "DEFAULT"):
            raise ValueError(
                f"weights={weights!r} cannot be combined with extractor=: the loss uses the extractor's "
                f"weights ({extractor.weights_id!r}); drop weights="
            )
        given = {"arch": arch, "pooling": pooling, "gray": gray}
        if input_range is not None:
            given["input_range"] = input_range if isinstance(input_range, str) else tuple(map(float, input_range))
        for name, value in given.items():
            if value is not None and value != getattr(extractor, name):
                raise ValueError(
                    f"{name}={value!r} does not match the shared extractor's {name} {getattr(extractor, name)!r}; "
                    f"drop {name}= or build the extractor with it"
                )
        missing = [name for name in needed if name not in extractor.taps]
        if missing:
            raise ValueError(
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
                    _check_finite(feats[name], name, "target")
            if term.kind == "gram":
                normalize = term.options.get("normalize", "chw")
                prepared.append(gram_matrices(feats, term.layer_weights, normalize))
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

    def clear_target(self) -> None:
        """Drop the cached target."""
        self._target = None

    @property
    def has_target(self) -> bool:
        """Whether :meth:`set_target` holds a cached target."""
        return self._target is not None

    # ---------------------------------------------------------------- forward

    def _term_value(self, term: _Term, pred_feats: Mapping[str, torch.Tensor], target: dict) -> LossResult:
        common = {"reduction": self.reduction, "check_finite": self.check_finite, "return_terms": True}
        if term.kind == "perceptual":
            return perceptual_loss(pred_feats, target, term.layer_weights, **term.options, **common)
        if term.kind == "gram":
            return style_loss(pred_feats, None, term.layer_weights, target_grams=target, **term.options, **common)
        function = _TEXTURE_FUNCTIONS[term.kind][0]
        return function(pred_feats, target, term.layer_weights, **term.options, **common)

    def forward(
        self, pred: torch.Tensor, target: Optional[torch.Tensor] = None, *, return_terms: bool = False
    ) -> Union[torch.Tensor, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
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
            ValueError: no target given and none cached; bad images (see :class:`VGGFeatures`).
        """
        if target is None:
            if self._target is None:
                raise ValueError("no target: pass target= or cache one with set_target(image) first")
            prepared = [{k: v.to(pred.device) for k, v in part.items()} for part in self._target]
        else:
            prepared = self._target_features(target)
        pred_feats = self.extractor(pred)
        total: Optional[torch.Tensor] = None
        terms: dict[str, torch.Tensor] = {}
        for term, target_part in zip(self.terms, prepared):
            value, layer_terms = self._term_value(term, pred_feats, target_part)  # type: ignore[misc]
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


def _perceptual_term(
    layer_weights: Mapping[str, float],
    weight: float,
    criterion: str,
    normalize_channels: bool,
    eps: float,
) -> _Term:
    _check_name("criterion", criterion, CRITERIA)
    options = {"criterion": criterion, "normalize_channels": bool(normalize_channels), "eps": eps}
    return _Term("perceptual", "perceptual", _check_layer_weights(layer_weights), weight, options)


def _style_term(
    group: str, layer_weights: Mapping[str, float], weight: float, criterion: str, normalize: Optional[str], eps: float
) -> _Term:
    _check_name("criterion", criterion, CRITERIA)
    _check_name("normalize", normalize, GRAM_NORMALIZATIONS)
    options = {"criterion": criterion, "normalize": normalize, "eps": eps}
    return _Term(group, "gram", _check_layer_weights(layer_weights), weight, options)


def _style_weights_of(preset: Preset) -> dict[str, float]:
    """A preset's Gram layers, or its feature layers when it has none (BasicSR reuses them)."""
    return dict(preset.style_weights or preset.layer_weights)


class PerceptualLoss(_ImageLoss):
    r"""Perceptual (feature) loss on images: :math:`\sum_l w_l D(\phi_l(\hat y), \phi_l(y))`.

    Builds a frozen :class:`VGGFeatures` with exactly the taps in ``layer_weights`` (or shares
    ``extractor``) and calls :func:`featx.functional.perceptual_loss`. With neither
    ``layer_weights`` nor ``preset``, the ``esrgan`` preset is used (conv5_4, L1).

    Args:
        layer_weights: ``{layer: weight}``, e.g. ``{"conv5_4": 1.0}``.
        preset: a :data:`featx.layers.PRESETS` name (``esrgan``, ``real_esrgan``, ``srgan``, ``ttsr``,
            ``gatys``, ``lpips_vgg``): its arch, pooling, layer weights, criterion and channel
            normalisation; explicit ``layer_weights``/``criterion``/``normalize_channels`` win.
        arch: VGG architecture (default ``vgg19``).
        weights: backbone weights (see :class:`VGGFeatures`); ``None`` for random (warns).
        criterion: one of :data:`featx.functional.CRITERIA` (default ``l1``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        input_range: value range of the images (default ``(0, 1)``).
        normalize_channels: unit-normalise feature vectors over channels (LPIPS).
        pooling: pooling variant of a built backbone (default ``max``).
        gray: ``"repeat"`` to accept 1-channel images.
        extractor: a :class:`VGGFeatures` to share (then ``arch``/``input_range``/``pooling``/``gray``
            must be omitted or match, ``weights`` omitted); it must have every needed tap.
        eps: Charbonnier constant.
        check_finite: raise on NaN/Inf features, naming the layer.

    Raises:
        ValueError: unknown preset/criterion/reduction/layer (with the valid choices), conflicting
            arguments, or a shared extractor that lacks a needed tap (named).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights: for the example only
        ...     loss = PerceptualLoss({"relu2_1": 1.0}, arch="vgg11", weights=None)
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> value = loss(x, torch.rand(2, 3, 16, 16))
        >>> value.backward()
        >>> loss.extractor.taps, x.grad.shape, list(loss.state_dict())
        (('relu2_1',), torch.Size([2, 3, 16, 16]), [])
    """

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]] = None,
        *,
        preset: Optional[str] = None,
        arch: Optional[str] = None,
        weights: Any = "DEFAULT",
        criterion: Optional[str] = None,
        reduction: str = "mean",
        input_range: Any = None,
        normalize_channels: Optional[bool] = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[VGGFeatures] = None,
        eps: float = 1e-3,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        spec = _get_preset(preset if preset is not None or layer_weights is not None else "esrgan")
        if layer_weights is None:
            if spec.criterion is None:  # type: ignore[union-attr]
                raise ValueError(f"preset {preset!r} only names extractor taps and defines no loss; pass layer_weights")
            layer_weights = dict(spec.layer_weights)  # type: ignore[union-attr]
        criterion = criterion or (spec.criterion if spec is not None else None) or "l1"
        if normalize_channels is None:
            normalize_channels = spec.normalize_channels if spec is not None else False
        term = _perceptual_term(layer_weights, 1.0, criterion, normalize_channels, eps)
        self._setup(
            [term],
            preset=spec,
            reduction=reduction,
            check_finite=check_finite,
            arch=arch,
            weights=weights,
            input_range=input_range,
            pooling=pooling,
            gray=gray,
            extractor=extractor,
        )


class StyleLoss(_ImageLoss):
    r"""Gram-matrix style loss on images: :math:`\sum_l w_l D(G(\phi_l(\hat y)), G(\phi_l(y)))`.

    Calls :func:`featx.functional.style_loss`. Use :meth:`set_target` with a style image to
    compute its Gram matrices once. With neither ``layer_weights`` nor ``preset`` the ``gatys``
    preset is used (relu1_1..relu5_1, 0.2 each, average pooling). A preset without Gram layers
    (e.g. ``esrgan``) lends its feature layers, as BasicSR's ``style_weight`` does.

    Args:
        layer_weights: ``{layer: weight}``.
        preset: a preset name (see :class:`PerceptualLoss`).
        criterion: distance between Gram matrices (default ``mse``).
        normalize: Gram normalisation ``"chw"`` (default), ``"hw"`` or ``None``.
        Other arguments: as for :class:`PerceptualLoss`.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     loss = StyleLoss({"relu1_1": 1.0, "relu2_1": 1.0}, arch="vgg11", weights=None)
        >>> loss.set_target(torch.rand(1, 3, 32, 32))  # style image, Grams cached
        >>> loss(torch.rand(4, 3, 16, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]] = None,
        *,
        preset: Optional[str] = None,
        arch: Optional[str] = None,
        weights: Any = "DEFAULT",
        criterion: str = "mse",
        normalize: Optional[str] = "chw",
        reduction: str = "mean",
        input_range: Any = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[VGGFeatures] = None,
        eps: float = 1e-3,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        spec = _get_preset(preset if preset is not None or layer_weights is not None else "gatys")
        if layer_weights is None:
            layer_weights = _style_weights_of(spec)  # type: ignore[arg-type]
        term = _style_term("style", layer_weights, 1.0, criterion, normalize, eps)
        self._setup(
            [term],
            preset=spec,
            reduction=reduction,
            check_finite=check_finite,
            arch=arch,
            weights=weights,
            input_range=input_range,
            pooling=pooling,
            gray=gray,
            extractor=extractor,
        )


class TextureLoss(_ImageLoss):
    """Texture loss on images: sliced Wasserstein, moments, contextual or Gram statistics.

    ``kind`` picks :func:`featx.texture.sliced_wasserstein_loss`, :func:`featx.texture.moment_loss`,
    :func:`featx.texture.contextual_loss` or :func:`featx.functional.style_loss` (``"gram"``);
    ``**options`` go to that function (e.g. ``num_projections=``, ``seed=``, ``band_width=``,
    ``max_positions=``; for ``"gram"``: ``criterion=``, ``normalize=``, ``eps=``). Layers default as
    for :class:`StyleLoss`. All kinds ignore positions, so pred and target sizes may differ.

    Args:
        layer_weights: ``{layer: weight}``.
        kind: one of :data:`TEXTURE_KINDS`.
        preset: a preset name (see :class:`StyleLoss`).
        **options: keyword options of the chosen function (validated; unknown ones are listed).
        Other arguments: as for :class:`PerceptualLoss`.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     loss = TextureLoss({"relu1_1": 1.0}, kind="sliced_wasserstein", arch="vgg11",
        ...                        weights=None, seed=0)
        >>> image = torch.rand(1, 3, 16, 16)
        >>> float(loss(image, image))
        0.0
    """

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]] = None,
        *,
        kind: str = "sliced_wasserstein",
        preset: Optional[str] = None,
        arch: Optional[str] = None,
        weights: Any = "DEFAULT",
        reduction: str = "mean",
        input_range: Any = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[VGGFeatures] = None,
        check_finite: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        spec = _get_preset(preset if preset is not None or layer_weights is not None else "gatys")
        if layer_weights is None:
            layer_weights = _style_weights_of(spec)  # type: ignore[arg-type]
        term = _texture_term(layer_weights, 1.0, kind, options)
        self._setup(
            [term],
            preset=spec,
            reduction=reduction,
            check_finite=check_finite,
            arch=arch,
            weights=weights,
            input_range=input_range,
            pooling=pooling,
            gray=gray,
            extractor=extractor,
        )


def _texture_term(layer_weights: Mapping[str, float], weight: float, kind: str, options: Any) -> _Term:
    options = _texture_options(kind, options)
    if kind == "gram":
        return _style_term(
            "texture",
            layer_weights,
            weight,
            options.get("criterion", "mse"),
            options.get("normalize", "chw"),
            options.get("eps", 1e-3),
        )
    return _Term("texture", kind, _check_layer_weights(layer_weights), weight, options)


class FeatureLoss(_ImageLoss):
    r"""Several terms from ONE extractor pass over the input and ONE over the target.

    .. math:: L = \lambda_p \sum_l w^p_l D(\phi_l(\hat y), \phi_l(y))
              + \lambda_s \sum_l w^s_l D_s(G_l(\hat y), G_l(y))
              + \lambda_t \sum_l w^t_l T(\phi_l(\hat y), \phi_l(y))

    Each term has its own layer weights and term weight (:math:`\lambda`); the backbone has the
    union of their taps. ``return_terms=True`` gives keys ``"perceptual/<layer>"``,
    ``"style/<layer>"`` and ``"texture/<layer>"``, each already multiplied by its term weight, so
    they add up to the total.

    With a ``preset``, the term weights follow BasicSR's ``PerceptualLoss``: the preset's layers
    and criterion make the perceptual term (``perceptual_weight=0`` leaves it out), and
    ``style_weight > 0`` adds a Gram term on the preset's layers (or its own style layers, e.g.
    ``gatys``) with the preset's criterion and ``gram_normalize="chw"``. So BasicSR's
    ``PerceptualLoss(layer_weights, perceptual_weight=a, style_weight=b, criterion=c)`` is
    ``FeatureLoss(perceptual=layer_weights, preset=..., perceptual_weight=a, style_weight=b)``
    with a preset of criterion ``c``, or ``FeatureLoss(perceptual=lw, style=lw,
    perceptual_weight=a, style_weight=b, criterion=c, style_criterion=c)`` without one (see
    ``docs/losses.md``).

    Nothing asked for is dropped or changed silently: an option that belongs to a term the loss
    does not have (``style_weight``, ``style_criterion``, ``gram_normalize`` without a style
    term; ``texture_kind``/``texture_options``/``texture_weight`` without texture layers;
    ``criterion``/``normalize_channels`` without a perceptual term) raises ``ValueError`` naming
    the argument, unless that term was switched off with its weight set to 0 (as BasicSR
    configurations do); so does a zero term weight on layers given explicitly.

    Args:
        perceptual: ``{layer: weight}`` of the feature term, or ``None``.
        style: ``{layer: weight}`` of the Gram term, or ``None``.
        texture: ``{layer: weight}`` of the texture term, or ``None``.
        preset: fills ``perceptual`` (and ``style`` for ``gatys``), criterion, arch, pooling.
        perceptual_weight: :math:`\lambda_p` (default 1).
        style_weight: :math:`\lambda_s`; default 1 when there are style layers, else no style term.
            With a preset and no style layers, ``style_weight > 0`` adds BasicSR's style term.
        texture_weight: :math:`\lambda_t` (default 1).
        criterion: feature-term distance (default the preset's, else ``l1``).
        style_criterion: Gram-term distance (default the preset's criterion, else ``mse``).
        gram_normalize: Gram normalisation of the style term (``"chw"``, ``"hw"`` or ``None``).
        normalize_channels: unit-normalise features of the perceptual term.
        texture_kind: ``sliced_wasserstein`` (default), ``moments``, ``contextual`` or ``gram``.
        texture_options: keyword options of the texture function.
        Other arguments: as for :class:`PerceptualLoss`.

    Raises:
        ValueError: unknown names, no term at all, or an argument that would be ignored (named).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     loss = FeatureLoss(perceptual={"relu2_1": 1.0}, style={"relu1_1": 1.0}, style_weight=10.0,
        ...                        texture={"relu1_1": 1.0}, texture_options={"seed": 0},
        ...                        arch="vgg11", weights=None)
        >>> total, terms = loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), return_terms=True)
        >>> sorted(terms), loss.extractor.taps
        (['perceptual/relu2_1', 'style/relu1_1', 'texture/relu1_1'], ('relu1_1', 'relu2_1'))
        >>> bool(torch.isclose(sum(terms.values()), total))
        True
    """

    def __init__(
        self,
        perceptual: Optional[Mapping[str, float]] = None,
        style: Optional[Mapping[str, float]] = None,
        texture: Optional[Mapping[str, float]] = None,
        *,
        preset: Optional[str] = None,
        perceptual_weight: float = 1.0,
        style_weight: Optional[float] = None,
        texture_weight: Optional[float] = None,
        criterion: Optional[str] = None,
        style_criterion: Optional[str] = None,
        gram_normalize: Optional[str] = "chw",
        normalize_channels: Optional[bool] = None,
        texture_kind: Optional[str] = None,
        texture_options: Optional[Mapping[str, Any]] = None,
        arch: Optional[str] = None,
        weights: Any = "DEFAULT",
        reduction: str = "mean",
        input_range: Any = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[VGGFeatures] = None,
        eps: float = 1e-3,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        spec = _get_preset(preset)
        perceptual_weight = _check_term_weight("perceptual_weight", perceptual_weight)
        if style_weight is not None:
            style_weight = _check_term_weight("style_weight", style_weight)
        if texture_weight is not None:
            texture_weight = _check_term_weight("texture_weight", texture_weight)
        perceptual = _explicit_or_preset(
            "perceptual", perceptual, perceptual_weight,
            dict(spec.layer_weights) if spec is not None and spec.criterion is not None else None,
        )  # fmt: skip
        preset_style = None
        if spec is not None and (spec.style_weights or (style_weight or 0) > 0):
            preset_style = _style_weights_of(spec)  # the preset's Gram layers, else BasicSR reuses its layers
        style = _explicit_or_preset("style", style, 1.0 if style_weight is None else style_weight, preset_style)
        if texture is not None and texture_weight == 0:
            raise ValueError("texture_weight=0 would drop the texture term given by texture=; remove one of them")

        unused = []  # options of a term the loss does not have, unless that term was switched off with weight 0
        if perceptual is None and perceptual_weight != 0:
            unused += [name for name, value in (("criterion", criterion), ("normalize_channels", normalize_channels))
                       if value is not None]  # fmt: skip
        if style is None and style_weight != 0:
            unused += [name for name, value in (("style_weight", style_weight), ("style_criterion", style_criterion))
                       if value is not None]  # fmt: skip
            if gram_normalize != "chw":
                unused.append("gram_normalize")
        if texture is None and texture_weight != 0:
            unused += [name for name, value in (("texture_kind", texture_kind), ("texture_weight", texture_weight),
                       ("texture_options", texture_options)) if value is not None]  # fmt: skip
        if unused:
            raise ValueError(
                f"{', '.join(unused)} given, but the loss has no term that uses "
                f"{'it' if len(unused) == 1 else 'them'} (perceptual: {perceptual is not None}, "
                f"style: {style is not None}, texture: {texture is not None}); pass the term's layers "
                "(perceptual=/style=/texture=) or a preset, set the term's weight to 0, or drop the argument"
            )

        preset_criterion = spec.criterion if spec is not None else None
        terms = []
        if perceptual is not None:
            if normalize_channels is None:
                normalize_channels = spec.normalize_channels if spec is not None else False
            chosen = criterion or preset_criterion or "l1"
            terms.append(_perceptual_term(perceptual, perceptual_weight, chosen, normalize_channels, eps))
        if style is not None:
            weight = 1.0 if style_weight is None else style_weight
            chosen = style_criterion or preset_criterion or "mse"
            terms.append(_style_term("style", style, weight, chosen, gram_normalize, eps))
        if texture is not None:
            weight = 1.0 if texture_weight is None else texture_weight
            terms.append(_texture_term(texture, weight, texture_kind or "sliced_wasserstein", texture_options))
        self._setup(
            terms,
            preset=spec,
            reduction=reduction,
            check_finite=check_finite,
            arch=arch,
            weights=weights,
            input_range=input_range,
            pooling=pooling,
            gray=gray,
            extractor=extractor,
        )


def _explicit_or_preset(
    group: str, explicit: Optional[Mapping[str, float]], weight: float, from_preset: Optional[dict[str, float]]
) -> Optional[Mapping[str, float]]:
    """The layers of a term: the explicit ones (a zero term weight on them is an error), else the
    preset's, which a zero term weight leaves out (BasicSR's ``perceptual_weight=0``/``style_weight=0``)."""
    if explicit is not None:
        if weight == 0:
            raise ValueError(f"{group}_weight=0 would drop the {group} term given by {group}=; remove one of them")
        return explicit
    return from_preset if weight != 0 else None


class TransferalPerceptualLoss(nn.Module):
    r"""TTSR's transferal perceptual loss as a module (see
    :func:`featx.functional.transferal_perceptual_loss` for the formula).

    Holds no network: TTSR applies a *frozen copy* of its learnable LTE to the SR output, synced
    every step with ``lte_copy.load_state_dict(lte.state_dict())``, and passes those levels here
    with the transferred textures ``T`` and the soft-attention map ``S``.

    Args:
        criterion: ``"l2"`` (TTSR ``--tpl_type`` default; MSE on the maps), ``"l1"``, or ``"gram"``
            (MSE between Gram matrices of the weighted maps).
        use_soft_attention: weight the maps by the upsampled ``sigmoid(S)`` (TTSR ``--tpl_use_S``,
            default False there too); when False, ``soft_attention`` passed to forward is ignored,
            as in TTSR.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = TransferalPerceptualLoss(use_soft_attention=True)
        >>> sr = [torch.ones(1, 2, 8, 8), torch.ones(1, 2, 4, 4), torch.ones(1, 2, 2, 2)]
        >>> t = [torch.zeros_like(level) for level in sr]
        >>> loss(sr, t, torch.zeros(1, 1, 2, 2))
        tensor(0.2500)
    """

    def __init__(self, criterion: str = "l2", *, use_soft_attention: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        _check_name("criterion", criterion, TPL_CRITERIA)
        _check_name("reduction", reduction, REDUCTIONS)
        self.criterion, self.use_soft_attention, self.reduction = criterion, bool(use_soft_attention), reduction

    def forward(
        self,
        sr_levels: Sequence[torch.Tensor],
        texture_levels: Sequence[torch.Tensor],
        soft_attention: Optional[torch.Tensor] = None,
        *,
        return_terms: bool = False,
    ) -> LossResult:
        """Loss between the SR levels ``(lv1, lv2, lv3)`` and the textures ``(T_lv1, T_lv2, T_lv3)``.

        Raises:
            ValueError: ``use_soft_attention=True`` but no ``soft_attention`` given, or bad shapes.
        """
        if self.use_soft_attention and soft_attention is None:
            raise ValueError("use_soft_attention=True needs the soft-attention map S (B, 1, h, w)")
        return transferal_perceptual_loss(
            sr_levels,
            texture_levels,
            soft_attention if self.use_soft_attention else None,
            criterion=self.criterion,
            reduction=self.reduction,
            return_terms=return_terms,
        )

    def extra_repr(self) -> str:
        return (
            f"criterion={self.criterion!r}, use_soft_attention={self.use_soft_attention}, "
            f"reduction={self.reduction!r}"
        )
