"""Upsample, pad, FIR-filter and downsample 2-D feature maps (``upfirdn2d``).

Public API (kept call-compatible with NVIDIA's stylegan2-ada-pytorch so that networks written against
it work unchanged):

* :func:`setup_filter` -- turn a list/array of taps into the float32 filter tensor the other functions take;
* :func:`upfirdn2d` -- the general operation;
* :func:`filter2d`, :func:`upsample2d`, :func:`downsample2d` -- wrappers that choose the padding so that
  the output is centred and has the natural size (same / ``up`` times / ``1/down`` times the input).

Semantics of ``upfirdn2d(x, f, up, down, padding, flip_filter, gain)`` on ``x`` of shape ``(N, C, H, W)``:

1. upsample: after every input sample insert ``up - 1`` zeros (per axis), giving ``(H * up_y, W * up_x)``;
2. pad with zeros by ``padding = [x0, x1, y0, y1]`` (negative values crop);
3. filter every channel with ``f``: a true convolution with ``f`` (so a correlation with the flipped
   filter), or a correlation with ``f`` itself when ``flip_filter=True``; the filter is scaled by ``gain``
   (a 1-D, separable filter is applied once per axis and scaled by ``sqrt(gain)`` each time);
4. downsample: keep every ``down``-th sample, starting with the first.

The output size per axis is ``(in * up + pad0 + pad1 - taps) // down + 1``.

Implementations (``impl``): ``'cuda'`` uses this project's CUDA kernel when ``x`` lives on a GPU and the
extension could be built, and the PyTorch path otherwise; ``'ref'`` always uses the PyTorch path. The
PyTorch path is written for speed on CPUs (see :mod:`torch_utils.ops._upfirdn2d_torch`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

from . import _upfirdn2d_torch as _torch_path

Scaling = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]

__all__ = ["setup_filter", "upfirdn2d", "filter2d", "upsample2d", "downsample2d"]


# ----------------------------------------------------------------------------------------------------------
# Argument helpers.


def _parse_scaling(scaling: Scaling) -> tuple[int, int]:
    """``up``/``down`` as ``(sx, sy)``; an int means the same factor on both axes."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"scaling factors must be >= 1, got {scaling}")
    return sx, sy


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """``padding`` as ``(x0, x1, y0, y1)``; accepts an int, ``[px, py]`` or ``[x0, x1, y0, y1]``."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding}")
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Number of taps ``(fw, fh)``; a 1-D filter is used on both axes, ``None`` means a single tap."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


# ----------------------------------------------------------------------------------------------------------
# Filters.


def setup_filter(
    f,
    device: torch.device = torch.device("cpu"),  # noqa: B008 -- immutable default, matches the public API
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Build the filter tensor expected by :func:`upfirdn2d`.

    Args:
        f: taps as a scalar, 1-D ``[taps]`` or 2-D ``[fh, fw]`` array-like; ``None`` means ``[1]``.
        device: device of the returned tensor.
        normalize: rescale the taps so that they sum to 1 (keeps the DC gain at 1).
        flip_filter: return the taps flipped along every axis.
        gain: overall gain; it is spread over the axes, i.e. the taps are multiplied by ``gain ** (ndim / 2)``.
        separable: keep a 1-D filter 1-D (applied per axis). By default only filters with at least 8 taps
            stay separable -- short filters are expanded to their 2-D outer product.

    Returns:
        float32 tensor of shape ``[taps]`` (separable) or ``[fh, fw]``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be a non-empty scalar, 1-D or 2-D array, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a separable filter must be 1-D")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------------------------------------
# The operation.


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "cuda",
) -> torch.Tensor:
    """Upsample, pad, filter and downsample a batch of images (see the module docstring).

    Args:
        x: ``(N, C, H, W)`` input.
        f: float32 filter from :func:`setup_filter`, ``[taps]`` (separable) or ``[fh, fw]``; ``None`` = identity.
        up: integer upsampling factor, int or ``[ux, uy]``.
        down: integer downsampling factor, int or ``[dx, dy]``.
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]``; applied after upsampling, negative values crop.
        flip_filter: correlate with ``f`` instead of convolving.
        gain: overall gain of the filter.
        impl: ``'cuda'`` (own CUDA kernel for GPU tensors when it builds, else PyTorch) or ``'ref'``.

    Returns:
        ``(N, C, (H * uy + y0 + y1 - fh) // dy + 1, (W * ux + x0 + x1 - fw) // dx + 1)``, dtype of ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("x must be a 4-D tensor (N, C, H, W)")
    if impl not in ("cuda", "ref"):
        raise ValueError(f"impl must be 'cuda' or 'ref', got {impl!r}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.dtype != torch.float32:
        raise ValueError("f must be a float32 tensor with 1 or 2 dimensions (see setup_filter)")
    if f.requires_grad:
        raise ValueError("gradients with respect to the filter are not supported")
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    out_h = (x.shape[2] * upy + pady0 + pady1 - f.shape[0]) // downy + 1
    out_w = (x.shape[3] * upx + padx0 + padx1 - f.shape[-1]) // downx + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d output would be empty ({out_h}x{out_w}); check padding and filter size")

    kernel = _torch_path.kernel
    if impl == "cuda" and x.device.type == "cuda":
        from . import _upfirdn2d_cuda  # local import: keeps CPU-only use free of the build machinery

        if _upfirdn2d_cuda.available():
            kernel = _upfirdn2d_cuda.kernel
    cfg = _FirConfig((upx, upy), (downx, downy), (padx0, padx1, pady0, pady1), bool(flip_filter), float(gain), kernel)
    return _UpFirDn2d.apply(x, f, cfg)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last if ``x`` is laid out that way (and not also plain contiguous), else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _FirConfig:
    """Static arguments of one upfirdn2d application plus the kernel (CPU/PyTorch or CUDA) that runs it."""

    def __init__(self, up, down, pad, flip_filter: bool, gain: float, kernel):
        self.up, self.down, self.pad = up, down, pad
        self.flip_filter, self.gain, self.kernel = flip_filter, gain, kernel

    def transposed(self, in_hw: tuple[int, int], out_hw: tuple[int, int], f: torch.Tensor) -> _FirConfig:
        """The configuration whose output is the gradient with respect to the input of this one.

        Along one axis the op is y[o] = sum_k U[o * down + k - pad0] g[k] (U: zero-stuffed input). Its
        adjoint zero-stuffs dy by ``down``, correlates with the reversed taps (= toggled ``flip_filter``),
        and keeps every ``up``-th sample; the leading padding becomes ``taps - 1 - pad0`` and the trailing
        padding is whatever makes the result exactly as long as the input.
        """
        (ih, iw), (oh, ow) = in_hw, out_hw
        fw, fh = _filter_size(f)
        (upx, upy), (downx, downy), (x0, _, y0, _) = self.up, self.down, self.pad
        pad = (
            fw - 1 - x0,
            iw * upx - ow * downx + x0 - upx + 1,
            fh - 1 - y0,
            ih * upy - oh * downy + y0 - upy + 1,
        )
        return _FirConfig(self.down, self.up, pad, not self.flip_filter, self.gain, self.kernel)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d as an autograd function whose backward is again upfirdn2d (so it is differentiable to any
    order); nothing but the tiny filter is kept for the backward pass, so callers may modify the output in
    place."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, f: torch.Tensor, cfg: _FirConfig) -> torch.Tensor:
        ctx.cfg = cfg
        ctx.f = f
        ctx.in_hw = (x.shape[2], x.shape[3])
        y = cfg.kernel(x, f, cfg.up, cfg.down, cfg.pad, cfg.flip_filter, cfg.gain)
        if y._base is not None:  # a view (e.g. a crop) may not leave a custom Function if it is to be modified
            y = y.clone(memory_format=_memory_format(x))
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        cfg = ctx.cfg.transposed(ctx.in_hw, (dy.shape[2], dy.shape[3]), ctx.f)
        return _UpFirDn2d.apply(dy, ctx.f, cfg), None, None


# ----------------------------------------------------------------------------------------------------------
# Convenience wrappers. Their padding arithmetic centres the filter: for an even number of taps the extra
# sample of padding goes to the leading edge, which matches the published StyleGAN2 models.


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "cuda",
) -> torch.Tensor:
    """Filter ``x`` (N, C, H, W) with ``f``; with ``padding=0`` the output has the input's size."""
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    pad = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "cuda",
) -> torch.Tensor:
    """Upsample ``x`` (N, C, H, W) to (N, C, H * uy, W * ux) with the interpolation filter ``f``.

    The filter gain is multiplied by ``ux * uy`` so that the inserted zeros do not darken the image.
    """
    upx, upy = _parse_scaling(up)
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    pad = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "cuda",
) -> torch.Tensor:
    """Downsample ``x`` (N, C, H, W) to (N, C, H // dy, W // dx) after anti-alias filtering with ``f``."""
    downx, downy = _parse_scaling(down)
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    pad = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)

