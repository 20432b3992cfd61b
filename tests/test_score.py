"""featx.score / `featx score`: pairing, the odd cases, and the numbers.

References: scikit-image's metrics on the raw integer pixels (``data_range = 2**bits - 1``,
independent of featx's decoding), BasicSR 1.4.2's ``calculate_psnr(test_y_channel=True)`` on the
BGR uint8 arrays it expects, and the metric module called directly on the decoded images.
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from featx.dists import DISTS
from featx.images import load_image
from featx.score import pair_folders, score_folders, write_scores
from featx_cli.main import cli

RNG = np.random.default_rng(0)


def noisy(array: np.ndarray, amount: float) -> np.ndarray:
    top = np.iinfo(array.dtype).max
    return np.clip(array + RNG.normal(0, amount * top, array.shape), 0, top).astype(array.dtype)


@pytest.fixture()
def folders(tmp_path):
    """pred/ and ref/ with: an 8-bit pair, a nested 16-bit pair, an unpaired file on each side,
    a size mismatch and a corrupt prediction."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    (pred / "sub").mkdir(parents=True), (ref / "sub").mkdir(parents=True)
    hr8 = RNG.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    hr16 = RNG.integers(0, 65536, (32, 30, 3), dtype=np.uint16)
    arrays = {"a.png": (noisy(hr8, 0.05), hr8), "sub/b.tif": (noisy(hr16, 0.02), hr16)}
    Image.fromarray(arrays["a.png"][0]).save(pred / "a.png")
    Image.fromarray(arrays["a.png"][1]).save(ref / "a.png")
    import tifffile

    tifffile.imwrite(pred / "sub" / "b.tif", arrays["sub/b.tif"][0])
    tifffile.imwrite(ref / "sub" / "b.tif", arrays["sub/b.tif"][1])
    Image.fromarray(hr8).save(pred / "only_pred.png")
    Image.fromarray(hr8).save(ref / "only_ref.png")
    Image.fromarray(hr8).save(pred / "small.png")
    Image.fromarray(hr8[:20, :20]).save(ref / "small.png")
    (pred / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    Image.fromarray(hr8).save(ref / "broken.png")
    return pred, ref, arrays


def test_pairing_and_errors_per_pair(folders):
    pred, ref, _ = folders
    summary = score_folders(pred, ref, metrics=["psnr", "ssim"])
    errors = {p.key: p.error for p in summary.errors}
    assert [p.key for p in summary.pairs] == ["a.png", "broken.png", "only_pred.png", "only_ref.png", "small.png", "sub/b.tif"]
    assert errors["only_pred.png"] == "no reference image" and errors["only_ref.png"] == "no prediction image"
    assert errors["small.png"] == "sizes differ: prediction (40, 36), reference (20, 20) (H, W)"
    assert errors["broken.png"].startswith(str(pred / "broken.png"))
    assert {p.key for p in summary.pairs if p.error is None} == {"a.png", "sub/b.tif"}


def test_psnr_and_ssim_equal_scikit_image_on_the_integer_pixels(folders):
    pred, ref, arrays = folders
    summary = score_folders(pred, ref, metrics="psnr,ssim")
    scores = {p.key: p.scores for p in summary.pairs if p.error is None}
    for key, (p, r) in arrays.items():
        top = np.iinfo(r.dtype).max
        psnr = peak_signal_noise_ratio(r, p, data_range=top)
        ssim = structural_similarity(r, p, data_range=top, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)  # fmt: skip
        assert scores[key]["psnr"] == pytest.approx(psnr, rel=1e-9, abs=1e-6), key
        assert scores[key]["ssim"] == pytest.approx(ssim, rel=1e-6), key
    assert summary.means["psnr"] == pytest.approx(np.mean([s["psnr"] for s in scores.values()]))


def test_y_channel_and_crop_border_follow_basicsr(folders, monkeypatch):
    import sys

    import torchvision

    # BasicSR 1.4.2 imports a torchvision module that newer torchvision renamed
    monkeypatch.setitem(sys.modules, "torchvision.transforms.functional_tensor", torchvision.transforms.functional)
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    pred, ref, arrays = folders
    summary = score_folders(pred, ref, metrics=["psnr", "ssim"], y_channel=True, crop_border=4)
    got = next(p.scores for p in summary.pairs if p.key == "a.png")
    p, r = arrays["a.png"]
    # BasicSR reads BGR uint8 (cv2) and computes Y in float32: agreement to ~1e-5 dB
    expected = calculate_psnr(p[..., ::-1], r[..., ::-1], crop_border=4, input_order="HWC", test_y_channel=True)
    assert got["psnr"] == pytest.approx(expected, abs=1e-4)
    y = [(a[4:-4, 4:-4].astype(np.float64) / 255.0) @ [65.481, 128.553, 24.966] + 16.0 for a in (p, r)]  # 0..255
    ssim = structural_similarity(y[1], y[0], data_range=255.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)  # fmt: skip
    assert got["ssim"] == pytest.approx(ssim, rel=1e-6)
    # BasicSR's MATLAB-style SSIM (valid region of an 11x11 Gaussian window) is the same number
    basicsr_ssim = calculate_ssim(p[..., ::-1], r[..., ::-1], crop_border=4, input_order="HWC", test_y_channel=True)
    assert got["ssim"] == pytest.approx(basicsr_ssim, abs=1e-6)
    rgb = score_folders(pred, ref, metrics=["ssim"], crop_border=4)
    rgb_ssim = next(q.scores["ssim"] for q in rgb.pairs if q.key == "a.png")
    assert rgb_ssim == pytest.approx(calculate_ssim(p[..., ::-1], r[..., ::-1], crop_border=4), abs=1e-9)


def test_dists_is_batched_and_equals_the_module(folders):
    pred, ref, _ = folders
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = DISTS(weights=None, dists_weights={"alpha": torch.rand(1, 1475, 1, 1), "beta": torch.rand(1, 1475, 1, 1)},
                       reduction="none")  # fmt: skip
    summary = score_folders(pred, ref, metrics=["dists"], modules={"dists": metric}, batch_size=1)
    for pair in summary.pairs:
        if pair.error is None:
            with torch.no_grad():
                direct = metric(load_image(pair.pred)[None], load_image(pair.ref)[None])
            assert pair.scores["dists"] == pytest.approx(float(direct), rel=1e-6)


def test_csv_and_json_contents(folders, tmp_path):
    pred, ref, _ = folders
    summary = score_folders(pred, ref, metrics=["psnr", "ssim"], crop_border=2)
    json_path = write_scores(summary, tmp_path / "out" / "scores.csv")
    rows = list(csv.reader((tmp_path / "out" / "scores.csv").open()))
    assert rows[0] == ["key", "psnr", "ssim"] and [r[0] for r in rows[1:]] == ["a.png", "sub/b.tif"]
    by_key = {p.key: p for p in summary.pairs}
    assert float(rows[1][1]) == by_key["a.png"].scores["psnr"]  # repr: the full float
    payload = json.loads(json_path.read_text())
    assert payload["scored"] == 2 and payload["failed"] == 4
    assert payload["config"]["crop_border"] == 2 and payload["means"]["ssim"] == summary.means["ssim"]
    assert {e["key"] for e in payload["errors"]} == {"broken.png", "only_pred.png", "only_ref.png", "small.png"}


def test_stem_pairing(tmp_path):
    (tmp_path / "sr").mkdir(), (tmp_path / "hr").mkdir()
    image = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "sr" / "0801x4.png")
    Image.fromarray(image).save(tmp_path / "hr" / "0801x4.bmp")
    by_path = pair_folders(tmp_path / "sr", tmp_path / "hr")
    assert [(p.key, p.error) for p in by_path] == [("0801x4.bmp", "no prediction image"), ("0801x4.png", "no reference image")]
    [pair] = pair_folders(tmp_path / "sr", tmp_path / "hr", pair_by="stem")
    assert pair.key == "0801x4" and pair.error is None


def test_bad_arguments(folders, tmp_path):
    pred, ref, _ = folders
    with pytest.raises(ValueError, match="unknown metric 'psnrr'. Did you mean 'psnr'"):
        score_folders(pred, ref, metrics=["psnrr"])
    with pytest.raises(FileNotFoundError, match="folder not found: .*nope"):
        score_folders(tmp_path / "nope", ref)
    with pytest.raises(ValueError, match="crop_border must be an integer >= 0"):
        score_folders(pred, ref, crop_border=-1)


def test_cli_writes_scores_and_exits_1_on_failed_pairs(folders, tmp_path):
    pred, ref, _ = folders
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(cli, ["score", str(pred), str(ref), "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "2 of 6 pairs scored; mean psnr" in result.output and "only_ref.png: no prediction image" in result.output
    assert out.exists() and out.with_suffix(".json").exists()
    missing = CliRunner().invoke(cli, ["score", str(tmp_path / "nope"), str(ref)])
    assert missing.exit_code == 2 and "folder not found" in missing.output
    bad = CliRunner().invoke(cli, ["score", str(pred), str(ref), "--metrics", "fid"])
    assert bad.exit_code == 2 and "unknown metric 'fid'" in bad.output
