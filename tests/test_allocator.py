"""featx.allocator: glibc malloc tuning is applied where glibc exists, really moves large blocks from
mmap to the heap (glibc's mallinfo2), leaves results unchanged, and `featx extract` applies it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from click.testing import CliRunner

from featx_cli.main import cli


def test_tune_malloc_applies_on_glibc_and_keeps_results():
    # Reference: the same tensor computation in a fresh untuned process.
    code = (
        "import sys, torch; from featx.allocator import tune_malloc; "
        "ok = tune_malloc() if sys.argv[1] == 'tuned' else None; torch.manual_seed(0); "
        "x = torch.randn(64, 64, 512); y = (x @ x.transpose(1, 2)).sum().item(); print(ok, repr(y))"
    )
    tuned = subprocess.run([sys.executable, "-c", code, "tuned"], capture_output=True, text=True, check=True)
    plain = subprocess.run([sys.executable, "-c", code, "plain"], capture_output=True, text=True, check=True)
    applied, tuned_value = tuned.stdout.split()
    expected = "True" if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else "False"
    assert applied == expected
    assert tuned_value == plain.stdout.split()[1]


def test_extract_cli_offers_opt_out():
    result = CliRunner().invoke(cli, ["extract", "--help"])
    assert result.exit_code == 0
    assert "--no-malloc-tuning" in result.output


# Run in a fresh process: tune_malloc changes process-wide settings. mallinfo2().hblkhd counts the
# bytes of blocks glibc serves with their own mmap; arena counts the heap (brk) bytes.
MALLINFO_PROBE = r"""
import ctypes, ctypes.util, json, sys

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print(json.dumps(None))
    sys.exit(0)


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]


libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = None
if sys.argv[1] == "tuned":
    from featx.allocator import tune_malloc

    applied = tune_malloc()
size = int(sys.argv[2])
before = libc.mallinfo2()
block = libc.malloc(size)
after = libc.mallinfo2()
libc.free(block)
print(json.dumps({"applied": applied, "ok": bool(block), "mmapped": after.hblkhd - before.hblkhd,
                  "heap": after.arena - before.arena}))
"""


def malloc_probe(mode: str, size: int):
    done = subprocess.run([sys.executable, "-c", MALLINFO_PROBE, mode, str(size)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc tuning applies to glibc only"
)
@pytest.mark.parametrize("size", [64 << 20, 256 << 20])
def test_tune_malloc_serves_large_blocks_from_the_heap(size):
    # Catches the mutation "tune_malloc does nothing (returns True)", which the test above passes:
    # its real effect is that a large malloc comes from the heap, not from a fresh mmap.
    plain = malloc_probe("plain", size)
    if plain is None:
        pytest.skip("this glibc has no mallinfo2 (added in glibc 2.33)")
    tuned = malloc_probe("tuned", size)
    assert plain["ok"] and tuned["ok"] and tuned["applied"] is True
    # reference: glibc's default mmap threshold is at most 32 MiB, so untuned the block is mmapped
    assert plain["mmapped"] >= size
    assert tuned["mmapped"] == 0 and tuned["heap"] >= size  # tuned (threshold 1 GiB): from the heap


@pytest.mark.parametrize(
    "flag, calls",
    [
        ((), 1),
        (("--malloc-tuning",), 1),
        (("--no-malloc-tuning",), 0),
        # a budget keeps glibc's defaults: the memory a tuned glibc keeps over images of mixed sizes
        # counts against it (benchmarks/bench_budget.py: 1.45x a 1 GiB budget tuned, 1.11x untuned)
        (("--max-memory", "4GiB"), 0),
        (("--max-memory", "4GiB", "--malloc-tuning"), 0),
    ],
)
def test_extract_command_tunes_malloc_unless_told_not_to(tmp_path, ckpt, monkeypatch, flag, calls):
    # Catches the mutation "featx extract no longer calls tune_malloc" (or ignores --no-malloc-tuning).
    from PIL import Image

    import featx.allocator

    made = []
    monkeypatch.setattr(featx.allocator, "tune_malloc", lambda: made.append(True) or True)
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    args = ["extract", str(tmp_path / "a.png"), str(tmp_path / "out"), "--weights", str(ckpt), "--taps", "relu1_1"]
    result = CliRunner().invoke(cli, [*args, "--dry-run", *flag])
    assert result.exit_code == 0, result.output
    assert len(made) == calls
