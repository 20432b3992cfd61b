"""Perceptual and fidelity metrics: :mod:`~featx.metrics.lpips` (LPIPS), :mod:`~featx.metrics.dists`
(DISTS), :mod:`~featx.metrics.fidelity` (PSNR and SSIM on tensors) and
:mod:`~featx.metrics.score` (folders of SR outputs against references, behind ``featx score``;
with :mod:`~featx.metrics.pairing`, :mod:`~featx.metrics.conventions`,
:mod:`~featx.metrics.score_models` and :mod:`~featx.metrics.score_output`).

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.metrics.dists import DISTS as DISTS
    from featx.metrics.dists import DISTS_CHANNELS as DISTS_CHANNELS
    from featx.metrics.dists import DISTS_TAPS as DISTS_TAPS
    from featx.metrics.dists import load_dists_weights as load_dists_weights
    from featx.metrics.fidelity import psnr as psnr
    from featx.metrics.fidelity import rgb_to_y as rgb_to_y
    from featx.metrics.fidelity import ssim as ssim
    from featx.metrics.lpips import LPIPS as LPIPS
    from featx.metrics.lpips import LPIPS_NETS as LPIPS_NETS
    from featx.metrics.lpips import LPIPS_SCALE as LPIPS_SCALE
    from featx.metrics.lpips import LPIPS_SHIFT as LPIPS_SHIFT
    from featx.metrics.score import METRICS as METRICS
    from featx.metrics.score import PAIR_BY as PAIR_BY
    from featx.metrics.score import ScoredPair as ScoredPair
    from featx.metrics.score import ScoreSummary as ScoreSummary
    from featx.metrics.score import pair_folders as pair_folders
    from featx.metrics.score import score_column as score_column
    from featx.metrics.score import score_folders as score_folders
    from featx.metrics.score import write_scores as write_scores

# public name -> defining module
_EXPORTS = {
    "DISTS": "featx.metrics.dists",
    "DISTS_CHANNELS": "featx.metrics.dists",
    "DISTS_TAPS": "featx.metrics.dists",
    "LPIPS": "featx.metrics.lpips",
    "LPIPS_NETS": "featx.metrics.lpips",
    "LPIPS_SCALE": "featx.metrics.lpips",
    "LPIPS_SHIFT": "featx.metrics.lpips",
    "METRICS": "featx.metrics.score",
    "PAIR_BY": "featx.metrics.score",
    "ScoreSummary": "featx.metrics.score",
    "ScoredPair": "featx.metrics.score",
    "load_dists_weights": "featx.metrics.dists",
    "psnr": "featx.metrics.fidelity",
    "rgb_to_y": "featx.metrics.fidelity",
    "ssim": "featx.metrics.fidelity",
    "pair_folders": "featx.metrics.score",
    "score_column": "featx.metrics.score",
    "score_folders": "featx.metrics.score",
    "write_scores": "featx.metrics.score",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
