"""featx.LPIPS against the real ``lpips`` package (0.1.4, test extra) on identical weights.

The reference is ``lpips.LPIPS(net=..., pnet_rand=True)``: a random torchvision backbone (no
download) and lpips' own v0.1 linear layers, which ship inside the package. featx gets the same
backbone tensors as a state dict and the same linear-layer file, so any difference is featx's.
Nothing here touches the network.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import shutil
import warnings
from pathlib import Path

import lpips
import pytest
import torch

import featx
from featx.errors import HashMismatchError, UnverifiedWeightsWarning, WeightsLoadError, WeightsNotFoundError
from featx.metrics.lpips import LPIPS, LPIPS_NETS
from featx.weights import MetricWeights

SHIPPED = Path(lpips.__file__).parent / "weights" / "v0.1"
LPIPS_FILES = {
    "alex": MetricWeights.LPIPS_ALEX_V0_1,
    "vgg": MetricWeights.LPIPS_VGG_V0_1,
    "squeeze": MetricWeights.LPIPS_SQUEEZE_V0_1,
}
SIZES = {"alex": 64, "vgg": 32, "squeeze": 48}
NETS = ["alex", "vgg", "squeeze"]


def shipped(net: str) -> Path:
    return SHIPPED / f"{net}.pth"


@functools.cache
def _reference(net: str, spatial: bool) -> lpips.LPIPS:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warning for pretrained=False
        return lpips.LPIPS(net=net, pnet_rand=True, verbose=False, spatial=spatial).requires_grad_(False)


def reference(net: str, *, spatial: bool = False) -> lpips.LPIPS:
    """lpips with a random backbone (built once per variant: VGG16's random init is slow) and its v0.1 lin layers."""
    return copy.deepcopy(_reference(net, spatial))


def backbone_state(ref: lpips.LPIPS) -> dict[str, torch.Tensor]:
    """lpips' ``net.slice{k}.{i}.*`` keys are torchvision's ``features.{i}.*`` (``features.{i}.squeeze.*``
    for SqueezeNet's Fire modules)."""
    return {re.sub(r"^net\.slice\d+\.", "features.", k): v for k, v in ref.state_dict().items() if k.startswith("net.")}


def ours(net: str, ref: lpips.LPIPS, **kwargs) -> LPIPS:
    return LPIPS(net, weights=backbone_state(ref), lin_weights=shipped(net), **kwargs)


def images(net: str, batch: int = 3, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    size = SIZES[net]
    return (torch.rand(batch, 3, size, size, generator=gen, dtype=dtype) for _ in range(2))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def lin_state(net: str, value: float = 0.5) -> dict[str, torch.Tensor]:
    return {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), value) for k, c in enumerate(LPIPS_NETS[net][2])}


# ---------------------------------------------------------------------------------------------
# The shipped files are the registered ones
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", NETS)
def test_shipped_lin_files_have_the_registered_sha256(net):
    member = LPIPS_FILES[net]
    assert hashlib.sha256(shipped(net).read_bytes()).hexdigest() == member.sha256_prefix  # the full digest
    assert member.url.endswith(f"/lpips/weights/v0.1/{net}.pth")
    assert member.file_name == f"lpips_{net}_v0.1.pth"


# ---------------------------------------------------------------------------------------------
# Equal to lpips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("input_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_values_match_lpips_fp32(net, input_range):
    ref = reference(net)
    metric = ours(net, ref, input_range=input_range, reduction="none")
    x, y = images(net)
    expected = ref(2 * x - 1, 2 * y - 1).flatten()  # lpips takes [-1, 1]
    lo, hi = input_range
    got = metric(x * (hi - lo) + lo, y * (hi - lo) + lo)
    assert got.shape == (3,) and got.dtype == torch.float32
    assert float(((got - expected).abs() / expected.abs()).max()) < 1e-5


@pytest.mark.parametrize("net", NETS)
def test_normalize_true_is_input_range_0_1(net):
    ref = reference(net)
    x, y = images(net, batch=2)
    torch.testing.assert_close(ours(net, ref)(x, y), ref(x, y, normalize=True).mean(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("net", NETS)
def test_input_gradients_match_lpips_float64(net):
    ref = reference(net).double()
    metric = ours(net, ref, reduction="sum").double()
    x, y = images(net, batch=2, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref(x_ref, y, normalize=True).sum().backward()
    metric(x_ours, y).backward()
    assert x_ours.grad is not None and x_ref.grad is not None
    assert rel_err(x_ours.grad, x_ref.grad) < 1e-6
    # symmetric: the target's gradient too
    y_ours = y.clone().requires_grad_(True)
    y_ref = y.clone().requires_grad_(True)
    ref(x, y_ref, normalize=True).sum().backward()
    metric(x, y_ours).backward()
    assert rel_err(y_ours.grad, y_ref.grad) < 1e-6


@pytest.mark.parametrize("net", NETS)
def test_spatial_map_matches_lpips(net):
    ref = reference(net, spatial=True)
    x, y = images(net, batch=2)
    expected = ref(x, y, normalize=True)
    got = ours(net, ref, spatial=True, reduction="none")(x, y)
    assert got.shape == expected.shape == (2, 1, SIZES[net], SIZES[net])
    assert rel_err(got, expected) < 1e-5
    batch_mean = ours(net, ref, spatial=True)(x, y)
    torch.testing.assert_close(batch_mean, got.mean(dim=0))


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_per_layer_terms_match_lpips(net):
    ref = reference(net)
    x, y = images(net, batch=2)
    total, ref_layers = ref(x, y, retPerLayer=True, normalize=True)
    value, terms = ours(net, ref, reduction="none")(x, y, return_terms=True)
    assert list(terms) == list(LPIPS_NETS[net][1])
    for term, expected in zip(terms.values(), ref_layers, strict=True):
        torch.testing.assert_close(term, expected.flatten(), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(sum(terms.values()), value)


# ---------------------------------------------------------------------------------------------
# Reductions, shapes, training-loss behaviour
# ---------------------------------------------------------------------------------------------


def test_reduction_has_one_meaning_and_target_broadcasts():
    ref = reference("alex")
    x, y = images("alex", batch=3)
    metrics = {r: ours("alex", ref, reduction=r) for r in ("none", "sum", "mean")}
    per_sample = metrics["none"](x, y)
    assert per_sample.shape == (3,)
    torch.testing.assert_close(metrics["sum"](x, y), per_sample.sum())
    torch.testing.assert_close(metrics["mean"](x, y), per_sample.mean())
    one = metrics["none"](x, y[:1])
    torch.testing.assert_close(one, metrics["none"](x, y[:1].expand(3, -1, -1, -1)))
    assert metrics["none"](x, x).abs().max() < 1e-6


def test_frozen_module_works_as_a_training_loss():
    ref = reference("alex")
    metric = ours("alex", ref)
    assert not any(p.requires_grad for p in metric.parameters())
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1))
    parent.add_module("lpips", metric)
    parent.train()
    assert not metric.training and not metric.backbone.training
    assert list(parent.state_dict()) == ["0.weight", "0.bias"]  # a frozen metric adds nothing
    parent.load_state_dict(parent.state_dict())  # strict, and keeps the metric's weights
    torch.testing.assert_close(metric.lin[0], torch.load(shipped("alex"), map_location="cpu")["lin0.model.1.weight"])
    x, y = images("alex", batch=2)
    net = parent[0]
    loss = metric(net(x).sigmoid(), y)  # an SR net with outputs in [0, 1]
    loss.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()
    assert all(p.grad is None for p in metric.parameters())


@pytest.mark.parametrize("net", NETS)
def test_autocast_bf16_runs_with_fp32_statistics(net):
    ref = reference(net)
    metric = ours(net, ref, reduction="none")
    x, y = images(net, batch=2)
    full = metric(x, y)
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = metric(x, y)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert float(((low.detach() - full).abs() / full).max()) < 0.05
    low.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_float64_module_and_dtype_mismatch():
    ref = reference("alex")
    metric = ours("alex", ref)
    x, y = images("alex", batch=1)
    with pytest.raises(TypeError, match="dtype"):
        metric(x.double(), y.double())
    assert metric.double()(x.double(), y.double()).dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# Weights: names, files, the offline search, provenance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", NETS)
def test_default_lin_weights_come_from_featx_home(net, monkeypatch, tmp_path):
    home = tmp_path / "fx"
    monkeypatch.setenv("FEATX_HOME", str(home))
    home.mkdir()
    member = LPIPS_FILES[net]
    shutil.copy(shipped(net), home / member.file_name)
    ref = reference(net)
    metric = LPIPS(net, weights=backbone_state(ref))  # lin_weights="DEFAULT"
    assert metric.lin_weights_id == member.name and metric.lin_weights_verified is True
    assert metric.lin_weights_sha256 == member.sha256_prefix
    x, y = images(net, batch=2)
    torch.testing.assert_close(metric(x, y), ref(x, y, normalize=True).mean(), rtol=1e-5, atol=0)
    assert LPIPS(net, weights=backbone_state(ref), lin_weights=member.name).lin_weights_id == member.name


def test_default_lin_weights_in_the_torch_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(shipped("vgg"), hub / "lpips_vgg_v0.1.pth")
    metric = LPIPS("vgg", weights=backbone_state(reference("vgg")))
    assert metric.lin_weights_id == "LPIPS_VGG_V0_1"
    assert metric.lin_weights_sha256 is not None


def test_missing_files_raise_with_the_download_fix():
    state = backbone_state(reference("alex"))
    with pytest.raises(WeightsNotFoundError, match=r"featx weights download LPIPS_ALEX_V0_1") as info:
        LPIPS("alex", weights=state)
    assert "lpips_alex_v0.1.pth" in str(info.value) and len(info.value.searched) == 2
    missing_backbone = r"(?s)alexnet-owt-7be5be79\.pth.*featx weights download ALEXNET_IMAGENET1K_V1"
    with pytest.raises(WeightsNotFoundError, match=missing_backbone):
        LPIPS("alex", lin_weights=lin_state("alex"))  # weights="DEFAULT": the torchvision backbone
    with pytest.raises(WeightsNotFoundError, match=r"vgg16-397923af\.pth"):
        LPIPS("vgg", lin_weights=lin_state("vgg"))
    with pytest.raises(WeightsNotFoundError, match="lin_weights file not found"):
        LPIPS("vgg", weights=backbone_state(reference("vgg")), lin_weights="/nonexistent/lin.pth")


def test_a_different_file_at_the_canonical_name_is_unverified(monkeypatch, tmp_path):
    home = tmp_path / "fx"
    home.mkdir()
    monkeypatch.setenv("FEATX_HOME", str(home))
    torch.save(lin_state("vgg"), home / "lpips_vgg_v0.1.pth")
    state = backbone_state(reference("vgg"))
    with pytest.warns(UnverifiedWeightsWarning, match="LPIPS_VGG_V0_1"):
        metric = LPIPS("vgg", weights=state)
    assert metric.lin_weights_id == "unverified:LPIPS_VGG_V0_1" and metric.lin_weights_verified is False
    with pytest.raises(HashMismatchError) as info:
        LPIPS("vgg", weights=state, verify_weights="error")
    assert info.value.expected == MetricWeights.LPIPS_VGG_V0_1.sha256_prefix


def test_lin_weights_as_path_safetensors_and_state_dict(tmp_path):
    import safetensors.torch

    ref = reference("alex")
    state = torch.load(shipped("alex"), map_location="cpu", weights_only=True)
    pth, st = tmp_path / "mine.pth", tmp_path / "mine.safetensors"
    torch.save(state, pth)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, st)
    x, y = images("alex", batch=2)
    values = []
    for spec in (shipped("alex"), str(pth), st, state):
        metric = LPIPS("alex", weights=backbone_state(ref), lin_weights=spec)
        values.append(metric(x, y))
    assert all(torch.equal(v, values[0]) for v in values)
    assert metric.lin_weights_id == "state_dict" and metric.lin_weights_sha256 is None


def test_lin_weights_are_loaded_strictly():
    state = backbone_state(reference("alex"))
    good = lin_state("alex")
    with pytest.raises(WeightsLoadError, match="missing keys") as info:
        LPIPS("alex", weights=state, lin_weights={k: v for k, v in good.items() if k != "lin4.model.1.weight"})
    assert info.value.missing == ("lin4.model.1.weight",)
    with pytest.raises(WeightsLoadError, match="unexpected keys"):
        LPIPS("alex", weights=state, lin_weights={**good, "extra": torch.zeros(1)})
    with pytest.raises(WeightsLoadError, match=r"expected \(1, 64, 1, 1\), got \(1, 32, 1, 1\)"):
        LPIPS("alex", weights=state, lin_weights={**good, "lin0.model.1.weight": torch.zeros(1, 32, 1, 1)})
    with pytest.raises(WeightsLoadError, match="non-finite"):
        LPIPS("alex", weights=state, lin_weights={**good, "lin0.model.1.weight": torch.full((1, 64, 1, 1), float("nan"))})
    with pytest.raises(WeightsLoadError, match="does not fit"):
        LPIPS("vgg", weights=backbone_state(reference("vgg")), lin_weights=shipped("alex"))


def test_bad_arguments_give_clear_errors():
    state, lin = backbone_state(reference("alex")), lin_state("alex")
    with pytest.raises(featx.FeatxError, match=r"unknown net 'alexnet'\. Did you mean 'alex'\?"):
        LPIPS("alexnet", weights=state, lin_weights=lin)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        LPIPS("alex", weights=state, lin_weights=lin, reduction="avg")
    with pytest.raises(ValueError, match="unknown gray 'rgb'"):
        LPIPS("alex", weights=state, lin_weights=lin, gray="rgb")
    with pytest.raises(TypeError, match="spatial must be a bool"):
        LPIPS("alex", weights=state, lin_weights=lin, spatial=1)
    with pytest.raises(TypeError, match="lin_weights=None"):
        LPIPS("alex", weights=state, lin_weights=None)
    with pytest.raises(ValueError, match="Did you mean 'LPIPS_ALEX_V0_1'"):
        LPIPS("alex", weights=state, lin_weights="LPIPS_ALEX_V0_2")
    with pytest.raises(ValueError, match="LPIPS_VGG_V0_1 holds lpips weights for vgg16"):
        LPIPS("alex", weights=state, lin_weights="LPIPS_VGG_V0_1")
    with pytest.raises(ValueError, match="are lpips layers, not a backbone"):
        LPIPS("alex", weights="LPIPS_ALEX_V0_1", lin_weights=lin)
    with pytest.raises(ValueError, match="are for vgg16"):
        LPIPS("alex", weights="VGG16_IMAGENET1K_V1", lin_weights=lin)
    metric = LPIPS("alex", weights=state, lin_weights=lin)
    x = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"pred of shape \(2, 3, 64, 64\) and target of shape \(2, 3, 64, 48\)"):
        metric(x, torch.rand(2, 3, 64, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metric(x[:, :2], x[:, :2])
    with pytest.raises(TypeError, match="floating point"):
        metric((x * 255).to(torch.uint8), x)
    with pytest.raises(ValueError, match="at least 31x31"):
        metric(x[..., :30, :30], x[..., :30, :30])


def test_lpips_scaling_is_imagenet_normalisation_in_minus_one_one_units():
    # (2 x01 - 1 - shift) / scale == (x01 - (1 + shift) / 2) / (scale / 2): ImageNet's mean and std
    from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
    from featx.metrics.lpips import LPIPS_SCALE, LPIPS_SHIFT

    assert [round((1 + t) / 2, 12) for t in LPIPS_SHIFT] == list(IMAGENET_MEAN)
    assert [round(s / 2, 12) for s in LPIPS_SCALE] == list(IMAGENET_STD)


def test_default_backbone_comes_from_featx_home(monkeypatch, tmp_path):
    home = tmp_path / "fx"
    home.mkdir()
    monkeypatch.setenv("FEATX_HOME", str(home))
    ref = reference("alex")
    torch.save(backbone_state(ref), home / "alexnet-owt-7be5be79.pth")  # fabricated under the real name
    shutil.copy(shipped("alex"), home / "lpips_alex_v0.1.pth")  # the real file
    with pytest.warns(UnverifiedWeightsWarning, match="ALEXNET_IMAGENET1K_V1"):
        metric = LPIPS()  # net="alex", both "DEFAULT"
    assert metric.weights_id == "unverified:ALEXNET_IMAGENET1K_V1" and metric.weights_verified is False
    assert metric.lin_weights_id == "LPIPS_ALEX_V0_1" and metric.lin_weights_verified is True
    x, y = images("alex", batch=2)
    torch.testing.assert_close(metric(x, y), ref(x, y, normalize=True).mean(), rtol=1e-5, atol=0)


def test_squeeze_net_entry_is_lpips_own():
    # reference: lpips.LPIPS(net="squeeze") itself: its channel list and seven linear layers
    ref = reference("squeeze")
    arch, taps, channels = LPIPS_NETS["squeeze"]
    assert (arch, list(channels), len(ref.lins)) == ("squeezenet1_1", ref.chns, 7)
    metric = ours("squeeze", ref)
    assert metric.backbone.taps == taps and type(metric.backbone).__name__ == "SqueezeNetFeatures"
    assert len(metric.backbone.features) == 13 and metric.min_input_size == 17
    with pytest.raises(ValueError, match="at least 17x17"):
        metric(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(WeightsLoadError, match=r"missing keys \(2\)"):
        LPIPS("squeeze", weights=backbone_state(ref), lin_weights=shipped("alex"))  # 5 layers, not 7


def test_squeeze_defaults_come_from_disk(package_weights, monkeypatch, tmp_path):
    home = tmp_path / "fx"
    home.mkdir()
    monkeypatch.setenv("FEATX_HOME", str(home))
    with pytest.raises(WeightsNotFoundError, match=r"squeezenet1_1-b8a52dc0\.pth(?s:.*)featx weights download SQUEEZENET1_1"):
        LPIPS("squeeze")
    ref = reference("squeeze")
    torch.save(backbone_state(ref), home / "squeezenet1_1-b8a52dc0.pth")  # fabricated under the real name
    with pytest.warns(UnverifiedWeightsWarning, match="SQUEEZENET1_1_IMAGENET1K_V1"):
        metric = LPIPS("squeeze")  # both "DEFAULT"; the linear layers are the lpips package's own file
    assert metric.weights_id == "unverified:SQUEEZENET1_1_IMAGENET1K_V1" and metric.weights_verified is False
    assert metric.lin_weights_id == "LPIPS_SQUEEZE_V0_1" and metric.lin_weights_verified is True
    x, y = images("squeeze", batch=2)
    torch.testing.assert_close(metric(x, y), ref(x, y, normalize=True).mean(), rtol=1e-5, atol=0)


def test_missing_squeeze_lin_weights_name_the_download():
    with pytest.raises(WeightsNotFoundError, match=r"lpips_squeeze_v0\.1\.pth(?s:.*)featx weights download LPIPS_SQUEEZE_V0_1"):
        LPIPS("squeeze", weights=backbone_state(reference("squeeze")))


def test_copies_pickles_and_device_moves_keep_the_values():
    import pickle

    metric = ours("vgg", reference("vgg"), reduction="none")
    x, y = images("vgg", batch=2)
    value = metric(x, y)
    for other in (copy.deepcopy(metric), pickle.loads(pickle.dumps(metric)), copy.deepcopy(metric).to("cpu")):
        torch.testing.assert_close(other(x, y), value, rtol=0, atol=0)
    assert "lin_weights='file:" in repr(metric) and "net='vgg'" in repr(metric)


def test_inputs_in_another_range_warn_once():
    from featx.errors import InputRangeWarning

    metric = ours("alex", reference("alex"))
    x, y = images("alex", batch=1)
    with pytest.warns(InputRangeWarning, match=r"input_range=\(0, 1\)"):
        metric(2 * x - 1, 2 * y - 1)  # lpips-style [-1, 1] inputs with the default (0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        metric(2 * x - 1, 2 * y - 1)  # once only
        ours("alex", reference("alex"), input_range=(-1, 1))(2 * x - 1, 2 * y - 1)


def test_missing_default_lin_weights_name_the_lin_weights_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATX_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        LPIPS("vgg", weights=backbone_state(reference("vgg")))  # lin_weights="DEFAULT", not on disk
    message = str(info.value)
    assert "no file lpips_vgg_v0.1.pth" in message and str(tmp_path) in message
    assert "featx weights download LPIPS_VGG_V0_1" in message
    assert "\n  - lin_weights=PATH to a local copy" in message and "\n  - weights=PATH" not in message
    with pytest.raises(WeightsNotFoundError, match=r"alexnet-owt-7be5be79\.pth(?s:.*)\n  - weights=PATH to a local copy"):
        LPIPS("alex", lin_weights=lin_state("alex"))  # the backbone: weights=PATH is right there


# ---------------------------------------------------------------------------------------------
# The metrics' grammar (docs/api.md, "Metrics"), each point against lpips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_normalized_inputs_are_scored_as_lpips_scores_the_images(net):
    """``input_range="normalized"``: ImageNet-normalised images; lpips' scaling layer is ImageNet's
    normalisation, so their LPIPS is lpips' on the ``[0, 1]`` images."""
    from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD

    ref = reference(net)
    x, y = images(net, batch=2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    metric = ours(net, ref, input_range="normalized", reduction="none")
    got = metric((x - mean) / std, (y - mean) / std)
    expected = ref(x, y, normalize=True).flatten()
    assert float(((got - expected).abs() / expected).max()) < 1e-5


def test_gray_repeat_is_lpips_of_the_repeated_image():
    ref = reference("alex")
    x, y = images("alex", batch=2)
    x1, y1 = x[:, :1], y[:, :1]
    got = ours("alex", ref, gray="repeat", reduction="none")(x1, y1)
    expected = ref(x1.expand(-1, 3, -1, -1), y1.expand(-1, 3, -1, -1), normalize=True).flatten()
    assert float(((got - expected).abs() / expected).max()) < 1e-5
    with pytest.raises(ValueError, match=r"LPIPS pred must have shape \(B, 3, H, W\).*Pass gray='repeat'"):
        ours("alex", ref)(x1, y1)


def test_pred_batch_of_one_is_never_broadcast_over_the_target():
    metric = ours("alex", reference("alex"), reduction="none")
    x, y = images("alex", batch=3)
    with pytest.raises(ValueError, match=r"LPIPS: pred of shape \(1, 3, 64, 64\) and target of shape \(3, 3, 64, 64\)"):
        metric(x[:1], y)


def test_min_input_size_is_the_smallest_accepted_size():
    for net, size in (("alex", 31), ("vgg", 16)):
        metric = ours(net, reference(net))
        assert metric.min_input_size == size
        x = torch.rand(1, 3, size, size)
        assert metric(x, x).shape == ()
        with pytest.raises(ValueError, match=rf"LPIPS needs images of at least {size}x{size}, got {size}x{size - 1}"):
            metric(x[..., :-1], x[..., :-1])
