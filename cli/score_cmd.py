"""``featx score PRED_DIR REF_DIR``: PSNR, SSIM, LPIPS and DISTS of SR outputs against references
(a thin shell over :func:`featx.metrics.score.score_folders`; torch is imported inside the command)."""

from __future__ import annotations

import sys
from typing import Optional

import click

from featx._choices import ALPHA_MODES, METRICS, PAIR_BY

_LPIPS_NETS = ("alex", "vgg")  # the keys of featx.metrics.lpips.LPIPS_NETS, without importing torch for --help

EXIT_FAILED, EXIT_SETUP = 1, 2


class ScoreSetupError(click.ClickException):
    """The run could not start (missing folder or weights, bad option): exit 2."""

    exit_code = EXIT_SETUP


@click.command(name="score")
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.argument("ref_dir", type=click.Path(file_okay=False))
@click.option(
    "--metrics",
    default="psnr,ssim",
    show_default=True,
    help=f"Comma-separated, from: {', '.join(METRICS)} (lpips and dists need their weights on disk).",
)
@click.option("--out", default="scores.csv", show_default=True, type=click.Path(dir_okay=False),
              help="Per-pair CSV; the means and settings go to the .json beside it.")  # fmt: skip
@click.option("--crop-border", default=0, show_default=True, type=click.IntRange(min=0),
              help="Pixels removed on each side before every metric (the SR scale, as BasicSR does).")  # fmt: skip
@click.option("--y-channel", is_flag=True, help="PSNR and SSIM on BT.601 luma (BasicSR's test_y_channel).")
@click.option("--pair-by", type=click.Choice(PAIR_BY), default="path", show_default=True,
              help="Pair by relative path, or by relative path without extension.")  # fmt: skip
@click.option("--alpha", type=click.Choice(ALPHA_MODES), default="error", show_default=True,
              help="Refuse images with an alpha channel, or drop the alpha channel.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="Where LPIPS and DISTS run (cpu, cuda, cuda:1).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Pairs per LPIPS/DISTS batch (default: 8 on a GPU, 1 on CPU).")  # fmt: skip
@click.option("--lpips-net", type=click.Choice(_LPIPS_NETS), default="alex", show_default=True,
              help="LPIPS backbone: alex (the number most SR tables quote; column lpips) or vgg (column lpips_vgg).")  # fmt: skip
@click.option("--weights", type=click.Choice(["DEFAULT", "random"], case_sensitive=False), default="DEFAULT",
              show_default=True,
              help="DEFAULT: the downloaded LPIPS/DISTS checkpoints; random: random backbones and unit learned "
                   "layers, to try the command without downloads (columns *_random, not LPIPS/DISTS).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def score(
    pred_dir: str,
    ref_dir: str,
    metrics: str,
    out: str,
    crop_border: int,
    y_channel: bool,
    pair_by: str,
    alpha: str,
    device: str,
    batch_size: Optional[int],
    lpips_net: str,
    weights: str,
    quiet: bool,
) -> None:
    """Score the images of PRED_DIR against those of REF_DIR with the same relative paths.

    Writes one CSV row per scored pair and a JSON summary, and prints the mean of each metric.
    Unpaired, undecodable or differently sized pairs are reported and skipped; the exit code is
    then 1 (2 for a setup error: missing folder or weights, bad option).

    \b
    Example:
      featx score results/ DIV2K_valid_HR/ --metrics psnr,ssim,lpips,dists --crop-border 4 --y-channel
      featx score results/ DIV2K_valid_HR/ --metrics lpips,dists --weights random   # no downloads, not LPIPS/DISTS
    """
    import warnings

    from featx.errors import RandomWeightsWarning, WeightsNotFoundError
    from featx.metrics.score import score_folders, write_scores

    chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    random_weights = weights.lower() == "random"
    if random_weights and {"lpips", "dists"} & set(chosen):
        click.echo(
            "featx: warning: --weights random: LPIPS/DISTS run on random backbones (fixed seed 0) with unit learned "
            "layers; their numbers are NOT LPIPS/DISTS (columns *_random) and only show that scoring works",
            err=True,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # reported above, once
            summary = score_folders(
                pred_dir, ref_dir, metrics=chosen,
                crop_border=crop_border, y_channel=y_channel, pair_by=pair_by, alpha=alpha,
                device=device, batch_size=batch_size, lpips_net=lpips_net,
                weights=None if random_weights else "DEFAULT", progress=not quiet,
            )  # fmt: skip
    except WeightsNotFoundError as error:
        from featx.weights import missing_message

        message = missing_message(error.missing, cli_flags={}, command="featx score") if error.missing else str(error)
        raise ScoreSetupError(
            f"{message}\n  - or --weights random to try featx score without trained weights (the numbers are then "
            "not LPIPS/DISTS)"
        ) from None
    except (FileNotFoundError, ValueError, TypeError, RuntimeError) as error:
        raise ScoreSetupError(str(error)) from None
    json_path = write_scores(summary, out)
    for pair in summary.errors:
        click.echo(f"featx: error: {pair.key}: {pair.error}", err=True)
    scored = len(summary.pairs) - len(summary.errors)
    means = ", ".join(f"{name} {value:.4f}" for name, value in summary.means.items())
    note = ""
    if summary.config["random_weights"]:
        note = " (RANDOM weights: the *_random numbers are not LPIPS/DISTS)"
    click.echo(f"featx score: {scored} of {len(summary.pairs)} pairs scored; mean {means}{note}")
    click.echo(f"featx score: wrote {out} and {json_path}")
    if summary.errors:
        sys.exit(EXIT_FAILED)
