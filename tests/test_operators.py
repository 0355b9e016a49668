"""Forward operators: adjointness, shapes, seeded noise, masks, luma, bicubic downsampling, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from inverse.operators import (
    LUMA_WEIGHTS,
    OPERATORS,
    Circulant,
    Inpainting,
    Operator,
    OperatorConfigError,
    bicubic_kernel,
    build_operator,
)
from utils import UserError

R = 16

# (config, channels) for every linear operator and mask kind that needs no file or reference.
LINEAR_CASES = [
    ({"operator_type": "dummy"}, 3),
    ({"operator_type": "dummy"}, 1),
    ({"operator_type": "downsampler", "factor": 2}, 3),
    ({"operator_type": "downsampler", "factor": 4}, 1),
    ({"operator_type": "downsampler", "factor": 8}, 3),
    ({"operator_type": "colorizer"}, 3),
    ({"operator_type": "circulant", "fraction": 0.25}, 3),
    ({"operator_type": "circulant", "m": 17}, 1),
    ({"operator_type": "inpainting", "mask": "center_box"}, 3),
    ({"operator_type": "inpainting", "mask": "random_box", "box_size": 5}, 1),
    ({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0.3}, 3),
]


def _ids(case):
    cfg, c = case
    return "-".join(str(v) for v in cfg.values()) + f"-c{c}"


def _images(n: int = 2, c: int = 3, r: int = R, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, r, r, generator=g, dtype=dtype) * 2 - 1


@pytest.mark.parametrize("case", LINEAR_CASES, ids=_ids)
def test_adjointness_float64(case):
    cfg, c = case
    op = build_operator(cfg, R, channels=c)
    assert op.linear
    x = _images(3, c)
    y_shape = op.A(x).shape
    y = torch.randn(y_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert op.A_adjoint(y).shape == x.shape
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


@pytest.mark.parametrize("case", LINEAR_CASES, ids=_ids)
def test_shapes_and_ranges(case):
    cfg, c = case
    op = build_operator(cfg, R, channels=c)
    x = _images(2, c, dtype=torch.float32)
    y = op.measure(x, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    assert y.shape[0] == 2 and y.dtype == torch.float32
    naive = op.naive(y)
    assert naive.shape == x.shape and naive.min() >= -1 and naive.max() <= 1
    pic = op.measurement_image(y)
    assert pic.dim() == 4 and pic.shape[0] == 2 and pic.min() >= -1 and pic.max() <= 1
    loss = op.loss(x, y)
    assert loss.shape == (2,) and bool((loss >= 0).all())
    assert torch.equal(op.loss(x, op.A(x)), torch.zeros(2))


def test_expected_measurement_shapes():
    x = _images(2, 3)
    assert build_operator({"operator_type": "dummy"}, R).A(x).shape == (2, 3, R, R)
    assert build_operator({"operator_type": "downsampler", "factor": 4}, R).A(x).shape == (2, 3, 4, 4)
    assert build_operator({"operator_type": "colorizer"}, R).A(x).shape == (2, 1, R, R)
    assert build_operator({"operator_type": "circulant", "fraction": 0.5}, R).A(x).shape == (2, 3 * R * R // 2)
    assert build_operator({"operator_type": "inpainting"}, R).A(x).shape == (2, 3, R, R)


def test_registry_names():
    assert set(OPERATORS) == {"dummy", "downsampler", "circulant", "colorizer", "inpainting"}
    for name, cls in OPERATORS.items():
        assert cls.name == name and issubclass(cls, Operator)


def test_loss_is_differentiable():
    op = build_operator({"operator_type": "circulant", "fraction": 0.2}, R)
    x = _images(2, 3, dtype=torch.float32)
    y = op.A(x)
    x_hat = torch.zeros_like(x, requires_grad=True)
    op.loss(x_hat, y).sum().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


def test_omegaconf_config():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"operator_type": "downsampler", "factor": 2, "noise_std": None,
                                      "forward_measurements": False})
    op = build_operator(cfg, R)
    assert op.factor == 2 and op.noise_std == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Noise.


def test_seeded_noise_reproducible():
    op = build_operator({"operator_type": "downsampler", "factor": 2}, R)
    x = _images(2, 3, dtype=torch.float32)
    y1 = op.measure(x, 0.1, torch.Generator().manual_seed(5))
    y2 = op.measure(x, 0.1, torch.Generator().manual_seed(5))
    y3 = op.measure(x, 0.1, torch.Generator().manual_seed(6))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert torch.equal(op.measure(x, 0.0), op.A(x))


def test_noise_level_and_configured_default():
    op = build_operator({"operator_type": "dummy", "noise_std": 0.2}, 64)
    x = torch.zeros(4, 3, 64, 64)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))  # None -> the configured 0.2
    assert abs(y.std().item() - 0.2) < 0.01
    assert torch.equal(op.measure(x, noise_std=0.0), x) and op.measure(x, noise_std=0.0) is not x


def test_inpainting_noise_only_on_observed_pixels():
    op = build_operator({"operator_type": "inpainting", "mask": "center_box"}, R)
    y = op.measure(_images(1, 3, dtype=torch.float32), 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(y * (1 - op.mask), torch.zeros_like(y))


def test_operators_are_seeded():
    def parts(seed):
        op = build_operator({"operator_type": "circulant", "fraction": 0.3}, R, seed=seed)
        return op.signs, op.filter, op.indices

    assert all(torch.equal(a, b) for a, b in zip(parts(3), parts(3)))
    assert not torch.equal(parts(3)[1], parts(4)[1])
    m1 = build_operator({"operator_type": "inpainting", "mask": "random_pixels"}, R, seed=1).mask
    assert torch.equal(m1, build_operator({"operator_type": "inpainting", "mask": "random_pixels"}, R, seed=1).mask)
    assert not torch.equal(m1, build_operator({"operator_type": "inpainting", "mask": "random_pixels"}, R,
                                              seed=2).mask)


# ----------------------------------------------------------------------------------------------------------------
# Inpainting masks.


def test_center_box_mask():
    op = build_operator({"operator_type": "inpainting", "mask": "center_box", "box_size": 0.5}, R)
    assert op.mask.shape == (1, 1, R, R)
    assert op.observed_fraction.item() == pytest.approx(0.75)
    assert torch.equal(op.mask[0, 0, 4:12, 4:12], torch.zeros(8, 8))
    op = build_operator({"operator_type": "inpainting", "mask": "center_box", "box_size": 6}, R)
    assert op.mask.sum().item() == R * R - 36


def test_random_box_mask():
    op = build_operator({"operator_type": "inpainting", "mask": "random_box", "box_size": 5}, R, seed=3)
    missing = 1 - op.mask[0, 0]
    assert missing.sum().item() == 25
    rows, cols = missing.nonzero(as_tuple=True)
    assert rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_random_pixels_observed_fraction(fraction):
    op = build_operator({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": fraction}, 32)
    assert op.mask.sum().item() == round(fraction * 32 * 32)


def test_mask_file(tmp_path):
    a = np.zeros((64, 64), dtype=np.uint8)
    a[:, :32] = 255  # left half observed
    Image.fromarray(a).convert("RGB").save(tmp_path / "mask.png")
    op = build_operator({"operator_type": "inpainting", "mask": "file", "mask_path": str(tmp_path / "mask.png")}, R)
    assert torch.equal(op.mask[0, 0, :, : R // 2], torch.ones(R, R // 2))
    assert torch.equal(op.mask[0, 0, :, R // 2 :], torch.zeros(R, R // 2))


def test_black_pixels_mask_per_image_and_round_trip():
    x = _images(2, 3, dtype=torch.float32).clamp(-0.9, 1)
    x[0, :, :4, :] = -1  # image 0: top rows black
    x[1, :, :, -3:] = -1  # image 1: right columns black
    op = build_operator({"operator_type": "inpainting", "mask": "black_pixels"}, R, reference=x)
    assert op.mask.shape == (2, 1, R, R)
    assert op.mask[0].sum().item() == R * R - 4 * R and op.mask[1].sum().item() == R * R - 3 * R
    # The saved measurement draws missing pixels black, so it yields the same mask when fed back in.
    pic = op.measurement_image(op.measure(x))
    again = build_operator({"operator_type": "inpainting", "mask": "black_pixels"}, R, reference=pic)
    assert torch.equal(again.mask, op.mask)


def test_black_pixels_needs_images_and_chains_expand():
    op = build_operator({"operator_type": "inpainting", "mask": "black_pixels"}, R)
    with pytest.raises(RuntimeError, match="set_mask_from_image"):
        op.A(_images(1, 3))
    x = _images(2, 3)
    x[0, :, 0, :] = -1
    op.set_mask_from_image(x)
    chains = x.repeat_interleave(3, 0)  # 3 chains per image, image-major
    y = op.A(chains)
    assert torch.equal(y, op.A(x).repeat_interleave(3, 0))
    with pytest.raises(ValueError, match="cannot serve"):
        op.A(_images(3, 3))


def test_inpainting_loss_averages_observed_entries_only():
    op = build_operator({"operator_type": "inpainting", "mask": "center_box"}, R)
    x = _images(2, 3)
    y = op.A(x)
    # Changing only missing pixels costs nothing; an error of 1 on every pixel costs exactly 1.
    assert torch.equal(op.loss(x + (1 - op.mask) * 5, y), torch.zeros(2, dtype=x.dtype))
    assert torch.allclose(op.loss(x + 1, y), torch.ones(2, dtype=x.dtype))


# ----------------------------------------------------------------------------------------------------------------
# Colorization.


def test_colorizer_luma():
    op = build_operator({"operator_type": "colorizer"}, R)
    x = torch.empty(1, 3, R, R)
    x[:, 0], x[:, 1], x[:, 2] = 0.5, -0.25, 1.0
    expected = 0.2989 * 0.5 + 0.5870 * -0.25 + 0.1140 * 1.0
    assert torch.allclose(op.A(x), torch.full((1, 1, R, R), expected))
    for c in range(3):  # each channel alone gives its weight
        e = torch.zeros(1, 3, R, R)
        e[:, c] = 1
        assert op.A(e)[0, 0, 0, 0].item() == pytest.approx(LUMA_WEIGHTS[c])
    gray = torch.full((1, 3, R, R), 0.4)
    assert torch.allclose(op.naive(op.A(gray)), gray, atol=1e-4)
    assert op.measurement_image(op.A(gray)).shape == (1, 3, R, R)  # gray as RGB, for LPIPS on measurements


# ----------------------------------------------------------------------------------------------------------------
# Super-resolution.


def _reflect(j: int, n: int) -> int:
    while j < 0 or j >= n:
        j = -j if j < 0 else 2 * (n - 1) - j
    return j


def _plain_bicubic_down(img: np.ndarray, f: int) -> np.ndarray:
    """Per-pixel definition: output (i, j) sits at input ((i+0.5)f−0.5, (j+0.5)f−0.5); the weight of input pixel
    (p, q) is k((p−cy)/f)·k((q−cx)/f) with Keys' a = −0.5 kernel, normalised; outside pixels are mirrored."""

    def k(t):
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t < 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    h, w = img.shape
    out = np.zeros((h // f, w // f))
    for i in range(h // f):
        for j in range(w // f):
            cy, cx = (i + 0.5) * f - 0.5, (j + 0.5) * f - 0.5
            acc = norm = 0.0
            for p in range(math.floor(cy - 2 * f), math.ceil(cy + 2 * f) + 1):
                for q in range(math.floor(cx - 2 * f), math.ceil(cx + 2 * f) + 1):
                    wt = k((p - cy) / f) * k((q - cx) / f)
                    acc += wt * img[_reflect(p, h), _reflect(q, w)]
                    norm += wt
            out[i, j] = acc / norm
    return out


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampling_matches_per_pixel_definition(factor):
    r = 12 * factor // math.gcd(12, factor)  # divisible by the factor, small enough for the loops
    op = build_operator({"operator_type": "downsampler", "factor": factor}, r, channels=1)
    x = _images(1, 1, r, seed=factor)
    expected = _plain_bicubic_down(x[0, 0].numpy(), factor)
    assert np.abs(op.A(x)[0, 0].numpy() - expected).max() < 1e-12


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampling_matches_pil_away_from_borders(factor):
    """PIL's float-mode BICUBIC reduce uses the same a = −0.5 kernel stretched by the factor, but at the borders
    it drops the taps outside the image and renormalises instead of mirroring. So the two agree to float32
    precision everywhere except within 2 low-resolution pixels (the kernel's reach) of the border."""
    r = 24 * factor
    op = build_operator({"operator_type": "downsampler", "factor": factor}, r, channels=1)
    x = _images(1, 1, r, seed=10 + factor)
    ours = op.A(x)[0, 0].numpy()
    pil = Image.fromarray(x[0, 0].numpy().astype(np.float32), mode="F")
    theirs = np.asarray(pil.resize((r // factor, r // factor), Image.Resampling.BICUBIC), dtype=np.float64)
    assert np.abs(ours - theirs)[2:-2, 2:-2].max() < 1e-6
    assert np.abs(ours - theirs).max() < 0.2  # borders differ, but only by a boundary-handling amount


@pytest.mark.parametrize("r,factor", [(16, 2), (16, 4), (4, 4), (12, 3)])
def test_super_resolution_of_constant_is_constant(r, factor):
    op = build_operator({"operator_type": "downsampler", "factor": factor}, r)
    x = torch.full((1, 3, r, r), 0.3, dtype=torch.float64)
    y = op.A(x)
    assert torch.allclose(y, torch.full_like(y, 0.3), atol=1e-12, rtol=0)
    assert torch.allclose(op.naive(y), x, atol=1e-12, rtol=0)


def test_bicubic_kernel_values():
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    assert torch.allclose(bicubic_kernel(t), torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0], dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# Compressed sensing.


def test_circulant_matches_explicit_matrix():
    """A = P_Ω · C(g) · diag(s) with C(g)[i, j] = g[(i − j) mod n], built column by column from the operator."""
    r, c = 4, 1
    op = build_operator({"operator_type": "circulant", "fraction": 0.5}, r, channels=c, seed=7)
    assert isinstance(op, Circulant)
    n = op.n
    eye = torch.eye(n, dtype=torch.float64).view(n, c, r, r)
    a = op.A(eye).T  # (m, n)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    full = op.filter[(i - j) % n] * op.signs[None, :]
    assert torch.allclose(a, full[op.indices], atol=1e-12)
    assert op.indices.unique().numel() == op.m == n // 2


def test_circulant_naive_is_rescaled_adjoint():
    op = build_operator({"operator_type": "circulant", "fraction": 0.5}, R)
    x = _images(1, 3) * 0.1  # small, so the clamp does nothing
    y = op.A(x)
    assert torch.allclose(op.naive(y), (op.A_adjoint(y) * (op.n / op.m)).clamp(-1, 1))
    # E[AᵀA] = (m/n)·I, so the rescaled adjoint correlates with the image.
    rec = op.A_adjoint(y) * (op.n / op.m)
    assert torch.nn.functional.cosine_similarity(rec.flatten(), x.flatten(), dim=0) > 0.5


# ----------------------------------------------------------------------------------------------------------------
# Validation.

BAD = [
    ({"operator_type": "blur"}, 3, "valid types are: circulant, colorizer, downsampler, dummy, inpainting"),
    ({}, 3, "unknown operators.operator_type None"),
    ({"operator_type": "downsampler", "factor": 3}, 3, "does not divide the resolution 16"),
    ({"operator_type": "downsampler", "factor": 2.5}, 3, "factor must be a positive integer"),
    ({"operator_type": "downsampler", "factor": 0}, 3, "factor must be a positive integer"),
    ({"operator_type": "downsampler", "factor": "4"}, 3, "factor must be a positive integer"),
    ({"operator_type": "circulant", "fraction": 0.0}, 3, "fraction must be a fraction in \\(0, 1\\]"),
    ({"operator_type": "circulant", "fraction": 1.5}, 3, "fraction must be a fraction in \\(0, 1\\]"),
    ({"operator_type": "circulant", "fraction": 0.5, "m": 10}, 3, "not both"),
    ({"operator_type": "circulant", "m": 0}, 3, "m must be an integer count"),
    ({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0}, 3, "observed_fraction"),
    ({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 2}, 3, "observed_fraction"),
    ({"operator_type": "inpainting", "mask": "stripes"}, 3, "valid masks are: center_box, random_box"),
    ({"operator_type": "inpainting", "mask": "file"}, 3, "needs operators.mask_path"),
    ({"operator_type": "inpainting", "mask": "file", "mask_path": "/nonexistent/m.png"}, 3, "not found"),
    ({"operator_type": "inpainting", "box_size": 17}, 3, "box_size must be"),
    ({"operator_type": "inpainting", "box_size": 16}, 3, "covers the whole image"),
    ({"operator_type": "inpainting", "box_size": -0.5}, 3, "box_size must be"),
    ({"operator_type": "inpainting", "black_threshold": 1.5}, 3, "black_threshold"),
    ({"operator_type": "colorizer"}, 1, "needs 3-channel"),
    ({"operator_type": "dummy", "noise_std": -0.1}, 3, "noise_std must be"),
]


@pytest.mark.parametrize("cfg,channels,message", BAD, ids=[str(b[0]) for b in BAD])
def test_validation_errors(cfg, channels, message):
    with pytest.raises(ValueError, match=message) as info:
        build_operator(cfg, R, channels=channels)
    assert isinstance(info.value, OperatorConfigError) and isinstance(info.value, UserError)
    assert "\n" not in str(info.value)


def test_validation_of_inputs(tmp_path):
    with pytest.raises(ValueError, match="resolution must be"):
        build_operator({"operator_type": "dummy"}, 0)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        build_operator({"operator_type": "inpainting", "mask": "file", "mask_path": str(tmp_path / "bad.png")}, R)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "dark.png")
    with pytest.raises(ValueError, match="observes no pixel"):
        build_operator({"operator_type": "inpainting", "mask": "file", "mask_path": str(tmp_path / "dark.png")}, R)
    with pytest.raises(ValueError, match="entirely black"):
        build_operator({"operator_type": "inpainting", "mask": "black_pixels"}, R,
                       reference=-torch.ones(1, 3, R, R))
    op = build_operator({"operator_type": "dummy"}, R)
    with pytest.raises(ValueError, match="expected images of shape"):
        op.A(torch.zeros(1, 3, R + 1, R))
    with pytest.raises(ValueError, match="noise_std must be"):
        op.measure(torch.zeros(1, 3, R, R), noise_std=-1.0)
    assert isinstance(build_operator({"operator_type": "inpainting"}, R), Inpainting)


@pytest.mark.gpu
def test_operators_on_cuda_match_cpu():
    x = _images(2, 3, dtype=torch.float32)
    for cfg, c in LINEAR_CASES:
        if c != 3:
            continue
        cpu = build_operator(cfg, R)
        gpu = build_operator(cfg, R, device="cuda")
        gen = torch.Generator().manual_seed(0)
        y_cpu = cpu.measure(x, 0.1, torch.Generator().manual_seed(0))
        y_gpu = gpu.measure(x.cuda(), 0.1, gen)
        assert torch.allclose(y_cpu, y_gpu.cpu(), atol=1e-5)
        assert torch.allclose(cpu.naive(y_cpu), gpu.naive(y_gpu).cpu(), atol=1e-5)
