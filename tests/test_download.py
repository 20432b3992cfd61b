"""featx.weights.fetch: hash verification and the explicit download, offline through file:// URLs."""

from __future__ import annotations

import hashlib
import os

import pytest

from featx.errors import HashMismatchError
from featx.weights import VGGWeights
from featx.weights.fetch import download, verify


def fake_checkpoint(path, payload: bytes = b"fabricated checkpoint bytes"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_verify(tmp_path):
    path = fake_checkpoint(tmp_path / "vgg19-dcbb9e9d.pth", b"not the real file")
    actual = hashlib.sha256(b"not the real file").hexdigest()  # reference: hashlib on the same bytes
    with pytest.raises(HashMismatchError, match=rf"expected dcbb9e9d\.\.\., got {actual}"):
        verify(path)
    assert verify(path, actual[:12]) == actual
    other = fake_checkpoint(tmp_path / "mine.pth", b"x")
    assert verify(other) == hashlib.sha256(b"x").hexdigest()  # unknown name: nothing to check against
    with pytest.raises(ValueError, match="8 to 64 hex digits"):
        verify(other, "xyz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        verify(tmp_path / "absent.pth")


def test_download_from_file_url(tmp_path):
    source = fake_checkpoint(tmp_path / "src" / "fake.pth")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    path = download("vgg11", dest_dir=dest, progress=False, url=source.as_uri(), sha256=digest)
    assert path == dest / "vgg11-8a719046.pth"
    assert path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["vgg11-8a719046.pth"]
    # Already present and intact: returned without opening the (now missing) URL.
    assert download("vgg11", dest_dir=dest, progress=False, url=(tmp_path / "gone").as_uri(), sha256=digest) == path


def test_download_hash_mismatch_leaves_nothing(tmp_path):
    source = fake_checkpoint(tmp_path / "fake.pth")
    dest = tmp_path / "dest"
    with pytest.raises(HashMismatchError, match=r"expected 8a719046\.\.\., got [0-9a-f]{64}") as info:
        download(VGGWeights.VGG11_IMAGENET1K_V1, dest_dir=dest, progress=False, url=source.as_uri())
    assert info.value.actual == hashlib.sha256(source.read_bytes()).hexdigest()
    assert list(dest.iterdir()) == []
    with pytest.raises(OSError, match="could not download"):
        download("vgg11", dest_dir=dest, progress=False, url=(tmp_path / "missing").as_uri())
    assert list(dest.iterdir()) == []


def test_download_goes_through_torch_hub(tmp_path, monkeypatch):
    import torch.hub

    source = fake_checkpoint(tmp_path / "fake.pth")
    calls = []
    real = torch.hub.download_url_to_file

    def spy(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix, progress))
        assert os.path.dirname(dst) == str(tmp_path / "dest")  # a temporary file next to the target
        real(url, dst, hash_prefix=hash_prefix, progress=progress)

    monkeypatch.setattr(torch.hub, "download_url_to_file", spy)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    path = download("vgg11", dest_dir=tmp_path / "dest", progress=False, url=source.as_uri(), sha256=digest)
    assert calls == [(source.as_uri(), None, False)] and path.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch, interruption):
    import torch.hub

    def broken(url, dst, hash_prefix=None, progress=True):
        with open(dst, "wb") as handle:  # half a file at the temporary name, then the interruption
            handle.write(b"partial")
        raise interruption("interrupted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", broken)
    dest = tmp_path / "dest"
    with pytest.raises(interruption):
        download("vgg11", dest_dir=dest, progress=False, url=(tmp_path / "x").as_uri())
    assert list(dest.iterdir()) == []
