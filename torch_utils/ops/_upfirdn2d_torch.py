"""PyTorch implementation of :func:`torch_utils.ops.upfirdn2d.upfirdn2d` (arguments already parsed)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _zero_insert_and_pad(x: torch.Tensor, upx: int, upy: int, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Insert ``up - 1`` zeros after every sample of (N, C, H, W) ``x`` and pad/crop by ``(x0, x1, y0, y1)``."""
    n, c, h, w = x.shape
    if upx > 1 or upy > 1:
        # Writing into a strided view of a zero buffer is one pass; autograd records it as a slice copy.
        z = x.new_zeros([n, c, h * upy, w * upx])
        z[:, :, ::upy, ::upx] = x
        x = z
    if any(pad):
        x = F.pad(x, list(pad))  # constant padding accepts negative widths, which crop
    return x


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    pad: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Upsample/pad/filter/downsample (N, C, H, W) ``x``; see :func:`torch_utils.ops.upfirdn2d.upfirdn2d`."""
    upx, upy = up
    downx, downy = down
    c = x.shape[1]
    x = _zero_insert_and_pad(x, upx, upy, pad)
    # conv2d correlates, so the filter is flipped to obtain a convolution unless the caller asked otherwise.
    taps = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    # Downsampling by discarding samples equals a strided convolution, which never computes them.
    if taps.ndim == 2:
        w = taps[None, None].expand(c, 1, -1, -1).contiguous()
        return F.conv2d(x, w, stride=(downy, downx), groups=c)
    wx = taps[None, None, None, :].expand(c, 1, 1, -1).contiguous()
    wy = taps[None, None, :, None].expand(c, 1, -1, 1).contiguous()
    x = F.conv2d(x, wx, stride=(1, downx), groups=c)
    return F.conv2d(x, wy, stride=(downy, 1), groups=c)
