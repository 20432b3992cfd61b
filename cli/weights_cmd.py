"""``featx weights``: list, download, verify and locate the known checkpoints (VGG and AlexNet
backbones, LPIPS's learned layers).

torch and featx.weights are imported inside each command so ``featx --help`` stays instant.
"""

from __future__ import annotations

import click

EXIT_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 1, 2, 130


class SetupError(click.ClickException):
    """A bad name or value, or a folder that cannot be written: nothing was tried (exit 2)."""

    exit_code = EXIT_SETUP


class Interrupted(click.ClickException):
    """Ctrl-C during a download; the partial data was removed (exit 130, as for SIGINT)."""

    exit_code = EXIT_INTERRUPTED


@click.group(name="weights")
def weights() -> None:
    """Known checkpoints (backbones, LPIPS layers): where they are, how to get them, whether they are intact.

    Building a model never downloads; `featx weights download NAME` is the one command that does.
    """


@weights.command(name="list")
def list_cmd() -> None:
    """Every known checkpoint: name, kind, arch, file, size and where it was found (or "missing")."""
    from featx.weights import find, known_checkpoints

    rows = [("NAME", "KIND", "ARCH", "FILE", "ACC@1", "SIZE", "LOCATION")]
    for member in known_checkpoints():
        path = find(member)
        size = f"{path.stat().st_size / 2**20:.1f} MiB" if path is not None else "-"
        acc1 = member.meta.get("acc@1")
        accuracy = f"{acc1:.2f}" if isinstance(acc1, float) else "-"
        rows.append((member.name, member.kind, member.arch, member.file_name, accuracy, size, str(path or "missing")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


@weights.command(name="download")
@click.argument("name")
@click.option("--dir", "dest_dir", type=click.Path(file_okay=False), default=None,
              help="Target directory (default: $FEATX_HOME, else ~/.cache/featx).")
@click.option("--url", default=None, help="Download from this URL instead (a mirror, or file://).")
@click.option("--sha256", default=None, help="Expected sha256 (or its first 8+ digits) instead of the file name's.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def download_cmd(name: str, dest_dir: str | None, url: str | None, sha256: str | None, quiet: bool) -> None:
    """Download checkpoint NAME (e.g. VGG19_IMAGENET1K_V1, vgg19 or LPIPS_ALEX_V0_1), verify its sha256, print its path.

    Exit 2 for an unknown NAME, a malformed --sha256 or a --dir that cannot be written; exit 1 when
    the download fails (unreachable, HTTP error, hash mismatch); 130 on Ctrl-C. Nothing partial is kept.
    """
    from featx.errors import HashMismatchError, OutputNotWritableError
    from featx.weights.fetch import download

    try:
        path = download(name, dest_dir=dest_dir, progress=not quiet, url=url, sha256=sha256)
    except KeyboardInterrupt:
        raise Interrupted("download interrupted; the partial file was removed, nothing was kept") from None
    except HashMismatchError as error:  # a ValueError, but about the data: the download failed
        raise click.ClickException(str(error)) from None
    except (ValueError, OutputNotWritableError) as error:
        raise SetupError(str(error)) from None
    except OSError as error:  # DownloadError, or the target cannot be replaced
        raise click.ClickException(str(error)) from None
    click.echo(str(path))


@weights.command(name="verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--sha256", default=None, help="Expected sha256 (or its first 8+ digits); default: the known one.")
def verify_cmd(path: str, sha256: str | None) -> None:
    """Print the sha256 of PATH and OK/MISMATCH against the expected hash (exit 1 on mismatch)."""
    from pathlib import Path

    from featx.errors import HashMismatchError
    from featx.weights import known_by_file_name
    from featx.weights.fetch import verify

    known = known_by_file_name(Path(path).name)
    try:
        digest = verify(path, sha256)
    except HashMismatchError as error:
        click.echo(f"{error.actual}  {path}")
        raise click.ClickException(f"MISMATCH: expected sha256 starting with {error.expected}") from error
    except ValueError as error:  # a malformed --sha256
        raise SetupError(str(error)) from None
    except OSError as error:  # unreadable
        raise SetupError(f"cannot read {path}: {error.strerror or error}") from None
    click.echo(f"{digest}  {path}")
    if sha256 is not None:
        click.echo(f"OK: matches {sha256.strip().lower()}")
    elif known is not None:
        click.echo(f"OK: matches {known.name} (sha256 {known.sha256_prefix[:16]}...)")
    else:
        click.echo("no known hash for this file name; pass --sha256 to check it")


@weights.command(name="path")
@click.argument("name")
def path_cmd(name: str) -> None:
    """Print where checkpoint NAME is on disk (exit 1 with instructions when it is missing, 2 for an unknown NAME)."""
    from featx.errors import WeightsNotFoundError
    from featx.weights import locate

    try:
        click.echo(str(locate(name)))
    except WeightsNotFoundError as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise SetupError(str(error)) from None


@weights.command(name="clear-cache")
def clear_cache_cmd() -> None:
    """Delete the features-only cache and sha256 index under $FEATX_HOME/cache."""
    from featx.weights import clear_cache

    click.echo(f"removed {clear_cache()} file(s)")
