"""GPU tests: this project's CUDA kernels (impl='cuda') against the PyTorch path (impl='ref').

All tests are marked ``gpu`` and are skipped without a CUDA device. The first test builds the extensions
(ninja + nvcc, cached under ~/.cache/sgilo/torch_extensions) and fails loudly if that is impossible, rather
than letting the ops fall back silently.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.float64]
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.float64: (1e-10, 1e-10)}


@pytest.fixture(scope="module", autouse=True)
def built_plugins():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from torch_utils.ops import _bias_act_cuda, _upfirdn2d_cuda

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a build failure must fail these tests, not fall back
        assert _upfirdn2d_cuda.available(), "the upfirdn2d CUDA extension did not build"
        assert _bias_act_cuda.available(), "the bias_act CUDA extension did not build"


def _close(a, b, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------------------
# upfirdn2d


FILTERS = {
    "binomial4": lambda: upfirdn2d.setup_filter([1, 3, 3, 1]),
    "separable8": lambda: upfirdn2d.setup_filter([1, 2, 3, 4, 4, 3, 2, 1]),
    "asym2d": lambda: torch.tensor([[0.1, 0.7, -0.2, 0.3, 0.5], [0.0, 1.0, 0.2, -0.4, 0.9]]),
}
FIR_CASES = [
    (1, 1, [1, 1, 1, 1]), (2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (2, 2, [1, 2, 3, 4]),
    ([2, 1], [1, 2], [1, 0, 2, 2]), (4, 1, [3, 2, 1, 3]), (1, 1, [-1, 2, 3, -2]), (3, 2, [2, 2, 2, 2]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up,down,padding", FIR_CASES)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_cuda_matches_ref(dtype, fname, up, down, padding, flip_filter):
    torch.manual_seed(0)
    f = FILTERS[fname]().cuda()
    x = torch.randn(2, 5, 13, 17, device="cuda", dtype=dtype, requires_grad=True)
    kw = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
    y_cuda = upfirdn2d.upfirdn2d(x, f, impl="cuda", **kw)
    y_ref = upfirdn2d.upfirdn2d(x.double(), f, impl="ref", **kw)
    _close(y_cuda, y_ref, dtype)
    dy = torch.randn_like(y_cuda)
    (g_cuda,) = torch.autograd.grad(y_cuda, x, dy)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy.double())
    _close(g_cuda, g_ref, dtype)


def test_upfirdn2d_cuda_channels_last_and_strided():
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).cuda()
    x = torch.randn(2, 8, 16, 16, device="cuda")
    expected = upfirdn2d.upsample2d(x, f, impl="ref")
    _close(upfirdn2d.upsample2d(x.to(memory_format=torch.channels_last), f), expected, torch.float32)
    xs = torch.randn(2, 8, 16, 32, device="cuda")[:, :, :, ::2]
    _close(upfirdn2d.downsample2d(xs, f), upfirdn2d.downsample2d(xs, f, impl="ref"), torch.float32)


def test_upfirdn2d_cuda_double_backward():
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).cuda()
    x = torch.randn(1, 2, 6, 7, device="cuda", dtype=torch.float64, requires_grad=True)
    for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d):
        assert torch.autograd.gradcheck(lambda v, fn=fn: fn(v, f), (x,))
        assert torch.autograd.gradgradcheck(lambda v, fn=fn: fn(v, f), (x,))


# ----------------------------------------------------------------------------------------------------------
# bias_act


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(bias_act.activation_funcs))
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_cuda_matches_ref(dtype, act, clamp):
    torch.manual_seed(1)
    x = torch.randn(3, 6, 5, 7, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(6, device="cuda", dtype=dtype, requires_grad=True)
    y_cuda = bias_act.bias_act(x, b, act=act, clamp=clamp, impl="cuda")
    y_ref = bias_act.bias_act(x.double(), b.double(), act=act, clamp=clamp, impl="ref")
    _close(y_cuda, y_ref, dtype)
    dy = torch.randn_like(y_cuda)
    g_cuda = torch.autograd.grad(y_cuda, [x, b], dy)
    g_ref = torch.autograd.grad(y_ref, [x, b], dy.double())
    _close(g_cuda[0], g_ref[0], dtype)
    _close(g_cuda[1], g_ref[1], dtype if dtype != torch.float16 else torch.float16)


@pytest.mark.parametrize("act", list(bias_act.activation_funcs))
def test_bias_act_cuda_second_order(act):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 5, device="cuda", dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, x + 0.1, x).requires_grad_(True)  # keep away from kinks at 0
    b = torch.zeros(3, device="cuda", dtype=torch.float64, requires_grad=True)
    fn = lambda v, bias: bias_act.bias_act(v, bias, act=act, impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_cuda_layouts_and_dims():
    x = torch.randn(2, 6, 5, 7, device="cuda").to(memory_format=torch.channels_last)
    b = torch.randn(6, device="cuda")
    _close(bias_act.bias_act(x, b, act="lrelu"), bias_act.bias_act(x, b, act="lrelu", impl="ref"), torch.float32)
    x2 = torch.randn(4, 9, device="cuda")
    b2 = torch.randn(9, device="cuda")
    _close(bias_act.bias_act(x2, b2, act="lrelu"), bias_act.bias_act(x2, b2, act="lrelu", impl="ref"),
           torch.float32)
    x3 = torch.randn(3, 4, 5, device="cuda")[:, :, ::2]  # not dense: made contiguous internally
    b3 = torch.randn(3, device="cuda")
    _close(bias_act.bias_act(x3, b3, dim=2, act="swish", clamp=0.3),
           bias_act.bias_act(x3, b3, dim=2, act="swish", clamp=0.3, impl="ref"), torch.float32)


def test_bias_act_cuda_output_can_be_modified_in_place():
    x = torch.randn(2, 3, 4, 4, device="cuda", requires_grad=True)
    b = torch.randn(3, device="cuda", requires_grad=True)
    y = bias_act.bias_act(x, b, act="lrelu", clamp=1.0)
    y.add_(1.0)
    y.sum().backward()


# ----------------------------------------------------------------------------------------------------------
# conv2d_resample on the GPU (exercises upfirdn2d's CUDA kernel inside the StyleGAN2 combinations)


@pytest.mark.parametrize("k,up,down,padding,groups", [(3, 2, 1, 1, 1), (3, 2, 1, 1, 2), (3, 1, 2, 1, 1),
                                                     (1, 1, 2, 0, 1), (3, 1, 1, 1, 1)])
def test_conv2d_resample_cuda(k, up, down, padding, groups):
    torch.manual_seed(3)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, dtype=torch.float64)
    expected = conv2d_resample.conv2d_resample(x, w, f, up, down, padding, groups, flip_weight=(up == 1))
    actual = conv2d_resample.conv2d_resample(x.cuda().float(), w.cuda().float(), f.cuda(), up, down, padding,
                                             groups, flip_weight=(up == 1))
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=1e-4, atol=1e-4)
