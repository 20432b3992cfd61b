"""The image-loss modules on every backbone family of the catalog (``arch=`` or ``extractor=``).

Each family's taps are checked against the library it comes from in its own test file
(tests/test_alexnet.py, test_squeezenet.py, test_dinov2.py, ...). Here the loss modules are
checked on those taps: the features come from an extractor built separately with the catalog and
loaded with the same state dict, and the loss values are recomputed from them in float64 with
independent formulas written here (``torch.einsum`` for the Gram matrices, plain means for the
distances and the moments), so a loss module that picks the wrong taps, the wrong weights, or a
formula that assumes VGG maps, fails.
"""

from __future__ import annotations

import pytest
import torch

from featx.backbones.base import BackboneFeatures
from featx.backbones.catalog import architectures, available_taps, build_backbone
from featx.losses import FeatureLoss, PerceptualLoss, StyleLoss, TextureLoss
from featx.losses.texture import sliced_wasserstein_loss

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

# (arch, two taps, input side): small sizes every tap survives; DINOv2 sides are multiples of 14
CASES = [
    ("alexnet", ("relu1", "relu2"), 67),
    ("squeezenet1_1", ("relu1", "fire3"), 35),
    ("dinov2_vits14", ("blocks.0", "blocks.1"), 28),
]
EXACT = 1e-10  # float64 relative error: the same arithmetic up to summation order


def _reference(arch: str, taps: tuple[str, ...]) -> tuple[BackboneFeatures, dict[str, torch.Tensor]]:
    """A float64 extractor built with the catalog, and its random state dict for the loss to load."""
    torch.manual_seed(7)
    ref = build_backbone(arch, taps, weights=None)
    state = {key: value.clone() for key, value in ref.state_dict().items()}
    return ref.double(), state


def _images(side: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    pred = torch.rand(batch, 3, side, side, generator=generator, dtype=torch.float64)
    target = torch.rand(batch, 3, side, side, generator=generator, dtype=torch.float64)
    return pred, target


def _gram64(feat: torch.Tensor) -> torch.Tensor:
    """G = F F^T / (C H W), BasicSR's ``_gram_mat`` convention, by einsum in float64."""
    _, c, h, w = feat.shape
    return torch.einsum("bchw,bdhw->bcd", feat, feat) / (c * h * w)


def _close(value: torch.Tensor, expected: torch.Tensor) -> None:
    assert value.dtype == torch.float64
    assert torch.allclose(value, expected, rtol=EXACT, atol=0.0), (value, expected)


@pytest.mark.parametrize(("arch", "taps", "side"), CASES)
def test_style_loss_equals_einsum_gram_formula(arch, taps, side):
    ref, state = _reference(arch, taps)
    weights = {taps[0]: 0.3, taps[1]: 2.0}
    loss = StyleLoss(weights, arch=arch, weights=state).double()
    assert type(loss.extractor) is type(ref) and loss.extractor.taps == taps
    pred, target = _images(side)
    with torch.no_grad():
        fp, ft = ref(pred), ref(target)
    expected = sum(w * ((_gram64(fp[t]) - _gram64(ft[t])) ** 2).mean(dim=(1, 2)) for t, w in weights.items())
    _close(loss(pred, target), expected.mean())
    per_sample = StyleLoss(weights, arch=arch, weights=state, reduction="none").double()
    _close(per_sample(pred, target), expected)


@pytest.mark.parametrize(("arch", "taps", "side"), CASES)
def test_texture_gram_and_moments_equal_float64_formulas(arch, taps, side):
    ref, state = _reference(arch, taps)
    pred, target = _images(side)
    with torch.no_grad():
        fp, ft = ref(pred), ref(target)
    gram = TextureLoss({taps[1]: 1.0}, kind="gram", arch=arch, weights=state, normalize="hw").double()
    hw = fp[taps[1]].shape[2] * fp[taps[1]].shape[3]
    c = fp[taps[1]].shape[1]
    expected = ((_gram64(fp[taps[1]]) * c - _gram64(ft[taps[1]]) * c) ** 2).mean(dim=(1, 2)).mean()
    assert hw > 1
    _close(gram(pred, target), expected)

    moments = TextureLoss({taps[0]: 1.0}, kind="moments", arch=arch, weights=state, eps=0.0).double()

    def stats(feat):  # mean and population std over positions, per channel
        flat = feat.flatten(2)
        return flat.mean(dim=2), flat.var(dim=2, unbiased=False).sqrt()

    (mp, sp), (mt, st) = stats(fp[taps[0]]), stats(ft[taps[0]])
    expected = (((mp - mt) ** 2).mean(dim=1) + ((sp - st) ** 2).mean(dim=1)).mean()
    _close(moments(pred, target), expected)


@pytest.mark.parametrize(("arch", "taps", "side"), CASES)
def test_sliced_wasserstein_module_equals_the_function_on_the_family_maps(arch, taps, side):
    ref, state = _reference(arch, taps)
    pred, target = _images(side, batch=1)
    loss = TextureLoss({taps[1]: 1.0}, arch=arch, weights=state, seed=5, num_projections=16).double()
    with torch.no_grad():
        expected = sliced_wasserstein_loss(ref(pred), ref(target), {taps[1]: 1.0}, seed=5, num_projections=16)
    _close(loss(pred, target), expected)
    assert float(loss(pred, pred)) == 0.0


@pytest.mark.parametrize(("arch", "taps", "side"), CASES)
def test_perceptual_loss_and_gradients_on_any_family(arch, taps, side):
    ref, state = _reference(arch, taps)
    loss = PerceptualLoss({taps[0]: 1.0, taps[1]: 0.5}, arch=arch, weights=state, criterion="mse").double()
    pred, target = _images(side)
    with torch.no_grad():
        fp, ft = ref(pred), ref(target)
    expected = sum(w * ((fp[t] - ft[t]) ** 2).mean(dim=(1, 2, 3)) for t, w in {taps[0]: 1.0, taps[1]: 0.5}.items())
    pred.requires_grad_()
    value = loss(pred, target)
    _close(value.detach(), expected.mean())
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert list(loss.state_dict()) == []  # frozen backbone: nothing in the loss's checkpoint


def test_feature_loss_terms_share_one_dinov2_pass_on_token_maps():
    """Token maps (``.tokens``, ``(B, C, 1, N)``) work with the distances and the Gram."""
    arch, taps = "dinov2_vits14", ("blocks.0.tokens", "blocks.1")
    ref, state = _reference(arch, taps)
    loss = FeatureLoss(
        perceptual={"blocks.1": 1.0}, style={"blocks.0.tokens": 1.0}, style_weight=3.0,
        normalize_channels=True, criterion="l2", arch=arch, weights=state,
    ).double()  # fmt: skip
    pred, target = _images(28)
    calls = []
    loss.extractor.register_forward_hook(lambda *_: calls.append(1))
    total, terms = loss(pred, target, return_terms=True)
    assert len(calls) == 2  # one pass over pred, one over target
    with torch.no_grad():
        fp, ft = ref(pred), ref(target)
    tokens = fp["blocks.0.tokens"]
    assert tokens.ndim == 4 and tokens.shape[2] == 1 and tokens.shape[3] == 1 + 2 * 2  # class + patch tokens

    def unit(f):
        return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)

    perceptual = ((unit(fp["blocks.1"]) - unit(ft["blocks.1"])) ** 2).mean(dim=(1, 2, 3)).mean()
    style = 3.0 * ((_gram64(tokens) - _gram64(ft["blocks.0.tokens"])) ** 2).mean(dim=(1, 2)).mean()
    _close(terms["perceptual/blocks.1"], perceptual)
    _close(terms["style/blocks.0.tokens"], style)
    _close(total, perceptual + style)


def test_gram_of_a_class_token_is_a_clear_error():
    loss = StyleLoss({"blocks.0.cls": 1.0}, arch="dinov2_vits14", weights=None)
    with pytest.raises(ValueError, match=r"4-D.*\(2, 384\)"):
        loss(torch.rand(2, 3, 28, 28), torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize("arch", architectures())
def test_every_catalog_arch_builds_a_loss_on_its_first_tap(arch):
    """Families added to the catalog work with the losses without any change here."""
    first = available_taps(arch)[0]
    loss = PerceptualLoss({first.name: 1.0}, arch=arch, weights=None)
    assert loss.extractor.arch == arch and loss.extractor.taps == (first.name,)
    side = max(loss.extractor.min_input_size, 32)
    image = torch.rand(1, 3, side, side)
    assert float(loss(image, image)) == 0.0


def test_pooling_for_a_family_without_pooling_is_a_clear_error():
    with pytest.raises(ValueError, match=r"pooling='avg' is not an option of arch 'alexnet' \(family 'alexnet'\)"):
        PerceptualLoss({"relu2": 1.0}, arch="alexnet", pooling="avg", weights=None)
    with pytest.raises(ValueError, match="pooling='max' is not an option of arch 'squeezenet1_1'"):
        StyleLoss({"fire3": 1.0}, arch="squeezenet1_1", pooling="max", weights=None)


def test_gray_reaches_families_that_take_it():
    loss = PerceptualLoss({"relu2": 1.0}, arch="alexnet", gray="repeat", weights=None)
    assert loss.extractor.gray == "repeat"
    gray = torch.rand(1, 1, 67, 67)
    rgb = gray.expand(-1, 3, -1, -1)
    assert torch.equal(loss(gray, rgb), torch.zeros(()))


def test_unknown_arch_and_wrong_family_tap_name_the_choices():
    with pytest.raises(ValueError, match="unknown arch 'alexnett'.*'alexnet'"):
        PerceptualLoss({"relu2": 1.0}, arch="alexnett", weights=None)
    with pytest.raises(ValueError, match="conv5_4"):
        PerceptualLoss({"conv5_4": 1.0}, arch="squeezenet1_1", weights=None)


def test_shared_extractor_of_any_family():
    squeeze = build_backbone("squeezenet1_1", ("relu1", "fire3", "fire5"), weights=None)
    loss = FeatureLoss(perceptual={"fire5": 1.0}, texture={"relu1": 1.0}, texture_options={"seed": 0},
                       extractor=squeeze)  # fmt: skip
    assert loss.extractor is squeeze
    image = torch.rand(1, 3, 35, 35)
    assert float(loss(image, image)) == 0.0
    with pytest.raises(ValueError, match="no tap 'fire7'"):
        PerceptualLoss({"fire7": 1.0}, extractor=squeeze)
    with pytest.raises(ValueError, match="pooling='max' given, but the shared squeezenet1_1 extractor has no pooling"):
        PerceptualLoss({"fire5": 1.0}, extractor=squeeze, pooling="max")
    with pytest.raises(ValueError, match="arch='alexnet' does not match"):
        PerceptualLoss({"fire5": 1.0}, extractor=squeeze, arch="alexnet")
    with pytest.raises(TypeError, match="another featx backbone"):
        PerceptualLoss({"fire5": 1.0}, extractor=torch.nn.Identity())  # type: ignore[arg-type]


def test_presets_of_other_families_build_their_backbone():
    lpips = PerceptualLoss(preset="lpips_squeeze", weights=None)
    assert lpips.extractor.arch == "squeezenet1_1"
    assert lpips.extractor.taps == ("relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9")
    assert lpips.terms[0].options["normalize_channels"] is True
    with pytest.raises(ValueError, match="pooling='avg' conflicts with the preset's pooling 'max'"):
        PerceptualLoss(preset="lpips_squeeze", pooling="avg", weights=None)


def test_dino_preset_brings_its_extractor_options():
    """dino_perceptual_v2 implies transformers' size rules (see docs/losses.md); the loss keeps them."""
    loss = PerceptualLoss(preset="dino_perceptual_v2", weights=None)
    dino = loss.extractor
    assert dino.arch == "dinov2_vitb14" and len(dino.taps) == 12
    assert (dino.pos_interpolation, dino.remainder, dino.max_side) == ("transformers", "drop", 512)
