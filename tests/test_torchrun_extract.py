"""`featx extract` under torchrun: two ranks produce the same files as one process, each image once,
and a second job into a folder whose lock is held stops on every rank with exit code 2.

References: the same command run single-process (CliRunner) into another folder; for the lock, the
holder record the test itself writes under its own flock, and the folder's files before the job.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featx.backbones.vgg.features import VGGFeatures
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


def snapshot(root):
    """Every file under ``root`` with its bytes and modification time."""
    return {
        os.path.relpath(os.path.join(folder, name), root): (
            open(os.path.join(folder, name), "rb").read(),
            os.stat(os.path.join(folder, name)).st_mtime_ns,
        )
        for folder, _, names in os.walk(root)
        for name in names
    }


def test_a_second_torchrun_job_into_a_locked_output_exits_2_on_every_rank(tmp_path):
    # The lock is taken here the way featx.extract.lock does it (fcntl.flock on OUTPUT/featx.lock,
    # one JSON line naming the holder); the expected message is built from the record written here.
    fcntl = pytest.importorskip("fcntl")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in" / f"img{i}.png")
    out = tmp_path / "out"
    options = ["--weights", "random", "--taps", TAPS, "--workers", "0", "--quiet"]
    first = CliRunner().invoke(cli, ["extract", str(tmp_path / "in"), str(out), *options])
    assert first.exit_code == 0, first.output
    before = snapshot(out)
    assert sum(name.endswith(".safetensors") for name in before) == 4

    holder = {"host": "holder-host", "job": "first-job", "pid": 4242, "started": "2026-12-02T10:55:17Z"}
    fd = os.open(out / "featx.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder, sort_keys=True) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        before = snapshot(out)  # the lock file now holds the record above

        # the command as in the test above, each rank also saying which exit code it leaves with
        # (torchrun stops the other ranks once one has ended, so its own report may miss a rank
        # that was about to exit by itself)
        script = tmp_path / "featx_main.py"
        script.write_text(
            "import os, sys\n"
            "from featx_cli.main import cli\n"
            "try:\n"
            "    cli()\n"
            "except SystemExit as end:\n"
            "    print(f'rank {os.environ[\"RANK\"]} exits with {end.code}', file=sys.stderr, flush=True)\n"
            "    raise\n"
        )
        logs = tmp_path / "logs"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "--log-dir", str(logs), "--redirects", "3", "--monitor-interval", "1",
            str(script), "extract", str(tmp_path / "in"), str(out), *options, "--overwrite",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        pipe = subprocess.PIPE
        job = subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env, start_new_session=True)
        try:
            _, stderr = job.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)  # torchrun and both ranks: the session started above
            job.communicate()
            pytest.fail("the refused torchrun job did not stop within 150 s (a rank waiting in a collective?)")
    finally:
        os.close(fd)

    expected = (
        f"output folder {out} is in use by another featx extract run (pid 4242 on host holder-host, "
        "started 2026-12-02T10:55:17Z, torchrun job first-job); wait for it to finish, or write to another output folder"
    )
    rank_logs = {path.parent.name: path.read_text() for path in logs.glob("*/attempt_0/*/stderr.log")}
    assert sorted(rank_logs) == ["0", "1"], (sorted(rank_logs), stderr[-3000:])
    for rank, text in rank_logs.items():
        assert expected in text, (rank, text[-2000:])
        assert f"rank {rank} exits with 2" in text, (rank, text[-2000:])
        assert "Traceback" not in text, (rank, text[-2000:])
    # torchrun's report: rank 0 failed with exit code 2 (and rank 1 too, unless it was stopped
    # after saying so above); torchrun itself exits 1 for a job whose ranks failed
    codes = dict(re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)", stderr))
    assert codes.get("0") == "2" and set(codes.values()) <= {"2", "-15"}, stderr[-3000:]
    assert job.returncode == 1, stderr[-3000:]
    assert snapshot(out) == before  # nothing written, removed or touched by the refused job


def test_a_list_on_standard_input_reaches_every_rank_once(tmp_path):
    # torchrun's ranks share its standard input: each reading `--files-from -` itself would see a
    # different part of the list (one rank all of it, the other nothing) and the ranks would plan
    # different runs. Rank 0 reads it and hands it to the others. Reference: the same list given to
    # one process (CliRunner's input).
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    listed = []
    for i in range(6):
        path = tmp_path / "in" / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        listed.append(str(path))
    text = "\n".join(listed) + "\n"
    options = ["--weights", "random", "--taps", TAPS, "--batch-size", "2", "--workers", "0", "--quiet"]
    single = CliRunner().invoke(cli, ["extract", "--files-from", "-", str(tmp_path / "single"), *options], input=text)
    assert single.exit_code == 0, single.output

    script = tmp_path / "featx_main.py"
    script.write_text("from featx_cli.main import cli\ncli()\n")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(script), "extract", "--files-from", "-", str(tmp_path / "dist"), *options,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=170, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "dist" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(line["path"] for line in lines) == sorted(f"img{i}.png" for i in range(6))  # each once
    assert all(line["status"] == "ok" for line in lines)
    for i in range(6):
        name = f"img{i}.png.safetensors"
        assert (tmp_path / "dist" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name

    # a list rank 0 cannot read stops every rank with the same one-line error, none waits forever
    command[command.index("-")] = str(tmp_path / "missing.txt")
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, env=env)
    assert done.returncode != 0
    assert f"file list not found: {tmp_path / 'missing.txt'}" in done.stderr
    assert "featx/" not in done.stderr and "featx_cli/" not in done.stderr  # torchrun's own report only
