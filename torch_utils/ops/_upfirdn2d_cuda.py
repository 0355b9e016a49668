"""GPU backend of :func:`torch_utils.ops.upfirdn2d.upfirdn2d`: this project's kernel in ``cuda/upfirdn2d.cu``."""
from __future__ import annotations

import torch

from . import _plugin


def available() -> bool:
    """Whether the extension is built (building it on the first call); warns once if it cannot be."""
    return _plugin.load("upfirdn2d") is not None


def kernel(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    pad: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Run upfirdn2d on (N, C, H, W) CUDA ``x`` without autograd; ``f`` is ``[taps]`` or ``[fh, fw]`` float32."""
    plugin = _plugin.load("upfirdn2d")
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    f = f.to(device=x.device, dtype=torch.float32)
    if f.ndim == 2:
        return plugin.upfirdn2d(x, f, upx, upy, downx, downy, x0, x1, y0, y1, flip_filter, gain)
    # Separable filter: one pass per axis, each carrying sqrt(gain) like the PyTorch path.
    g = gain**0.5
    x = plugin.upfirdn2d(x, f[None, :], upx, 1, downx, 1, x0, x1, 0, 0, flip_filter, g)
    return plugin.upfirdn2d(x, f[:, None], 1, upy, 1, downy, 0, 0, y0, y1, flip_filter, g)
