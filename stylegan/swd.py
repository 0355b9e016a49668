"""Sliced Wasserstein distance (SWD) between two image sets, on Laplacian-pyramid patches.

A distribution metric that needs no downloaded network (unlike FID), after Karras et al. 2018 (PGGAN, §5):
each image is split into a Laplacian pyramid; from every level, random 7x7 patches become descriptors; per level
the two descriptor sets are compared with the sliced Wasserstein-1 distance (random unit directions, sorted 1-D
projections). Fine levels measure texture and edges, the coarsest (low-pass) level colour and layout.

One deliberate difference from PGGAN: descriptors of *both* sets are normalised with the first (reference) set's
per-channel mean and std. PGGAN normalises each set by its own statistics, which hides a global colour shift or
contrast change between the sets; here such a shift shows up in the distance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["laplacian_pyramid", "patch_descriptors", "sliced_wasserstein", "swd"]

# 5-tap binomial kernel: the usual cheap Gaussian for image pyramids.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor, gain: float = 1.0) -> Tensor:
    """Separable 5x5 binomial blur of (N, C, H, W), reflect-padded (no dark borders), scaled by ``gain``."""
    c = x.shape[1]
    k = (_BINOMIAL.to(x) * math.sqrt(gain))
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _down(x: Tensor) -> Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _up(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, 2 * h, 2 * w)
    z[:, :, ::2, ::2] = x
    return _blur(z, gain=4.0)  # zero insertion keeps 1/4 of the samples: gain 4 restores the mean


def laplacian_pyramid(images: Tensor, min_resolution: int = 16) -> list[Tensor]:
    """(N, C, R, R) -> [band-pass at R, R/2, ..., then the low-pass image at the coarsest level >= min_resolution].

    With R <= min_resolution the pyramid is the image itself. Summing the upsampled levels gives the image back.
    """
    levels = []
    x = images.float()
    while x.shape[-1] > min_resolution and x.shape[-1] % 2 == 0 and x.shape[-1] >= 8:
        low = _down(x)
        levels.append(x - _up(low))
        x = low
    levels.append(x)
    return levels


def patch_descriptors(level: Tensor, per_image: int, patch_size: int = 7,
                      generator: torch.Generator | None = None) -> Tensor:
    """Random square patches of every image of a level: (N, C, H, W) -> (N * per_image, C, p, p).

    Positions are uniform over the valid range, drawn from ``generator`` (CPU) for reproducibility.
    """
    n, c, h, w = level.shape
    p = min(patch_size, h, w)
    ys = torch.randint(0, h - p + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - p + 1, (n, per_image), generator=generator)
    # unfold every position once, then gather: simpler than per-patch slicing and fast at these sizes.
    cols = F.unfold(level, kernel_size=p)  # (N, C*p*p, L) with L = (h-p+1)*(w-p+1)
    idx = (ys * (w - p + 1) + xs).to(level.device)  # (N, per_image)
    picked = cols.gather(2, idx[:, None, :].expand(n, cols.shape[1], per_image))  # (N, C*p*p, per_image)
    return picked.permute(0, 2, 1).reshape(n * per_image, c, p, p)


def sliced_wasserstein(a: Tensor, b: Tensor, num_directions: int = 128, repeats: int = 4,
                       generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-1 distance between point sets a (M, D) and b (M, D) of equal size.

    Mean over ``repeats * num_directions`` random unit directions of the 1-D W1 distance of the projections
    (mean absolute difference of the sorted values).
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equally sized sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], num_directions, generator=generator).to(a)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, _ = (a @ dirs).sort(dim=0)
        pb, _ = (b @ dirs).sort(dim=0)
        total += (pa - pb).abs().mean().item()
    return total / repeats


def swd(images_a: Tensor, images_b: Tensor, min_resolution: int = 16, patches_per_image: int = 64,
        patch_size: int = 7, num_directions: int = 128, repeats: int = 4, seed: int = 0) -> dict[str, float]:
    """SWD between image sets a (N, C, R, R) (the reference, e.g. held-out real images) and b (N', C, R, R).

    Returns ``{'swd_<res>': distance per pyramid level, 'swd': their mean}``; identical sets give 0. Both sets
    are cut to the smaller size so that the sorted projections pair up. Deterministic given ``seed``.
    """
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(images_a.shape[1:])} vs {tuple(images_b.shape[1:])}")
    n = min(len(images_a), len(images_b))
    gen = torch.Generator().manual_seed(seed)
    levels_a = laplacian_pyramid(images_a[:n], min_resolution)
    levels_b = laplacian_pyramid(images_b[:n], min_resolution)
    out: dict[str, float] = {}
    for la, lb in zip(levels_a, levels_b):
        # Same positions for both sets (same seed state): identical sets give exactly identical descriptors.
        state = gen.get_state()
        da = patch_descriptors(la, patches_per_image, patch_size, gen)
        gen.set_state(state)
        db = patch_descriptors(lb, patches_per_image, patch_size, gen)
        mean = da.mean(dim=(0, 2, 3), keepdim=True)
        std = da.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        da = ((da - mean) / std).flatten(1)
        db = ((db - mean) / std).flatten(1)
        out[f"swd_{la.shape[-1]}"] = sliced_wasserstein(da, db, num_directions, repeats, gen)
    out["swd"] = sum(out.values()) / len(out)
    return out
