"""ruff and mypy, as configured in pyproject.toml, run on the whole project and report nothing.

Both come with the test extra (``pip install -e ".[test]"``), so the README's test command runs
them; a missing tool is a failure, not a skip, since it would hide a broken install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    done = run_tool("ruff", "check", "featx", "cli", "tests", "examples", "benchmarks")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_mypy_strict_is_clean():
    # files and strictness come from [tool.mypy] in pyproject.toml (featx and cli, strict = true)
    done = run_tool("mypy", "--no-incremental")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout
