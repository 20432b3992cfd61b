"""``InputRangeWarning`` on real data: silent on an untrained SR network's first outputs, which
overshoot ``[0, 1]`` a little, and a warning that names the right ``input_range`` for real
pictures in another range, from every module that checks (VGGFeatures, AlexNetFeatures, LPIPS,
DISTS, and the losses through their extractor).

The pictures are scikit-image's bundled ones (no download). The SR network is built here: an
ESPCN-style net (three 3x3 convolutions and a PixelShuffle x2) with Kaiming-normal weights and
its output layer scaled by 0.3, seed 3, whose first output on the astronaut spans about
[-0.53, 0.41], like the [-0.52, 0.33] measured at step 0 of a real training run.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage import data, transform
from torch import nn

import featx
from featx._checks import range_warning
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.errors import InputRangeWarning, RandomWeightsWarning
from featx.metrics.dists import DISTS, DISTS_CHANNELS
from featx.metrics.lpips import LPIPS, LPIPS_NETS


def pictures(size: int) -> torch.Tensor:
    """scikit-image's astronaut and coffee, resized to ``size`` x ``size``, in [0, 1]: ``(2, 3, size, size)``."""
    images = [transform.resize(picture, (size, size), anti_aliasing=True) for picture in (data.astronaut(), data.coffee())]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def untrained_sr_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 12, 3, padding=1), nn.PixelShuffle(2),
    )  # fmt: skip
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        net[4].weight.mul_(0.3)  # a smaller output layer, as SR nets often start
    return net


def modules(input_range=(0.0, 1.0)) -> dict[str, nn.Module]:
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_NETS["alex"][2])}
    learned = {"alpha": torch.rand(1, sum(DISTS_CHANNELS), 1, 1), "beta": torch.rand(1, sum(DISTS_CHANNELS), 1, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return {
            "VGGFeatures": featx.VGGFeatures("vgg11", ["relu2_1"], weights=None, input_range=input_range),
            "AlexNetFeatures": featx.AlexNetFeatures("relu2", weights=None, input_range=input_range),
            "LPIPS": LPIPS("alex", weights=None, lin_weights=lin, input_range=input_range),
            "DISTS": DISTS(weights=None, dists_weights=learned, input_range=input_range),
            "PerceptualLoss": featx.PerceptualLoss({"relu2_1": 1.0}, arch="vgg11", weights=None, input_range=input_range),
        }


def call(name: str, module: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> None:
    with torch.no_grad():
        module(pred) if name.endswith("Features") else module(pred, target)


def test_an_untrained_sr_nets_first_output_does_not_warn():
    hr = pictures(96)
    lr = torch.nn.functional.interpolate(hr, scale_factor=0.5, mode="bicubic", align_corners=False)
    with torch.no_grad():
        sr = untrained_sr_net()(lr)
    low, high = float(sr.min()), float(sr.max())
    assert low < -0.5 and 0 < high < 0.5, (low, high)  # past the old "half a span outside" threshold
    assert range_warning(low, high, (0.0, 1.0)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        for name, module in modules().items():
            call(name, module, sr, hr)


IMAGENET = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
WRONG = {  # pictures in one range fed to a module declared with another: the advice names the first
    "[-1, 1] as (0, 1)": (lambda x: 2 * x - 1, (0.0, 1.0), r"input_range=\(-1, 1\), as for tanh"),
    "[0, 255] as (0, 1)": (lambda x: 255 * x, (0.0, 1.0), r"input_range=\(0, 255\), as for 8-bit"),
    "[0, 1] as (0, 255)": (lambda x: x, (0.0, 255.0), r"tiny part .* input_range=\(0, 1\)\."),
    "[0, 255] as (-1, 1)": (lambda x: 255 * x, (-1.0, 1.0), r"input_range=\(0, 255\)"),
    "ImageNet-normalised as (0, 1)": (lambda x: (x - IMAGENET[0]) / IMAGENET[1], (0.0, 1.0), r"input_range='normalized'"),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_real_pictures_in_another_range_warn_with_the_range_that_fits(case):
    convert, declared, advice = WRONG[case]
    images = convert(pictures(64))
    for name, module in modules(declared).items():
        with pytest.warns(InputRangeWarning, match=advice) as caught:
            call(name, module, images, images)
        message = str(caught[0].message)
        assert "clearly outside" in message or "tiny part" in message, (name, message)
        if not case.startswith("[-1, 1]"):  # no advice that does not fit the data
            assert "(-1, 1)" not in message.split("they look like")[1], (name, message)
