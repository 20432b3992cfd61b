"""The DINOv2 architectures featx builds and their tap names, as plain data (nothing here imports torch).

Tap names follow the module names users print from DINOv2's and timm's models: ``blocks.{i}`` is the
output of block ``i``, ``norm`` the final LayerNorm. A suffix picks what is returned of a layer's
tokens: none for the patch tokens as a map, ``.cls`` for the class token, ``.tokens`` for all tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from featx._checks import check_choice

__all__ = ["DINOV2_ARCHS", "PATCH_SIZE", "TAP_KINDS", "ViTSpec", "dinov2_tap_names", "split_tap"]

PATCH_SIZE = 14
"""Side of the square patches both architectures cut images into (the ``/14`` of ViT-S/14 and ViT-B/14)."""

TAP_KINDS: tuple[str, ...] = ("map", "cls", "tokens")
"""What a tap returns of a layer's tokens: the patch tokens as a ``(B, C, h, w)`` map, the class token
``(B, C)``, or every token, class token first, as a ``(B, C, 1, 1 + h * w)`` token map."""


@dataclass(frozen=True)
class ViTSpec:
    """One DINOv2 vision transformer, as DINOv2's hub code and timm define it.

    Attributes:
        timm_name: timm's model name (``timm.create_model``).
        embed_dim: channels of every token.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        grid: side of the patch grid the released position embeddings cover (518 / 14 = 37).
    """

    timm_name: str
    embed_dim: int
    depth: int
    num_heads: int
    grid: int = 37


# facebookresearch/dinov2, dinov2/models/vision_transformer.py vit_small / vit_base (patch 14,
# img_size 518 in hub/backbones.py); timm models/vision_transformer.py vit_{small,base}_patch14_dinov2.
DINOV2_ARCHS: dict[str, ViTSpec] = {
    "dinov2_vits14": ViTSpec("vit_small_patch14_dinov2", embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": ViTSpec("vit_base_patch14_dinov2", embed_dim=768, depth=12, num_heads=12),
}
"""Every DINOv2 architecture featx builds, by featx name (the names of DINOv2's ``torch.hub`` entries)."""

_SUFFIX = {"map": "", "cls": ".cls", "tokens": ".tokens"}


def dinov2_tap_names(arch: str) -> tuple[str, ...]:
    """Every tap of ``arch`` in depth order: ``blocks.0``, ``blocks.0.cls``, ``blocks.0.tokens``, ...,
    ``norm``, ``norm.cls``, ``norm.tokens``.

    Raises:
        ValueError: unknown architecture (with the closest name).

    Example:
        >>> names = dinov2_tap_names("dinov2_vits14")
        >>> names[:4], names[-3:], len(names)
        (('blocks.0', 'blocks.0.cls', 'blocks.0.tokens', 'blocks.1'), ('norm', 'norm.cls', 'norm.tokens'), 39)
    """
    spec = DINOV2_ARCHS[check_choice("arch", arch, tuple(DINOV2_ARCHS))]
    layers = [f"blocks.{block}" for block in range(spec.depth)] + ["norm"]
    return tuple(layer + _SUFFIX[kind] for layer in layers for kind in TAP_KINDS)


def split_tap(name: str) -> tuple[str, str]:
    """``(layer, kind)`` of a tap name: ``"blocks.3.cls"`` -> ``("blocks.3", "cls")``.

    Example:
        >>> split_tap("blocks.3"), split_tap("norm.tokens")
        (('blocks.3', 'map'), ('norm', 'tokens'))
    """
    for kind in ("cls", "tokens"):
        if name.endswith(_SUFFIX[kind]):
            return name[: -len(_SUFFIX[kind])], kind
    return name, "map"
