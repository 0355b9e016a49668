"""Reconstruction metrics: PSNR, SSIM, LPIPS (when a network is available) and measurement MSE, per image, and
their aggregation into the ``metrics.json`` layout of DESIGN §4.

PSNR and SSIM take images in [0, 1] (convert from the generator's [-1, 1] with :func:`to_unit`). SSIM is our
torch implementation of Wang et al. (2004) with the settings of
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1, channel_axis=0)``: an 11-tap Gaussian window (σ = 1.5, truncated at 3.5σ), K1 = 0.01, K2 = 0.03,
population covariances, the SSIM map averaged over the window-valid region and then over channels. The tests
check it against scikit-image to 1e-5. It runs on any device and batch, so metrics per round stay cheap on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "to_unit",
    "psnr",
    "ssim",
    "gaussian_window",
    "measurement_mse",
    "lpips_distance",
    "image_metrics",
    "mean_metrics",
    "Metrics",
]

Number = float | int | None


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]: ``(x + 1) / 2``, clamped so that small generator overshoots do not count as error."""
    return ((x + 1) / 2).clamp(0.0, 1.0)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"expected two image batches of the same shape (N, C, H, W), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(R² / MSE)``: (N, C, H, W) x 2 -> (N,) float64.

    Identical images give ``inf`` (as scikit-image does). Computed in float64 so that high PSNRs stay exact.
    """
    _check_pair(x, y)
    mse = (x.detach().double() - y.detach().double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5, dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate·σ + 0.5)`` (scipy.ndimage's rule: 11 taps for σ = 1.5)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> Tensor:
    """Structural similarity per image, averaged over channels: (N, C, H, W) x 2 -> (N,) float64.

    Local statistics are Gaussian-weighted means over the *valid* region only (no padding): scikit-image filters
    with padding and then crops the window radius off every side, which leaves exactly these values.

    Raises:
        ValueError: different shapes, or an image side smaller than the window (11 pixels by default).
    """
    _check_pair(x, y)
    w = gaussian_window(sigma, dtype=torch.float64, device=x.device)
    k = w.numel()
    n, c, h, wd = x.shape
    if h < k or wd < k:
        raise ValueError(f"ssim needs images of at least {k}x{k} pixels, got {h}x{wd}.")
    # float64: the variances are differences of nearly equal means, and C2 is only 9e-4.
    a = x.detach().double().reshape(n * c, 1, h, wd)
    b = y.detach().double().reshape(n * c, 1, h, wd)
    # One separable pass over the five maps at once.
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    wh, ww = w.view(1, 1, k, 1).expand(5, 1, k, 1), w.view(1, 1, 1, k).expand(5, 1, 1, k)
    filtered = F.conv2d(F.conv2d(stack, wh, groups=5), ww, groups=5)
    mu_a, mu_b, e_aa, e_bb, e_ab = filtered.unbind(1)
    var_a, var_b, cov = e_aa - mu_a * mu_a, e_bb - mu_b * mu_b, e_ab - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).view(n, c).mean(1)


def measurement_mse(op: Any, x_hat: Tensor, y: Tensor) -> Tensor:
    """Data fit of a reconstruction: ``op.loss(x_hat, y)`` (per-sample MSE over observed entries), (N,), no grad."""
    with torch.no_grad():
        return op.loss(x_hat, y).detach()


def lpips_distance(lpips_fn: Callable[[Tensor, Tensor], Tensor] | None, x: Tensor, y: Tensor) -> Tensor | None:
    """LPIPS between images in [-1, 1], (N,), or None when no network is available. Grayscale images are repeated
    to three channels because the networks are RGB."""
    if lpips_fn is None:
        return None
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    with torch.no_grad():
        return lpips_fn(x, y).detach().flatten()


def _floats(t: Tensor | None, n: int) -> list[float | None]:
    return [None] * n if t is None else [float(v) for v in t.detach().cpu().flatten().tolist()]


def image_metrics(x_hat: Tensor, reference: Tensor, op: Any = None, y: Tensor | None = None,
                  lpips_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> list[dict[str, float | None]]:
    """All metrics of a batch of reconstructions, one dict per image.

    Args:
        x_hat, reference: images (N, C, H, W) in [-1, 1].
        op, y: the operator and measurements (N, ...); ``measurement_mse`` is None without them.
        lpips_fn: a network ``(x, y) -> (N,)`` on [-1, 1] images (e.g. ``lpips.LPIPS``); ``lpips`` is None without.
    Returns:
        ``[{"psnr", "ssim", "lpips", "measurement_mse"}, ...]`` of Python floats or None.
    """
    n = x_hat.shape[0]
    xu, ru = to_unit(x_hat.detach()), to_unit(reference.detach())
    values = {
        "psnr": _floats(psnr(xu, ru), n),
        "ssim": _floats(ssim(xu, ru), n),
        "lpips": _floats(lpips_distance(lpips_fn, x_hat.detach(), reference.detach()), n),
        "measurement_mse": _floats(None if op is None or y is None else measurement_mse(op, x_hat, y), n),
    }
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mean_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean of every numeric key over the records, skipping None (and non-finite values, so one failed image
    does not turn the mean into NaN); a key that is never a finite number averages to None. Keys that are not
    metrics (names, nested per-round lists) are left out."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rec in records:
        for key, v in rec.items():
            if v is None or _is_number(v):
                sums.setdefault(key, 0.0)
                counts.setdefault(key, 0)
                if v is not None and math.isfinite(v):
                    sums[key] += float(v)
                    counts[key] += 1
    return {k: (sums[k] / counts[k] if counts[k] else None) for k in sums}


def _json_safe(v: Any) -> Any:
    """Non-finite floats -> None (strict JSON has no Infinity/NaN); containers recursively."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


class Metrics:
    """Per-image metric records and their mean, in the ``metrics.json`` layout.

    Each record is a dict, e.g. ``{"name", "psnr", "ssim", "lpips", "measurement_mse", "seconds",
    "rounds": [{"layer", "psnr", ...}]}``; ``mean()`` averages every numeric top-level key over the images,
    skipping None.
    """

    def __init__(self, images: Iterable[Mapping[str, Any]] = ()) -> None:
        self.images: list[dict[str, Any]] = [dict(r) for r in images]

    def __len__(self) -> int:
        return len(self.images)

    def mean(self) -> dict[str, float | None]:
        return mean_metrics(self.images)

    def to_dict(self) -> dict[str, Any]:
        """``{"images": [...], "mean": {...}}`` with non-finite numbers as None, ready for ``json.dump``."""
        return _json_safe({"images": self.images, "mean": self.mean()})

    def table(self, keys: Iterable[str] = ("psnr", "ssim", "lpips", "measurement_mse", "seconds")) -> str:
        """A small text table of the mean metrics (``-`` for unavailable ones)."""
        mean = self.mean()
        keys = list(keys)
        cells = [f"{mean[k]:.4g}" if mean.get(k) is not None else "-" for k in keys]
        widths = [max(len(k), len(c)) for k, c in zip(keys, cells)]
        head = "  ".join(k.rjust(w) for k, w in zip(keys, widths))
        row = "  ".join(c.rjust(w) for c, w in zip(cells, widths))
        return f"mean over {len(self.images)} image(s)\n{head}\n{row}"
