"""Ctrl-C in a command: one line saying what was kept, and exit 130 (as a shell does for SIGINT),
instead of click's "Aborted!" and exit 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["EXIT_INTERRUPTED", "exit_130_on_ctrl_c"]

EXIT_INTERRUPTED = 130

Command = TypeVar("Command", bound=Callable[..., Any])


def exit_130_on_ctrl_c(report: Callable[[KeyboardInterrupt], None]) -> Callable[[Command], Command]:
    """Decorate a click command's function (below its ``@click.option`` lines): on Ctrl-C,
    ``report(interrupt)`` writes its line to stderr and the process exits with 130.

    Example:
        >>> @exit_130_on_ctrl_c(lambda interrupt: None)
        ... def command() -> None:
        ...     raise KeyboardInterrupt
        >>> try:
        ...     command()
        ... except SystemExit as end:
        ...     end.code
        130
    """

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt as interrupt:
                report(interrupt)
                sys.exit(EXIT_INTERRUPTED)

        return cast(Command, run)

    return decorate
