"""The learned layers of the calibrated metrics featx knows: LPIPS v0.1's linear layers (AlexNet,
VGG16, SqueezeNet 1.1) and DISTS's alpha/beta, with URL, byte size, full sha256 and the Python
package that ships each file."""

from __future__ import annotations

from featx.weights.info import CheckpointInfo, ShippedCopy

__all__ = ["DISTS", "LPIPS"]

_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
_DISTS_URL = "https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt"


def _lpips(net: str, arch: str, *, sha256: str, size: int) -> CheckpointInfo:
    return CheckpointInfo(
        kind="lpips",
        arch=arch,
        file_name=f"lpips_{net}_v0.1.pth",
        url=f"{_LPIPS_URL}{net}.pth",
        sha256=sha256,
        size=size,
        source=f"lpips v0.1 linear layers for {arch} (lpips/weights/v0.1/{net}.pth, Zhang et al. CVPR 2018)",
        tag="V0_1",
        transforms="",
        shipped=ShippedCopy("lpips", f"weights/v0.1/{net}.pth", "lpips"),
    )


# size and sha256: the files inside the lpips 0.1.4 wheel on PyPI (sha256sum and stat of the
# unpacked wheel, and its RECORD); the same files are in richzhang/PerceptualSimilarity's
# lpips/weights/v0.1. The tests hash the installed package's copies.
LPIPS = {
    "alexnet": _lpips("alex", "alexnet", size=6_009, sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg16": _lpips("vgg", "vgg16", size=7_289, sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
    "squeezenet1_1": _lpips(
        "squeeze", "squeezenet1_1", size=10_811, sha256="4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76"
    ),
}
"""LPIPS v0.1's linear layers by backbone arch (keys ``lin{k}.model.1.weight``)."""

# size and sha256: DISTS_pytorch/weights.pt inside the dists-pytorch 0.1 wheel on PyPI (sha256sum,
# stat and the wheel's RECORD); the tests hash the installed package's copy.
DISTS = CheckpointInfo(
    kind="dists",
    arch="vgg16",
    file_name="dists_vgg16.pt",
    url=_DISTS_URL,
    sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
    size=12_288,
    source="DISTS alpha/beta for VGG16 with L2 pooling (DISTS_pytorch/weights.pt, Ding et al. TPAMI 2020)",
    tag="",
    transforms="",
    shipped=ShippedCopy("DISTS_pytorch", "weights.pt", "dists-pytorch"),
)
"""DISTS's learned alpha and beta (keys ``alpha``, ``beta``, shape ``(1, 1475, 1, 1)`` each)."""
