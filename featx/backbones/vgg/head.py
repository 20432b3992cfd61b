"""The fully convolutional VGG classifier head: fc6 as a 7x7 conv, fc7/fc8 as 1x1 convs, then GAP."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from featx._checks import check_int
from featx.backbones.table import CLASSIFIER

__all__ = ["ConvHead"]

# torchvision's VGG classifier: Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU,
# Dropout, Linear(4096, num_classes) -> the three linear layers are classifier.0, .3 and .6.
_CLASSIFIER_LINEAR = {"fc6": 0, "fc7": 3, "fc8": 6}


class ConvHead(nn.Module):
    """VGG's classifier made fully convolutional, so any input of at least 224x224 gives scores.

    fc6 becomes a 7x7 convolution (512 -> 4096, no padding) and fc7/fc8 become 1x1 convolutions,
    loaded from the linear weights by reshaping; global average pooling over the score map gives
    class scores. At 224x224 the score map is 1x1 and equals torchvision's classifier output
    (its ``AdaptiveAvgPool2d(7)`` is the identity on a 7x7 pool5 map); at 400x400 it is 6x6.

    Args:
        num_classes: output classes (1000 for ImageNet checkpoints).

    Shape:
        - Input: pool5 features ``(B, 512, H, W)`` with ``H, W >= 7``.
        - Output: ``(B, num_classes)``; :meth:`score_map` gives ``(B, num_classes, H - 6, W - 6)``.

    Example:
        >>> import torch
        >>> head = ConvHead(num_classes=10)
        >>> tuple(head.score_map(torch.rand(1, 512, 12, 12)).shape)
        (1, 10, 6, 6)
    """

    def __init__(self, *, num_classes: int = 1000) -> None:
        super().__init__()
        check_int("num_classes", num_classes)
        in_channels = 512
        for name, kernel, width in CLASSIFIER:
            width = num_classes if name == "fc8" else width
            self.add_module(name, nn.Conv2d(in_channels, width, kernel_size=kernel))
            in_channels = width

    @classmethod
    def from_classifier(cls, state_dict: Mapping[str, torch.Tensor]) -> ConvHead:
        """Build the head from a torchvision VGG state dict's ``classifier.*`` linear weights.

        Args:
            state_dict: a full torchvision VGG state dict (``classifier.0.weight`` etc.).

        Raises:
            featx.errors.WeightsLoadError: classifier entries missing or of the wrong shape.
        """
        from featx.errors import WeightsLoadError

        keys = [f"classifier.{i}.{p}" for i in _CLASSIFIER_LINEAR.values() for p in ("weight", "bias")]
        missing = sorted(key for key in keys if key not in state_dict)
        if missing:
            raise WeightsLoadError(f"state dict has no VGG classifier: missing keys {missing}")
        num_classes = state_dict["classifier.6.weight"].shape[0]
        head = cls(num_classes=num_classes)
        with torch.no_grad():
            for name, index in _CLASSIFIER_LINEAR.items():
                conv = getattr(head, name)
                weight = state_dict[f"classifier.{index}.weight"]
                if weight.numel() != conv.weight.numel():
                    raise WeightsLoadError(
                        f"classifier.{index}.weight has shape {tuple(weight.shape)}, expected "
                        f"{(conv.weight.shape[0], conv.weight[0].numel())} for {name}"
                    )
                conv.weight.copy_(weight.reshape(conv.weight.shape))
                conv.bias.copy_(state_dict[f"classifier.{index}.bias"])
        return head

    def score_map(self, pool5: torch.Tensor) -> torch.Tensor:
        """Class scores at every position of the pool5 map (before global pooling)."""
        x = torch.relu(self.get_submodule("fc6")(pool5))
        x = torch.relu(self.get_submodule("fc7")(x))
        scores: torch.Tensor = self.get_submodule("fc8")(x)
        return scores

    def forward(self, pool5: torch.Tensor) -> torch.Tensor:
        """Class scores: the score map averaged over positions."""
        return self.score_map(pool5).mean(dim=(-2, -1))
