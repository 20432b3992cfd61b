"""Feature-map and Gram-matrix pictures of an image at chosen taps (what a perceptual loss compares).

:func:`summarize_features` picks the strongest channels of each tap and its Gram matrix (tensors
only); :func:`plot_features` draws them with matplotlib (Agg, imported lazily); :func:`show_features`
does both from an image file and writes a PNG. ``featx show`` is a thin wrapper around it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import torch

from featx._checks import check_int
from featx.errors import FeatxTypeError, FeatxValueError

if TYPE_CHECKING:  # matplotlib is imported lazily, only when drawing
    from matplotlib.figure import Figure

    from featx.weights import WeightsSpec

__all__ = [
    "MATPLOTLIB_HINT",
    "TapSummary",
    "figure_size",
    "plot_features",
    "require_matplotlib",
    "show_features",
    "summarize_features",
]

PathLike = Union[str, "os.PathLike[str]"]

MATPLOTLIB_HINT = "install it with: pip install matplotlib (a base dependency of featx; reinstalling featx brings it back)"
"""How to get matplotlib back: the end of the error :func:`require_matplotlib` raises."""


def require_matplotlib() -> None:
    """Check that matplotlib can be imported, before any work that only ends in a drawing.

    matplotlib is a base dependency of featx, but a minimal or hand-pruned environment may lack
    it; drawing then fails here, with what to do, instead of deep inside the plotting code.

    Raises:
        ImportError: matplotlib cannot be imported; the message says how to install it.

    Example:
        >>> require_matplotlib()  # matplotlib is installed: nothing happens
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(f"featx.show draws with matplotlib, which cannot be imported ({error}); {MATPLOTLIB_HINT}") from error


@dataclass(frozen=True)
class TapSummary:
    """What :func:`plot_features` draws for one tap.

    Attributes:
        name: tap name, e.g. ``relu2_1``.
        shape: ``(C, H, W)`` of the tap's feature map for the first image.
        channels: indices of the strongest channels, strongest first.
        means: mean activation of each of those channels.
        maps: the maps of those channels, shape ``(k, H, W)`` (float32, CPU).
        gram: the tap's Gram matrix ``F F^T / (C H W)``, shape ``(C, C)`` (float32, CPU).
    """

    name: str
    shape: tuple[int, int, int]
    channels: tuple[int, ...]
    means: tuple[float, ...]
    maps: torch.Tensor
    gram: torch.Tensor


def summarize_features(feats: Mapping[str, torch.Tensor], *, channels: int = 8) -> dict[str, TapSummary]:
    """Pick the ``channels`` strongest channels (by mean activation) and the Gram matrix of each tap.

    Only the first image of the batch is summarised. Ties keep the lower channel index first.

    Args:
        feats: ``{tap: (B, C, H, W)}``, e.g. the output of :class:`featx.VGGFeatures`.
        channels: how many channels to keep per tap (fewer if the tap has fewer).

    Returns:
        ``{tap: TapSummary}`` in the order of ``feats``.

    Raises:
        ValueError: ``channels`` is not a positive int, ``feats`` is empty or a map is not 4-D.
        TypeError: a value is not a floating point tensor.

    Example:
        >>> f = torch.zeros(1, 3, 2, 2)
        >>> f[0, 2] = 5.0; f[0, 0] = 1.0
        >>> s = summarize_features({"relu1_1": f}, channels=2)["relu1_1"]
        >>> s.channels, s.means, tuple(s.gram.shape)
        ((2, 0), (5.0, 1.0), (3, 3))
    """
    from featx.losses.functional import gram_matrix

    check_int("channels", channels)
    if not feats:
        raise FeatxValueError("feats must hold at least one tap, got an empty mapping")
    out: dict[str, TapSummary] = {}
    for name, feat in feats.items():
        if not isinstance(feat, torch.Tensor) or not feat.is_floating_point():
            raise FeatxTypeError(f"feature {name!r} must be a floating point tensor, got {type(feat).__name__}")
        if feat.ndim != 4:
            raise FeatxValueError(f"feature {name!r} must be 4-D (B, C, H, W), got shape {tuple(feat.shape)}")
        first = feat[:1].detach().float().cpu()
        means = first[0].mean(dim=(1, 2))
        k = min(channels, means.numel())
        # stable sort, descending: equal means keep the lower index first
        order = torch.sort(means, descending=True, stable=True).indices[:k]
        out[name] = TapSummary(
            name=name,
            shape=tuple(first.shape[1:]),  # type: ignore[arg-type]
            channels=tuple(int(i) for i in order),
            means=tuple(float(means[i]) for i in order),
            maps=first[0, order].clone(),
            gram=gram_matrix(first)[0],
        )
    return out


def figure_size(num_taps: int, channels: int, panel: float = 1.6, dpi: int = 100) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of the PNG :func:`plot_features` draws.

    The grid has one row per tap plus a header row (the input image), and ``channels + 1``
    columns (the channel maps, then the Gram matrix); each panel is ``panel`` inches square.

    Example:
        >>> figure_size(2, 4)
        (800, 480)
    """
    columns, rows = channels + 1, num_taps + 1
    return round(columns * panel * dpi), round(rows * panel * dpi)


def plot_features(
    image: torch.Tensor,
    summaries: Mapping[str, TapSummary],
    *,
    title: str = "",
    panel: float = 1.6,
    dpi: int = 100,
) -> Figure:
    """Draw the input, each tap's strongest channel maps and its Gram matrix heatmap.

    Each channel map is scaled to its own min/max (the panel title gives the channel index and
    its mean activation); the Gram matrix uses one square-root colour scale per tap (the colour
    bar gives the values).

    Args:
        image: the input, ``(3, H, W)`` in ``[0, 1]``.
        summaries: the output of :func:`summarize_features`.
        title: figure title.
        panel: panel size in inches.
        dpi: resolution of the saved picture.

    Returns:
        A matplotlib ``Figure`` (Agg canvas, not shown) of :func:`figure_size` pixels.

    Raises:
        ValueError: ``summaries`` is empty or ``image`` is not ``(3, H, W)``.
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    if not summaries:
        raise FeatxValueError("summaries must hold at least one tap, got an empty mapping")
    if image.ndim != 3 or image.shape[0] != 3:
        raise FeatxValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    channels = max(len(s.channels) for s in summaries.values())
    width, height = figure_size(len(summaries), channels, panel, dpi)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        len(summaries) + 1, channels + 1, left=0.06, right=0.96, top=0.93, bottom=0.03, wspace=0.08, hspace=0.35
    )
    fontsize = 7

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
    ax.set_title(f"input {image.shape[2]}x{image.shape[1]}", fontsize=fontsize)
    ax.set_axis_off()
    header = fig.add_subplot(grid[0, 1:])
    header.set_axis_off()
    header.text(0.0, 0.5, title, fontsize=fontsize + 1, va="center", ha="left", wrap=True)

    for row, summary in enumerate(summaries.values(), start=1):
        for col, (index, mean) in enumerate(zip(summary.channels, summary.means, strict=True)):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(summary.maps[col].numpy(), cmap="viridis", interpolation="nearest")
            ax.set_title(f"ch {index}, mean {mean:.3g}", fontsize=fontsize)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                c, h, w = summary.shape
                ax.set_ylabel(f"{summary.name}\n{c}x{h}x{w}", fontsize=fontsize)
        ax = fig.add_subplot(grid[row, channels])
        # square-root colour scale: a few large entries would otherwise hide the structure
        image_gram = ax.imshow(summary.gram.numpy(), cmap="magma", interpolation="nearest", norm=PowerNorm(0.5))
        ax.set_title(f"Gram {summary.shape[0]}x{summary.shape[0]} (sqrt scale)", fontsize=fontsize)
        ax.set_xticks([])
        ax.set_yticks([])
        colorbar = fig.colorbar(image_gram, ax=ax, fraction=0.046, pad=0.02)
        colorbar.ax.tick_params(labelsize=fontsize - 2)
    return fig


def _save_rgb_png(fig: Figure, path: PathLike) -> tuple[int, int]:
    """Render ``fig`` and write it as an 8-bit RGB PNG; returns ``(width, height)``."""
    import numpy as np
    from PIL import Image

    fig.canvas.draw()
    rgba = np.asarray(cast(Any, fig.canvas).buffer_rgba())  # the Agg canvas savefig draws with
    picture = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), mode="RGB")
    picture.save(os.fspath(path), format="PNG", optimize=True)
    return picture.size


def _unverified_note(extractor: Any) -> str:
    """`` (sha256 ... not verified)`` for weights whose file failed its checkpoint's hash check."""
    if getattr(extractor, "weights_verified", None) is not False:
        return ""
    return f" (sha256 {str(extractor.weights_sha256)[:12]}... not verified)"


def _pooling_note(extractor: Any) -> str:
    """``, pooling=max`` for an extractor with a pooling option (VGG), nothing for other families."""
    pooling = getattr(extractor, "pooling", None)
    return "" if pooling is None else f", pooling={pooling}"


def show_features(
    image: Union[PathLike, torch.Tensor],
    taps: Union[str, Iterable[str], None] = None,
    out: Optional[PathLike] = None,
    *,
    arch: str = "vgg19",
    weights: WeightsSpec = "DEFAULT",
    channels: int = 8,
    pooling: Optional[str] = None,
    max_size: Optional[int] = 512,
    alpha: str = "error",
    extractor: Optional[Any] = None,
    panel: float = 1.6,
    dpi: int = 100,
) -> tuple[Figure, dict[str, TapSummary]]:
    """Run an image through a backbone of any family and picture the strongest channels and the
    Gram matrix of each tap.

    Args:
        image: an image file (decoded by :func:`featx.io.images.load_image`) or a ``(3, H, W)`` tensor in ``[0, 1]``.
        taps: tap names of ``arch`` (``"relu1_1,relu2_1"``, ``"relu2,relu5"``, a list, a preset);
            ``None``: ``relu1_1,relu2_1`` for a VGG, other families must name theirs. Every tap must
            give a ``(B, C, H, W)`` map (DINOv2's ``blocks.N`` does, ``blocks.N.cls`` does not).
        out: write the figure here as an RGB PNG (parent folders are created); ``None`` writes nothing.
        arch: any architecture of :func:`featx.backbones.catalog.architectures` (VGG, AlexNet,
            SqueezeNet, DINOv2, ...).
        weights: as for the family's extractor (e.g. :class:`featx.VGGFeatures`); ``None`` is random weights (warns).
        channels: strongest channels to show per tap.
        pooling: pooling variant, for families that take one (VGG; default ``max``).
        max_size: downscale (antialiased, aspect kept) so the longer side is at most this; ``None`` keeps the size.
        alpha: for an image file with an alpha channel: ``"error"`` refuses it, ``"drop"`` discards
            alpha (see :func:`featx.io.images.load_image`; CLI ``--alpha``). Ignored for tensors.
        extractor: a ready featx backbone of any family (a
            :class:`~featx.backbones.base.BackboneFeatures`) to use instead of building one
            (``taps``, ``arch``, ``weights`` and ``pooling`` are then ignored).
        panel: panel size in inches.
        dpi: resolution.

    Returns:
        ``(figure, summaries)``.

    Raises:
        featx.errors.ImageDecodeError: the image file cannot be read (missing, corrupt, ...).
        ValueError: unknown arch/tap/pooling/alpha, ``pooling`` for a family without it, no
            ``taps`` for a family without default taps, a tap that is no map, ``channels`` < 1,
            bad ``max_size``, or an image smaller than the deepest tap needs.
        featx.errors.WeightsNotFoundError: ``weights`` names a checkpoint that is not on disk.
        ImportError: matplotlib is not installed (checked first, before any work).

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     fig, summaries = show_features(torch.rand(3, 16, 16), "relu1_1", weights=None, channels=2)
        >>> summaries["relu1_1"].shape, len(fig.axes)
        ((64, 16, 16), 6)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     fig, summaries = show_features(torch.rand(3, 40, 40), "fire3", arch="squeezenet1_1", weights=None)
        >>> summaries["fire3"].shape
        (128, 9, 9)
    """
    import torch.nn.functional as F

    from featx._checks import check_choice
    from featx.backbones.family_options import build_with_options, default_taps
    from featx.io.images import ALPHA_MODES

    require_matplotlib()
    check_choice("alpha", alpha, ALPHA_MODES)
    check_int("max_size", max_size, allow_none=True)
    if isinstance(image, torch.Tensor):
        picture = image.detach().float()
        if picture.ndim != 3 or picture.shape[0] != 3:
            raise FeatxValueError(f"image tensor must be (3, H, W) in [0, 1], got shape {tuple(picture.shape)}")
        source = "tensor"
    else:
        from featx.io.images import load_image

        picture = load_image(image, alpha=alpha)
        source = os.path.basename(os.fspath(image))
    if max_size is not None and max(picture.shape[1:]) > max_size:
        scale = max_size / max(picture.shape[1:])
        size = (max(1, math.floor(picture.shape[1] * scale)), max(1, math.floor(picture.shape[2] * scale)))
        picture = F.interpolate(picture[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        picture = picture.clamp(0, 1)
    if extractor is None:
        chosen = default_taps(arch, "relu1_1,relu2_1") if taps is None else taps
        extractor = build_with_options(arch, chosen, {"pooling": pooling}, weights=weights)
    with torch.no_grad():
        feats = extractor(picture[None].to(extractor.input_scale.device))
    summaries = summarize_features(feats, channels=channels)
    title = (
        f"{source}: {extractor.arch}{_pooling_note(extractor)}, weights={extractor.weights_id}"
        f"{_unverified_note(extractor)}; "
        f"strongest {channels} channels by mean activation, Gram = F F^T / (C H W)"
    )
    fig = plot_features(picture, summaries, title=title, panel=panel, dpi=dpi)
    if out is not None:
        parent = os.path.dirname(os.path.abspath(os.fspath(out)))
        os.makedirs(parent, exist_ok=True)
        _save_rgb_png(fig, out)
    return fig, summaries
