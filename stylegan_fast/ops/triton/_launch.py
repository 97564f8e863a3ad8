"""Shared by the Triton kernel modules: launch configurations chosen by a stated rule instead of
autotuning, and the torch.library registration they use.

The elementwise numbers are rules of thumb from the H100's memory system (about 3 TB/s, 132
SMs), borne out by bias_act's forward at the copy bandwidth on an H100; the upfirdn2d tiles
come from `python -m benchmarks.sweep` (benchmarks/NOTES.md).
"""

import threading

import torch
import triton
from triton.runtime.jit import JITFunction

# A streaming op hides DRAM latency with bytes in flight: 4096 elements per program over
# 8 warps is 16 elements (one to four 16-byte vectors) per thread.
LARGE_BLOCK, LARGE_WARPS = 4096, 8
# Below ~1M elements, 4096-element programs would leave SMs idle (1M / 4096 = 256 programs,
# two per SM); smaller blocks spread the work and cost nothing in a launch-bound regime.
SMALL_BLOCK, SMALL_WARPS, SMALL_NUMEL = 1024, 4, 1 << 20
# Largest index an int32 offset can hold; beyond it kernels compute offsets in int64.
INT32_LIMIT = 2**31 - 1

# upfirdn2d: a program computes a [planes, rows, columns] tile of phase positions, each of
# which yields up_x * up_y outputs. (positions per program, warps, widest run of pixels along
# a row (NCHW) or of channels (channels_last)) by (channels_last, upsampling), from the sweep
# on an H100 (benchmarks/NOTES.md, 2026-11-23): channels_last down=2 1.06 ms with 2048-position
# 4-warp tiles against 1.13 with 1024, up=2 0.23 ms with 2048-position 8-warp 128-wide tiles
# against 0.32; for NCHW no setting tried moved the time by more than 3%.
UPFIRDN2D_TILES = {
    (False, False): (1024, 4, 64),
    (False, True): (1024, 4, 64),
    (True, False): (2048, 4, 64),
    (True, True): (2048, 8, 128),
}


# The gather kernels (upfirdn2d, the convolution) read a tap's pixels at offsets of one pixel.
# In channels_last such an offset moves by whole pixels of C channels, so every load is a
# 16-byte vector; in NCHW it moves by one element, so sm_90 code for an NCHW x loads one 2-byte
# element per instruction (the conv's x tile 32 scalar loads per thread and K step where
# channels_last has 4 cp.async; see tests/ops/test_triton_codegen.py). Measured on an H100:
# NCHW 8x slower for the FIR, 1.7-1.8x for the conv (benchmarks/NOTES.md). So by default an
# NCHW x with at least VIA_CHANNELS_LAST_MIN_CHANNELS channels is copied to channels_last
# before the kernel (one read and one write of x); the output keeps the caller's layout, which
# the kernels store through shared memory. Fewer channels stay NCHW: a pixel of 3 channels is
# no vector. The copy costs a pass over x, so reading x as it is stays a candidate: the variant
# 'nchw_direct' of upfirdn2d and modulated_conv2d, the option bit NCHW_DIRECT of their ops.
VIA_CHANNELS_LAST_MIN_CHANNELS = 16
NCHW_DIRECT = 1


def via_channels_last(x: torch.Tensor) -> bool:
    """Whether the default rule reads x through a channels_last copy: x has enough channels and
    is not channels_last already."""
    return x.shape[1] >= VIA_CHANNELS_LAST_MIN_CHANNELS and not x.is_contiguous(memory_format=torch.channels_last)


def kernel_layout(x: torch.Tensor, options: int = 0) -> torch.Tensor:
    """x as a gather kernel reads it: the channels_last copy of via_channels_last's x unless
    `options` has NCHW_DIRECT, else x itself."""
    if not options & NCHW_DIRECT and via_channels_last(x):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def variant_options(op: str, variant: str, options: dict[str, int]) -> int:
    """The option bits of `variant` in a kernel module's table ('' is the default rule, 0)."""
    if variant not in options:
        listed = ", ".join(repr(name) for name in options if name)
        raise ValueError(f"{op} with impl='triton' has no variant {variant!r} (its variants: {listed})")
    return options[variant]


def elementwise_config(numel: int) -> tuple[int, int, bool]:
    """(BLOCK, num_warps, int64 offsets) for a 1-D grid over `numel` elements."""
    block, warps = (LARGE_BLOCK, LARGE_WARPS) if numel >= SMALL_NUMEL else (SMALL_BLOCK, SMALL_WARPS)
    return block, warps, numel + block > INT32_LIMIT


def upfirdn2d_config(planes: int, height: int, width: int, channels_last: bool, upsampling: bool = False
                     ) -> tuple[int, int, int, int]:  # fmt: skip
    """(BLOCK_C, BLOCK_H, BLOCK_W, num_warps) for a tile over a [planes, height, width] grid,
    a plane being one channel of one image.

    The axis contiguous in memory gets up to the widest run (width for NCHW, planes for
    channels_last), the others share the rest of the positions, so that small images put many
    planes in one program instead of launching mostly-masked ones.
    """
    budget, warps, run = UPFIRDN2D_TILES[channels_last, upsampling]
    if channels_last:
        block_c = min(next_power_of_2(planes), run)
        block_w = min(next_power_of_2(width), budget // block_c)
        block_h = min(next_power_of_2(height), budget // (block_c * block_w))
    else:
        block_w = min(next_power_of_2(width), run)
        block_h = min(next_power_of_2(height), budget // block_w)
        block_c = min(next_power_of_2(planes), budget // (block_w * block_h))
    return block_c, block_h, block_w, warps


def is_channels_last(t: torch.Tensor) -> bool:
    """True if the 4-D `t` is channels_last and not also contiguous (a tensor with one channel,
    or 1x1 pixels, is both: it counts as contiguous)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def empty_like_layout(x: torch.Tensor, channels: int, height: int, width: int, dtype: torch.dtype | None = None):
    """An uninitialised [N, channels, height, width] output, channels_last if x is; x's dtype by default."""
    return torch.empty(
        [x.shape[0], channels, height, width],
        dtype=x.dtype if dtype is None else dtype,
        device=x.device,
        memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format,
    )


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints; triton.cdiv in plain Python (triton's costs ~2 µs a call since 3.8)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1); triton.next_power_of_2 in plain Python."""
    return 1 << max(n - 1, 0).bit_length()


class TritonOp:
    """A host function that launches Triton kernels, callable two ways.

    - Registered with torch.library (torch.library.triton_op where torch has it): what
      torch.compile, torch.export and every dispatcher-level tracer see. The custom-op path
      costs ~60 µs of host time per call in eager mode (benchmarks/host_overhead.py), more
      than many of StyleGAN2's small layers take on the GPU.
    - In eager mode, through a plain torch.autograd.Function with the same backward and
      setup_context, and raw kernel launches: what runs when nothing traces.

    `op(*args)` picks the registered op whenever a tracer could be watching (torch.compile,
    any TorchDispatchMode such as fake tensors or make_fx, tensor subclasses), else the eager
    function. Both run the same host code and kernels; the tests run both.
    """

    def __init__(self, name: str, fn):
        self.name = name
        self.fn = fn
        self.op = _register(name, fn)
        self._function = None

    def register_fake(self, fake):
        return self.op.register_fake(fake)

    def register_autograd(self, backward, setup_context):
        """The backward (which should call TritonOps, so that it is differentiable in turn)."""
        self.op.register_autograd(backward, setup_context=setup_context)
        fn = self.fn

        # forward(ctx, *args) calls setup_context itself: with a separate setup_context,
        # autograd.Function.apply binds the arguments through inspect.signature on every call.
        def forward(ctx, *args):
            with raw_launches():
                output = fn(*args)
            setup_context(ctx, args, output)
            return output

        namespace = dict(forward=staticmethod(forward), backward=staticmethod(backward))
        self._function = type(self.name.split("::")[-1], (torch.autograd.Function,), namespace)

    def register_no_derivative(self, reason: str):
        """Mark the op as one that is never differentiated: differentiating it raises, with
        `reason`, instead of silently giving no gradient (and the eager path applies)."""
        name = self.name

        def setup_context(ctx, inputs, output):
            pass

        def backward(ctx, *grads):
            raise NotImplementedError(f"{name} is not differentiable: it has no derivative formula; {reason}")

        self.register_autograd(backward, setup_context)

    def __call__(self, *args):
        if self._function is None or tracing(args):
            return self.op(*args)
        return self._function.apply(*args)


# Tensor types the eager path takes; a subclass (FakeTensor, FunctionalTensor, DTensor, ...)
# goes through the registered op, which knows how to handle it.
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def tracing(args) -> bool:
    """Whether a call with `args` may be traced: under torch.compile, a TorchDispatchMode, or
    with a tensor subclass among the arguments."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0:
        return True
    return any(isinstance(a, torch.Tensor) and type(a) not in _PLAIN_TENSORS for a in args)


_raw = threading.local()


class raw_launches:
    """Within it, wrap_triton returns the kernel itself: the eager path launches directly,
    as triton_op's own eager body does, instead of through the tracing wrapper."""

    def __enter__(self):
        self._outer = getattr(_raw, "on", False)
        _raw.on = True

    def __exit__(self, *exc):
        _raw.on = self._outer


def triton_op(name: str):
    """Decorator: the host function as a TritonOp named `name` ("namespace::op")."""
    return lambda fn: TritonOp(name, fn)


def _register(name: str, fn):
    """torch.library.triton_op where torch has it (2.6+; Inductor then sees the kernels), else
    an opaque custom_op."""
    if hasattr(torch.library, "triton_op"):
        return torch.library.triton_op(name, fn, mutates_args=())
    return torch.library.custom_op(name, fn, mutates_args=())


def wrap_triton(kernel):
    """The kernel, made traceable inside a triton_op where torch supports it; the kernel itself
    within raw_launches(). Under the interpreter (TRITON_INTERPRET=1) @triton.jit gives no
    JITFunction: the kernel is returned as it is and can only run eagerly, on real tensors."""
    if getattr(_raw, "on", False) or not isinstance(kernel, JITFunction) or not hasattr(torch.library, "wrap_triton"):
        return kernel
    return torch.library.wrap_triton(kernel)


def compile_for_gpu(kernel, pointers: dict[str, str], constexprs: dict, arch: int = 90, num_warps: int = 4,
                    multiples_of_16: tuple[str, ...] = ()):  # fmt: skip
    """Compile `kernel` to a cubin for CUDA compute capability `arch` without a GPU: the tests'
    check that the kernels build with the installed Triton, not only run in its interpreter,
    and their look at the machine code (`.asm["sass"]`).

    pointers maps each pointer argument to its element type ('fp16', 'bf16', 'fp32', 'fp64');
    other arguments are constexprs (given), annotated scalars, or i32. As Triton's launcher
    does, pointers are taken as 16-byte aligned (torch's allocations are) and the int
    arguments named in multiples_of_16 as multiples of 16; an int argument equal to 1, which
    the launcher makes a constant, belongs in constexprs. Needs a process without
    TRITON_INTERPRET, where @triton.jit gives a JITFunction.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, attrs = {}, {}
    for index, param in enumerate(kernel.params):
        if param.name in constexprs:
            signature[param.name] = "constexpr"
        elif param.name in pointers:
            signature[param.name] = "*" + pointers[param.name]
            attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[param.name] = param.annotation_type or "i32"
            if param.name in multiples_of_16:
                attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(kernel, signature, constexprs, attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
