"""Tests for `featx weights` (list, download, verify, path, clear-cache), offline with file:// URLs."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from featx.weights import VGGWeights, featx_home, known_checkpoints
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


def test_list_shows_every_checkpoint_its_size_hash_and_file(package_weights):
    present = fake_checkpoint(hub_dir() / "vgg16-397923af.pth")  # not torchvision's file: another size
    result = CliRunner().invoke(weights, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ARCH", "FILE", "ACC@1", "SIZE", "HASH", "STATUS", "LOCATION"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == [member.name for member in known_checkpoints()]  # every entry, in the registry's order
    # Reference: torchvision's VGG weight enums name eight ImageNet checkpoints.
    archs = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
    assert {f"{arch.upper()}_IMAGENET1K_V1" for arch in archs} < set(rows)
    assert {"RESNET50_IMAGENET1K_V2", "CONVNEXT_BASE_IMAGENET1K_V1", "DINOV2_VITB14_LVD142M", "LPIPS_SQUEEZE_V0_1"} < set(rows)
    # sizes in MiB/KiB (574,673,361 bytes; 6,009 bytes), "?" where no public source gives one
    assert rows["VGG19_IMAGENET1K_V1"][1:9] == ["backbone", "vgg19", "vgg19-dcbb9e9d.pth", "72.38", "548.1", "MiB",
                                                "sha256", "missing"]  # fmt: skip
    assert rows["VGG19_IMAGENET1K_V1"][-1] == "-"
    assert rows["VGG13_IMAGENET1K_V1"][5:8] == ["?", "prefix", "missing"]
    assert rows["VGG16_IMAGENET1K_V1"][-2:] == ["MISMATCH", str(present)]
    assert rows["ALEXNET_IMAGENET1K_V1"][1:5] == ["backbone", "alexnet", "alexnet-owt-7be5be79.pth", "56.52"]
    # the lpips package is installed (test extra): its shipped copy is found, by sha256
    shipped = Path(importlib.util.find_spec("lpips").submodule_search_locations[0]) / "weights" / "v0.1" / "alex.pth"
    assert rows["LPIPS_ALEX_V0_1"][1:] == ["lpips", "alexnet", "lpips_alex_v0.1.pth", "-", "5.9", "KiB", "sha256",
                                           "verified", str(shipped)]  # fmt: skip
    assert rows["DISTS_VGG16"][1:4] == ["dists", "vgg16", "dists_vgg16.pt"] and rows["DISTS_VGG16"][8] == "verified"


def test_list_status_of_a_prefix_only_file_and_a_verified_one(monkeypatch):
    import featx.weights.index

    prefix_only = fake_checkpoint(featx_home() / "vgg13-19584684.pth")
    full = fake_checkpoint(featx_home() / "vgg19-dcbb9e9d.pth")
    for member, path in ((VGGWeights.VGG13_IMAGENET1K_V1, prefix_only), (VGGWeights.VGG19_IMAGENET1K_V1, full)):
        monkeypatch.setattr(member, "_value_", dataclasses.replace(member.value, size=path.stat().st_size))
    # the real files' hashes stand in for the files, which are not in the tests
    fake = {prefix_only.name: "19584684" + "ab" * 28, full.name: VGGWeights.VGG19_IMAGENET1K_V1.sha256}
    monkeypatch.setattr(featx.weights.index, "sha256_file", lambda path: fake[Path(path).name])
    rows = {line.split()[0]: line.split() for line in CliRunner().invoke(weights, ["list"]).output.splitlines()[1:]}
    assert rows["VGG13_IMAGENET1K_V1"][-3:] == ["prefix", "prefix", str(prefix_only)]
    assert rows["VGG19_IMAGENET1K_V1"][-3:] == ["sha256", "verified", str(full)]


def test_download_lpips_file_checks_its_size_and_full_sha256(tmp_path):
    import lpips

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    dest = tmp_path / "dest"
    result = CliRunner().invoke(weights, ["download", "LPIPS_VGG_V0_1", "--dir", str(dest), "-q", "--url", shipped.as_uri()])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(dest / "lpips_vgg_v0.1.pth")
    assert (dest / "lpips_vgg_v0.1.pth").read_bytes() == shipped.read_bytes()
    assert "warning" not in result.output  # a full sha256: nothing to warn about
    verified = CliRunner().invoke(weights, ["verify", str(dest / "lpips_vgg_v0.1.pth")])
    assert verified.exit_code == 0 and "OK: LPIPS_VGG_V0_1: size and full sha256 match" in verified.output
    other = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # the wrong file for this name
    result = CliRunner().invoke(weights, ["download", "LPIPS_VGG_V0_1", "--dir", str(tmp_path / "d2"), "-q",
                                          "--url", other.as_uri()])  # fmt: skip
    # the size is compared first: the transfer announces 6,009 bytes where the file has 7,289
    assert result.exit_code == 1 and "sends 6,009 bytes, but lpips_vgg_v0.1.pth has 7,289" in result.output
    assert list((tmp_path / "d2").iterdir()) == []
    located = CliRunner().invoke(weights, ["path", "LPIPS_ALEX_V0_1"])
    assert located.exit_code == 1 and "featx weights download LPIPS_ALEX_V0_1" in located.output
    assert "pip install lpips" in located.output  # the package ships the file


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


def test_download_of_another_file_fails_and_leaves_nothing(tmp_path, monkeypatch):
    source = fake_checkpoint(tmp_path / "mirror" / "anything.pth")
    dest = tmp_path / "dest"
    # No --sha256: the registry's size and full sha256, which the fake cannot match.
    args = ["download", "VGG19_IMAGENET1K_V1", "--dir", str(dest), "--url", source.as_uri()]
    result = CliRunner().invoke(weights, args)
    assert result.exit_code == 1
    assert f"sends {source.stat().st_size:,} bytes, but vgg19-dcbb9e9d.pth has 574,673,361" in result.output
    assert "Nothing was kept" in result.output and list(dest.iterdir()) == []
    # the right size (the registry's, patched to the fake's), another sha256
    member = VGGWeights.VGG19_IMAGENET1K_V1
    monkeypatch.setattr(member, "_value_", dataclasses.replace(member.value, size=source.stat().st_size))
    result = CliRunner().invoke(weights, args)
    assert result.exit_code == 1
    assert f"sha256 mismatch for {source.as_uri()}: expected {member.sha256}, got {sha256_of(source)}" in result.output
    assert "nothing was kept" in result.output and list(dest.iterdir()) == []


def test_download_of_a_prefix_only_checkpoint_says_so(tmp_path):
    source = fake_checkpoint(tmp_path / "src.pth")
    digest = sha256_of(source)
    args = ["download", "vgg13", "-q", "--dir", str(tmp_path / "d"), "--url", source.as_uri()]
    prefix = CliRunner().invoke(weights, [*args, "--sha256", digest[:8]])
    assert prefix.exit_code == 0, prefix.output
    assert "VGG13_IMAGENET1K_V1 is prefix-verified only" in prefix.output and "warning" in prefix.stderr
    full = CliRunner().invoke(weights, [*args, "--sha256", digest])  # all 64 digits: verified, no warning
    assert full.exit_code == 0 and "prefix-verified" not in full.output


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
    missing = CliRunner().invoke(weights, ["verify", str(tmp_path / "absent.pth")])  # click's own check
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_verify_exit_codes_ok_mismatch_and_unverified(tmp_path):
    # docs/cli.md, "Exit codes": 0 only for a full sha256 match; 1 mismatch; 3 nothing to verify against.
    named_like_real = fake_checkpoint(tmp_path / "vgg19-dcbb9e9d.pth")
    digest = sha256_of(named_like_real)
    mismatch = CliRunner().invoke(weights, ["verify", str(named_like_real)])
    assert mismatch.exit_code == 1 and mismatch.stdout.splitlines()[0] == f"{digest}  {named_like_real}"
    assert "MISMATCH" in mismatch.output and "VGG19_IMAGENET1K_V1" in mismatch.output and "574,673,361" in mismatch.output
    given = CliRunner().invoke(weights, ["verify", str(named_like_real), "--sha256", digest.upper()])
    assert given.exit_code == 0, given.output
    assert given.output.splitlines() == [f"{digest}  {named_like_real}", "OK: the sha256 equals the given one"]
    short = CliRunner().invoke(weights, ["verify", str(named_like_real), "--sha256", digest[:10]])
    assert short.exit_code == 3 and "UNVERIFIED" in short.output and "pass all 64" in short.output
    wrong = CliRunner().invoke(weights, ["verify", str(named_like_real), "--sha256", "0" * 64])
    assert wrong.exit_code == 1 and "MISMATCH" in wrong.output
    unknown = fake_checkpoint(tmp_path / "mine.pth")
    result = CliRunner().invoke(weights, ["verify", str(unknown)])
    assert result.exit_code == 3 and sha256_of(unknown) in result.output  # `verify X && use X` stops here
    assert "UNVERIFIED: no known checkpoint has this sha256 or this file name" in result.output


def test_verify_recognises_a_known_file_by_content_whatever_its_name(tmp_path):
    import lpips

    copy = tmp_path / "renamed.bin"
    shutil.copyfile(Path(lpips.__file__).parent / "weights" / "v0.1" / "squeeze.pth", copy)
    result = CliRunner().invoke(weights, ["verify", str(copy)])
    assert result.exit_code == 0, result.output
    assert "OK: LPIPS_SQUEEZE_V0_1: size and full sha256 match (under another name than lpips_squeeze_v0.1.pth)" in result.output
    # the real lpips file under another checkpoint's name: a mismatch, and what it really is
    misnamed = tmp_path / "lpips_vgg_v0.1.pth"
    shutil.copyfile(copy, misnamed)
    result = CliRunner().invoke(weights, ["verify", str(misnamed)])
    assert result.exit_code == 1 and "its content is LPIPS_SQUEEZE_V0_1's" in result.output


def test_verify_of_a_prefix_only_checkpoint_is_not_ok(tmp_path, monkeypatch):
    import featx.weights.index  # noqa: F401 (the file's real sha256 is what verify reads)

    path = fake_checkpoint(tmp_path / "vgg13-19584684.pth")
    member = VGGWeights.VGG13_IMAGENET1K_V1
    # the registry's 8 hex digits, made to match this file (a real one matches by construction)
    monkeypatch.setattr(member, "_value_", dataclasses.replace(member.value, sha256=sha256_of(path)[:8]))
    result = CliRunner().invoke(weights, ["verify", str(path)])
    assert result.exit_code == 3, result.output
    assert "UNVERIFIED: VGG13_IMAGENET1K_V1 is prefix-verified only" in result.output and "--sha256 HEX" in result.output
    assert CliRunner().invoke(weights, ["verify", str(path), "--sha256", sha256_of(path)]).exit_code == 0


def test_path_found_and_missing():
    missing = CliRunner().invoke(weights, ["path", "vgg19"])
    assert missing.exit_code == 1
    for part in ("vgg19-dcbb9e9d.pth", str(hub_dir()), os.environ["FEATX_HOME"], "featx weights download VGG19_IMAGENET1K_V1",
                 "FEATX_HOME=DIR featx"):  # fmt: skip
        assert part in missing.output
    assert "weights=PATH" not in missing.output  # a command line names no Python argument
    present = fake_checkpoint(hub_dir() / "vgg19-dcbb9e9d.pth")
    found = CliRunner().invoke(weights, ["path", "VGG19_IMAGENET1K_V1"])
    assert found.exit_code == 0 and found.stdout.strip() == str(present)


def test_clear_cache(tmp_path):
    from featx.weights import load_weights

    path = fake_checkpoint(tmp_path / "c.pth")
    load_weights(path, arch="vgg11", expected={"features.0.weight": (4, 3, 3, 3), "features.0.bias": (4,)})
    result = CliRunner().invoke(weights, ["clear-cache"])
    assert result.exit_code == 0 and result.output.strip() == "removed 2 file(s)"
