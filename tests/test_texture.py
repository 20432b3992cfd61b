"""Tests for featx.losses.texture: sliced Wasserstein, moment and contextual losses.

References are independent float64 NumPy / plain-Python implementations of the formulas in the
papers (Heitz et al. 2021; Huang & Belongie 2017; Mechrez et al. 2018, sec. 3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
import torch

from featx.functional import style_loss
from featx.losses.texture import (
    ContextualOnFeatures,
    MomentsOnFeatures,
    SlicedWassersteinOnFeatures,
    contextual_loss,
    moment_loss,
    sliced_wasserstein_loss,
)

LAYERS = {"relu1_1": 1.0, "relu2_1": 0.5}


def make_feats(batch: int = 2, size: tuple[int, int] = (4, 5), dtype=torch.float64, requires_grad=False) -> dict:
    h, w = size
    return {
        "relu1_1": torch.randn(batch, 3, h, w, dtype=dtype, requires_grad=requires_grad),
        "relu2_1": torch.randn(batch, 4, max(h // 2, 1), max(w // 2, 1), dtype=dtype, requires_grad=requires_grad),
    }


def permute_positions(feats: dict) -> dict:
    out = {}
    for k, f in feats.items():
        b, c, h, w = f.shape
        out[k] = f.flatten(2)[..., torch.randperm(h * w)].reshape(b, c, h, w)
    return out


def rel(a, b) -> float:
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-30)


# ------------------------------------------------------------------ references


def ref_sliced_wasserstein(pred: dict, target: dict, layers: dict, seed: int, num_projections=None) -> np.ndarray:
    """Per-sample SW loss in float64 NumPy; directions from the documented draw (per layer, in order)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for layer, weight in layers.items():
        p, t = pred[layer].double().numpy(), target[layer].double().numpy()
        c = p.shape[1]
        v = torch.randn(num_projections or c, c, generator=gen).double().numpy()
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        values = []
        for b in range(p.shape[0]):
            xp = np.sort(v @ p[b].reshape(c, -1), axis=1)
            xt = np.sort(v @ t[min(b, t.shape[0] - 1)].reshape(c, -1), axis=1)
            n, m = xp.shape[1], xt.shape[1]
            if m != n:  # target quantiles at levels (k + 1/2) / n, linear, ends clamped
                levels_t, levels_p = (np.arange(m) + 0.5) / m, (np.arange(n) + 0.5) / n
                xt = np.stack([np.interp(levels_p, levels_t, row) for row in xt])
            values.append(np.mean((xp - xt) ** 2))
        total = total + weight * np.array(values)
    return total


def ref_moments(pred: dict, target: dict, layers: dict, eps: float = 1e-5) -> np.ndarray:
    total = 0.0
    for layer, weight in layers.items():
        p, t = pred[layer].double().flatten(2).numpy(), target[layer].double().flatten(2).numpy()
        sp, st = np.sqrt(p.var(axis=2) + eps), np.sqrt(t.var(axis=2) + eps)
        total = total + weight * (((p.mean(2) - t.mean(2)) ** 2).mean(1) + ((sp - st) ** 2).mean(1))
    return total


def ref_contextual_one(x: np.ndarray, y: np.ndarray, h: float = 0.5, eps: float = 1e-5) -> float:
    """Mechrez et al. sec. 3 with explicit loops; x: (C, N) prediction, y: (C, M) target."""
    mu = y.mean(axis=1)
    xs = [(x[:, i] - mu) / (np.linalg.norm(x[:, i] - mu) + 1e-10) for i in range(x.shape[1])]
    ys = [(y[:, j] - mu) / (np.linalg.norm(y[:, j] - mu) + 1e-10) for j in range(y.shape[1])]
    d = [[max(1.0 - float(xi @ yj), 0.0) for yj in ys] for xi in xs]
    cx = []
    for row in d:
        rel_row = [v / (min(row) + eps) for v in row]
        w = [math.exp((1.0 - r) / h) for r in rel_row]
        cx.append([v / sum(w) for v in w])
    best = [max(cx[i][j] for i in range(len(xs))) for j in range(len(ys))]
    return -math.log(sum(best) / len(best))


def ref_contextual(pred: dict, target: dict, layers: dict, **kwargs) -> np.ndarray:
    total = 0.0
    for layer, weight in layers.items():
        p, t = pred[layer].double().flatten(2).numpy(), target[layer].double().flatten(2).numpy()
        total = total + weight * np.array(
            [ref_contextual_one(p[b], t[min(b, t.shape[0] - 1)], **kwargs) for b in range(p.shape[0])]
        )
    return total


# ------------------------------------------------------------------ sliced Wasserstein


@pytest.mark.parametrize("num_projections", [None, 7])
def test_sliced_wasserstein_matches_reference(num_projections):
    pred, target = make_feats(), make_feats()
    value = sliced_wasserstein_loss(pred, target, LAYERS, seed=3, num_projections=num_projections, reduction="none")
    expected = ref_sliced_wasserstein(pred, target, LAYERS, seed=3, num_projections=num_projections)
    assert value.shape == (2,) and np.allclose(value.numpy(), expected, rtol=1e-5)


def test_sliced_wasserstein_other_target_size_uses_quantile_interpolation():
    pred, target = make_feats(size=(4, 6)), make_feats(batch=1, size=(7, 5))
    value = sliced_wasserstein_loss(pred, target, LAYERS, seed=1, reduction="none")
    assert np.allclose(value.numpy(), ref_sliced_wasserstein(pred, target, LAYERS, seed=1), rtol=1e-5)


def test_sliced_wasserstein_identity_and_permutation_invariance():
    pred, target = make_feats(), make_feats()
    assert float(sliced_wasserstein_loss(pred, pred, LAYERS, seed=0)) == 0.0
    assert float(sliced_wasserstein_loss(pred, permute_positions(pred), LAYERS, seed=0)) < 1e-12
    base = sliced_wasserstein_loss(pred, target, LAYERS, seed=0)
    assert rel(sliced_wasserstein_loss(pred, permute_positions(target), LAYERS, seed=0), base) < 1e-9


def test_sliced_wasserstein_seeding():
    pred, target = make_feats(), make_feats()
    a = sliced_wasserstein_loss(pred, target, LAYERS, seed=3)
    assert float(a) == float(sliced_wasserstein_loss(pred, target, LAYERS, seed=3))
    assert float(a) == float(sliced_wasserstein_loss(pred, target, LAYERS, generator=torch.Generator().manual_seed(3)))
    assert float(a) != float(sliced_wasserstein_loss(pred, target, LAYERS, seed=4))
    torch.manual_seed(11)
    b = sliced_wasserstein_loss(pred, target, LAYERS)  # global RNG: new directions per call
    c = sliced_wasserstein_loss(pred, target, LAYERS)
    torch.manual_seed(11)
    assert float(b) != float(c) and float(b) == float(sliced_wasserstein_loss(pred, target, LAYERS))
    with pytest.raises(ValueError, match="either seed= or generator="):
        sliced_wasserstein_loss(pred, target, LAYERS, seed=1, generator=torch.Generator())


# ------------------------------------------------------------------ moments


def test_moment_loss_matches_reference_and_is_permutation_invariant():
    pred, target = make_feats(), make_feats(batch=1, size=(6, 3))
    value = moment_loss(pred, target, LAYERS, reduction="none")
    assert np.allclose(value.numpy(), ref_moments(pred, target, LAYERS), rtol=1e-5)
    assert rel(moment_loss(pred, permute_positions(target), LAYERS), value.mean()) < 1e-9
    assert float(moment_loss(pred, permute_positions(pred), LAYERS)) < 1e-12


# ------------------------------------------------------------------ contextual


def test_contextual_matches_loop_reference():
    pred, target = make_feats(), make_feats(size=(3, 4))
    value = contextual_loss(pred, target, LAYERS, band_width=0.3, reduction="none")
    assert np.allclose(value.numpy(), ref_contextual(pred, target, LAYERS, h=0.3), rtol=1e-5)


def test_contextual_minimum_distinct_and_duplicated_vectors():
    f = make_feats(batch=1)
    assert abs(float(contextual_loss(f, f, LAYERS))) < 1e-9  # distinct vectors: the minimum 0
    # Two equal feature vectors share their affinity (cx = 1/2 each): CX = (M - 1) / M.
    g = {"relu1_1": f["relu1_1"].clone()}
    g["relu1_1"][..., 0, 1] = g["relu1_1"][..., 0, 0]
    m = g["relu1_1"][0, 0].numel()
    assert float(contextual_loss(g, g, {"relu1_1": 1.0})) == pytest.approx(-math.log((m - 1) / m), rel=1e-6)


def test_contextual_max_positions_samples_the_same_positions_reproducibly():
    pred, target = make_feats(batch=1, size=(8, 8)), make_feats(batch=1, size=(8, 8))
    layers = {"relu1_1": 1.0}
    value = contextual_loss(pred, target, layers, max_positions=16, seed=5)
    assert float(value) == float(contextual_loss(pred, target, layers, max_positions=16, seed=5))
    # reference: the documented sample (randperm from a generator seeded with `seed`), same for both maps
    keep = torch.randperm(64, generator=torch.Generator().manual_seed(5))[:16]
    sub = {k: {"relu1_1": v["relu1_1"].flatten(2)[..., keep].unsqueeze(-1)} for k, v in (("p", pred), ("t", target))}
    assert rel(value, ref_contextual(sub["p"], sub["t"], layers)[0]) < 1e-6
    assert abs(float(contextual_loss(pred, pred, layers, max_positions=16, seed=5))) < 1e-9


# ------------------------------------------------------------------ shared properties


FUNCTIONS = {
    "sliced_wasserstein": lambda p, t, **kw: sliced_wasserstein_loss(p, t, LAYERS, seed=0, **kw),
    "moments": lambda p, t, **kw: moment_loss(p, t, LAYERS, **kw),
    "contextual": lambda p, t, **kw: contextual_loss(p, t, LAYERS, seed=0, **kw),
}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_gradcheck_float64(name):
    pred = make_feats(batch=1, size=(3, 4), requires_grad=True)
    target = make_feats(batch=1, size=(3, 4), requires_grad=True)

    def fn(a, b, c, d):
        return FUNCTIONS[name]({"relu1_1": a, "relu2_1": b}, {"relu1_1": c, "relu2_1": d})

    assert torch.autograd.gradcheck(fn, (pred["relu1_1"], pred["relu2_1"], target["relu1_1"], target["relu2_1"]))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_identity_gives_zero_and_finite_gradients(name):
    f = make_feats()
    x = {k: v.clone().requires_grad_() for k, v in f.items()}
    value = FUNCTIONS[name](x, f)
    value.backward()
    assert abs(float(value.detach())) < 1e-9
    assert all(torch.isfinite(v.grad).all() for v in x.values())


@pytest.mark.parametrize("name", FUNCTIONS)
def test_terms_add_up_and_reductions(name):
    pred, target = make_feats(batch=3), make_feats(batch=3)
    total, terms = FUNCTIONS[name](pred, target, return_terms=True)
    assert set(terms) == set(LAYERS) and torch.equal(sum(terms.values()), total)
    none = FUNCTIONS[name](pred, target, reduction="none")
    assert none.shape == (3,)
    assert rel(none.mean(), total) < 1e-12 and rel(none.sum(), FUNCTIONS[name](pred, target, reduction="sum")) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_finite_under_autocast_with_large_activations(dtype, name):
    conv1 = torch.nn.Conv2d(3, 3, 3, padding=1)
    conv2 = torch.nn.Conv2d(3, 4, 3, padding=1, stride=2)
    x, y = torch.rand(2, 3, 8, 8, requires_grad=True), torch.rand(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=dtype):
        a = conv1(x * 1e3)
        pred = {"relu1_1": a, "relu2_1": conv2(a)}
        with torch.no_grad():
            b = conv1(y * 1e3)
            target = {"relu1_1": b, "relu2_1": conv2(b)}
        assert pred["relu1_1"].dtype == dtype
        value = FUNCTIONS[name](pred, target)
    # reference: the same function on the float64 cast of the same low-precision features
    reference = FUNCTIONS[name]({k: v.detach().double() for k, v in pred.items()}, target)
    assert value.dtype == torch.float32 and torch.isfinite(value) and rel(value.detach(), reference) < 1e-4
    value.backward()
    assert torch.isfinite(x.grad).all()


def test_modules_equal_functions():
    pred, target = make_feats(), make_feats(batch=1, size=(5, 4))
    pairs = [
        (SlicedWassersteinOnFeatures(LAYERS, seed=2, num_projections=5),
         sliced_wasserstein_loss(pred, target, LAYERS, seed=2, num_projections=5)),
        (MomentsOnFeatures(LAYERS, eps=1e-3), moment_loss(pred, target, LAYERS, eps=1e-3)),
        (ContextualOnFeatures(LAYERS, band_width=0.2, seed=2), contextual_loss(pred, target, LAYERS, band_width=0.2, seed=2)),
    ]  # fmt: skip
    for module, expected in pairs:
        assert torch.equal(module(pred, target), expected)
        total, terms = module(pred, target, return_terms=True)
        assert torch.equal(total, expected) and set(terms) == set(LAYERS)
        assert "layer_weights" in repr(module)


# ------------------------------------------------------------------ textures


def texture_features(image: np.ndarray) -> dict:
    """Two ReLU layers of a fixed random conv net (the statistics tested do not need trained weights)."""
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(16, 1, 3, 3, generator=gen) / 3, torch.randn(32, 16, 3, 3, generator=gen) / 12
    x = torch.from_numpy(image).float().div(255)[None, None]
    a = torch.relu(torch.nn.functional.conv2d(x, w1, padding=1))
    b = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(a, 2), w2, padding=1))
    return {"relu1_1": a, "relu2_1": b}


def test_texture_and_its_2x_tiling_are_close_compared_to_another_texture():
    brick = skimage.data.brick()[:64, :64]
    crop, tiled = texture_features(brick), texture_features(np.tile(brick, (2, 2)))
    grass = texture_features(skimage.data.grass()[:64, :64])
    layers = {"relu1_1": 1.0, "relu2_1": 1.0}
    for fn in (
        lambda p, t: style_loss(p, t, layers),
        lambda p, t: sliced_wasserstein_loss(p, t, layers, seed=0),
        lambda p, t: moment_loss(p, t, layers),
    ):
        same, other = float(fn(crop, tiled)), float(fn(crop, grass))
        assert same < 0.1 * other, (same, other)


# ------------------------------------------------------------------ bad input


def test_bad_arguments_are_reported():
    pred, target = make_feats(), make_feats()
    with pytest.raises(ValueError, match=r"unknown reduction 'man'. Did you mean 'mean'.*'mean', 'sum', 'none'"):
        moment_loss(pred, target, LAYERS, reduction="man")
    target["relu2_1"] = torch.randn(2, 5, 2, 2)
    with pytest.raises(ValueError, match=r"'relu2_1'.*\(2, 4, 2, 2\).*\(2, 5, 2, 2\).*same channels"):
        sliced_wasserstein_loss(pred, target, LAYERS)
    with pytest.raises(ValueError, match="num_projections must be an integer >= 1, got 0"):
        sliced_wasserstein_loss(pred, pred, LAYERS, num_projections=0)
    with pytest.raises(ValueError, match="band_width must be a positive number"):
        ContextualOnFeatures(LAYERS, band_width=0)
    with pytest.raises(ValueError, match="max_positions must be an integer >= 1, got 0"):
        contextual_loss(pred, pred, LAYERS, max_positions=0)
    with pytest.raises(ValueError, match=r"'conv1_1' is missing.*Available layers: relu1_1, relu2_1"):
        MomentsOnFeatures({"conv1_1": 1.0})(pred, pred)
    bad = {k: v.clone() for k, v in pred.items()}
    bad["relu1_1"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pred feature 'relu1_1' contains NaN"):
        contextual_loss(bad, pred, LAYERS, check_finite=True)
