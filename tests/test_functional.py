"""Tests for featx.functional: Gram matrices, feature distances, perceptual and style losses.

References are written here independently in float64 (einsum Gram, explicit sums and norms).
"""

from __future__ import annotations

import math

import pytest
import torch

from featx.functional import (
    CRITERIA,
    feature_distance,
    gram_matrices,
    gram_matrix,
    perceptual_loss,
    style_loss,
)

LAYERS = {"relu1_1": 1.0, "relu2_1": 0.25}


def make_feats(batch: int = 2, dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> dict:
    return {
        "relu1_1": torch.randn(batch, 3, 6, 5, dtype=dtype, requires_grad=requires_grad),
        "relu2_1": torch.randn(batch, 4, 3, 2, dtype=dtype, requires_grad=requires_grad),
    }


def ref_gram(f: torch.Tensor, normalize) -> torch.Tensor:
    """Reference: einsum over positions in float64, then the documented divisor."""
    b, c, h, w = f.shape
    g = torch.einsum("bchw,bdhw->bcd", f.double(), f.double())
    return g / {"chw": c * h * w, "hw": h * w, None: 1}[normalize]


def ref_per_sample(a: torch.Tensor, b: torch.Tensor, criterion: str, eps: float = 1e-3) -> torch.Tensor:
    """Reference per-sample values from explicit float64 sums over each sample."""
    out = []
    for i in range(a.shape[0]):
        d = (a[i].double() - b[i].double()).flatten().tolist()
        if criterion == "l1":
            out.append(sum(abs(v) for v in d) / len(d))
        elif criterion in ("l2", "mse"):
            out.append(sum(v * v for v in d) / len(d))
        elif criterion == "charbonnier":
            out.append(sum(math.sqrt(v * v + eps * eps) for v in d) / len(d))
        else:
            out.append(math.sqrt(sum(v * v for v in d)))
    return torch.tensor(out, dtype=torch.float64)


def ref_elementwise(a: torch.Tensor, b: torch.Tensor, criterion: str, eps: float = 1e-3) -> torch.Tensor:
    """Reference elementwise values in float64 (for torch's all-element sums)."""
    d = a.double() - b.double()
    if criterion == "l1":
        return d.abs()
    if criterion == "charbonnier":
        return torch.sqrt(d * d + eps * eps)
    return d * d


def rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> bool:
    actual, expected = actual.detach().double(), expected.detach().double()
    return bool(torch.allclose(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()) + 1e-12))


# ------------------------------------------------------------------ Gram


@pytest.mark.parametrize("normalize", ["chw", "hw", None])
def test_gram_matches_einsum_reference(normalize):
    f = torch.randn(2, 5, 7, 3)
    g = gram_matrix(f, normalize=normalize)
    assert g.dtype == torch.float32 and g.shape == (2, 5, 5)
    assert rel_close(g, ref_gram(f, normalize))


def test_gram_float64_stays_float64():
    # gradcheck needs float64 end to end
    f = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    assert gram_matrix(f).dtype == torch.float64


def test_gram_bf16_features_match_fp32_path_and_naive_fp16_overflows():
    f = torch.relu(torch.randn(2, 16, 32, 32)) * 1e3  # activations in the thousands
    reference = gram_matrix(f)
    low = gram_matrix(f.bfloat16())
    assert low.dtype == torch.float32
    assert float((low - reference).norm() / reference.norm()) < 1e-2
    half = gram_matrix(f.half(), normalize="hw")
    assert torch.isfinite(half).all()
    # The naive fp16 product F F^T overflows (entries ~ 1e6 * 1024 positions > 65504).
    flat = f.half().flatten(2)
    assert torch.isinf(flat @ flat.transpose(1, 2)).any()


def test_gram_under_autocast_is_float32_and_finite():
    f = torch.relu(torch.randn(1, 8, 16, 16)) * 1e3
    with torch.autocast("cpu", dtype=torch.float16):
        g = gram_matrix(f.half())
    assert g.dtype == torch.float32 and torch.isfinite(g).all()
    assert rel_close(g, ref_gram(f.half().float(), "chw"), rtol=1e-4)


def test_gram_matrices_subset_and_missing_layer():
    feats = make_feats()
    grams = gram_matrices(feats, layers=["relu2_1"])
    assert list(grams) == ["relu2_1"] and rel_close(grams["relu2_1"], ref_gram(feats["relu2_1"], "chw"))
    with pytest.raises(ValueError, match="'relu3_1' is missing.*Available layers: relu1_1, relu2_1"):
        gram_matrices(feats, layers=["relu3_1"])


# ------------------------------------------------------------------ distances


@pytest.mark.parametrize("criterion", CRITERIA)
def test_feature_distance_matches_explicit_sums(criterion):
    a, b = torch.randn(3, 4, 5, 2), torch.randn(3, 4, 5, 2)
    per_sample = ref_per_sample(a, b, criterion)
    numel = a[0].numel()
    none = feature_distance(a, b, criterion=criterion, reduction="none")
    assert none.shape == (3,) and rel_close(none, per_sample)
    mean = feature_distance(a, b, criterion=criterion, reduction="mean")
    assert rel_close(mean, per_sample.mean()) and rel_close(none.mean(), mean)
    # "sum" is the sum over the batch of the per-sample values, for every criterion (docs/api.md);
    # for the elementwise criteria torch's all-element sum is numel times that
    total = feature_distance(a, b, criterion=criterion, reduction="sum")
    assert rel_close(total, per_sample.sum()) and rel_close(none.sum(), total)
    if criterion != "fro":
        assert rel_close(total * numel, ref_elementwise(a, b, criterion).sum())


def test_l2_and_mse_are_the_same_and_match_torch():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    # torch.nn.functional is the reference for the elementwise reductions
    assert torch.equal(feature_distance(a, b, criterion="l2"), feature_distance(a, b, criterion="mse"))
    assert torch.allclose(feature_distance(a, b, criterion="mse"), torch.nn.functional.mse_loss(a, b))
    assert torch.allclose(feature_distance(a, b, criterion="l1"), torch.nn.functional.l1_loss(a, b))
    # featx's "sum" sums per-sample means; torch's sums elements: a factor of the per-sample size
    per_sample_size = a[0].numel()
    torch_sum = torch.nn.functional.l1_loss(a, b, reduction="sum")
    assert torch.allclose(feature_distance(a, b, criterion="l1", reduction="sum") * per_sample_size, torch_sum)


def test_charbonnier_eps_convention_matches_basicsr_form():
    # BasicSR: sqrt(d^2 + e) with e unsquared; featx eps = sqrt(e).
    a, b = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    e = 1e-4
    basicsr = torch.sqrt((a - b) ** 2 + e).mean()
    assert rel_close(feature_distance(a, b, criterion="charbonnier", eps=math.sqrt(e)), basicsr)


def test_target_batch_of_one_broadcasts():
    a, b = torch.randn(3, 2, 4, 4), torch.randn(1, 2, 4, 4)
    assert rel_close(feature_distance(a, b, criterion="mse", reduction="none"), ref_per_sample(a, b.expand(3, -1, -1, -1), "mse"))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_feature_distance_gradcheck_and_identity(criterion):
    a = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: feature_distance(x, y, criterion=criterion), (a, b))
    # identical inputs: 0 (Charbonnier: its minimum eps) and a finite zero gradient (no NaN from sqrt/norm)
    x = a.detach().clone().requires_grad_()
    value = feature_distance(x, a.detach(), criterion=criterion)
    value.backward()
    assert float(value.detach()) == pytest.approx(1e-3 if criterion == "charbonnier" else 0.0, abs=1e-12)
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().max()) == 0.0


# ------------------------------------------------------------------ perceptual


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_perceptual_loss_matches_reference_and_terms_add_up(criterion, reduction):
    pred, target = make_feats(), make_feats()
    total, terms = perceptual_loss(pred, target, LAYERS, criterion=criterion, reduction=reduction, return_terms=True)
    expected = 0
    for layer, weight in LAYERS.items():
        per_sample = ref_per_sample(pred[layer], target[layer], criterion)
        if reduction == "none":
            value = per_sample
        elif reduction == "mean":
            value = per_sample.mean()
        else:
            value = per_sample.sum()
        assert rel_close(terms[layer], weight * value)
        expected = expected + weight * value
    assert rel_close(total, expected)
    assert torch.allclose(sum(terms.values()), total, rtol=0, atol=0)
    assert total.shape == ((2,) if reduction == "none" else ())


def test_perceptual_normalize_channels_matches_reference_and_is_safe_on_zero_vectors():
    pred, target = make_feats(), make_feats()
    target["relu1_1"][:, :, 0, 0] = 0.0  # an all-zero feature vector (a dead ReLU position)

    def unit(f):  # LPIPS/piq convention: x / (||x||_C + 1e-10)
        return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)

    expected = sum(w * ((unit(pred[k]) - unit(target[k])) ** 2).mean() for k, w in LAYERS.items())
    assert rel_close(perceptual_loss(pred, target, LAYERS, criterion="mse", normalize_channels=True), expected)
    x = {k: v.clone().requires_grad_() for k, v in target.items()}
    perceptual_loss(x, target, LAYERS, normalize_channels=True).backward()
    assert all(torch.isfinite(v.grad).all() for v in x.values())


def test_perceptual_loss_gradcheck():
    pred, target = make_feats(requires_grad=True), make_feats(requires_grad=True)

    def fn(a, b, c, d):
        return perceptual_loss({"relu1_1": a, "relu2_1": b}, {"relu1_1": c, "relu2_1": d}, LAYERS, criterion="mse")

    assert torch.autograd.gradcheck(fn, (pred["relu1_1"], pred["relu2_1"], target["relu1_1"], target["relu2_1"]))


def test_layers_not_in_weights_are_ignored():
    pred, target = make_feats(), make_feats()
    pred["extra"] = torch.randn(2, 3, 2, 2)  # not in layer_weights, no counterpart in target: fine
    assert rel_close(
        perceptual_loss(pred, target, {"relu2_1": 1.0}),
        ref_per_sample(pred["relu2_1"], target["relu2_1"], "l1").mean(),
    )


# ------------------------------------------------------------------ style


@pytest.mark.parametrize("normalize", ["chw", "hw", None])
@pytest.mark.parametrize("criterion", ["l1", "mse", "fro"])
def test_style_loss_matches_einsum_reference(normalize, criterion):
    pred, target = make_feats(), make_feats()
    total, terms = style_loss(pred, target, LAYERS, criterion=criterion, normalize=normalize, return_terms=True)
    expected = 0
    for layer, weight in LAYERS.items():
        gp, gt = ref_gram(pred[layer], normalize), ref_gram(target[layer], normalize)
        expected = expected + weight * ref_per_sample(gp, gt, criterion).mean()
    assert rel_close(total, expected)
    assert torch.allclose(sum(terms.values()), total, rtol=0, atol=0)


def test_style_loss_cached_grams_broadcast_and_other_size():
    pred = make_feats(batch=3)
    style = {"relu1_1": torch.randn(1, 3, 9, 9, dtype=torch.float64), "relu2_1": torch.randn(1, 4, 5, 4).double()}
    direct = style_loss(pred, style, LAYERS, reduction="none")
    cached = style_loss(pred, None, LAYERS, reduction="none", target_grams=gram_matrices(style, layers=LAYERS))
    assert direct.shape == (3,) and torch.allclose(direct, cached, rtol=1e-12, atol=0)
    expected = sum(
        w * ((ref_gram(pred[k], "chw") - ref_gram(style[k], "chw")) ** 2).mean(dim=(1, 2)) for k, w in LAYERS.items()
    )
    assert rel_close(direct, expected)


def test_style_loss_gradcheck_and_identity():
    pred, target = make_feats(requires_grad=True), make_feats(requires_grad=True)

    def fn(a, b, c, d):
        return style_loss({"relu1_1": a, "relu2_1": b}, {"relu1_1": c, "relu2_1": d}, LAYERS, criterion="fro")

    assert torch.autograd.gradcheck(fn, (pred["relu1_1"], pred["relu2_1"], target["relu1_1"], target["relu2_1"]))
    x = {k: v.detach().clone().requires_grad_() for k, v in pred.items()}
    value = style_loss(x, {k: v.detach() for k, v in pred.items()}, LAYERS, criterion="fro")
    value.backward()
    assert float(value.detach()) == 0.0 and all(torch.isfinite(v.grad).all() for v in x.values())


# ------------------------------------------------------------------ mixed precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "name", ["l1", "mse", "charbonnier", "fro", "style_chw", "style_hw", "style_fro", "style_unnormalized"]
)
def test_losses_finite_under_autocast_with_large_activations(dtype, name):
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = torch.rand(2, 3, 16, 16)
    layers = {"relu1_1": 1.0}
    with torch.autocast("cpu", dtype=dtype):
        pred = {"relu1_1": conv(x * 1e3)}  # activations ~1e3: their squares overflow fp16
        with torch.no_grad():
            target = {"relu1_1": conv(y * 1e3)}
        assert pred["relu1_1"].dtype == dtype
        if name.startswith("style"):
            kind = name.split("_")[1]
            criterion = "fro" if kind == "fro" else "mse"
            normalize = {"chw": "chw", "hw": "hw", "fro": "chw", "unnormalized": None}[kind]
            loss = style_loss(pred, target, layers, criterion=criterion, normalize=normalize)
            reference = style_loss({"relu1_1": pred["relu1_1"].double()}, target, layers, criterion=criterion,
                                   normalize=normalize)
        else:
            loss = perceptual_loss(pred, target, layers, criterion=name)
            reference = perceptual_loss({"relu1_1": pred["relu1_1"].double()}, target, layers, criterion=name)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # reference: the same loss on the float64 cast of the same low-precision features
    assert rel_close(loss, reference, rtol=1e-5)
    squares = (pred["relu1_1"].detach().double() - target["relu1_1"].double()) ** 2
    assert float(squares.max()) > 65504  # squaring these differences in fp16 would give inf
    loss.backward()
    if name == "style_unnormalized" and dtype == torch.float16:
        # documented limit: d/dF of an unnormalised Gram loss is ~1e9 here, beyond fp16's range, so
        # the gradient entering the fp16 backbone overflows; the chw/hw normalisations avoid it.
        assert not torch.isfinite(x.grad).all()
    else:
        assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ bad input


def test_mismatched_shapes_show_both_and_the_layer():
    pred, target = make_feats(), make_feats()
    target["relu2_1"] = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"'relu2_1'.*\(2, 4, 3, 2\).*\(2, 4, 3, 3\)"):
        perceptual_loss(pred, target, LAYERS)
    target["relu2_1"] = torch.randn(2, 5, 3, 2)
    with pytest.raises(ValueError, match=r"'relu2_1'.*\(2, 4, 3, 2\).*\(2, 5, 3, 2\)"):
        style_loss(pred, target, LAYERS)


def test_missing_layer_lists_available_and_suggests():
    pred, target = make_feats(), make_feats()
    with pytest.raises(ValueError, match=r"'relu2_2' is missing from the pred.*'relu2_1'.*Available layers: relu1_1"):
        perceptual_loss(pred, target, {"relu2_2": 1.0})
    del target["relu2_1"]
    with pytest.raises(ValueError, match="missing from the target features"):
        perceptual_loss(pred, target, LAYERS)


def test_unknown_criterion_reduction_normalize_list_valid_choices():
    a = make_feats()
    with pytest.raises(ValueError, match=r"unknown criterion 'mae'.*Valid choices: 'l1', 'l2', 'mse'"):
        perceptual_loss(a, a, LAYERS, criterion="mae")
    with pytest.raises(ValueError, match=r"unknown criterion 'charbonier'. Did you mean 'charbonnier'"):
        feature_distance(a["relu1_1"], a["relu1_1"], criterion="charbonier")
    with pytest.raises(ValueError, match=r"unknown reduction 'avg'.*'mean', 'sum', 'none'"):
        style_loss(a, a, LAYERS, reduction="avg")
    with pytest.raises(ValueError, match=r"unknown normalize 'CHW'.*'chw', 'hw', None"):
        gram_matrix(a["relu1_1"], normalize="CHW")


def test_check_finite_names_the_layer():
    pred, target = make_feats(), make_feats()
    pred["relu2_1"][0, 0, 0, 0] = float("nan")
    perceptual_loss(pred, target, LAYERS)  # no check by default (no host sync)
    with pytest.raises(ValueError, match="pred feature 'relu2_1' contains NaN or Inf"):
        perceptual_loss(pred, target, LAYERS, check_finite=True)
    target["relu1_1"][0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="target feature 'relu1_1' contains NaN or Inf"):
        style_loss(make_feats(), target, LAYERS, check_finite=True)


def test_bad_layer_weights_and_style_targets():
    a = make_feats()
    with pytest.raises(TypeError, match="layer_weights must be a mapping"):
        perceptual_loss(a, a, ["relu1_1"])
    with pytest.raises(TypeError, match=r"layer_weights\['relu1_1'\] must be a finite number"):
        perceptual_loss(a, a, {"relu1_1": float("nan")})
    with pytest.raises(ValueError, match="at least one layer"):
        perceptual_loss(a, a, {})
    with pytest.raises(ValueError, match="exactly one of target_feats or target_grams, got neither"):
        style_loss(a, None, LAYERS)
    with pytest.raises(ValueError, match="got both"):
        style_loss(a, a, LAYERS, target_grams=gram_matrices(a))
    with pytest.raises(ValueError, match="must be 4-D"):
        gram_matrix(torch.randn(3, 4, 4))


def test_l1_gradients_match_autograd_abs_for_both_inputs_and_broadcast_target():
    """The sign-saving L1 against autograd through ``(a - b).abs()`` (the reference), float64."""
    a = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    for b_shape in ((3, 4, 5, 6), (1, 4, 5, 6)):
        b = torch.randn(*b_shape, dtype=torch.float64, requires_grad=True)
        with torch.no_grad():
            b[..., 0, 0] = a[: b.shape[0], ..., 0, 0]  # exact ties: abs's gradient there is 0
        weights = torch.arange(1.0, 4.0, dtype=torch.float64)
        ours = (feature_distance(a, b, criterion="l1", reduction="none") * weights).sum()
        ga, gb = torch.autograd.grad(ours, (a, b))
        ref = ((a - b).abs().flatten(1).mean(dim=1) * weights).sum()
        ra, rb = torch.autograd.grad(ref, (a, b))
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(ga, ra)
        torch.testing.assert_close(gb, rb)


def test_empty_inputs_give_clear_errors_not_nan():
    """A batch of 0 or a 0x0 map used to give NaN, an obscure reduction error or ZeroDivisionError."""
    with pytest.raises(ValueError, match=r"shape \(1, 4, 0, 0\) has no channels or no positions"):
        gram_matrix(torch.rand(1, 4, 0, 0))
    empty = {"relu1_1": torch.rand(0, 4, 8, 8)}
    with pytest.raises(ValueError, match=r"pred feature 'relu1_1' is empty \(shape \(0, 4, 8, 8\)\)"):
        perceptual_loss(empty, empty, {"relu1_1": 1.0})
    with pytest.raises(ValueError, match="is empty"):
        style_loss(empty, empty, {"relu1_1": 1.0})
    with pytest.raises(ValueError, match="at least one element"):
        feature_distance(torch.rand(0, 3), torch.rand(0, 3))
