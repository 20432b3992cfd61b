"""TTSR-style reference-based SR with a learnable ``featx.LTE`` and the transferal perceptual loss.

What TTSR (Yang et al., CVPR 2020) does with its texture extractor, in a small runnable form:

1. the learnable LTE (VGG19 to relu3_1) lives inside the model and is loaded from a TTSR
   checkpoint with ``LTE.from_ttsr_checkpoint`` (a fabricated one is written first: no real
   TTSR checkpoint exists offline; its keys follow TTSR's ``LTE.slice1.0.weight`` ...
   ``LTE.sub_mean.weight`` layout);
2. hard/soft attention between the LR image and a reference picks reference textures
   ``T_lv1..T_lv3`` (TTSR's ``SearchTransfer``, 3x3 patches at relu3_1);
3. a frozen copy of the LTE, synced every step with
   ``lte_copy.load_state_dict(model.LTE.state_dict())``, extracts the SR output's levels for
   :class:`featx.TransferalPerceptualOnFeatures`;
4. the LTE's parameters get their own optimizer group at a 10x lower learning rate
   (TTSR: ``--lr_rate 1e-4``, ``--lr_rate_lte 1e-5``).

Run:
    python examples/ttsr_lte.py --steps 100
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from torch import nn

import featx
from featx.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from featx.backbones.vgg.features import VGGFeatures
from featx.losses.transferal import TransferalPerceptualOnFeatures

TRAIN_IMAGES = ("astronaut", "coffee", "chelsea", "brick", "grass", "gravel")
# TTSR model/LTE.py: vgg19.features indices kept inside slice1 = [0:2], slice2 = [2:7], slice3 = [7:12]
TTSR_SLICES = {0: 1, 2: 2, 5: 2, 7: 3, 10: 3}


def write_fabricated_ttsr_checkpoint(path: str, seed: int = 0, rgb_range: float = 1.0) -> str:
    """Write a checkpoint laid out like TTSR's ``model.state_dict()`` (random VGG weights).

    Keys: ``LTE.slice{s}.{i}.weight/bias`` for the five convolutions of VGG19 up to relu3_1,
    ``LTE.sub_mean.weight/bias`` (TTSR's MeanShift: ``weight = I / (std * rgb_range)``,
    ``bias = -mean / std``), plus entries of other TTSR parts that the LTE import ignores.
    """
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", featx.RandomWeightsWarning)
        vgg = VGGFeatures("vgg19", "ttsr_lte", weights=None)
    state: dict[str, torch.Tensor] = {}
    for index, slice_number in TTSR_SLICES.items():
        for kind in ("weight", "bias"):
            state[f"LTE.slice{slice_number}.{index}.{kind}"] = vgg.features[index].get_parameter(kind).detach().clone()
    std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
    state["LTE.sub_mean.weight"] = torch.eye(3).view(3, 3, 1, 1) / (std * rgb_range).view(3, 1, 1, 1)
    state["LTE.sub_mean.bias"] = -mean / std
    state["MainNet.conv_head.weight"] = torch.randn(64, 3, 3, 3)  # other TTSR modules: ignored
    state["MainNet.conv_head.bias"] = torch.zeros(64)
    torch.save(state, path)
    return path


def search_transfer(
    q_lv3: torch.Tensor, k_lv3: torch.Tensor, v_levels: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """TTSR's ``SearchTransfer``: relevance of 3x3 relu3_1 patches, hard-attention texture transfer.

    Args:
        q_lv3: relu3_1 of the bicubic-upsampled LR image (queries), ``(B, C, h, w)``.
        k_lv3: relu3_1 of the down-then-up-sampled reference (keys), ``(B, C, hr, wr)``.
        v_levels: ``(lv1, lv2, lv3)`` of the reference (values).

    Returns:
        ``S`` (soft attention, the best relevance per query position, ``(B, 1, h, w)``) and the
        transferred textures ``(T_lv1, T_lv2, T_lv3)`` at 4x, 2x and 1x the ``h x w`` grid.
    """
    batch, _, height, width = q_lv3.shape
    query = F.normalize(F.unfold(q_lv3, 3, padding=1), dim=1)  # (B, C*9, h*w)
    key = F.normalize(F.unfold(k_lv3, 3, padding=1), dim=1).transpose(1, 2)  # (B, hr*wr, C*9)
    relevance = torch.bmm(key, query)  # (B, hr*wr, h*w)
    soft, hard = relevance.max(dim=1)  # best reference patch per query position

    def transfer(value: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
        patches = F.unfold(value, kernel, padding=padding, stride=stride)  # (B, C*k*k, hr*wr)
        picked = patches.gather(2, hard[:, None, :].expand(-1, patches.shape[1], -1))
        size = (height * stride, width * stride)
        return F.fold(picked, size, kernel, padding=padding, stride=stride) / 9.0  # TTSR: / (3*3)

    lv1, lv2, lv3 = v_levels
    textures = (transfer(lv1, 12, 4, 4), transfer(lv2, 6, 2, 2), transfer(lv3, 3, 1, 1))
    return soft.view(batch, 1, height, width), textures


class TinyTTSR(nn.Module):
    """x2 reference-based SR from the upsampled LR features and the transferred textures.

    Like TTSR's MainNet it predicts the image itself (no bicubic skip), so it starts far from
    the target and the loss falls quickly in the first steps.

    ``self.LTE`` is learnable and saved with the model; ``self.LTE_copy`` is the frozen copy the
    transferal perceptual loss uses (frozen featx extractors are not saved, so the checkpoint
    holds the LTE once).
    """

    def __init__(self, lte: featx.LTE, channels: int = 32, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.LTE = lte
        self.LTE_copy = featx.LTE(weights=lte.vgg.state_dict(), requires_grad=False, rgb_range=lte.rgb_range)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.texture_in = nn.Conv2d(64, channels, 1)
        self.body = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def sync_copy(self) -> None:
        """TTSR's step-wise sync of the frozen copy from the learnable LTE."""
        self.LTE_copy.load_state_dict(self.LTE.state_dict())

    def forward(self, lr: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
        lrsr = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        ref_lr = F.interpolate(ref, scale_factor=1 / self.scale, mode="bicubic", antialias=True, align_corners=False)
        refsr = F.interpolate(ref_lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        q_lv3 = self.LTE(lrsr)[2]
        k_lv3 = self.LTE(refsr)[2]
        v_levels = self.LTE(ref)
        soft, textures = search_transfer(q_lv3, k_lv3, v_levels)
        soft_full = F.interpolate(soft, size=lrsr.shape[-2:], mode="bilinear", align_corners=False)
        features = F.relu(self.head(lrsr))
        texture = self.texture_in(textures[0]) * soft_full
        features = features + self.body(torch.cat([features, texture], dim=1))
        return {"sr": self.tail(features), "soft_attention": soft, "textures": textures}


def sample_image(name: str) -> torch.Tensor:
    array = getattr(skimage.data, name)()
    image = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    if image.ndim == 2:
        image = image[..., None].expand(-1, -1, 3)
    return image[..., :3].permute(2, 0, 1).contiguous()


def patches_with_reference(
    images: Sequence[torch.Tensor], count: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """HR patches and reference patches: the same picture, shifted by up to ``size // 2`` pixels."""
    hrs, refs = [], []
    shift = size // 2
    for _ in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(shift, image.shape[1] - size - shift + 1, (1,), generator=generator))
        left = int(torch.randint(shift, image.shape[2] - size - shift + 1, (1,), generator=generator))
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
        hrs.append(image[:, top : top + size, left : left + size])
        refs.append(image[:, top + dy : top + dy + size, left + dx : left + dx + size])
    return torch.stack(hrs), torch.stack(refs)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Load the LTE from a (fabricated) TTSR checkpoint and train the small model.

    Returns:
        ``losses`` (total per step), ``tpl`` (transferal perceptual loss per step),
        ``fixed_batch_loss`` (before, after: on one fixed batch), ``checkpoint`` (the TTSR file
        written), ``model_checkpoint`` (the trained model's state_dict file),
        ``checkpoint_keys`` (its keys), ``lte_change`` (relative change of the learnable LTE's
        weights), ``copy_max_diff`` (learnable vs frozen copy after the last sync: 0),
        ``learning_rates`` (per optimizer group).
    """
    parser = argparse.ArgumentParser(description="TTSR-style training with a learnable featx.LTE")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=24, help="HR patch size (a multiple of 8)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the SR network (TTSR: 1e-4)")
    parser.add_argument("--lr-lte", type=float, default=1e-5, help="learning rate of the LTE (TTSR: 1e-5)")
    parser.add_argument("--tpl-weight", type=float, default=1e-2, help="TTSR --tpl_w (default 1e-2)")
    parser.add_argument("--out-dir", default=None, help="where checkpoints go (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)
    if args.patch % 8:
        parser.error(f"--patch {args.patch} must be a multiple of 8 (x2 SR, relu3_1 at 1/4)")
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="featx_ttsr_")
    os.makedirs(out_dir, exist_ok=True)

    ttsr_path = write_fabricated_ttsr_checkpoint(os.path.join(out_dir, "ttsr_model_00100.pt"), args.seed)
    lte = featx.LTE.from_ttsr_checkpoint(ttsr_path)  # learnable (requires_grad=True), strict
    print(f"loaded LTE from {ttsr_path} (rgb_range={lte.rgb_range:g}, weights_id={lte.weights_id})")
    torch.manual_seed(args.seed)
    model = TinyTTSR(lte)
    tpl = TransferalPerceptualOnFeatures(criterion="l2", use_soft_attention=True)  # TTSR --tpl_type l2
    lte_params = list(model.LTE.parameters())
    lte_ids = {id(p) for p in lte_params}
    other_params = [p for p in model.parameters() if p.requires_grad and id(p) not in lte_ids]
    optimizer = torch.optim.Adam(
        [{"params": other_params, "lr": args.lr}, {"params": lte_params, "lr": args.lr_lte}], betas=(0.9, 0.999)
    )
    lte_start = torch.cat([p.detach().reshape(-1) for p in lte_params]).clone()

    images = [sample_image(name) for name in TRAIN_IMAGES]
    generator = torch.Generator().manual_seed(args.seed)

    def down(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)

    def objective(hr: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(down(hr).clamp(0, 1), ref)
        sr_levels = model.LTE_copy(out["sr"].clamp(0, 1))
        transferal = tpl(sr_levels, out["textures"], out["soft_attention"])
        return F.l1_loss(out["sr"], hr) + args.tpl_weight * transferal, transferal

    fixed = patches_with_reference(images, args.batch, args.patch, torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        fixed_before = objective(*fixed)[0].item()
    losses, tpl_values = [], []
    for step in range(1, args.steps + 1):
        model.sync_copy()  # TTSR: self.LTE_copy.load_state_dict(self.LTE.state_dict()) every step
        hr, ref = patches_with_reference(images, args.batch, args.patch, generator)
        loss, transferal = objective(hr, ref)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        tpl_values.append(transferal.item())
        if args.log_every and (step % args.log_every == 0 or step == args.steps):
            print(f"step {step:4d}  loss {loss.item():.4f}  transferal perceptual {transferal.item():.4e}", flush=True)
    model.sync_copy()
    with torch.no_grad():
        fixed_after = objective(*fixed)[0].item()

    lte_now = torch.cat([p.detach().reshape(-1) for p in lte_params])
    lte_change = float((lte_now - lte_start).norm() / lte_start.norm())
    copy_diff = max(
        float((a.detach() - b).abs().max()) for a, b in zip(model.LTE.parameters(), model.LTE_copy.parameters(), strict=True)
    )
    model_path = os.path.join(out_dir, "tiny_ttsr.pt")
    state = model.state_dict()
    torch.save(state, model_path)
    print(
        f"fixed-batch loss {fixed_before:.4f} -> {fixed_after:.4f}; LTE weights moved by {lte_change:.2e} "
        f"(lr {args.lr_lte:g} vs {args.lr:g}); frozen copy in sync (max diff {copy_diff:g}); "
        f"checkpoint {model_path}: {len(state)} tensors, LTE_copy not saved"
    )
    return {
        "losses": losses,
        "tpl": tpl_values,
        "fixed_batch_loss": (fixed_before, fixed_after),
        "checkpoint": ttsr_path,
        "model_checkpoint": model_path,
        "checkpoint_keys": sorted(state),
        "lte_change": lte_change,
        "copy_max_diff": copy_diff,
        "learning_rates": [group["lr"] for group in optimizer.param_groups],
    }


if __name__ == "__main__":
    main()
