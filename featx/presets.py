"""Named tap sets and loss settings of published SR and style-transfer methods, each with its source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from featx._checks import check_choice
from featx.backbones.dinov2.names import DINOV2_ARCHS, dinov2_tap_names
from featx.backbones.vgg.layers import ARCHS as VGG_ARCHS
from featx.backbones.vgg.layers import layer_names

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A named set of taps with their weights, as used by a published method.

    Attributes:
        arch: the architecture the method uses.
        layer_weights: ``(tap, weight)`` pairs of the feature (perceptual) term, or of the taps
            an extractor returns for extractor-only presets.
        criterion: distance of the feature term (``None`` for extractor-only presets).
        style_weights: ``(tap, weight)`` pairs of a Gram (style) term, empty when unused.
        pooling: pooling variant the method uses.
        normalize_channels: unit-normalise each feature vector across channels first (LPIPS).
        source: where the numbers come from.
        extractor_options: ``(name, value)`` keyword options of the extractor that the method's code
            implies (for DINOv2: how sizes and position embeddings are handled), empty when none.
    """

    arch: str
    layer_weights: tuple[tuple[str, float], ...]
    criterion: Union[str, None]
    source: str
    style_weights: tuple[tuple[str, float], ...] = ()
    pooling: str = "max"
    normalize_channels: bool = False
    extractor_options: tuple[tuple[str, Any], ...] = ()

    @property
    def taps(self) -> tuple[str, ...]:
        """All taps the preset needs (feature and style terms), in depth order (presets of families
        without a layer table here list them in depth order)."""
        names = [name for name, _ in self.layer_weights + self.style_weights]
        if self.arch in DINOV2_ARCHS:
            return tuple(name for name in dinov2_tap_names(self.arch) if name in names)
        if self.arch in VGG_ARCHS:
            return tuple(name for name in layer_names(self.arch) if name in names)
        return tuple(dict.fromkeys(names))


PRESETS: dict[str, Preset] = {
    # TTSR (Yang et al., CVPR 2020), model/LTE.py: VGG19 features sliced [0:2], [2:7], [7:12],
    # i.e. the outputs of relu1_1, relu2_1 and relu3_1.
    "ttsr_lte": Preset(
        arch="vgg19",
        layer_weights=(("relu1_1", 1.0), ("relu2_1", 1.0), ("relu3_1", 1.0)),
        criterion=None,
        source="TTSR model/LTE.py: slices [0:2], [2:7], [7:12] of vgg19.features",
    ),
    # TTSR model/Vgg19.py keeps features[:30] (relu5_1); loss/loss.py uses MSE on it, and the
    # training options (args.py) weight it with --per_w 1e-2.
    "ttsr": Preset(
        arch="vgg19",
        layer_weights=(("relu5_1", 1e-2),),
        criterion="mse",
        source="TTSR model/Vgg19.py (features[:30]), loss/loss.py PerceptualLoss, args.py --per_w 1e-2",
    ),
    # ESRGAN (Wang et al., ECCVW 2018): features before activation, conv5_4, L1; BasicSR
    # options/train/ESRGAN/train_ESRGAN_x4.yml: layer_weights {conv5_4: 1}, criterion l1.
    "esrgan": Preset(
        arch="vgg19",
        layer_weights=(("conv5_4", 1.0),),
        criterion="l1",
        source="ESRGAN paper sec. 3.3; BasicSR train_ESRGAN_x4.yml perceptual_opt",
    ),
    # Real-ESRGAN options/train_realesrgan_x4plus.yml perceptual_opt layer_weights.
    "real_esrgan": Preset(
        arch="vgg19",
        layer_weights=(("conv1_2", 0.1), ("conv2_2", 0.1), ("conv3_4", 1.0), ("conv4_4", 1.0), ("conv5_4", 1.0)),
        criterion="l1",
        source="Real-ESRGAN options/train_realesrgan_x4plus.yml perceptual_opt",
    ),
    # SRGAN (Ledig et al., CVPR 2017) "VGG54": after the 4th conv (and its ReLU) before the 5th
    # max pool, MSE. The paper also rescales the loss by 1/12.75; apply that as a loss weight.
    "srgan": Preset(
        arch="vgg19",
        layer_weights=(("relu5_4", 1.0),),
        criterion="mse",
        source="SRGAN paper sec. 2.2.2 (VGG5,4)",
    ),
    # Gatys, Ecker & Bethge, CVPR 2016: content relu4_2, style relu1_1..relu5_1 with equal
    # weights w_l = 1/5, average pooling instead of max pooling.
    "gatys": Preset(
        arch="vgg19",
        layer_weights=(("relu4_2", 1.0),),
        criterion="mse",
        style_weights=tuple((f"relu{block}_1", 0.2) for block in range(1, 6)),
        pooling="avg",
        source="Gatys et al., Image Style Transfer Using CNNs, CVPR 2016, sec. 2-3",
    ),
    # LPIPS (Zhang et al., CVPR 2018), VGG16 variant: the last ReLU of each block, features
    # unit-normalised over channels, squared L2. Uncalibrated: no learned linear layer weights.
    "lpips_vgg": Preset(
        arch="vgg16",
        layer_weights=tuple((name, 1.0) for name in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")),
        criterion="l2",
        normalize_channels=True,
        source="LPIPS paper sec. 3 (lin=False 'baseline' variant), lpips/pretrained_networks.py vgg16 slices",
    ),
    # LPIPS, SqueezeNet 1.1 variant: lpips/pretrained_networks.py slices squeezenet1_1().features
    # [0:2], [2:5], [5:8], [8:10], [10:11], [11:12], [12:13], whose ends are relu1, fire3, fire5,
    # fire6, fire7, fire8 and fire9; unit-normalised over channels, squared L2, no learned layers
    # (featx.LPIPS(net="squeeze") is the calibrated metric).
    "lpips_squeeze": Preset(
        arch="squeezenet1_1",
        layer_weights=tuple((name, 1.0) for name in ("relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9")),
        criterion="l2",
        normalize_channels=True,
        source="LPIPS paper sec. 3 (lin=False 'baseline' variant), lpips/pretrained_networks.py squeezenet slices",
    ),
    # dino-perceptual 0.1.3 (PyPI; github.com/Na-VAE/dino-perceptual), dino_perceptual/perceptual.py,
    # DINOPerceptual(model_size="B", version="v2"): facebook/dinov2-base through transformers'
    # Dinov2Model. Every block's hidden state (class token and patch tokens, before the final
    # LayerNorm; layers="all"), each token divided by its L2 norm over channels, squared differences
    # averaged over tokens and channels, then the mean over the 12 blocks: one value per image. Images
    # are [-1, 1] mapped to [0, 1] and ImageNet-normalised, bicubically downscaled when their longer side
    # exceeds target_size=512; transformers resamples the position embeddings with size= bicubic
    # interpolation, and its stride-14 patch convolution drops what is left past the last multiple of 14.
    "dino_perceptual_v2": Preset(
        arch="dinov2_vitb14",
        layer_weights=tuple((f"blocks.{block}.tokens", 1 / 12) for block in range(12)),
        criterion="l2",
        normalize_channels=True,
        extractor_options=(("pos_interpolation", "transformers"), ("remainder", "drop"), ("max_side", 512)),
        source="dino-perceptual 0.1.3, dino_perceptual/perceptual.py: DINOPerceptual(model_size='B', version='v2')",
    ),
}


def get_preset(name: object) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: unknown preset (lists the valid ones, with the closest).

    Example:
        >>> get_preset("esrgan").layer_weights
        (('conv5_4', 1.0),)
    """
    return PRESETS[check_choice("preset", name, tuple(PRESETS))]
