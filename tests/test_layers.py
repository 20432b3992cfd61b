"""Layer names, tap resolution, presets, the layer table and the `featx layers` command."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from click.testing import CliRunner

from featx.backbones.catalog import available_taps
from featx.backbones.table import layer_table
from featx.backbones.taps import resolve_taps
from featx.backbones.vgg.head import ConvHead
from featx.backbones.vgg.layers import ARCHS, layer_names, layer_specs
from featx.presets import PRESETS
from featx_cli.main import cli

# docs/design.md, "Backbones": VGG19 `features` indices.
VGG19_INDICES = {
    "relu1_1": 1, "relu1_2": 3, "pool1": 4, "relu2_1": 6, "relu2_2": 8, "pool2": 9, "relu3_1": 11,
    "relu3_4": 17, "pool3": 18, "relu4_1": 20, "relu4_4": 26, "pool4": 27, "relu5_1": 29, "conv5_4": 34,
    "relu5_4": 35, "pool5": 36,
}  # fmt: skip


def test_vgg19_canonical_indices():
    specs = {s.name: s.index for s in layer_specs("vgg19")}
    assert len(specs) == 37
    for name, index in VGG19_INDICES.items():
        assert specs[name] == index, name


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_kinds_follow_torchvision(arch):
    # Independent reference: the module types of torchvision's own features Sequential.
    with torch.device("meta"):
        features = getattr(torchvision.models, arch)(weights=None).features
    kinds = {torch.nn.Conv2d: "conv", torch.nn.BatchNorm2d: "bn", torch.nn.ReLU: "relu", torch.nn.MaxPool2d: "pool"}
    specs = layer_specs(arch)
    assert [kinds[type(m)] for m in features] == [s.kind for s in specs]
    assert len(set(layer_names(arch))) == len(specs)
    for spec, module in zip(specs, features, strict=True):
        if spec.kind == "conv":
            assert (module.in_channels, module.out_channels) == (spec.in_channels, spec.out_channels)


def test_resolve_taps_orders_dedupes_and_accepts_strings():
    assert [t.name for t in resolve_taps("vgg19", "relu3_1, relu1_1,relu3_1")] == ["relu1_1", "relu3_1"]
    info = resolve_taps("vgg19", ["conv5_4"])[0]
    assert (info.index, info.channels, info.stride) == (34, 512, 16)
    assert resolve_taps("vgg19", ["pool5"], pooling="none")[0].stride == 1
    with pytest.raises(TypeError, match="taps must be a preset name"):
        resolve_taps("vgg19", 3)
    with pytest.raises(TypeError, match="tap names must be strings"):
        resolve_taps("vgg19", [1])


def test_presets_use_valid_taps_and_cite_sources():

    for name, preset in PRESETS.items():
        valid = [info.name for info in available_taps(preset.arch)]  # the arch's layers, in depth order
        assert set(preset.taps) <= set(valid), name
        assert list(preset.taps) == [tap for tap in valid if tap in preset.taps], name  # depth order
        assert preset.source, name
    assert PRESETS["ttsr_lte"].taps == ("relu1_1", "relu2_1", "relu3_1")
    assert dict(PRESETS["real_esrgan"].layer_weights) == {
        "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0,
    }  # fmt: skip


def test_classical_parameter_counts():
    # Classical totals (Simonyan & Zisserman; torchvision's meta["num_params"]).
    assert sum(r.params for r in layer_table("vgg16", head="fc")) == 138_357_544
    assert sum(r.params for r in layer_table("vgg19", head="fc")) == 143_667_240
    assert sum(r.params for r in layer_table("vgg19")) == 20_024_384
    for arch in ARCHS:
        with torch.device("meta"):
            model = getattr(torchvision.models, arch)(weights=None)
        ref = sum(p.numel() for p in model.parameters())
        assert sum(r.params for r in layer_table(arch, head="conv")) == ref, arch


def test_layer_table_shapes_match_real_forward():
    model = torchvision.models.vgg11(weights=None).features.eval()
    rows = layer_table("vgg11", 37, 50)
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        for row, layer in zip(rows, model, strict=True):
            x = layer(x)
            assert tuple(x.shape[1:]) == row.shape, row.name


def test_layer_table_errors():
    with pytest.raises(ValueError, match="unknown head 'dense'. Valid choices: 'none', 'fc', 'conv'"):
        layer_table("vgg16", head="dense")
    with pytest.raises(ValueError, match=r"too small for the convolutional head.*input >= 224x224"):
        layer_table("vgg16", 200, 224, head="conv")
    with pytest.raises(ValueError, match=r"input 16x16 is too small for vgg16: pool5 would be empty \(needs at least 32x32\)"):
        layer_table("vgg16", 16, 16)


def test_conv_head_equals_torchvision_classifier_and_gives_6x6_at_400():
    """Reference: torchvision's VGG11 classifier in eval mode (dropout off) on a 224x224 input."""
    model = torchvision.models.vgg11(weights=None).eval()
    head = ConvHead.from_classifier(model.state_dict())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        pool5 = model.features(x)
        torch.testing.assert_close(head(pool5), model(x), rtol=1e-4, atol=1e-4)
        big = model.features(torch.rand(1, 3, 400, 400))
        assert tuple(head.score_map(big).shape) == (1, 1000, 6, 6)
        assert tuple(head(big).shape) == (1, 1000)


def test_cli_layers_vgg16_conv_head_400():
    result = CliRunner().invoke(cli, ["layers", "vgg16", "--input-size", "400", "400", "--head", "conv"])
    assert result.exit_code == 0, result.output
    assert "fc8" in result.output and "(1000, 6, 6)" in result.output
    assert "Total params: 138,357,544" in result.output


def test_cli_layers_marks_preset_taps_and_rejects_bad_args():
    result = CliRunner().invoke(cli, ["layers", "vgg19", "--taps", "ttsr_lte"])
    assert result.exit_code == 0
    marked = [line.split()[1] for line in result.output.splitlines() if line.startswith("* ")]
    assert marked == ["relu1_1", "relu2_1", "relu3_1"]
    assert "Total params: 20,024,384" in result.output
    bad = CliRunner().invoke(cli, ["layers", "vgg20"])
    assert bad.exit_code == 2 and "Did you mean 'vgg19'" in bad.output
    bad = CliRunner().invoke(cli, ["layers", "vgg19", "--taps", "relu9_1"])
    assert bad.exit_code == 2 and "unknown tap 'relu9_1'" in bad.output


def test_help_does_not_import_torch():
    code = "import sys; from featx_cli.main import cli; cli(['--help'], standalone_mode=False); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
