"""featx score reproduces the conventions of BasicSR's scripts, setting by setting.

References: BasicSR 1.4.2's numpy ``calculate_psnr``/``calculate_ssim`` called the way its
``scripts/metrics/calculate_psnr_ssim.py`` calls them (``cv2.imread(..., IMREAD_UNCHANGED) / 255``,
``bgr2ycbcr(y_only=True)`` for 3-channel images only, then the metrics on ``* 255``), the way its
``test.py`` validation does (``IMREAD_COLOR``: gray read as BGR, uint8 images) and its ``mod_crop``;
featx's own LPIPS module called directly for the crop scope. The script computes luma in float32:
a relative error of at most ~1.2e-7 per pixel (two float32 roundings), so PSNR may differ by
20 / ln(10) * 1.2e-7 ~ 1.1e-6 dB and each SSIM ratio by twice that relative error.
"""

from __future__ import annotations

import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from featx.errors import FeatxWarning
from featx.io.images import load_image
from featx.metrics.score import score_folders

sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)
from basicsr.data.transforms import mod_crop  # noqa: E402
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim  # noqa: E402
from basicsr.utils.color_util import bgr2ycbcr  # noqa: E402

PSNR_TOL, SSIM_TOL = 1.1e-6, 2.4e-7
RNG = np.random.default_rng(7)


def basicsr_script(gt_path, restored_path, crop_border, test_y_channel):
    """BasicSR's scripts/metrics/calculate_psnr_ssim.py, for one pair."""
    img_gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    img_restored = cv2.imread(str(restored_path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    if test_y_channel and img_gt.ndim == 3 and img_gt.shape[2] == 3:
        img_gt, img_restored = bgr2ycbcr(img_gt, y_only=True), bgr2ycbcr(img_restored, y_only=True)
    psnr = calculate_psnr(img_gt * 255, img_restored * 255, crop_border=crop_border, input_order="HWC")
    ssim = calculate_ssim(img_gt * 255, img_restored * 255, crop_border=crop_border, input_order="HWC")
    return psnr, ssim


def basicsr_validation(gt, restored, crop_border, test_y_channel):
    """BasicSR's test.py validation: images read with IMREAD_COLOR, metrics on the uint8 arrays."""
    return (
        calculate_psnr(restored, gt, crop_border, test_y_channel=test_y_channel),
        calculate_ssim(restored, gt, crop_border, test_y_channel=test_y_channel),
    )


def degraded(array):
    return np.clip(array.astype(np.int16) + RNG.integers(-12, 13, array.shape), 0, 255).astype(np.uint8)


def save_pair(tmp_path, name, ref, pred):
    for folder, array in (("hr", ref), ("sr", pred)):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(array).save(tmp_path / folder / name)
    return tmp_path / "sr", tmp_path / "hr"


def scores_of(summary, key):
    [pair] = [p for p in summary.pairs if p.key == key]
    assert pair.error is None, pair.error
    return pair.scores


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize(("height", "width", "border"), [(45, 38, 4), (33, 51, 0), (25, 24, 3)])
def test_rgb_pairs_of_odd_sizes_equal_the_metrics_script(tmp_path, y_channel, height, width, border):
    ref = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pred_dir, ref_dir = save_pair(tmp_path, "a.png", ref, degraded(ref))
    got = scores_of(score_folders(pred_dir, ref_dir, crop_border=border, y_channel=y_channel), "a.png")
    psnr, ssim = basicsr_script(ref_dir / "a.png", pred_dir / "a.png", border, y_channel)
    assert got["psnr"] == pytest.approx(psnr, abs=PSNR_TOL) and got["ssim"] == pytest.approx(ssim, abs=SSIM_TOL)


def test_gray_keep_is_the_metrics_script_and_repeat_is_test_py(tmp_path):
    ref = RNG.integers(0, 256, (40, 44), dtype=np.uint8)
    pred_dir, ref_dir = save_pair(tmp_path, "g.png", ref, degraded(ref))
    keep = scores_of(score_folders(pred_dir, ref_dir, crop_border=4, y_channel=True), "g.png")
    script = basicsr_script(ref_dir / "g.png", pred_dir / "g.png", 4, True)
    assert keep["psnr"] == pytest.approx(script[0], abs=PSNR_TOL) and keep["ssim"] == pytest.approx(script[1], abs=SSIM_TOL)
    repeat = scores_of(score_folders(pred_dir, ref_dir, crop_border=4, y_channel=True, gray="repeat"), "g.png")
    color = [cv2.imread(str(folder / "g.png"), cv2.IMREAD_COLOR) for folder in (ref_dir, pred_dir)]
    validation = basicsr_validation(color[0], color[1], 4, True)
    assert repeat["psnr"] == pytest.approx(validation[0], abs=PSNR_TOL)
    assert repeat["ssim"] == pytest.approx(validation[1], abs=SSIM_TOL)
    # the two conventions differ by 20 log10(255/219) dB in PSNR, and in SSIM too
    assert repeat["psnr"] - keep["psnr"] == pytest.approx(20 * np.log10(255 / 219), abs=1e-6)
    assert repeat["ssim"] > keep["ssim"]
    # without --y-channel gray is gray either way: the same numbers
    plain = [scores_of(score_folders(pred_dir, ref_dir, gray=mode), "g.png") for mode in ("keep", "repeat")]
    assert plain[0]["psnr"] == pytest.approx(plain[1]["psnr"], abs=1e-9)


def test_modcrop_crops_the_reference_as_mod_crop(tmp_path):
    ref = RNG.integers(0, 256, (50, 43, 3), dtype=np.uint8)
    pred = degraded(mod_crop(ref, 4))  # an x4 SR output is a multiple of 4: 48x40
    pred_dir, ref_dir = save_pair(tmp_path, "m.png", ref, pred)
    without = score_folders(pred_dir, ref_dir)
    assert "sizes differ: prediction (48, 40), reference (50, 43)" in without.pairs[0].error
    assert "--modcrop SCALE" in without.pairs[0].error
    got = scores_of(score_folders(pred_dir, ref_dir, modcrop=4, crop_border=4, y_channel=True), "m.png")
    gt = mod_crop(cv2.imread(str(ref_dir / "m.png"), cv2.IMREAD_UNCHANGED), 4)
    restored = cv2.imread(str(pred_dir / "m.png"), cv2.IMREAD_UNCHANGED)
    assert got["psnr"] == pytest.approx(calculate_psnr(restored, gt, 4, test_y_channel=True), abs=PSNR_TOL)
    assert got["ssim"] == pytest.approx(calculate_ssim(restored, gt, 4, test_y_channel=True), abs=SSIM_TOL)


def test_basicsr_result_names_pair_with_their_references(tmp_path):
    ref = RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    (tmp_path / "sr").mkdir(), (tmp_path / "hr").mkdir()
    Image.fromarray(ref).save(tmp_path / "hr" / "baboon.png")
    Image.fromarray(degraded(ref)).save(tmp_path / "sr" / "baboon_ESRGAN_x4.png")
    Image.fromarray(ref).save(tmp_path / "sr" / "lr_baboon.png")  # not an ESRGAN result: unpaired
    summary = score_folders(tmp_path / "sr", tmp_path / "hr", pred_pattern="{stem}_ESRGAN_x4")
    assert summary.counts == {"scored": 1, "failed": 0, "unpaired_pred": 1, "unpaired_ref": 0}
    assert scores_of(summary, "baboon.png")["psnr"] > 20
    with pytest.raises(ValueError, match="pred_pattern must hold {stem} exactly once"):
        score_folders(tmp_path / "sr", tmp_path / "hr", pred_pattern="_x4")
    with pytest.raises(ValueError, match=r"no prediction has a reference .* \(2 predictions, 1 references"):
        score_folders(tmp_path / "sr", tmp_path / "hr")


def _unit_lpips():
    from featx.metrics.lpips import LPIPS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lin = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
        return LPIPS("alex", weights=None, lin_weights=lin, reduction="none")


def test_crop_border_applies_to_lpips_only_with_crop_scope_all(tmp_path):
    ref = RNG.integers(0, 256, (48, 52, 3), dtype=np.uint8)
    pred_dir, ref_dir = save_pair(tmp_path, "c.png", ref, degraded(ref))
    metric = _unit_lpips()
    x, y = load_image(pred_dir / "c.png")[None], load_image(ref_dir / "c.png")[None]
    with torch.no_grad():
        whole, cropped = float(metric(x, y)), float(metric(x[..., 4:-4, 4:-4], y[..., 4:-4, 4:-4]))
    assert abs(whole - cropped) > 1e-4  # the test can tell the two apart
    for scope, expected in (("psnr_ssim", whole), ("all", cropped)):
        summary = score_folders(pred_dir, ref_dir, metrics=["psnr", "lpips"], crop_border=4, crop_scope=scope,
                                modules={"lpips": metric})  # fmt: skip
        assert scores_of(summary, "c.png")["lpips_random"] == pytest.approx(expected, rel=1e-5), scope


def test_a_pair_too_small_for_a_metric_is_that_pairs_error(tmp_path):
    big = RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    small = RNG.integers(0, 256, (18, 30, 3), dtype=np.uint8)  # 10 rows after crop 4: under SSIM's 11
    pred_dir, ref_dir = save_pair(tmp_path, "big.png", big, degraded(big))
    save_pair(tmp_path, "small.png", small, degraded(small))
    summary = score_folders(pred_dir, ref_dir, crop_border=4)
    assert summary.counts == {"scored": 1, "failed": 1, "unpaired_pred": 0, "unpaired_ref": 0}
    [failed] = summary.errors
    assert failed.key == "small.png" and failed.error == (
        "too small for ssim: needs at least 11x11 pixels after crop_border=4 (at least 19x19), got 18x30"
    )
    # exactly the minimum is scored
    exact = RNG.integers(0, 256, (19, 19, 3), dtype=np.uint8)
    save_pair(tmp_path, "small.png", exact, degraded(exact))
    assert score_folders(pred_dir, ref_dir, crop_border=4).counts["scored"] == 2
    # LPIPS (AlexNet to relu5) needs 31x31: the 19x19 pair fails alone, naming the minimum
    summary = score_folders(pred_dir, ref_dir, metrics=["lpips"], modules={"lpips": _unit_lpips()})
    [failed] = summary.errors
    assert failed.key == "small.png" and failed.error == "too small for lpips: needs at least 31x31 pixels, got 19x19"
    assert scores_of(summary, "big.png")["lpips_random"] > 0


def test_alpha_drop_applies_to_the_reference_too(tmp_path):
    rgb = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    (tmp_path / "sr").mkdir(), (tmp_path / "hr").mkdir()
    Image.fromarray(np.dstack([rgb, np.full((20, 20), 128, np.uint8)])).save(tmp_path / "hr" / "a.png")  # RGBA
    Image.fromarray(rgb).save(tmp_path / "sr" / "a.png")
    refused = score_folders(tmp_path / "sr", tmp_path / "hr", metrics=["psnr"])
    assert "hr/a.png: has an alpha channel" in refused.pairs[0].error
    dropped = score_folders(tmp_path / "sr", tmp_path / "hr", metrics=["psnr"], alpha="drop")
    assert dropped.pairs[0].scores["psnr"] == float("inf")  # the same RGB once alpha is dropped


def test_gray_against_rgb_is_scored_as_rgb_with_one_warning(tmp_path):
    gray = RNG.integers(0, 256, (20, 22), dtype=np.uint8)
    pred_dir, ref_dir = save_pair(tmp_path, "a.png", gray, degraded(gray))
    Image.fromarray(np.dstack([gray] * 3)).save(ref_dir / "a.png")  # the reference as RGB
    save_pair(tmp_path, "b.png", gray, np.dstack([degraded(gray)] * 3))
    with pytest.warns(FeatxWarning, match=r"2 pair\(s\) compare a gray image with an RGB one"):
        summary = score_folders(pred_dir, ref_dir, y_channel=True)
    assert [p.warning for p in summary.pairs] == [
        "gray prediction against an RGB reference: scored as RGB",
        "gray reference against an RGB prediction: scored as RGB",
    ]
    assert summary.counts["scored"] == 2


def test_empty_folders_are_an_error(tmp_path):
    (tmp_path / "sr").mkdir(), (tmp_path / "hr").mkdir()
    with pytest.raises(ValueError, match="no images found in .*sr and .*hr: nothing to score"):
        score_folders(tmp_path / "sr", tmp_path / "hr")
