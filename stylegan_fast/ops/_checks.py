"""Argument validation shared by the public ops.

Every check raises TypeError (wrong kind of thing) or ValueError (right kind,
wrong value) with a message that names the argument and says what was expected.
"""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name: str, value, ndim: int | tuple[int, ...] | None = None, min_ndim: int | None = None) -> torch.Tensor:
    """Check that `value` is a floating-point tensor of an accepted rank."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.ndim not in allowed:
            expected = " or ".join(f"{n}-D" for n in allowed)
            raise ValueError(f"{name} must be {expected}, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(value.shape)}")
    return value


def shape(name: str, value: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    """Check an exact shape; `what` explains where the expected shape comes from."""
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)} ({what}), got {tuple(value.shape)}")


def same_device(**tensors: torch.Tensor | None) -> None:
    """Check that all given tensors (None entries ignored) live on one device."""
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"tensors must be on the same device, got {listing}")


def positive_pair(name: str, value) -> tuple[int, int]:
    """Parse an up/down factor: an int, or [x, y]; each must be an int >= 1."""
    pair = _int_list(name, value, lengths=(1, 2))
    if len(pair) == 1:
        pair = pair * 2
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1 (an int or [x, y]), got {value!r}")
    return pair[0], pair[1]


def padding4(value) -> tuple[int, int, int, int]:
    """Parse padding: an int, [px, py] or [x0, x1, y0, y1]; negative values crop."""
    pad = _int_list("padding", value, lengths=(1, 2, 4))
    if len(pad) == 1:
        pad = pad * 4
    elif len(pad) == 2:
        pad = [pad[0], pad[0], pad[1], pad[1]]
    return pad[0], pad[1], pad[2], pad[3]


def _int_list(name: str, value, lengths: tuple[int, ...]) -> list[int]:
    items = [value] if _is_int(value) else value
    if not isinstance(items, (list, tuple)) or not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or a list of {_lengths(lengths)} ints, got {value!r}")
    if len(items) not in lengths:
        raise ValueError(f"{name} must be an int or a list of {_lengths(lengths)} ints, got {len(items)} values")
    return [int(v) for v in items]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _lengths(lengths: tuple[int, ...]) -> str:
    return " or ".join(str(n) for n in lengths if n > 1)


def positive_int(name: str, value) -> int:
    """Check an int factor such as groups or a single up/down factor: an int >= 1."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def fir_filter(name: str, value) -> torch.Tensor | None:
    """Check a FIR filter: None (no filtering), or a non-empty 1-D or 2-D floating-point tensor."""
    if value is None:
        return None
    tensor(name, value, ndim=(1, 2))
    if value.numel() == 0:
        raise ValueError(f"{name} must have at least one tap, got shape {tuple(value.shape)}")
    return value


def same_dtype(**tensors: torch.Tensor) -> None:
    """Check that all given tensors have one dtype."""
    if len({t.dtype for t in tensors.values()}) > 1:
        listing = ", ".join(f"{name} is {t.dtype}" for name, t in tensors.items())
        raise TypeError(f"tensors must have the same dtype, got {listing}")


def broadcastable(name: str, value: torch.Tensor, target: tuple[int, ...], what: str) -> None:
    """Check that `value` broadcasts to exactly `target`; `what` explains where `target` comes from."""
    try:
        fits = torch.broadcast_shapes(value.shape, target) == torch.Size(target)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} must broadcast to shape {tuple(target)} ({what}), got {tuple(value.shape)}")


def is_dense(t: torch.Tensor) -> bool:
    """True if `t` covers its memory without gaps or overlaps in some order of its dims
    (contiguous, channels_last, any permutation of those); dims of size 1 are ignored."""
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def boolean(name: str, value) -> bool:
    """Check a switch: True or False (numpy's bools and the ints 0 and 1 too)."""
    numpy_bool = getattr(getattr(value, "dtype", None), "kind", None) == "b" and getattr(value, "ndim", None) == 0
    if (isinstance(value, int) or numpy_bool) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def real(name: str, value, finite: bool = True) -> float:
    """Check a real number (an int or float, not a bool or a string); finite unless told."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value
