"""Every ```python block in README.md and docs/*.md runs.

Each block runs on its own, in a fresh namespace (a reader can copy any one block alone), with a
temporary working directory, so files a block writes go to ``tmp_path``. A block preceded
by the line ``<!-- docs-test: skip -->`` is not run (for code that needs ImageNet weights or a
network); every other block must run without error.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
SKIP_MARK = "<!-- docs-test: skip -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)

matplotlib.use("Agg")  # headless, before any block imports pyplot


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each ```python block not marked to skip."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        if before != SKIP_MARK:
            blocks.append((line, match.group(1)))
    return blocks


def test_block_finder_reads_fences_and_skip_marks():
    # reference: a hand-written page with two runnable blocks, one skipped and one bash block
    page = (
        "x\n```python\na = 1\n```\n<!-- docs-test: skip -->\n```python\nb\n```\n"
        "```bash\nls\n```\n```python\nc = 2\n```\n"
    )
    assert python_blocks(page) == [(2, "a = 1\n"), (12, "c = 2\n")]


def page_blocks() -> list[tuple[Path, int, str]]:
    blocks = []
    for page in PAGES:
        if page.exists():
            blocks += [(page, line, code) for line, code in python_blocks(page.read_text(encoding="utf-8"))]
    return blocks


BLOCKS = page_blocks()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("page", "line", "code"), BLOCKS, ids=[f"{p.relative_to(ROOT).as_posix()}:{line}" for p, line, _ in BLOCKS]
)
def test_python_block_runs_on_its_own(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    try:
        exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
    except Exception as error:  # report which block failed, with its traceback chained
        raise AssertionError(f"{page.relative_to(ROOT)} block at line {line} failed: {error!r}") from error


def test_every_page_with_code_is_tested():
    pages = {page for page, _, _ in BLOCKS}
    assert ROOT / "docs" / "losses.md" in pages and ROOT / "README.md" in pages
