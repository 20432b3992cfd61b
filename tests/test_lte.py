"""featx.LTE against a re-implementation of TTSR's model/LTE.py built from torchvision's VGG19."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from featx.backbones.lte import LTE
from featx.errors import WeightsLoadError

pytestmark = pytest.mark.filterwarnings("ignore::featx.errors.RandomWeightsWarning")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ReferenceTTSRLTE(nn.Module):
    """TTSR's LTE as its paper code defines it: a MeanShift 1x1 conv, then vgg19.features slices
    [0:2], [2:7], [7:12] keeping torchvision's indices as module names."""

    def __init__(self, rgb_range: float) -> None:
        super().__init__()
        features = torchvision.models.vgg19(weights=None).features
        self.slice1, self.slice2, self.slice3 = nn.Sequential(), nn.Sequential(), nn.Sequential()
        for index in range(12):
            target = self.slice1 if index < 2 else self.slice2 if index < 7 else self.slice3
            target.add_module(str(index), features[index])
        self.sub_mean = nn.Conv2d(3, 3, 1)
        std = torch.tensor(STD) * rgb_range
        with torch.no_grad():
            self.sub_mean.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.sub_mean.bias.copy_(-rgb_range * torch.tensor(MEAN) / std)

    def forward(self, x):
        x = self.sub_mean(x)
        lv1 = self.slice1(x)
        lv2 = self.slice2(lv1)
        lv3 = self.slice3(lv2)
        return lv1, lv2, lv3


def save_ttsr_checkpoint(path, reference: nn.Module, prefix: str = "LTE.") -> None:
    """A TTSR-style model checkpoint: the LTE's entries plus other parts of the model."""
    state = {prefix + key: value for key, value in reference.state_dict().items()}
    state["MainNet.conv_head.weight"] = torch.randn(64, 3, 3, 3)
    state["SearchTransfer.dummy"] = torch.zeros(1)
    torch.save(state, path)


@pytest.mark.parametrize("rgb_range", [1.0, 255.0])
def test_ttsr_checkpoint_gives_ttsr_features(tmp_path, rgb_range):
    reference = ReferenceTTSRLTE(rgb_range).eval()
    path = tmp_path / "model_00100.pt"
    save_ttsr_checkpoint(path, reference)
    lte = LTE.from_ttsr_checkpoint(path)
    assert lte.rgb_range == pytest.approx(rgb_range, rel=1e-5)
    assert lte.weights_id == f"ttsr:{path}"
    x = torch.rand(2, 3, 16, 16) * rgb_range
    with torch.no_grad():
        expected = reference(x)
    for level, (ours, ref) in enumerate(zip(lte(x), expected, strict=True), start=1):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4, msg=f"level {level}")


def test_module_prefix_and_copy_prefix(tmp_path):
    reference = ReferenceTTSRLTE(1.0)
    path = tmp_path / "ckpt.pt"
    save_ttsr_checkpoint(path, reference, prefix="module.LTE_copy.")
    lte = LTE.from_ttsr_checkpoint(path, prefix="LTE_copy.", requires_grad=False)
    assert not any(p.requires_grad for p in lte.parameters())


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    reference = ReferenceTTSRLTE(1.0)
    state = {"LTE." + k: v for k, v in reference.state_dict().items() if k != "slice3.10.bias"}
    state["LTE.slice4.12.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(
        WeightsLoadError, match=r"missing keys \['LTE.slice3.10.bias'\], unexpected keys \['LTE.slice4.12.weight'\]"
    ):
        LTE.from_ttsr_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(WeightsLoadError, match=r"LTE under prefix 'Other\.': missing keys \['Other.slice1.0.bias'"):
        LTE.from_ttsr_checkpoint(tmp_path / "bad.pt", prefix="Other.")


def test_wrong_mean_shift_or_rgb_range_is_refused(tmp_path):
    reference = ReferenceTTSRLTE(1.0)
    path = tmp_path / "ckpt.pt"
    save_ttsr_checkpoint(path, reference)
    with pytest.raises(WeightsLoadError, match="rgb_range=1, but rgb_range=255"):
        LTE.from_ttsr_checkpoint(path, rgb_range=255)
    with torch.no_grad():
        reference.sub_mean.bias.add_(0.5)
    save_ttsr_checkpoint(path, reference)
    with pytest.raises(WeightsLoadError, match="does not hold TTSR's ImageNet MeanShift"):
        LTE.from_ttsr_checkpoint(path)


def test_frozen_copy_syncs_from_learnable_with_load_state_dict():
    learnable = LTE(weights=None)
    frozen = LTE(weights=None, requires_grad=False)
    x = torch.rand(1, 3, 16, 16)
    # Train the learnable one a step so the two differ.
    loss = sum(level.mean() for level in learnable(x))
    loss.backward()
    with torch.no_grad():
        for param in learnable.parameters():
            param -= 0.1 * param.grad
    frozen.load_state_dict(learnable.state_dict())
    for a, b in zip(frozen(x), learnable(x), strict=True):
        torch.testing.assert_close(a, b)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in learnable.parameters())


def test_rgb_range_must_be_positive():
    with pytest.raises(ValueError, match="rgb_range must be a positive number"):
        LTE(weights=None, rgb_range=0)


class TTSRLike(nn.Module):
    """TTSR's model layout: a learnable LTE inside the model, a frozen copy for the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self.LTE = LTE(weights=None)
        self.LTE_copy = LTE(weights=None, requires_grad=False)


@pytest.mark.filterwarnings("ignore::featx.errors.InputRangeWarning")
def test_ttsr_train_freeze_save_and_strict_reload_keep_the_trained_lte():
    """Train the LTE, freeze the whole model (fine-tuning phase or export), save, reload strictly:
    the trained LTE weights are in the checkpoint and come back; the copy still syncs."""
    model = TTSRLike()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lv1, lv2, lv3 = model.LTE(torch.sigmoid(model.head(torch.rand(2, 3, 16, 16))))
    (lv1.mean() + lv2.mean() + lv3.mean()).backward()
    optimizer.step()
    model.requires_grad_(False)
    checkpoint = model.state_dict()
    assert "LTE.vgg.features.0.weight" in checkpoint
    assert not any(key.startswith("LTE_copy.") for key in checkpoint)  # the frozen copy is never saved
    fresh = TTSRLike()  # other random weights
    fresh.load_state_dict(checkpoint, strict=True)
    trained = model.LTE.vgg.features[0].weight
    torch.testing.assert_close(fresh.LTE.vgg.features[0].weight, trained, rtol=0, atol=0)
    # TTSR's per-step sync of the copy still copies the (frozen) learnable LTE.
    fresh.LTE_copy.load_state_dict(fresh.LTE.state_dict())
    torch.testing.assert_close(fresh.LTE_copy.vgg.features[0].weight, trained, rtol=0, atol=0)
