"""Tests for featx.losses: loss modules on images, BasicSR / piq / TTSR reproduction.

The BasicSR and TTSR references below are minimal re-implementations of their forward semantics
written for this test (BasicSR ``basicsr/losses/basic_loss.py`` PerceptualLoss with
``basicsr/archs/vgg_arch.py`` VGGFeatureExtractor; TTSR ``loss/loss.py`` and ``model/Vgg19.py``),
run on a torchvision VGG19 ``features`` stack with the same random state dict as featx. piq is
called directly (installed), with that stack passed as its feature extractor so nothing downloads.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from featx.backbones.lte import LTE
from featx.backbones.vgg.features import VGGFeatures
from featx.functional import gram_matrix, perceptual_loss, style_loss
from featx.losses import FeatureLoss, PerceptualLoss, StyleLoss, TextureLoss
from featx.losses.texture import contextual_loss, moment_loss, sliced_wasserstein_loss
from featx.losses.transferal import TransferalPerceptualOnFeatures, transferal_perceptual_loss

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def vgg19_features() -> nn.Sequential:
    """torchvision's VGG19 ``features`` (configuration E) with a fixed random initialisation, float64."""
    torch.manual_seed(1234)
    return make_layers(cfgs["E"]).double().eval().requires_grad_(False)


def canonical_names(features: nn.Sequential) -> list[str]:
    """Layer names from the module types (BasicSR's NAMES['vgg19'] list)."""
    names, block, conv = [], 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        else:
            names.append(f"pool{block}")
            block, conv = block + 1, 0
    return names


def rel(a, b) -> float:
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) / max(abs(b), 1e-30)


# ------------------------------------------------------------------ BasicSR reference


class BasicSRPerceptualReference:
    """BasicSR PerceptualLoss forward semantics (vgg_type vgg19, remove_pooling False, stride 2)."""

    def __init__(self, features, layer_weights, use_input_norm=True, range_norm=False, perceptual_weight=1.0,
                 style_weight=0.0, criterion="l1"):  # fmt: skip
        names = canonical_names(features)
        last = max(names.index(name) for name in layer_weights)
        self.layers = list(zip(names[: last + 1], list(features)[: last + 1], strict=True))
        self.layer_weights, self.use_input_norm, self.range_norm = layer_weights, use_input_norm, range_norm
        self.perceptual_weight, self.style_weight, self.criterion_type = perceptual_weight, style_weight, criterion
        # BasicSR master maps 'l2' to nn.MSELoss (release 1.4.2 names torch.nn.L2loss, which does not exist)
        self.criterion = {"l1": nn.L1Loss(), "l2": nn.MSELoss(), "fro": None}[criterion]

    def features(self, x):
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - IMAGENET_MEAN.to(x)) / IMAGENET_STD.to(x)
        out = {}
        for name, layer in self.layers:
            x = layer(x)
            if name in self.layer_weights:
                out[name] = x.clone()
        return out

    @staticmethod
    def gram(x):
        n, c, h, w = x.size()
        f = x.view(n, c, w * h)
        return f.bmm(f.transpose(1, 2)) / (c * h * w)

    def __call__(self, x, gt):
        xf, gf = self.features(x), self.features(gt.detach())
        percep = style = None
        if self.perceptual_weight > 0:
            percep = 0
            for k in xf:
                if self.criterion_type == "fro":
                    percep += torch.norm(xf[k] - gf[k], p="fro") * self.layer_weights[k]
                else:
                    percep += self.criterion(xf[k], gf[k]) * self.layer_weights[k]
            percep *= self.perceptual_weight
        if self.style_weight > 0:
            style = 0
            for k in xf:
                if self.criterion_type == "fro":
                    style += torch.norm(self.gram(xf[k]) - self.gram(gf[k]), p="fro") * self.layer_weights[k]
                else:
                    style += self.criterion(self.gram(xf[k]), self.gram(gf[k])) * self.layer_weights[k]
            style *= self.style_weight
        return percep, style


def group_sum(terms: dict, group: str) -> torch.Tensor:
    return sum(v for k, v in terms.items() if k.startswith(group + "/"))


BASICSR_LAYERS = {"conv1_2": 0.1, "relu2_1": 1.0, "conv3_4": 1.0, "conv5_4": 0.5}


def test_canonical_names_match_the_documented_indices(vgg19_features):
    names = canonical_names(vgg19_features)
    assert len(names) == 37 and names[29] == "relu5_1" and names[34] == "conv5_4" and names[4] == "pool1"


@pytest.mark.parametrize("criterion,range_norm", [("l1", False), ("l2", True)])
def test_reproduces_basicsr_perceptual_and_style(vgg19_features, criterion, range_norm):
    reference = BasicSRPerceptualReference(vgg19_features, BASICSR_LAYERS, range_norm=range_norm,
                                           perceptual_weight=0.7, style_weight=30.0, criterion=criterion)  # fmt: skip
    featx_criterion = {"l1": "l1", "l2": "mse"}[criterion]
    loss = FeatureLoss(
        perceptual=BASICSR_LAYERS,
        style=BASICSR_LAYERS,
        perceptual_weight=0.7,
        style_weight=30.0,
        criterion=featx_criterion,
        style_criterion=featx_criterion,
        gram_normalize="chw",
        input_range=(-1.0, 1.0) if range_norm else (0.0, 1.0),
        weights=vgg19_features.state_dict(),
    ).double()
    lo = -1.0 if range_norm else 0.0
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * (1 - lo) + lo
    gt = torch.rand(2, 3, 16, 16, dtype=torch.float64) * (1 - lo) + lo
    percep, style = reference(x, gt)
    total, terms = loss(x, gt, return_terms=True)
    assert rel(group_sum(terms, "perceptual"), percep) < 1e-5
    assert rel(group_sum(terms, "style"), style) < 1e-5
    assert rel(total, percep + style) < 1e-5


def test_reproduces_basicsr_fro_criterion(vgg19_features):
    layers = {"relu1_2": 1.0, "conv3_4": 0.5}
    reference = BasicSRPerceptualReference(vgg19_features, layers, style_weight=2.0, criterion="fro")
    loss = FeatureLoss(perceptual=layers, style=layers, style_weight=2.0, criterion="fro", style_criterion="fro",
                       reduction="none", weights=vgg19_features.state_dict()).double()  # fmt: skip
    x, gt = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    # batch of 1: BasicSR's norm over the whole tensor is featx's per-sample norm
    percep, style = reference(x[:1], gt[:1])
    total, terms = loss(x[:1], gt[:1], return_terms=True)
    assert rel(group_sum(terms, "perceptual"), percep) < 1e-5 and rel(group_sum(terms, "style"), style) < 1e-5
    # batch of B: BasicSR's norm is over the batch, i.e. per layer sqrt(sum_b n_b^2) of featx's per-sample norms
    percep, style = reference(x, gt)
    total, terms = loss(x, gt, return_terms=True)
    for group, term_weight, expected in (("perceptual", 1.0, percep), ("style", 2.0, style)):
        combined = sum(
            w * term_weight * torch.sqrt(((terms[f"{group}/{k}"] / (w * term_weight)) ** 2).sum())
            for k, w in layers.items()
        )
        assert rel(combined, expected) < 1e-5


# ------------------------------------------------------------------ the real BasicSR 1.4.2


@pytest.fixture()
def basicsr_perceptual(vgg19_features, monkeypatch):
    """BasicSR 1.4.2's own ``PerceptualLoss`` class (test extra), whose VGG19 is torchvision's,
    built by BasicSR's ``VGGFeatureExtractor`` with the same random weights as featx.

    BasicSR calls ``torchvision.models.vgg.vgg19(pretrained=True)`` (a download) when its
    ``experiments/pretrained_models`` file is absent; only that one call is replaced, by a model
    holding ``vgg19_features``. Everything else (slicing, input norm, clones, criteria, Gram,
    weights) runs BasicSR's code.
    """
    import sys
    import types

    import torchvision

    # basicsr 1.4.2 imports a torchvision module that newer torchvision renamed
    monkeypatch.setitem(sys.modules, "torchvision.transforms.functional_tensor", torchvision.transforms.functional)
    import basicsr.archs.vgg_arch as vgg_arch
    import basicsr.losses.basic_loss as basic_loss  # the test extra pins basicsr 1.4.2

    def vgg19(pretrained=False, **kwargs):
        with torch.device("meta"):  # the classifier is never used; do not allocate 500 MB for it
            model = torchvision.models.vgg19(weights=None)
        model.features = copy.deepcopy(vgg19_features)
        return model

    monkeypatch.setattr(vgg_arch, "vgg", types.SimpleNamespace(vgg19=vgg19))
    monkeypatch.setattr(vgg_arch, "VGG_PRETRAIN_PATH", "/nonexistent/vgg19-dcbb9e9d.pth")
    return basic_loss.PerceptualLoss


def test_real_esrgan_preset_with_style_weight_equals_real_basicsr(basicsr_perceptual, vgg19_features):
    """``FeatureLoss(preset=..., style_weight=s)`` has BasicSR's terms: the preset's layers and
    criterion (l1) for the style term too, Gram normalised by C*H*W. Reference: BasicSR 1.4.2's
    ``PerceptualLoss(layer_weights, criterion='l1', style_weight=s)``, run in float64 (its ImageNet
    mean/std buffers are float32 values, so agreement is to ~1e-7 relative, not 1e-15)."""
    from featx.presets import PRESETS

    layer_weights = dict(PRESETS["real_esrgan"].layer_weights)
    reference = basicsr_perceptual(layer_weights, perceptual_weight=1.0, style_weight=0.5, criterion="l1").double()
    loss = FeatureLoss(preset="real_esrgan", style_weight=0.5, weights=vgg19_features.state_dict()).double()
    x, gt = torch.rand(2, 3, 32, 32, dtype=torch.float64), torch.rand(2, 3, 32, 32, dtype=torch.float64)
    percep, style = reference(x, gt)
    total, terms = loss(x, gt, return_terms=True)
    assert [t.options["criterion"] for t in loss.terms] == ["l1", "l1"]
    assert rel(group_sum(terms, "perceptual"), percep) < 1e-6
    assert rel(group_sum(terms, "style"), style) < 1e-6
    assert rel(total, percep + style) < 1e-6


def test_explicit_terms_equal_real_basicsr_fro_and_l1(basicsr_perceptual, vgg19_features):
    """Without a preset: ``style=`` the same layers and ``style_criterion=criterion``."""
    layers = {"relu1_2": 1.0, "conv3_4": 0.5}
    sd = vgg19_features.state_dict()
    x, gt = torch.rand(1, 3, 16, 16, dtype=torch.float64), torch.rand(1, 3, 16, 16, dtype=torch.float64)
    for criterion, range_norm in (("fro", False), ("l1", True)):
        reference = basicsr_perceptual(layers, perceptual_weight=0.7, style_weight=2.0, criterion=criterion,
                                       range_norm=range_norm).double()  # fmt: skip
        loss = FeatureLoss(perceptual=layers, style=layers, perceptual_weight=0.7, style_weight=2.0,
                           criterion=criterion, style_criterion=criterion, weights=sd,
                           input_range=(-1, 1) if range_norm else (0, 1)).double()  # fmt: skip
        inputs = (2 * x - 1, 2 * gt - 1) if range_norm else (x, gt)
        percep, style = reference(*inputs)
        _, terms = loss(*inputs, return_terms=True)
        assert rel(group_sum(terms, "perceptual"), percep) < 1e-6, criterion
        assert rel(group_sum(terms, "style"), style) < 1e-6, criterion


def test_presets_never_drop_or_change_a_requested_term():
    kwargs = {"arch": "vgg11", "weights": None}
    # a preset without Gram layers lends its layers and criterion to style_weight > 0 (BasicSR)
    lw = {"relu1_1": 1.0, "relu2_1": 0.5}
    esrgan_like = FeatureLoss(perceptual=lw, style_weight=0.5, preset=None, style=lw, **kwargs)
    assert [t.group for t in esrgan_like.terms] == ["perceptual", "style"]
    real = FeatureLoss(preset="real_esrgan", style_weight=0.5, weights=None)
    assert [t.group for t in real.terms] == ["perceptual", "style"]
    assert real.terms[1].layer_weights == real.terms[0].layer_weights
    assert real.terms[1].options == {"criterion": "l1", "normalize": "chw", "eps": 1e-3}
    assert real.terms[1].weight == 0.5
    # with a preset, explicit style layers also default to the preset's criterion
    explicit = FeatureLoss(preset="real_esrgan", style={"conv2_2": 1.0}, weights=None)
    assert explicit.terms[1].options["criterion"] == "l1"
    # BasicSR's switches: weight 0 leaves a preset's term out
    only_style = FeatureLoss(preset="real_esrgan", perceptual_weight=0, style_weight=1.0, weights=None)
    assert [t.group for t in only_style.terms] == ["style"]
    assert [t.group for t in FeatureLoss(preset="real_esrgan", style_weight=0, weights=None).terms] == ["perceptual"]
    # every combination that would drop or silently ignore what was asked for raises, naming it
    with pytest.raises(ValueError, match=r"style_weight given, but the loss has no term that uses it"):
        FeatureLoss(perceptual=lw, style_weight=0.5, **kwargs)
    with pytest.raises(ValueError, match=r"style_weight=0 would drop the style term given by style="):
        FeatureLoss(perceptual=lw, style=lw, style_weight=0, **kwargs)
    with pytest.raises(ValueError, match=r"perceptual_weight=0 would drop the perceptual term"):
        FeatureLoss(perceptual=lw, perceptual_weight=0, **kwargs)
    with pytest.raises(ValueError, match=r"texture_kind, texture_weight given"):
        FeatureLoss(perceptual=lw, texture_kind="moments", texture_weight=2.0, **kwargs)
    with pytest.raises(ValueError, match=r"texture_options given"):
        FeatureLoss(perceptual=lw, texture_options={"seed": 0}, **kwargs)
    with pytest.raises(ValueError, match=r"style_criterion, gram_normalize given"):
        FeatureLoss(perceptual=lw, style_criterion="l1", gram_normalize="hw", **kwargs)
    with pytest.raises(ValueError, match=r"criterion, normalize_channels given"):
        FeatureLoss(style=lw, criterion="l1", normalize_channels=True, **kwargs)
    with pytest.raises(ValueError, match=r"texture_weight=0 would drop the texture term"):
        FeatureLoss(texture=lw, texture_weight=0, **kwargs)
    # options of a term switched off with weight 0 are fine (BasicSR configurations pass them)
    FeatureLoss(perceptual=lw, style_weight=0, style_criterion="l1", **kwargs)


# ------------------------------------------------------------------ the real lpips package


def test_lpips_vgg_preset_matches_real_lpips_baseline():
    """The ``lpips_vgg`` preset against ``lpips.LPIPS(net="vgg", lpips=False)`` (the uncalibrated
    baseline of the lpips package, test extra) with the same random VGG16 weights, in float64.

    lpips sums squared differences of unit-normalised features over channels and averages over
    positions; featx's ``mse`` averages over channels too, so lpips' per-layer value is C times
    featx's term, and the preset's terms times C_l add up to the lpips value. lpips scales inputs
    with its ScalingLayer (ImageNet statistics rounded to 3 decimals), so featx gets the scaled
    images with ``input_range="normalized"``.
    """
    import lpips  # in the test extra
    import torchvision
    reference = lpips.LPIPS(net="vgg", lpips=False, pnet_rand=True, verbose=False).double()
    ours = torchvision.models.vgg16(weights=None).features.double()
    convs = [m for m in reference.net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, src in zip(convs, [m for m in ours if isinstance(m, nn.Conv2d)], strict=True):
            conv.weight.copy_(src.weight)
            conv.bias.copy_(src.bias)
    x, y = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1, torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    value, per_layer = reference(x, y, retPerLayer=True)
    loss = PerceptualLoss(preset="lpips_vgg", reduction="none", input_range="normalized",
                          weights=ours.state_dict()).double()  # fmt: skip
    _, terms = loss(reference.scaling_layer(x), reference.scaling_layer(y), return_terms=True)
    channels = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512, "relu5_3": 512}
    total = 0
    for (name, c), layer_value in zip(channels.items(), per_layer, strict=True):
        torch.testing.assert_close(terms[f"perceptual/{name}"] * c, layer_value.flatten(), rtol=1e-10, atol=0)
        total = total + terms[f"perceptual/{name}"] * c
    torch.testing.assert_close(total, value.flatten(), rtol=1e-10, atol=0)


# ------------------------------------------------------------------ piq


@pytest.mark.parametrize("distance,criterion", [("mse", "mse"), ("mae", "l1")])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_reproduces_piq_content_and_style(vgg19_features, distance, criterion, reduction):
    import piq  # in the test extra
    layers, piq_weights = ["relu1_2", "relu2_2", "relu3_1"], [0.5, 1.0, 2.0]
    index = {name: str(i) for i, name in enumerate(canonical_names(vgg19_features))}
    # features[:12] ends at relu3_1 and keeps the names '0'..'11' piq looks up; deeper layers cannot
    # change these taps, so this only saves time (and lets 16x16 inputs through)
    kwargs = dict(feature_extractor=vgg19_features[:12], layers=[index[n] for n in layers], weights=piq_weights,
                  distance=distance, reduction=reduction)  # fmt: skip
    content, style = piq.ContentLoss(**kwargs), piq.StyleLoss(**kwargs)
    channels = {"relu1_2": 64, "relu2_2": 128, "relu3_1": 256}
    x, y = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)
    state = vgg19_features.state_dict()
    # piq's content loss averages over H, W but sums over channels: featx weight = piq weight x C
    featx_content = PerceptualLoss({n: w * channels[n] for n, w in zip(layers, piq_weights, strict=True)}, criterion=criterion,
                                   reduction=reduction, weights=state).double()  # fmt: skip
    # piq's Gram is unnormalised: normalize=None
    featx_style = StyleLoss(dict(zip(layers, piq_weights, strict=True)), criterion=criterion, normalize=None, reduction=reduction,
                            weights=state).double()  # fmt: skip
    for ours, theirs in ((featx_content(x, y), content(x, y)), (featx_style(x, y), style(x, y))):
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs.double(), rtol=1e-5, atol=0)


def test_reproduces_piq_normalized_features(vgg19_features):
    import piq  # in the test extra
    content = piq.ContentLoss(
        feature_extractor=vgg19_features[:9], layers=["8"], weights=[1.0], normalize_features=True
    )
    loss = PerceptualLoss({"relu2_2": 128.0}, criterion="mse", normalize_channels=True,
                          weights=vgg19_features.state_dict()).double()  # fmt: skip
    x, y = torch.rand(1, 3, 16, 16, dtype=torch.float64), torch.rand(1, 3, 16, 16, dtype=torch.float64)
    assert rel(loss(x, y), content(x, y)) < 1e-5


# ------------------------------------------------------------------ TTSR


class TTSRTPerceptualReference:
    """TTSR loss/loss.py TPerceptualLoss.forward(map_lv3, map_lv2, map_lv1, S, T_lv3, T_lv2, T_lv1)."""

    def __init__(self, use_S, type):  # noqa: A002 - TTSR's argument name
        self.use_S, self.type = use_S, type

    def __call__(self, map_lv3, map_lv2, map_lv1, S, T_lv3, T_lv2, T_lv1):
        if self.use_S:
            S_lv3 = torch.sigmoid(S)
            S_lv2 = torch.sigmoid(F.interpolate(S, size=(S.size(-2) * 2, S.size(-1) * 2), mode="bicubic"))
            S_lv1 = torch.sigmoid(F.interpolate(S, size=(S.size(-2) * 4, S.size(-1) * 4), mode="bicubic"))
        else:
            S_lv3, S_lv2, S_lv1 = 1.0, 1.0, 1.0
        f = F.l1_loss if self.type == "l1" else F.mse_loss
        loss = f(map_lv3 * S_lv3, T_lv3 * S_lv3)
        loss += f(map_lv2 * S_lv2, T_lv2 * S_lv2)
        loss += f(map_lv1 * S_lv1, T_lv1 * S_lv1)
        return loss / 3.0


def ttsr_levels(batch=2, h=3, w=2, channels=(4, 5, 6), dtype=torch.float64, requires_grad=False):
    c1, c2, c3 = channels
    shapes = [(batch, c1, 4 * h, 4 * w), (batch, c2, 2 * h, 2 * w), (batch, c3, h, w)]
    return [torch.randn(s, dtype=dtype, requires_grad=requires_grad) for s in shapes]


@pytest.mark.parametrize("criterion", ["l1", "l2"])
@pytest.mark.parametrize("use_s", [False, True])
def test_transferal_perceptual_loss_matches_ttsr(criterion, use_s):
    sr, t = ttsr_levels(), ttsr_levels()
    s = torch.randn(2, 1, 3, 2, dtype=torch.float64)
    expected = TTSRTPerceptualReference(use_s, criterion)(sr[2], sr[1], sr[0], s, t[2], t[1], t[0])
    module = TransferalPerceptualOnFeatures(criterion=criterion, use_soft_attention=use_s)
    total, terms = module(sr, t, s, return_terms=True)
    assert rel(total, expected) < 1e-10 and rel(sum(terms.values()), total) < 1e-12
    assert torch.equal(total, transferal_perceptual_loss(sr, t, s if use_s else None, criterion=criterion))


def test_transferal_perceptual_gram_variant_matches_einsum_reference():
    sr, t = ttsr_levels(), ttsr_levels()
    s = torch.randn(2, 1, 3, 2, dtype=torch.float64)
    weights = [torch.sigmoid(F.interpolate(s, scale_factor=k, mode="bicubic")) for k in (4, 2)] + [torch.sigmoid(s)]
    expected = 0
    for a, b, w in zip(sr, t, weights, strict=True):  # einsum Gram / (C H W), MSE over the C x C entries, mean over levels
        ga, gb = (torch.einsum("bchw,bdhw->bcd", v * w, v * w) / v[0].numel() for v in (a, b))
        expected = expected + ((ga - gb) ** 2).mean() / 3
    assert rel(transferal_perceptual_loss(sr, t, s, criterion="gram"), expected) < 1e-10


@pytest.mark.parametrize("criterion", ["l1", "l2", "gram"])
def test_transferal_perceptual_gradcheck(criterion):
    sr = ttsr_levels(batch=1, h=1, w=1, channels=(2, 2, 3), requires_grad=True)
    t = ttsr_levels(batch=1, h=1, w=1, channels=(2, 2, 3), requires_grad=True)
    s = torch.randn(1, 1, 1, 1, dtype=torch.float64, requires_grad=True)

    def fn(*args):
        return transferal_perceptual_loss(args[:3], args[3:6], args[6], criterion=criterion)

    assert torch.autograd.gradcheck(fn, (*sr, *t, s))


def test_transferal_perceptual_with_synced_frozen_lte_copy():
    lte = LTE(weights=None)  # learnable, inside the SR model
    lte_copy = LTE(weights=None, requires_grad=False)  # frozen copy for the loss
    lte_copy.load_state_dict(lte.state_dict())  # TTSR syncs it every step
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    with torch.no_grad():
        t_levels = lte(torch.rand(1, 3, 16, 16))
    sr_levels = lte_copy(sr)
    assert all(torch.equal(a, b) for a, b in zip(sr_levels, lte(sr), strict=True))  # the sync copied the weights
    loss = TransferalPerceptualOnFeatures()(sr_levels, t_levels, torch.randn(1, 1, 4, 4))
    loss.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and float(sr.grad.abs().sum()) > 0
    assert all(p.grad is None for p in lte_copy.parameters()) and all(p.grad is None for p in lte.parameters())


def test_ttsr_preset_matches_ttsr_vgg19_perceptual_loss(vgg19_features):
    # TTSR trainer: per_w * mse(vgg19((sr + 1) / 2), vgg19((hr + 1) / 2)) with Vgg19 = MeanShift + features[:30]
    loss = PerceptualLoss(preset="ttsr", input_range=(-1, 1), weights=vgg19_features.state_dict()).double()
    assert loss.extractor.taps == ("relu5_1",) and loss.terms[0].options["criterion"] == "mse"
    sr = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    hr = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    slice1 = vgg19_features[:30]
    mean, std = IMAGENET_MEAN.double(), IMAGENET_STD.double()
    expected = 1e-2 * F.mse_loss(slice1(((sr + 1) / 2 - mean) / std), slice1(((hr + 1) / 2 - mean) / std))
    assert rel(loss(sr, hr), expected) < 1e-5


# ------------------------------------------------------------------ module behaviour


def small_loss(**kwargs):
    kwargs.setdefault("arch", "vgg11")
    kwargs.setdefault("weights", None)
    return FeatureLoss(**kwargs)


def test_modules_equal_functions_on_the_extractor_features():
    lw = {"relu1_1": 1.0, "relu2_1": 0.5}
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    perceptual = PerceptualLoss(lw, arch="vgg11", weights=None, criterion="charbonnier")
    ext = perceptual.extractor
    fx, fy = ext(x), ext(y)
    assert torch.equal(perceptual(x, y), perceptual_loss(fx, fy, lw, criterion="charbonnier"))
    style = StyleLoss(lw, extractor=ext, normalize="hw", criterion="l1")
    assert torch.equal(style(x, y), style_loss(fx, fy, lw, normalize="hw", criterion="l1"))
    cases = [
        ("sliced_wasserstein", {"seed": 3, "num_projections": 8}, sliced_wasserstein_loss),
        ("moments", {"eps": 1e-4}, moment_loss),
        ("contextual", {"seed": 1, "band_width": 0.2, "max_positions": 64}, contextual_loss),
    ]
    for kind, options, function in cases:
        texture = TextureLoss(lw, kind=kind, extractor=ext, **options)
        assert torch.equal(texture(x, y), function(fx, fy, lw, **options))
    gram = TextureLoss(lw, kind="gram", extractor=ext, normalize=None)
    assert torch.equal(gram(x, y), style_loss(fx, fy, lw, normalize=None))


def test_feature_loss_one_pass_each_and_terms_equal_separate_modules():
    loss = small_loss(perceptual={"relu2_1": 1.0}, style={"relu1_1": 1.0, "relu2_1": 2.0}, style_weight=50.0,
                      texture={"relu1_1": 1.0}, texture_weight=0.1, texture_options={"seed": 0})  # fmt: skip
    assert loss.extractor.taps == ("relu1_1", "relu2_1")  # exactly the union of the needed taps
    calls = []
    loss.extractor.register_forward_hook(lambda module, args, out: calls.append(torch.is_grad_enabled()))
    x, y = torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 16, 16, requires_grad=True)
    total, terms = loss(x, y, return_terms=True)
    assert calls == [False, True]  # one pass over the target under no_grad, one over the input
    assert sorted(terms) == ["perceptual/relu2_1", "style/relu1_1", "style/relu2_1", "texture/relu1_1"]
    assert torch.allclose(sum(terms.values()), total, rtol=1e-6, atol=0)
    ext = loss.extractor
    separate = (
        PerceptualLoss({"relu2_1": 1.0}, extractor=ext)(x, y)
        + 50.0 * StyleLoss({"relu1_1": 1.0, "relu2_1": 2.0}, extractor=ext)(x, y)
        + 0.1 * TextureLoss({"relu1_1": 1.0}, extractor=ext, seed=0)(x, y)
    )
    assert rel(total, separate) < 1e-6
    total.backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    assert y.grad is None  # the target branch is not differentiated


def test_gradients_reach_the_input_only_and_nothing_is_saved():
    loss = PerceptualLoss({"conv2_1": 1.0, "relu1_1": 1.0}, arch="vgg11", weights=None)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(x, torch.rand(1, 3, 16, 16)).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    parent = nn.Module()
    parent.net, parent.loss = nn.Conv2d(3, 3, 1), loss
    assert sorted(parent.state_dict()) == ["net.bias", "net.weight"]
    parent.train()
    assert not loss.extractor.training  # frozen extractor stays in eval mode


def test_identical_inputs_give_zero_and_finite_gradients():
    loss = small_loss(perceptual={"relu1_1": 1.0, "relu2_1": 1.0}, criterion="fro", style={"relu2_1": 1.0},
                      style_criterion="fro", texture={"relu1_1": 1.0}, texture_options={"seed": 0})  # fmt: skip
    image = torch.rand(1, 3, 16, 16)
    x = image.clone().requires_grad_()
    value = loss(x, image)
    value.backward()
    assert float(value.detach()) == 0.0 and torch.isfinite(x.grad).all()


def test_module_gradcheck_float64():
    loss = PerceptualLoss({"conv1_1": 1.0, "relu1_1": 0.5}, arch="vgg11", weights=None, criterion="mse").double()
    x = torch.rand(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    loss.set_target(torch.rand(1, 3, 3, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda v: loss(v), (x,))


def test_set_target_caches_one_pass_and_broadcasts():
    loss = StyleLoss({"relu1_1": 1.0, "relu2_1": 1.0}, arch="vgg11", weights=None)
    style_image, x = torch.rand(1, 3, 24, 24), torch.rand(3, 3, 16, 16)
    direct = loss(x, style_image, return_terms=True)
    loss.set_target(style_image)
    assert loss.has_target and list(loss.state_dict()) == []
    calls = []
    loss.extractor.register_forward_hook(lambda *args: calls.append(1))
    cached = loss(x, return_terms=True)
    assert len(calls) == 1  # only the input goes through the backbone
    assert torch.allclose(cached[0], direct[0], rtol=1e-6) and cached[1].keys() == direct[1].keys()
    clone = copy.deepcopy(loss)
    assert torch.equal(clone(x), loss(x))
    loss.clear_target()
    with pytest.raises(ValueError, match="no target: pass target= or cache one with set_target"):
        loss(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_feature_loss_finite_under_autocast_with_large_activations(dtype):
    loss = small_loss(perceptual={"relu1_1": 1.0, "relu2_1": 1.0}, style={"relu1_1": 1.0, "relu2_1": 1.0},
                      texture={"relu2_1": 1.0}, texture_options={"seed": 0}, input_range="normalized")  # fmt: skip
    x = (torch.rand(2, 3, 16, 16) * 1e3).requires_grad_()  # normalised inputs of ~1e3: activations ~1e3+
    y = torch.rand(2, 3, 16, 16) * 1e3
    with torch.autocast("cpu", dtype=dtype):
        total, terms = loss(x, y, return_terms=True)
    reference = loss(x.detach(), y)  # fp32 path
    assert total.dtype == torch.float32 and torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    assert rel(total.detach(), reference) < 0.05  # low-precision backbone: a few percent at most
    total.backward()
    assert torch.isfinite(x.grad).all()


def test_presets_build_the_documented_terms():
    esrgan = PerceptualLoss(preset="esrgan", weights=None)
    assert esrgan.extractor.arch == "vgg19" and esrgan.extractor.taps == ("conv5_4",)
    assert esrgan.terms[0].options["criterion"] == "l1" and esrgan.terms[0].layer_weights == {"conv5_4": 1.0}
    default = PerceptualLoss(extractor=esrgan.extractor)  # no layer_weights, no preset: esrgan
    assert default.terms[0].layer_weights == {"conv5_4": 1.0}
    lpips = PerceptualLoss(preset="lpips_vgg", weights=None)
    assert lpips.extractor.arch == "vgg16" and lpips.terms[0].options["normalize_channels"] is True
    gatys = FeatureLoss(preset="gatys", weights=None)
    assert gatys.extractor.pooling == "avg"
    assert [t.group for t in gatys.terms] == ["perceptual", "style"]
    assert gatys.terms[1].layer_weights == {f"relu{i}_1": 0.2 for i in range(1, 6)}
    ttsr = PerceptualLoss(preset="ttsr", extractor=VGGFeatures("vgg19", "relu5_1", weights=None))
    assert ttsr.terms[0].layer_weights == {"relu5_1": 1e-2} and ttsr.terms[0].options["criterion"] == "mse"


# ------------------------------------------------------------------ bad arguments


def test_unknown_names_list_valid_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'esrgn'. Did you mean 'esrgan'.*Valid choices: .*'lpips_vgg'"):
        PerceptualLoss(preset="esrgn")
    with pytest.raises(ValueError, match=r"unknown criterion 'L1'.*'l1', 'l2', 'mse', 'charbonnier', 'fro'"):
        PerceptualLoss({"relu1_1": 1.0}, criterion="L1", arch="vgg11", weights=None)
    with pytest.raises(ValueError, match=r"unknown reduction 'batchmean'.*'mean', 'sum', 'none'"):
        StyleLoss({"relu1_1": 1.0}, reduction="batchmean", arch="vgg11", weights=None)
    with pytest.raises(ValueError, match=r"unknown tap 'relu2_3' for vgg11. Did you mean 'relu2_1'\? Valid choices: 'conv1_1'"):
        PerceptualLoss({"relu2_3": 1.0}, arch="vgg11", weights=None)
    with pytest.raises(ValueError, match=r"unknown texture kind 'swd'.*'sliced_wasserstein', 'moments'"):
        TextureLoss({"relu1_1": 1.0}, kind="swd", arch="vgg11", weights=None)
    with pytest.raises(ValueError, match=r"unknown option 'num_projection'.*Did you mean 'num_projections'"):
        TextureLoss({"relu1_1": 1.0}, num_projection=4, arch="vgg11", weights=None)
    with pytest.raises(ValueError, match="band_width must be a positive number"):
        TextureLoss({"relu1_1": 1.0}, kind="contextual", band_width=-1.0, arch="vgg11", weights=None)
    with pytest.raises(ValueError, match="defines no loss"):
        PerceptualLoss(preset="ttsr_lte")


def test_shared_extractor_checks():
    ext = VGGFeatures("vgg11", ["relu1_1", "relu2_1"], weights=None)
    with pytest.raises(ValueError, match=r"no tap 'relu3_1' needed by the loss; it has relu1_1, relu2_1"):
        FeatureLoss(perceptual={"relu1_1": 1.0}, style={"relu3_1": 1.0}, extractor=ext)
    with pytest.raises(ValueError, match=r"arch='vgg19' does not match the shared extractor's arch 'vgg11'"):
        PerceptualLoss({"relu1_1": 1.0}, arch="vgg19", extractor=ext)
    with pytest.raises(ValueError, match=r"input_range=.*does not match"):
        PerceptualLoss({"relu1_1": 1.0}, input_range=(-1, 1), extractor=ext)
    with pytest.raises(ValueError, match="cannot be combined with extractor="):
        PerceptualLoss({"relu1_1": 1.0}, weights=None, extractor=ext)
    with pytest.raises(ValueError, match="conflicts with the preset's arch 'vgg19'"):
        PerceptualLoss(preset="esrgan", arch="vgg16", weights=None)
    with pytest.raises(TypeError, match="extractor must be a featx.VGGFeatures"):
        PerceptualLoss({"relu1_1": 1.0}, extractor=nn.Identity())
    shared = PerceptualLoss({"relu2_1": 1.0}, input_range=(0, 1), arch="vgg11", extractor=ext)
    assert shared.extractor is ext


def test_bad_images_and_nonfinite_features():
    loss = PerceptualLoss({"relu1_1": 1.0}, arch="vgg11", weights=None, check_finite=True)
    with pytest.raises(ValueError, match="expected 3 channels"):
        loss(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))
    bad = torch.rand(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="feature 'relu1_1' contains NaN or Inf"):
        loss(bad, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"'relu1_1': pred shape \(1, 64, 8, 8\) and target shape \(1, 64, 16, 16\)"):
        PerceptualLoss({"relu1_1": 1.0}, extractor=loss.extractor)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="use_soft_attention=True needs the soft-attention map"):
        TransferalPerceptualOnFeatures(use_soft_attention=True)(ttsr_levels(), ttsr_levels())
    with pytest.raises(ValueError, match=r"unknown criterion 'l3'.*'l1', 'l2', 'mse', 'gram'"):
        TransferalPerceptualOnFeatures(criterion="l3")
    with pytest.raises(ValueError, match=r"level lv2: SR shape .* and texture shape .* differ"):
        transferal_perceptual_loss(ttsr_levels(), ttsr_levels(channels=(4, 6, 6)))
    with pytest.raises(ValueError, match=r"soft_attention must have shape \(2, 1, 3, 2\)"):
        transferal_perceptual_loss(ttsr_levels(), ttsr_levels(), torch.zeros(2, 1, 6, 4))


def test_cached_style_target_is_the_gram_of_the_extractor_features():
    loss = StyleLoss({"relu1_1": 1.0}, arch="vgg11", weights=None, normalize="hw")
    image, x = torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8)
    loss.set_target(image)
    grams = {"relu1_1": gram_matrix(loss.extractor(image)["relu1_1"], normalize="hw")}
    expected = style_loss(loss.extractor(x), None, {"relu1_1": 1.0}, normalize="hw", target_grams=grams)
    assert torch.equal(loss(x), expected)
    assert math.isclose(float(loss(image)), 0.0, abs_tol=1e-12)
