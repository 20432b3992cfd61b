"""DINOv2Features against timm's DINOv2 model (the modules it wraps) and transformers' Dinov2Model (an
independent implementation) on the same random weights, plus DINOv2's own size rules, truncation,
strict loading of DINOv2's and timm's checkpoint layouts, and clear errors."""

from __future__ import annotations

import ast
import copy
import math
import pickle
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from dinov2_reference import random_state, timm, timm_model, transformers_model

from featx.backbones.catalog import available_taps, build_backbone, family_of
from featx.backbones.dinov2 import DINOV2_ARCHS, DINOv2Features, dinov2_tap_names, dinov2_taps
from featx.backbones.dinov2.names import split_tap
from featx.backbones.dinov2.tokens import interpolate_pos_embed
from featx.errors import WeightsLoadError
from featx.presets import PRESETS

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

ROOT = Path(__file__).resolve().parents[1]
# float64 results differ from a reference only by the summation order of kernels (~1e-16 relative per
# operation), so 1e-10 holds on any CPU; the fused attention kernel timm calls (F.scaled_dot_product_attention)
# is float64 there too, and transformers' eager attention (softmax(q k^T / sqrt(d)) v written out) agrees.
FLOAT64_RTOL = 1e-10
ALL_OF = {arch: dinov2_tap_names(arch) for arch in DINOV2_ARCHS}


def dino(arch: str = "dinov2_vits14", taps=ALL_OF["dinov2_vits14"], *, state=None, **options) -> DINOv2Features:
    """An extractor on normalised inputs with the given weights (``random_state`` by default)."""
    options.setdefault("input_range", "normalized")
    return DINOv2Features(arch, taps, weights=random_state(arch) if state is None else state, **options)


def timm_taps(model: torch.nn.Module, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Reference: every tap from timm's ``forward_intermediates`` (raw block outputs; ``norm`` = its final output)."""
    final, intermediates = model.forward_intermediates(x, return_prefix_tokens=True)
    layers = {f"blocks.{i}": (prefix, patches) for i, (patches, prefix) in enumerate(intermediates)}
    grid = intermediates[0][0].shape[-2:]
    layers["norm"] = (final[:, :1], final[:, 1:].unflatten(1, grid).permute(0, 3, 1, 2))
    out = {}
    for name in names:
        layer, kind = split_tap(name)
        prefix, patches = layers[layer]
        if kind == "map":
            out[name] = patches
        elif kind == "cls":
            out[name] = prefix[:, 0]
        else:
            out[name] = torch.cat((prefix.transpose(1, 2), patches.flatten(2)), dim=2).unsqueeze(2)
    return out


def assert_close_relative(out: dict, ref: dict, rtol: float) -> None:
    assert list(out) == list(ref)
    for name in ref:
        scale = ref[name].abs().max().item()
        torch.testing.assert_close(out[name], ref[name], rtol=rtol, atol=rtol * scale, msg=name)


@pytest.fixture(scope="module")
def timm_s() -> torch.nn.Module:
    """timm's ViT-S/14 with ``random_state()`` (shared: frozen, only read)."""
    return timm_model("dinov2_vits14", random_state())


@pytest.fixture(scope="module")
def every_tap_s() -> DINOv2Features:
    """featx's ViT-S/14 with every tap and ``random_state()``, timm's position-embedding rule (shared)."""
    return dino(pos_interpolation="timm")


def test_tap_names_are_the_reference_module_names_in_depth_order():
    with torch.device("meta"):
        model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    modules = dict(model.named_modules())
    names = dinov2_tap_names("dinov2_vits14")
    layers = list(dict.fromkeys(split_tap(name)[0] for name in names))
    assert layers == [f"blocks.{i}" for i in range(12)] + ["norm"] and all(layer in modules for layer in layers)
    assert [info.name for info in available_taps("dinov2_vitb14")] == list(ALL_OF["dinov2_vitb14"])
    assert [info.index for info in dinov2_taps("dinov2_vits14")] == list(range(39))
    assert {info.channels for info in dinov2_taps("dinov2_vitb14")} == {768} and family_of("dinov2_vits14") == "dinov2"


def test_every_tap_matches_timm_in_float64(every_tap_s, timm_s):
    extractor = copy.deepcopy(every_tap_s).double()
    extractor.remainder = "drop"
    x = torch.randn(1, 3, 44, 58, dtype=torch.float64)  # a 3x4 patch grid and a remainder to drop
    ref = timm_taps(copy.deepcopy(timm_s).double(), x[..., :42, :56], ALL_OF["dinov2_vits14"])  # timm refuses remainders
    assert_close_relative(extractor(x), ref, FLOAT64_RTOL)


def test_vitb14_taps_match_timm_in_float64():
    state = random_state("dinov2_vitb14", blocks=3)  # the blocks featx builds for blocks.2
    names = tuple(name for name in ALL_OF["dinov2_vitb14"] if split_tap(name)[0] in ("blocks.0", "blocks.1", "blocks.2"))
    extractor = dino("dinov2_vitb14", names, state=state, pos_interpolation="timm").double()
    assert len(extractor.blocks) == 3 and extractor.feature_info[-1].channels == 768
    x = torch.randn(1, 3, 42, 28, dtype=torch.float64)
    ref = timm_taps(timm_model("dinov2_vitb14", state).double(), x, names)
    assert_close_relative(extractor(x), ref, FLOAT64_RTOL)


def test_float32_taps_equal_timm_bit_for_bit(every_tap_s, timm_s):
    """featx runs timm's own modules in timm's order: the float32 taps are the same numbers."""
    x = torch.randn(2, 3, 42, 56)
    out = every_tap_s(x)
    ref = timm_taps(timm_s, x, ALL_OF["dinov2_vits14"])
    for name in ref:
        assert torch.equal(out[name], ref[name]), name


def fp32_tolerance(arch: str, blocks: int) -> float:
    """Bound on |fp32 - float64| of a tap after ``blocks`` blocks, relative to the tap's largest magnitude.

    A block has six matrix products (qkv, q k^T, attention x v, proj, fc1, fc2) of at most ``K = 4 C``
    terms (fc2); the patch embedding adds one of ``K = 588``. A sum of ``K`` random-sign float32 terms
    has a relative rounding error of about ``sqrt(K) u`` (u = 2**-24); LayerNorm rescales and keeps
    relative errors, and errors of successive products add, so after ``n`` products the bound is
    ``n sqrt(K_max) u``; a factor 8 covers other kernels' summation orders and the softmax, GELU and
    LayerNorm roundings.
    """
    k_max = max(4 * DINOV2_ARCHS[arch].embed_dim, 3 * 14 * 14)
    return 8 * (1 + 6 * blocks) * math.sqrt(k_max) * 2**-24


def test_float32_taps_within_rounding_of_float64(every_tap_s, timm_s):
    x = torch.randn(2, 3, 42, 56)
    out = every_tap_s(x)
    ref = timm_taps(copy.deepcopy(timm_s).double(), x.double(), ALL_OF["dinov2_vits14"])
    for name in ref:
        layer = split_tap(name)[0]
        blocks = 12 if layer == "norm" else int(layer.split(".")[1]) + 1
        error = (out[name].double() - ref[name]).abs().max().item() / ref[name].abs().max().item()
        assert error <= fp32_tolerance("dinov2_vits14", blocks), (name, error)


def test_every_tap_matches_transformers_dinov2_in_float64(every_tap_s):
    """transformers' Dinov2Model: separate q/k/v projections, eager attention, its own embeddings."""
    reference = transformers_model(random_state()).double()
    extractor = copy.deepcopy(every_tap_s).double()
    extractor.pos_interpolation, extractor.remainder = "transformers", "drop"
    x = torch.randn(2, 3, 31, 45, dtype=torch.float64)
    out = extractor(x)
    with torch.no_grad():
        result = reference(x, output_hidden_states=True)
    hidden = result.hidden_states  # (embeddings, block 0, ..., block 11), before the final LayerNorm
    assert len(hidden) == 13
    ref = {}
    for name in out:
        layer, kind = split_tap(name)
        tokens = result.last_hidden_state if layer == "norm" else hidden[int(layer.split(".")[1]) + 1]
        if kind == "map":
            ref[name] = tokens[:, 1:].unflatten(1, (2, 3)).permute(0, 3, 1, 2)
        elif kind == "cls":
            ref[name] = tokens[:, 0]
        else:
            ref[name] = tokens.transpose(1, 2).unsqueeze(2)
    assert_close_relative(out, ref, FLOAT64_RTOL)


def bicubic_matrix(size_out: int, size_in: int, scale: float) -> torch.Tensor:
    """Reference: PyTorch's bicubic resampling (Keys' cubic, A = -0.75, half-pixel centres, edge indices
    clamped) as a float64 matrix; ``scale`` is the output/input factor the coordinates are mapped with."""

    def cubic(t: float) -> float:
        t, a = abs(t), -0.75
        if t <= 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a if t < 2 else 0.0

    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        source = (i + 0.5) / scale - 0.5
        base = math.floor(source)
        for offset in (-1, 0, 1, 2):
            matrix[i, min(max(base + offset, 0), size_in - 1)] += cubic(source - (base + offset))
    return matrix


@pytest.mark.parametrize(("mode", "scale"), [("dinov2", lambda n, m: (n + 0.1) / m), ("transformers", lambda n, m: n / m)])
def test_position_embeddings_follow_the_reference_formulas(mode, scale):
    """DINOv2's interpolate_pos_encoding: scale_factor (n + 0.1) / 37 (interpolate_offset 0.1), no antialias;
    transformers': size=(h, w). Both in float32; checked against the float64 resampling formula."""
    pos = torch.randn(1, 1 + 37 * 37, 8, dtype=torch.float64)
    grid = (5, 9)
    out = interpolate_pos_embed(pos, grid, mode=mode)
    patches = pos[0, 1:].reshape(37, 37, 8)
    rows, cols = bicubic_matrix(5, 37, scale(5, 37)), bicubic_matrix(9, 37, scale(9, 37))
    expected = torch.einsum("hi,ijc,wj->hwc", rows, patches, cols).reshape(45, 8)
    assert out.dtype == torch.float64 and torch.equal(out[0, 0], pos[0, 0])
    # float32: inputs rounded (u), weights and the 16-term sums (~20 u), times the sum of |weights|^2 (< 1.5)
    torch.testing.assert_close(out[0, 1:], expected, rtol=0, atol=30 * 2**-24 * 1.5 * patches.abs().max().item())


def test_position_embedding_modes_differ_and_timm_mode_is_timms():
    pos = torch.randn(1, 1 + 37 * 37, 8)
    outs = {mode: interpolate_pos_embed(pos, (3, 4), mode=mode) for mode in ("dinov2", "timm", "transformers")}
    assert torch.equal(outs["timm"], timm.layers.resample_abs_pos_embed(pos, new_size=(3, 4), num_prefix_tokens=1))
    for a, b in (("dinov2", "timm"), ("dinov2", "transformers"), ("timm", "transformers")):
        assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)
    assert all(interpolate_pos_embed(pos, (37, 37), mode=mode) is pos for mode in outs)  # the trained grid


def test_the_trained_518_grid_uses_the_position_embeddings_as_they_are(timm_s):
    x = torch.randn(1, 3, 518, 518)
    out = dino(taps="blocks.0")(x)["blocks.0"]  # mode "dinov2": no interpolation at 37x37
    ref = timm_s.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    assert out.shape == (1, 384, 37, 37) and torch.equal(out, ref[0])


def test_remainder_pad_is_dinov2s_center_padding(every_tap_s, timm_s):
    """DINOv2's CenterPadding (hub/utils.py): zeros on the normalised image, the odd one after."""
    x = torch.randn(1, 3, 31, 45)  # padded to 42 x 56: 5 rows above, 6 below; 5 columns left, 6 right
    assert every_tap_s.remainder == "pad"
    out = every_tap_s(x)
    ref = timm_taps(timm_s, F.pad(x, (5, 6, 5, 6)), ALL_OF["dinov2_vits14"])
    assert out["blocks.1"].shape == (1, 384, 3, 4)
    for name in ref:
        assert torch.equal(out[name], ref[name]), name


@pytest.mark.parametrize(("remainder", "grid"), [("pad", (3, 4)), ("drop", (2, 3))])
def test_feature_info_matches_output_shapes(remainder, grid):
    extractor = dino(taps="blocks.0,blocks.0.cls,blocks.0.tokens,blocks.2", remainder=remainder)
    out = extractor(torch.randn(2, 3, 40, 50))
    for info in extractor.feature_info:
        channels = out[info.name].shape[1]
        assert channels == info.channels == 384 and info.stride == 14
        kind = split_tap(info.name)[1]
        rest = {"map": grid, "cls": (), "tokens": (1, 1 + grid[0] * grid[1])}[kind]
        assert tuple(out[info.name].shape) == (2, 384, *rest), info.name
        assert info.name == extractor.taps[extractor.feature_info.index(info)]


def test_remainder_error_and_too_small_inputs_say_what_to_do():
    extractor = dino(taps="blocks.0", remainder="error")
    assert extractor(torch.randn(1, 3, 28, 14))["blocks.0"].shape == (1, 384, 2, 1)
    with pytest.raises(ValueError, match=r"30x14 is not a multiple of the patch size 14.*remainder='pad'"):
        extractor(torch.randn(1, 3, 30, 14))
    with pytest.raises(ValueError, match=r"too small for tap 'blocks.0': it needs at least 14x14"):
        dino(taps="blocks.0")(torch.randn(1, 3, 13, 40))


def test_only_the_blocks_up_to_the_deepest_tap_are_built_and_loaded():
    state = random_state(facebook=True)  # every block, the final norm and DINOv2's mask_token
    extractor = dino(taps="blocks.4.cls", state={**state, "head.weight": torch.zeros(10, 384)})
    assert len(extractor.blocks) == 5 and extractor.norm is None
    own = extractor.state_dict()
    kept = ("cls_token", "pos_embed", "patch_embed.", *(f"blocks.{i}." for i in range(5)))
    assert set(own) == {key for key in state if key.startswith(kept)}
    for key in own:
        assert torch.equal(own[key], state[key]), key
    # Reference: timm's own model with 5 blocks (its final norm aside) has the same parameter count.
    with torch.device("meta"):
        five = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, depth=5)
    reference = sum(p.numel() for name, p in five.named_parameters() if not name.startswith("norm."))
    assert sum(p.numel() for p in extractor.parameters()) == reference


def test_dinov2_and_timm_checkpoint_files_load_and_the_features_cache_is_used(tmp_path):
    state = random_state(blocks=2, facebook=True)  # a two-block model: the real layout, a smaller file
    facebook = tmp_path / "dinov2_vits14_pretrain.pth"  # DINOv2's released layout, with mask_token
    torch.save(state, facebook)
    timm_file = tmp_path / "model.safetensors"  # timm's hub layout: no mask_token
    safetensors.torch.save_file({k: v for k, v in state.items() if k != "mask_token"}, timm_file)
    x = torch.randn(1, 3, 28, 28)
    expected = dino(taps="blocks.1", state=state)(x)["blocks.1"]
    for path in (facebook, timm_file, facebook):  # the second .pth load reads the features cache
        extractor = dino(taps="blocks.1", state=str(path))
        assert extractor.weights_id == f"file:{path}" and len(extractor.weights_sha256) == 64
        assert torch.equal(extractor(x)["blocks.1"], expected)
    cached = list((Path(torch.hub.get_dir()).parent.parent / "featx" / "cache").glob("*-dinov2.safetensors"))
    assert len(cached) == 1 and "mask_token" not in safetensors.torch.load_file(cached[0])


def test_strict_loading_names_missing_unexpected_and_mismatched_keys():
    state = random_state()
    with pytest.raises(WeightsLoadError, match="missing keys") as info:
        dino(taps="blocks.1", state={k: v for k, v in state.items() if k != "blocks.1.ls1.gamma"})
    assert info.value.missing == ("blocks.1.ls1.gamma",)
    small_grid = {**state, "pos_embed": torch.zeros(1, 1 + 16 * 16, 384)}  # a 224-pixel timm variant
    with pytest.raises(WeightsLoadError, match=r"pos_embed: expected \(1, 1370, 384\), got \(1, 257, 384\)"):
        dino(taps="blocks.0", state=small_grid)
    with pytest.raises(WeightsLoadError, match=r"(?s)unexpected keys.*register_tokens.*register tokens"):
        dino(taps="blocks.0", state={**state, "register_tokens": torch.zeros(1, 4, 384)})
    with pytest.raises(WeightsLoadError, match=r"shape mismatches.*blocks.0.attn.qkv.weight"):
        dino(taps="blocks.0", state=random_state("dinov2_vitb14", blocks=1))  # a ViT-B file for a ViT-S model


def test_unknown_names_and_bad_options_give_the_choices():
    with pytest.raises(ValueError, match=r"unknown tap 'block.3' for dinov2_vits14\. Did you mean 'blocks.3'\?"):
        DINOv2Features("dinov2_vits14", "block.3", weights=None)
    with pytest.raises(ValueError, match=r"unknown arch 'dinov2_vits16'\. Did you mean 'dinov2_vits14'\?"):
        DINOv2Features("dinov2_vits16", "norm", weights=None)
    with pytest.raises(ValueError, match=r"unknown pos_interpolation 'facebook'.*'dinov2', 'timm', 'transformers'"):
        DINOv2Features("dinov2_vits14", "norm", weights=None, pos_interpolation="facebook")
    with pytest.raises(ValueError, match=r"unknown remainder 'crop'.*Valid choices: 'pad', 'drop', 'error'"):
        DINOv2Features("dinov2_vits14", "norm", weights=None, remainder="crop")
    with pytest.raises(ValueError, match=r"max_side must be an integer >= 14, got 8"):
        DINOv2Features("dinov2_vits14", "norm", weights=None, max_side=8)
    with pytest.raises(ValueError, match=r"after resizing to max_side=20 the input is 5x20, smaller than one 14x14 patch"):
        dino(taps="blocks.0", max_side=20)(torch.randn(1, 3, 14, 56))


def test_a_preset_name_brings_its_taps_and_extractor_options():
    preset = PRESETS["dino_perceptual_v2"]
    extractor = dino(taps="dino_perceptual_v2")
    assert extractor.taps == preset.taps == tuple(f"blocks.{i}.tokens" for i in range(12))
    assert (extractor.pos_interpolation, extractor.remainder, extractor.max_side) == ("transformers", "drop", 512)
    explicit = dino(taps="dino_perceptual_v2", remainder="pad", pos_interpolation="dinov2", max_side=600)
    assert (explicit.pos_interpolation, explicit.remainder, explicit.max_side) == ("dinov2", "pad", 600)
    plain = dino(taps="blocks.0")
    assert (plain.pos_interpolation, plain.remainder, plain.max_side) == ("dinov2", "pad", None)
    with pytest.raises(ValueError, match="preset 'dino_perceptual_v2' is defined for 'dinov2_vitb14'"):
        build_backbone("vgg19", "dino_perceptual_v2", weights=None)


class Parent(torch.nn.Module):
    def __init__(self, extractor: torch.nn.Module) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(3, 3, 1)
        self.extractor = extractor


FAMILIES = [("vgg11", "relu1_1"), ("alexnet", "relu1"), ("dinov2_vits14", "blocks.0")]


@pytest.mark.parametrize(("arch", "tap"), FAMILIES)
def test_frozen_backbone_is_eval_locked_not_saved_and_passes_gradients_to_the_input(arch, tap):
    extractor = build_backbone(arch, tap, weights=None)
    parent = Parent(extractor).train()
    assert extractor.frozen and not extractor.training and list(parent.state_dict()) == ["head.weight", "head.bias"]
    x = torch.rand(1, 3, 28, 28, requires_grad=True)
    extractor(x)[tap].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and all(p.grad is None for p in extractor.parameters())
    fresh = Parent(build_backbone(arch, tap, weights=extractor.state_dict()))
    fresh.load_state_dict(parent.state_dict(), strict=True)  # the frozen backbone keeps its own weights
    for key, value in extractor.state_dict().items():
        assert torch.equal(fresh.extractor.state_dict()[key], value), key


@pytest.mark.parametrize(("arch", "tap"), FAMILIES)
def test_learnable_backbone_trains_and_stays_saved_after_freezing(arch, tap):
    trained = Parent(build_backbone(arch, tap, weights=None, requires_grad=True)).train()
    assert trained.extractor.training and trained.extractor.learnable
    torch.optim.SGD(trained.parameters(), lr=0.1).zero_grad()
    trained.extractor(torch.rand(2, 3, 28, 28))[tap].mean().backward()
    assert all(p.grad is not None for p in trained.extractor.parameters())
    trained.requires_grad_(False)  # freeze for export: the weights stay in the checkpoint
    checkpoint = trained.state_dict()
    assert {f"extractor.{key}" for key in trained.extractor.state_dict()} <= set(checkpoint)
    reloaded = Parent(build_backbone(arch, tap, weights=None, requires_grad=True))
    reloaded.load_state_dict(checkpoint, strict=True)
    with pytest.raises(RuntimeError, match="Missing key"):
        reloaded.load_state_dict({"head.weight": checkpoint["head.weight"], "head.bias": checkpoint["head.bias"]})


def test_deepcopy_pickle_and_to_float64():
    extractor = dino(taps="blocks.1,blocks.1.cls")
    x = torch.randn(1, 3, 28, 42)
    ref = extractor(x)
    for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
        out = clone(x)
        assert all(torch.equal(out[name], ref[name]) for name in ref)
        assert list(Parent(clone).state_dict()) == ["head.weight", "head.bias"]
    double = copy.deepcopy(extractor).to(torch.float64)
    torch.testing.assert_close(double(x.double())["blocks.1"].float(), ref["blocks.1"], rtol=1e-4, atol=1e-4)


def test_timm_is_optional():
    """featx imports timm only inside functions, and building without it names the extra."""
    for path in sorted((ROOT / "featx").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(name.split(".")[0] == "timm" for name in names), path
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "timm", None)  # what an environment without timm looks like
        assert len(available_taps("dinov2_vits14")) == 39  # names and shapes need no timm
        with pytest.raises(ImportError, match=r"pip install 'featx\[dinov2\]'"):
            DINOv2Features("dinov2_vits14", "blocks.0", weights=None)


def registry_default(arch: str):
    """The checkpoint weights='DEFAULT' means for arch, or None while the registry has no entry for it."""
    from featx.weights import default_backbone

    try:
        return default_backbone(arch)
    except ValueError:
        return None


@pytest.mark.parametrize("arch", sorted(DINOV2_ARCHS))
def test_weights_default_loads_the_registered_checkpoint_offline(arch, monkeypatch):
    from featx.errors import UnverifiedWeightsWarning
    from featx.weights import featx_home

    member = registry_default(arch)
    if member is None:
        pytest.skip(f"featx.weights has no registry entry for {arch} yet (weights='DEFAULT' has nothing to find)")
    home = featx_home()
    home.mkdir(parents=True, exist_ok=True)
    state = random_state(arch, facebook=True)
    torch.save(state, home / member.file_name)  # fabricated in the real format: not the real hash
    with pytest.warns(UnverifiedWeightsWarning):
        extractor = DINOv2Features(arch, "blocks.0")
    assert extractor.weights_id == f"unverified:{member.name}" and extractor.weights_verified is False
    assert torch.equal(extractor.pos_embed, state["pos_embed"])


def test_bfloat16_autocast_runs_close_to_float32():
    extractor = dino(taps="blocks.1,blocks.1.cls", state=random_state(blocks=2))
    x = torch.randn(1, 3, 28, 42)
    ref = extractor(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = extractor(x)
    for name in ref:  # bf16 keeps 8 bits: 2**-8 relative per product, a few products per block
        error = (low[name].float() - ref[name]).abs().max() / ref[name].abs().max()
        assert error < 0.05, (name, float(error))
