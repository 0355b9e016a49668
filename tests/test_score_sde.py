"""score.sde: closed forms, consistency of sde / marginal_prob / discretize, reversal, devices and dtypes."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from score.sde import VESDE, VPSDE, get_sde, subVPSDE

T_GRID = [1e-3, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0]


def integral_beta(t, b0=0.1, b1=20.0):
    """∫_0^t β(s) ds for β(s) = b0 + s (b1 - b0)."""
    return b0 * t + 0.5 * (b1 - b0) * t**2


def test_vp_marginal_matches_hand_derived_values():
    sde = VPSDE()
    t = torch.tensor(T_GRID, dtype=torch.float64)
    x = torch.full((len(T_GRID), 3), 2.0, dtype=torch.float64)
    mean, std = sde.marginal_prob(x, t)
    for i, ti in enumerate(T_GRID):
        B = integral_beta(ti)
        assert mean[i].tolist() == pytest.approx([2.0 * math.exp(-0.5 * B)] * 3, rel=1e-12)
        assert std[i].item() == pytest.approx(math.sqrt(1.0 - math.exp(-B)), rel=1e-12)
    # Numbers worked out by hand for the default β 0.1 -> 20 at t = 1: ∫β = 10.05.
    m1, s1 = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    assert m1.item() == pytest.approx(0.0065716, abs=1e-7)  # exp(-5.025)
    assert s1.item() == pytest.approx(0.99997841, abs=1e-8)  # sqrt(1 - exp(-10.05))


def test_subvp_and_ve_marginals_match_hand_derived_values():
    t = torch.tensor(T_GRID, dtype=torch.float64)
    x = torch.full((len(T_GRID), 2), -1.5, dtype=torch.float64)
    mean, std = subVPSDE().marginal_prob(x, t)
    for i, ti in enumerate(T_GRID):
        B = integral_beta(ti)
        assert mean[i, 0].item() == pytest.approx(-1.5 * math.exp(-0.5 * B), rel=1e-12)
        assert std[i].item() == pytest.approx(1.0 - math.exp(-B), rel=1e-12)  # a std, not a variance
    mean, std = VESDE(sigma_min=0.01, sigma_max=50).marginal_prob(x, t)
    assert torch.equal(mean, x)
    for i, ti in enumerate(T_GRID):
        assert std[i].item() == pytest.approx(0.01 * 5000.0**ti, rel=1e-12)


def moments_by_integration(sde, t_end):
    """Integrate m' = f m, v' = 2 f v + g² (f = linear drift coefficient) from m(0) = 1, v(0) = 0."""

    def rhs(t, y):
        tt = torch.tensor([t], dtype=torch.float64)
        drift, g = sde.sde(torch.ones(1, 1, dtype=torch.float64), tt)
        f = drift.item()  # drift of x = 1 is the coefficient itself
        return [f * y[0], 2 * f * y[1] + g.item() ** 2]

    sol = integrate.solve_ivp(rhs, (0.0, t_end), [1.0, 0.0], rtol=1e-11, atol=1e-13, method="DOP853")
    return sol.y[0, -1], sol.y[1, -1]


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("t_end", [0.05, 0.4, 1.0])
def test_marginal_prob_solves_the_moment_equations_of_sde(sde, t_end):
    m, v = moments_by_integration(sde, t_end)
    mean, std = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), torch.tensor([t_end], dtype=torch.float64))
    assert mean.item() == pytest.approx(m, rel=1e-8)
    if isinstance(sde, VESDE):
        # score_sde_pytorch's VE marginal ignores the σ_min² of the t = 0 kernel.
        assert std.item() ** 2 - sde.sigma_min**2 == pytest.approx(v, rel=1e-7)
    else:
        assert std.item() ** 2 == pytest.approx(v, rel=1e-7)


def test_discrete_schedules():
    sde = VPSDE(beta_min=0.1, beta_max=20, N=1000)
    assert sde.discrete_betas.dtype == torch.float32 and sde.discrete_betas.shape == (1000,)
    assert sde.discrete_betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert sde.discrete_betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    assert sde.discrete_betas[1].item() - sde.discrete_betas[0].item() == pytest.approx(19.9 / 1000 / 999, rel=1e-4)
    torch.testing.assert_close(sde.alphas, 1 - sde.discrete_betas)
    torch.testing.assert_close(sde.alphas_cumprod, torch.cumprod(sde.alphas, 0))
    torch.testing.assert_close(sde.sqrt_1m_alphas_cumprod ** 2 + sde.sqrt_alphas_cumprod**2, torch.ones(1000))
    # Π(1 - β_i) = exp(Σ log(1 - β_i)) ≈ exp(-Σβ_i - ½Σβ_i²); Σβ_i = (β_0 + β_1)/2 = ∫_0^1 β and
    # ½Σβ_i² ≈ (β_0² + β_0(β_1 - β_0) + (β_1 - β_0)²/3) / (2N) = 0.0670.
    assert sde.alphas_cumprod[-1].item() == pytest.approx(math.exp(-integral_beta(1.0) - 0.0670), rel=2e-3)
    ve = VESDE(sigma_min=0.01, sigma_max=50, N=1000)
    assert ve.discrete_sigmas[0].item() == pytest.approx(0.01, rel=1e-5)
    assert ve.discrete_sigmas[-1].item() == pytest.approx(50.0, rel=1e-5)
    assert ve.discrete_sigmas[1].item() / ve.discrete_sigmas[0].item() == pytest.approx(5000 ** (1 / 999), rel=1e-5)


def test_discretize_uses_the_floor_of_t_times_n_minus_one():
    sde = VPSDE(N=1000)
    x = torch.ones(4, 1)
    # t (N - 1) = 0, 0.999, 499.5, 999: indices 0, 0, 499, 999.
    t = torch.tensor([0.0, 0.999 / 999, 0.5, 1.0])
    f, G = sde.discretize(x, t)
    idx = [0, 0, 499, 999]
    torch.testing.assert_close(G, torch.sqrt(sde.discrete_betas[idx]))
    torch.testing.assert_close(f[:, 0], torch.sqrt(sde.alphas[idx]) - 1)
    ve = VESDE(N=1000)
    f, G = ve.discretize(x, t)
    s = ve.discrete_sigmas
    expected = torch.stack([s[0], s[0], torch.sqrt(s[499] ** 2 - s[498] ** 2), torch.sqrt(s[999] ** 2 - s[998] ** 2)])
    torch.testing.assert_close(G, expected)
    assert torch.all(f == 0)


@pytest.mark.parametrize("sde", [VPSDE(N=4000), subVPSDE(N=4000), VESDE(N=4000)], ids=["vp", "subvp", "ve"])
def test_discretize_is_the_sde_over_one_step_for_small_dt(sde):
    """f ≈ drift/N and G² ≈ g²/N, to O(1/N) (the discrete grids have N - 1 intervals, the step size is 1/N)."""
    n = sde.N
    # Just after grid points t_k = k / (N - 1), so that the floor index is k and t ≈ t_k.
    t = (torch.arange(40, n - 1, 397, dtype=torch.float64) + 1e-6) / (n - 1)
    x = torch.linspace(-2, 2, len(t), dtype=torch.float64)[:, None]
    f, G = sde.discretize(x, t)
    drift, g = sde.sde(x, t)
    tol = 20.0 / n
    torch.testing.assert_close(f, drift / n, rtol=tol, atol=1e-12)
    torch.testing.assert_close(G**2, g**2 / n, rtol=tol, atol=1e-12)


def test_prior_logp_and_sampling():
    z = torch.randn(5, 3, 4, 2, dtype=torch.float64)
    for sde, scale in [(VPSDE(), 1.0), (subVPSDE(), 1.0), (VESDE(sigma_max=7.0), 7.0)]:
        expected = torch.distributions.Normal(0.0, scale).log_prob(z).sum(dim=(1, 2, 3))
        torch.testing.assert_close(sde.prior_logp(z), expected)
        torch.testing.assert_close(sde.prior_logp(z.reshape(5, -1)), expected)  # any number of data dims
        sample = sde.prior_sampling((20000, 3))
        assert sample.shape == (20000, 3)
        assert sample.std().item() == pytest.approx(scale, rel=0.02)


def test_reverse_sde_and_probability_flow():
    sde = VPSDE()
    x = torch.randn(6, 2, 3, 3)
    t = torch.rand(6)

    def score_fn(x, t):
        return -x * (1 + t[:, None, None, None])

    drift, g = sde.sde(x, t)
    g2 = g[:, None, None, None] ** 2
    r_drift, r_g = sde.reverse(score_fn).sde(x, t)
    torch.testing.assert_close(r_drift, drift - g2 * score_fn(x, t))
    torch.testing.assert_close(r_g, g)
    o_drift, o_g = sde.reverse(score_fn, probability_flow=True).sde(x, t)
    torch.testing.assert_close(o_drift, drift - 0.5 * g2 * score_fn(x, t))
    assert torch.all(o_g == 0)

    f, G = sde.discretize(x, t)
    rev = sde.reverse(score_fn)
    r_f, r_G = rev.discretize(x, t)
    torch.testing.assert_close(r_f, f - G[:, None, None, None] ** 2 * score_fn(x, t))
    torch.testing.assert_close(r_G, G)
    assert rev.N == sde.N and rev.T == sde.T


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_outputs_follow_the_dtype_of_the_input(sde, dtype):
    x = torch.randn(3, 2, 4, 4, dtype=dtype)
    t = torch.rand(3, dtype=dtype)
    for out in (*sde.sde(x, t), *sde.marginal_prob(x, t), *sde.discretize(x, t), sde.prior_logp(x)):
        assert out.dtype == dtype
    assert sde.discretize(x, t)[0].shape == x.shape


@pytest.mark.gpu
@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_sde_on_cuda_matches_cpu(sde):
    x = torch.randn(8, 2, 4, 4)
    t = torch.rand(8)
    for name in ("sde", "marginal_prob", "discretize"):
        cpu = getattr(sde, name)(x, t)
        gpu = getattr(sde, name)(x.cuda(), t.cuda())
        for a, b in zip(cpu, gpu):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b.cpu(), a)


def test_config_round_trip():
    for sde in (VPSDE(0.2, 15, 500), subVPSDE(), VESDE(0.02, 100, 2000)):
        again = get_sde(**sde.config())
        assert type(again) is type(sde) and again.config() == sde.config()
    assert isinstance(get_sde("VP_SDE"), VPSDE)
    assert isinstance(get_sde("SubVP_SDE"), subVPSDE)
    assert isinstance(get_sde("ve", sigma_max=10), VESDE)
    with pytest.raises(ValueError):
        get_sde("banana")


def test_float32_numbers_are_those_of_the_reference_formulas():
    """Pin a few float32 outputs to values computed independently in float64 (to 1e-6 relative)."""
    sde = VPSDE()
    t = torch.tensor([0.25, 0.9])
    x = torch.tensor([[1.0], [-3.0]])
    drift, g = sde.sde(x, t)
    beta = np.array([0.1 + 0.25 * 19.9, 0.1 + 0.9 * 19.9])
    np.testing.assert_allclose(drift[:, 0].numpy(), -0.5 * beta * np.array([1.0, -3.0]), rtol=1e-6)
    np.testing.assert_allclose(g.numpy(), np.sqrt(beta), rtol=1e-6)
    _, G = subVPSDE().sde(x, t)
    B = np.array([integral_beta(0.25), integral_beta(0.9)])
    np.testing.assert_allclose(G.numpy(), np.sqrt(beta * (1 - np.exp(-2 * B))), rtol=1e-6)
    _, G = VESDE().sde(x, t)
    np.testing.assert_allclose(G.numpy(), 0.01 * 5000 ** np.array([0.25, 0.9]) * np.sqrt(2 * np.log(5000)), rtol=1e-6)
