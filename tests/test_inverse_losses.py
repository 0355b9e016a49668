"""inverse.losses: masked MSE, GeoCross (ILO/PULSE numerics) and the optional perceptual loss."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import lpips
from dnnlib import util
from inverse.losses import PerceptualLoss, geocross, masked_mse
from lpips import weights as lpips_weights

# ---------------------------------------------------------------------------------------------------------------
# masked_mse


def test_masked_mse_without_mask_is_per_sample_mse():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    got = masked_mse(x, y)
    assert got.shape == (3,)
    torch.testing.assert_close(got, torch.stack([F.mse_loss(a, b) for a, b in zip(x, y)]))
    torch.testing.assert_close(masked_mse(x, y, torch.ones(1, 1, 8, 8)), got)
    # Non-image measurements (e.g. compressed sensing, (N, m)) reduce the same way.
    torch.testing.assert_close(masked_mse(x.flatten(1), y.flatten(1)), got)


def test_masked_mse_ignores_unobserved_entries():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    y = torch.randn(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:6, 2:6] = 1
    mask[1, :, :, :4] = 1
    value = masked_mse(x, y, mask)

    # Hand computation: mean of squared differences over the observed pixels (all channels) of each sample.
    for n in range(2):
        observed = mask[n, 0].bool()
        want = ((x[n] - y[n])[:, observed] ** 2).mean()
        torch.testing.assert_close(value[n], want)

    # Whatever y holds where unobserved (even NaN/Inf) changes neither the value nor the gradient.
    y_wild = y.clone()
    y_wild[mask.expand_as(y) == 0] = float("nan")
    y_wild[0, 0, 0, 0] = float("inf")
    wild = masked_mse(x, y_wild, mask)
    torch.testing.assert_close(wild, value)
    (grad,) = torch.autograd.grad(wild.sum(), x)
    assert torch.isfinite(grad).all()
    assert (grad[mask.expand_as(grad) == 0] == 0).all() and (grad[mask.expand_as(grad) == 1] != 0).any()


def test_masked_mse_edge_cases():
    x, y = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    mask = torch.ones(2, 1, 4, 4)
    mask[1] = 0  # nothing observed in sample 1: 0, not NaN
    torch.testing.assert_close(masked_mse(x, y, mask), torch.tensor([1.0, 0.0]))
    # A per-channel mask (1, C, 1, 1) selects channels; fractional weights weight the average.
    channel_mask = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    y2 = torch.stack([torch.full((4, 4), v) for v in (2.0, 5.0, 7.0)]).expand(2, 3, 4, 4)
    torch.testing.assert_close(masked_mse(x, y2, channel_mask), torch.tensor([4.0, 4.0]))
    with pytest.raises(ValueError):
        masked_mse(x, y[:, :2])


# ---------------------------------------------------------------------------------------------------------------
# geocross


def _geocross_by_hand(z: torch.Tensor) -> torch.Tensor:
    """Loops over every ordered pair of rows; the ILO/PULSE angle formula with its 1e-9 under the roots."""
    n, k, d = z.shape
    out = []
    for b in range(n):
        total = 0.0
        for i in range(k):
            for j in range(k):
                u, v = z[b, i].double(), z[b, j].double()
                a = math.sqrt(float(((u - v) ** 2).sum()) + 1e-9)
                c = math.sqrt(float(((u + v) ** 2).sum()) + 1e-9)
                total += (2 * math.atan2(a, c)) ** 2
        out.append(total / (k * k) * d / 8)
    return torch.tensor(out, dtype=torch.float64)


def test_geocross_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 6, 16, generator=g)
    got = geocross(z)
    assert got.shape == (3,)
    torch.testing.assert_close(got.double(), _geocross_by_hand(z), rtol=1e-5, atol=1e-6)
    # ILO's reported scalar is the batch mean of these values.
    torch.testing.assert_close(got.mean().double(), _geocross_by_hand(z).mean(), rtol=1e-5, atol=1e-6)


def test_geocross_is_the_mean_squared_angle_for_equal_norm_rows():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 5, 32, generator=g, dtype=torch.float64)
    z = z / z.norm(dim=-1, keepdim=True) * math.sqrt(32)  # rows on the sphere, as after spherical projection
    cos = torch.einsum("nid,njd->nij", z, z) / 32
    angles = torch.arccos(cos.clamp(-1, 1))
    torch.testing.assert_close(geocross(z), (angles**2).mean(dim=(1, 2)) * 32 / 8, rtol=1e-4, atol=1e-5)


def test_geocross_of_identical_rows_is_zero_and_differentiable():
    row = torch.randn(1, 1, 512)
    z = row.expand(2, 18, 512).clone().requires_grad_(True)
    value = geocross(z)
    torch.testing.assert_close(value, torch.zeros(2), rtol=0, atol=1e-6)
    value.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert torch.equal(geocross(torch.randn(4, 1, 512)), torch.zeros(4))  # a single row has no pairs
    # Spreading the rows apart increases it.
    assert (geocross(torch.randn(2, 18, 512)) > value.detach() + 1).all()
    with pytest.raises(ValueError):
        geocross(torch.randn(18, 512))


# ---------------------------------------------------------------------------------------------------------------
# PerceptualLoss


def test_perceptual_loss_unavailable_returns_zeros():
    loss = PerceptualLoss(None, resolution=256)
    assert not loss.available
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    out = loss(x, torch.randn(3, 3, 32, 32))
    assert torch.equal(out, torch.zeros(3))
    (0.05 * out.sum() + (x**2).sum()).backward()  # can stay in the loss sum unconditionally


def test_perceptual_loss_compares_at_its_resolution():
    torch.manual_seed(0)
    metric = lpips.LPIPS("squeeze", backbone_weights=lpips.build_backbone("squeeze").state_dict(),
                         head_weights={f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
                                       for i, c in enumerate((64, 128, 256, 384, 384, 512, 512))})
    loss = PerceptualLoss(metric, resolution=32)
    assert loss.available
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    torch.testing.assert_close(loss(x, y), metric(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(PerceptualLoss(metric, resolution=None)(x, y), metric(x, y))


def test_perceptual_loss_load_without_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv(util.CACHE_ENV, str(tmp_path / "sgilo"))
    monkeypatch.setattr(lpips_weights, "SHARED_HEADS_DIR", tmp_path / "none")

    def offline(url, dest, sha256=None, **kwargs):
        raise util.DownloadError("no network connection? (test)")

    monkeypatch.setattr(util, "download", offline)
    with caplog.at_level(logging.WARNING):
        loss = PerceptualLoss.load("vgg", resolution=256)
    assert not loss.available
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_perceptual_loss_reuses_reference_features_only_while_valid():
    torch.manual_seed(1)
    metric = lpips.LPIPS("squeeze", backbone_weights=lpips.build_backbone("squeeze").state_dict(),
                         head_weights={f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
                                       for i, c in enumerate((64, 128, 256, 384, 384, 512, 512))})
    cached, plain = PerceptualLoss(metric, resolution=32), PerceptualLoss(metric, resolution=32, cache_reference=False)
    calls = []
    features = metric.features
    metric.features = lambda t, normalize=False: calls.append(t.shape) or features(t, normalize)

    g = torch.Generator().manual_seed(4)
    y = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    for _ in range(3):
        x = (torch.rand(2, 3, 48, 48, generator=g) * 2 - 1).requires_grad_(True)
        value = cached(x, y)
        torch.testing.assert_close(value, plain(x, y), rtol=1e-5, atol=1e-7)
        value.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert len(calls) == 3 + 1  # one pass for x per call, one for y in all
    y.mul_(0.5)  # an in-place change to the reference must not reuse stale features
    torch.testing.assert_close(cached(x, y), plain(x, y), rtol=1e-5, atol=1e-7)
    assert len(calls) == 4 + 2
    y_grad = y.clone().requires_grad_(True)  # a reference that needs gradients is never cached
    torch.testing.assert_close(cached(x, y_grad), plain(x, y), rtol=1e-5, atol=1e-7)
    cached.double()
    assert cached._cache is None
