"""featx.metrics.score / `featx score`: pairing, the odd cases, and the numbers.

References: scikit-image's metrics on the raw integer pixels (``data_range = 2**bits - 1``,
independent of featx's decoding), BasicSR 1.4.2's ``calculate_psnr(test_y_channel=True)`` on the
BGR uint8 arrays it expects, and the metric module called directly on the decoded images.
"""

from __future__ import annotations

import csv
import json
import re
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from featx.io.images import load_image
from featx.metrics.dists import DISTS
from featx.metrics.score import pair_folders, score_folders, write_scores
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
    assert errors["small.png"].startswith("sizes differ: prediction (40, 36), reference (20, 20) (H, W); --modcrop SCALE")
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
    assert summary.columns == ["dists_random"]  # a random backbone: never a column called dists
    for pair in summary.pairs:
        if pair.error is None:
            with torch.no_grad():
                direct = metric(load_image(pair.pred)[None], load_image(pair.ref)[None])
            assert pair.scores["dists_random"] == pytest.approx(float(direct), rel=1e-6)


def test_csv_and_json_contents(folders, tmp_path):
    pred, ref, _ = folders
    summary = score_folders(pred, ref, metrics=["psnr", "ssim"], crop_border=2)
    json_path = write_scores(summary, tmp_path / "out" / "scores.csv")
    rows = list(csv.reader((tmp_path / "out" / "scores.csv").open()))
    assert rows[0] == ["key", "psnr", "ssim"] and [r[0] for r in rows[1:]] == ["a.png", "sub/b.tif"]
    by_key = {p.key: p for p in summary.pairs}
    assert float(rows[1][1]) == by_key["a.png"].scores["psnr"]  # repr: the full float
    payload = json.loads(json_path.read_text())
    assert payload["scored"] == 2 and payload["failed"] == 2  # pairs; unpaired files are counted apart
    assert payload["unpaired_pred"] == 1 and payload["unpaired_ref"] == 1
    assert payload["config"]["crop_border"] == 2 and payload["means"]["ssim"] == summary.means["ssim"]
    assert {e["key"] for e in payload["errors"]} == {"broken.png", "small.png"}
    assert {e["key"] for e in payload["unpaired"]} == {"only_pred.png", "only_ref.png"}


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
    assert "2 of 4 pairs scored (2 failed); 2 unpaired file(s): 1 prediction(s) without a reference" in result.output
    assert "only_ref.png: no prediction image" in result.output and "; mean psnr" in result.output
    assert out.exists() and out.with_suffix(".json").exists()
    missing = CliRunner().invoke(cli, ["score", str(tmp_path / "nope"), str(ref)])
    assert missing.exit_code == 2 and "folder not found" in missing.output
    bad = CliRunner().invoke(cli, ["score", str(pred), str(ref), "--metrics", "fid"])
    assert bad.exit_code == 2 and "unknown metric 'fid'" in bad.output


# ---------------------------------------------------------------------------------------------
# LPIPS backbones, random weights, missing weights
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def clean(tmp_path):
    """Two pairs of 48x48 PNGs, all scoreable: an exact copy and a noisy prediction."""
    pred, ref = tmp_path / "sr", tmp_path / "hr"
    pred.mkdir(), ref.mkdir()
    hr = [RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(2)]
    Image.fromarray(hr[0]).save(pred / "same.png")
    Image.fromarray(noisy(hr[1], 0.1)).save(pred / "noisy.png")
    for name, array in zip(("same.png", "noisy.png"), hr, strict=True):
        Image.fromarray(array).save(ref / name)
    return pred, ref


def _lpips_reference(net: str):
    """The lpips package with a random backbone (seeded) and its shipped v0.1 linear layers."""
    import lpips

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()


@pytest.mark.parametrize(("net", "column", "backbone_file"), [("alex", "lpips", "alexnet-owt-7be5be79.pth"),
                                                              ("vgg", "lpips_vgg", "vgg16-397923af.pth")])  # fmt: skip
def test_lpips_net_scores_equal_featx_lpips_and_the_lpips_package(clean, tmp_path, monkeypatch, net, column, backbone_file):
    import hashlib
    import os
    import re
    import shutil
    from pathlib import Path

    import lpips

    from featx.metrics.lpips import LPIPS

    pred, ref = clean
    reference = _lpips_reference(net)
    home = Path(os.environ["FEATX_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    # the default files, fabricated: the lpips package's backbone under torchvision's file name, its lin file
    backbone = {re.sub(r"^net\.slice\d+\.", "features.", k): v for k, v in reference.state_dict().items() if k.startswith("net.")}
    torch.save(backbone, home / backbone_file)
    lin = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    shutil.copy(lin, home / f"lpips_{net}_v0.1.pth")
    out = tmp_path / "scores.csv"
    args = ["score", str(pred), str(ref), "--metrics", "psnr,lpips", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--lpips-net", net] if net == "vgg" else args)
    assert result.exit_code == 0, result.output
    # ours, at torchvision's file name: one warning line, and the column says the weights are unverified
    assert "featx: warning: " in result.output and backbone_file in result.output and "Traceback" not in result.output
    column = f"{column}_unverified"
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["key", "psnr", column]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fabricated backbone does not have torchvision's sha256
        direct = LPIPS(net, weights=home / backbone_file, lin_weights=lin, reduction="none")
    for key, _, value in rows[1:]:
        x, y = load_image(pred / key)[None], load_image(ref / key)[None]
        with torch.no_grad():
            assert float(value) == pytest.approx(float(direct(x, y)), rel=1e-6, abs=1e-9), key
            assert float(value) == pytest.approx(float(reference(x * 2 - 1, y * 2 - 1)), rel=1e-5, abs=1e-7), key
    values = {key: float(value) for key, _, value in rows[1:]}
    assert values["same.png"] == 0.0 and values["noisy.png"] > 0.01
    config = json.loads(out.with_suffix(".json").read_text())["config"]
    record = config["weights"]["lpips"]
    assert config["lpips_net"] == net and record["net"] == net and config["columns"] == ["psnr", column]
    assert record["learned"] == f"LPIPS_{net.upper()}_V0_1"
    assert record["learned_sha256"] == hashlib.sha256(lin.read_bytes()).hexdigest()
    assert record["backbone"].startswith("unverified:")  # our file at torchvision's name: not its hash
    assert record["backbone_sha256"] == hashlib.sha256((home / backbone_file).read_bytes()).hexdigest()


def test_random_weights_are_labelled_and_reproducible(clean, tmp_path):
    import featx
    from featx.metrics.dists import DISTS
    from featx.metrics.lpips import LPIPS

    pred, ref = clean
    out = tmp_path / "r.csv"
    args = ["score", str(pred), str(ref), "--metrics", "psnr,lpips,dists", "--weights", "random", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output  # no weights on disk: nothing was needed
    assert "featx: warning: --weights random" in result.output  # stderr and stdout together
    assert "not LPIPS/DISTS" in result.output and "lpips_random" in result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["key", "psnr", "lpips_random", "dists_random"]
    config = json.loads(out.with_suffix(".json").read_text())["config"]
    assert config["random_weights"] == ["lpips", "dists"]
    for name in ("lpips", "dists"):
        record = config["weights"][name]
        assert record["backbone"] == "random" and record["learned"] == "unit" and record["backbone_sha256"] is None
        assert record["metric"].startswith("random weights: not ")
    # the same numbers from the Python API (warns once) and from modules built by hand with seed 0
    with pytest.warns(featx.RandomWeightsWarning, match="not LPIPS/DISTS"):
        summary = score_folders(pred, ref, metrics=["lpips", "dists"], weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unit = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
        torch.manual_seed(0)
        lp = LPIPS("alex", weights=None, lin_weights=unit, reduction="none")
        torch.manual_seed(0)
        ds = DISTS(weights=None, dists_weights={"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)},
                   reduction="none")  # fmt: skip
    for row, pair in zip(rows[1:], summary.pairs, strict=True):
        x, y = load_image(pred / pair.key)[None], load_image(ref / pair.key)[None]
        # fp32 rounding: featx score runs channels_last, these contiguous; DISTS is 1 - (a sum near 1), so
        # its error is absolute, a few float32 ulps of 1.0 (6e-8 seen with ATEN_CPU_CAPABILITY=default)
        with torch.no_grad():
            assert pair.scores["lpips_random"] == float(row[2]) == pytest.approx(float(lp(x, y)), rel=1e-5, abs=1e-7)
            assert pair.scores["dists_random"] == float(row[3]) == pytest.approx(float(ds(x, y)), rel=1e-5, abs=1e-6)
    assert summary.means["lpips_random"] > 0 and summary.pairs[1].scores["dists_random"] == pytest.approx(0, abs=1e-6)


def test_missing_weights_are_a_setup_error_naming_file_folder_and_fixes(clean, tmp_path):
    import os

    pred, ref = clean
    result = CliRunner().invoke(cli, ["score", str(pred), str(ref), "--metrics", "dists", "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 2, result.output
    for part in ("vgg16-397923af.pth", os.environ["FEATX_HOME"], "featx weights download VGG16_IMAGENET1K_V1",
                 "FEATX_HOME=DIR", "--weights random"):  # fmt: skip
        assert part in result.output, part
    assert not (tmp_path / "s.csv").exists()
    # the backbone present, the learned layers missing: their own file, name and argument
    home = tmp_path / "home"
    home.mkdir()
    unit = {"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(DISTS(weights=None, dists_weights=unit).extractor.state_dict(), home / "vgg16-397923af.pth")
    result = CliRunner().invoke(cli, ["score", str(pred), str(ref), "--metrics", "dists"], env={"FEATX_HOME": str(home)})
    assert result.exit_code == 2, result.output
    for part in ("dists_vgg16.pt", str(home), "featx weights download DISTS_VGG16", "FEATX_HOME=DIR", "--weights random"):
        assert part in result.output, part
    assert "weights=PATH" not in result.output  # Python's argument names are not the command's words


def test_lpips_net_and_weights_arguments_are_checked(clean):
    pred, ref = clean
    with pytest.raises(ValueError, match="unknown lpips_net 'vg'. Did you mean 'vgg'"):
        score_folders(pred, ref, metrics=["lpips"], lpips_net="vg")
    with pytest.raises(ValueError, match="weights must be 'DEFAULT' .* or None"):
        score_folders(pred, ref, metrics=["lpips"], weights="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from featx.metrics.lpips import LPIPS

        alex = LPIPS("alex", weights=None, lin_weights={f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1)
                                                       for k, c in enumerate((64, 192, 384, 256, 256))})  # fmt: skip
    with pytest.raises(ValueError, match="modules\\['lpips'\\] is LPIPS net='alex' but lpips_net='vgg'"):
        score_folders(pred, ref, metrics=["lpips"], lpips_net="vgg", modules={"lpips": alex})
    help_text = CliRunner().invoke(cli, ["score", "--help"]).output
    assert "--lpips-net [alex|vgg|squeeze]" in help_text and "--weights" in help_text


class _StubLPIPS(torch.nn.Module):
    """An LPIPS-like module whose provenance attributes are set by the test (the score is 0.5)."""

    net, min_input_size, weights_id, lin_weights_id = "alex", 31, "ALEXNET_IMAGENET1K_V1", "LPIPS_ALEX_V0_1"

    def __init__(self, backbone_verified, learned_verified):
        super().__init__()
        self.weights_verified, self.lin_weights_verified = backbone_verified, learned_verified

    def forward(self, pred, target):
        return torch.full((pred.shape[0],), 0.5)


PROVENANCE_CASES = [(True, True, "lpips"), (True, False, "lpips_unverified"), (None, True, "lpips_unverified"),
                    (False, None, "lpips_unverified")]  # fmt: skip


@pytest.mark.parametrize(("backbone", "learned", "column"), PROVENANCE_CASES)
def test_only_verified_weights_make_a_column_called_lpips(clean, backbone, learned, column):
    pred, ref = clean
    summary = score_folders(pred, ref, metrics=["lpips"], modules={"lpips": _StubLPIPS(backbone, learned)})
    assert summary.columns == [column] and summary.means[column] == 0.5
    record = summary.config["weights"]["lpips"]
    assert record["backbone_verified"] is backbone and record["learned_verified"] is learned
    assert summary.config["unverified_weights"] == ([] if column == "lpips" else ["lpips"])
    if column != "lpips":
        with pytest.raises(ValueError, match="lpips: its weights are unverified .* verified weights are required"):
            score_folders(pred, ref, metrics=["lpips"], modules={"lpips": _StubLPIPS(backbone, learned)},
                          verify_weights="error")  # fmt: skip


def test_require_verified_refuses_a_file_with_another_hash(clean, tmp_path):
    import shutil
    from pathlib import Path

    import lpips

    pred, ref = clean
    home = tmp_path / "home"
    home.mkdir()
    state = {
        re.sub(r"^net\.slice\d+\.", "features.", k): v
        for k, v in _lpips_reference("alex").state_dict().items()
        if k.startswith("net.")
    }
    torch.save(state, home / "alexnet-owt-7be5be79.pth")  # our file at torchvision's name: another sha256
    shutil.copy(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", home / "lpips_alex_v0.1.pth")
    args = ["score", str(pred), str(ref), "--metrics", "lpips", "--out", str(tmp_path / "s.csv"), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--require-verified"], env={"FEATX_HOME": str(home)})
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "alexnet-owt-7be5be79.pth" in result.output and not (tmp_path / "s.csv").exists()
    result = CliRunner().invoke(cli, args, env={"FEATX_HOME": str(home), "FEATX_REQUIRE_VERIFIED": "1"})
    assert result.exit_code == 2, result.output
