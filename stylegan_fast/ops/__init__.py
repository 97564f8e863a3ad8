"""The StyleGAN2 ops: each public function validates its arguments, picks an implementation
('ref', 'triton' or 'cuda'; see `_dispatch`) and runs it. The `_*_ref` functions beside
them are the pure-PyTorch specification."""

from stylegan_fast.ops.bias_act import bias_act
from stylegan_fast.ops.conv2d_resample import conv2d_resample
from stylegan_fast.ops.modulated_conv2d import modulated_conv2d, modulated_conv2d_bias_act
from stylegan_fast.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "modulated_conv2d",
    "modulated_conv2d_bias_act",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
