"""Loss terms of the layer-wise reconstruction (DESIGN §2): masked MSE, GeoCross on the latent, LPIPS.

All three return one value per sample, shape (N,), so the solver can weight, sum and report them per image
(a batch holds independent images; a NaN in one must not be averaged into the others).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lpips import LPIPS, load_lpips, resize_images

__all__ = ["masked_mse", "geocross", "PerceptualLoss"]

# Added under the square roots of GeoCross, as in PULSE/ILO: keeps the gradient finite on the diagonal pairs
# (a row against itself, distance exactly 0).
_GEOCROSS_EPS = 1e-9


def masked_mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per sample over the observed entries.

    x, y: (N, ...) of the same shape. mask: None (every entry observed) or a tensor broadcastable to x,
    e.g. (N, 1, H, W) or (1, C, H, W), with 1 = observed, 0 = unobserved (fractional weights are allowed).
    Returns (N,): sum(mask * (x - y)²) / sum(mask), so the value does not depend on how much is observed and
    unobserved entries of y (whatever they hold) have no effect. A sample with nothing observed gives 0.
    """
    if x.shape != y.shape:
        raise ValueError(f"masked_mse: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    dims = tuple(range(1, x.dim()))
    if mask is None:
        sq = (x - y) ** 2
        return sq.mean(dim=dims) if dims else sq
    weight = mask.to(x.dtype).expand_as(x)
    # Zero the difference itself where unobserved (not just its weight): a NaN/Inf in an unobserved entry of
    # y must leak neither into the value (0 * inf) nor into the gradient.
    diff = torch.where(weight != 0, x - y, torch.zeros((), dtype=x.dtype, device=x.device))
    total = diff.pow(2) * weight
    total = total.sum(dim=dims) if dims else total
    count = weight.sum(dim=dims) if dims else weight
    return torch.where(count > 0, total / count.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(total))


def geocross(z: torch.Tensor) -> torch.Tensor:
    """GeoCross regulariser of PULSE (Menon et al. 2020) as ILO uses it, per sample.

    z: (N, k, d), k latent rows of dimension d (e.g. the Gaussianised W+ latent, k = 18, d = 512). For every
    ordered pair of rows (i, j), including i = j, the angle between them is

        θ_ij = 2 · atan2(‖z_i − z_j‖, ‖z_i + z_j‖)

    (exactly the angle for rows of equal norm, the spherical-projection case), with 1e-9 added under both
    square roots. Returns (N,): d · mean_{i,j} θ_ij² / 8. ILO then averages this over the batch; PULSE sums.
    A single row (k = 1) has no pairs and gives 0, as in both codes.
    """
    if z.dim() != 3:
        raise ValueError(f"geocross expects (N, k, d), got {tuple(z.shape)}")
    n, k, d = z.shape
    if k == 1:
        return z.new_zeros(n)
    a = z.unsqueeze(1)  # (N, 1, k, d)
    b = z.unsqueeze(2)  # (N, k, 1, d)
    dist_minus = ((a - b).pow(2).sum(-1) + _GEOCROSS_EPS).sqrt()  # (N, k, k)
    dist_plus = ((a + b).pow(2).sum(-1) + _GEOCROSS_EPS).sqrt()
    angle = 2 * torch.atan2(dist_minus, dist_plus)
    return (angle.pow(2) * d).mean(dim=(1, 2)) / 8.0


class PerceptualLoss(nn.Module):
    """LPIPS between images at a fixed resolution, or nothing when LPIPS is unavailable.

    Args:
        metric: an :class:`lpips.LPIPS` network (frozen), or None. With None, ``available`` is False and
            ``forward`` returns zeros, so a solver can keep ``pe * loss`` in its sum unconditionally while
            reporting the metric as null.
        resolution: both images are resized to ``resolution`` x ``resolution`` before comparing (256 is the
            published SGILO setting); None compares at the input resolution.
        resize_mode: 'area', 'bilinear' or 'bicubic' (see :func:`lpips.resize_images`).
        cache_reference: keep the features of the last reference ``y`` (when it needs no gradient) and reuse
            them while the very same, unmodified tensor is passed again, as in an optimisation loop against
            fixed measurements; this saves one backbone pass per step. The cache holds one batch of features.

    ``forward(x, y)``: (N, 3, H, W) images in [-1, 1] (y may have N = 1 and is then broadcast) -> (N,).
    """

    def __init__(
        self,
        metric: LPIPS | None,
        resolution: int | None = 256,
        resize_mode: str = "area",
        cache_reference: bool = True,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.resolution = resolution
        self.resize_mode = resize_mode
        self.cache_reference = cache_reference
        self._cache: tuple[torch.Tensor, tuple, list[torch.Tensor]] | None = None

    @classmethod
    def load(
        cls,
        net: str = "vgg",
        resolution: int | None = 256,
        backbone_path: str | os.PathLike[str] | None = None,
        head_path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        resize_mode: str = "area",
    ) -> PerceptualLoss:
        """Build from :func:`lpips.load_lpips` (which logs one warning and yields an unavailable loss when
        the weights cannot be had)."""
        return cls(load_lpips(net, backbone_path, head_path, device), resolution, resize_mode)

    @property
    def available(self) -> bool:
        return self.metric is not None

    def clear_cache(self) -> None:
        """Forget the cached reference features (done automatically when the module moves or changes dtype)."""
        self._cache = None

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .double() ...: cached features would be stale
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.resolution is None else resize_images(x, self.resolution, self.resize_mode)

    def _reference_features(self, y: torch.Tensor) -> list[torch.Tensor]:
        assert self.metric is not None
        # The cache keeps a strong reference to y, so no other tensor can share its identity; _version
        # changes with every in-place write, data_ptr with a swapped .data.
        key = (y._version, y.data_ptr(), tuple(y.shape), y.dtype, y.device)
        if self._cache is not None and self._cache[0] is y and self._cache[1] == key:
            return self._cache[2]
        with torch.no_grad():
            features = self.metric.features(self._resize(y))
        self._cache = (y, key, features)
        return features

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.metric is None:
            return x.new_zeros(x.shape[0])
        if self.cache_reference and not y.requires_grad:
            return self.metric.distance_to_features(self._resize(x), self._reference_features(y))
        return self.metric(self._resize(x), self._resize(y))

    def extra_repr(self) -> str:
        return f"available={self.available}, resolution={self.resolution}, resize_mode={self.resize_mode!r}"
