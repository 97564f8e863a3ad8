"""The bytes each op must move and the FLOPs it must do: the floors its times are judged by.

Bytes count each tensor the op must read or write once (an ideal kernel: every input read
once, every output written once, intermediates kept on chip). FLOPs count multiply-adds as
2, for convolutions and FIR filters only: elementwise arithmetic is never the limit of these
ops and is not counted. Sizes: N batch, C (I) in channels, O out channels, H x W input,
Ho x Wo output, k x k weight, fh x fw FIR taps, s bytes per element; |t| is t's bytes.

bias_act
    forward   bytes |x| + |b| + |y|                              FLOPs 0
    backward  bytes |dy| + |x| + |dx| + |db|   (|x| not read for linear without clamp)
conv2d_resample
    forward   bytes |x| + |w| + |y|
              FLOPs 2 N O (C/groups) k^2 P + FIR, P = H W when upsampling (the transposed
              convolution runs on input pixels), else Ho Wo
    backward  bytes |dy| + |x| + |w| + |dx| + |dw|, FLOPs 2x the convolution's (data and
              weight gradients), FIR as forward
upfirdn2d
    forward   bytes |x| + |y|
              FLOPs 2 N C Ho Wo ceil(fh/upy) ceil(fw/upx) for a 2-D filter (polyphase:
              inserted zeros are never multiplied), 2 N C Ho Wo (ceil(fh/upy) + ceil(fw/upx))
              for a separable one
    backward  upfirdn2d with up and down swapped: bytes |dy| + |dx|, FLOPs as forward
              with the roles of x and y exchanged
modulated_conv2d, modulated_conv2d_bias_act (the same plus |bias| and its gradient)
    forward   bytes |x| + |weight| + |styles| + |noise| + |y|
              FLOPs the convolution's (as conv2d_resample, I -> O) + 2 N O I k^2 to
              modulate (x2 more to demodulate)
    backward  bytes |dy| + every input + a gradient for each input that requires one;
              FLOPs 2x forward
any other op (a generic rule, so that a new op is measured before it has its own formula)
    forward   bytes every tensor input + |y|, FLOPs 0
    backward  bytes |dy| + every tensor input + a gradient for each that requires one
Only inputs that require grad get gradients (as captured from the networks); the FIR
filter never does. Forward + backward ("full") is the sum.
"""

from __future__ import annotations

import math

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def numel(shape) -> int:
    return math.prod(shape)


def nbytes(arg: dict | None) -> int:
    """Bytes of a tensor argument spec (0 for None or a non-tensor)."""
    if not arg or "shape" not in arg:
        return 0
    return numel(arg["shape"]) * DTYPE_BYTES[arg["dtype"]]


def _grad_bytes(args: dict, names) -> int:
    return sum(nbytes(args[n]) for n in names if args.get(n) and args[n].get("requires_grad"))


def _fir_macs(planes: int, out_hw: tuple[int, int], taps: tuple[int, int], separable: bool, up=(1, 1)) -> int:
    """Multiply-adds of a FIR filter with `taps` = (fh, fw) producing `out_hw` per plane."""
    th, tw = math.ceil(taps[0] / up[1]), math.ceil(taps[1] / up[0])
    per_pixel = th + tw if separable else th * tw
    return planes * out_hw[0] * out_hw[1] * per_pixel


def _filter_taps(f: dict | None) -> tuple[tuple[int, int], bool]:
    """((fh, fw), separable) of a filter spec; None is a 1x1 filter."""
    if not f or "shape" not in f:
        return (1, 1), False
    shape = f["shape"]
    return ((shape[0], shape[0]), True) if len(shape) == 1 else ((shape[0], shape[1]), False)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def op_cost(op: str, args: dict, out_shape: list[int]) -> dict:
    """{'forward': {'bytes', 'flops'}, 'backward': {...}, 'full': {...}, 'rule'} for one call."""
    y = {"shape": out_shape, "dtype": first_tensor(args)["dtype"]}
    fwd, bwd = _COSTS.get(op, _generic)(args, y)
    full = {k: fwd[k] + bwd[k] for k in fwd}
    return {"forward": fwd, "backward": bwd, "full": full, "rule": op if op in _COSTS else "generic"}


def first_tensor(args: dict) -> dict:
    return next(a for a in args.values() if "shape" in a)


def _generic(args: dict, y: dict):
    inputs = sum(nbytes(a) for a in args.values())
    fwd = {"bytes": inputs + nbytes(y), "flops": 0}
    return fwd, {"bytes": nbytes(y) + inputs + _grad_bytes(args, list(args)), "flops": 0}


def _bias_act(args: dict, y: dict):
    x, b = args["x"], args.get("b")
    linear = args["act"]["value"] == "linear" and args["clamp"]["value"] is None
    fwd = {"bytes": nbytes(x) + nbytes(b) + nbytes(y), "flops": 0}
    bwd_bytes = nbytes(y) + (0 if linear else nbytes(x)) + _grad_bytes(args, ["x", "b"])
    return fwd, {"bytes": bwd_bytes, "flops": 0}


def _upfirdn2d(args: dict, y: dict):
    x = args["x"]
    n, c, h, w = x["shape"]
    taps, separable = _filter_taps(args.get("f"))
    up, down = _pair(args["up"]["value"]), _pair(args["down"]["value"])
    fwd_macs = _fir_macs(n * c, tuple(y["shape"][2:]), taps, separable, up)
    bwd_macs = _fir_macs(n * c, (h, w), taps, separable, down)
    fwd = {"bytes": nbytes(x) + nbytes(y), "flops": 2 * fwd_macs}
    bwd = {"bytes": nbytes(y) + _grad_bytes(args, ["x"]), "flops": 2 * bwd_macs if x.get("requires_grad") else 0}
    return fwd, bwd


def _conv_macs(x: dict, weight_shape: list[int], groups: int, up: int, out_hw) -> int:
    n, _, h, w = x["shape"]
    out_channels, in_per_group, kh, kw = weight_shape
    positions = h * w if up > 1 else out_hw[0] * out_hw[1]
    return n * out_channels * in_per_group * kh * kw * positions


def _resample_fir_macs(x: dict, out_channels: int, taps, separable: bool, up: int, down: int, kernel: int, out_hw) -> int:
    """The reference's FIR work around a convolution: after a transposed convolution on the
    upsampled output; before a strided one (or after a 1x1 one) on the input's channels."""
    n, c, h, w = x["shape"]
    if up > 1:
        return _fir_macs(n * out_channels, out_hw, taps, separable, (up, up) if kernel == 1 else (1, 1))
    if down > 1:
        return _fir_macs(n * c, out_hw if kernel == 1 else (h, w), taps, separable)
    return 0


def _conv2d_resample(args: dict, y: dict):
    x, w = args["x"], args["w"]
    up, down, groups = args["up"]["value"], args["down"]["value"], args["groups"]["value"]
    out_hw = tuple(y["shape"][2:])
    conv = _conv_macs(x, w["shape"], groups, up, out_hw)
    taps, separable = _filter_taps(args.get("f"))
    fir = _resample_fir_macs(x, w["shape"][0], taps, separable, up, down, w["shape"][2], out_hw)
    grads = [n for n in ("x", "w") if args[n].get("requires_grad")]
    fwd = {"bytes": nbytes(x) + nbytes(w) + nbytes(y), "flops": 2 * (conv + fir)}
    bwd_bytes = nbytes(y) + nbytes(x) + nbytes(w) + _grad_bytes(args, ["x", "w"])
    bwd = {"bytes": bwd_bytes, "flops": 2 * (conv * len(grads) + fir)}
    return fwd, bwd


def _modulated_conv2d(args: dict, y: dict):
    x, weight, styles, noise, bias = args["x"], args["weight"], args["styles"], args.get("noise"), args.get("bias")
    up, down = args["up"]["value"], args["down"]["value"]
    out_hw = tuple(y["shape"][2:])
    conv = _conv_macs(x, weight["shape"], 1, up, out_hw)
    taps, separable = _filter_taps(args.get("resample_filter"))
    fir = _resample_fir_macs(x, weight["shape"][0], taps, separable, up, down, weight["shape"][2], out_hw)
    modulate = x["shape"][0] * numel(weight["shape"]) * (3 if args["demodulate"]["value"] else 1)
    inputs = nbytes(x) + nbytes(weight) + nbytes(styles) + nbytes(noise) + nbytes(bias)
    fwd = {"bytes": inputs + nbytes(y), "flops": 2 * (conv + fir + modulate)}
    bwd_bytes = nbytes(y) + inputs + _grad_bytes(args, ["x", "weight", "styles", "noise", "bias"])
    bwd = {"bytes": bwd_bytes, "flops": 2 * fwd["flops"]}
    return fwd, bwd


_COSTS = {
    "bias_act": _bias_act,
    "upfirdn2d": _upfirdn2d,
    "conv2d_resample": _conv2d_resample,
    "modulated_conv2d": _modulated_conv2d,
    "modulated_conv2d_bias_act": _modulated_conv2d,
}


def floor_seconds(cost: dict, copy_bytes_per_s: float, flop_per_s: float) -> float:
    """The time an op cannot beat: its bytes at the copy ceiling or its FLOPs at the matmul
    ceiling, whichever is longer."""
    return max(cost["bytes"] / copy_bytes_per_s, cost["flops"] / flop_per_s)

