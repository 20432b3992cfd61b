"""featx.metrics.objects: torchmetrics metrics that accumulate per-sample values over a validation
set, equal to torchmetrics' own LPIPS, and with the same mean on 1 and 2 DDP ranks (gloo, CPU,
torchrun) as in one process, uneven shards and a DistributedSampler's padding included.

References: torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` run offline (its backbone comes
from torchvision through the torch hub cache, where the test puts a fabricated AlexNet checkpoint
under the real file name; its linear layers ship inside torchmetrics, byte-identical to lpips'
v0.1 file); for the accumulation, the float64 mean of the per-sample values computed in one
process on the whole set.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchmetrics
import torchvision
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

import featx
from featx.errors import RandomWeightsWarning
from featx.metrics.lpips import LPIPS
from featx.metrics.objects import DISTSMetric, LPIPSMetric, PerSampleMetric

TM_LIN = Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "alex.pth"


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.double() - target.double()).square().flatten(1).mean(1)


def images(count=5, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(count, 3, size, size, generator=gen) for _ in range(2))


def fabricated_alexnet(folder: Path) -> dict[str, torch.Tensor]:
    """A random torchvision AlexNet saved as the hub cache's ``alexnet-owt-7be5be79.pth``; the
    classifier (unused by LPIPS) is stored as stride-0 views, so the file stays small."""
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    saved = {k: (v if k.startswith("features.") else torch.zeros(1).expand(v.shape)) for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(saved, folder / "alexnet-owt-7be5be79.pth")
    return {k: v for k, v in state.items() if k.startswith("features.")}


def test_lpips_metric_equals_torchmetrics_lpips_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("torchmetrics tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    backbone = fabricated_alexnet(tmp_path / "torch" / "hub" / "checkpoints")
    reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    ours = LPIPSMetric(weights=backbone, lin_weights=TM_LIN)
    pred, target = images()
    for batch in (slice(0, 2), slice(2, 5)):
        reference.update(pred[batch], target[batch])
        ours.update(pred[batch], target[batch])
    expected = reference.compute()
    assert abs(float(ours.compute()) - float(expected)) < 1e-5 * float(expected)
    assert ours.higher_is_better is reference.higher_is_better is False


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric PerSampleMetric was called before")
def test_the_values_are_kept_per_sample_and_reduced_in_float64():
    pred, target = images()
    per_sample = mse(pred, target)
    metric = PerSampleMetric(mse)
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    torch.testing.assert_close(metric.compute(), per_sample.mean().float().double(), rtol=1e-7, atol=0)
    assert metric.compute().dtype == torch.float64
    summed = PerSampleMetric(mse, reduction="sum")
    summed.update(pred, target)
    torch.testing.assert_close(summed.compute(), per_sample.sum(), rtol=1e-6, atol=0)
    metric.reset()
    with pytest.raises(ValueError, match=r"PerSampleMetric has no samples: call update\(pred, target\) before compute"):
        metric.compute()


def test_sample_ids_count_a_duplicated_sample_once():
    pred, target = images()
    target[0] = pred[0]  # sample 0 scores 0: counting it twice shows
    values = mse(pred, target)
    metric = PerSampleMetric(mse, reduction="none")
    order = [4, 0, 1, 0, 2, 3]  # sample 0 twice, as a DistributedSampler's padding would
    for chunk in (order[:3], order[3:]):
        metric.update(pred[chunk], target[chunk], sample_ids=torch.tensor(chunk))
    torch.testing.assert_close(metric.compute(), values.float().double(), rtol=1e-7, atol=0)  # ordered by id
    plain = PerSampleMetric(mse)
    plain.update(pred[order], target[order])
    assert float(plain.compute()) == pytest.approx(float(values.sum() / 6), rel=1e-6)  # without ids: 0 counts twice


def test_bad_inputs_give_clear_errors():
    pred, target = images(count=2)
    with pytest.raises(TypeError, match="per_sample must be a function"):
        PerSampleMetric("mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown reduction 'avg'"):
        PerSampleMetric(mse, reduction="avg")
    one_value = r"one value per sample, shape \(2,\), got \(\); build featx metrics with reduction='none'"
    with pytest.raises(ValueError, match=one_value):
        PerSampleMetric(lambda p, t: mse(p, t).mean()).update(pred, target)
    metric = PerSampleMetric(mse)
    with pytest.raises(TypeError, match="sample_ids must be integers"):
        metric.update(pred, target, sample_ids=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"sample_ids must have shape \(2,\), one id per sample, got \(3,\)"):
        metric.update(pred, target, sample_ids=[0, 1, 2])
    with pytest.raises(ValueError, match=r"sample_ids must lie in \[0, 16777216\).*set_dtype\(torch.float64\)"):
        metric.update(pred, target, sample_ids=[0, 2**24])
    metric.update(pred, target, sample_ids=[0, 1])
    metric.update(pred, target)
    with pytest.raises(ValueError, match="sample_ids were given for 2 of 4 samples"):
        metric.compute()


def test_metric_objects_add_nothing_to_a_checkpoint_and_move_with_to():
    lin = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        metric = LPIPSMetric(weights=None, lin_weights=lin)
        dists = DISTSMetric(weights=None, dists_weights={"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)})
    parent = torch.nn.Module()
    parent.val_lpips, parent.val_dists = metric, dists
    assert list(parent.state_dict()) == []
    assert isinstance(metric.per_sample, LPIPS) and metric.per_sample in list(metric.children())
    assert featx.LPIPSMetric is LPIPSMetric and featx.metrics.PerSampleMetric is PerSampleMetric
    pred, target = images(count=2)
    value = metric(pred, target)  # torchmetrics' forward: the batch value, and accumulated
    torch.testing.assert_close(value, metric.compute())


def test_a_missing_torchmetrics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import torchmetrics now fails
    monkeypatch.delitem(sys.modules, "featx.metrics.objects")
    with pytest.raises(ImportError, match=r"pip install 'featx\[metrics\]'"):
        importlib.import_module("featx.metrics.objects")


# ---------------------------------------------------------------------------------------------
# DDP: 1 and 2 ranks under torchrun against one process
# ---------------------------------------------------------------------------------------------

SCRIPT = r'''
import json, sys, warnings
import torch, torch.distributed as dist
from torch.utils.data import DistributedSampler
from featx.metrics.objects import LPIPSMetric, PerSampleMetric

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
data = torch.load(sys.argv[1], weights_only=True)
pred, target = data["pred"], data["target"]
count = pred.shape[0]

def mse(p, t):
    return (p.double() - t.double()).square().flatten(1).mean(1)

def batches(indices, size=2):
    return [indices[i : i + size] for i in range(0, len(indices), size)]

out = {}
mine = list(range(rank, count, world))  # uneven shards, no padding: 3 + 2 of 5
plain, lpips = PerSampleMetric(mse), LPIPSMetric(weights=data["backbone"], lin_weights=data["lin"], reduction="none")
for chunk in batches(mine):
    plain.update(pred[chunk], target[chunk])
    lpips.update(pred[chunk], target[chunk], sample_ids=chunk)
out["uneven"] = plain.compute().item()
out["lpips_per_sample"] = lpips.compute().tolist()

padded = list(DistributedSampler(range(count), num_replicas=world, rank=rank, shuffle=False))  # 3 + 3
with_ids, without_ids = PerSampleMetric(mse), PerSampleMetric(mse)
for chunk in batches(padded):
    with_ids.update(pred[chunk], target[chunk], sample_ids=chunk)
    without_ids.update(pred[chunk], target[chunk])
out["padded_with_ids"], out["padded_without_ids"] = with_ids.compute().item(), without_ids.compute().item()

lonely = PerSampleMetric(mse)  # one sample: the other rank has none
if rank == 0:
    lonely.update(pred[:1], target[:1])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchmetrics: compute() before update() on the empty rank
    out["one_sample"] = lonely.compute().item()
if rank == 0:
    with open(sys.argv[2], "w") as file:
        json.dump(out, file)
dist.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_and_two_ranks_give_the_one_process_values(tmp_path):
    pred, target = images()
    torch.manual_seed(0)
    backbone = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save({"pred": pred, "target": target, "backbone": backbone, "lin": str(TM_LIN)}, tmp_path / "data.pt")
    (tmp_path / "script.py").write_text(SCRIPT)
    per_sample = mse(pred, target)
    lpips_values = LPIPS(weights=backbone, lin_weights=TM_LIN, reduction="none")(pred, target)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for world in (1, 2):
        result = tmp_path / f"world{world}.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            str(tmp_path / "script.py"), str(tmp_path / "data.pt"), str(result),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=170, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(result.read_text())
        mean = float(per_sample.float().double().mean())  # the values are kept in float32
        assert out["uneven"] == pytest.approx(mean, rel=1e-12), world
        assert out["padded_with_ids"] == pytest.approx(mean, rel=1e-12), world
        assert out["one_sample"] == pytest.approx(float(per_sample[0].float()), rel=1e-12), world
        lpips_per_sample = torch.tensor(out["lpips_per_sample"], dtype=torch.float64)  # ordered by sample id
        torch.testing.assert_close(lpips_per_sample, lpips_values.double(), rtol=1e-5, atol=0)
        if world == 2:  # the padding repeats sample 0 on rank 1: without ids it counts twice
            padded = float(torch.cat([per_sample, per_sample[:1]]).float().double().mean())
            assert out["padded_without_ids"] == pytest.approx(padded, rel=1e-12)


def test_psnr_and_ssim_metrics_average_per_image_values():
    """PSNRMetric/SSIMMetric keep one value per image: the mean over batches of different sizes is
    the mean of the per-image values (references: torchmetrics' functional PSNR per image, and
    featx.ssim, itself tested against BasicSR and scikit-image in tests/test_fidelity.py)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from featx.metrics.fidelity import ssim
    from featx.metrics.objects import PSNRMetric, SSIMMetric

    generator = torch.Generator().manual_seed(7)
    hr = torch.rand(5, 3, 24, 24, generator=generator, dtype=torch.float64)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    psnr_metric, ssim_metric = PSNRMetric(), SSIMMetric()
    for batch in (slice(0, 2), slice(2, 5)):  # uneven batches: a mean of batch means would differ
        psnr_metric.update(sr[batch], hr[batch])
        ssim_metric.update(sr[batch], hr[batch])
    per_image = peak_signal_noise_ratio(sr, hr, data_range=1.0, reduction="none", dim=(1, 2, 3))
    # the kept values are float32 (the metric's dtype): one rounding of each, 2**-24 relative
    assert torch.allclose(psnr_metric.compute(), per_image.double().mean(), rtol=2e-7, atol=0)
    assert torch.allclose(ssim_metric.compute(), ssim(sr, hr, reduction="none").mean(), rtol=2e-7, atol=0)
    assert PSNRMetric.higher_is_better and SSIMMetric.higher_is_better
