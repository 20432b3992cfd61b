"""``DINOv2Features``: DINOv2 ViT-S/14 and ViT-B/14 (timm's modules) cut after the deepest tap, returning
patch-token maps, class tokens or token maps of any block by name."""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from torch import nn

from featx._checks import InputRange, check_choice, check_int
from featx.backbones.base import BackboneFeatures
from featx.backbones.dinov2.names import DINOV2_ARCHS, PATCH_SIZE, dinov2_tap_names, split_tap
from featx.backbones.dinov2.tokens import (
    POS_INTERPOLATIONS,
    REMAINDERS,
    fit_to_patches,
    interpolate_pos_embed,
    resize_longer_side,
)
from featx.backbones.taps import TapInfo, select_taps
from featx.errors import FeatxValueError
from featx.presets import PRESETS

if TYPE_CHECKING:
    from featx.weights import WeightsSpec
    from featx.weights.matching import KeyLayout

__all__ = ["DINOv2Features", "dinov2_layout", "dinov2_taps", "import_timm"]

_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")
_NEVER_BUILT = ("mask_token",)  # DINOv2's masked-token embedding: used in training only
_HEAD_PREFIXES = ("head.", "fc_norm.")  # a classifier that timm or a fine-tuned checkpoint may add


def import_timm() -> ModuleType:
    """timm, or an ImportError that names featx's ``dinov2`` extra."""
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            "DINOv2 backbones are built from timm's VisionTransformer modules, and timm is not installed: "
            "pip install 'featx[dinov2]' (or pip install 'timm>=1.0')"
        ) from error
    return timm


def dinov2_taps(arch: str) -> tuple[TapInfo, ...]:
    """Every tap of ``arch`` in depth order: name, index (position in this list), channels and stride.

    The stride of every tap is the patch size, 14: a map has one position per 14x14 patch.

    Example:
        >>> dinov2_taps("dinov2_vitb14")[-1]
        TapInfo(name='norm.tokens', index=38, channels=768, stride=14)
    """
    channels = DINOV2_ARCHS[check_choice("arch", arch, tuple(DINOV2_ARCHS))].embed_dim
    return tuple(TapInfo(name, index, channels, PATCH_SIZE) for index, name in enumerate(dinov2_tap_names(arch)))


def dinov2_layout(arch: str, blocks: int, *, norm: bool) -> KeyLayout:
    """How DINOv2 checkpoints map onto a model of ``blocks`` blocks (and the final ``norm`` if built).

    DINOv2's released files (``dinov2_vits14_pretrain.pth``: ``cls_token``, ``pos_embed``,
    ``mask_token``, ``patch_embed.proj.*``, ``blocks.{i}.*`` with ``ls1.gamma``/``ls2.gamma``, ``norm.*``)
    and timm's (the same keys without ``mask_token``, as timm's ``checkpoint_filter_fn`` drops it) load
    as they are; ``mask_token`` and a classifier (``head.*``, ``fc_norm.*``) are never built.

    Example:
        >>> layout = dinov2_layout("dinov2_vits14", 6, norm=False)
        >>> layout.canonical("mask_token"), layout.built("blocks.5.ls1.gamma"), layout.built("blocks.6.ls1.gamma")
        (None, True, False)
    """
    from featx.weights.matching import KeyLayout

    def canonical(key: str) -> Optional[str]:
        return None if key in _NEVER_BUILT or key.startswith(_HEAD_PREFIXES) else key

    def built(key: str) -> bool:
        match = _BLOCK_KEY.match(key)
        if match:
            return int(match[1]) < blocks
        return norm or not key.startswith("norm.")

    scope = f"{arch} up to blocks.{blocks - 1}" + (" and norm" if norm else "")
    hint = (
        "Keys are DINOv2's (cls_token, pos_embed, mask_token, patch_embed.proj.*, blocks.{i}.*, norm.*: "
        f"dinov2_*_pretrain.pth) or timm's {DINOV2_ARCHS[arch].timm_name} (the same without mask_token); "
        "mask_token, head.*, fc_norm.* and the layers featx does not build are ignored. "
        "Checkpoints with register tokens (dinov2_*_reg4) are other architectures."
    )
    return KeyLayout(canonical, built, scope, hint, cache_tag="dinov2")


def _preset_options(arch: str, taps: object) -> dict[str, Any]:
    """The extractor options of the DINOv2 preset ``taps`` names (none for anything else)."""
    if isinstance(taps, str) and taps in PRESETS and PRESETS[taps].arch in DINOV2_ARCHS:
        return dict(PRESETS[taps].extractor_options)
    return {}


class DINOv2Features(BackboneFeatures):
    """DINOv2 ViT-S/14 or ViT-B/14 cut after the deepest tap, returning its tokens by name.

    The modules are timm's (``vit_small_patch14_dinov2``, ``vit_base_patch14_dinov2``: the patch
    embedding, the transformer blocks and the final LayerNorm), created with only the blocks up to the
    deepest tap; featx adds the tap names, the position-embedding and input-size rules of DINOv2's own
    code, strict offline loading of DINOv2's and timm's checkpoints, ``input_range`` and the frozen /
    learnable rules every featx backbone follows. Needs timm (``pip install 'featx[dinov2]'``).

    Taps: ``blocks.{i}`` (0 to 11), the output of block ``i``, and ``norm``, the final LayerNorm after
    the last block (DINOv2's ``x_norm_patchtokens``); block outputs are the raw residual stream, as
    timm's ``forward_intermediates`` and transformers' ``hidden_states`` return them (DINOv2's
    ``get_intermediate_layers`` applies ``norm`` to them by default). The name alone returns the patch
    tokens as a ``(B, C, h, w)`` map; ``.cls`` the class token ``(B, C)``; ``.tokens`` every token,
    class token first, as a ``(B, C, 1, 1 + h * w)`` token map that featx's distances take like any
    map. Inputs are ImageNet-normalised, as DINOv2's transforms do.

    Args:
        arch: ``"dinov2_vits14"`` or ``"dinov2_vitb14"``.
        taps: a tap (``"blocks.11"``), ``"blocks.5,norm.cls"``, a list, or a DINOv2 preset name
            (``"dino_perceptual_v2"``), which brings the preset's extractor options too.
        weights: ``"DEFAULT"`` (DINOv2's released checkpoint, found offline), a path (``.pth``,
            ``.safetensors``) or a state dict in DINOv2's or timm's key layout, or ``None`` (random,
            timm's initialisation; warns). Never downloads.
        input_range: ``(lo, hi)`` of the input values, or ``"normalized"``.
        gray: ``"repeat"`` accepts 1-channel inputs by repeating them to RGB; ``"error"`` refuses them.
        requires_grad: make the backbone learnable.
        verify_weights: ``"warn"``/``"error"``/``None``, as for ``VGGFeatures``.
        pos_interpolation: how the 37x37 position embeddings follow other patch grids
            (:data:`~featx.backbones.dinov2.tokens.POS_INTERPOLATIONS`): ``"dinov2"`` (DINOv2's own
            code), ``"timm"`` or ``"transformers"``. Default: the preset's, else ``"dinov2"``.
        remainder: what happens to sizes that are not multiples of 14
            (:data:`~featx.backbones.dinov2.tokens.REMAINDERS`): ``"pad"`` (DINOv2's ``CenterPadding``),
            ``"drop"`` (transformers) or ``"error"`` (DINOv2's and timm's backbones). Default: the preset's, else ``"pad"``.
        max_side: downscale (bicubic) inputs whose longer side exceeds it, as dino-perceptual does
            (:func:`~featx.backbones.dinov2.tokens.resize_longer_side`). Default: the preset's, else
            no resizing.

    Raises:
        ImportError: timm is not installed.
        ValueError: unknown arch, tap, option or input range.
        featx.errors.WeightsNotFoundError, featx.errors.WeightsLoadError: as for ``VGGFeatures``.

    Shape:
        - Input: ``(B, 3, H, W)`` floating point, at least 14x14.
        - Output, in depth order, with ``h, w`` the patch grid (``ceil(H / 14)`` with ``"pad"``,
          ``floor(H / 14)`` with ``"drop"``): ``(B, C, h, w)`` maps, ``(B, C)`` class tokens,
          ``(B, C, 1, 1 + h * w)`` token maps; ``C`` is 384 (ViT-S) or 768 (ViT-B).

    Example:
        >>> import warnings, torch
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     dino = DINOv2Features("dinov2_vits14", "blocks.0,blocks.1.cls,blocks.1.tokens", weights=None)
        >>> {name: tuple(f.shape) for name, f in dino(torch.rand(2, 3, 28, 40)).items()}
        {'blocks.0': (2, 384, 2, 3), 'blocks.1.cls': (2, 384), 'blocks.1.tokens': (2, 384, 1, 7)}
        >>> len(dino.blocks)  # blocks after blocks.1 are never built
        2
    """

    def __init__(
        self,
        arch: str = "dinov2_vits14",
        taps: Union[str, Iterable[str]] = "norm",
        *,
        weights: WeightsSpec = "DEFAULT",
        input_range: InputRange = (0.0, 1.0),
        gray: str = "error",
        requires_grad: bool = False,
        verify_weights: Optional[str] = None,
        pos_interpolation: Optional[str] = None,
        remainder: Optional[str] = None,
        max_side: Optional[int] = None,
    ) -> None:
        spec = DINOV2_ARCHS[check_choice("arch", arch, tuple(DINOV2_ARCHS))]
        given = _preset_options(arch, taps)  # a preset's options, where the caller left them to it
        pos_interpolation = given.get("pos_interpolation", "dinov2") if pos_interpolation is None else pos_interpolation
        remainder = given.get("remainder", "pad") if remainder is None else remainder
        max_side = given.get("max_side") if max_side is None else max_side
        check_choice("pos_interpolation", pos_interpolation, POS_INTERPOLATIONS)
        check_choice("remainder", remainder, REMAINDERS)
        check_int("max_side", max_side, minimum=PATCH_SIZE, allow_none=True)
        groups = {name: preset.taps for name, preset in PRESETS.items() if preset.arch in DINOV2_ARCHS}
        feature_info = select_taps(dinov2_taps(arch), taps, arch=arch, groups=groups)
        super().__init__(arch, feature_info, min_input_size=PATCH_SIZE, input_range=input_range, gray=gray)
        self.pos_interpolation: str = pos_interpolation
        self.remainder: str = remainder
        self.max_side: Optional[int] = max_side
        self._taps_of: dict[str, list[tuple[str, str]]] = {}
        for info in self.feature_info:
            layer, kind = split_tap(info.name)
            self._taps_of.setdefault(layer, []).append((info.name, kind))
        with_norm = "norm" in self._taps_of
        depth = spec.depth if with_norm else max(int(layer.split(".")[1]) for layer in self._taps_of) + 1
        vit = self._build_vit(spec.timm_name, depth, img_size=spec.grid * PATCH_SIZE, initialise=weights is None)
        self.patch_embed: nn.Module = vit.patch_embed
        self.cls_token: nn.Parameter = vit.cls_token
        self.pos_embed: nn.Parameter = vit.pos_embed
        self.blocks = nn.Sequential(*vit.blocks)
        self.norm: Optional[nn.Module] = vit.norm if with_norm else None
        self.load_and_freeze(
            weights,
            expected=self.loadable_shapes(),
            requires_grad=requires_grad,
            layout=dinov2_layout(arch, depth, norm=with_norm),
            verify=verify_weights,
        )

    @staticmethod
    def _build_vit(timm_name: str, depth: int, *, img_size: int, initialise: bool) -> Any:
        """timm's model with ``depth`` blocks and no classifier; uninitialised memory unless ``initialise``
        (weights will be copied in: the modules are created on the meta device, then allocated)."""
        timm = import_timm()
        options = {"pretrained": False, "num_classes": 0, "depth": depth, "img_size": img_size, "dynamic_img_size": True}
        if initialise:
            return timm.create_model(timm_name, **options)
        with torch.device("meta"):  # shapes only: nothing is allocated or initialised
            vit = timm.create_model(timm_name, weight_init="skip", **options)
        return vit.to_empty(device="cpu")

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The truncated transformer on normalised input: the taps, shallowest first."""
        if self.max_side is not None:
            x = resize_longer_side(x, self.max_side)
            if min(x.shape[-2:]) < PATCH_SIZE:
                raise FeatxValueError(
                    f"after resizing to max_side={self.max_side} the input is {x.shape[-2]}x{x.shape[-1]}, "
                    f"smaller than one {PATCH_SIZE}x{PATCH_SIZE} patch; pass a less elongated image"
                )
        x = fit_to_patches(x, PATCH_SIZE, self.remainder)
        batch, _, height, width = x.shape
        grid = (height // PATCH_SIZE, width // PATCH_SIZE)
        patches = self.patch_embed(x)  # (B, h, w, C): timm's dynamic-size layout
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), patches.flatten(1, 2)), dim=1)
        tokens = tokens + interpolate_pos_embed(self.pos_embed, grid, mode=self.pos_interpolation)
        out: dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            self._emit(out, f"blocks.{index}", tokens, grid)
        if self.norm is not None:
            self._emit(out, "norm", self.norm(tokens), grid)
        return out

    def _emit(self, out: dict[str, torch.Tensor], layer: str, tokens: torch.Tensor, grid: tuple[int, int]) -> None:
        """Add the taps of ``layer`` to ``out`` (views of ``tokens``, no copies)."""
        for name, kind in self._taps_of.get(layer, ()):
            if kind == "map":
                out[name] = tokens[:, 1:].view(tokens.shape[0], *grid, -1).permute(0, 3, 1, 2)
            elif kind == "cls":
                out[name] = tokens[:, 0]
            else:
                out[name] = tokens.transpose(1, 2).unsqueeze(2)

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, taps={self.taps}, pos_interpolation={self.pos_interpolation!r}, "
            f"remainder={self.remainder!r}, max_side={self.max_side}, weights={self.weights_id!r}"
        )
