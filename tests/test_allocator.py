"""featx.allocator: glibc malloc tuning is applied where glibc exists and leaves results unchanged."""

from __future__ import annotations

import platform
import subprocess
import sys

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
