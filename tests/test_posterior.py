"""Diffusion posterior samplers on a linear-Gaussian problem, where the posterior is known exactly: a Gaussian
prior with its exact score (score.gaussian), a linear decoder, a linear operator and noise σ_y."""

import copy
import dataclasses
import math

import pytest
import torch

from dataloaders import MinMaxNormalizer
from inverse.posterior import LatentDiffusion, dps, langevin_step, start, time_grid
from score.gaussian import GaussianScoreModel
from score.prior import ScorePrior
from score.sde import VPSDE

DIM, PIXELS, OBSERVED, SIGMA_Y = 6, 8, 5, 0.1


class MatrixOperator:
    """y = M x for 'images' x (B, PIXELS): all misfit() needs."""

    def __init__(self, m: torch.Tensor, noise_std: float):
        self.m, self.noise_std = m, noise_std

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.m.T


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    sde = VPSDE(0.1, 20.0, 1000)
    model = GaussianScoreModel(1, 1, DIM, sde.config(), rank=3)
    basis, _ = torch.linalg.qr(torch.randn(DIM, 3, generator=g))
    model.mean.copy_(0.5 + 0.1 * torch.randn(DIM, generator=g))
    model.basis.copy_(basis)
    model.eigenvalues.copy_(torch.tensor([0.04, 0.02, 0.01]))
    model.residual.copy_(0.002 + 0.003 * torch.rand(DIM, generator=g))
    prior = ScorePrior(model, sde, layer=1, normalizer=MinMaxNormalizer(-1.0, 1.0))  # v = 2u - 1
    w = torch.randn(PIXELS, DIM, generator=g) / math.sqrt(DIM)  # the decoder D(v) = W v
    op = MatrixOperator(torch.randn(OBSERVED, PIXELS, generator=g) / math.sqrt(PIXELS), SIGMA_Y)
    v_true = prior.from_model_space(model.mean + basis @ (0.15 * torch.randn(3, generator=g)))
    y = op.A((v_true @ w.T)[None]) + SIGMA_Y * torch.randn(1, OBSERVED, generator=g)
    ld = LatentDiffusion(prior, lambda v: v.flatten(1) @ w.T)
    return ld, op, y, w, model


def exact_posterior(model, w, op, y, t: float, sde):
    """Mean and covariance of v = denorm(u / α_t) under the target of Langevin at level t: the prior perturbed to
    t (N(α μ, α² Σ + σ² I) in model space) times the likelihood with variance σ_y² + γ_t²."""
    mean_t, std_t = sde.marginal_prob(torch.ones(1, 1), torch.tensor([t]))
    a, s = float(mean_t), float(std_t)
    cov_u = model.basis @ torch.diag(model.eigenvalues) @ model.basis.T + torch.diag(model.residual)
    prior_cov = a**2 * cov_u.double() + s**2 * torch.eye(DIM, dtype=torch.float64)
    prior_mean = (a * model.mean).double()
    h = (op.m @ w).double() * 2 / a  # y = M W v, v = 2 u / α - 1
    offset = (op.m @ w).double() @ -torch.ones(DIM, dtype=torch.float64)
    lik_var = SIGMA_Y**2 + (s / a) ** 2
    precision = torch.linalg.inv(prior_cov) + h.T @ h / lik_var
    cov = torch.linalg.inv(precision)
    mean = cov @ (torch.linalg.solve(prior_cov, prior_mean) + h.T @ (y[0].double() - offset) / lik_var)
    return 2 * mean / a - 1, 4 * cov / a**2  # u -> v


def run_langevin(ld, op, y, scale, chains=1000, steps=800, eta=3e-4, t=1e-3):
    rng = noise(scale, chains)
    u = torch.full((chains, DIM, 1, 1), 0.5)
    ys = y.expand(chains, -1)
    for _ in range(steps):
        u = langevin_step(ld, op, ys, u, t, eta, SIGMA_Y, rng)
    a = float(ld.prior.sde.marginal_prob(torch.ones(1, 1), torch.tensor([t]))[0])
    return ld.prior.from_model_space(u / a).flatten(1).double()


def noise(scale: float, rows: int, seed: int = 1):
    """An rng for the samplers: ``rng(*shape)`` -> (rows, *shape) draws of scale · N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return lambda *shape: scale * torch.randn((rows, *shape), generator=g)


def moments_error(samples, mean, cov):
    emp_mean, emp_cov = samples.mean(0), torch.cov(samples.T)
    mean_err = float((emp_mean - mean).norm() / cov.diagonal().sum().sqrt())  # in posterior standard deviations
    cov_err = float((emp_cov - cov).norm() / cov.norm())
    return mean_err, cov_err


def test_langevin_at_the_last_level_samples_the_exact_posterior(problem):
    ld, op, y, w, model = problem
    mean, cov = exact_posterior(model, w, op, y, 1e-3, ld.prior.sde)
    mean_err, cov_err = moments_error(run_langevin(ld, op, y, 1.0), mean, cov)
    print(f"Langevin: mean error {mean_err:.3f} posterior std, covariance error {cov_err:.3f}")
    assert mean_err < 0.1 and cov_err < 0.15, (mean_err, cov_err)


@pytest.mark.parametrize("scale, why", [(0.0, "no noise term"), (1 / math.sqrt(2), "noise √η instead of √(2η)")])
def test_langevin_negative_controls_fail(problem, scale, why):
    # The same sampler with a broken noise term must miss the posterior covariance by far more than the tolerance.
    ld, op, y, w, model = problem
    mean, cov = exact_posterior(model, w, op, y, 1e-3, ld.prior.sde)
    _, cov_err = moments_error(run_langevin(ld, op, y, scale, chains=400, steps=600), mean, cov)
    assert cov_err > 0.3, f"{why}: covariance error only {cov_err:.3f}"


def test_dps_bias_on_the_linear_gaussian_problem(problem):
    """DPS is not an exact posterior sampler (Tweedie's estimate stands in for the posterior of x0 given x_t): its
    bias here is measured, not hidden. Mean within 1 posterior std; the covariance error is reported."""
    ld, op, y, w, model = problem
    mean, cov = exact_posterior(model, w, op, y, 1e-3, ld.prior.sde)
    samples = dps(ld, op, y.expand(500, -1), noise(1.0, 500, seed=2), steps=300, zeta=0.3)
    v = torch.as_tensor(samples).flatten(1).double()
    mean_err, cov_err = moments_error(v, mean, cov)
    print(f"DPS on the linear-Gaussian problem: mean error {mean_err:.3f} posterior std, covariance error "
          f"{cov_err:.3f} (relative Frobenius)")
    assert torch.isfinite(v).all() and mean_err < 1.0


class LinearSynthesis:
    """Stands in for G.synthesis: from 'layer 1' the image is W x (clamped to [-1, 1] by the solver)."""

    def __init__(self, w: torch.Tensor):
        self.w = w

    def forward_from(self, ws, layer, x, img, noises=None, noise_mode="const"):
        return (x.flatten(1) @ self.w.T).view(x.shape[0], 1, 1, PIXELS)


class ObservedOperator(MatrixOperator):
    def measurement_loss(self, ax: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (ax - y).square().sum(1) / OBSERVED  # the solver's per-row mean over observed entries


@pytest.mark.parametrize("noise_temp_factor, ok", [(1.0, True), (0.0, False)])
def test_sgilo_score_step_at_matched_temperature_is_langevin(problem, noise_temp_factor, ok):
    """A SGILO round with plain gradient steps and the 'score' prior step is ULA when lr·mse·2/m = η/σ_y²,
    gen_temperature·score_eps = η and gen_noise_temp = √(2η): it must reproduce the posterior (at t_hot); without
    its noise term (the negative control) it must not."""
    from types import SimpleNamespace

    from inverse.ilo import ImageRng, LayerPriors, Problem, Variables, run_round
    from inverse.settings import SolverSettings

    ld, _, y, w, model = problem
    t_hot = 1e-3
    prior = copy.copy(ld.prior)  # the fixture's prior keeps its own sampling settings
    prior.sampling = dataclasses.replace(prior.sampling, t_hot=t_hot)
    op = ObservedOperator(problem[1].m, SIGMA_Y)
    eta, chains = 3e-4, 1000
    settings = SolverSettings.build({
        "steps": [0, 800], "vars": "g", "optimizer": "sgd", "mse": 1.0, "lr": eta * OBSERVED / (2 * SIGMA_Y**2),
        "prior_step": "score", "score_eps": 1.0, "gen_temperature": eta, "latent_temperature": 0.0,
        "gen_noise_temp": noise_temp_factor * (2 * eta) ** 0.5, "geocross": 0.0, "chains": chains})
    fake_g = SimpleNamespace(synthesis=LinearSynthesis(w))
    prob = Problem(fake_g, lambda z: z, op, y.expand(chains, -1), geocross=None)
    v = Variables(z=torch.zeros(chains, 1, 1), noises=[], layer=1, x=torch.zeros(chains, DIM, 1, 1))
    rng = ImageRng(3, [0], chains, torch.device("cpu"))
    failed = torch.zeros(chains, dtype=torch.bool)
    run_round(prob, v, 1, settings, LayerPriors(layers={1: prior}), rng, failed, progress=False)
    # The target: prior perturbed to t_hot in model space, mapped to v; the plain likelihood (no γ term).
    mean_t, std_t = prior.sde.marginal_prob(torch.ones(1, 1), torch.tensor([t_hot]))
    a, s = float(mean_t), float(std_t)
    cov_u = model.basis @ torch.diag(model.eigenvalues) @ model.basis.T + torch.diag(model.residual)
    prior_cov = 4 * (a**2 * cov_u.double() + s**2 * torch.eye(DIM, dtype=torch.float64))  # v = 2u - 1
    prior_mean = 2 * a * model.mean.double() - 1
    h = (op.m @ w).double()
    precision = torch.linalg.inv(prior_cov) + h.T @ h / SIGMA_Y**2
    cov = torch.linalg.inv(precision)
    mean = cov @ (torch.linalg.solve(prior_cov, prior_mean) + h.T @ y[0].double() / SIGMA_Y**2)
    assert not bool(failed.any())
    mean_err, cov_err = moments_error(v.x.flatten(1).double(), mean, cov)
    print(f"SGILO score step (noise factor {noise_temp_factor}): mean error {mean_err:.3f}, cov error {cov_err:.3f}")
    if ok:
        assert mean_err < 0.1 and cov_err < 0.15, (mean_err, cov_err)
    else:
        assert cov_err > 0.3, cov_err


@pytest.mark.parametrize("t_start", [1.0, 0.05])
def test_time_grids(problem, t_start):
    """Both grids run from t_start to eps, strictly decreasing; the geometric one has σ_t/α_t in constant ratio."""
    ld = problem[0]
    linear = time_grid(ld, 11, 1e-3, t_start, "linear")
    assert linear[0] == t_start and linear[-1] == 1e-3 and all(b - a == pytest.approx(linear[1] - linear[0])
                                                               for a, b in zip(linear[:-1], linear[1:]))
    ts = time_grid(ld, 11, 1e-3, t_start, "geometric")
    assert ts[0] == t_start and ts[-1] == 1e-3 and all(a > b for a, b in zip(ts[:-1], ts[1:]))
    gammas = torch.tensor([ld.alpha_sigma(t)[1] / ld.alpha_sigma(t)[0] for t in ts], dtype=torch.float64)
    ratios = gammas[1:] / gammas[:-1]
    assert float(ratios.std() / ratios.mean()) < 1e-3, ratios
    with pytest.raises(ValueError, match="spacing"):
        time_grid(ld, 11, 1e-3, t_start, "cosine")


def test_sdedit_start_is_the_forward_marginal(problem):
    """With a clean start u_init and t_start < 1 the first state is α u_init + σ ξ (mean and spread over many
    draws); at t_start = 1, or without u_init, it is a draw of N(0, I) whatever u_init is."""
    ld = problem[0]
    rows = 4000
    u_init = torch.full((rows, DIM, 1, 1), 0.3)
    a, s = ld.alpha_sigma(0.05)
    u = start(ld, noise(1.0, rows), 0.05, u_init)
    assert float((u.mean(0) - a * 0.3).abs().max()) < 4 * s / rows**0.5
    assert float(u.std(0).mean()) == pytest.approx(s, rel=0.05)
    fresh = start(ld, noise(1.0, rows), 1.0, u_init)
    assert float(fresh.mean().abs()) < 0.02 and float(fresh.std()) == pytest.approx(1.0, rel=0.03)
    with pytest.raises(ValueError, match="t_start"):
        start(ld, noise(1.0, rows), 0.0, u_init)
