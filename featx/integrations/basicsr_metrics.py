"""LPIPS and DISTS with BasicSR's metric signature, for the ``val: metrics:`` block of its options.

BasicSR's validation calls ``calculate_metric({"img": sr, "img2": gt}, opt)``, i.e.
``METRIC_REGISTRY.get(type)(img=sr, img2=gt, **other keys of the block)``, once per image, with
``uint8`` HWC **BGR** images in ``[0, 255]`` (``tensor2img``'s output, as ``calculate_psnr``
gets them). :mod:`featx.integrations.basicsr` registers the two functions here.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Union, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from featx._checks import check_bool, check_choice, check_int
from featx.errors import FeatxTypeError, FeatxValueError
from featx.integrations._options import options_file_hint
from featx.metrics.dists import DISTS
from featx.metrics.lpips import LPIPS

__all__ = ["calculate_featx_dists", "calculate_featx_lpips"]

PathOption = Union[str, "os.PathLike[str]", None]
"""A weights option of a metric block: ``"DEFAULT"``, a checkpoint name, a path, or ``None`` (random backbone)."""
_CACHED_METRICS = 4  # metric modules kept built between calls (one per weights/device combination)
_WEIGHT_OPTIONS = {"lpips": ("backbone_weights", "lin_weights"), "dists": ("vgg_weights", "dists_weights")}


def _path_option(name: str, value: object, *, allow_none: bool) -> Optional[str]:
    """A weights option of a metric block: ``"DEFAULT"``, a name or a path (``str``), or ``None``
    (random weights) where ``allow_none``."""
    if isinstance(value, str) or (value is None and allow_none):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[no-any-return]
    none = ", or None for random weights" if allow_none else ""
    raise FeatxTypeError(
        f"{name} must be 'DEFAULT', a checkpoint name or a path (a string, as in an options file){none}; got {value!r}"
    )


def _device(device: object) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise FeatxTypeError(f"device must be a string such as 'cpu' or 'cuda:0', or None; got {device!r}")
    return torch.device(device)


@functools.lru_cache(maxsize=_CACHED_METRICS)
def _built(kind: str, net: str, backbone: Optional[str], learned: str, device: torch.device) -> nn.Module:
    """The metric module for one set of options, built once (BasicSR calls the function per image)."""
    metric: nn.Module
    with options_file_hint(*_WEIGHT_OPTIONS[kind]):
        if kind == "lpips":
            metric = LPIPS(net, weights=backbone, lin_weights=learned)
        else:
            metric = DISTS(weights=backbone, dists_weights=learned)
    return metric.to(device)


def _as_rgb_tensor(image: object, role: str, *, crop_border: int, input_order: str, device: torch.device) -> torch.Tensor:
    """A BasicSR image (HWC or CHW, BGR or gray, ``[0, 255]``) as an RGB ``(1, 3, H, W)`` tensor in ``[0, 1]``.

    Gray images (2-D or one channel) are repeated to RGB. ``crop_border`` pixels go from each edge,
    as in BasicSR's ``calculate_psnr``.
    """
    if not isinstance(image, np.ndarray):
        raise FeatxTypeError(f"{role} must be a numpy array (H, W, C) in [0, 255], got {type(image).__name__}")
    array: npt.NDArray[Any] = image[..., None] if image.ndim == 2 else image  # BasicSR's reorder_image
    if array.ndim != 3:
        raise FeatxValueError(f"{role} must be 2-D (H, W) or 3-D ({input_order}), got shape {image.shape}")
    if image.ndim == 3 and input_order == "CHW":
        array = array.transpose(1, 2, 0)
    if array.shape[2] not in (1, 3):
        raise FeatxValueError(
            f"{role} must have 1 (gray) or 3 (BGR) channels in input_order {input_order!r}, got shape {image.shape}"
        )
    if crop_border:
        array = array[crop_border:-crop_border, crop_border:-crop_border]
        if array.size == 0:
            raise FeatxValueError(f"crop_border={crop_border} leaves nothing of {role} (shape {image.shape})")
    rgb = array[..., ::-1] if array.shape[2] == 3 else np.repeat(array, 3, axis=2)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    return tensor.to(device) / 255.0


def _score(
    kind: str,
    net: str,
    img: object,
    img2: object,
    *,
    crop_border: object,
    input_order: object,
    test_y_channel: object,
    backbone: object,
    learned: object,
    device: object,
    better: object,
) -> float:
    """Check a metric block's options, build (or reuse) the metric and score one image pair."""
    name = kind.upper()
    check_choice("better", better, ("lower",), context=f" ({name} is lower-is-better: a smaller value is a closer image)")
    if check_bool("test_y_channel", test_y_channel):
        raise FeatxValueError(
            f"test_y_channel=True: {name} compares RGB images through a network trained on RGB, so it has no "
            "Y-channel variant; set test_y_channel: false in this metric block"
        )
    order = check_choice("input_order", input_order, ("HWC", "CHW"))
    border = check_int("crop_border", crop_border, minimum=0)
    where = _device(device)
    backbone_option, learned_option = _WEIGHT_OPTIONS[kind]
    backbone_path = _path_option(backbone_option, backbone, allow_none=True)
    learned_path = cast(str, _path_option(learned_option, learned, allow_none=False))
    pred = _as_rgb_tensor(img, "img", crop_border=border, input_order=order, device=where)
    target = _as_rgb_tensor(img2, "img2", crop_border=border, input_order=order, device=where)
    if pred.shape != target.shape:
        shapes = f"{cast(np.ndarray, img).shape} and {cast(np.ndarray, img2).shape}"  # both checked arrays by now
        raise FeatxValueError(f"img and img2 must have the same shape, got {shapes}")
    metric = _built(kind, net, backbone_path, learned_path, where)
    with torch.no_grad():
        return float(metric(pred, target))


def calculate_featx_lpips(
    img: npt.NDArray[Any],
    img2: npt.NDArray[Any],
    crop_border: int = 0,
    input_order: str = "HWC",
    test_y_channel: bool = False,
    *,
    net: str = "alex",
    backbone_weights: PathOption = "DEFAULT",
    lin_weights: Union[str, os.PathLike[str]] = "DEFAULT",
    device: Optional[str] = None,
    better: str = "lower",
) -> float:
    """LPIPS of two BasicSR images (:class:`featx.LPIPS`), with BasicSR's metric signature.

    Equal to ``featx.LPIPS(net)`` on the RGB images scaled to ``[0, 1]`` (and so to the ``lpips``
    package on the same weights). BasicSR's ``scripts/metrics/calculate_lpips.py`` uses
    ``net: vgg`` and crops nothing; most SR papers report ``net: alex``.

    Args:
        img: the output, ``(H, W, 3)`` BGR (or ``(H, W)``/``(H, W, 1)`` gray, repeated to RGB), in ``[0, 255]``.
        img2: the reference, the same shape.
        crop_border: pixels cropped from each edge first (as ``calculate_psnr`` does); 0 for the
            whole image, as BasicSR's LPIPS script.
        input_order: ``"HWC"`` or ``"CHW"``.
        test_y_channel: must be ``False`` (LPIPS has no Y-channel variant).
        net: ``"alex"`` or ``"vgg"``.
        backbone_weights: the backbone's weights (``"DEFAULT"``: the local cache; a path; ``None``: random).
        lin_weights: LPIPS's learned layers (``"DEFAULT"``, a name or a path; never ``None``).
        device: where to compute; ``None``: CUDA when available, else the CPU.
        better: the key BasicSR reads to track the best value; must be ``"lower"`` for LPIPS.

    Returns:
        The LPIPS distance (lower is closer).

    Raises:
        ValueError: shapes that differ or are not images, a bad option (with the valid choices),
            ``test_y_channel=True`` or ``better: higher``.
        featx.errors.WeightsNotFoundError: a ``"DEFAULT"`` file is not on disk (names the keys).

    Example:
        >>> import warnings
        >>> from featx.metrics.lpips import LPIPS_NETS
        >>> lin = {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 0.1) for k, c in enumerate(LPIPS_NETS["alex"][2])}
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "lin.pth")
        >>> torch.save(lin, path)
        >>> image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # backbone_weights=None: random, for the example only
        ...     calculate_featx_lpips(image, image, crop_border=4, backbone_weights=None, lin_weights=path, device="cpu")
        0.0
        >>> os.remove(path)
    """
    return _score(
        "lpips", check_choice("net", net, ("alex", "vgg")), img, img2, crop_border=crop_border,
        input_order=input_order, test_y_channel=test_y_channel, backbone=backbone_weights, learned=lin_weights,
        device=device, better=better,
    )  # fmt: skip


def calculate_featx_dists(
    img: npt.NDArray[Any],
    img2: npt.NDArray[Any],
    crop_border: int = 0,
    input_order: str = "HWC",
    test_y_channel: bool = False,
    *,
    vgg_weights: PathOption = "DEFAULT",
    dists_weights: Union[str, os.PathLike[str]] = "DEFAULT",
    device: Optional[str] = None,
    better: str = "lower",
) -> float:
    """DISTS of two BasicSR images (:class:`featx.DISTS`), with BasicSR's metric signature.

    Equal to ``featx.DISTS()`` on the RGB images scaled to ``[0, 1]`` (DISTS_pytorch's input).

    Args:
        img, img2, crop_border, input_order, device, better: as for :func:`calculate_featx_lpips`.
        test_y_channel: must be ``False`` (DISTS has no Y-channel variant).
        vgg_weights: the VGG16 weights (``"DEFAULT"``: the local cache; a path; ``None``: random).
        dists_weights: DISTS's learned alpha/beta (``"DEFAULT"``, a name or a path; never ``None``).

    Returns:
        The DISTS distance (lower is closer).

    Raises:
        ValueError: as for :func:`calculate_featx_lpips`.
        featx.errors.WeightsNotFoundError: a ``"DEFAULT"`` file is not on disk (names the keys).

    Example:
        >>> import warnings
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "dists.pth")
        >>> torch.save({"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}, path)
        >>> image = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)  # gray
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # vgg_weights=None: random, for the example only
        ...     value = calculate_featx_dists(image, image, vgg_weights=None, dists_weights=path, device="cpu")
        >>> abs(value) < 1e-6
        True
        >>> os.remove(path)
    """
    return _score(
        "dists", "vgg", img, img2, crop_border=crop_border, input_order=input_order,
        test_y_channel=test_y_channel, backbone=vgg_weights, learned=dists_weights, device=device, better=better,
    )  # fmt: skip
