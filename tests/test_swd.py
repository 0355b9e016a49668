"""stylegan.swd: Laplacian pyramid and sliced Wasserstein distance on patches."""

import torch

from stylegan.swd import laplacian_pyramid, sliced_wasserstein, swd


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False).tanh()


def test_pyramid_levels_reconstruct_the_image():
    x = _images(2, 0)
    levels = laplacian_pyramid(x, min_resolution=8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    from stylegan.swd import _up

    rec = levels[-1]
    for band in reversed(levels[:-1]):
        rec = band + _up(rec)
    assert torch.allclose(rec, x, atol=1e-5)
    assert len(laplacian_pyramid(x, min_resolution=32)) == 1


def test_swd_is_zero_for_identical_sets_and_grows_with_a_shift():
    a = _images(64, 1)
    same = swd(a, a.clone(), seed=3)
    assert set(same) == {"swd_32", "swd_16", "swd"}
    assert same["swd"] < 1e-6
    other = swd(a, _images(64, 2), seed=3)  # same distribution, other samples: small but not zero
    shifted = swd(a, (a + 0.3).clamp(-1, 1), seed=3)
    blurred = swd(a, torch.nn.functional.avg_pool2d(a, 3, 1, 1), seed=3)
    assert 0 < other["swd"] < shifted["swd"]
    assert other["swd_32"] < blurred["swd_32"]
    assert swd(a, _images(64, 2), seed=3) == other  # deterministic


def test_sliced_wasserstein_of_translated_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 2, generator=g)
    d = sliced_wasserstein(a, a + torch.tensor([1.0, 0.0]), num_directions=256, generator=g)
    # W1 along direction u of a shift (1, 0) is |u_x|; its mean over the circle is 2/pi.
    assert abs(d - 2 / torch.pi) < 0.05
