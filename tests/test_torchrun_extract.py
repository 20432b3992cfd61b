"""`featx extract` under torchrun: two ranks produce the same files as one process, each image once.

Reference: the same command run single-process (CliRunner) into another folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from featx.extractor import VGGFeatures
from featx_cli.main import cli

TAPS = "relu1_1,relu2_1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_single_process(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = VGGFeatures("vgg19", TAPS, weights=None)
    ckpt = tmp_path / "random_vgg19.pth"
    torch.save(model.state_dict(), ckpt)
    rng = np.random.default_rng(0)
    sizes = [(24, 32)] * 5 + [(32, 24)] * 2 + [(16, 16)]
    for i, (h, w) in enumerate(sizes):
        folder = tmp_path / "in" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (tmp_path / "in" / "bad.png").write_text("not an image")
    options = ["--weights", str(ckpt), "--taps", TAPS, "--batch-size", "2", "--workers", "0", "--quiet"]

    single = CliRunner().invoke(cli, ["extract", str(tmp_path / "in"), str(tmp_path / "single"), *options])
    assert single.exit_code == 1, single.output  # bad.png fails

    script = tmp_path / "featx_main.py"
    script.write_text("from featx_cli.main import cli\ncli()\n")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(script), "extract", str(tmp_path / "in"), str(tmp_path / "dist"), *options, "--skip-errors",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("featx: error: bad.png:") == 1  # reported by the one rank that owns it

    def files(root):
        return sorted(
            os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root) for name in names
        )

    assert files(tmp_path / "dist") == files(tmp_path / "single")
    for name in files(tmp_path / "single"):
        if name.endswith(".safetensors") or name == "manifest.jsonl":
            assert (tmp_path / "dist" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    lines = [json.loads(line) for line in (tmp_path / "dist" / "manifest.jsonl").read_text().splitlines()]
    paths = [line["path"] for line in lines]
    assert len(paths) == len(set(paths)) == 9  # every image exactly once
    summary = json.loads((tmp_path / "dist" / "summary.json").read_text())
    assert (summary["world_size"], summary["files"], summary["ok"], summary["error"]) == (2, 9, 8, 1)
