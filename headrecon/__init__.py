"""headrecon: SHeaP (self-supervised single-image FLAME head reconstruction via 2D Gaussians) in Lightning."""

__version__ = "0.1.0"
