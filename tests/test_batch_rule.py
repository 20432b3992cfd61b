"""The batch rule at every entry point that compares a prediction with a target: the target has
the prediction's batch or a batch of 1 (one reference for every prediction); a prediction batch
of 1 is never broadcast over a target batch of 3. Each refusal names both shapes.

One test per family (feature functions, texture functions, TTSR's transferal loss, the feature
modules, the image-loss modules with a passed and a cached target, LPIPS and DISTS). The reference
of the accepted cases is the same call with the target expanded by hand.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import featx
from featx.errors import RandomWeightsWarning
from featx.metrics.dists import DISTS, DISTS_CHANNELS
from featx.metrics.lpips import LPIPS, LPIPS_NETS

LAYERS = {"relu1_1": 1.0}
BOTH_SHAPES = r"\(1, 4, 6, 6\).*\(3, 4, 6, 6\)"


def feats(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"relu1_1": torch.rand(batch, 4, 6, 6, generator=gen, dtype=torch.float64)}


FEATURE_FUNCTIONS = {
    "perceptual_loss": lambda p, t, **kw: featx.perceptual_loss(p, t, LAYERS, **kw),
    "style_loss": lambda p, t, **kw: featx.style_loss(p, t, LAYERS, **kw),
    "sliced_wasserstein_loss": lambda p, t, **kw: featx.sliced_wasserstein_loss(p, t, LAYERS, seed=0, **kw),
    "moment_loss": lambda p, t, **kw: featx.moment_loss(p, t, LAYERS, **kw),
    "contextual_loss": lambda p, t, **kw: featx.contextual_loss(p, t, LAYERS, seed=0, **kw),
    "SlicedWassersteinOnFeatures": lambda p, t, **kw: featx.SlicedWassersteinOnFeatures(LAYERS, seed=0, **kw)(p, t),
    "MomentsOnFeatures": lambda p, t, **kw: featx.MomentsOnFeatures(LAYERS, **kw)(p, t),
    "ContextualOnFeatures": lambda p, t, **kw: featx.ContextualOnFeatures(LAYERS, seed=0, **kw)(p, t),
}


def test_feature_distance():
    a, b = feats(1)["relu1_1"], feats(3, seed=1)["relu1_1"]
    with pytest.raises(ValueError, match=BOTH_SHAPES):
        featx.feature_distance(a, b)
    with pytest.raises(ValueError, match=r"\(3, 4, 6, 6\).*\(2, 4, 6, 6\)"):
        featx.feature_distance(b, b[:2])
    expected = featx.feature_distance(b, a.expand(3, -1, -1, -1), reduction="none")
    torch.testing.assert_close(featx.feature_distance(b, a, reduction="none"), expected)


@pytest.mark.parametrize("name", list(FEATURE_FUNCTIONS))
def test_loss_functions_and_feature_modules(name):
    call = FEATURE_FUNCTIONS[name]
    one, three = feats(1), feats(3, seed=1)
    with pytest.raises(ValueError, match=rf"layer 'relu1_1': pred shape {BOTH_SHAPES}.*a pred batch never does"):
        call(one, three)
    expanded = {"relu1_1": one["relu1_1"].expand(3, -1, -1, -1)}
    torch.testing.assert_close(call(three, one, reduction="none"), call(three, expanded, reduction="none"))


def test_style_loss_with_cached_target_grams():
    grams = featx.gram_matrices(feats(3, seed=1))
    with pytest.raises(ValueError, match=r"pred shape \(1, 4, 4\) and target shape \(3, 4, 4\)"):
        featx.style_loss(feats(1), None, LAYERS, target_grams=grams)


def test_transferal_perceptual_loss():
    def levels(batch):
        return [torch.rand(batch, 2, 8 // 2**k, 8 // 2**k, dtype=torch.float64) for k in range(3)]

    with pytest.raises(ValueError, match=r"level lv1: SR shape \(1, 2, 8, 8\) and texture shape \(3, 2, 8, 8\)"):
        featx.transferal_perceptual_loss(levels(1), levels(3))
    with pytest.raises(ValueError, match=r"SR shape \(1, 2, 8, 8\) and texture shape \(3, 2, 8, 8\)"):
        featx.TransferalPerceptualOnFeatures()(levels(1), levels(3))


def image_losses():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return {
            "PerceptualLoss": featx.PerceptualLoss({"relu1_1": 1.0}, arch="vgg11", weights=None),
            "StyleLoss": featx.StyleLoss({"relu1_1": 1.0}, arch="vgg11", weights=None),
            "TextureLoss": featx.TextureLoss({"relu1_1": 1.0}, arch="vgg11", weights=None, seed=0),
            "FeatureLoss": featx.FeatureLoss(perceptual={"relu1_1": 1.0}, arch="vgg11", weights=None),
        }


@pytest.mark.parametrize("name", ["PerceptualLoss", "StyleLoss", "TextureLoss", "FeatureLoss"])
def test_image_loss_modules_name_the_image_shapes(name):
    loss = image_losses()[name]
    gen = torch.Generator().manual_seed(0)
    one, three = torch.rand(1, 3, 16, 16, generator=gen), torch.rand(3, 3, 16, 16, generator=gen)
    images = r"pred of shape \(1, 3, 16, 16\) and target of shape \(3, 3, 16, 16\) do not fit"
    with pytest.raises(ValueError, match=images):
        loss(one, three)
    loss.set_target(three)
    cached = r"pred of shape \(1, 3, 16, 16\) and the target cached by set_target of shape \(3, 3, 16, 16\)"
    with pytest.raises(ValueError, match=cached):
        loss(one)
    loss.set_target(one)
    torch.testing.assert_close(loss(three), loss(three, one.expand(3, -1, -1, -1)))  # one reference for all


def test_lpips_and_dists():
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_NETS["alex"][2])}
    learned = {"alpha": torch.rand(1, sum(DISTS_CHANNELS), 1, 1), "beta": torch.rand(1, sum(DISTS_CHANNELS), 1, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        metrics = {"LPIPS": LPIPS(weights=None, lin_weights=lin), "DISTS": DISTS(weights=None, dists_weights=learned)}
    one, three = torch.rand(1, 3, 32, 32), torch.rand(3, 3, 32, 32)
    for name, metric in metrics.items():
        with pytest.raises(ValueError, match=rf"{name}: pred of shape \(1, 3, 32, 32\) and target of shape \(3, 3, 32, 32\)"):
            metric(one, three)
