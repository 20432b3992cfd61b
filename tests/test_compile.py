"""torch.compile of PerceptualLoss: same values and input gradients as eager, without graph breaks."""

from __future__ import annotations

import pytest
import torch

from featx.losses import PerceptualLoss

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

# What a missing/broken C++ toolchain looks like when inductor compiles (the only reason to skip).
_NO_COMPILER = ("InvalidCxxCompiler", "CppCompileError", "No working C compiler", "C++ compiler")


def _loss_and_grad(fn, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred = pred.clone().requires_grad_(True)
    value = fn(pred, target)
    (grad,) = torch.autograd.grad(value, pred)
    return value.detach(), grad


def test_compiled_perceptual_loss_matches_eager():
    torch.manual_seed(0)
    loss = PerceptualLoss({"conv1_2": 0.5, "relu2_1": 1.0}, weights=None)
    compiled = torch.compile(loss, fullgraph=True)  # fullgraph: any graph break is an error
    inputs = [(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)) for _ in range(2)]
    try:
        results = [_loss_and_grad(compiled, pred, target) for pred, target in inputs]
    except RuntimeError as error:  # BackendCompilerFailed / InvalidCxxCompiler are RuntimeErrors
        if any(marker in f"{type(error).__name__}: {error}" for marker in _NO_COMPILER):
            pytest.skip(f"torch.compile cannot build kernels here: {error}")
        raise
    # reference: the same module run eagerly (second input: the cached compiled graph is reused)
    for (pred, target), (value, grad) in zip(inputs, results, strict=True):
        expected_value, expected_grad = _loss_and_grad(loss, pred, target)
        torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)
    assert results[0][0] != results[1][0]  # different inputs gave different losses
