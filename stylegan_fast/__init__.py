"""stylegan_fast: StyleGAN2 training and inference on fused GPU kernels."""

__version__ = "0.1.0"
