"""Realism of inpainted fills and posterior-std calibration (inverse/fill_metrics.py)."""

from __future__ import annotations

import math

import pytest
import torch

from inverse.fill_metrics import _patches, fill_swd, std_error_spearman, unobserved_positions


def _box_mask(resolution: int = 32, side: int = 16) -> torch.Tensor:
    mask = torch.ones(1, 1, resolution, resolution)
    lo = (resolution - side) // 2
    mask[..., lo:lo + side, lo:lo + side] = 0
    return mask


def _textures(n: int, seed: int) -> torch.Tensor:
    """Smooth random colour images in [-1, 1]: low-frequency noise, upsampled."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 8, 8, generator=g)
    return torch.tanh(torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False))


def test_patches_are_the_unfold_columns_at_the_positions():
    # The slices equal F.unfold's columns at those corners (same (C, row, col) flattening, image-major rows).
    x = _textures(3, seed=4)
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 2:20, 9:30] = 0
    pos = unobserved_positions(mask, 5)
    cols = torch.nn.functional.unfold(x, kernel_size=5)  # (N, C·25, 28·28)
    expected = cols[:, :, pos[:, 0] * 28 + pos[:, 1]].permute(0, 2, 1).reshape(-1, 75)
    assert torch.equal(_patches(x, pos, 5), expected)


def test_unobserved_positions_are_the_patches_inside_the_box():
    pos = unobserved_positions(_box_mask(), 8)
    assert pos.shape == (81, 2)  # (16 - 8 + 1)² corners
    assert int(pos.min()) == 8 and int(pos.max()) == 16
    with pytest.raises(ValueError, match="no 8x8 region"):
        unobserved_positions(torch.ones(32, 32), 8)


def test_fill_swd_ranks_real_like_fills_above_flat_and_ignores_observed_pixels():
    mask, pool = _box_mask(), _textures(200, seed=0)
    real_like = _textures(16, seed=1)
    flat = real_like.clone()
    flat[..., 8:24, 8:24] = 0.0  # a grey box
    good, bad = fill_swd(real_like, mask, pool), fill_swd(flat, mask, pool)
    assert good < 0.5 * bad
    # Only the unobserved region counts: scrambling the observed pixels changes nothing.
    scrambled = real_like.clone()
    scrambled[..., :8, :] = torch.randn_like(scrambled[..., :8, :])
    assert fill_swd(scrambled, mask, pool) == good
    assert fill_swd(real_like, mask, pool, seed=0) == good  # deterministic given the seed
    with pytest.raises(ValueError, match="one image size"):
        fill_swd(real_like[:, :, :16], mask, pool)


def test_std_error_spearman_follows_the_rank_agreement():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 3, 8, 8, generator=g)
    mean = ref + torch.randn(3, 3, 8, 8, generator=g) * 0.1
    error = (mean - ref).abs().mean(1, keepdim=True).expand(-1, 3, -1, -1)
    rho = std_error_spearman(mean, 2 * error + 0.3, ref)
    torch.testing.assert_close(rho, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(std_error_spearman(mean, -error, ref), -torch.ones(3, dtype=torch.float64))
    unrelated = std_error_spearman(mean, torch.rand(3, 3, 8, 8, generator=g), ref)
    assert unrelated.abs().max() < 0.4
    constant = std_error_spearman(mean, torch.zeros_like(mean), ref)  # one chain: no spread to rank
    assert all(math.isnan(float(v)) for v in constant)
