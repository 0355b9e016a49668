"""2-D convolution combined with FIR up/downsampling (``conv2d_resample``).

``conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)`` produces the same result
as the straightforward chain

    upfirdn2d(x, f, up=up, padding=..., gain=up**2)  ->  conv2d(w, groups)  ->  upfirdn2d(f, down=down)

(with the padding of :func:`upfirdn2d.upsample2d` / :func:`upfirdn2d.downsample2d` folded in), but picks a
cheaper equivalent order for each case: a transposed strided convolution for upsampling, a strided
convolution after the anti-alias filter for downsampling, and filtering on the narrower side of 1x1 layers.
Call signature and numerics follow NVIDIA's stylegan2-ada-pytorch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import upfirdn2d as _fir

__all__ = ["conv2d_resample"]


def canonical_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout with the textbook strides ``(H*W*C, 1, W*C, C)``.

    A channels-last tensor may carry arbitrary strides on size-1 axes (e.g. a batch of one produced by a
    reshape); PyTorch then fails to recognise the layout, and its convolutions fall back to NCHW outputs,
    after which every following layer pays a layout conversion. Re-striding such a tensor is free: it is
    viewed as flat NHWC memory and back (views only, so the backward pass is free as well; ``as_strided``
    would make autograd scatter into a zero-filled buffer).
    """
    x = x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    if x.stride() != (h * w * c, 1, w * c, c):
        x = x.permute(0, 2, 3, 1).reshape(-1).view(n, h, w, c).permute(0, 3, 1, 2)
    return x


def _channels_last_pays(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether to run a CPU convolution in channels-last layout.

    PyTorch's CPU convolutions (oneDNN) are markedly faster on NHWC data for the layer sizes of StyleGAN2:
    transposed (upsampling) and depthwise convolutions several times, 3x3 convolutions and their input
    gradients by 15-40%. The output stays channels-last, so the following element-wise ops, FIR filters
    and convolutions run on NHWC as well and the layout conversion is paid once per network, not per layer.
    Tiny channel counts (RGB inputs) and 1x1 convolutions (a plain matrix product in either layout) are left
    alone: the conversion would not pay for itself there.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return x.shape[1] >= 16 and x.shape[2] * x.shape[3] > 1


def _pointwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """1x1 convolution (groups=1) as one matrix product in the memory layout of ``x``.

    (N, C, H, W) x (O, C, 1, 1) -> (N, O, H, W). A channels-last input gives a channels-last output (and
    channels-last gradients), so NHWC data never gets mixed with NCHW data downstream, where PyTorch's
    element-wise kernels lose their vectorisation; a contiguous input gives a contiguous output.
    """
    n, c, h, wd = x.shape
    w2 = w.reshape(w.shape[0], c)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = torch.matmul(x.permute(0, 2, 3, 1), w2.t())  # (N, H, W, O), contiguous
        return y.permute(0, 3, 1, 2)
    # bmm with the weight broadcast over the batch; torch.matmul would transpose-copy x for (2-D @ 3-D).
    y = torch.bmm(w2.unsqueeze(0).expand(n, -1, -1), x.reshape(n, c, h * wd))  # (N, O, H*W)
    return y.reshape(n, w.shape[0], h, wd)


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> torch.Tensor:
    """Plain or transposed convolution.

    ``flip_weight=True`` means the PyTorch convention (correlation); ``False`` flips the kernel first, i.e.
    performs a true convolution. ``padding`` is ``(py, px)`` as PyTorch expects.
    """
    if not flip_weight:
        w = w.flip([2, 3])
    if not transpose and groups == 1 and w.shape[2] == 1 and w.shape[3] == 1 and stride == 1 and padding == (0, 0):
        return _pointwise(x, w)
    if (transpose or w.shape[2] * w.shape[3] > 1) and _channels_last_pays(x, w):
        x = canonical_channels_last(x)
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | list[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Convolve ``x`` with ``w`` and resample by ``up``/``down`` using the FIR filter ``f``.

    Args:
        x: ``(N, C_in, H, W)`` input.
        w: ``(C_out, C_in // groups, kh, kw)`` weight, same dtype as ``x``.
        f: float32 FIR filter from :func:`upfirdn2d.setup_filter` (``None`` = box of one tap).
        up: integer upsampling factor (>= 1).
        down: integer downsampling factor (>= 1).
        padding: padding of the convolution in the *upsampled* space: int, ``[px, py]`` or ``[x0, x1, y0, y1]``.
        groups: convolution groups (``groups = N`` with batch folded into channels gives a per-sample weight).
        flip_weight: ``True`` = correlation (PyTorch's conv2d), ``False`` = true convolution.
        flip_filter: passed to :func:`upfirdn2d.upfirdn2d`.

    Returns:
        ``(N, C_out, H_out, W_out)``; e.g. ``3x3, padding=1``: ``H * up // down``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("x must be a 4-D tensor")
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError("w must be a 4-D tensor with the dtype of x")
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.dtype != torch.float32):
        raise ValueError("f must be None or a 1-D/2-D float32 tensor")
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError("up and down must be integers >= 1")
    if not (isinstance(groups, int) and groups >= 1):
        raise ValueError("groups must be an integer >= 1")
    out_ch, in_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = _fir._filter_size(f)
    px0, px1, py0, py1 = _fir._parse_padding(padding)

    # Fold in the padding that centres the resampling filter (as upsample2d/downsample2d would).
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    pointwise = kw == 1 and kh == 1
    if pointwise and down > 1 and up == 1:
        # 1x1 conv commutes with the per-channel filter: downsample first, on fewer pixels.
        x = _fir.upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if pointwise and up > 1 and down == 1:
        # ... and upsample last, after the conv has run on the small image.
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return _fir.upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter)
    if down > 1 and up == 1:
        # Filter at full resolution, then a strided conv computes only the kept samples.
        x = _fir.upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        # A transposed conv with stride `up` is zero insertion followed by a conv with the spatially flipped
        # kernel, hence the weight is flipped the other way, and its in/out axes are swapped per group.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        # The transposed conv already produces the full (kh-1)/(kw-1) border; account for it in the padding
        # and let the conv crop whatever both sides would crop anyway.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        crop_x = max(min(-px0, -px1), 0)
        crop_y = max(min(-py0, -py1), 0)
        x = _conv(x, wt, stride=up, padding=(crop_y, crop_x), groups=groups, transpose=True,
                  flip_weight=not flip_weight)
        x = _fir.upfirdn2d(x, f, padding=[px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y],
                           gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = _fir.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        # No resampling and symmetric padding: the convolution pads by itself.
        return _conv(x, w, padding=(py0, px0), groups=groups, flip_weight=flip_weight)
    # General case (asymmetric or negative padding): pad/crop explicitly, then convolve.
    x = _fir.upfirdn2d(x, None, padding=pad)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
