"""Perceptual and fidelity metrics: :mod:`~featx.metrics.lpips` (LPIPS), :mod:`~featx.metrics.dists`
(DISTS), :mod:`~featx.metrics.fidelity` (PSNR and SSIM on tensors), :mod:`~featx.metrics.objects`
(metric objects for validation loops and DDP, with the ``metrics`` extra) and
:mod:`~featx.metrics.score` (folders of SR outputs against references, behind ``featx score``;
with :mod:`~featx.metrics.pairing`, :mod:`~featx.metrics.conventions`,
:mod:`~featx.metrics.score_models` and :mod:`~featx.metrics.score_output`).

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.metrics.conventions import CROP_SCOPES as CROP_SCOPES
    from featx.metrics.conventions import GRAY_MODES as GRAY_MODES
    from featx.metrics.conventions import PAIR_ERRORS as PAIR_ERRORS
    from featx.metrics.conventions import DecodedPair as DecodedPair
    from featx.metrics.conventions import crop as crop
    from featx.metrics.conventions import is_gray_file as is_gray_file
    from featx.metrics.conventions import read_pair as read_pair
    from featx.metrics.dists import DISTS as DISTS
    from featx.metrics.dists import DISTS_CHANNELS as DISTS_CHANNELS
    from featx.metrics.dists import DISTS_LEVELS as DISTS_LEVELS
    from featx.metrics.dists import DISTS_TAPS as DISTS_TAPS
    from featx.metrics.dists import load_dists_weights as load_dists_weights
    from featx.metrics.fidelity import BT601_Y as BT601_Y
    from featx.metrics.fidelity import SSIM_K1 as SSIM_K1
    from featx.metrics.fidelity import SSIM_K2 as SSIM_K2
    from featx.metrics.fidelity import SSIM_SIGMA as SSIM_SIGMA
    from featx.metrics.fidelity import SSIM_WINDOW as SSIM_WINDOW
    from featx.metrics.fidelity import gaussian_window as gaussian_window
    from featx.metrics.fidelity import psnr as psnr
    from featx.metrics.fidelity import rgb_to_y as rgb_to_y
    from featx.metrics.fidelity import ssim as ssim
    from featx.metrics.lpips import LPIPS as LPIPS
    from featx.metrics.lpips import LPIPS_NETS as LPIPS_NETS
    from featx.metrics.lpips import LPIPS_SCALE as LPIPS_SCALE
    from featx.metrics.lpips import LPIPS_SHIFT as LPIPS_SHIFT
    from featx.metrics.objects import DISTSMetric as DISTSMetric
    from featx.metrics.objects import LPIPSMetric as LPIPSMetric
    from featx.metrics.objects import PerSampleFunction as PerSampleFunction
    from featx.metrics.objects import PerSampleMetric as PerSampleMetric
    from featx.metrics.objects import PSNRMetric as PSNRMetric
    from featx.metrics.objects import SSIMMetric as SSIMMetric
    from featx.metrics.pairing import count_pairs as count_pairs
    from featx.metrics.pairing import pattern_matcher as pattern_matcher
    from featx.metrics.score import METRICS as METRICS
    from featx.metrics.score import PAIR_BY as PAIR_BY
    from featx.metrics.score import ScoredPair as ScoredPair
    from featx.metrics.score import ScoreSummary as ScoreSummary
    from featx.metrics.score import pair_folders as pair_folders
    from featx.metrics.score import score_column as score_column
    from featx.metrics.score import score_folders as score_folders
    from featx.metrics.score import write_scores as write_scores
    from featx.metrics.score_models import PROVENANCES as PROVENANCES
    from featx.metrics.score_models import MetricModule as MetricModule
    from featx.metrics.score_models import default_metric as default_metric
    from featx.metrics.score_models import describe_metric as describe_metric
    from featx.metrics.score_models import min_side as min_side
    from featx.metrics.score_models import weights_provenance as weights_provenance
    from featx.metrics.score_output import check_output as check_output
    from featx.metrics.score_output import summary_path as summary_path
    from featx.metrics.score_output import summary_payload as summary_payload
    from featx.metrics.score_output import write_csv as write_csv
    from featx.metrics.score_output import write_summary as write_summary

# public name -> defining module
_EXPORTS = {
    "BT601_Y": "featx.metrics.fidelity",
    "CROP_SCOPES": "featx.metrics.conventions",
    "DISTS": "featx.metrics.dists",
    "DISTSMetric": "featx.metrics.objects",
    "DISTS_CHANNELS": "featx.metrics.dists",
    "DISTS_LEVELS": "featx.metrics.dists",
    "DISTS_TAPS": "featx.metrics.dists",
    "DecodedPair": "featx.metrics.conventions",
    "GRAY_MODES": "featx.metrics.conventions",
    "LPIPS": "featx.metrics.lpips",
    "LPIPSMetric": "featx.metrics.objects",
    "LPIPS_NETS": "featx.metrics.lpips",
    "LPIPS_SCALE": "featx.metrics.lpips",
    "LPIPS_SHIFT": "featx.metrics.lpips",
    "METRICS": "featx.metrics.score",
    "MetricModule": "featx.metrics.score_models",
    "PAIR_BY": "featx.metrics.score",
    "PAIR_ERRORS": "featx.metrics.conventions",
    "PROVENANCES": "featx.metrics.score_models",
    "PSNRMetric": "featx.metrics.objects",
    "PerSampleFunction": "featx.metrics.objects",
    "PerSampleMetric": "featx.metrics.objects",
    "SSIMMetric": "featx.metrics.objects",
    "SSIM_K1": "featx.metrics.fidelity",
    "SSIM_K2": "featx.metrics.fidelity",
    "SSIM_SIGMA": "featx.metrics.fidelity",
    "SSIM_WINDOW": "featx.metrics.fidelity",
    "ScoreSummary": "featx.metrics.score",
    "ScoredPair": "featx.metrics.score",
    "check_output": "featx.metrics.score_output",
    "count_pairs": "featx.metrics.pairing",
    "crop": "featx.metrics.conventions",
    "default_metric": "featx.metrics.score_models",
    "describe_metric": "featx.metrics.score_models",
    "gaussian_window": "featx.metrics.fidelity",
    "is_gray_file": "featx.metrics.conventions",
    "load_dists_weights": "featx.metrics.dists",
    "min_side": "featx.metrics.score_models",
    "pair_folders": "featx.metrics.score",
    "pattern_matcher": "featx.metrics.pairing",
    "psnr": "featx.metrics.fidelity",
    "read_pair": "featx.metrics.conventions",
    "rgb_to_y": "featx.metrics.fidelity",
    "score_column": "featx.metrics.score",
    "score_folders": "featx.metrics.score",
    "ssim": "featx.metrics.fidelity",
    "summary_path": "featx.metrics.score_output",
    "summary_payload": "featx.metrics.score_output",
    "weights_provenance": "featx.metrics.score_models",
    "write_csv": "featx.metrics.score_output",
    "write_scores": "featx.metrics.score",
    "write_summary": "featx.metrics.score_output",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
