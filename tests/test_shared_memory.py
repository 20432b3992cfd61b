"""A small ``/dev/shm`` never hangs ``featx extract`` (issue 18, item 8). Decoding workers pass
their images to the main process in shared memory; Docker's default is 64 MB, less than one
decoded DIV2K batch. The run must check the room before it starts workers (and decode in the main
process, with one warning), pass through a pipe what a worker still cannot share, and never wait
forever. The tests run in subprocesses (a hang is a timeout, not a stuck test run): with an
injected sharing failure, and with a real 4 MB tmpfs on ``/dev/shm`` in a private mount namespace
where ``unshare -rm`` works."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from featx.errors import ExtractionError, FeatxWarning
from featx.extract import ExtractOptions, extract_features
from featx.extract.decoding import LOADER_TIMEOUT, loader_timeout_error, workers_for_shared_memory

# Runs one extraction with workers; argv: input, output, what to inject. Prints the summary and
# the warnings as JSON on its last line.
_SCRIPT = """
import json, sys, warnings
import torch
import featx.extract.decoding as decoding
from featx.extract import ExtractOptions, extract_features

folder, out, inject = sys.argv[1:4]
if inject in ("share", "real-no-check"):
    decoding.shared_memory_room = lambda path=decoding.SHARED_MEMORY: None  # skip the check before starting
if inject == "share":
    def refuse(self, *args, **kwargs):
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1_2>: No space left on device (28)")
    torch.UntypedStorage._share_fd_cpu_ = refuse
    torch.UntypedStorage._share_filename_cpu_ = refuse
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    summary = extract_features([folder], out, ExtractOptions(weights=None, taps="relu1_1", num_workers=2, batch_size=1))
texts = [str(w.message) for w in caught if issubclass(w.category, Warning) and "random" not in str(w.message).lower()]
print(json.dumps({"ok": summary.ok, "errors": summary.errors, "warnings": texts}))
"""


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):  # 12 MiB each decoded in float32: three do not fit 4 MB
        Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(folder / name, compress_level=1)
    return folder


def run_script(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # a hang fails here
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_too_little_shared_memory_means_no_workers_with_one_warning():
    with pytest.warns(FeatxWarning) as caught:
        assert workers_for_shared_memory(2, 12 * 2**20, room=4 * 2**20) == 0
    (warning,) = caught
    assert str(warning.message) == (
        "/dev/shm has 4 MiB free, less than the 60 MiB that 2 decoding workers would share; decoding in the main "
        "process instead. To use workers, give the container more shared memory (docker run --shm-size=2g)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert workers_for_shared_memory(2, 12 * 2**20, room=60 * 2**20) == 2
        assert workers_for_shared_memory(0, 12 * 2**20, room=0) == 0


def test_the_run_checks_the_room_before_starting_workers(images, tmp_path, monkeypatch):
    import featx.extract.decoding as decoding

    monkeypatch.setattr(decoding, "shared_memory_room", lambda path=decoding.SHARED_MEMORY: 4 * 2**20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = extract_features([images], tmp_path / "out", ExtractOptions(weights=None, taps="relu1_1", num_workers=2))
    assert summary.ok == 2
    shm = [str(w.message) for w in caught if "/dev/shm" in str(w.message)]
    assert len(shm) == 1 and "decoding in the main process instead" in shm[0]


def test_a_worker_that_cannot_share_passes_its_images_through_its_pipe(images, tmp_path):
    """Injected: every attempt to put a tensor in shared memory fails, as on a full /dev/shm. The
    queue's feeder thread used to fail on it and the run waited forever."""
    result = run_script([sys.executable, "-c", _SCRIPT, str(images), str(tmp_path / "out"), "share"])
    assert result["ok"] == 2 and result["errors"] == 0
    shm = [text for text in result["warnings"] if "/dev/shm" in text]
    assert len(shm) == 1, result["warnings"]
    assert "No space left on device" in shm[0] and "--shm-size" in shm[0] and "--workers 0" in shm[0]


def test_a_loader_timeout_is_one_line_naming_shared_memory():
    error = loader_timeout_error(RuntimeError("DataLoader timed out after 900 seconds"), 2)
    assert isinstance(error, ExtractionError)
    assert str(error) == (
        f"the 2 decoding worker(s) delivered nothing for {LOADER_TIMEOUT:.0f} s; a worker that cannot pass its images "
        "(a full /dev/shm) is the usual cause: give the container more shared memory (docker run --shm-size=2g) "
        "or decode in the main process (--workers 0)"
    )
    assert loader_timeout_error(RuntimeError("DataLoader worker (pid 1) is killed by signal"), 2) is None


def _private_shm_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4m tmpfs /dev/shm"], capture_output=True, timeout=60
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _private_shm_works(), reason="unshare -rm cannot mount a private /dev/shm here")
@pytest.mark.parametrize("inject", ["real", "real-no-check"])
def test_a_real_4mb_dev_shm(images, tmp_path, inject):
    """Two 1024x1024 images and a 4 MB tmpfs on /dev/shm: with the check the workers are not
    started; without it (forced) the workers pass their images through their pipes."""
    shell = 'mount -t tmpfs -o size=4m tmpfs /dev/shm && exec "$0" -c "$1" "$2" "$3" "$4"'
    command = ["unshare", "-rm", "sh", "-c", shell, sys.executable, _SCRIPT, str(images), str(tmp_path / "out"), inject]
    result = run_script(command)
    assert result["ok"] == 2 and result["errors"] == 0
    shm = [text for text in result["warnings"] if "/dev/shm" in text]
    assert len(shm) == 1, result["warnings"]
    expected = "decoding in the main process instead" if inject == "real" else "they go through a pipe"
    assert expected in shm[0]


def test_workers_pass_8_bit_images_as_uint8_with_the_same_float_bits(tmp_path):
    """The reference is load_image in this process: the batch a worker passes, turned into the
    extractor's input, holds exactly its float32 bits; a 16-bit image stays float32."""
    import torch
    from torch.utils.data import DataLoader

    from featx.extract.decoding import DecodeDataset, Receiver, collate_decoded, to_input
    from featx.io.images import load_image

    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)).save(tmp_path / "rgb8.png")
    Image.fromarray(rng.integers(0, 65536, (21, 17), dtype=np.uint16)).save(tmp_path / "gray16.png")
    paths = [str(tmp_path / "rgb8.png"), str(tmp_path / "gray16.png")]
    loader = DataLoader(DecodeDataset(paths, "error", None), batch_sampler=[[0], [1]], num_workers=1, collate_fn=collate_decoded)
    receive = Receiver()
    got = {}
    for decoded in loader:
        for indices, stack in receive(decoded)["stacks"]:
            got[indices[0]] = stack
    assert got[0].dtype == torch.uint8 and got[1].dtype == torch.float32
    for index, path in enumerate(paths):
        expected = load_image(path)[None]
        converted = to_input(got[index], torch.device("cpu"), torch.channels_last)
        assert converted.dtype == torch.float32 and converted.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(converted, expected)
