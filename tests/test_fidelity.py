"""featx.metrics.psnr / ssim / rgb_to_y on tensors.

References: BasicSR 1.4.2's ``calculate_psnr_pt``/``calculate_ssim_pt`` (PyTorch) and
``calculate_psnr``/``calculate_ssim`` (numpy, on [0, 255] arrays), scikit-image's
``peak_signal_noise_ratio``/``structural_similarity``, and the BT.601 formula written out in
float64. Inputs are float64 where exactness is the point, so the differences left are float64
rounding (1e-12 on values of order 1).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torchvision
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import featx
from featx.metrics import fidelity
from featx.metrics.fidelity import psnr, rgb_to_y, ssim

# BasicSR 1.4.2 imports a torchvision module that newer torchvision renamed
sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_psnr_pt, calculate_ssim, calculate_ssim_pt  # noqa: E402

EXACT = 1e-12  # float64 rounding of sums over ~1e3 pixels, values of order 1 (PSNR: of order 30)


def pairs(batch=2, channels=3, height=37, width=42, noise=0.05, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, channels, height, width, generator=generator, dtype=dtype)
    pred = (target + noise * torch.randn(target.shape, generator=generator, dtype=dtype)).clamp(0, 1)
    return pred, target


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("crop_border", [0, 4])
def test_equal_to_basicsr_pt_functions(y_channel, crop_border):
    pred, target = pairs()
    # BasicSR's calculate_psnr_pt adds 1e-8 to the MSE: eps=1e-8 is the same formula
    expected_psnr = calculate_psnr_pt(pred, target, crop_border, test_y_channel=y_channel)
    got = psnr(pred, target, crop_border=crop_border, y_channel=y_channel, reduction="none", eps=1e-8)
    assert got.dtype == torch.float64 and got.shape == (2,)
    # rgb2ycbcr_pt builds its weights with torch.tensor (float32) before .to(float64): each weight is off by
    # up to 2**-24 relative, so Y by 6e-8 relative and PSNR by up to 20 / ln(10) * 6e-8 = 5.2e-7 dB
    torch.testing.assert_close(got, expected_psnr, rtol=0, atol=5.2e-7 if y_channel else EXACT * 100)
    expected_ssim = calculate_ssim_pt(pred, target, crop_border, test_y_channel=y_channel)
    got_ssim = ssim(pred, target, crop_border=crop_border, y_channel=y_channel, reduction="none")
    # the same float32 weights: each SSIM ratio moves by at most twice the luma's relative error, 1.2e-7
    torch.testing.assert_close(got_ssim, expected_ssim, rtol=0, atol=1.2e-7 if y_channel else EXACT)


def test_equal_to_basicsr_numpy_functions_on_255_arrays():
    # the numpy functions take [0, 255] arrays (HWC, BGR for the Y channel); eps=0 is their formula
    pred, target = pairs(batch=1)
    arrays = [t[0].permute(1, 2, 0).numpy()[..., ::-1] * 255 for t in (pred, target)]  # RGB -> BGR
    for y_channel in (False, True):
        expected = calculate_psnr(arrays[0], arrays[1], 3, test_y_channel=y_channel)
        # to_y_channel converts to float32 first: luma agrees to float32 rounding (~1e-7 relative)
        tolerance = 1e-5 if y_channel else EXACT * 100
        assert float(psnr(pred, target, crop_border=3, y_channel=y_channel)) == pytest.approx(expected, abs=tolerance)
        expected = calculate_ssim(arrays[0], arrays[1], 3, test_y_channel=y_channel)
        assert float(ssim(pred, target, crop_border=3, y_channel=y_channel)) == pytest.approx(
            expected, abs=1e-7 if y_channel else EXACT
        )


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_equal_to_scikit_image(data_range):
    pred, target = pairs(batch=2, channels=3)
    pred, target = pred * data_range, target * data_range
    got_psnr = psnr(pred, target, data_range=data_range, reduction="none")
    got_ssim = ssim(pred, target, data_range=data_range, reduction="none")
    for index in range(2):
        p, t = (x[index].permute(1, 2, 0).numpy() for x in (pred, target))
        expected = peak_signal_noise_ratio(t, p, data_range=data_range)
        assert float(got_psnr[index]) == pytest.approx(expected, abs=EXACT * 100)
        expected = structural_similarity(t, p, data_range=data_range, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)  # fmt: skip
        assert float(got_ssim[index]) == pytest.approx(expected, abs=EXACT)


def test_rgb_to_y_is_bt601_and_gray_stays_gray():
    image = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    expected = (65.481 * image[:, 0] + 128.553 * image[:, 1] + 24.966 * image[:, 2] + 16.0) / 255.0  # written out
    torch.testing.assert_close(rgb_to_y(image)[:, 0], expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(rgb_to_y(image * 255, data_range=255.0)[:, 0], expected * 255, rtol=0, atol=1e-12)
    # float32 pixels, float64 luma: every product in float64 (the float64 formula on the float32 values)
    single = image.float()
    exact = (65.481 * single[:, 0].double() + 128.553 * single[:, 1].double() + 24.966 * single[:, 2].double() + 16.0) / 255.0
    torch.testing.assert_close(rgb_to_y(single, dtype=torch.float64)[:, 0], exact, rtol=0, atol=1e-15)
    # 1-channel images are luma already (BasicSR's calculate_psnr/ssim keep gray images as they are)
    gray_pred, gray_target = pairs(channels=1)
    assert torch.equal(psnr(gray_pred, gray_target, y_channel=True), psnr(gray_pred, gray_target))
    # a gray image repeated to RGB and taken to Y: every difference scaled by 219/255, so +1.32 dB
    repeated = psnr(gray_pred.expand(-1, 3, -1, -1), gray_target.expand(-1, 3, -1, -1), y_channel=True, reduction="none")
    offset = repeated - psnr(gray_pred, gray_target, reduction="none")
    torch.testing.assert_close(offset, torch.full((2,), 20 * np.log10(255 / 219), dtype=torch.float64), rtol=0, atol=1e-9)


def test_reduction_identical_images_and_eps():
    pred, target = pairs(batch=3)
    for metric in (psnr, ssim):
        none = metric(pred, target, reduction="none")
        torch.testing.assert_close(metric(pred, target), none.mean(), rtol=0, atol=1e-12)
        torch.testing.assert_close(metric(pred, target, reduction="sum"), none.sum(), rtol=0, atol=1e-12)
    assert psnr(target, target).item() == float("inf")  # BasicSR's calculate_psnr and scikit-image
    assert psnr(target, target, eps=1e-8).item() == pytest.approx(80.0)  # calculate_psnr_pt
    assert ssim(target, target, reduction="none").tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_cpu_fast_path_equals_the_conv2d_path():
    # without gradients on CPU the window runs in OpenCV/SciPy; with gradients in torch conv2d
    pred, target = pairs(batch=2, channels=3, height=30, width=33)
    fast = ssim(pred, target, reduction="none", y_channel=True)
    slow = ssim(pred.clone().requires_grad_(), target, reduction="none", y_channel=True)
    torch.testing.assert_close(slow.detach(), fast, rtol=0, atol=1e-14)


def test_gradients_reach_both_inputs_and_pass_gradcheck():
    pred, target = pairs(batch=1, channels=1, height=11, width=12)  # the smallest SSIM takes: fast gradcheck
    pred.requires_grad_(), target.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b, y_channel=True), (pred, target), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: psnr(a, b), (pred, target), fast_mode=True)
    rgb_pred, rgb_target = pairs(batch=2, height=16, width=16, dtype=torch.float32)
    rgb_pred.requires_grad_()
    (1 - ssim(rgb_pred, rgb_target, y_channel=True)).backward()
    assert rgb_pred.grad is not None and rgb_pred.grad.abs().sum() > 0


def test_crop_border_boundary():
    # SSIM needs 11x11 after the crop: 11 + 2 * 4 = 19 pixels is exactly enough, 18 is not
    pred, target = pairs(batch=1, height=19, width=19)
    assert 0 < float(ssim(pred, target, crop_border=4)) < 1
    expected = ssim(pred[..., 4:-4, 4:-4], target[..., 4:-4, 4:-4])
    assert float(ssim(pred, target, crop_border=4)) == float(expected)
    with pytest.raises(
        ValueError,
        match=r"ssim needs images of at least 11x11 pixels after crop_border=4 \(at least 19x19 before it\), got 18x19",
    ):
        ssim(pred[..., 1:, :], target[..., 1:, :], crop_border=4)
    # PSNR needs one pixel: a crop that leaves nothing is an error
    assert psnr(pred[..., :9, :9], target[..., :9, :9], crop_border=4).isfinite()
    with pytest.raises(ValueError, match=r"psnr needs images of at least 1x1 pixels after crop_border=4 \(at least 9x9"):
        psnr(pred[..., :8, :9], target[..., :8, :9], crop_border=4)


def test_bad_inputs_are_explained():
    pred, target = pairs()
    with pytest.raises(ValueError, match=r"same shape \(B, C, H, W\), got \(2, 3, 37, 42\) and \(1, 3, 37, 42\)"):
        psnr(pred, target[:1])
    with pytest.raises(ValueError, match=r"must be 4-D \(B, C, H, W\), got shape \(3, 37, 42\)"):
        ssim(pred[0], target[0])
    with pytest.raises(TypeError, match="must be floating point"):
        psnr((pred * 255).to(torch.uint8), (target * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ssim(pred.numpy(), target)
    with pytest.raises(ValueError, match="y_channel=True needs 3 \\(RGB\\) or 1 \\(luma\\) channels, got 2"):
        psnr(pred[:, :2], target[:, :2], y_channel=True)
    with pytest.raises(ValueError, match="unknown reduction 'avg'.*Valid choices: 'mean'"):
        ssim(pred, target, reduction="avg")
    with pytest.raises(ValueError, match="data_range must be a positive number, got 0"):
        psnr(pred, target, data_range=0)
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        psnr(pred, target, eps=-1.0)
    with pytest.raises(ValueError, match="rgb_to_y needs 3 channels"):
        rgb_to_y(pred[:, :1])


def test_exported_from_featx_and_featx_metrics():
    assert featx.psnr is psnr and featx.ssim is ssim and featx.metrics.rgb_to_y is rgb_to_y
    assert fidelity.gaussian_window().sum().item() == pytest.approx(1.0, abs=1e-15)
    import cv2

    np.testing.assert_allclose(fidelity.gaussian_window().numpy(), cv2.getGaussianKernel(11, 1.5)[:, 0], rtol=1e-12)


def test_scipy_filter_equals_opencv(monkeypatch):
    # without OpenCV the window runs in SciPy; both are float64 separable filters of the same window
    pred, target = pairs(batch=1, height=25, width=29)
    with_opencv = ssim(pred, target, reduction="none")
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    torch.testing.assert_close(ssim(pred, target, reduction="none"), with_opencv, rtol=0, atol=1e-14)
