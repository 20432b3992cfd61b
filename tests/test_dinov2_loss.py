"""The ``dino_perceptual_v2`` preset against the dino-perceptual package itself (its DINOPerceptual on
transformers' Dinov2Model), on the same random weights: loss values and float64 input gradients."""

from __future__ import annotations

import dino_perceptual.perceptual as perceptual  # in the test extra: fails, never skips
import pytest
import torch
from dinov2_reference import random_state, transformers_model

from featx.backbones.dinov2 import DINOv2Features
from featx.functional import perceptual_loss
from featx.presets import PRESETS

PRESET = PRESETS["dino_perceptual_v2"]
ARCH_OF_SIZE = {"S": "dinov2_vits14", "B": "dinov2_vitb14"}  # DINOPerceptual(model_size=...) with version="v2"


@pytest.fixture(scope="module")
def transformers_s() -> torch.nn.Module:
    """transformers' Dinov2Model with the configuration of facebook/dinov2-small and ``random_state()``."""
    return transformers_model(random_state("dinov2_vits14")).double()


@pytest.fixture(scope="module")
def extractor_s() -> DINOv2Features:
    """The preset's extractor on ViT-S/14 with the same weights, for images in [-1, 1] as the package takes."""
    return DINOv2Features("dinov2_vits14", "dino_perceptual_v2", weights=random_state(), input_range=(-1, 1)).double()


def reference_loss(model_size: str, model: torch.nn.Module, monkeypatch) -> torch.nn.Module:
    """dino-perceptual's ``DINOPerceptual(model_size, version="v2")``, its hub model replaced by a local
    transformers ``Dinov2Model`` (the package's own code computes the loss)."""

    class LocalModels:
        @staticmethod
        def from_pretrained(name: str, **kwargs: object) -> torch.nn.Module:
            assert name == perceptual.DINOV2_MODELS[model_size] and not kwargs
            return model

    monkeypatch.setattr(perceptual, "AutoModel", LocalModels)
    return perceptual.DINOPerceptual(model_size=model_size, version="v2").double()


def featx_loss(extractor: DINOv2Features, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The preset through featx's functions on feature dicts: per image, like the package."""
    with torch.no_grad():
        target_feats = extractor(target)
    return perceptual_loss(
        extractor(pred),
        target_feats,
        dict(PRESET.layer_weights),
        criterion=PRESET.criterion,
        normalize_channels=PRESET.normalize_channels,
        reduction="none",
    )


def test_preset_is_the_packages_definition():
    # dino_perceptual/perceptual.py: layers="all" takes hidden_states[1:], the 12 block outputs;
    # stack(...).mean(0) weights each 1/12; the default size "B" is facebook/dinov2-base.
    assert perceptual.DINOV2_MODELS["B"] == "facebook/dinov2-base" and ARCH_OF_SIZE["B"] == PRESET.arch
    assert dict(PRESET.layer_weights) == {f"blocks.{block}.tokens": 1 / 12 for block in range(12)}
    assert (PRESET.criterion, PRESET.normalize_channels) == ("l2", True)
    assert dict(PRESET.extractor_options) == {"pos_interpolation": "transformers", "remainder": "drop", "max_side": 512}
    assert "dino-perceptual 0.1.3" in PRESET.source


@pytest.mark.parametrize(
    "shape",
    [
        (2, 3, 31, 44),  # a 2x3 patch grid; transformers' patch convolution drops the rest
        (1, 3, 20, 530),  # longer side above target_size=512: downscaled to 19x512 first
    ],
)
def test_values_and_float64_input_gradients_equal_dino_perceptual(shape, transformers_s, extractor_s, monkeypatch):
    reference = reference_loss("S", transformers_s, monkeypatch)
    extractor = extractor_s
    generator = torch.Generator().manual_seed(1)
    pred = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_()
    target = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1

    expected = reference(pred, target)
    (expected_grad,) = torch.autograd.grad(expected.sum(), pred)
    ours = featx_loss(extractor, pred, target)
    (grad,) = torch.autograd.grad(ours.sum(), pred)

    assert ours.shape == expected.shape == (shape[0],) and bool((expected > 0).all())
    # Both run in float64. They differ by the package's ImageNet mean and std, float32 buffers
    # (0.485 is 0.48500001430511475; featx uses the float64 numbers), which moves the loss by about
    # 1e-8 relative, and by the unit normalisation of tokens: featx divides by |x| + 1e-10, the
    # package by max(|x|, 1e-6), which agree to 1e-10 / |x| for tokens of norm above 1e-6.
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-6 * expected_grad.abs().max().item())
