"""Forward operators of the five inverse problems, with a seeded measurement-noise model.

Every operator maps images ``x`` of shape (N, C, H, W) in [-1, 1] to measurements ``y`` (batch first) and offers

- ``A(x)``: the noiseless forward map;
- ``A_adjoint(y)``: its exact transpose (linear operators only);
- ``naive(y)``: a cheap reconstruction in image space (zero-fill, upsampling, grayscale, rescaled Aᵀy);
- ``measure(x, noise_std, generator)``: ``y = A(x) + σ ξ`` with ``ξ`` drawn from ``generator``;
- ``measurement_image(y)``: a picture of the measurements to save as a PNG;
- ``loss(x_hat, y)``: per-sample mean squared error over the observed entries, shape (N,).

The registry ``OPERATORS`` is keyed by the published ``operators.operator_type`` names; ``build_operator`` reads
the ``operators`` config section. Keys per type (``None``/absent means the default):

=============  ==================================================================================================
type           keys
=============  ==================================================================================================
all            ``noise_std`` (float ≥ 0, default 0): the σ that ``measure`` uses when it is not given explicitly
dummy          (denoising: identity) —
downsampler    ``factor`` (int ≥ 1 dividing the resolution, default 4)
colorizer      — (needs ``channels == 3``)
circulant      ``fraction`` (float in (0, 1], default 0.1) of the C·H·W entries to keep, or ``m`` (an int count)
inpainting     ``mask``: ``center_box`` (default) | ``random_box`` | ``random_pixels`` | ``file`` | ``black_pixels``;
               ``box_size`` (boxes: a number in (0, 1) is a fraction of the side, an integer ≥ 1 is pixels;
               default 0.5); ``observed_fraction`` (random_pixels: float in (0, 1], default 0.25);
               ``mask_path`` (file: a PNG/JPEG, white = observed); ``black_threshold`` (black_pixels: a pixel is
               missing when all its channels are ≤ this value in [0, 1] units, default 0.02)
=============  ==================================================================================================

The base class ``Operator`` (the noise model and the data fit) is in :mod:`inverse.operator_base`.

Random parts (box position, pixel masks, circulant signs, filter and rows) come from a CPU ``torch.Generator``
seeded with ``seed``, so an operator is identical on every device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inverse.operator_base import Operator, OperatorConfigError, cpu_generator, rows_for
from utils import resolve_path

__all__ = [
    "OPERATORS",
    "MASK_KINDS",
    "OperatorConfigError",
    "Operator",
    "Denoising",
    "Downsampler",
    "Colorizer",
    "Circulant",
    "Inpainting",
    "bicubic_kernel",
    "resample_matrix",
    "build_operator",
]

# ITU-R BT.601 luma weights, as in the published colorization operator.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)
MASK_KINDS = ("center_box", "random_box", "random_pixels", "file", "black_pixels")


# ---------------------------------------------------------------------------------------------------------------------
# Denoising.


class Denoising(Operator):
    """Identity forward map (denoising: ``y = x + σ ξ``); measurements (N, C, H, W)."""

    name = "dummy"

    def A(self, x: Tensor) -> Tensor:
        self._check_image(x)
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    def naive(self, y: Tensor) -> Tensor:
        return y.clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Super-resolution.


def bicubic_kernel(t: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel (support [-2, 2]); a = -0.5 is the PIL/Matlab choice (torch uses -0.75)."""
    t = t.abs()
    t2, t3 = t * t, t * t * t
    near = (a + 2) * t3 - (a + 3) * t2 + 1
    far = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _reflect_index(j: int, n: int) -> int:
    """Index ``j`` folded into [0, n) by mirror reflection without repeating the edge (torch's ``reflect``);
    repeated folding keeps kernels wider than the image well defined."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    j = j % period
    return j if j < n else period - j


def resample_matrix(n_in: int, n_out: int, a: float = -0.5) -> Tensor:
    """The (n_out, n_in) float64 matrix of 1-D bicubic resampling with reflect padding folded in.

    Output sample i sits at input coordinate ``c = (i + 0.5)·n_in/n_out − 0.5`` (pixel centres aligned, as in
    PIL and ``align_corners=False``). When reducing, the kernel is stretched by the scale ``s = n_in/n_out``
    (anti-aliasing, as PIL and Matlab's imresize do), so it spans 4s input pixels; each row is normalised to sum
    to one so that constants are preserved exactly.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        c = (i + 0.5) * scale - 0.5
        taps = torch.arange(math.floor(c - 2 * support) + 1, math.ceil(c + 2 * support), dtype=torch.float64)
        w = bicubic_kernel((taps - c) / support, a)
        w = w / w.sum()
        for j, wj in zip(taps.tolist(), w.tolist()):
            m[i, _reflect_index(int(j), n_in)] += wj
    return m


class Downsampler(Operator):
    """Anti-aliased bicubic (a = −0.5) downsampling by an integer ``factor`` with reflect padding.

    The map is separable, ``y = D x Dᵀ`` per channel with ``D`` from :func:`resample_matrix`, so the adjoint is
    the exact transpose ``Dᵀ y D``. Measurements (N, C, H/f, W/f); naive reconstruction = bicubic upsampling.
    """

    name = "downsampler"

    def __init__(self, resolution: int, channels: int = 3, noise_std: float = 0.0, factor: int = 4) -> None:
        super().__init__(resolution, channels, noise_std)
        self.factor = int(factor)
        low = resolution // self.factor
        # Stored in float64 and cast on use: float64 tests see the exact map, float32 callers lose nothing.
        self.register_buffer("down", resample_matrix(resolution, low), persistent=False)
        self.register_buffer("up", resample_matrix(low, resolution), persistent=False)

    @staticmethod
    def _separable(m: Tensor, x: Tensor) -> Tensor:
        m = m.to(dtype=x.dtype)
        return torch.matmul(torch.matmul(m, x), m.transpose(0, 1))

    def A(self, x: Tensor) -> Tensor:
        self._check_image(x)
        return self._separable(self.down, x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._separable(self.down.transpose(0, 1), y)

    def naive(self, y: Tensor) -> Tensor:
        return self._separable(self.up, y).clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"


# ---------------------------------------------------------------------------------------------------------------------
# Colorization.


class Colorizer(Operator):
    """RGB -> luma ``0.2989 R + 0.5870 G + 0.1140 B``; measurements (N, 1, H, W); naive = gray repeated to RGB."""

    name = "colorizer"

    def __init__(self, resolution: int, channels: int = 3, noise_std: float = 0.0) -> None:
        super().__init__(resolution, channels, noise_std)
        self.register_buffer("weights", torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1),
                             persistent=False)

    def A(self, x: Tensor) -> Tensor:
        self._check_image(x)
        return (x * self.weights.to(x.dtype)).sum(1, keepdim=True)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y * self.weights.to(y.dtype)

    def naive(self, y: Tensor) -> Tensor:
        # The weights sum to 0.9999, so a gray image maps back to (almost exactly) itself.
        return y.expand(-1, 3, -1, -1).clamp(-1.0, 1.0)

    def measurement_image(self, y: Tensor) -> Tensor:
        # Gray repeated to RGB: the same PNG to the eye, and RGB networks (the LPIPS term) can take it.
        return self.naive(y)


# ---------------------------------------------------------------------------------------------------------------------
# Compressed sensing.


class Circulant(Operator):
    """Partial random circulant measurements: ``y = P_Ω (g ⊛ (s ⊙ vec(x)))``.

    ``vec(x)`` flattens each image to n = C·H·W entries; ``s`` are random ±1 signs, ``g`` a random Gaussian filter
    (i.i.d. N(0, 1/n), so each row has unit expected squared norm and the per-entry loss is on the scale of a
    pixel MSE whatever m is), ``⊛`` circular convolution computed with the FFT, and ``Ω`` m distinct random
    output indices (sorted). Measurements (N, m). Naive reconstruction ``(n/m) Aᵀy``, since E[AᵀA] = (m/n) I.
    """

    name = "circulant"

    def __init__(self, resolution: int, channels: int = 3, noise_std: float = 0.0, m: int = 1,
                 seed: int = 0) -> None:
        super().__init__(resolution, channels, noise_std)
        n = channels * resolution * resolution
        self.n, self.m = n, int(m)
        g = cpu_generator(seed)
        signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.int64).to(torch.float64) * 2 - 1
        filt = torch.randn(n, generator=g, dtype=torch.float64) / math.sqrt(n)
        idx = torch.randperm(n, generator=g)[: self.m].sort().values
        self.register_buffer("signs", signs, persistent=False)
        self.register_buffer("filter", filt, persistent=False)
        # The filter's spectrum, computed once (complex128) and cast per call: one FFT fewer per evaluation.
        self.register_buffer("spectrum", torch.fft.rfft(filt), persistent=False)
        self.register_buffer("indices", idx, persistent=False)

    def _spectrum(self, dtype: torch.dtype) -> Tensor:
        return self.spectrum.to(torch.complex128 if dtype == torch.float64 else torch.complex64)

    def A(self, x: Tensor) -> Tensor:
        self._check_image(x)
        v = x.flatten(1) * self.signs.to(x.dtype)
        spec = self._spectrum(x.dtype)
        conv = torch.fft.irfft(torch.fft.rfft(v) * spec, n=self.n)
        return conv[:, self.indices]

    def A_adjoint(self, y: Tensor) -> Tensor:
        full = y.new_zeros(y.shape[0], self.n)
        full[:, self.indices] = y
        # The transpose of a circular convolution is a circular correlation: conjugate the filter's spectrum.
        spec = self._spectrum(y.dtype)
        corr = torch.fft.irfft(torch.fft.rfft(full) * spec.conj(), n=self.n)
        v = corr * self.signs.to(y.dtype)
        return v.view(y.shape[0], self.channels, self.resolution, self.resolution)

    def naive(self, y: Tensor) -> Tensor:
        return (self.A_adjoint(y) * (self.n / self.m)).clamp(-1.0, 1.0)

    def measurement_image(self, y: Tensor) -> Tensor:
        # The measurements themselves are not an image; show what they say about it.
        return self.naive(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m} ({self.m / self.n:.4g} of {self.n})"


# ---------------------------------------------------------------------------------------------------------------------
# Inpainting.


class Inpainting(Operator):
    """Pixel mask: ``y = M ⊙ x``; measurements (N, C, H, W) with zeros where unobserved.

    ``mask`` is (M, 1, H, W) with 1 = observed, shared by all channels. M = 1 applies one mask to every image;
    M > 1 holds one mask per image (black-pixel masks), and a batch of N = M·K images (K chains per image) uses
    them image-major, i.e. laid out as ``x.repeat_interleave(K, 0)``. A ``black_pixels`` operator has no mask
    until :meth:`set_mask_from_image` is called (``build_operator(..., reference=x)`` does it).
    """

    name = "inpainting"

    def __init__(self, resolution: int, channels: int = 3, noise_std: float = 0.0, mask: Tensor | None = None,
                 kind: str = "center_box", black_threshold: float = 0.02) -> None:
        super().__init__(resolution, channels, noise_std)
        self.kind = kind
        self.black_threshold = float(black_threshold)
        self.register_buffer("mask", None if mask is None else mask.to(torch.float32), persistent=False)

    # -- masks ---------------------------------------------------------------------------------------------------
    def set_mask_from_image(self, x: Tensor) -> Tensor:
        """Mark as missing the pixels of ``x`` (N, C, H, W) in [-1, 1] whose channels are all black (≤
        ``black_threshold`` in [0, 1] units), one mask per image; returns the mask (N, 1, H, W)."""
        self._check_image(x)
        unit = (x.detach() + 1) / 2
        observed = (unit > self.black_threshold).any(dim=1, keepdim=True)
        if not bool(observed.flatten(1).any(1).all()):
            raise OperatorConfigError("inpainting mask 'black_pixels': an input image is entirely black, "
                                      "so nothing is observed.")
        self.mask = observed.to(dtype=torch.float32)
        return self.mask

    def _mask_for(self, t: Tensor) -> Tensor:
        if self.mask is None:
            raise RuntimeError("inpainting mask 'black_pixels' is not set yet: call set_mask_from_image(x) or pass "
                               "reference= to build_operator.")
        return rows_for(self.mask, t, "inpainting")

    @property
    def observed_fraction(self) -> Tensor:
        """Fraction of observed pixels per mask, shape (M,)."""
        if self.mask is None:
            raise RuntimeError("inpainting mask 'black_pixels' is not set yet.")
        return self.mask.flatten(1).mean(1)

    # -- the map -------------------------------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        self._check_image(x)
        return x * self._mask_for(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y * self._mask_for(y)

    def restrict_to_observed(self, noise: Tensor) -> Tensor:
        return noise * self._mask_for(noise)

    def _observed_count(self, y: Tensor) -> Tensor:
        return self._mask_for(y).flatten(1).sum(1).expand(y.shape[0]) * y.shape[1]

    def naive(self, y: Tensor) -> Tensor:
        # Zero-fill: unobserved pixels become 0, the middle gray of [-1, 1].
        return (y * self._mask_for(y)).clamp(-1.0, 1.0)

    def measurement_image(self, y: Tensor) -> Tensor:
        # Unobserved pixels are drawn black, so the saved picture can be fed back in with mask 'black_pixels'.
        mask = self._mask_for(y)
        return (y * mask - (1 - mask)).clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask={self.kind!r}"


def _box_side(value: Any, resolution: int) -> int:
    """``box_size``: a number in (0, 1) is a fraction of the side, an integer in [1, resolution] is pixels."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OperatorConfigError(f"operators.box_size must be a number, got {value!r}.")
    if 0 < value < 1:
        return max(1, round(value * resolution))
    if float(value).is_integer() and 1 <= value <= resolution:
        return int(value)
    raise OperatorConfigError(f"operators.box_size must be a fraction in (0, 1) or a whole number of pixels in "
                              f"[1, {resolution}], got {value!r}.")


def _mask_from_file(path: Any, resolution: int) -> Tensor:
    """A mask image (any mode) -> (1, 1, R, R) with 1 where the image is light (≥ 128 of 255), nearest-resized."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise OperatorConfigError("inpainting mask 'file' needs operators.mask_path.")
    p = resolve_path(str(path))
    if not Path(p).is_file():
        raise OperatorConfigError(f"inpainting mask file not found: {p}.")
    try:
        with Image.open(p) as img:
            gray = img.convert("L").resize((resolution, resolution), Image.Resampling.NEAREST)
    except (UnidentifiedImageError, OSError) as exc:
        raise OperatorConfigError(f"inpainting mask file {p} is not a readable image ({exc}).") from None
    mask = torch.from_numpy((np.asarray(gray) >= 128).astype(np.float32))[None, None]
    if mask.sum() == 0:
        raise OperatorConfigError(f"inpainting mask file {p} observes no pixel (it is all dark).")
    return mask


def _make_mask(kind: str, cfg: Mapping, resolution: int, seed: int) -> Tensor | None:
    r = resolution
    if kind in ("center_box", "random_box"):
        side = _box_side(_get(cfg, "box_size", 0.5), r)
        if kind == "center_box":
            top = left = (r - side) // 2
        else:
            g = cpu_generator(seed)
            top, left = (int(v) for v in torch.randint(0, r - side + 1, (2,), generator=g))
        mask = torch.ones(1, 1, r, r)
        mask[..., top : top + side, left : left + side] = 0
        if mask.sum() == 0:
            raise OperatorConfigError("operators.box_size covers the whole image, so nothing is observed.")
        return mask
    if kind == "random_pixels":
        frac = _fraction(cfg, "observed_fraction", 0.25)
        count = max(1, round(frac * r * r))
        # An exact count (not Bernoulli draws), so the observed fraction is what was asked for.
        keep = torch.randperm(r * r, generator=cpu_generator(seed))[:count]
        mask = torch.zeros(r * r)
        mask[keep] = 1
        return mask.view(1, 1, r, r)
    if kind == "file":
        return _mask_from_file(_get(cfg, "mask_path", None), r)
    return None  # black_pixels: set from the input images


# ---------------------------------------------------------------------------------------------------------------------
# Building from a config.

OPERATORS: dict[str, type[Operator]] = {
    "dummy": Denoising,
    "downsampler": Downsampler,
    "circulant": Circulant,
    "colorizer": Colorizer,
    "inpainting": Inpainting,
}


def _get(cfg: Mapping, key: str, default: Any) -> Any:
    value = cfg.get(key, None) if cfg is not None else None
    return default if value is None else value


def _fraction(cfg: Mapping, key: str, default: float) -> float:
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise OperatorConfigError(f"operators.{key} must be a fraction in (0, 1], got {value!r}.")
    return float(value)


def build_operator(cfg: Mapping, resolution: int, channels: int = 3, device: str | torch.device = "cpu",
                   seed: int = 0, reference: Tensor | None = None) -> Operator:
    """Build the operator named by ``cfg['operator_type']`` (keys: see the module docstring).

    Args:
        cfg: the ``operators`` config section (a dict or an OmegaConf ``DictConfig``).
        resolution: image side R (images are R×R).
        channels: image channels C (3, or 1 for grayscale; colorization needs 3).
        device: where the operator's buffers live.
        seed: seeds every random part of the operator.
        reference: input images (N, C, R, R) in [-1, 1]; needed by the inpainting mask ``black_pixels``, which
            marks their black pixels as missing (otherwise call ``op.set_mask_from_image(x)`` later).
    Raises:
        OperatorConfigError (a ValueError): an unknown type or a bad setting, with one clear sentence.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise OperatorConfigError(f"resolution must be a positive integer, got {resolution!r}.")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise OperatorConfigError(f"channels must be a positive integer, got {channels!r}.")
    kind = _get(cfg, "operator_type", None)
    if kind not in OPERATORS:
        raise OperatorConfigError(f"unknown operators.operator_type {kind!r}; valid types are: "
                                  f"{', '.join(sorted(OPERATORS))}.")
    noise_std = _get(cfg, "noise_std", 0.0)
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not (
            math.isfinite(noise_std) and noise_std >= 0):
        raise OperatorConfigError(f"operators.noise_std must be a finite number >= 0, got {noise_std!r}.")
    common = {"resolution": resolution, "channels": channels, "noise_std": float(noise_std)}

    op: Operator
    if kind == "dummy":
        op = Denoising(**common)
    elif kind == "colorizer":
        if channels != 3:
            raise OperatorConfigError(f"operator_type 'colorizer' needs 3-channel (RGB) images, got {channels}.")
        op = Colorizer(**common)
    elif kind == "downsampler":
        factor = _get(cfg, "factor", 4)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not float(factor).is_integer() \
                or factor < 1:
            raise OperatorConfigError(f"operators.factor must be a positive integer, got {factor!r}.")
        if resolution % int(factor):
            raise OperatorConfigError(f"operators.factor {int(factor)} does not divide the resolution {resolution}.")
        op = Downsampler(**common, factor=int(factor))
    elif kind == "circulant":
        n = channels * resolution * resolution
        count = _get(cfg, "m", None)
        if count is not None and _get(cfg, "fraction", None) is not None:
            raise OperatorConfigError("give either operators.fraction or operators.m for 'circulant', not both.")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= n:
                raise OperatorConfigError(f"operators.m must be an integer count in [1, {n}], got {count!r}.")
        else:
            count = max(1, round(_fraction(cfg, "fraction", 0.1) * n))
        op = Circulant(**common, m=count, seed=seed)
    else:
        mask_kind = _get(cfg, "mask", "center_box")
        if mask_kind not in MASK_KINDS:
            raise OperatorConfigError(f"unknown operators.mask {mask_kind!r}; valid masks are: "
                                      f"{', '.join(MASK_KINDS)}.")
        threshold = _get(cfg, "black_threshold", 0.02)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise OperatorConfigError(f"operators.black_threshold must be in [0, 1), got {threshold!r}.")
        op = Inpainting(**common, mask=_make_mask(mask_kind, cfg, resolution, seed), kind=mask_kind,
                        black_threshold=threshold)
        if mask_kind == "black_pixels" and reference is not None:
            op.set_mask_from_image(reference.to(torch.float32))
    return op.to(device)
