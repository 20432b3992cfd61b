"""Tests for `featx weights` (list, download, verify, path, clear-cache), offline with file:// URLs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from featx_cli.main import cli
from featx_cli.weights_cmd import weights


def fake_checkpoint(path: Path) -> Path:
    """A tiny file in torch's format (its content only matters for its hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": torch.randn(4, 3, 3, 3), "features.0.bias": torch.randn(4)}, path)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # reference: hashlib on the whole file


def hub_dir() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def test_command_module_does_not_import_torch():
    code = "import sys, featx_cli.weights_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_group_is_registered_and_lists_subcommands():
    result = CliRunner().invoke(cli, ["weights", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("list", "download", "verify", "path", "clear-cache"):
        assert command in result.output


def test_list_shows_every_checkpoint_and_where_it_is():
    present = fake_checkpoint(hub_dir() / "vgg16-397923af.pth")
    result = CliRunner().invoke(weights, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ARCH", "FILE", "ACC@1", "SIZE", "LOCATION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    # Reference: torchvision's VGG weight enums name eight ImageNet checkpoints; the metrics add
    # torchvision's AlexNet, the lpips project's two v0.1 linear-layer files and DISTS's alpha/beta.
    archs = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
    vgg = [f"{arch.upper()}_IMAGENET1K_V1" for arch in archs]
    assert sorted(rows) == sorted([*vgg, "ALEXNET_IMAGENET1K_V1", "LPIPS_VGG_V0_1", "LPIPS_ALEX_V0_1", "DISTS_VGG16"])
    assert rows["DISTS_VGG16"].split()[1:4] == ["dists", "vgg16", "dists_vgg16.pt"]
    assert rows["VGG16_IMAGENET1K_V1"].endswith(str(present))
    assert "MiB" in rows["VGG16_IMAGENET1K_V1"]
    assert rows["VGG19_IMAGENET1K_V1"].split()[-1] == "missing"
    assert "72.38" in rows["VGG19_IMAGENET1K_V1"]  # torchvision docs: acc@1 72.376
    assert rows["LPIPS_ALEX_V0_1"].split()[1:4] == ["lpips", "alexnet", "lpips_alex_v0.1.pth"]
    assert rows["ALEXNET_IMAGENET1K_V1"].split()[1:5] == ["backbone", "alexnet", "alexnet-owt-7be5be79.pth", "56.52"]


def test_download_lpips_file_checks_its_full_sha256(tmp_path):
    import lpips

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    dest = tmp_path / "dest"
    result = CliRunner().invoke(weights, ["download", "LPIPS_VGG_V0_1", "--dir", str(dest), "-q", "--url", shipped.as_uri()])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(dest / "lpips_vgg_v0.1.pth")
    assert (dest / "lpips_vgg_v0.1.pth").read_bytes() == shipped.read_bytes()
    verified = CliRunner().invoke(weights, ["verify", str(dest / "lpips_vgg_v0.1.pth")])
    assert verified.exit_code == 0 and "OK: matches LPIPS_VGG_V0_1" in verified.output
    other = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # the wrong file for this name
    result = CliRunner().invoke(weights, ["download", "LPIPS_VGG_V0_1", "--dir", str(tmp_path / "d2"), "-q",
                                          "--url", other.as_uri()])  # fmt: skip
    assert result.exit_code == 1 and "sha256 mismatch" in result.output
    assert list((tmp_path / "d2").iterdir()) == []
    located = CliRunner().invoke(weights, ["path", "LPIPS_ALEX_V0_1"])
    assert located.exit_code == 1 and "featx weights download LPIPS_ALEX_V0_1" in located.output


def test_download_with_matching_hash(tmp_path):
    source = fake_checkpoint(tmp_path / "mirror" / "anything.pth")
    dest = tmp_path / "dest"
    args = ["download", "VGG19_IMAGENET1K_V1", "--dir", str(dest), "--url", source.as_uri()]
    result = CliRunner().invoke(weights, [*args, "--sha256", sha256_of(source)])
    assert result.exit_code == 0, result.output
    target = dest / "vgg19-dcbb9e9d.pth"
    assert result.stdout.strip() == str(target)
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.iterdir()] == ["vgg19-dcbb9e9d.pth"]


def test_download_default_dir_is_featx_home(tmp_path):
    source = fake_checkpoint(tmp_path / "src.pth")
    args = ["download", "vgg11", "--quiet", "--url", source.as_uri(), "--sha256", sha256_of(source)[:8]]
    result = CliRunner().invoke(weights, args)
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == Path(os.environ["FEATX_HOME"]) / "vgg11-8a719046.pth"


def test_download_with_wrong_hash_fails_and_leaves_nothing(tmp_path):
    source = fake_checkpoint(tmp_path / "mirror" / "anything.pth")
    dest = tmp_path / "dest"
    # No --sha256: the expected hash is the prefix in the real file name, which the fake cannot match.
    args = ["download", "VGG19_IMAGENET1K_V1", "--dir", str(dest), "--url", source.as_uri()]
    result = CliRunner().invoke(weights, args)
    assert result.exit_code == 1
    assert "sha256 mismatch" in result.output and "expected dcbb9e9d" in result.output
    assert sha256_of(source) in result.output and "nothing was kept" in result.output
    assert list(dest.iterdir()) == []


def test_download_setup_errors_exit_2(tmp_path):
    # docs/cli.md, "Exit codes": 2 = usage or setup error; nothing is fetched or created.
    unknown = CliRunner().invoke(weights, ["download", "VGG19_IMAGENET1K", "--dir", str(tmp_path / "d")])
    assert unknown.exit_code == 2
    assert "unknown checkpoint 'VGG19_IMAGENET1K'. Did you mean 'VGG19_IMAGENET1K_V1'" in unknown.output
    bad_hash = CliRunner().invoke(weights, ["download", "vgg19", "--sha256", "12ab", "--dir", str(tmp_path / "d")])
    assert bad_hash.exit_code == 2 and "a sha256 must be 8 to 64 hex digits, got '12ab'" in bad_hash.output
    assert not (tmp_path / "d").exists()
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    unwritable = CliRunner().invoke(weights, ["download", "vgg19", "--dir", str(blocker / "sub"), "--url", blocker.as_uri()])
    assert unwritable.exit_code == 2 and f"cannot create the download folder {blocker / 'sub'}" in unwritable.output


def test_download_unreachable_url_exits_1(tmp_path):
    import socket

    with socket.socket() as probe:  # a port on 127.0.0.1 that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/vgg19-dcbb9e9d.pth"
    dest = tmp_path / "dest"
    result = CliRunner().invoke(weights, ["download", "vgg19", "-q", "--dir", str(dest), "--url", url])
    assert result.exit_code == 1
    assert f"could not download {url}: " in result.output and "refused" in result.output.lower()
    assert f"Copy vgg19-dcbb9e9d.pth into {dest}" in result.output and "nothing was kept" in result.output
    assert list(dest.iterdir()) == []


def test_download_ctrl_c_exits_130_and_keeps_nothing(tmp_path, monkeypatch):
    from featx.weights import fetch

    source = fake_checkpoint(tmp_path / "mirror" / "anything.pth")
    written = []

    def interrupted_write(fd, data):
        os.write(fd, data[:10])  # part of the data reached the temporary, then Ctrl-C
        written.append(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "_write_all", interrupted_write)
    dest = tmp_path / "dest"
    args = ["download", "vgg19", "-q", "--dir", str(dest), "--url", source.as_uri(), "--sha256", sha256_of(source)]
    result = CliRunner().invoke(weights, args)
    assert result.exit_code == 130 and written == [10]
    assert "download interrupted; the partial file was removed, nothing was kept" in result.output
    assert list(dest.iterdir()) == []


def test_path_and_verify_exit_codes_follow_the_table(tmp_path):
    unknown = CliRunner().invoke(weights, ["path", "vgg20"])
    assert unknown.exit_code == 2 and "unknown checkpoint 'vgg20'" in unknown.output
    file = fake_checkpoint(tmp_path / "mine.pth")
    bad_hash = CliRunner().invoke(weights, ["verify", str(file), "--sha256", "not-hex"])
    assert bad_hash.exit_code == 2 and "8 to 64 hex digits" in bad_hash.output
    missing = CliRunner().invoke(weights, ["verify", str(tmp_path / "absent.pth")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_verify_ok_mismatch_and_unknown(tmp_path):
    named_like_real = fake_checkpoint(tmp_path / "vgg19-dcbb9e9d.pth")
    digest = sha256_of(named_like_real)
    mismatch = CliRunner().invoke(weights, ["verify", str(named_like_real)])
    assert mismatch.exit_code == 1
    assert digest in mismatch.output and "MISMATCH" in mismatch.output and "dcbb9e9d" in mismatch.output
    ok = CliRunner().invoke(weights, ["verify", str(named_like_real), "--sha256", digest[:10]])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[0] == f"{digest}  {named_like_real}"
    assert "OK" in ok.output
    unknown = fake_checkpoint(tmp_path / "mine.pth")
    result = CliRunner().invoke(weights, ["verify", str(unknown)])
    assert result.exit_code == 0 and sha256_of(unknown) in result.output and "no known hash" in result.output


def test_path_found_and_missing():
    missing = CliRunner().invoke(weights, ["path", "vgg19"])
    assert missing.exit_code == 1
    for part in ("vgg19-dcbb9e9d.pth", str(hub_dir()), os.environ["FEATX_HOME"], "featx weights download"):
        assert part in missing.output
    assert "weights=PATH" in missing.output
    present = fake_checkpoint(hub_dir() / "vgg19-dcbb9e9d.pth")
    found = CliRunner().invoke(weights, ["path", "VGG19_IMAGENET1K_V1"])
    assert found.exit_code == 0 and found.stdout.strip() == str(present)


def test_clear_cache(tmp_path):
    from featx.weights import load_weights

    path = fake_checkpoint(tmp_path / "c.pth")
    load_weights(path, arch="vgg11", expected={"features.0.weight": (4, 3, 3, 3), "features.0.bias": (4,)})
    result = CliRunner().invoke(weights, ["clear-cache"])
    assert result.exit_code == 0 and result.output.strip() == "removed 2 file(s)"
