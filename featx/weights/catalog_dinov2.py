"""The DINOv2 checkpoints featx knows: Meta's released ``.pth`` files of ViT-S/14 and ViT-B/14
(pretrained on LVD-142M, no classification head), with URL, byte size and full sha256."""

from __future__ import annotations

from featx.weights.info import CheckpointInfo

__all__ = ["DINOV2"]

_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2/"
_TRANSFORMS = (
    "RGB in [0, 1], normalised with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), "
    "as DINOv2's own transforms; the ViT reads 14x14 patches"
)


def _dinov2(arch: str, *, sha256: str, size: int, model: str) -> CheckpointInfo:
    file_name = f"{arch}_pretrain.pth"
    return CheckpointInfo(
        kind="backbone",
        arch=arch,
        file_name=file_name,  # the name torch.hub gives it in its checkpoints folder, where featx looks too
        url=f"{_BASE_URL}{arch}/{file_name}",
        sha256=sha256,
        size=size,
        source=f"DINOv2 {model} (Oquab et al. 2023), self-supervised on LVD-142M; Meta's released backbone",
        tag="LVD142M",
        head=(),  # a backbone only: every key belongs to the features
        transforms=_TRANSFORMS,
    )


# sha256: finegrain-ai/refiners src/refiners/conversion/models/dinov2.py (expected_sha256, with these
# URLs) and public checkpoint inventories that recomputed it; sizes: several public projects agree.
# torchvision does not document DINOv2, so num_params and accuracy are left unset.
DINOV2 = {
    "dinov2_vits14": _dinov2(
        "dinov2_vits14",
        sha256="b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9",
        size=88_283_115,
        model="ViT-S/14",
    ),
    "dinov2_vitb14": _dinov2(
        "dinov2_vitb14",
        sha256="0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73",
        size=346_378_731,
        model="ViT-B/14",
    ),
}
"""Meta's DINOv2 backbones by arch (``dinov2_vits14``, ``dinov2_vitb14``), as ``torch.hub`` loads them."""
