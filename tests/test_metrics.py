"""Metrics: PSNR, SSIM (checked against scikit-image), measurement MSE, per-image records and their means."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inverse.metrics import (
    Metrics,
    gaussian_window,
    image_metrics,
    lpips_distance,
    mean_metrics,
    measurement_mse,
    psnr,
    ssim,
    to_unit,
)
from inverse.operators import build_operator


def _pair(n=2, c=3, h=32, w=32, noise=0.1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g, dtype=dtype)
    y = (x + noise * torch.randn(n, c, h, w, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


def test_to_unit():
    x = torch.tensor([-1.0, 0.0, 1.0, 1.2, -1.5])
    assert torch.equal(to_unit(x), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))


def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.01  # MSE 1e-4 -> 40 dB
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 40.0], dtype=torch.float64))
    assert math.isinf(psnr(x, x)[0].item())
    assert psnr(x, y, data_range=2.0)[0].item() == pytest.approx(20 + 20 * math.log10(2))


def test_ssim_basics():
    x, y = _pair()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    s = ssim(x, y)
    assert s.shape == (2,) and bool((s < 1).all()) and bool((s > 0).all())
    assert torch.allclose(ssim(x, y), ssim(y, x))
    w = gaussian_window()
    assert w.numel() == 11 and w.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 32), torch.zeros(1, 3, 10, 32))
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))


@pytest.mark.parametrize("c,h,w,noise", [(3, 32, 32, 0.1), (1, 20, 27, 0.3), (3, 11, 11, 0.05), (3, 64, 48, 0.02)])
def test_ssim_and_psnr_match_scikit_image(c, h, w, noise):
    metrics = pytest.importorskip("skimage.metrics")
    x, y = _pair(3, c, h, w, noise, seed=c + h)
    ours_s, ours_p = ssim(x, y), psnr(x, y)
    for i in range(3):
        a, b = x[i].numpy(), y[i].numpy()
        ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=1, channel_axis=0)
        assert abs(ours_s[i].item() - ref) < 1e-5
        assert abs(ours_p[i].item() - metrics.peak_signal_noise_ratio(a, b, data_range=1)) < 1e-6


def test_ssim_float32_inputs_match_float64():
    x, y = _pair(dtype=torch.float32)
    assert torch.allclose(ssim(x, y), ssim(x.double(), y.double()), atol=1e-7)


def test_measurement_mse_is_operator_loss():
    op = build_operator({"operator_type": "downsampler", "factor": 2}, 16)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    y = op.measure(x, 0.05, g)
    x_hat = torch.zeros_like(x, requires_grad=True)
    m = measurement_mse(op, x_hat, y)
    assert m.shape == (2,) and not m.requires_grad
    assert torch.allclose(m, op.loss(x_hat, y).detach())


def test_image_metrics_records():
    op = build_operator({"operator_type": "inpainting"}, 16)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x_hat = (x + 0.1).clamp(-1, 1)
    recs = image_metrics(x_hat, x, op=op, y=op.A(x))
    assert len(recs) == 2 and set(recs[0]) == {"psnr", "ssim", "lpips", "measurement_mse"}
    assert recs[0]["lpips"] is None and isinstance(recs[0]["measurement_mse"], float)
    assert recs[1]["psnr"] == pytest.approx(psnr(to_unit(x_hat), to_unit(x))[1].item())
    assert image_metrics(x_hat, x)[0]["measurement_mse"] is None


def test_lpips_hook_expands_grayscale():
    seen = []

    def fake_lpips(a, b):
        seen.append(a.shape)
        return (a - b).abs().flatten(1).mean(1)

    x = torch.zeros(2, 1, 16, 16)
    d = lpips_distance(fake_lpips, x, x + 0.5)
    assert seen == [torch.Size([2, 3, 16, 16])] and torch.allclose(d, torch.full((2,), 0.5))
    assert lpips_distance(None, x, x) is None
    recs = image_metrics(x + 0.5, x, lpips_fn=fake_lpips)
    assert recs[0]["lpips"] == pytest.approx(0.5)


def test_mean_skips_none_and_non_finite():
    records = [
        {"name": "a", "psnr": 20.0, "lpips": None, "ssim": 0.5, "rounds": [{"psnr": 1.0}]},
        {"name": "b", "psnr": 30.0, "lpips": None, "ssim": None},
        {"name": "c", "psnr": float("inf"), "lpips": None, "ssim": 0.7},
    ]
    mean = mean_metrics(records)
    assert mean == {"psnr": 25.0, "lpips": None, "ssim": pytest.approx(0.6)}


def test_metrics_aggregation_json_and_table():
    records = [{"name": "img1", "psnr": 20.0, "ssim": 0.8, "lpips": None, "seconds": 1.5,
                "rounds": [{"layer": 0, "psnr": 18.0}]},
               {"name": "img0", "psnr": float("inf"), "ssim": 1.0, "lpips": None, "seconds": 2.5},
               {"name": "img2", "psnr": 26.0, "ssim": 0.6, "lpips": None, "seconds": 1.0}]
    m = Metrics(records)
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: inf became null
    assert json.loads(text)["images"][1]["psnr"] is None
    assert d["mean"] == {"psnr": 23.0, "ssim": pytest.approx(0.8), "lpips": None, "seconds": pytest.approx(5 / 3)}
    assert list(d["images"][0]) == ["name", "psnr", "ssim", "lpips", "seconds", "rounds"]
    assert len(m) == 3
    table = m.table()
    assert "psnr" in table and "23" in table and "-" in table


def test_metrics_on_generator_range_images():
    # The usual call: reconstructions and references in [-1, 1].
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    rec = image_metrics(x, x)[0]
    assert rec["psnr"] == math.inf and rec["ssim"] == pytest.approx(1.0)
    assert np.isfinite(image_metrics(x * 0.9, x)[0]["psnr"])
