"""featx: sliced VGG feature extractors and perceptual, style and texture losses for SR."""

__version__ = "0.1.0"

__all__ = ["__version__"]
