"""featx.integrations.basicsr against the real BasicSR 1.4.2 (test extra), with no network.

References: BasicSR's own ``build_loss`` and ``PerceptualLoss`` (``basicsr/losses/basic_loss.py``
with ``basicsr/archs/vgg_arch.py``), its ``SRGANModel`` training step and checkpoint saving, its
``calculate_metric`` dispatch; featx.LPIPS / featx.DISTS for the metric functions. Both sides of
every comparison load the same fabricated random VGG checkpoint, saved with ``torch.save`` in
torchvision's key format (``features.{i}.weight``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

import featx
from featx.errors import FeatxError, IntegrationImportError, WeightsNotFoundError

plugin = importlib.import_module("featx.integrations.basicsr")  # registers featx; imports BasicSR 1.4.2
from basicsr.archs import vgg_arch  # noqa: E402  (importable only once the plugin supplied functional_tensor)
from basicsr.losses import build_loss  # noqa: E402
from basicsr.metrics import calculate_metric  # noqa: E402
from basicsr.utils.registry import LOSS_REGISTRY, METRIC_REGISTRY, Registry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

# Real-ESRGAN options/train_realesrgan_x4plus.yml, train: perceptual_opt (xinntao/Real-ESRGAN), verbatim
REAL_ESRGAN_PERCEPTUAL_OPT = {
    "type": "PerceptualLoss",
    "layer_weights": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1, "conv4_4": 1, "conv5_4": 1},  # before relu
    "vgg_type": "vgg19",
    "use_input_norm": True,
    "perceptual_weight": 1.0,
    "style_weight": 0,
    "range_norm": False,
    "criterion": "l1",
}
FEATX_OPT = {**REAL_ESRGAN_PERCEPTUAL_OPT, "type": "FeatxPerceptualLoss"}  # the one line a user changes
EXACT_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
EXACT_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def save_features(features: nn.Sequential, path: Path) -> Path:
    """A torchvision-format checkpoint (``features.{i}.*`` keys) of a ``features`` stack."""
    torch.save({f"features.{key}": value for key, value in features.state_dict().items()}, path)
    return path


VGG19_CONV3_4_LAYERS = 18  # features[:18] ends at relu3_4: enough for the conv1_2..conv3_4 variants


@pytest.fixture(scope="module")
def vgg19_stack() -> nn.Sequential:
    """Random VGG19 features (configuration E), seeded."""
    torch.manual_seed(1234)
    return make_layers(cfgs["E"])


@pytest.fixture(scope="module")
def vgg19_file(vgg19_stack, tmp_path_factory) -> Path:
    """The whole random VGG19 ``features`` as a torchvision-format ``.pth`` (80 MB)."""
    return save_features(vgg19_stack, tmp_path_factory.mktemp("vgg19") / "random_vgg19.pth")


@pytest.fixture(scope="module")
def vgg19_head_file(vgg19_stack, tmp_path_factory) -> Path:
    """The same weights up to relu3_4 only (quick to load for the tests that need no deeper layer)."""
    head = vgg19_stack[:VGG19_CONV3_4_LAYERS]
    return save_features(head, tmp_path_factory.mktemp("vgg19_head") / "random_vgg19_head.pth")


@pytest.fixture()
def basicsr_vgg_from(monkeypatch):
    """Make BasicSR's ``VGGFeatureExtractor`` read a given file itself: ``VGG_PRETRAIN_PATH`` points
    at it and ``vgg.vgg19(pretrained=False)`` builds a torchvision VGG19 without the classifier
    (never used by BasicSR, 480 MB) and with as many ``features`` layers as the file holds, so
    BasicSR's own ``torch.load`` and strict ``load_state_dict`` take the file. Returns
    ``use(path, layers)``; ``use.asked`` records the ``pretrained`` flags BasicSR passed."""
    asked: list[bool] = []
    layers = {"count": 37}

    def vgg19(pretrained=False, **kwargs):
        asked.append(pretrained)
        with torch.device("meta"):
            model = torchvision.models.vgg19(weights=None)
        model.features = model.features[: layers["count"]].to_empty(device="cpu")  # every tensor comes from the file
        model.avgpool, model.classifier = nn.Identity(), nn.Identity()
        return model

    def use(path: Path, count: int = 37) -> None:
        monkeypatch.setattr(vgg_arch, "VGG_PRETRAIN_PATH", str(path))
        layers["count"] = count

    monkeypatch.setattr(vgg_arch, "vgg", types.SimpleNamespace(vgg19=vgg19))
    # BasicSR 1.4.2 maps criterion 'l2' to torch.nn.L2loss, which torch never had; BasicSR's later
    # code uses nn.MSELoss, the loss 'l2' names, so the reference gets that
    monkeypatch.setattr(torch.nn, "L2loss", torch.nn.MSELoss, raising=False)
    use.asked = asked  # type: ignore[attr-defined]
    return use


def both(options: dict, vgg19_file: Path) -> tuple[nn.Module, nn.Module]:
    """(BasicSR's PerceptualLoss, featx's), each built by BasicSR's build_loss from ``options``."""
    reference = build_loss({**options, "type": "PerceptualLoss"})
    ours = build_loss({**options, "type": "FeatxPerceptualLoss", "vgg_weights": str(vgg19_file)})
    return reference, ours


def exact_imagenet_statistics(reference: nn.Module) -> None:
    """BasicSR keeps the ImageNet mean/std as float32 values; in float64 both sides use the exact decimals."""
    reference.vgg.mean.copy_(EXACT_IMAGENET_MEAN)
    reference.vgg.std.copy_(EXACT_IMAGENET_STD)


# ------------------------------------------------------------------ PerceptualLoss, option by option

HEAD_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1}  # Real-ESRGAN's first three layers
VARIANTS = {
    "l2_with_style": {"criterion": "l2", "style_weight": 0.5},
    "fro_with_style": {"criterion": "fro", "style_weight": 2.0, "perceptual_weight": 0.7},
    "range_norm": {"range_norm": True, "style_weight": 1.0},
    "range_norm_without_input_norm": {"range_norm": True, "use_input_norm": False},
    "style_only": {"perceptual_weight": 0, "style_weight": 1.0},
}


def check_equal(options: dict, path: Path, size: int) -> tuple[nn.Module, nn.Module]:
    """Both losses from ``build_loss(options)``: fp32 values (32x32 images) within 1e-6 relative,
    float64 input gradients (``size`` x ``size``) within 1e-10."""
    reference, ours = both(options, path)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    x, gt = images, torch.rand_like(images)
    if options.get("range_norm"):
        x, gt = 2 * x - 1, 2 * gt - 1
    expected, got = reference(x, gt), ours(x, gt)
    for name, want, have in zip(("percep", "style"), expected, got, strict=True):
        if want is None:
            assert have is None, name
        else:
            assert have is not None and rel(have, want) < 1e-6, (name, float(have), float(want))
    assert any(value is not None for value in got)

    reference, ours = reference.double(), ours.double()
    if options["use_input_norm"]:
        exact_imagenet_statistics(reference)
    x64, gt64 = x[:, :, :size, :size].double(), gt[:, :, :size, :size].double()
    gradients = []
    for module in (reference, ours):
        leaf = x64.clone().requires_grad_(True)
        sum(value for value in module(leaf, gt64) if value is not None).backward()
        gradients.append(leaf.grad)
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-10, atol=1e-10 * float(gradients[0].abs().max()))
    return reference, ours


def test_real_esrgan_block_equals_basicsr_perceptual_loss(vgg19_file, basicsr_vgg_from):
    """Real-ESRGAN's ``perceptual_opt`` with only ``type:`` changed, both built by BasicSR's
    ``build_loss``; featx's VGG is truncated after conv5_4, frozen, and holds no state."""
    basicsr_vgg_from(vgg19_file)
    reference, ours = check_equal(FEATX_OPT, vgg19_file, size=16)
    assert basicsr_vgg_from.asked == [False]  # BasicSR read the file (not its download branch)
    assert ours.vgg.taps == ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")
    assert len(ours.vgg.features) == 35  # features[:35]: up to conv5_4, nothing after it
    assert ours.vgg.weights_id == f"file:{vgg19_file.resolve()}"
    assert not any(p.requires_grad for p in ours.parameters())
    assert list(ours.state_dict()) == []  # nothing for a checkpoint to carry
    assert any("vgg_net" in key for key in reference.state_dict())  # BasicSR's own loss holds its VGG


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_option_equals_basicsr_perceptual_loss(variant, vgg19_head_file, basicsr_vgg_from):
    """Criterion l2 and fro, style terms, ``range_norm`` (with and without ``use_input_norm``) and a
    zero-weight term (``None``), on Real-ESRGAN's first three layers."""
    basicsr_vgg_from(vgg19_head_file, VGG19_CONV3_4_LAYERS)
    check_equal({**FEATX_OPT, "layer_weights": HEAD_LAYERS, **VARIANTS[variant]}, vgg19_head_file, size=32)


def test_fro_takes_one_norm_over_the_batch(vgg19_head_file, basicsr_vgg_from):
    """BasicSR's ``fro`` is ``torch.norm`` of the whole batch's difference, so a batch of 2 is not the
    mean of two single-sample values; featx reproduces the batch norm (reference: BasicSR, float64)."""
    options = {**FEATX_OPT, "layer_weights": {"relu1_1": 1.0, "conv2_2": 0.5}, "criterion": "fro", "style_weight": 1.0}
    basicsr_vgg_from(vgg19_head_file, VGG19_CONV3_4_LAYERS)
    reference, ours = (module.double() for module in both(options, vgg19_head_file))
    exact_imagenet_statistics(reference)
    x, gt = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for want, have in zip(reference(x, gt), ours(x, gt), strict=True):
        assert rel(have, want) < 1e-12
    singles = [ours(x[i : i + 1], gt[i : i + 1])[0] for i in range(2)]
    assert rel(ours(x, gt)[0], (singles[0] + singles[1]) / 2) > 1e-3  # not a per-sample mean


def test_conv_taps_are_pre_activation(vgg19_head_file):
    """A ``conv*`` tap must not see the following in-place ReLU: conv1_2 has negative values."""
    options = {**FEATX_OPT, "layer_weights": {"conv1_2": 1.0, "relu2_1": 1.0}, "vgg_weights": str(vgg19_head_file)}
    loss = build_loss(options)
    feats = loss.vgg(torch.rand(1, 3, 16, 16))
    assert float(feats["conv1_2"].min()) < 0 <= float(feats["relu2_1"].min())


def test_the_real_esrgan_block_without_weights_names_the_fix(tmp_path):
    """Only ``type:`` changed and no ImageNet file in the (empty) featx cache: a clear error, never random weights."""
    with pytest.raises(WeightsNotFoundError) as info:
        build_loss(FEATX_OPT)
    message = str(info.value)
    assert "featx weights download VGG19_IMAGENET1K_V1" in message
    assert "vgg_weights: /path/to/file" in message and "vgg19-dcbb9e9d.pth" in message


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"criterion": "l11"}, ValueError, r"unknown criterion 'l11'\. Did you mean 'l1'\? Valid choices: 'l1', 'l2', 'fro'"),
        ({"criterion": "mse"}, ValueError, r"Valid choices: 'l1', 'l2', 'fro'"),
        ({"vgg_type": "vgg91"}, ValueError, r"unknown arch 'vgg91'.*Did you mean 'vgg19'"),
        ({"layer_weights": {"conv5_5": 1.0}}, ValueError, r"conv5_5.*Did you mean"),
        ({"style_weight": -1}, ValueError, r"style_weight must be >= 0 \(0 switches the term off"),
        ({"perceptual_weight": "high"}, TypeError, r"perceptual_weight must be a finite number, got 'high'"),
        ({"range_norm": "yes"}, TypeError, r"range_norm must be a bool \(True or False\), got 'yes'"),
    ],
)
def test_bad_options_are_refused_with_the_valid_choices(options, error, message):
    with pytest.raises(error, match=message) as info:
        build_loss({**FEATX_OPT, **options, "vgg_weights": None})
    assert isinstance(info.value, FeatxError)


def test_bad_images_are_refused():
    loss = build_loss({**FEATX_OPT, "layer_weights": {"relu1_1": 1.0}, "vgg_weights": None})
    with pytest.raises(ValueError, match=r"x and gt must have the same shape, got \(1, 3, 16, 16\) and \(2, 3, 16, 16\)"):
        loss(torch.rand(1, 3, 16, 16), torch.rand(2, 3, 16, 16))
    with pytest.raises(TypeError, match=r"gt must be a floating point tensor \(B, 3, H, W\), got dtype torch.uint8"):
        loss(torch.rand(1, 3, 16, 16), torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_both_weights_zero_returns_two_nones_without_a_pass():
    loss = build_loss({**FEATX_OPT, "perceptual_weight": 0, "vgg_weights": None})
    assert loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)) == (None, None)  # 4x4 would be too small for a pass


# ------------------------------------------------------------------ BasicSR's training machinery


def test_srgan_model_trains_with_the_featx_loss_and_saves_no_vgg(vgg19_head_file, tmp_path):
    """BasicSR's ``SRGANModel`` from an options dict (tiny SRVGGNetCompact and UNet discriminator,
    CPU, 3 steps) with the featx loss in ``perceptual_opt``; the checkpoints BasicSR writes hold the
    networks' tensors and nothing else."""
    from basicsr.models import build_model

    opt = {
        "name": "featx_plugin", "model_type": "SRGANModel", "scale": 2, "num_gpu": 0, "dist": False,
        "is_train": True, "rank": 0, "world_size": 1,
        "network_g": {"type": "SRVGGNetCompact", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 2,
                      "upscale": 2, "act_type": "prelu"},
        "network_d": {"type": "UNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 4, "skip_connection": True},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None,
                 "models": str(tmp_path / "models"), "training_states": str(tmp_path / "training_states")},
        "train": {
            "ema_decay": 0.999,
            "optim_g": {"type": "Adam", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.99]},
            "optim_d": {"type": "Adam", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "total_iter": 3, "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            "perceptual_opt": {**FEATX_OPT, "layer_weights": {"conv1_2": 0.1, "conv2_2": 1.0},
                               "vgg_weights": str(vgg19_head_file)},
            "gan_opt": {"type": "GANLoss", "gan_type": "vanilla", "real_label_val": 1.0, "fake_label_val": 0.0,
                        "loss_weight": 0.1},
            "net_d_iters": 1, "net_d_init_iters": 0,
        },
    }  # fmt: skip
    for folder in ("models", "training_states"):
        (tmp_path / folder).mkdir()
    model = build_model(opt)
    assert type(model.cri_perceptual).__name__ == "FeatxPerceptualLoss"
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    for step in (1, 2, 3):
        gt = torch.rand(2, 3, 32, 32)
        model.feed_data({"lq": nn.functional.avg_pool2d(gt, 2), "gt": gt})
        model.optimize_parameters(step)
        model.update_learning_rate(step, warmup_iter=-1)
        assert model.log_dict["l_g_percep"] > 0 and "l_g_style" not in model.log_dict  # the loss contributed
    assert any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())
    model.save(epoch=0, current_iter=3)

    saved_g = torch.load(tmp_path / "models" / "net_g_3.pth", weights_only=True)
    saved_d = torch.load(tmp_path / "models" / "net_d_3.pth", weights_only=True)
    assert set(saved_g) == {"params", "params_ema"} and set(saved_d) == {"params"}
    assert set(saved_g["params"]) == set(saved_g["params_ema"]) == set(model.net_g.state_dict())
    assert set(saved_d["params"]) == set(model.net_d.state_dict())
    first_vgg_conv = torch.Size([64, 3, 3, 3])
    for state in (saved_g["params"], saved_g["params_ema"], saved_d["params"]):
        assert not any(value.shape == first_vgg_conv for value in state.values())
    state = torch.load(tmp_path / "training_states" / "3.state", weights_only=False)
    optimised = [len(optimizer["param_groups"][0]["params"]) for optimizer in state["optimizers"]]
    assert optimised == [len(list(model.net_g.parameters())), len(list(model.net_d.parameters()))]


# ------------------------------------------------------------------ registration and import


def test_registered_names_and_objects():
    for cls in plugin.LOSSES:
        assert LOSS_REGISTRY.get(cls.__name__).__module__ == "featx.integrations.basicsr_losses"
    for function in plugin.METRICS:
        assert METRIC_REGISTRY.get(function.__name__).__module__ == "featx.integrations.basicsr_metrics"
    # BasicSR's own objects are untouched next to featx's
    assert LOSS_REGISTRY.get("PerceptualLoss").__module__ == "basicsr.losses.basic_loss"
    assert METRIC_REGISTRY.get("calculate_psnr").__module__ == "basicsr.metrics.psnr_ssim"


def test_importing_again_or_reloading_registers_nothing_twice():
    loss_names, metric_names = sorted(LOSS_REGISTRY.keys()), sorted(METRIC_REGISTRY.keys())
    functional_tensor = sys.modules.get(plugin.FUNCTIONAL_TENSOR)
    importlib.import_module("featx.integrations.basicsr")
    reloaded = importlib.reload(plugin)  # re-runs the registration: BasicSR's assert would fire on a second register
    assert sorted(LOSS_REGISTRY.keys()) == loss_names and sorted(METRIC_REGISTRY.keys()) == metric_names
    # BasicSR was already imported: the reload left torchvision's module table and sys.meta_path alone
    assert sys.modules.get(plugin.FUNCTIONAL_TENSOR) is functional_tensor
    assert not any(type(finder).__name__ == "_FunctionalTensorFinder" for finder in sys.meta_path)
    assert reloaded.FeatxPerceptualLoss is LOSS_REGISTRY.get("FeatxPerceptualLoss")


def test_register_keeps_a_reloaded_class_and_refuses_a_foreign_one():
    losses, metrics = Registry("loss"), Registry("metric")
    # what a reload of basicsr_losses leaves registered: another object of the same module and name
    earlier = type("FeatxPerceptualLoss", (nn.Module,), {"__module__": "featx.integrations.basicsr_losses"})
    losses.register(earlier)
    plugin.register(losses, metrics)
    assert losses.get("FeatxPerceptualLoss") is earlier and "FeatxLPIPSLoss" in losses
    assert "calculate_featx_dists" in metrics

    copied = type("FeatxPerceptualLoss", (nn.Module,), {"__module__": "train_helpers"})  # the old docs' snippet
    foreign = Registry("loss")
    foreign.register(copied)
    with pytest.raises(ValueError, match=r"LOSS_REGISTRY already holds 'FeatxPerceptualLoss' from "
                       r"train_helpers\.FeatxPerceptualLoss, not featx's; remove that definition"):  # fmt: skip
        plugin.register(foreign, Registry("metric"))


class _Blocker:
    """A meta-path finder that makes ``import basicsr`` fail as a missing package or dependency would."""

    def __init__(self, missing: str) -> None:
        self.missing = missing

    def find_spec(self, fullname, path, target=None):
        if fullname == "basicsr" or fullname.startswith("basicsr."):
            raise ModuleNotFoundError(f"No module named {self.missing!r}", name=self.missing)
        return None


@pytest.mark.parametrize(
    ("missing", "reason", "fix"),
    [
        ("basicsr", "BasicSR is not installed (No module named 'basicsr')", r'pip install "featx[basicsr]"'),
        ("lmdb", "BasicSR is installed but its import fails: ModuleNotFoundError(\"No module named 'lmdb'\")",
         "Install what is missing (lmdb)"),
    ],
)  # fmt: skip
def test_without_basicsr_the_import_fails_and_registers_nothing(missing, reason, fix, monkeypatch):
    loss_names, metric_names = sorted(LOSS_REGISTRY.keys()), sorted(METRIC_REGISTRY.keys())
    forget_basicsr(monkeypatch)
    monkeypatch.setattr(sys, "meta_path", [_Blocker(missing), *sys.meta_path])

    with pytest.raises(IntegrationImportError) as info:
        importlib.import_module("featx.integrations.basicsr")
    message = str(info.value)
    assert isinstance(info.value, ImportError) and isinstance(info.value, FeatxError)
    assert reason in message and fix in message and "pip install basicsr==1.4.2" in message
    assert "Nothing was registered." in message and "first import of train.py" in message
    assert info.value.name == missing
    # no stand-in registry, no half-imported plugin, nothing added to the real registries
    assert "featx.integrations.basicsr" not in sys.modules
    assert not any(name == "basicsr" or name.startswith("basicsr.") for name in sys.modules)
    assert sorted(LOSS_REGISTRY.keys()) == loss_names and sorted(METRIC_REGISTRY.keys()) == metric_names
    assert not any(type(finder).__name__ == "_FunctionalTensorFinder" for finder in sys.meta_path)


def forget_basicsr(monkeypatch) -> None:
    """Make the next ``import basicsr`` (and of the plugin) run afresh; the old modules come back after the test."""
    names = [name for name in sys.modules if name == "basicsr" or name.startswith("basicsr.")]
    for name in [*names, "featx.integrations.basicsr", plugin.FUNCTIONAL_TENSOR]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(sys.modules["featx.integrations"], "basicsr", raising=False)


def test_basicsr_imports_through_the_plugin_on_this_torchvision(monkeypatch):
    """On this torchvision (no ``functional_tensor``) BasicSR 1.4.2 alone fails to import; through
    the plugin it imports, with the module the plugin made, and featx is registered."""
    forget_basicsr(monkeypatch)
    assert importlib.util.find_spec(plugin.FUNCTIONAL_TENSOR) is None
    with pytest.raises(ModuleNotFoundError) as alone:
        importlib.import_module("basicsr")
    assert alone.value.name == plugin.FUNCTIONAL_TENSOR
    forget_basicsr(monkeypatch)  # drop what the failed import left half-done

    fresh = importlib.import_module("featx.integrations.basicsr")
    from basicsr.utils.registry import LOSS_REGISTRY as fresh_losses
    from basicsr.utils.registry import METRIC_REGISTRY as fresh_metrics
    from torchvision.transforms import functional
    from torchvision.transforms.functional_tensor import rgb_to_grayscale

    assert rgb_to_grayscale is functional.rgb_to_grayscale  # the name BasicSR takes from it
    assert "featx.integrations.basicsr" in (sys.modules[plugin.FUNCTIONAL_TENSOR].__doc__ or "")
    assert not any(type(finder).__name__ == "_FunctionalTensorFinder" for finder in sys.meta_path)
    assert fresh_losses is not LOSS_REGISTRY  # a new BasicSR, registered afresh
    assert {cls.__name__ for cls in fresh.LOSSES} <= set(fresh_losses.keys())
    assert {function.__name__ for function in fresh.METRICS} <= set(fresh_metrics.keys())


# ------------------------------------------------------------------ LPIPS, DISTS and texture losses

LPIPS_LIN = Path(importlib.import_module("lpips").__file__).parent / "weights" / "v0.1" / "alex.pth"
DISTS_WEIGHTS = Path(importlib.import_module("DISTS_pytorch.DISTS_pt").__file__).with_name("weights.pt")


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    """Random AlexNet features (torchvision's layout), seeded, as a torchvision-format ``.pth``."""
    torch.manual_seed(5)
    return save_features(torchvision.models.alexnet(weights=None).features, tmp_path_factory.mktemp("alex") / "alex.pth")


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory) -> Path:
    """Random VGG16 features (configuration D), seeded, as a torchvision-format ``.pth``."""
    torch.manual_seed(6)
    return save_features(make_layers(cfgs["D"]), tmp_path_factory.mktemp("vgg16") / "random_vgg16.pth")


def test_lpips_loss_is_weighted_featx_lpips(alexnet_file):
    """Reference: featx.LPIPS on the same backbone file and lpips' shipped v0.1 linear layers."""
    opt = {"type": "FeatxLPIPSLoss", "loss_weight": 0.5, "reduction": "none", "net": "alex",
           "backbone_weights": str(alexnet_file), "lin_weights": str(LPIPS_LIN)}  # fmt: skip
    loss = build_loss(opt)
    metric = featx.LPIPS("alex", weights=str(alexnet_file), lin_weights=str(LPIPS_LIN), reduction="none")
    pred = torch.rand(2, 3, 64, 64, requires_grad=True)
    target = torch.rand(2, 3, 64, 64)
    value = loss(pred, target)
    torch.testing.assert_close(value, 0.5 * metric(pred, target), rtol=1e-6, atol=0)
    value.sum().backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    paired = build_loss({**opt, "reduction": "mean", "range_norm": True, "return_pair": True})
    percep, style = paired(2 * pred.detach() - 1, 2 * target - 1)  # [-1, 1] images: the same distance
    assert style is None
    torch.testing.assert_close(percep, 0.5 * metric(pred, target).mean(), rtol=1e-5, atol=0)
    assert list(loss.state_dict()) == []


def test_dists_loss_is_weighted_featx_dists(vgg16_file):
    """Reference: featx.DISTS on the same VGG16 file and DISTS_pytorch's shipped alpha/beta."""
    loss = build_loss({"type": "FeatxDISTSLoss", "loss_weight": 2.0, "vgg_weights": str(vgg16_file),
                       "dists_weights": str(DISTS_WEIGHTS)})  # fmt: skip
    metric = featx.DISTS(weights=str(vgg16_file), dists_weights=str(DISTS_WEIGHTS))
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loss(pred, target), 2.0 * metric(pred, target), rtol=1e-6, atol=0)
    assert list(loss.state_dict()) == []


def test_texture_loss_follows_basicsr_input_options(vgg19_head_file):
    """Reference: featx.TextureLoss on the same weights; ``range_norm`` without ``use_input_norm``
    feeds ``(x + 1) / 2`` with no ImageNet normalisation, as BasicSR's VGGFeatureExtractor does."""
    layers = {"relu1_1": 1.0, "relu2_1": 0.5}
    loss = build_loss({"type": "FeatxTextureLoss", "layer_weights": layers, "kind": "moments", "loss_weight": 3.0,
                       "use_input_norm": False, "range_norm": True, "vgg_weights": str(vgg19_head_file)})  # fmt: skip
    reference = featx.TextureLoss(layers, kind="moments", weights=str(vgg19_head_file), input_range="normalized")
    pred, target = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loss(pred, target), 3.0 * reference((pred + 1) / 2, (target + 1) / 2), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match=r"num_projection"):
        build_loss({"type": "FeatxTextureLoss", "layer_weights": layers, "num_projection": 8, "vgg_weights": None})


def test_missing_metric_weights_name_the_options_file_keys():
    with pytest.raises(WeightsNotFoundError, match=r"`backbone_weights: /path/to/file` and `lin_weights: /path/to/file`"):
        build_loss({"type": "FeatxLPIPSLoss"})
    with pytest.raises(WeightsNotFoundError, match=r"`vgg_weights: /path/to/file` and `dists_weights: /path/to/file`"):
        build_loss({"type": "FeatxDISTSLoss"})


# ------------------------------------------------------------------ metrics in METRIC_REGISTRY


def bgr_pair(height=72, width=80, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    noisy = np.clip(image.astype(np.int16) + rng.integers(-40, 41, image.shape), 0, 255).astype(np.uint8)
    return noisy, image


def rgb_tensor(bgr: np.ndarray) -> torch.Tensor:
    """The reference conversion, written independently: BGR uint8 HWC -> RGB float (1, 3, H, W) in [0, 1]."""
    return torch.tensor(bgr.astype(np.float64) / 255.0, dtype=torch.float32).permute(2, 0, 1).flip(0)[None]


def test_lpips_metric_through_calculate_metric_equals_featx_lpips(alexnet_file):
    """BasicSR's ``calculate_metric`` dispatch with a YAML-like block; reference: featx.LPIPS on the
    RGB tensors, cropped by hand for ``crop_border``."""
    sr, gt = bgr_pair()
    block = {"type": "calculate_featx_lpips", "crop_border": 4, "test_y_channel": False, "better": "lower",
             "backbone_weights": str(alexnet_file), "lin_weights": str(LPIPS_LIN), "device": "cpu"}  # fmt: skip
    metric = featx.LPIPS("alex", weights=str(alexnet_file), lin_weights=str(LPIPS_LIN))
    with torch.no_grad():
        expected = float(metric(rgb_tensor(sr)[..., 4:-4, 4:-4], rgb_tensor(gt)[..., 4:-4, 4:-4]))
        whole = float(metric(rgb_tensor(sr), rgb_tensor(gt)))
    assert calculate_metric({"img": sr, "img2": gt}, block) == pytest.approx(expected, rel=1e-6)
    assert calculate_metric({"img": sr, "img2": gt}, {**block, "crop_border": 0}) == pytest.approx(whole, rel=1e-6)
    assert expected != pytest.approx(whole, rel=1e-3)  # the crop changes the number
    chw = {"img": sr.transpose(2, 0, 1), "img2": gt.transpose(2, 0, 1)}
    assert calculate_metric(chw, {**block, "input_order": "CHW"}) == pytest.approx(expected, rel=1e-6)
    gray_sr, gray_gt = sr[..., 1], gt[..., 1]
    with torch.no_grad():
        gray_expected = float(metric(rgb_tensor(np.repeat(gray_sr[..., None], 3, 2)),
                                     rgb_tensor(np.repeat(gray_gt[..., None], 3, 2))))  # fmt: skip
    gray = calculate_metric({"img": gray_sr, "img2": gray_gt}, {**block, "crop_border": 0})
    assert gray == pytest.approx(gray_expected, rel=1e-6)


def test_dists_metric_through_calculate_metric_equals_featx_dists(vgg16_file):
    sr, gt = bgr_pair(48, 56, seed=1)
    block = {"type": "calculate_featx_dists", "crop_border": 0, "vgg_weights": str(vgg16_file),
             "dists_weights": str(DISTS_WEIGHTS), "device": "cpu"}  # fmt: skip
    metric = featx.DISTS(weights=str(vgg16_file), dists_weights=str(DISTS_WEIGHTS))
    with torch.no_grad():
        expected = float(metric(rgb_tensor(sr), rgb_tensor(gt)))
    assert calculate_metric({"img": sr, "img2": gt}, block) == pytest.approx(expected, rel=1e-6)
    assert calculate_metric({"img": gt, "img2": gt}, block) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"test_y_channel": True}, ValueError, r"LPIPS .* has no Y-channel variant; set test_y_channel: false"),
        ({"better": "higher"}, ValueError, r"unknown better 'higher' \(LPIPS is lower-is-better.*Valid choices: 'lower'"),
        ({"net": "alx"}, ValueError, r"unknown net 'alx'\. Did you mean 'alex'\? Valid choices: 'alex', 'vgg'"),
        ({"input_order": "HW"}, ValueError, r"unknown input_order 'HW'.*Valid choices: 'HWC', 'CHW'"),
        ({"crop_border": -1}, ValueError, r"crop_border must be an integer >= 0, got -1"),
        ({"crop_border": 40}, ValueError, r"crop_border=40 leaves nothing of img"),
        ({"lin_weights": None}, TypeError, r"lin_weights must be 'DEFAULT', a checkpoint name or a path .*got None"),
        ({"backbone_weights": {"a": 1}}, TypeError, r"backbone_weights must be .*, or None for random weights"),
        ({"device": 0}, TypeError, r"device must be a string such as 'cpu'"),
    ],
)
def test_bad_metric_options_are_refused(options, error, message):
    sr, gt = bgr_pair(40, 40)
    block = {"type": "calculate_featx_lpips", "crop_border": 0, "device": "cpu", **options}
    with pytest.raises(error, match=message) as info:
        calculate_metric({"img": sr, "img2": gt}, block)
    assert isinstance(info.value, FeatxError)


def test_bad_metric_images_are_refused(alexnet_file):
    sr, gt = bgr_pair(40, 40)
    block = {"type": "calculate_featx_lpips", "crop_border": 0, "device": "cpu",
             "backbone_weights": str(alexnet_file), "lin_weights": str(LPIPS_LIN)}  # fmt: skip
    with pytest.raises(ValueError, match=r"img and img2 must have the same shape, got \(40, 40, 3\) and \(40, 32, 3\)"):
        calculate_metric({"img": sr, "img2": gt[:, :32]}, block)
    with pytest.raises(ValueError, match=r"img must have 1 \(gray\) or 3 \(BGR\) channels"):
        calculate_metric({"img": np.zeros((40, 40, 4), np.uint8), "img2": gt}, block)
    with pytest.raises(TypeError, match=r"img2 must be a numpy array \(H, W, C\) in \[0, 255\], got Tensor"):
        calculate_metric({"img": sr, "img2": torch.zeros(40, 40, 3)}, block)
