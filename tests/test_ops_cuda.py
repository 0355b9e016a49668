"""Tests of this project's CUDA kernels for upfirdn2d and bias_act.

* ``gpu`` tests run the real kernels (impl='cuda') against the PyTorch path (impl='ref'); they are skipped
  without a CUDA device. They build the extensions first (ninja + nvcc, cached under
  ~/.cache/sgilo/torch_extensions) and fail loudly if that is impossible, rather than falling back.
* ``slow`` emulation tests need no GPU: they compile the kernels' per-element arithmetic
  (``cuda/*_kernel.h``) and the real Python bindings into a CPU extension (``cuda/*_emulation.cpp``, built
  with g++), plug it in where the CUDA extension would go and run the same autograd wrappers, so that the
  index arithmetic, activation derivatives and backward-pass bookkeeping are checked on any machine.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

gpu = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.float64]
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.float64: (1e-10, 1e-10)}


@pytest.fixture(scope="module")
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


@gpu
@pytest.mark.usefixtures("built_plugins")
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


@gpu
@pytest.mark.usefixtures("built_plugins")
def test_upfirdn2d_cuda_channels_last_and_strided():
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).cuda()
    x = torch.randn(2, 8, 16, 16, device="cuda")
    expected = upfirdn2d.upsample2d(x, f, impl="ref")
    _close(upfirdn2d.upsample2d(x.to(memory_format=torch.channels_last), f), expected, torch.float32)
    xs = torch.randn(2, 8, 16, 32, device="cuda")[:, :, :, ::2]
    _close(upfirdn2d.downsample2d(xs, f), upfirdn2d.downsample2d(xs, f, impl="ref"), torch.float32)


@gpu
@pytest.mark.usefixtures("built_plugins")
def test_upfirdn2d_cuda_double_backward():
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).cuda()
    x = torch.randn(1, 2, 6, 7, device="cuda", dtype=torch.float64, requires_grad=True)
    for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d):
        assert torch.autograd.gradcheck(lambda v, fn=fn: fn(v, f), (x,))
        assert torch.autograd.gradgradcheck(lambda v, fn=fn: fn(v, f), (x,))


# ----------------------------------------------------------------------------------------------------------
# bias_act


@gpu
@pytest.mark.usefixtures("built_plugins")
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


@gpu
@pytest.mark.usefixtures("built_plugins")
@pytest.mark.parametrize("act", list(bias_act.activation_funcs))
def test_bias_act_cuda_second_order(act):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 5, device="cuda", dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, x + 0.1, x).requires_grad_(True)  # keep away from kinks at 0
    b = torch.zeros(3, device="cuda", dtype=torch.float64, requires_grad=True)
    fn = lambda v, bias: bias_act.bias_act(v, bias, act=act, impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@gpu
@pytest.mark.usefixtures("built_plugins")
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


@gpu
@pytest.mark.usefixtures("built_plugins")
def test_bias_act_cuda_output_can_be_modified_in_place():
    x = torch.randn(2, 3, 4, 4, device="cuda", requires_grad=True)
    b = torch.randn(3, device="cuda", requires_grad=True)
    y = bias_act.bias_act(x, b, act="lrelu", clamp=1.0)
    y.add_(1.0)
    y.sum().backward()


# ----------------------------------------------------------------------------------------------------------
# conv2d_resample on the GPU (exercises upfirdn2d's CUDA kernel inside the StyleGAN2 combinations)


@gpu
@pytest.mark.usefixtures("built_plugins")
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


# ----------------------------------------------------------------------------------------------------------
# CPU emulation of the kernels (no GPU needed; compiles a C++ extension, hence slow)


@pytest.fixture(scope="module")
def emulated_plugins():
    """Build the CPU emulation of both kernels and install it where the CUDA extensions would be loaded."""
    import shutil

    from torch_utils.ops import _plugin

    if shutil.which("ninja") is None or shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("needs ninja and a C++ compiler")
    modules = {name: _plugin.load_emulation(name) for name in ("upfirdn2d", "bias_act")}
    saved = dict(_plugin._modules)
    _plugin._modules.update(modules)
    yield modules
    _plugin._modules.clear()
    _plugin._modules.update(saved)


def _emulated_upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    from torch_utils.ops import _upfirdn2d_cuda

    cfg = upfirdn2d._FirConfig(upfirdn2d._parse_scaling(up), upfirdn2d._parse_scaling(down),
                               upfirdn2d._parse_padding(padding), flip_filter, gain, _upfirdn2d_cuda.kernel)
    return upfirdn2d._UpFirDn2d.apply(x, f, cfg)


def _emulated_bias_act(x, b, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    from torch_utils.ops import _bias_act_cuda

    spec = bias_act.activation_funcs[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    return _bias_act_cuda.bias_act(x, b, dim, spec.cuda_idx, spec.has_2nd_grad, float(alpha), float(gain),
                                   -1.0 if clamp is None else float(clamp))


@pytest.mark.slow
@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up,down,padding", FIR_CASES)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_kernel_emulated(emulated_plugins, fname, up, down, padding, flip_filter):
    torch.manual_seed(0)
    f = FILTERS[fname]()
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 7, 9, dtype=torch.float64).to(memory_format=fmt).requires_grad_(True)
        y = _emulated_upfirdn2d(x, f, up, down, padding, flip_filter, 1.5)
        y_ref = upfirdn2d.upfirdn2d(x, f, up, down, padding, flip_filter, 1.5, impl="ref")
        _close(y, y_ref, torch.float64)
        dy = torch.randn_like(y)
        _close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0], torch.float64)
    xf = x.detach().float()
    _close(_emulated_upfirdn2d(xf, f, up, down, padding, flip_filter, 1.5),
           upfirdn2d.upfirdn2d(xf, f, up, down, padding, flip_filter, 1.5, impl="ref"), torch.float32)
    xh = x.detach().half()
    _close(_emulated_upfirdn2d(xh, f, up, down, padding, flip_filter, 1.5),
           upfirdn2d.upfirdn2d(xh.double(), f, up, down, padding, flip_filter, 1.5, impl="ref"), torch.float16)


@pytest.mark.slow
def test_upfirdn2d_kernel_emulated_second_order(emulated_plugins):
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for up, down, padding in [(2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (1, 1, [2, 1, 0, 3])]:
        fn = lambda v, up=up, down=down, padding=padding: _emulated_upfirdn2d(v, f, up, down, padding, False, 2.0)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.slow
@pytest.mark.parametrize("act", list(bias_act.activation_funcs))
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_kernel_emulated(emulated_plugins, act, clamp):
    torch.manual_seed(1)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 6, 5, 7, dtype=torch.float64).to(memory_format=fmt).requires_grad_(True)
        b = torch.randn(6, dtype=torch.float64, requires_grad=True)
        for alpha, gain in [(None, None), (0.3, 0.6)]:
            y = _emulated_bias_act(x, b, 1, act, alpha, gain, clamp)
            y_ref = bias_act.bias_act(x, b, 1, act, alpha, gain, clamp, impl="ref")
            _close(y, y_ref, torch.float64)
            dy = torch.randn_like(y)
            for g, g_ref in zip(torch.autograd.grad(y, [x, b], dy), torch.autograd.grad(y_ref, [x, b], dy)):
                _close(g, g_ref, torch.float64)
    x2 = torch.randn(4, 5, 3, dtype=torch.float32)
    b2 = torch.randn(3)
    _close(_emulated_bias_act(x2, b2, 2, act, clamp=clamp), bias_act.bias_act(x2, b2, 2, act, clamp=clamp),
           torch.float32)
    xh = x2.half()
    _close(_emulated_bias_act(xh, b2.half(), 2, act, clamp=clamp),
           bias_act.bias_act(xh.double(), b2.half().double(), 2, act, clamp=clamp), torch.float16)


@pytest.mark.slow
@pytest.mark.parametrize("act", list(bias_act.activation_funcs))
def test_bias_act_kernel_emulated_second_order(emulated_plugins, act):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, x + 0.1, x).requires_grad_(True)  # keep away from kinks at 0
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    fn = lambda v, bias: _emulated_bias_act(v, bias, 1, act, clamp=5.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
