"""Feature extractors with canonical tap names, cut after the deepest tap, frozen by default.

One module (or folder) per family: :mod:`~featx.backbones.vgg` (layers, extractor, fully
convolutional head), :mod:`~featx.backbones.alexnet`, :mod:`~featx.backbones.squeezenet`,
:mod:`~featx.backbones.dinov2` (on timm's modules), :mod:`~featx.backbones.convnext` (on
torchvision's modules), :mod:`~featx.backbones.resnet` (on torchvision's
blocks), :mod:`~featx.backbones.lte` (TTSR). Shared parts:
:mod:`~featx.backbones.base` (``BackboneFeatures``, the contract every family follows),
:mod:`~featx.backbones.catalog` (every architecture by name: ``build_backbone``),
:mod:`~featx.backbones.taps`, :mod:`~featx.backbones.pooling`, :mod:`~featx.backbones.table`.

Names are imported on first use (PEP 562), so importing the package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx._lazy import lazy_exports

if TYPE_CHECKING:
    from featx.backbones.alexnet import ALEXNET_LAYERS as ALEXNET_LAYERS
    from featx.backbones.alexnet import AlexNetFeatures as AlexNetFeatures
    from featx.backbones.alexnet import AlexNetLayer as AlexNetLayer
    from featx.backbones.alexnet import alexnet_min_input_size as alexnet_min_input_size
    from featx.backbones.alexnet import alexnet_taps as alexnet_taps
    from featx.backbones.base import IMAGENET_MEAN as IMAGENET_MEAN
    from featx.backbones.base import IMAGENET_STD as IMAGENET_STD
    from featx.backbones.base import RANGE_CHECKED_CALLS as RANGE_CHECKED_CALLS
    from featx.backbones.base import BackboneFeatures as BackboneFeatures
    from featx.backbones.base import check_image_batch as check_image_batch
    from featx.backbones.base import input_affine as input_affine
    from featx.backbones.base import run_tapped as run_tapped
    from featx.backbones.catalog import FAMILIES as FAMILIES
    from featx.backbones.catalog import architectures as architectures
    from featx.backbones.catalog import available_taps as available_taps
    from featx.backbones.catalog import build_backbone as build_backbone
    from featx.backbones.catalog import family_of as family_of
    from featx.backbones.convnext.features import ConvNeXtFeatures as ConvNeXtFeatures
    from featx.backbones.convnext.names import CONVNEXT_ARCHS as CONVNEXT_ARCHS
    from featx.backbones.convnext.names import convnext_taps as convnext_taps
    from featx.backbones.dinov2.features import DINOv2Features as DINOv2Features
    from featx.backbones.dinov2.features import dinov2_layout as dinov2_layout
    from featx.backbones.dinov2.features import dinov2_taps as dinov2_taps
    from featx.backbones.dinov2.features import import_timm as import_timm
    from featx.backbones.lte import LTE as LTE
    from featx.backbones.pooling import L2Pool2d as L2Pool2d
    from featx.backbones.pooling import make_pool as make_pool
    from featx.backbones.resnet import RESNET_ARCHS as RESNET_ARCHS
    from featx.backbones.resnet import ResNetFeatures as ResNetFeatures
    from featx.backbones.resnet import resnet_layer_table as resnet_layer_table
    from featx.backbones.resnet import resnet_taps as resnet_taps
    from featx.backbones.squeezenet import FIRE_PARTS as FIRE_PARTS
    from featx.backbones.squeezenet import SQUEEZENET_ALIASES as SQUEEZENET_ALIASES
    from featx.backbones.squeezenet import SQUEEZENET_LAYERS as SQUEEZENET_LAYERS
    from featx.backbones.squeezenet import SqueezeNetFeatures as SqueezeNetFeatures
    from featx.backbones.squeezenet import SqueezeNetLayer as SqueezeNetLayer
    from featx.backbones.squeezenet import squeezenet_min_input_size as squeezenet_min_input_size
    from featx.backbones.squeezenet import squeezenet_output_size as squeezenet_output_size
    from featx.backbones.squeezenet import squeezenet_taps as squeezenet_taps
    from featx.backbones.table import CLASSIFIER as CLASSIFIER
    from featx.backbones.table import HEADS as HEADS
    from featx.backbones.table import LayerRow as LayerRow
    from featx.backbones.table import format_layer_table as format_layer_table
    from featx.backbones.table import layer_table as layer_table
    from featx.backbones.taps import TapInfo as TapInfo
    from featx.backbones.taps import resolve_taps as resolve_taps
    from featx.backbones.taps import select_taps as select_taps
    from featx.backbones.taps import tap_names as tap_names
    from featx.backbones.vgg.features import VGGFeatures as VGGFeatures
    from featx.backbones.vgg.head import ConvHead as ConvHead
    from featx.backbones.vgg.layers import ARCHS as ARCHS
    from featx.backbones.vgg.layers import POOLINGS as POOLINGS
    from featx.backbones.vgg.layers import LayerSpec as LayerSpec
    from featx.backbones.vgg.layers import check_arch as check_arch
    from featx.backbones.vgg.layers import layer_names as layer_names
    from featx.backbones.vgg.layers import layer_specs as layer_specs
    from featx.backbones.vgg.layers import min_input_size as min_input_size

# public name -> defining module
_EXPORTS = {
    "ALEXNET_LAYERS": "featx.backbones.alexnet",
    "ARCHS": "featx.backbones.vgg.layers",
    "AlexNetFeatures": "featx.backbones.alexnet",
    "AlexNetLayer": "featx.backbones.alexnet",
    "BackboneFeatures": "featx.backbones.base",
    "CLASSIFIER": "featx.backbones.table",
    "CONVNEXT_ARCHS": "featx.backbones.convnext.names",
    "ConvHead": "featx.backbones.vgg.head",
    "ConvNeXtFeatures": "featx.backbones.convnext.features",
    "DINOv2Features": "featx.backbones.dinov2.features",
    "FAMILIES": "featx.backbones.catalog",
    "FIRE_PARTS": "featx.backbones.squeezenet",
    "HEADS": "featx.backbones.table",
    "IMAGENET_MEAN": "featx.backbones.base",
    "IMAGENET_STD": "featx.backbones.base",
    "L2Pool2d": "featx.backbones.pooling",
    "LTE": "featx.backbones.lte",
    "LayerRow": "featx.backbones.table",
    "LayerSpec": "featx.backbones.vgg.layers",
    "POOLINGS": "featx.backbones.vgg.layers",
    "RANGE_CHECKED_CALLS": "featx.backbones.base",
    "RESNET_ARCHS": "featx.backbones.resnet.names",
    "ResNetFeatures": "featx.backbones.resnet.features",
    "SQUEEZENET_ALIASES": "featx.backbones.squeezenet",
    "SQUEEZENET_LAYERS": "featx.backbones.squeezenet",
    "SqueezeNetFeatures": "featx.backbones.squeezenet",
    "SqueezeNetLayer": "featx.backbones.squeezenet",
    "TapInfo": "featx.backbones.taps",
    "VGGFeatures": "featx.backbones.vgg.features",
    "alexnet_min_input_size": "featx.backbones.alexnet",
    "alexnet_taps": "featx.backbones.alexnet",
    "architectures": "featx.backbones.catalog",
    "available_taps": "featx.backbones.catalog",
    "build_backbone": "featx.backbones.catalog",
    "check_arch": "featx.backbones.vgg.layers",
    "check_image_batch": "featx.backbones.base",
    "convnext_taps": "featx.backbones.convnext.names",
    "dinov2_layout": "featx.backbones.dinov2.features",
    "dinov2_taps": "featx.backbones.dinov2.features",
    "family_of": "featx.backbones.catalog",
    "format_layer_table": "featx.backbones.table",
    "import_timm": "featx.backbones.dinov2.features",
    "input_affine": "featx.backbones.base",
    "layer_names": "featx.backbones.vgg.layers",
    "layer_specs": "featx.backbones.vgg.layers",
    "layer_table": "featx.backbones.table",
    "make_pool": "featx.backbones.pooling",
    "min_input_size": "featx.backbones.vgg.layers",
    "resolve_taps": "featx.backbones.taps",
    "resnet_layer_table": "featx.backbones.resnet.table",
    "resnet_taps": "featx.backbones.resnet.features",
    "run_tapped": "featx.backbones.base",
    "select_taps": "featx.backbones.taps",
    "squeezenet_min_input_size": "featx.backbones.squeezenet",
    "squeezenet_output_size": "featx.backbones.squeezenet",
    "squeezenet_taps": "featx.backbones.squeezenet",
    "tap_names": "featx.backbones.taps",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
