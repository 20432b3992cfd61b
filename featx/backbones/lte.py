"""``LTE``: TTSR's learnable texture extractor (VGG19 up to relu3_1) and TTSR checkpoint import."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.vgg.features import VGGFeatures
from featx.errors import FeatxValueError

if TYPE_CHECKING:
    from featx.weights import WeightsSpec

__all__ = ["LTE"]

# TTSR model/LTE.py keeps torchvision's features indices inside its three slices:
# slice1 = features[0:2], slice2 = features[2:7], slice3 = features[7:12].
_TTSR_SLICE_OF_INDEX = {0: 1, 2: 2, 5: 2, 7: 3, 10: 3}


class LTE(nn.Module):
    """TTSR's texture extractor: VGG19 features at relu1_1, relu2_1 and relu3_1.

    The same network as TTSR's ``model/LTE.py`` (Yang et al., "Learning Texture Transformer
    Network for Image Super-Resolution", CVPR 2020), built on :class:`VGGFeatures`. TTSR trains a
    learnable LTE inside the model and keeps a frozen copy for the transferal perceptual loss,
    synced each step with ``frozen.load_state_dict(learnable.state_dict())``.

    Args:
        weights: as for :class:`VGGFeatures` (``"DEFAULT"``, a path, a state dict, or ``None``).
        requires_grad: learnable (TTSR's default for the LTE inside the model) or frozen.
        rgb_range: inputs lie in ``[0, rgb_range]`` (TTSR's ``MeanShift`` convention; TTSR feeds
            ``(x + 1) / 2`` with ``rgb_range=1``).

    Shape:
        - Input: ``(B, 3, H, W)`` with ``H, W >= 4``.
        - Output: ``(lv1, lv2, lv3)`` of shapes ``(B, 64, H, W)``, ``(B, 128, H/2, W/2)``,
          ``(B, 256, H/4, W/4)``.

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     lte = LTE(weights=None)
        ...     frozen = LTE(weights=None, requires_grad=False)
        >>> _ = frozen.load_state_dict(lte.state_dict())  # sync the frozen copy
        >>> [tuple(level.shape) for level in lte(torch.rand(1, 3, 16, 16))]
        [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]
    """

    def __init__(self, *, weights: WeightsSpec = "DEFAULT", requires_grad: bool = True, rgb_range: float = 1.0) -> None:
        super().__init__()
        if not isinstance(rgb_range, (int, float)) or not rgb_range > 0:
            raise FeatxValueError(f"rgb_range must be a positive number such as 1 or 255, got {rgb_range!r}")
        self.rgb_range = float(rgb_range)
        self.vgg = VGGFeatures(
            "vgg19", "ttsr_lte", weights=weights, input_range=(0.0, self.rgb_range), requires_grad=requires_grad
        )

    @property
    def weights_id(self) -> str:
        """Where the weights came from (see :attr:`VGGFeatures.weights_id`)."""
        return self.vgg.weights_id

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the relu1_1, relu2_1 and relu3_1 maps, as TTSR's ``LTE.forward`` does."""
        feats = self.vgg(x)
        return feats["relu1_1"], feats["relu2_1"], feats["relu3_1"]

    @classmethod
    def from_ttsr_checkpoint(
        cls,
        path: Union[str, os.PathLike[str]],
        *,
        prefix: str = "LTE.",
        requires_grad: bool = True,
        rgb_range: Union[float, None] = None,
    ) -> LTE:
        """Load the LTE part of a TTSR model checkpoint, strictly.

        TTSR saves ``model.state_dict()`` with keys such as ``LTE.slice1.0.weight`` and
        ``LTE.sub_mean.weight`` (optionally behind ``module.``). Every key under ``prefix`` must be
        one of the LTE's; the ``sub_mean`` (MeanShift) entries are checked against ImageNet
        statistics and give ``rgb_range`` when it is not passed.

        Args:
            path: the TTSR checkpoint (``.pt``/``.pth``, loaded with ``weights_only=True``).
            prefix: key prefix of the LTE inside the checkpoint (``"LTE_copy."`` also works).
            requires_grad: learnable or frozen.
            rgb_range: expected value range; inferred from ``sub_mean`` when ``None``.

        Returns:
            An :class:`LTE` with the checkpoint's weights (``weights_id`` ``"ttsr:<path>"``).

        Raises:
            featx.errors.WeightsLoadError: missing, unexpected or mis-shaped LTE keys (sorted
                lists), or a ``sub_mean`` that does not match ImageNet statistics or ``rgb_range``.
            FileNotFoundError: no such file.
        """
        from featx.errors import WeightsLoadError
        from featx.weights import read_checkpoint

        checkpoint = read_checkpoint(path)
        lte_entries = {}
        for key, value in checkpoint.items():
            key = key.removeprefix("module.")
            if key.startswith(prefix):
                lte_entries[key[len(prefix) :]] = value
        expected = {f"slice{s}.{i}.{p}" for i, s in _TTSR_SLICE_OF_INDEX.items() for p in ("weight", "bias")}
        expected |= {"sub_mean.weight", "sub_mean.bias"}
        missing, unexpected = sorted(expected - set(lte_entries)), sorted(set(lte_entries) - expected)
        if missing or unexpected:
            raise WeightsLoadError(
                f"{os.fspath(path)} is not a TTSR checkpoint with an LTE under prefix {prefix!r}: "
                f"missing keys {[prefix + k for k in missing]}, unexpected keys {[prefix + k for k in unexpected]}"
            )
        inferred = _rgb_range_from_mean_shift(lte_entries["sub_mean.weight"], lte_entries["sub_mean.bias"], path)
        if rgb_range is not None and abs(inferred - rgb_range) > 1e-3 * rgb_range:
            raise WeightsLoadError(
                f"{os.fspath(path)}: sub_mean encodes rgb_range={inferred:g}, but rgb_range={rgb_range} was passed"
            )
        state_dict = {}
        for key, value in lte_entries.items():
            match = re.fullmatch(r"slice\d\.(\d+)\.(weight|bias)", key)
            if match:
                state_dict[f"features.{match.group(1)}.{match.group(2)}"] = value
        lte = cls(weights=state_dict, requires_grad=requires_grad, rgb_range=inferred if rgb_range is None else rgb_range)
        lte.vgg.weights_id = f"ttsr:{os.fspath(path)}"
        return lte


def _rgb_range_from_mean_shift(weight: torch.Tensor, bias: torch.Tensor, path: Any) -> float:
    """Read ``rgb_range`` from TTSR's MeanShift: weight = I / (std * rgb_range), bias = -mean / std."""
    from featx.errors import WeightsLoadError

    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    if tuple(weight.shape) != (3, 3, 1, 1) or tuple(bias.shape) != (3,):
        raise WeightsLoadError(
            f"{os.fspath(path)}: sub_mean must be a 1x1 conv with weight (3, 3, 1, 1) and bias (3,), "
            f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    matrix = weight.double().view(3, 3)
    ranges = 1.0 / (torch.diagonal(matrix) * std)
    rgb_range = float(ranges.mean())
    expected_matrix = torch.diag(1.0 / (std * rgb_range))
    if not (
        torch.allclose(matrix, expected_matrix, rtol=1e-4, atol=1e-6)
        and torch.allclose(bias.double(), -mean / std, rtol=1e-4, atol=1e-5)
    ):
        raise WeightsLoadError(
            f"{os.fspath(path)}: sub_mean does not hold TTSR's ImageNet MeanShift "
            f"(expected bias {(-mean / std).tolist()}, got {bias.tolist()})"
        )
    return rgb_range
