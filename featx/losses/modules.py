"""Loss modules on images: they own (or share) a backbone of any family (``arch=`` or ``extractor=``) and call
:mod:`featx.losses.functional` / :mod:`featx.losses.texture` on its feature dicts.

Every module here takes images (``forward(pred, target, *, return_terms=False)``); the modules on
feature dicts are the ``...OnFeatures`` classes of :mod:`featx.losses.texture`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from featx._checks import InputRange
from featx.backbones.base import BackboneFeatures
from featx.errors import FeatxValueError
from featx.losses._image_loss import (
    TEXTURE_KINDS,
    Backbone,
    ImageLoss,
    check_term_weight,
    explicit_or_preset,
    optional_preset,
    perceptual_term,
    style_term,
    style_weights_of,
    texture_term,
)

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = [
    "TEXTURE_KINDS",
    "FeatureLoss",
    "PerceptualLoss",
    "StyleLoss",
    "TextureLoss",
]


class PerceptualLoss(ImageLoss):
    r"""Perceptual (feature) loss on images: :math:`\sum_l w_l D(\phi_l(\hat y), \phi_l(y))`.

    Builds a frozen backbone of ``arch`` (any architecture of
    :func:`featx.backbones.catalog.architectures`: VGG, AlexNet, SqueezeNet, DINOv2, ...) with
    exactly the taps in ``layer_weights`` (or shares ``extractor``) and calls
    :func:`featx.losses.functional.perceptual_loss`. With neither ``layer_weights`` nor ``preset``,
    the ``esrgan`` preset is used (conv5_4, L1). Layer names are the family's tap names
    (``conv5_4`` for VGG, ``relu2`` for AlexNet, ``fire5`` for SqueezeNet, ``blocks.11`` or
    ``blocks.11.tokens`` for DINOv2; ``featx layers ARCH`` lists them).

    Args:
        layer_weights: ``{layer: weight}``, e.g. ``{"conv5_4": 1.0}``.
        preset: a :data:`featx.presets.PRESETS` name (``esrgan``, ``real_esrgan``, ``srgan``, ``ttsr``,
            ``gatys``, ``lpips_vgg``, ``lpips_squeeze``, ``dino_perceptual_v2``): its arch, pooling,
            extractor options, layer weights, criterion and channel normalisation; explicit
            ``layer_weights``/``criterion``/``normalize_channels`` win.
        arch: any catalog architecture (default ``vgg19``).
        weights: backbone weights (see the family's extractor, e.g. :class:`VGGFeatures`);
            ``None`` for random (warns).
        criterion: one of :data:`featx.losses.functional.CRITERIA` (default ``l1``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        input_range: value range of the images (default ``(0, 1)``).
        normalize_channels: unit-normalise feature vectors over channels (LPIPS).
        pooling: pooling variant of a built backbone, for families that take one (VGG; default
            ``max``); given to another family it raises ``ValueError``.
        gray: ``"repeat"`` to accept 1-channel images (families that take it; the family's default
            otherwise).
        extractor: any featx backbone (a :class:`~featx.backbones.base.BackboneFeatures`) to share
            (then ``arch``/``input_range``/``pooling``/``gray`` must be omitted or match,
            ``weights`` omitted); it must have every needed tap.
        eps: Charbonnier constant.
        check_finite: raise on NaN/Inf features, naming the layer.

    Raises:
        ValueError: unknown preset/criterion/reduction/layer/arch (with the valid choices),
            conflicting arguments, a family option (``pooling``) that ``arch``'s family does not
            take, or a shared extractor that lacks a needed tap (named).
        TypeError: ``extractor`` is not a featx backbone.

    Example:
        >>> import warnings
        >>> import torch
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights: for the example only
        ...     loss = PerceptualLoss({"relu2_1": 1.0}, arch="vgg11", weights=None)
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> value = loss(x, torch.rand(2, 3, 16, 16))
        >>> value.backward()
        >>> loss.extractor.taps, x.grad.shape, list(loss.state_dict())
        (('relu2_1',), torch.Size([2, 3, 16, 16]), [])
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     alex = PerceptualLoss({"relu2": 1.0}, arch="alexnet", weights=None)  # any catalog arch
        >>> alex.extractor.arch, alex(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)).shape
        ('alexnet', torch.Size([]))
    """

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]] = None,
        *,
        preset: Optional[str] = None,
        arch: Optional[str] = None,
        weights: WeightsSpec = "DEFAULT",
        criterion: Optional[str] = None,
        reduction: str = "mean",
        input_range: Optional[InputRange] = None,
        normalize_channels: Optional[bool] = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[BackboneFeatures] = None,
        eps: float = 1e-3,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        spec = optional_preset(preset if preset is not None or layer_weights is not None else "esrgan")
        if layer_weights is None:
            if spec.criterion is None:  # type: ignore[union-attr]
                raise FeatxValueError(f"preset {preset!r} only names extractor taps and defines no loss; pass layer_weights")
            layer_weights = dict(spec.layer_weights)  # type: ignore[union-attr]
        criterion = criterion or (spec.criterion if spec is not None else None) or "l1"
        if normalize_channels is None:
            normalize_channels = spec.normalize_channels if spec is not None else False
        term = perceptual_term(layer_weights, 1.0, criterion, normalize_channels, eps)
        backbone = Backbone(arch, weights, input_range, pooling, gray, extractor)
        self._setup([term], spec, reduction, check_finite, backbone)


class StyleLoss(ImageLoss):
    r"""Gram-matrix style loss on images: :math:`\sum_l w_l D(G(\phi_l(\hat y)), G(\phi_l(y)))`.

    Calls :func:`featx.losses.functional.style_loss`. Use :meth:`set_target` with a style image to
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
        >>> import torch
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
        weights: WeightsSpec = "DEFAULT",
        criterion: str = "mse",
        normalize: Optional[str] = "chw",
        reduction: str = "mean",
        input_range: Optional[InputRange] = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[BackboneFeatures] = None,
        eps: float = 1e-3,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        spec = optional_preset(preset if preset is not None or layer_weights is not None else "gatys")
        if layer_weights is None:
            layer_weights = style_weights_of(spec)  # type: ignore[arg-type]
        term = style_term("style", layer_weights, 1.0, criterion, normalize, eps)
        backbone = Backbone(arch, weights, input_range, pooling, gray, extractor)
        self._setup([term], spec, reduction, check_finite, backbone)


class TextureLoss(ImageLoss):
    """Texture loss on images: sliced Wasserstein, moments, contextual or Gram statistics.

    ``kind`` picks :func:`featx.losses.texture.sliced_wasserstein_loss`, :func:`featx.losses.texture.moment_loss`,
    :func:`featx.losses.texture.contextual_loss` or :func:`featx.losses.functional.style_loss` (``"gram"``);
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
        >>> import torch
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
        weights: WeightsSpec = "DEFAULT",
        reduction: str = "mean",
        input_range: Optional[InputRange] = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[BackboneFeatures] = None,
        check_finite: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        spec = optional_preset(preset if preset is not None or layer_weights is not None else "gatys")
        if layer_weights is None:
            layer_weights = style_weights_of(spec)  # type: ignore[arg-type]
        term = texture_term(layer_weights, 1.0, kind, options)
        backbone = Backbone(arch, weights, input_range, pooling, gray, extractor)
        self._setup([term], spec, reduction, check_finite, backbone)


class FeatureLoss(ImageLoss):
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
        >>> import torch
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
        weights: WeightsSpec = "DEFAULT",
        reduction: str = "mean",
        input_range: Optional[InputRange] = None,
        pooling: Optional[str] = None,
        gray: Optional[str] = None,
        extractor: Optional[BackboneFeatures] = None,
        eps: float = 1e-3,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        spec = optional_preset(preset)
        perceptual_weight = check_term_weight("perceptual_weight", perceptual_weight)
        if style_weight is not None:
            style_weight = check_term_weight("style_weight", style_weight)
        if texture_weight is not None:
            texture_weight = check_term_weight("texture_weight", texture_weight)
        perceptual = explicit_or_preset(
            "perceptual", perceptual, perceptual_weight,
            dict(spec.layer_weights) if spec is not None and spec.criterion is not None else None,
        )  # fmt: skip
        preset_style = None
        if spec is not None and (spec.style_weights or (style_weight or 0) > 0):
            preset_style = style_weights_of(spec)  # the preset's Gram layers, else BasicSR reuses its layers
        style = explicit_or_preset("style", style, 1.0 if style_weight is None else style_weight, preset_style)
        if texture is not None and texture_weight == 0:
            raise FeatxValueError("texture_weight=0 would drop the texture term given by texture=; remove one of them")

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
            raise FeatxValueError(
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
            terms.append(perceptual_term(perceptual, perceptual_weight, chosen, normalize_channels, eps))
        if style is not None:
            weight = 1.0 if style_weight is None else style_weight
            chosen = style_criterion or preset_criterion or "mse"
            terms.append(style_term("style", style, weight, chosen, gram_normalize, eps))
        if texture is not None:
            weight = 1.0 if texture_weight is None else texture_weight
            terms.append(texture_term(texture, weight, texture_kind or "sliced_wasserstein", texture_options))
        backbone = Backbone(arch, weights, input_range, pooling, gray, extractor)
        self._setup(terms, spec, reduction, check_finite, backbone)
