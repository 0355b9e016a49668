"""PyTorch (CPU-friendly) kernel of :func:`torch_utils.ops.upfirdn2d.upfirdn2d`; no autograd of its own.

The operation is computed per axis-pair with PyTorch's depthwise convolutions, choosing the variant that
does the least work:

* no upsampling: a depthwise ``conv2d`` whose ``stride`` performs the downsampling, so discarded samples
  are never computed (the literal definition filters at full resolution and throws 3/4 away);
* upsampling: a depthwise ``conv_transpose2d`` with ``stride = up``. A transposed convolution *is* zero
  insertion followed by a convolution, but its implementation skips the inserted zeros, i.e. it is the
  polyphase form of the filter (4x fewer multiply-adds for ``up = 2``) without building the zero-stuffed
  image;
* separable (1-D) filters run as two 1-D passes.

Padding is done by the convolution when it is symmetric, by slicing when it crops, and by ``F.pad`` only for
the asymmetric remainder. The memory format of ``x`` is preserved (channels-last inputs stay channels-last,
which makes PyTorch's depthwise kernels markedly faster on CPU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Pad = tuple[int, int, int, int]


def _crop_or_pad(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Pad (positive) or crop (negative) the last two axes; cropping is a free view."""
    h, w = x.shape[-2:]
    x = x[..., max(-y0, 0): h - max(-y1, 0), max(-x0, 0): w - max(-x1, 0)]
    if x0 > 0 or x1 > 0 or y0 > 0 or y1 > 0:
        x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    return x


def _filter_no_up(x: torch.Tensor, taps: torch.Tensor, down: tuple[int, int], pad: Pad) -> torch.Tensor:
    """Correlate every channel of ``x`` with ``taps`` (kh, kw) after padding; stride = ``down``."""
    x0, x1, y0, y1 = pad
    # Let the convolution do the symmetric part of the padding (no extra copy) ...
    sx = max(min(x0, x1), 0)
    sy = max(min(y0, y1), 0)
    # ... and pad/crop the rest explicitly.
    x = _crop_or_pad(x, x0 - sx, x1 - sx, y0 - sy, y1 - sy)
    c = x.shape[1]
    w = taps.expand(c, 1, -1, -1)
    return F.conv2d(x, w, stride=(down[1], down[0]), padding=(sy, sx), groups=c)


def _filter_up(
    x: torch.Tensor, taps: torch.Tensor, up: tuple[int, int], down: tuple[int, int], pad: Pad
) -> torch.Tensor:
    """Zero-insert by ``up``, pad, correlate with ``taps`` (kh, kw) and keep every ``down``-th sample."""
    (upx, upy), (x0, x1, y0, y1) = up, pad
    n, c, h, w = x.shape
    kh, kw = taps.shape
    # conv_transpose2d convolves the zero-stuffed input with its weight, producing every sample that any
    # tap touches ("full" output, length (in - 1) * up + k). A convolution with the flipped taps is the
    # correlation we want; the requested window then starts k - 1 - pad0 samples into the full output.
    out_h = h * upy + y0 + y1 - kh + 1
    out_w = w * upx + x0 + x1 - kw + 1
    start_y, start_x = kh - 1 - y0, kw - 1 - x0
    end_y = (h - 1) * upy + kh - (start_y + out_h)  # samples of the full output beyond the window's end
    end_x = (w - 1) * upx + kw - (start_x + out_w)
    # The transposed conv's own padding crops both ends symmetrically; the remainder is cropped/padded here.
    cy = max(min(start_y, end_y), 0)
    cx = max(min(start_x, end_x), 0)
    weight = taps.flip([0, 1]).expand(c, 1, -1, -1)
    full = F.conv_transpose2d(x, weight, stride=(upy, upx), padding=(cy, cx), groups=c)
    y = _crop_or_pad(full, cx - start_x, cx - end_x, cy - start_y, cy - end_y)
    if down != (1, 1):
        y = y[:, :, :: down[1], :: down[0]]
    return y


def _run_2d(
    x: torch.Tensor, taps: torch.Tensor, up: tuple[int, int], down: tuple[int, int], pad: Pad
) -> torch.Tensor:
    if up == (1, 1):
        return _filter_no_up(x, taps, down, pad)
    return _filter_up(x, taps, up, down, pad)


def kernel(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    pad: Pad,
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """upfirdn2d of (N, C, H, W) ``x`` with the float32 filter ``f`` ([taps] separable, or [fh, fw]).

    Returns (N, C, out_h, out_w) in the dtype of ``x``; see :func:`torch_utils.ops.upfirdn2d.upfirdn2d`.
    """
    # The filter taps in correlation order (conv2d correlates), with the gain folded in (after the cast, so
    # that float64 inputs get a float64-accurate gain).
    taps = f.to(dtype=x.dtype, device=x.device)
    if gain != 1:
        taps = taps * (gain ** (f.ndim / 2))
    if not flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # Odd strides on size-1 axes hide the layout from PyTorch's kernels: re-stride (views only).
        n, c, h, w = x.shape
        if x.stride() != (h * w * c, 1, w * c, c):
            x = x.permute(0, 2, 3, 1).reshape(-1).view(n, h, w, c).permute(0, 3, 1, 2)
    if taps.ndim == 1:
        x = _run_2d(x, taps[None, :], (upx, 1), (downx, 1), (x0, x1, 0, 0))
        return _run_2d(x, taps[:, None], (1, upy), (1, downy), (0, 0, y0, y1))
    return _run_2d(x, taps, up, down, pad)
