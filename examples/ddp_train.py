"""DDP training step with a featx loss held by the model wrapper (CPU, gloo).

The wrapper owns the SR network and a :class:`featx.PerceptualLoss` whose VGG is frozen: its
parameters do not require grad, so DDP does not register them, ``find_unused_parameters`` is not
needed, and the frozen VGG is absent from the checkpoint. After the steps every rank gathers its
parameters and gradients and checks that they are identical on all ranks, and that DDP's gradient
equals the ranks' local gradients averaged by hand.

Run (2 processes on CPU):
    torchrun --nproc-per-node 2 examples/ddp_train.py --steps 5
    python -m torch.distributed.run --nproc-per-node 2 --master-port 29511 examples/ddp_train.py

Without torchrun it runs as a single-process group (world size 1). Exit code 0 when the ranks
agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import featx
from featx.losses import PerceptualLoss


class TinySR(nn.Module):
    """x2 upscaler: a residual over bicubic upsampling from two convolutions and a pixel shuffle."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 3 * 4, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False) + self.body(lr)


class SRWithLoss(nn.Module):
    """The module DDP wraps: the SR network plus the loss, so ``forward`` returns the loss.

    Only ``net``'s parameters require grad; the loss's VGG is frozen and eval-locked.
    """

    def __init__(self, weights: Any = None, perceptual_weight: float = 0.1) -> None:
        super().__init__()
        self.net = TinySR()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", featx.RandomWeightsWarning)  # explicit random-weights opt-in
            self.perceptual = PerceptualLoss({"relu1_2": 0.5, "relu2_1": 1.0}, weights=weights)
        self.perceptual_weight = perceptual_weight

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr = self.net(lr)
        return F.l1_loss(sr, hr) + self.perceptual_weight * self.perceptual(sr, hr)


def init_process_group() -> tuple[int, int, Optional[str]]:
    """gloo group from torchrun's environment, or a one-process group when run directly."""
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), None
    handle, path = tempfile.mkstemp(prefix="featx_ddp_")
    os.close(handle)
    os.remove(path)  # the file store creates it
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
    return 0, 1, path


def write_line(text: str) -> None:
    """Write with one system call where possible, so two ranks' lines never interleave."""
    sys.stdout.flush()
    try:
        os.write(sys.stdout.fileno(), text.encode())
    except (AttributeError, OSError, ValueError):  # no file descriptor (notebook, captured stream)
        sys.stdout.write(text)
        sys.stdout.flush()


def gather_flat(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """All ranks' copies of the concatenated ``tensors``."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    copies = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, flat)
    return copies


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train a few DDP steps and compare parameters and gradients across ranks.

    Returns:
        ``rank``, ``world_size``, ``losses`` (this rank's per-step loss), ``params_identical``,
        ``grads_identical``, ``max_param_diff``, ``max_grad_diff``, ``grad_vs_manual_average``
        (relative max difference between DDP's gradient and the local gradients averaged with
        ``all_reduce`` by hand, on one extra batch), ``local_grads_differ`` (the ranks' local
        gradients differ, since each rank draws its own data), ``checkpoint_keys`` (keys of
        the wrapper's state_dict: only the SR network's), ``trainable`` (names DDP syncs).
    """
    parser = argparse.ArgumentParser(description="DDP training with a featx loss inside the wrapped module")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="patches per rank and step")
    parser.add_argument("--patch", type=int, default=32, help="HR patch size")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)

    rank, world_size, store_file = init_process_group()
    try:
        torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
        model = SRWithLoss()
        ddp = DistributedDataParallel(model)  # no find_unused_parameters: the frozen VGG is not registered
        optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
        # each rank draws different data: identical results below come from DDP's gradient averaging
        generator = torch.Generator().manual_seed(1000 + rank)
        texture = torch.rand(1, 3, args.patch // 4, args.patch // 4, generator=generator)

        def batch() -> tuple[torch.Tensor, torch.Tensor]:
            hr = F.interpolate(texture, size=args.patch, mode="bilinear", align_corners=False)
            hr = (hr + 0.05 * torch.rand(args.batch, 3, args.patch, args.patch, generator=generator)).clamp(0, 1)
            return F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False), hr

        losses = []
        for _ in range(args.steps):
            lr, hr = batch()
            loss = ddp(lr, hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        params = [p for p in model.parameters() if p.requires_grad]

        # Reference for DDP's gradient: each rank's local gradient (no_sync), averaged by hand.
        lr, hr = batch()
        optimizer.zero_grad(set_to_none=True)
        with ddp.no_sync():
            ddp(lr, hr).backward()
        manual = torch.cat([p.grad.reshape(-1) for p in params])
        local_copies = gather_flat([manual])
        local_grads_differ = any(not torch.equal(c, local_copies[0]) for c in local_copies)
        dist.all_reduce(manual)
        manual /= world_size
        optimizer.zero_grad(set_to_none=True)
        ddp(lr, hr).backward()
        synced = torch.cat([p.grad.reshape(-1) for p in params])
        grad_vs_manual = float((synced - manual).abs().max() / manual.abs().max())

        param_copies = gather_flat(params)
        grad_copies = gather_flat([p.grad for p in params])
        max_param_diff = max(float((c - param_copies[0]).abs().max()) for c in param_copies)
        max_grad_diff = max(float((c - grad_copies[0]).abs().max()) for c in grad_copies)
        result = {
            "rank": rank,
            "world_size": world_size,
            "losses": losses,
            "params_identical": all(torch.equal(c, param_copies[0]) for c in param_copies),
            "grads_identical": all(torch.equal(c, grad_copies[0]) for c in grad_copies),
            "max_param_diff": max_param_diff,
            "max_grad_diff": max_grad_diff,
            "grad_vs_manual_average": grad_vs_manual,
            "local_grads_differ": local_grads_differ,
            "checkpoint_keys": sorted(model.state_dict()),
            "trainable": trainable,
        }
        report = (
            f"rank {rank}/{world_size}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
            f"params identical across ranks: {result['params_identical']} (max diff {max_param_diff:.3g}); "
            f"grads identical: {result['grads_identical']} (max diff {max_grad_diff:.3g}); "
            f"DDP grad vs hand-averaged local grads: rel. diff {grad_vs_manual:.2g}; "
            f"trainable tensors {len(trainable)}, checkpoint keys {len(result['checkpoint_keys'])}\n"
        )
        write_line(report)
        dist.barrier()  # no rank tears the group down while another still communicates
        return result
    finally:
        dist.destroy_process_group()
        if store_file and os.path.exists(store_file):
            os.remove(store_file)


if __name__ == "__main__":
    outcome = main()
    agree = outcome["params_identical"] and outcome["grads_identical"] and outcome["grad_vs_manual_average"] < 1e-5
    # The process group is already destroyed. With gloo on a loaded CPU, torch's C++ teardown at
    # interpreter exit intermittently aborts ("terminate called without an active exception"), even
    # for a script that only calls init_process_group and destroy_process_group; skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if agree else 1)
