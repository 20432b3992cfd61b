"""``featx score PRED_DIR REF_DIR``: PSNR, SSIM, LPIPS and DISTS of SR outputs against references
(a thin shell over :func:`featx.metrics.score.score_folders`; torch is imported inside the command)."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Optional

import click

from featx._choices import ALPHA_MODES, METRICS, PAIR_BY

from .interrupt import exit_130_on_ctrl_c

# the values of featx.metrics.lpips.LPIPS_NETS and featx.metrics.conventions' GRAY_MODES and
# CROP_SCOPES, repeated here so that --help does not import torch (tests/test_score_cli.py checks them)
LPIPS_NETS = ("alex", "vgg", "squeeze")
GRAY_MODES = ("keep", "repeat")
CROP_SCOPES = ("psnr_ssim", "all")

EXIT_FAILED, EXIT_SETUP = 1, 2


def _report_interrupt(interrupt: KeyboardInterrupt) -> None:
    click.echo("featx score: interrupted (Ctrl-C); each file at --out is either complete or as it was before", err=True)


class ScoreSetupError(click.ClickException):
    """The run could not start (missing folder or weights, no images, bad option or --out): exit 2."""

    exit_code = EXIT_SETUP


def _echo_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Each warning once, as one ``featx: warning:`` line."""
    seen = set()
    for item in caught:
        text = " ".join(str(item.message).split())
        if text not in seen:
            seen.add(text)
            click.echo(f"featx: warning: {text}", err=True)


def _means_line(summary: Any) -> str:
    parts = []
    for column, (finite_mean, infinite) in summary.finite_means().items():
        if infinite:
            rest = "no other pair" if finite_mean is None else f"{finite_mean:.4f} over the others"
            parts.append(f"{column} inf ({infinite} identical pair(s); {rest})")
        else:
            parts.append(f"{column} {'-' if finite_mean is None else f'{finite_mean:.4f}'}")
    return ", ".join(parts)


def _counts_line(summary: Any) -> str:
    counts = summary.counts
    pairs = counts["scored"] + counts["failed"]
    line = f"{counts['scored']} of {pairs} pairs scored"
    if counts["failed"]:
        line += f" ({counts['failed']} failed)"
    unpaired = counts["unpaired_pred"] + counts["unpaired_ref"]
    if unpaired:
        line += (
            f"; {unpaired} unpaired file(s): {counts['unpaired_pred']} prediction(s) without a reference, "
            f"{counts['unpaired_ref']} reference(s) without a prediction"
        )
    return line


@click.command(name="score")
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.argument("ref_dir", type=click.Path(file_okay=False))
@click.option("--metrics", default="psnr,ssim", show_default=True,
              help=f"Comma-separated, from: {', '.join(METRICS)} (lpips and dists need their weights on disk).")  # fmt: skip
@click.option("--out", default="scores.csv", show_default=True, type=click.Path(dir_okay=False),
              help="Per-pair CSV; the means and settings go to NAME.json beside it (never inside PRED_DIR/REF_DIR).")  # fmt: skip
@click.option("--crop-border", default=0, show_default=True, type=click.IntRange(min=0),
              help="Pixels removed on each side before PSNR/SSIM (the SR scale, as BasicSR's scripts).")  # fmt: skip
@click.option("--crop-scope", type=click.Choice(CROP_SCOPES), default="psnr_ssim", show_default=True,
              help="psnr_ssim: crop for PSNR/SSIM only (BasicSR's scripts); all: crop for LPIPS/DISTS too.")  # fmt: skip
@click.option("--y-channel", is_flag=True, help="PSNR and SSIM on BT.601 luma (BasicSR's test_y_channel).")
@click.option("--gray", type=click.Choice(GRAY_MODES), default="keep", show_default=True,
              help="keep: 1-channel images stay gray for PSNR/SSIM (BasicSR's calculate_psnr_ssim.py); "
                   "repeat: repeat them to RGB (BasicSR's test.py; +1.32 dB PSNR with --y-channel).")  # fmt: skip
@click.option("--modcrop", type=click.IntRange(min=1), default=None, metavar="SCALE",
              help="Crop each reference to a multiple of SCALE (BasicSR's mod_crop); predictions are not cropped.")  # fmt: skip
@click.option("--pair-by", type=click.Choice(PAIR_BY), default="path", show_default=True,
              help="Pair by relative path, or by relative path without extension.")  # fmt: skip
@click.option("--pred-suffix", default=None, metavar="SUFFIX",
              help="Predictions are named REFSTEM+SUFFIX (BasicSR's results: --pred-suffix _ESRGAN_x4 pairs "
                   "baboon_ESRGAN_x4.png with baboon.png).")  # fmt: skip
@click.option("--pred-pattern", default=None, metavar="PATTERN",
              help="Prediction names from reference names, with {stem}: '{stem}_x4', 'SR_{stem}'.")  # fmt: skip
@click.option("--alpha", type=click.Choice(ALPHA_MODES), default="error", show_default=True,
              help="Refuse images with an alpha channel, or drop it (predictions and references).")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="Where LPIPS and DISTS run (cpu, cuda, cuda:1).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Pairs per LPIPS/DISTS batch (default: 8 on a GPU, 1 on CPU).")  # fmt: skip
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Threads decoding pairs and computing PSNR/SSIM (default: one per core, up to 4; 0: none).")  # fmt: skip
@click.option("--lpips-net", type=click.Choice(LPIPS_NETS), default="alex", show_default=True,
              help="LPIPS backbone: alex (the number most SR tables quote; column lpips), vgg (column "
                   "lpips_vgg) or squeeze (column lpips_squeeze).")  # fmt: skip
@click.option("--weights", type=click.Choice(["DEFAULT", "random"], case_sensitive=False), default="DEFAULT",
              show_default=True,
              help="DEFAULT: the downloaded LPIPS/DISTS checkpoints; random: random backbones and unit learned "
                   "layers, to try the command without downloads (columns *_random, not LPIPS/DISTS).")  # fmt: skip
@click.option("--require-verified", is_flag=True,
              help="Refuse LPIPS/DISTS weights whose sha256 does not match their checkpoint (as FEATX_REQUIRE_VERIFIED=1); "
                   "without it they are scored in *_unverified columns.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
@exit_130_on_ctrl_c(_report_interrupt)
def score(
    pred_dir: str,
    ref_dir: str,
    metrics: str,
    out: str,
    crop_border: int,
    crop_scope: str,
    y_channel: bool,
    gray: str,
    modcrop: Optional[int],
    pair_by: str,
    pred_suffix: Optional[str],
    pred_pattern: Optional[str],
    alpha: str,
    device: str,
    batch_size: Optional[int],
    workers: Optional[int],
    lpips_net: str,
    weights: str,
    require_verified: bool,
    quiet: bool,
) -> None:
    """Score the images of PRED_DIR against those of REF_DIR with the same relative paths.

    Writes one CSV row per scored pair and a JSON summary, and prints the mean of each metric.
    Exit 0 when every pair was scored; 1 when a pair failed, a file is unpaired or an output could
    not be written (the rest is scored and written; the rows of a CSV that could not be written
    are printed on stdout); 2 for a setup error (missing folder or weights, no images, bad option
    or --out), with nothing written; 130 on Ctrl-C.

    \b
    Example:
      featx score results/ DIV2K_valid_HR/ --metrics psnr,ssim --crop-border 4 --y-channel
      featx score results/Set14/ Set14/HR/ --pred-suffix _ESRGAN_x4 --crop-border 4 --y-channel
      featx score results/ DIV2K_valid_HR/ --metrics lpips,dists --weights random   # no downloads, not LPIPS/DISTS
    """
    from featx.errors import FeatxWarning, OutputWriteError, RandomWeightsWarning, WeightsNotFoundError
    from featx.metrics.score import score_folders
    from featx.metrics.score_output import check_output, csv_text, write_csv, write_summary

    chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    random_weights = weights.lower() == "random"
    if pred_suffix is not None and pred_pattern is not None:
        raise ScoreSetupError("give --pred-suffix or --pred-pattern, not both")
    if pred_suffix is not None:
        pred_pattern = "{stem}" + pred_suffix
    if random_weights and {"lpips", "dists"} & set(chosen):
        click.echo(
            "featx: warning: --weights random: LPIPS/DISTS run on random backbones (fixed seed 0) with unit learned "
            "layers; their numbers are NOT LPIPS/DISTS (columns *_random) and only show that scoring works",
            err=True,
        )
    try:
        json_path = check_output(out, [pred_dir, ref_dir])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FeatxWarning)
            warnings.simplefilter("ignore", RandomWeightsWarning)  # reported above, once
            summary = score_folders(
                pred_dir, ref_dir, metrics=chosen, crop_border=crop_border, crop_scope=crop_scope,
                y_channel=y_channel, gray=gray, modcrop=modcrop, pair_by=pair_by, pred_pattern=pred_pattern,
                alpha=alpha, device=device, batch_size=batch_size, lpips_net=lpips_net,
                weights=None if random_weights else "DEFAULT", verify_weights="error" if require_verified else None,
                num_workers=workers, progress=not quiet,
            )  # fmt: skip
    except WeightsNotFoundError as error:
        from featx.weights import missing_message

        message = missing_message(error.missing, cli_flags={}, command="featx score") if error.missing else str(error)
        raise ScoreSetupError(
            f"{message}\n  - or --weights random to try featx score without trained weights (the numbers are then "
            "not LPIPS/DISTS)"
        ) from None
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        raise ScoreSetupError(_one_line(error)) from None
    _echo_warnings(caught)
    unverified = summary.config["unverified_weights"]
    if unverified:
        click.echo(
            f"featx: warning: {' and '.join(unverified)}: weights not sha256-verified (see the warnings above); "
            "their columns are *_unverified (--require-verified refuses them)",
            err=True,
        )
    for pair in summary.errors:
        click.echo(f"featx: error: {_printable(pair.key)}: {_one_line(pair.error)}", err=True)
    note = " (RANDOM weights: the *_random numbers are not LPIPS/DISTS)" if summary.config["random_weights"] else ""
    click.echo(f"featx score: {_counts_line(summary)}; mean {_means_line(summary)}{note}")
    written, failed, lost_rows = [], False, False
    for write, path in ((write_csv, out), (write_summary, json_path)):
        try:
            written.append(str(write(summary, path)))
        except (OutputWriteError, ValueError) as error:  # ValueError: a summary that is not strict JSON
            failed, lost_rows = True, lost_rows or write is write_csv
            rest = f"; its {summary.counts['scored']} row(s) follow on stdout, as CSV" if write is write_csv else ""
            click.echo(f"featx: error: {_one_line(error)}{rest}", err=True)
    if written:
        click.echo(f"featx score: wrote {' and '.join(_printable(path) for path in written)}")
    if lost_rows:  # the CSV could not be written: its rows are printed, last, so that no score is lost
        click.echo(csv_text(summary), nl=False)
    if failed or summary.errors:
        sys.exit(EXIT_FAILED)


def _one_line(error: object) -> str:
    """A message on one line (an error's text may hold line breaks)."""
    return " ".join(str(error).split()) or type(error).__name__


def _printable(name: str) -> str:
    from featx.io.discovery import printable_name

    return printable_name(name)
