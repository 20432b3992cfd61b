"""The torchvision ImageNet checkpoints featx knows (VGG, AlexNet, ResNet, ConvNeXt, SqueezeNet):
URL, byte size and sha256 of each file, and the model facts torchvision documents.

File names, URLs, ``num_params`` and accuracies: ``torchvision.models.<Model>_Weights.<TAG>``
(``.url``, ``.meta["num_params"]``, ``.meta["_metrics"]["ImageNet-1K"]``), checked against the
installed torchvision by the tests. torchvision publishes only the first 8 hex digits of each
file's sha256 (in its name); the full sha256 and the byte size come from public projects that
downloaded the files from download.pytorch.org and recorded both, as cited per entry. Every byte
size also agrees with torchvision's own ``meta["_file_size"]`` (MiB, three decimals; tested).
Where no public source gives the full sha256, the entry keeps the 8-digit prefix and is
"prefix-verified" only; where none gives the size, it is ``None``.
"""

from __future__ import annotations

from typing import Optional

from featx.weights.info import CheckpointInfo

__all__ = ["ALEXNET", "CONVNEXT", "RESNET", "SQUEEZENET", "VGG"]

_BASE_URL = "https://download.pytorch.org/models/"


def _torchvision(
    arch: str,
    file_name: str,
    *,
    sha256: str,
    size: Optional[int],
    num_params: int,
    acc: tuple[float, float],
    head: str = "classifier.",
    tag: str = "IMAGENET1K_V1",
) -> CheckpointInfo:
    return CheckpointInfo(
        kind="backbone",
        arch=arch,
        file_name=file_name,
        url=_BASE_URL + file_name,
        sha256=sha256,
        size=size,
        source=f"torchvision {arch} {tag} (ImageNet-1K)",
        tag=tag,
        head=(head,),
        num_params=num_params,
        acc1=acc[0],
        acc5=acc[1],
    )


VGG: dict[str, CheckpointInfo] = {
    # No public source gives the full sha256 or the size: prefix only.
    "vgg11": _torchvision(
        "vgg11", "vgg11-8a719046.pth", sha256="8a719046", size=None, num_params=132_863_336, acc=(69.020, 88.628)
    ),
    # sha256: one public source, a module that pins VGG11_BN_SHA256 next to its download URL; size: none.
    "vgg11_bn": _torchvision(
        "vgg11_bn",
        "vgg11_bn-6002323d.pth",
        sha256="6002323d9413ae02f657473d3ecbbd7f86ee496b8a0dc8dc6140a639a0fcf13d",
        size=None,
        num_params=132_868_840,
        acc=(70.370, 89.810),
    ),
    # No public source gives the full sha256 or the size: prefix only.
    "vgg13": _torchvision(
        "vgg13", "vgg13-19584684.pth", sha256="19584684", size=None, num_params=133_047_848, acc=(69.928, 89.246)
    ),
    "vgg13_bn": _torchvision(
        "vgg13_bn", "vgg13_bn-abd245e5.pth", sha256="abd245e5", size=None, num_params=133_053_736, acc=(71.586, 90.374)
    ),
    # size and sha256: LibreYOLO/libreyolo docs/provenance/vgg.md (files downloaded from PyTorch's
    # model host and checked by SHA-256); the sha256 also in plai-group/ubc_primitives
    # primitives_ubc/cnn/cnn.py (file_digest) and in public backbone catalogs.
    "vgg16": _torchvision(
        "vgg16",
        "vgg16-397923af.pth",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size=553_433_881,
        num_params=138_357_544,
        acc=(71.592, 90.382),
    ),
    "vgg16_bn": _torchvision(
        "vgg16_bn",
        "vgg16_bn-6c64b313.pth",
        sha256="6c64b3138f2f4fcb3bcc4cafde11619c4f440eb1631787e93a682fd88305888a",
        size=553_507_836,
        num_params=138_365_992,
        acc=(73.360, 91.516),
    ),
    # size and sha256: LibreYOLO/libreyolo docs/provenance/vgg.md and public backbone catalogs.
    "vgg19": _torchvision(
        "vgg19",
        "vgg19-dcbb9e9d.pth",
        sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
        size=574_673_361,
        num_params=143_667_240,
        acc=(72.376, 90.876),
    ),
    "vgg19_bn": _torchvision(
        "vgg19_bn",
        "vgg19_bn-c79401a0.pth",
        sha256="c79401a0cf3cb42714e4182f5868c7a6f4f4534f5df9e956e2bb2098de41cbb6",
        size=574_769_405,
        num_params=143_678_248,
        acc=(74.218, 91.842),
    ),
}
"""torchvision's VGG ``IMAGENET1K_V1`` checkpoints by arch."""

ALEXNET = {
    # size and sha256: several public projects that pin torchvision's AlexNet (LPIPS backbone fetch
    # scripts and backbone catalogs) agree on both.
    "alexnet": _torchvision(
        "alexnet",
        "alexnet-owt-7be5be79.pth",
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        size=244_408_911,
        num_params=61_100_840,
        acc=(56.522, 79.066),
    ),
}
"""torchvision's AlexNet ``IMAGENET1K_V1`` checkpoint (the backbone of LPIPS's default net)."""

# ResNet: size and sha256 of V1 files from public backbone catalogs and checkpoint tables that agree
# (resnet18, resnet50: three or more; resnet34: two for the sha256, one for the size); resnet101 V1
# and both V2 files from several independent projects' pinned hashes (resnet50 V2 also its size);
# no public source gives the size of either resnet101 file.
RESNET = {
    "resnet18": _torchvision(
        "resnet18",
        "resnet18-f37072fd.pth",
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        size=46_830_571,
        num_params=11_689_512,
        acc=(69.758, 89.078),
        head="fc.",
    ),
    "resnet34": _torchvision(
        "resnet34",
        "resnet34-b627a593.pth",
        sha256="b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f",
        size=87_319_819,
        num_params=21_797_672,
        acc=(73.314, 91.420),
        head="fc.",
    ),
    "resnet50": _torchvision(
        "resnet50",
        "resnet50-0676ba61.pth",
        sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
        size=102_530_333,
        num_params=25_557_032,
        acc=(76.130, 92.862),
        head="fc.",
    ),
    "resnet50_v2": _torchvision(
        "resnet50",
        "resnet50-11ad3fa6.pth",
        sha256="11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca",
        size=102_540_417,
        num_params=25_557_032,
        acc=(80.858, 95.434),
        head="fc.",
        tag="IMAGENET1K_V2",
    ),
    "resnet101": _torchvision(
        "resnet101",
        "resnet101-63fe2227.pth",
        sha256="63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a",
        size=None,
        num_params=44_549_160,
        acc=(77.374, 93.546),
        head="fc.",
    ),
    "resnet101_v2": _torchvision(
        "resnet101",
        "resnet101-cd907fc2.pth",
        sha256="cd907fc2a0de2292b2ba2b27d2216bc672d84632d1cf20058d01c0c03b5e020e",
        size=None,
        num_params=44_549_160,
        acc=(81.886, 95.780),
        head="fc.",
        tag="IMAGENET1K_V2",
    ),
}
"""torchvision's ResNet checkpoints: ``IMAGENET1K_V1`` of each depth, and ``IMAGENET1K_V2`` of
ResNet-50 and -101 (keys ``resnet50_v2``, ``resnet101_v2``)."""

# ConvNeXt sha256: convnext_tiny and convnext_small from several projects' pinned hashes (the tiny
# file's size from one of them); convnext_base from one public source only. No public source gives
# the size of convnext_small or convnext_base.
CONVNEXT = {
    "convnext_tiny": _torchvision(
        "convnext_tiny",
        "convnext_tiny-983f1562.pth",
        sha256="983f1562536e84ff750a1576fb08e54de751dbf2e17c0d8a4a13704341fdcd3d",
        size=114_419_221,
        num_params=28_589_128,
        acc=(82.520, 96.146),
    ),
    "convnext_small": _torchvision(
        "convnext_small",
        "convnext_small-0c510722.pth",
        sha256="0c510722adfd92966a2bd72b92f785ca05966bbac03cafe2f7a90b1f54bfab9a",
        size=None,
        num_params=50_223_688,
        acc=(83.616, 96.650),
    ),
    "convnext_base": _torchvision(
        "convnext_base",
        "convnext_base-6075fbad.pth",
        sha256="6075fbad31c688f9ed013922a59daf0fc2f4dc12e6e43bc01fa840c7bd1ca2cd",
        size=None,
        num_params=88_591_464,
        acc=(84.062, 96.870),
    ),
}
"""torchvision's ConvNeXt ``IMAGENET1K_V1`` checkpoints (the head is ``classifier.*``: the last
LayerNorm and the linear layer)."""

SQUEEZENET = {
    # size and sha256: three or more public sources agree (the backbone of LPIPS's "squeeze" net).
    "squeezenet1_1": _torchvision(
        "squeezenet1_1",
        "squeezenet1_1-b8a52dc0.pth",
        sha256="b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b",
        size=4_958_839,
        num_params=1_235_496,
        acc=(58.178, 80.624),
    ),
}
"""torchvision's SqueezeNet 1.1 ``IMAGENET1K_V1`` checkpoint (the head is ``classifier.1``, a 1x1 conv)."""
