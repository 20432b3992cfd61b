"""Run the ``featx`` command with its feature writer stalling, so a test can SIGKILL it mid-run.

Usage: ``python tests/pausing_featx.py N extract INPUT... OUTPUT [options]``. After the N-th
feature file is written (file renamed into place, manifest line flushed, ``on_record`` called),
the writer thread sleeps for an hour; the compute thread goes on until the bounded write queue is
full. With ``FEATX_TEST_STALL=compute`` the compute (main) thread sleeps instead, before laying
out its (N+1)-th file, so a SIGINT interrupts it as Ctrl-C would. This is a test aid only: the
shipped command has no such option.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def main(argv: list[str]) -> None:
    pause_after = int(argv[0])
    from featx.extract.writer import FeatureWriter
    from featx_cli.main import cli

    if os.environ.get("FEATX_TEST_STALL") == "compute":
        import featx.extract.engine as engine

        serialize = engine.serialize_features
        laid_out = {"files": 0}

        def serialize_then_stall(*args: Any, **kwargs: Any) -> Any:
            laid_out["files"] += 1
            if laid_out["files"] > pause_after:
                time.sleep(3600)
            return serialize(*args, **kwargs)

        engine.serialize_features = serialize_then_stall  # type: ignore[assignment]
        cli(argv[1:])
        return

    write = FeatureWriter.write
    written = {"ok": 0}

    def write_then_stall(self: FeatureWriter, record: dict[str, Any], *args: Any) -> None:
        write(self, record, *args)
        if record["status"] == "ok":
            written["ok"] += 1
            if written["ok"] >= pause_after:
                time.sleep(3600)

    FeatureWriter.write = write_then_stall  # type: ignore[method-assign]
    cli(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
