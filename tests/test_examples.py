"""Every example's main() on tiny settings: outputs exist, the loss falls, the claims hold."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")


def load_example(name: str):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------- train_sr


def test_train_sr_tiny_run(tmp_path, capsys):
    train_sr = load_example("train_sr")
    # --no-residual: the net starts far from the target, so a few steps must lower the loss
    result = train_sr.main(
        ["--steps", "8", "--batch", "2", "--patch", "24", "--channels", "8", "--blocks", "1", "--eval-size", "48",
         "--lr", "2e-3", "--no-residual", "--log-every", "0", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    before, after = result["fixed_batch_loss"]
    assert after < before
    assert len(result["losses"]) == 8 and set(result["parts"]) == {"l1", "perceptual", "style"}
    assert all(value > 0 for value in result["parts"]["perceptual"] + result["parts"]["style"])
    for key in ("loss_curve", "comparison"):
        with Image.open(result[key]) as picture:
            assert picture.format == "PNG" and picture.width > 100
    saved = json.loads((tmp_path / "results.json").read_text())  # the same numbers, saved
    assert saved["fixed_batch_loss"] == [before, after] and saved["psnr_sr"] == result["psnr_sr"]
    assert result["weights_id"] == "random"
    assert "random weights" in capsys.readouterr().out
    # reference PSNR: 10 log10(1 / MSE) computed here on the same bicubic image
    assert 15 < result["psnr_bicubic"] < 60


TINY_TRAIN_SR = ["--steps", "3", "--batch", "2", "--patch", "16", "--channels", "4", "--blocks", "1",
                 "--eval-size", "32", "--log-every", "0"]  # fmt: skip
MATPLOTLIB_MODULES = ("matplotlib", "matplotlib.backends", "matplotlib.backends.backend_agg", "matplotlib.figure")


def check_saved_result(train_sr, out_dir, steps: int) -> dict:
    """results.json holds the run's numbers and sr_net.pt loads into a fresh SRNet; returns the numbers."""
    saved = json.loads((out_dir / "results.json").read_text())
    assert len(saved["losses"]) == steps and 15 < saved["psnr_sr"] < 60
    net = train_sr.SRNet(scale=2, channels=4, blocks=1)
    net.load_state_dict(torch.load(out_dir / "sr_net.pt", weights_only=True))
    return saved


def test_train_sr_without_matplotlib_keeps_the_result(tmp_path, monkeypatch, capsys):
    # Fails on the code before the change: the run ended in ModuleNotFoundError after training,
    # and nothing of the trained network or its numbers was saved.
    train_sr = load_example("train_sr")
    for name in MATPLOTLIB_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    result = train_sr.main([*TINY_TRAIN_SR, "--out-dir", str(tmp_path)])
    assert result["loss_curve"] is None and result["comparison"] is None
    assert "matplotlib cannot be imported" in capsys.readouterr().out
    assert check_saved_result(train_sr, tmp_path, 3)["psnr_sr"] == result["psnr_sr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "sr_net.pt"]


def test_train_sr_saves_the_result_before_drawing(tmp_path, monkeypatch):
    # Fails on the code before the change: a plotting error lost the finished training run.
    train_sr = load_example("train_sr")

    def broken_plot(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(train_sr, "save_loss_curve", broken_plot)
    with pytest.raises(RuntimeError, match="plotting failed"):
        train_sr.main([*TINY_TRAIN_SR, "--out-dir", str(tmp_path)])
    check_saved_result(train_sr, tmp_path, 3)


def test_train_sr_network_starts_as_bicubic():
    train_sr = load_example("train_sr")
    net = train_sr.SRNet(scale=2, channels=8, blocks=1)
    lr = torch.rand(1, 3, 10, 12)
    # reference: torch's bicubic interpolation (zero-initialised residual branch)
    expected = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(net(lr), expected)


def test_train_sr_psnr_matches_formula():
    train_sr = load_example("train_sr")
    a, b = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.1)
    assert train_sr.psnr(a, b, shave=2) == pytest.approx(20.0)  # 10 log10(1 / 0.01)


def test_train_sr_rejects_training_picture_as_holdout(capsys):
    train_sr = load_example("train_sr")
    with pytest.raises(SystemExit) as exit_info:
        train_sr.parse_args(["--holdout", "coffee"])
    assert exit_info.value.code == 2
    assert "is a training picture" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ ttsr_lte

# TTSR model/LTE.py key layout: torchvision indices inside slice1 [0:2], slice2 [2:7], slice3 [7:12]
TTSR_LTE_KEYS = {
    f"LTE.slice{s}.{i}.{p}" for i, s in ((0, 1), (2, 2), (5, 2), (7, 3), (10, 3)) for p in ("weight", "bias")
} | {"LTE.sub_mean.weight", "LTE.sub_mean.bias"}


def test_ttsr_lte_tiny_run(tmp_path):
    ttsr = load_example("ttsr_lte")
    argv = ["--steps", "6", "--batch", "2", "--patch", "16", "--log-every", "0", "--out-dir", str(tmp_path)]
    result = ttsr.main(argv)
    before, after = result["fixed_batch_loss"]
    assert after < before
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert TTSR_LTE_KEYS <= set(checkpoint)
    assert result["learning_rates"] == [1e-4, 1e-5]  # TTSR --lr_rate, --lr_rate_lte
    assert result["lte_change"] > 0 and result["copy_max_diff"] == 0.0
    keys = result["checkpoint_keys"]
    assert "LTE.vgg.features.0.weight" in keys and "LTE.vgg.features.10.bias" in keys  # learnable LTE saved
    assert not any(key.startswith("LTE_copy.") for key in keys)  # frozen copy is not
    saved = torch.load(result["model_checkpoint"], weights_only=True)
    assert sorted(saved) == keys


def test_ttsr_checkpoint_loads_into_lte(tmp_path):
    import featx

    ttsr = load_example("ttsr_lte")
    path = ttsr.write_fabricated_ttsr_checkpoint(str(tmp_path / "model.pt"), seed=3)
    lte = featx.LTE.from_ttsr_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # reference: the tensors in the file
    torch.testing.assert_close(lte.vgg.features[7].weight.detach(), checkpoint["LTE.slice3.7.weight"])
    torch.testing.assert_close(lte.vgg.features[0].bias.detach(), checkpoint["LTE.slice1.0.bias"])
    assert lte.rgb_range == pytest.approx(1.0)


def test_search_transfer_matches_brute_force():
    ttsr = load_example("ttsr_lte")
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    v = (torch.randn(1, 1, 12, 16), torch.randn(1, 1, 6, 8), torch.randn(1, 2, 3, 4))
    soft, (t1, t2, t3) = ttsr.search_transfer(q, k, v)
    assert t1.shape == (1, 1, 12, 16) and t2.shape == (1, 1, 6, 8) and t3.shape == (1, 2, 3, 4)
    # reference: loops over positions, cosine similarity of zero-padded 3x3 patches (TTSR's search)
    qp, kp = F.pad(q, (1, 1, 1, 1)), F.pad(k, (1, 1, 1, 1))
    patches_k = [kp[0, :, y : y + 3, x : x + 3].flatten() for y in range(3) for x in range(4)]
    best = []
    for y in range(3):
        for x in range(4):
            pq = qp[0, :, y : y + 3, x : x + 3].flatten()
            scores = torch.stack([F.cosine_similarity(pq, pk, dim=0) for pk in patches_k])
            best.append(int(scores.argmax()))
            assert soft[0, 0, y, x].item() == pytest.approx(scores.max().item(), abs=1e-5)
    # T_lv3 (TTSR's fold): each query position pastes its best reference 3x3 patch (zero-padded)
    # centred on itself; overlaps add up and the sum is divided by 9
    vp = F.pad(v[2], (1, 1, 1, 1))
    canvas = torch.zeros(1, 2, 5, 6)
    for index, ref_index in enumerate(best):
        (y, x), (ry, rx) = divmod(index, 4), divmod(ref_index, 4)
        canvas[0, :, y : y + 3, x : x + 3] += vp[0, :, ry : ry + 3, rx : rx + 3]
    torch.testing.assert_close(t3, canvas[:, :, 1:-1, 1:-1] / 9.0)

# ----------------------------------------------------------------------------------- ddp_train


def test_ddp_single_process_group():
    ddp = load_example("ddp_train")
    result = ddp.main(["--steps", "2", "--batch", "1", "--patch", "16"])
    assert result["world_size"] == 1 and result["params_identical"] and result["grads_identical"]
    assert all(key.startswith("net.") for key in result["checkpoint_keys"])  # frozen VGG not saved
    assert sorted(result["trainable"]) == result["checkpoint_keys"]  # only the SR net trains and is saved
    assert result["grad_vs_manual_average"] == 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_processes_agree():
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
        str(ROOT / "examples" / "ddp_train.py"), "--steps", "3", "--batch", "1", "--patch", "16",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("rank ")]
    assert sorted(line.split(":")[0] for line in lines) == ["rank 0/2", "rank 1/2"]
    for line in lines:
        assert "params identical across ranks: True" in line and "grads identical: True" in line
        assert "rel. diff 0" in line
