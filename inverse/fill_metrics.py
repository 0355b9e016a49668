"""Two numbers about a solver's output that PSNR does not give and that need no downloaded network (issue 10):

- :func:`fill_swd`, the realism of what an inpainting solver paints where nothing was observed: the sliced
  Wasserstein distance (``stylegan.swd.sliced_wasserstein``) between the square patches that lie wholly inside
  the unobserved region of the reconstructions and patches cut at the same positions from a pool of real images.
  0 would be a fill distributed like real content at that place; a flat or blotchy fill scores high. The floor
  is what the references themselves score against the same pool (:func:`fill_swd` on the references), which is
  above 0 because both sets are finite.
- :func:`std_error_spearman`, whether a sampler's posterior std says where it is wrong: per image, Spearman's
  rank correlation over pixels between the std across chains and the absolute error of the chains' mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor

from stylegan.swd import sliced_wasserstein

__all__ = ["unobserved_positions", "fill_swd", "std_error_spearman"]


def unobserved_positions(mask: Tensor, patch_size: int) -> Tensor:
    """Top-left corners (P, 2) as (row, col) of the ``patch_size`` squares with no observed pixel in ``mask``
    (1, 1, H, W) or (H, W), 1 = observed. Raises ValueError when there is none."""
    m = mask.reshape(mask.shape[-2:]).to(torch.float32)
    observed = F.avg_pool2d(m[None, None], patch_size, stride=1)[0, 0]  # fraction observed per patch
    positions = (observed == 0).nonzero()
    if positions.numel() == 0:
        raise ValueError(f"the mask has no {patch_size}x{patch_size} region without an observed pixel")
    return positions


def _patches(images: Tensor, positions: Tensor, patch_size: int) -> Tensor:
    """(N, C, H, W) and (P, 2) corners -> (N·P, C·p·p) flattened patches, image-major (each patch flattened in
    (C, row, col) order, as ``F.unfold`` does). Slices only the P patches, not every corner of the image."""
    p = patch_size
    cut = [images[:, :, r : r + p, c : c + p] for r, c in positions.tolist()]
    return torch.stack(cut, 1).float().reshape(-1, images.shape[1] * p * p)


def fill_swd(fills: Tensor, mask: Tensor, pool: Tensor, patch_size: int = 8, num_directions: int = 256,
             repeats: int = 4, seed: int = 0) -> float:
    """Sliced W1 distance between the unobserved-region patches of ``fills`` (N, C, H, W) and patches of ``pool``
    (M, C, H, W, real images, in the same value range) at the same positions.

    mask: (1, 1, H, W) or (H, W), 1 = observed, one mask for every image (e.g. the centre box). The N·P fill
    patches (P: every square wholly unobserved) are compared with N·P pool patches drawn at random (image,
    position) pairs with ``seed``; both are normalised per dimension by the pool patches' mean and std.
    Deterministic given ``seed``.
    """
    if fills.dim() != 4 or pool.dim() != 4 or fills.shape[1:] != pool.shape[1:]:
        raise ValueError(f"fills and pool must be (N, C, H, W) of one image size, got {tuple(fills.shape)} and "
                         f"{tuple(pool.shape)}")
    positions = unobserved_positions(mask, patch_size)
    ours = _patches(fills, positions, patch_size)
    gen = torch.Generator().manual_seed(seed)
    every = _patches(pool, positions, patch_size)  # (M·P, D): every pool image at every position
    real = every[torch.randint(0, every.shape[0], (ours.shape[0],), generator=gen)]
    mean, std = every.mean(0), every.std(0).clamp_min(1e-6)
    return sliced_wasserstein((ours - mean) / std, (real - mean) / std, num_directions, repeats, gen)


def std_error_spearman(mean: Tensor, std: Tensor, reference: Tensor) -> Tensor:
    """Per image, Spearman's ρ over pixels between the posterior std and the absolute error of the mean, both
    averaged over channels: (N, C, H, W) × 3 -> (N,) float64. NaN for an image whose std (or error) is constant,
    e.g. a single chain."""
    if not (mean.shape == std.shape == reference.shape) or mean.dim() != 4:
        raise ValueError(f"mean, std and reference must be (N, C, H, W) of one shape, got {tuple(mean.shape)}, "
                         f"{tuple(std.shape)}, {tuple(reference.shape)}")
    error = (mean.double() - reference.double()).abs().mean(1).flatten(1)
    spread = std.double().mean(1).flatten(1)
    out = torch.full((mean.shape[0],), float("nan"), dtype=torch.float64)
    for i in range(mean.shape[0]):
        if bool((spread[i] != spread[i, 0]).any()) and bool((error[i] != error[i, 0]).any()):
            out[i] = float(spearmanr(spread[i].numpy(), error[i].numpy()).statistic)
    return out
