"""The two ways into a Triton op (stylegan_fast.ops.triton._launch.TritonOp): the registered
torch.library op, which tracers see, and the eager autograd.Function, which skips the custom-op
machinery. They must choose correctly and compute the same values and gradients, to the bit
(same host code, same kernels)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stylegan_fast.ops import setup_filter
from stylegan_fast.ops.triton import _implicit_gemm, _launch
from stylegan_fast.ops.triton import bias_act as bias_act_kernels
from stylegan_fast.ops.triton import upfirdn2d as upfirdn2d_kernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def randn(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()


def bias_act_case():
    x, b = randn([2, 5, 3, 4], 0), randn([5], 1)
    return bias_act_kernels._forward_op, (x, b, 1, "tanh", 0.0, 1.3, 0.8), [x, b]


def upfirdn2d_case():
    x = randn([2, 3, 5, 4], 0)
    f = setup_filter([1, 3, 3, 1], device=DEVICE).double()
    return upfirdn2d_kernels._forward_op, (x, f, [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0, 0), [x]


def conv_case():
    x, w, a, s = randn([2, 6, 5, 4], 0), randn([7, 6, 3, 3], 1), randn([2, 6], 2), randn([2, 7], 3)
    noise, bias = randn([2, 7, 5, 4], 4), randn([7], 5)
    args = (x, w, a, s, noise, bias, 1, 1, [1, 1], [5, 4], "lrelu", 0.2, 1.4, None, True, 0)
    return _implicit_gemm._conv_op, args, [x, w, a, s, noise, bias]


CASES = {"bias_act": bias_act_case, "upfirdn2d": upfirdn2d_case, "scaled_conv2d": conv_case}


def first(outputs):
    return outputs[0] if isinstance(outputs, tuple) else outputs


def values_and_two_orders(call, inputs):
    """The output, the gradients of sum(y^2) and the gradients of the sum of their squares."""
    y = first(call())
    grads = torch.autograd.grad(y.square().sum(), inputs, create_graph=True)
    grads2 = torch.autograd.grad(sum(g.square().sum() for g in grads), inputs, allow_unused=True)
    return [y, *grads, *[g for g in grads2 if g is not None]]


@pytest.mark.parametrize("case", CASES)
def test_eager_and_registered_paths_agree_to_the_bit(case):
    op, args, inputs = CASES[case]()
    eager = values_and_two_orders(lambda: op(*args), inputs)
    registered = values_and_two_orders(lambda: op.op(*args), inputs)
    assert "Generated" not in type(first(op(*args)).grad_fn).__name__  # the eager function ran
    assert "Generated" in type(first(op.op(*args)).grad_fn).__name__  # torch.library's autograd ran
    assert len(eager) == len(registered) > 1 + len(inputs)  # second-order gradients were reached
    for e, r in zip(eager, registered):
        assert torch.equal(e, r)


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", CASES)
def test_a_dispatch_mode_sees_the_registered_op(case):
    op, args, _ = CASES[case]()
    with RecordOps() as mode:
        op(*args)
    assert f"{op.name.replace('::', '.')}.default" in mode.ops


def test_fake_tensors_take_the_registered_op():
    from torch._subclasses import FakeTensorMode

    with FakeTensorMode():
        x, b = torch.empty([2, 5, 3, 4]), torch.empty([5])
        y = bias_act_kernels._forward_op(x, b, 1, "lrelu", 0.2, 1.4, None)
    assert y.shape == (2, 5, 3, 4)


def test_tracing_predicate():
    x = torch.zeros(2)
    assert not _launch.tracing((x, torch.nn.Parameter(torch.zeros(2)), None, 1, "lrelu"))
    with RecordOps():
        assert _launch.tracing((x,))

    class Subclass(torch.Tensor):
        pass

    assert _launch.tracing((x, x.as_subclass(Subclass)))


def test_raw_launches_nest():
    kernel = bias_act_kernels._bias_act_forward_kernel
    with _launch.raw_launches():
        with _launch.raw_launches():
            assert _launch.wrap_triton(kernel) is kernel
        assert _launch.wrap_triton(kernel) is kernel
    assert getattr(_launch._raw, "on", False) is False


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 127, 128, 129, 2**20 + 1])
def test_plain_cdiv_and_next_power_of_2_match_tritons(n):
    import triton

    for d in (1, 3, 128):
        assert _launch.cdiv(n, d) == triton.cdiv(n, d)
    if n >= 1:  # triton's is undefined below 1
        assert _launch.next_power_of_2(n) == triton.next_power_of_2(n)
