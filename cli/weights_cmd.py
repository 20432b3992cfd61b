"""``featx weights``: list, download, verify and locate the known checkpoints (VGG, AlexNet, ResNet,
ConvNeXt, SqueezeNet and DINOv2 backbones, the metrics' learned layers).

torch and featx.weights are imported inside each command so ``featx --help`` stays instant.
"""

from __future__ import annotations

import sys

import click

EXIT_FAILED, EXIT_SETUP, EXIT_UNVERIFIABLE, EXIT_INTERRUPTED = 1, 2, 3, 130


class SetupError(click.ClickException):
    """A bad name or value, or a folder that cannot be written: nothing was tried (exit 2)."""

    exit_code = EXIT_SETUP


class Interrupted(click.ClickException):
    """Ctrl-C during a download; the partial data was removed (exit 130, as for SIGINT)."""

    exit_code = EXIT_INTERRUPTED


@click.group(name="weights")
def weights() -> None:
    """Known checkpoints (backbones, LPIPS/DISTS layers): where they are, how to get them, whether they are intact.

    Building a model never downloads; `featx weights download NAME` is the one command that does.
    """


@weights.command(name="list")
def list_cmd() -> None:
    """Every known checkpoint: name, kind, arch, file, ImageNet acc@1, size, what its hash check can
    reach (sha256, or prefix only), and its file: where it is and whether it is verified, or "missing".

    STATUS is "verified" (size and full sha256 match), "prefix" (only the 8 hex digits of the file
    name match: no full sha256 is known), "MISMATCH" or "missing". Files are hashed once per version
    (the sha256 index remembers them).
    """
    from featx.weights import checkpoint_status, format_size, known_checkpoints

    status_words = {"sha256": "verified", "prefix": "prefix", "mismatch": "MISMATCH"}
    rows = [("NAME", "KIND", "ARCH", "FILE", "ACC@1", "SIZE", "HASH", "STATUS", "LOCATION")]
    for member in known_checkpoints():
        path, state = checkpoint_status(member)
        size = member.size if member.size is not None or path is None else path.stat().st_size
        acc1 = member.meta.get("acc@1")
        accuracy = f"{acc1:.2f}" if isinstance(acc1, float) else "-"
        status = "missing" if state is None else status_words[state.value]
        cells = (member.name, member.kind, member.arch, member.file_name, accuracy, format_size(size))
        rows.append((*cells, str(member.verification), status, str(path or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


@weights.command(name="download")
@click.argument("name")
@click.option("--dir", "dest_dir", type=click.Path(file_okay=False), default=None,
              help="Target directory (default: $FEATX_HOME, else ~/.cache/featx).")
@click.option("--url", default=None, help="Download from this URL instead (a mirror, or file://).")
@click.option("--sha256", default=None, help="Expected sha256 (all 64 hex digits, or 8+) instead of the registry's.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def download_cmd(name: str, dest_dir: str | None, url: str | None, sha256: str | None, quiet: bool) -> None:
    """Download checkpoint NAME (e.g. VGG19_IMAGENET1K_V1, vgg19 or LPIPS_ALEX_V0_1), verify its size and
    sha256, print its path.

    Exit 2 for an unknown NAME, a malformed --sha256 or a --dir that cannot be written; exit 1 when
    the download fails (unreachable, HTTP error, size or hash mismatch); 130 on Ctrl-C. Nothing
    partial is kept. A prefix-only checkpoint (no full sha256 is published) is checked against the 8
    hex digits of its file name only, which a warning on stderr says, unless --sha256 gives all 64.
    """
    from featx.errors import HashMismatchError, OutputNotWritableError
    from featx.weights import download, member_of

    try:
        path = download(name, dest_dir=dest_dir, progress=not quiet, url=url, sha256=sha256)
        member = member_of(name)
    except KeyboardInterrupt:
        raise Interrupted("download interrupted; the partial file was removed, nothing was kept") from None
    except HashMismatchError as error:  # a ValueError, but about the data: the download failed
        raise click.ClickException(str(error)) from None
    except (ValueError, OutputNotWritableError) as error:
        raise SetupError(str(error)) from None
    except OSError as error:  # DownloadError, or the target cannot be replaced
        raise click.ClickException(str(error)) from None
    if member.full_sha256 is None and (sha256 is None or len(sha256.strip()) < 64):
        click.echo(
            f"featx: warning: {member.name} is prefix-verified only: no public source gives its full sha256, so the "
            f"file was checked against the 8 hex digits {member.sha256} of its name (32 bits, which can be forged). "
            f"Compare its sha256 (`featx weights verify {path}`) with one you trust",
            err=True,
        )
    click.echo(str(path))


@weights.command(name="verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--sha256", default=None, help="Expected sha256 (all 64 hex digits); default: the registry's.")
def verify_cmd(path: str, sha256: str | None) -> None:
    """Print the sha256 of PATH and whether it is verified: OK (exit 0) only when its full sha256 equals
    a known checkpoint's (recognised by content, whatever the file's name) or the given --sha256.

    MISMATCH (exit 1): a file named like a known checkpoint with another size or sha256, or not the
    given --sha256. UNVERIFIED (exit 3): nothing to verify it against: no known checkpoint has this
    sha256 or name, a prefix-only checkpoint (only 8 hex digits of its sha256 are public), or a
    --sha256 shorter than 64 digits; pass the full --sha256 of a source you trust. Exit 2: unreadable
    file or malformed --sha256. So `featx weights verify X && use X` never passes an unknown file.
    """
    from featx.weights import Verification, check_file

    try:
        result = check_file(path, sha256=sha256)
    except ValueError as error:  # a malformed --sha256
        raise SetupError(str(error)) from None
    except OSError as error:  # unreadable
        raise SetupError(f"cannot read {path}: {error.strerror or error}") from None
    click.echo(f"{result.sha256}  {path}")
    if result.verification is Verification.SHA256:
        click.echo(f"OK: {result.reason}")
        return
    if result.verification is Verification.MISMATCH:
        click.echo(f"MISMATCH: {result.reason}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"UNVERIFIED: {result.reason}", err=True)
    sys.exit(EXIT_UNVERIFIABLE)


@weights.command(name="path")
@click.argument("name")
def path_cmd(name: str) -> None:
    """Print where checkpoint NAME is on disk (exit 1 with instructions when it is missing, 2 for an unknown NAME)."""
    from featx.errors import WeightsNotFoundError
    from featx.weights import locate, missing_message

    try:
        click.echo(str(locate(name)))
    except WeightsNotFoundError as error:
        raise click.ClickException(missing_message(error.missing, cli_flags={}, command="featx")) from None
    except ValueError as error:
        raise SetupError(str(error)) from None


@weights.command(name="clear-cache")
def clear_cache_cmd() -> None:
    """Delete the features-only cache and sha256 index under $FEATX_HOME/cache."""
    from featx.weights import clear_cache

    click.echo(f"removed {clear_cache()} file(s)")
