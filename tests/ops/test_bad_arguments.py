"""Every public op names a bad argument and what it expects, before computing anything: a
TypeError for the wrong kind of thing, a ValueError for a wrong value."""

import pytest
import torch

from stylegan_fast.ops import (
    bias_act,
    conv2d_resample,
    downsample2d,
    filter2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from stylegan_fast.ops.modulated_conv2d import modulated_conv2d_bias_act

x4 = torch.randn(2, 3, 6, 6)
f4 = setup_filter([1, 3, 3, 1])
w = torch.randn(5, 3, 3, 3)
s = torch.randn(2, 3)

CASES = {
    # bias_act
    "bias_act alpha str": (lambda: bias_act(x4, act="lrelu", alpha="a"), TypeError, "alpha must be a real number, got 'a'"),
    "bias_act gain nan": (lambda: bias_act(x4, gain=float("nan")), ValueError, "gain must be finite, got nan"),
    "bias_act gain inf": (lambda: bias_act(x4, gain=float("inf")), ValueError, "gain must be finite, got inf"),
    "bias_act gain bool": (lambda: bias_act(x4, gain=True), TypeError, "gain must be a real number, got True"),
    "bias_act clamp str": (lambda: bias_act(x4, clamp="1"), TypeError, "clamp must be a real number, got '1'"),
    "bias_act clamp nan": (lambda: bias_act(x4, clamp=float("nan")), ValueError, "clamp must be None or >= 0, got nan"),
    # setup_filter
    "setup_filter str": (lambda: setup_filter("abc"), TypeError, "f must be a number or an array-like of numbers.*'abc'"),
    "setup_filter sums to 0": (lambda: setup_filter([1, -1]), ValueError, "f's taps sum to 0, so it cannot be normalised"),
    "setup_filter nan tap": (lambda: setup_filter([1, float("nan")]), ValueError, "f must have finite taps"),
    "setup_filter gain str": (lambda: setup_filter([1, 1], gain="2"), TypeError, "gain must be a real number, got '2'"),
    "setup_filter normalize str": (lambda: setup_filter([1, 1], normalize="yes"), TypeError, "normalize must be True or False"),
    # upfirdn2d and its helpers
    "upfirdn2d gain str": (lambda: upfirdn2d(x4, f4, gain="2"), TypeError, "gain must be a real number, got '2'"),
    "upfirdn2d gain nan": (lambda: upfirdn2d(x4, f4, padding=2, gain=float("nan")), ValueError, "gain must be finite"),
    "upfirdn2d flip_filter str": (lambda: upfirdn2d(x4, f4, padding=2, flip_filter="no"), TypeError,
                                  "flip_filter must be True or False, got 'no'"),
    "upfirdn2d huge up": (lambda: upfirdn2d(x4, f4, up=10**9), ValueError,
                          r"up=\[1000000000, 1000000000\] with padding=\[0, 0, 0, 0\] makes x of shape \(2, 3, 6, 6\) a "
                          "6000000000x6000000000 image per channel, more elements than a tensor can hold"),
    "upsample2d gain str": (lambda: upsample2d(x4, f4, gain="2"), TypeError, "gain must be a real number"),
    "downsample2d flip str": (lambda: downsample2d(x4, f4, flip_filter="x"), TypeError, "flip_filter must be True or False"),
    "filter2d up float": (lambda: upfirdn2d(x4, f4, up=2.0), TypeError, "up must be an int or a list of 2 ints, got 2.0"),
    "filter2d gain nan": (lambda: filter2d(x4, f4, gain=float("nan")), ValueError, "gain must be finite"),
    # conv2d_resample
    "conv2d_resample flip_weight str": (lambda: conv2d_resample(x4, w, flip_weight="no"), TypeError,
                                        "flip_weight must be True or False, got 'no'"),
    "conv2d_resample flip_filter 2": (lambda: conv2d_resample(x4, w, f4, up=2, flip_filter=2), TypeError,
                                      "flip_filter must be True or False, got 2"),
    # modulated_conv2d
    "modulated_conv2d demodulate str": (lambda: modulated_conv2d(x4, w, s, demodulate="no"), TypeError,
                                        "demodulate must be True or False, got 'no'"),
    "modulated_conv2d flip_weight None": (lambda: modulated_conv2d(x4, w, s, flip_weight=None), TypeError,
                                          "flip_weight must be True or False, got None"),
    "modulated_conv2d fused_modconv str": (lambda: modulated_conv2d(x4, w, s, fused_modconv="auto"), TypeError,
                                           "fused_modconv must be True or False, got 'auto'"),
    "modulated_conv2d_bias_act gain nan": (lambda: modulated_conv2d_bias_act(x4, w, s, gain=float("nan")), ValueError,
                                           "gain must be finite, got nan"),
    "modulated_conv2d_bias_act alpha str": (lambda: modulated_conv2d_bias_act(x4, w, s, act="lrelu", alpha="a"),
                                            TypeError, "alpha must be a real number, got 'a'"),
    "modulated_conv2d_bias_act act": (lambda: modulated_conv2d_bias_act(x4, w, s, act="gelu"), ValueError,
                                      "act must be one of .*got 'gelu'"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_arguments_are_named(case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=message):
        call()


def test_switches_take_numpy_bools_and_0_1():
    import numpy as np

    for flag in (np.bool_(True), 1, True):
        torch.testing.assert_close(modulated_conv2d(x4, w, s, demodulate=flag), modulated_conv2d(x4, w, s))
    torch.testing.assert_close(modulated_conv2d(x4, w, s, fused_modconv=0), modulated_conv2d(x4, w, s, fused_modconv=False))
