"""Tests of torch_utils.ops against plain, loop-based definitions (CPU, fast).

The definitions below are deliberately naive (explicit zero insertion, explicit padding, one shifted slice
per filter tap) so that they are easy to check by eye; the ops must agree with them to float tolerance.
When ``NVIDIA_STYLEGAN2_ADA`` points at a checkout of NVIDIA's stylegan2-ada-pytorch, the ops are also
compared with its reference implementation.
"""
from __future__ import annotations

import importlib
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

# ----------------------------------------------------------------------------------------------------------
# Plain definitions.


def plain_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Zero-insert, pad/crop, convolve (tap by tap), keep every down-th sample."""
    ux, uy = (up, up) if isinstance(up, int) else up
    dx, dy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding] * 4
    x0, x1, y0, y1 = padding
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones(1, 1)
    f = f.double()
    if f.ndim == 1:  # separable: the 2-D filter is the outer product, with sqrt(gain) on each axis
        f = torch.outer(f, f)
    f = f * gain
    # 1. zero insertion: sample (i, j) goes to (i * uy, j * ux).
    u = x.new_zeros(n, c, h * uy, w * ux)
    for i in range(h):
        for j in range(w):
            u[:, :, i * uy, j * ux] = x[:, :, i, j]
    # 2. pad with zeros, then crop negative paddings.
    p = x.new_zeros(n, c, h * uy + max(y0, 0) + max(y1, 0), w * ux + max(x0, 0) + max(x1, 0))
    p[:, :, max(y0, 0): max(y0, 0) + h * uy, max(x0, 0): max(x0, 0) + w * ux] = u
    p = p[:, :, max(-y0, 0): p.shape[2] - max(-y1, 0), max(-x0, 0): p.shape[3] - max(-x1, 0)]
    # 3. convolution with f: out[o] = sum_k p[o + k] * f[K - 1 - k] (correlation with f when flip_filter).
    fh, fw = f.shape
    k = f if flip_filter else f.flip([0, 1])
    oh, ow = p.shape[2] - fh + 1, p.shape[3] - fw + 1
    out = x.new_zeros(n, c, oh, ow)
    for a in range(fh):
        for b in range(fw):
            out += p[:, :, a: a + oh, b: b + ow] * float(k[a, b])
    # 4. downsample.
    return out[:, :, ::dy, ::dx]


def plain_conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Upsample (with all padding) -> conv -> downsample: the naive order of operations."""
    if isinstance(padding, int):
        padding = [padding] * 4
    elif len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    x = plain_upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2,
                        flip_filter=flip_filter)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = plain_upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def plain_bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    spec = bias_act.activation_funcs[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    y = {
        "linear": lambda v: v,
        "relu": lambda v: torch.where(v > 0, v, torch.zeros_like(v)),
        "lrelu": lambda v: torch.where(v > 0, v, v * alpha),
        "tanh": lambda v: (torch.exp(v) - torch.exp(-v)) / (torch.exp(v) + torch.exp(-v)),
        "sigmoid": lambda v: 1 / (1 + torch.exp(-v)),
        "elu": lambda v: torch.where(v > 0, v, torch.exp(v) - 1),
        "selu": lambda v: 1.0507009873554805 * torch.where(v > 0, v, 1.6732632423543772 * (torch.exp(v) - 1)),
        "softplus": lambda v: torch.log1p(torch.exp(v)),
        "swish": lambda v: v / (1 + torch.exp(-v)),
    }[act](x)
    y = y * gain
    if clamp is not None:
        y = torch.minimum(torch.maximum(y, torch.full_like(y, -clamp)), torch.full_like(y, clamp))
    return y


def assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol)


FILTERS = {
    "none": lambda: None,
    "binomial4": lambda: upfirdn2d.setup_filter([1, 3, 3, 1]),
    "binomial3": lambda: upfirdn2d.setup_filter([1, 2, 1]),
    "separable8": lambda: upfirdn2d.setup_filter([1, 2, 3, 4, 4, 3, 2, 1]),
    "asym2d": lambda: torch.tensor(
        [[0.1, 0.7, -0.2, 0.3, 0.5], [0.0, 1.0, 0.2, -0.4, 0.9], [0.3, 0.2, 0.1, 0.6, -0.8]]
    ),
    "asym1d": lambda: upfirdn2d.setup_filter([0.2, 1.0, -0.3, 0.6, 0.1, 0.9, 0.4, 0.25], normalize=False),
}


# ----------------------------------------------------------------------------------------------------------
# setup_filter.


def test_setup_filter_rules():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert upfirdn2d.setup_filter([1] * 8).shape == (8,)  # >= 8 taps stay separable
    assert upfirdn2d.setup_filter([1, 2, 1], separable=True).shape == (3,)
    assert upfirdn2d.setup_filter([1] * 8, separable=False).shape == (8, 8)
    assert_close(upfirdn2d.setup_filter([1, 3, 3, 1], gain=4).sum(), torch.tensor(4.0))
    assert_close(upfirdn2d.setup_filter([1] * 8, gain=4).sum(), torch.tensor(2.0))  # gain ** (1 / 2) per axis
    assert_close(upfirdn2d.setup_filter([1, 2], normalize=False, flip_filter=True), torch.tensor([[4.0, 2], [2, 1]]))
    assert upfirdn2d.setup_filter(None).shape == (1, 1)
    assert upfirdn2d.setup_filter(2.0).item() == 1.0


# ----------------------------------------------------------------------------------------------------------
# upfirdn2d.


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize(
    "up,down,padding",
    [
        (1, 1, 0), (1, 1, [2, 1, 3, 0]), (2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (2, 2, [1, 2, 3, 4]),
        ([2, 1], 1, [1, 0, 2, 2]), (1, [1, 2], [2, 2, 1, 1]), (4, 1, [3, 2, 1, 3]), (1, 4, [5, 5, 4, 4]),
        (1, 1, [-1, 2, 3, -2]), (2, 1, [-1, 3, 0, -1]), (3, 2, [2, 2, 2, 2]),
    ],
)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_matches_plain(fname, up, down, padding, flip_filter):
    torch.manual_seed(0)
    f = FILTERS[fname]()
    x = torch.randn(2, 3, 9, 11)  # non-square on purpose
    gain = 1.7
    expected = plain_upfirdn2d(x.double(), f, up, down, padding, flip_filter, gain)
    actual = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    assert actual.dtype == x.dtype
    assert_close(actual, expected)
    ref = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="ref")
    assert_close(ref, expected)


@pytest.mark.parametrize("fname", ["binomial4", "separable8", "asym2d", "none"])
def test_wrappers_sizes_and_values(fname):
    torch.manual_seed(1)
    f = FILTERS[fname]()
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    x = torch.randn(2, 4, 8, 12)
    y = upfirdn2d.upsample2d(x, f)
    assert y.shape == (2, 4, 16, 24)
    pad = [(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2]
    assert_close(y, plain_upfirdn2d(x.double(), f, up=2, padding=pad, gain=4))
    y = upfirdn2d.downsample2d(x, f)
    assert y.shape == (2, 4, 4, 6)
    pad = [(fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2]
    assert_close(y, plain_upfirdn2d(x.double(), f, down=2, padding=pad))
    y = upfirdn2d.filter2d(x, f, padding=1)
    assert y.shape == (2, 4, 10, 14)
    pad = [1 + fw // 2, 1 + (fw - 1) // 2, 1 + fh // 2, 1 + (fh - 1) // 2]
    assert_close(y, plain_upfirdn2d(x.double(), f, padding=pad))


def test_upsample_of_constant_is_constant():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    y = upfirdn2d.upsample2d(torch.full((1, 1, 8, 8), 2.0), f)
    assert_close(y[:, :, 2:-2, 2:-2], torch.full((1, 1, 12, 12), 2.0))


def test_upfirdn2d_dtypes_and_layouts():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 5, 8, 8)
    expected = upfirdn2d.upsample2d(x, f)
    assert_close(upfirdn2d.upsample2d(x.double(), f), expected)
    assert upfirdn2d.upsample2d(x.double(), f).dtype == torch.float64
    assert_close(upfirdn2d.upsample2d(x.to(memory_format=torch.channels_last), f), expected)
    assert_close(upfirdn2d.upsample2d(x.transpose(2, 3).contiguous().transpose(2, 3), f), expected)
    assert_close(upfirdn2d.upsample2d(x.bfloat16(), f), expected, rtol=2e-2, atol=5e-2)


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.randn(1, 1, 4, 4)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x[0], f)
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f.double())
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f, impl="triton")
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f, padding=-3)


@pytest.mark.parametrize(
    "fname,up,down,padding",
    [("binomial4", 2, 1, [2, 1, 2, 1]), ("binomial4", 1, 2, [1, 1, 1, 1]), ("asym2d", 2, 2, [1, -1, 2, 0]),
     ("asym1d", [1, 2], [2, 1], [3, 2, 4, 1]), ("binomial3", 1, 1, [1, 1, 1, 1]), ("none", 3, 2, 1)],
)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_gradients(fname, up, down, padding, flip_filter):
    torch.manual_seed(2)
    f = FILTERS[fname]()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)

    def fn(v):
        return upfirdn2d.upfirdn2d(v, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.3)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ----------------------------------------------------------------------------------------------------------
# bias_act.

ACTS = list(bias_act.activation_funcs)


def test_activation_table():
    table = bias_act.activation_funcs
    assert set(table) == {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"}
    assert table["lrelu"].def_alpha == 0.2 and table["lrelu"].def_gain == pytest.approx(math.sqrt(2))
    assert table["relu"].def_gain == pytest.approx(math.sqrt(2)) and table["swish"].def_gain == pytest.approx(
        math.sqrt(2))
    assert all(table[a].def_gain == 1 for a in ["linear", "tanh", "sigmoid", "elu", "selu", "softplus"])
    assert table["lrelu"]["def_alpha"] == 0.2  # dict-style access works too


def _away_from_kinks(shape, b, dim, act, gain, clamp, dtype=torch.float64, seed=0):
    """Inputs whose pre-activation avoids 0 (ReLU kinks) and whose output avoids +-clamp (clamp kinks)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=dtype)
    v = torch.where(v.abs() < 0.05, v.sign() * 0.05 + v, v)
    v = torch.where(v == 0, torch.full_like(v, 0.3), v)
    if clamp is not None:
        y = plain_bias_act(v, None, dim, act, None, gain, None)
        v = torch.where((y.abs() - clamp).abs() < 0.05, v * 0.5, v)
    bshape = [1] * len(shape)
    bshape[dim] = -1
    return (v - b.reshape(bshape)).detach() if b is not None else v


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp", [None, 0.6])
@pytest.mark.parametrize("dim", [1, 2])
def test_bias_act_matches_plain(act, clamp, dim):
    torch.manual_seed(3)
    x = torch.randn(3, 4, 5, 6)
    b = torch.randn(x.shape[dim])
    for gain, alpha in [(None, None), (0.7, 0.1)]:
        expected = plain_bias_act(x.double(), b.double(), dim, act, alpha, gain, clamp)
        assert_close(bias_act.bias_act(x, b, dim, act, alpha, gain, clamp), expected)
        assert_close(bias_act.bias_act(x, b, dim, act, alpha, gain, clamp, impl="ref"), expected)
    assert_close(bias_act.bias_act(x, None, dim, act), plain_bias_act(x.double(), None, dim, act))


def test_bias_act_2d_input_and_defaults():
    x = torch.randn(5, 7)
    b = torch.randn(7)
    assert_close(bias_act.bias_act(x, b, act="lrelu"), F.leaky_relu(x + b, 0.2) * math.sqrt(2))
    assert bias_act.bias_act(x) is x or torch.equal(bias_act.bias_act(x), x)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_bias_act_gradients(act, clamp):
    shape, dim = (2, 3, 4, 3), 1
    b = torch.linspace(-0.5, 0.5, 3, dtype=torch.float64)
    x = _away_from_kinks(shape, b, dim, act, None, clamp)
    x.requires_grad_(True)
    b.requires_grad_(True)

    def fn(v, bias):
        return bias_act.bias_act(v, bias, dim, act, clamp=clamp)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 0.8])
@pytest.mark.parametrize("gain", [None, 0.5, -1.5])
def test_bias_act_piecewise_linear_gradients_without_bias(act, clamp, gain):
    x = _away_from_kinks((2, 3, 4, 3), None, 1, act, gain, clamp).requires_grad_(True)

    def fn(v):
        return bias_act.bias_act(v, None, 1, act, gain=gain, clamp=clamp)

    assert_close(fn(x), plain_bias_act(x, None, 1, act, None, gain, clamp))
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_bias_act_gradients_match_autograd_float32():
    torch.manual_seed(8)
    x = torch.randn(2, 5, 6, 7).to(memory_format=torch.channels_last).requires_grad_(True)
    b = torch.randn(5, requires_grad=True)
    dy = torch.randn(2, 5, 6, 7)
    for act in ACTS:
        for clamp in (None, 0.5):
            got = torch.autograd.grad(bias_act.bias_act(x, b, act=act, clamp=clamp), [x, b], dy)
            want = torch.autograd.grad(plain_bias_act(x, b, 1, act, clamp=clamp), [x, b], dy)
            for g, w in zip(got, want):
                assert_close(g, w)


def test_bias_act_output_can_be_modified_in_place():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    for act in ACTS:
        y = bias_act.bias_act(x, b, act=act, clamp=1.0)
        y.add_(1.0)
        y.sum().backward()


# ----------------------------------------------------------------------------------------------------------
# conv2d_resample.

# (kernel, up, down, padding, groups, flip_weight): the combinations StyleGAN2 uses, plus odd ones.
CONV_CASES = [
    (3, 1, 1, 1, 1, True),  # SynthesisLayer, no resampling
    (3, 2, 1, 1, 1, False),  # SynthesisLayer, up=2 (NVIDIA passes flip_weight = (up == 1))
    (3, 2, 1, 1, 2, False),  # fused modulated conv: groups = batch
    (3, 1, 1, 1, 2, True),
    (1, 1, 1, 0, 1, True),  # ToRGB / FromRGB
    (1, 1, 1, 0, 2, True),
    (3, 1, 2, 1, 1, True),  # discriminator conv1
    (1, 1, 2, 0, 1, True),  # discriminator skip
    (1, 2, 1, 0, 1, True),  # 1x1 upsampling
    (3, 2, 2, 1, 1, True),
    (3, 1, 1, [1, 0, 2, 1], 1, True),  # asymmetric padding -> general path
    (3, 1, 1, [-1, 2, 1, 1], 2, False),
    (4, 2, 1, [1, 2, 0, 3], 1, True),  # even kernel, asymmetric
    (5, 1, 2, 2, 1, False),
]


@pytest.mark.parametrize("k,up,down,padding,groups,flip_weight", CONV_CASES)
@pytest.mark.parametrize("fname", ["binomial4", "asym2d"])
def test_conv2d_resample_matches_plain(k, up, down, padding, groups, flip_weight, fname):
    torch.manual_seed(4)
    f = FILTERS[fname]()
    x = torch.randn(2, 4, 7, 9)
    w = torch.randn(6, 4 // groups, k, k)
    for flip_filter in (False, True):
        expected = plain_conv2d_resample(x.double(), w.double(), f, up, down, padding, groups, flip_weight,
                                         flip_filter)
        actual = conv2d_resample.conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
        assert_close(actual, expected, rtol=1e-5, atol=3e-5)


def test_conv2d_resample_sizes():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(5, 3, 3, 3)
    assert conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1).shape == (2, 5, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1).shape == (2, 5, 4, 4)
    assert conv2d_resample.conv2d_resample(x, w, padding=1).shape == (2, 5, 8, 8)
    assert conv2d_resample.conv2d_resample(x, w[:, :, :1, :1], f, down=2).shape == (2, 5, 4, 4)


@pytest.mark.parametrize(
    "k,up,down,padding,groups", [(3, 2, 1, 1, 2), (3, 1, 2, 1, 1), (1, 1, 2, 0, 1), (3, 1, 1, 1, 1), (1, 2, 1, 0, 1)]
)
def test_conv2d_resample_gradients(k, up, down, padding, groups):
    torch.manual_seed(5)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2 // groups, k, k, dtype=torch.float64, requires_grad=True)

    def fn(v, weight):
        return conv2d_resample.conv2d_resample(v, weight, f, up=up, down=down, padding=padding, groups=groups,
                                               flip_weight=(up == 1))

    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


# ----------------------------------------------------------------------------------------------------------
# fma.


@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 1, 1), (2, 1, 4, 5)), ((3, 1), (1, 4), (4,)),
                                    ((2, 3), (2, 3), (2, 3)), ((1, 3, 1), (2, 1, 4), (1,))])
def test_fma(shapes):
    torch.manual_seed(6)
    a, b, c = (torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes)
    assert_close(fma.fma(a, b, c), a * b + c)
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))


def test_fma_gradients_match_autograd_float32():
    torch.manual_seed(9)
    for shapes in [((2, 3, 4, 5), (2, 3, 1, 1), (2, 1, 4, 5)), ((2, 3, 4, 5), (2, 3, 1, 1), (4, 5))]:
        a, b, c = (torch.randn(s, requires_grad=True) for s in shapes)
        dy = torch.randn(2, 3, 4, 5)
        got = torch.autograd.grad(fma.fma(a, b, c), [a, b, c], dy)
        want = torch.autograd.grad(a * b + c, [a, b, c], dy)
        for g, w in zip(got, want):
            assert_close(g, w)
    a, b = torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(fma.fma(a, b, torch.zeros(1)).sum(), [a, b])
    want = torch.autograd.grad((a * b).sum(), [a, b])
    for g, w in zip(got, want):
        assert_close(g, w)


# ----------------------------------------------------------------------------------------------------------
# Outputs are modified in place by StyleGAN2 code (img.add_(y), x.add_(noise)): that must not break autograd.


def test_outputs_can_be_modified_in_place():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(3, 3, 3, 3, requires_grad=True)
    outs = [
        upfirdn2d.upsample2d(x, f), upfirdn2d.downsample2d(x, f), upfirdn2d.filter2d(x, f),
        conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False),
        conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1),
        conv2d_resample.conv2d_resample(x, w, padding=1), fma.fma(x, x, x),
    ]
    for y in outs:
        y.add_(1.0)
    sum(y.sum() for y in outs).backward()


# ----------------------------------------------------------------------------------------------------------
# Optional comparison with NVIDIA's own code (only when a checkout is configured).


@pytest.fixture(scope="module")
def nvidia_ops():
    root = os.environ.get("NVIDIA_STYLEGAN2_ADA")
    if not root or not os.path.isdir(os.path.join(root, "torch_utils", "ops")):
        pytest.skip("set NVIDIA_STYLEGAN2_ADA to a stylegan2-ada-pytorch checkout to compare with it")
    saved = {k: v for k, v in sys.modules.items() if k == "torch_utils" or k.startswith("torch_utils.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, root)
    try:
        mods = {n: importlib.import_module(f"torch_utils.ops.{n}") for n in
                ["upfirdn2d", "bias_act", "conv2d_resample", "fma"]}
    finally:
        sys.path.remove(root)
        for k in [k for k in sys.modules if k == "torch_utils" or k.startswith("torch_utils.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return mods


def test_against_nvidia(nvidia_ops):
    torch.manual_seed(7)
    nv_fir, nv_ba, nv_conv = nvidia_ops["upfirdn2d"], nvidia_ops["bias_act"], nvidia_ops["conv2d_resample"]
    for taps in ([1, 3, 3, 1], [1, 2, 1], [1, 2, 3, 4, 4, 3, 2, 1]):
        for kw in ({}, {"flip_filter": True, "gain": 2}):
            assert_close(upfirdn2d.setup_filter(taps, **kw), nv_fir.setup_filter(taps, **kw))
    x = torch.randn(2, 6, 9, 11)
    for fname in ["binomial4", "separable8", "asym2d"]:
        f = FILTERS[fname]()
        for up, down, padding in [(2, 1, [2, 1, 2, 1]), (1, 2, [1, 2, 0, 1]), (2, 2, [-1, 2, 3, 0])]:
            for flip in (False, True):
                assert_close(upfirdn2d.upfirdn2d(x, f, up, down, padding, flip, 1.5),
                             nv_fir.upfirdn2d(x, f, up, down, padding, flip, 1.5, impl="ref"))
        for fn in ("upsample2d", "downsample2d", "filter2d"):
            assert_close(getattr(upfirdn2d, fn)(x, f), getattr(nv_fir, fn)(x, f, impl="ref"))
    b = torch.randn(6)
    for act in ACTS:
        for clamp in (None, 0.5):
            assert_close(bias_act.bias_act(x, b, act=act, clamp=clamp),
                         nv_ba.bias_act(x, b, act=act, clamp=clamp, impl="ref"))
    f = FILTERS["binomial4"]()
    for k, up, down, padding, groups, flip_weight in CONV_CASES:
        w = torch.randn(6, 6 // groups, k, k)
        assert_close(conv2d_resample.conv2d_resample(x, w, f, up, down, padding, groups, flip_weight),
                     nv_conv.conv2d_resample(x, w, f, up, down, padding, groups, flip_weight), atol=5e-5)


# ----------------------------------------------------------------------------------------------------------
# Extension build machinery (no compiler is invoked here).


def test_plugin_failure_warns_once_and_falls_back(monkeypatch):
    import warnings

    from torch_utils import custom_ops
    from torch_utils.ops import _plugin

    def broken(*args, **kwargs):
        raise custom_ops.BuildUnavailable("no CUDA toolkit found")

    monkeypatch.setattr(custom_ops, "get_plugin", broken)
    monkeypatch.setattr(_plugin, "_modules", {})
    monkeypatch.setattr(_plugin, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _plugin.load("upfirdn2d") is None
        assert _plugin.load("upfirdn2d") is None
        assert _plugin.load("bias_act") is None
    assert len(caught) == 1 and "no CUDA toolkit found" in str(caught[0].message)


def test_custom_ops_refuses_cuda_build_without_toolkit(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    from torch_utils import custom_ops

    src = tmp_path / "k.cu"
    src.write_text("// empty\n")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    monkeypatch.setenv("SGILO_EXTENSIONS_DIR", str(tmp_path / "cache"))
    with pytest.raises(custom_ops.BuildUnavailable):
        custom_ops.get_plugin("k", [src])


def test_custom_ops_fingerprint_tracks_sources(tmp_path):
    from torch_utils import custom_ops

    a = tmp_path / "a.cpp"
    a.write_text("int x;\n")
    key1 = custom_ops._fingerprint("m", [a], [])
    a.write_text("int y;\n")
    assert custom_ops._fingerprint("m", [a], []) != key1
    assert custom_ops._fingerprint("m", [a], ["-O3"]) != custom_ops._fingerprint("m", [a], [])


def test_batch_of_one_stays_channels_last():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 32, 8, 8).to(memory_format=torch.channels_last)
    x = x.as_strided(x.shape, (32, 1, 256, 32))  # legal but unusual strides on the size-1 batch axis
    w = torch.randn(32, 32, 3, 3)
    for y in (conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False),
              conv2d_resample.conv2d_resample(x, w, f, padding=1), upfirdn2d.filter2d(x, f)):
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_tune_cpu_malloc_is_harmless():
    from torch_utils.ops.cpu_malloc import tune_cpu_malloc

    assert tune_cpu_malloc() in (True, False)
    x = torch.randn(4, 128, 64, 64)
    assert torch.equal(x * 2, x + x)
