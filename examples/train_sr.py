"""Train a small x2 super-resolution network with L1 + featx perceptual and style losses.

The network is SRResNet-style (a few residual blocks, pixel shuffle) and learns a residual on top
of bicubic upsampling. It trains on random patches of scikit-image's sample pictures (astronaut,
coffee, chelsea, brick, grass, gravel) and is evaluated on a held-out picture (``camera`` by
default, as RGB), where it is compared with bicubic interpolation by PSNR.

No ImageNet weights exist offline, so the loss network uses random weights by default
(``--weights random``): the perceptual and style terms are then feature-matching losses on an
untrained VGG -- still valid losses (zero exactly when the images match), just not ImageNet
perceptual ones. Pass ``--weights DEFAULT`` (after ``featx weights download VGG19_IMAGENET1K_V1``)
or ``--weights path/to/vgg19.pth`` for the real thing.

Run:
    python examples/train_sr.py                      # defaults: a few minutes on 2 CPU cores
    python examples/train_sr.py --steps 20 --out-dir /tmp/sr   # smoke test

Writes to ``--out-dir``: ``sr_net.pt`` (the trained network's state dict) and ``results.json``
(losses per step, PSNRs, settings) first, then ``loss_curve.png`` and ``comparison.png``
(bicubic | network | ground truth). The figures need matplotlib (a featx dependency); where it
cannot be imported they are skipped with a note, and the saved results are unaffected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from torch import nn

import featx
from featx.losses import FeatureLoss

TRAIN_IMAGES = ("astronaut", "coffee", "chelsea", "brick", "grass", "gravel")


# ------------------------------------------------------------------------------------------ data


def sample_image(name: str) -> torch.Tensor:
    """A scikit-image sample picture as a ``(3, H, W)`` float tensor in ``[0, 1]`` (gray repeated to RGB)."""
    array = getattr(skimage.data, name)()
    image = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    if image.ndim == 2:
        image = image[..., None].expand(-1, -1, 3)
    return image[..., :3].permute(2, 0, 1).contiguous()


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic downscaling with antialiasing (MATLAB ``imresize``-like), the usual SR degradation."""
    lr = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp(0, 1)


def upscale_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain bicubic upsampling: the baseline and the base the network adds its residual to."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def random_patches(
    images: Sequence[torch.Tensor], count: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` random ``size x size`` crops with random flips and 90-degree rotations."""
    patches = []
    for _ in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(image.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - size + 1, (1,), generator=generator))
        patch = image[:, top : top + size, left : left + size]
        flip, turns = torch.randint(2, (1,), generator=generator), torch.randint(4, (1,), generator=generator)
        patch = patch.flip(-1) if int(flip) else patch
        patches.append(torch.rot90(patch, int(turns), dims=(1, 2)))
    return torch.stack(patches)


def psnr(pred: torch.Tensor, target: torch.Tensor, shave: int) -> float:
    """PSNR in dB for images in ``[0, 1]``, ignoring ``shave`` border pixels (the SR convention)."""
    if shave:
        pred, target = pred[..., shave:-shave, shave:-shave], target[..., shave:-shave, shave:-shave]
    mse = F.mse_loss(pred.clamp(0, 1).double(), target.double()).item()
    return 10 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------------------- model


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (SRResNet/EDSR style, no batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class SRNet(nn.Module):
    """A small SRResNet-style upscaler that predicts a residual over bicubic upsampling.

    With ``residual=True`` the last convolution starts at zero, so the untrained network is
    exactly bicubic; ``residual=False`` predicts the image itself (starts far from the target).

    Shape:
        ``(B, 3, h, w) -> (B, 3, scale * h, scale * w)``.
    """

    def __init__(self, scale: int = 2, channels: int = 32, blocks: int = 4, residual: bool = True) -> None:
        super().__init__()
        self.scale, self.residual = scale, residual
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale), nn.ReLU()
        )
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        if residual:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.head(lr)
        features = features + self.body(features)
        out = self.tail(self.upsample(features))
        return upscale_bicubic(lr, self.scale) + out if self.residual else out


# ------------------------------------------------------------------------------------- training


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--batch", type=int, default=8, help="patches per step")
    parser.add_argument("--patch", type=int, default=48, help="HR patch size (a multiple of --scale)")
    parser.add_argument("--scale", type=int, default=2, help="upscaling factor")
    parser.add_argument("--channels", type=int, default=32, help="network width")
    parser.add_argument("--blocks", type=int, default=4, help="residual blocks")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    parser.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learn a residual over bicubic upsampling (--no-residual: predict the image)",
    )
    parser.add_argument("--perceptual-weight", type=float, default=0.05, help="weight of the perceptual term")
    parser.add_argument(
        "--style-weight",
        type=float,
        default=1e6,
        help="weight of the style term (Gram matrices F F^T / (C H W) are ~1e-4, so their MSE is tiny)",
    )
    parser.add_argument(
        "--weights",
        default="random",
        help="loss-network weights: 'random' (default, warns), 'DEFAULT' (ImageNet from the local cache) or a path",
    )
    parser.add_argument("--holdout", default="camera", help="scikit-image sample used for evaluation only")
    parser.add_argument("--eval-size", type=int, default=256, help="centre crop of the held-out picture (0: all)")
    parser.add_argument("--out-dir", default="train_sr_out", help="where the PNGs go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50, help="print every N steps (0: quiet)")
    args = parser.parse_args(argv)
    if args.holdout in TRAIN_IMAGES:
        parser.error(f"--holdout {args.holdout!r} is a training picture; pick another, e.g. camera or rocket")
    if args.patch % args.scale:
        parser.error(f"--patch {args.patch} must be a multiple of --scale {args.scale}")
    return args


def build_loss(weights: str, perceptual_weight: float, style_weight: float) -> FeatureLoss:
    """L1-free part of the objective: a perceptual term (relu2_1) and a Gram term (relu1_1, relu2_1).

    One frozen VGG19 cut after relu2_1 serves both terms (one pass over the output, one over the
    target under ``no_grad``).
    """
    chosen: Any = None if weights.lower() == "random" else weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", featx.RandomWeightsWarning)  # reported by main() instead
        return FeatureLoss(
            perceptual={"relu2_1": 1.0},
            style={"relu1_1": 1.0, "relu2_1": 1.0},
            perceptual_weight=perceptual_weight,
            style_weight=style_weight,
            weights=chosen,
        )


def objective(
    net: SRNet, loss_fn: FeatureLoss, lr: torch.Tensor, hr: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L1 + perceptual + style`` of the network output; returns the total and each part."""
    sr = net(lr)
    pixel = F.l1_loss(sr, hr)
    features, terms = loss_fn(sr, hr, return_terms=True)
    parts = {"l1": pixel.item()}
    for group in ("perceptual", "style"):
        parts[group] = sum(value.item() for name, value in terms.items() if name.startswith(group + "/"))
    return pixel + features, parts


def save_loss_curve(history: dict[str, list[float]], l1_vs_bicubic: list[float], path: str) -> None:
    """Left: each loss part per step; right: L1 relative to bicubic on the same batch (patches
    differ a lot in difficulty, so the ratio shows progress more clearly than the raw loss)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    window = max(1, len(history["total"]) // 30)

    def smooth(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
        averaged = np.convolve(values, np.ones(window) / window, mode="valid")
        return np.arange(len(averaged)) + window, averaged

    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, values in history.items():
        left.plot(*smooth(values), label=name)
    left.set_yscale("log")
    left.set_ylabel(f"loss (moving average of {window})")
    left.legend(fontsize=8)
    right.plot(*smooth(l1_vs_bicubic), color="tab:orange")
    right.axhline(1.0, color="gray", linestyle="--", label="bicubic")
    right.set_ylabel("L1 of output / L1 of bicubic")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def save_comparison(panels: dict[str, torch.Tensor], hr: torch.Tensor, scale: int, path: str, crop: int = 96) -> None:
    """Side-by-side crops (bicubic | network | ground truth) where bicubic errs most."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    crop = min(crop, *hr.shape[-2:])
    stride = max(1, crop // 4)
    error = (panels["bicubic"] - hr).abs().mean(dim=(0, 1))  # (H, W)
    energy = F.avg_pool2d(error[None, None], crop, stride=stride)[0, 0]
    row, col = divmod(int(energy.argmax()), energy.shape[1])
    top, left = row * stride, col * stride
    fig = Figure(figsize=(3 * 2.4, 2.7), dpi=100)
    FigureCanvasAgg(fig)
    for index, (title, image) in enumerate({**panels, "ground truth": hr}.items()):
        ax = fig.add_subplot(1, 3, index + 1)
        patch = image[0, :, top : top + crop, left : left + crop].clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(patch, interpolation="nearest")
        label = title if title == "ground truth" else f"{title}: {psnr(image, hr, scale):.2f} dB"
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout(pad=0.3)
    fig.savefig(path)


def save_figures(
    history: dict[str, list[float]],
    l1_vs_bicubic: list[float],
    panels: dict[str, torch.Tensor],
    hr: torch.Tensor,
    scale: int,
    out_dir: str,
) -> tuple[Optional[str], Optional[str]]:
    """Draw ``loss_curve.png`` and ``comparison.png``; returns their paths, or ``(None, None)``
    with a note when matplotlib cannot be imported (the results are saved before this)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        print(
            f"note: matplotlib cannot be imported ({error}): skipping loss_curve.png and comparison.png; "
            "the results are saved. Install it with: pip install matplotlib"
        )
        return None, None
    loss_curve = os.path.join(out_dir, "loss_curve.png")
    comparison = os.path.join(out_dir, "comparison.png")
    save_loss_curve(history, l1_vs_bicubic, loss_curve)
    save_comparison(panels, hr, scale, comparison)
    print(f"wrote {loss_curve} and {comparison}")
    return loss_curve, comparison


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train, evaluate on the held-out picture, save the network and the numbers, then draw the PNGs.

    Returns:
        ``losses`` (total per step), ``l1_vs_bicubic`` (per step), ``parts`` (``l1``/``perceptual``/``style`` per step),
        ``fixed_batch_loss`` (before, after: the objective on one fixed validation batch),
        ``psnr_bicubic``, ``psnr_sr`` (dB on the held-out picture), ``seconds``, ``weights_id``,
        ``checkpoint`` (``sr_net.pt``) and ``results`` (``results.json``, the numbers above), both
        written before any drawing, and ``loss_curve`` and ``comparison`` (PNG paths; ``None``
        when matplotlib cannot be imported).
    """
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)

    train_images = [sample_image(name) for name in TRAIN_IMAGES]
    hr_eval = sample_image(args.holdout)
    if args.eval_size:
        size = min(args.eval_size, *hr_eval.shape[1:])
        top, left = (hr_eval.shape[1] - size) // 2, (hr_eval.shape[2] - size) // 2
        hr_eval = hr_eval[:, top : top + size, left : left + size]
    height, width = (hr_eval.shape[1] // args.scale) * args.scale, (hr_eval.shape[2] // args.scale) * args.scale
    hr_eval = hr_eval[None, :, :height, :width]
    lr_eval = downscale(hr_eval, args.scale)

    net = SRNet(args.scale, args.channels, args.blocks, args.residual)
    loss_fn = build_loss(args.weights, args.perceptual_weight, args.style_weight)
    if loss_fn.extractor.weights_id == "random":
        print(
            "note: the loss network has random weights (--weights random): the perceptual and style terms "
            "are feature-matching losses on an untrained VGG19, not ImageNet perceptual losses. "
            "Use --weights DEFAULT or --weights PATH for ImageNet weights."
        )
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.steps), eta_min=args.lr / 10)

    fixed_hr = random_patches(train_images, args.batch, args.patch, torch.Generator().manual_seed(args.seed + 1))
    fixed_lr = downscale(fixed_hr, args.scale)
    with torch.no_grad():
        fixed_before = objective(net, loss_fn, fixed_lr, fixed_hr)[0].item()

    history: dict[str, list[float]] = {"total": [], "l1": [], "perceptual": [], "style": []}
    l1_vs_bicubic: list[float] = []  # L1 of the output / L1 of bicubic on the same batch
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        hr = random_patches(train_images, args.batch, args.patch, generator)
        lr = downscale(hr, args.scale)
        total, parts = objective(net, loss_fn, lr, hr)
        with torch.no_grad():
            ratio = parts["l1"] / F.l1_loss(upscale_bicubic(lr, args.scale), hr).item()
        l1_vs_bicubic.append(ratio)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        history["total"].append(total.item())
        for name, value in parts.items():
            history[name].append(value)
        if args.log_every and (step % args.log_every == 0 or step == args.steps):
            print(
                f"step {step:4d}  total {total.item():.4f}  l1 {parts['l1']:.4f} ({ratio:.3f} x bicubic)"
                f"  perceptual {parts['perceptual']:.2e}  style {parts['style']:.2e}"
                f"  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    seconds = time.perf_counter() - start

    net.eval()
    with torch.no_grad():
        fixed_after = objective(net, loss_fn, fixed_lr, fixed_hr)[0].item()
        sr_eval = net(lr_eval).clamp(0, 1)
    bicubic_eval = upscale_bicubic(lr_eval, args.scale).clamp(0, 1)
    psnr_bicubic, psnr_sr = psnr(bicubic_eval, hr_eval, args.scale), psnr(sr_eval, hr_eval, args.scale)

    result: dict[str, Any] = {
        "losses": history["total"],
        "l1_vs_bicubic": l1_vs_bicubic,
        "parts": {name: values for name, values in history.items() if name != "total"},
        "fixed_batch_loss": (fixed_before, fixed_after),
        "psnr_bicubic": psnr_bicubic,
        "psnr_sr": psnr_sr,
        "seconds": seconds,
        "weights_id": loss_fn.extractor.weights_id,
    }
    print(
        f"held-out {args.holdout} ({width}x{height}, x{args.scale}): bicubic {psnr_bicubic:.2f} dB, "
        f"network {psnr_sr:.2f} dB ({psnr_sr - psnr_bicubic:+.2f} dB); {args.steps} steps in {seconds:.0f} s"
    )
    # the trained network and the numbers are saved before drawing, so a plotting failure loses nothing
    checkpoint = os.path.join(args.out_dir, "sr_net.pt")
    torch.save(net.state_dict(), checkpoint)
    results = os.path.join(args.out_dir, "results.json")
    with open(results, "w", encoding="utf-8") as handle:
        json.dump({**result, "args": vars(args)}, handle, indent=1)
    print(f"wrote {checkpoint} and {results}")
    loss_curve, comparison = save_figures(
        history, l1_vs_bicubic, {"bicubic": bicubic_eval, "network": sr_eval}, hr_eval, args.scale, args.out_dir
    )
    return {**result, "checkpoint": checkpoint, "results": results, "loss_curve": loss_curve, "comparison": comparison}


if __name__ == "__main__":
    main()
