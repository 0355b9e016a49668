"""score.samplers and score.likelihood against exact scores of known distributions, and end to end on a
small Gaussian mixture.

Sampler accuracy is checked on whitened samples y = L⁻¹(x - μ) (Σ = L Lᵀ) of a correlated 2-D Gaussian,
whose mean should be 0 and covariance I. With n samples the standard errors are 1/√n for the mean and
≈ √(2/n) for the diagonal of the covariance; the tolerances below are about five of them, and a negative
control checks that a slightly wrong score is caught.
"""

import math

import pytest
import torch
from torch import nn

from score.likelihood import bits_per_dim, divergence_estimate, hutchinson_probe, ode_log_likelihood
from score.losses import ExponentialMovingAverage, get_sde_loss_fn, train_step
from score.models import get_score_fn
from score.samplers import (
    CORRECTORS,
    PREDICTORS,
    get_corrector,
    get_predictor,
    hot_sampler,
    ode_sampler,
    pc_sampler,
)
from score.sde import VESDE, VPSDE, subVPSDE


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tensors are tiny: one thread avoids OpenMP spin-waits, which slow them down badly on a busy
    2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

MU = torch.tensor([1.0, -0.5])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])


def gaussian_score(sde, mu, cov):
    """Exact score of p_t when p_0 = N(mu, cov): -(Σ_t)⁻¹ (x - a_t mu), Σ_t = a_t² cov + std_t² I."""
    lam, Q = torch.linalg.eigh(cov.double())

    def score_fn(x, t):
        a = sde.marginal_prob(torch.ones_like(x), t)[0]  # (N, D): the mean scale a_t
        std = sde.marginal_prob(torch.zeros_like(x), t)[1]
        y = (x - a * mu.to(x)) @ Q.to(x)
        y = y / (a**2 * lam.to(x) + std[:, None] ** 2)
        return -(y @ Q.T.to(x))

    return score_fn


def gaussian_logpdf(x, mu, cov):
    return torch.distributions.MultivariateNormal(mu.to(x), covariance_matrix=cov.to(x)).log_prob(x)


def whitened_moment_errors(x, mu=MU, cov=COV):
    """(max |mean|, max |cov - I|) of the samples whitened by the target distribution."""
    L = torch.linalg.cholesky(cov.double())
    y = torch.linalg.solve_triangular(L, (x.double() - mu.double()).T, upper=False).T
    return y.mean(0).abs().max().item(), (torch.cov(y.T) - torch.eye(2, dtype=y.dtype)).abs().max().item()


N_SAMPLES = 10_000
MEAN_TOL = 0.05  # 5 / √n
COV_TOL = 0.075  # ≈ 5 √(2/n), plus room for the O(1/N) bias of the discretisation
# Unadjusted Langevin inflates the variance along the narrow direction by ≈ ε / 2λ_min: measured with
# 2·10⁵ samples, the whitened covariance error is 0.047 at snr 0.16 (score_sde_pytorch's CIFAR setting) and
# 0.014 at snr 0.08, which the PC tests use so that the tolerance stays dominated by sampling error.


PC_CASES = {
    "vp-em+langevin": (VPSDE(), "euler_maruyama", "langevin"),
    "vp-em": (VPSDE(), "euler_maruyama", "none"),
    "vp-reverse_diffusion+langevin": (VPSDE(), "reverse_diffusion", "langevin"),
    "subvp-em": (subVPSDE(), "euler_maruyama", "none"),
    "ve-reverse_diffusion+langevin": (VESDE(), "reverse_diffusion", "langevin"),
}


@pytest.mark.parametrize("case", sorted(PC_CASES))
def test_pc_sampler_reproduces_a_gaussian(case):
    sde, predictor, corrector = PC_CASES[case]
    torch.manual_seed(0)
    x, nfe = pc_sampler(
        gaussian_score(sde, MU, COV), sde, (N_SAMPLES, 2), predictor=predictor, corrector=corrector, snr=0.08,
        progress=False,
    )
    assert x.shape == (N_SAMPLES, 2) and x.dtype == torch.float32
    assert nfe == sde.N * ((predictor != "none") + (corrector != "none"))
    mean_err, cov_err = whitened_moment_errors(x)
    assert mean_err < MEAN_TOL and cov_err < COV_TOL, (mean_err, cov_err)


def test_the_moment_check_catches_a_slightly_wrong_score():
    """Negative control: a score for N(μ + 0.1, 1.15 Σ) must fail the same tolerances."""
    sde = VPSDE()
    torch.manual_seed(0)
    wrong = gaussian_score(sde, MU + 0.1, 1.15 * COV)
    x, _ = pc_sampler(wrong, sde, (N_SAMPLES, 2), corrector="none", progress=False)
    mean_err, cov_err = whitened_moment_errors(x)
    assert mean_err > MEAN_TOL and cov_err > COV_TOL, (mean_err, cov_err)


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_ode_sampler_reproduces_a_gaussian(sde):
    torch.manual_seed(0)
    x, nfe = ode_sampler(gaussian_score(sde, MU, COV), sde, (N_SAMPLES, 2))
    assert x.dtype == torch.float32 and 10 < nfe < 1000
    mean_err, cov_err = whitened_moment_errors(x)
    # The flow is deterministic: only the n prior samples contribute noise, hence the sampling tolerances.
    assert mean_err < MEAN_TOL and cov_err < COV_TOL, (mean_err, cov_err)


def test_ode_sampler_decodes_the_latent_of_the_likelihood_ode():
    """data -> z (likelihood ODE, forward) -> data (sampler ODE, backward) is the identity."""
    sde = VPSDE()
    score_fn = gaussian_score(sde, MU, COV)
    torch.manual_seed(1)
    data = (MU + torch.randn(6, 2) @ torch.linalg.cholesky(COV).T).double()
    _, z, _ = ode_log_likelihood(score_fn, sde, data, eps=1e-3, rtol=1e-8, atol=1e-8)
    back, _ = ode_sampler(score_fn, sde, data.shape, x=z, eps=1e-3, rtol=1e-8, atol=1e-8)
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, data, rtol=0, atol=1e-5)


def marginal_logpdf(sde, x, t, mu, cov):
    """log p_t(x) for p_0 = N(mu, cov): N(a_t mu, a_t² cov + std_t² I)."""
    tt = torch.full((1,), t, dtype=torch.float64)
    a = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), tt)[0].item()
    std = sde.marginal_prob(torch.zeros(1, 1, dtype=torch.float64), tt)[1].item()
    return gaussian_logpdf(x, a * mu, a**2 * cov + std**2 * torch.eye(len(mu)))


def flow_reference(sde, data, z, mu, cov, eps):
    """What the ODE likelihood must return for an exact score: the flow carries p_eps(data) to p_T(z), and the
    estimate swaps the true p_T for the N(0, I) prior: log p_eps(x) + log N(z; 0, I) - log p_T(z)."""
    return marginal_logpdf(sde, data, eps, mu, cov) + sde.prior_logp(z) - marginal_logpdf(sde, z, sde.T, mu, cov)


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE()], ids=["vp", "subvp"])
def test_ode_likelihood_of_a_diagonal_gaussian_is_exact(sde):
    """For a diagonal covariance the drift's Jacobian is diagonal: a Rademacher probe gives the exact trace."""
    mu = torch.tensor([0.5, -1.0, 0.0])
    cov = torch.diag(torch.tensor([0.3, 1.0, 2.0]))
    torch.manual_seed(2)
    data = (mu + torch.randn(5, 3) * cov.diagonal().sqrt()).double()
    logp, z, nfe = ode_log_likelihood(gaussian_score(sde, mu, cov), sde, data, hutchinson_type="rademacher")
    assert z.shape == data.shape and nfe > 10
    torch.testing.assert_close(logp, flow_reference(sde, data, z, mu, cov, 1e-5), rtol=0, atol=1e-4)
    # Against the data density itself the estimate is off by the prior mismatch, ≈ a_T |mu| |z| with
    # a_T = exp(-5.025) = 0.0066 for the default VP SDE (score_sde_pytorch's convention, kept).
    torch.testing.assert_close(logp, gaussian_logpdf(data, mu, cov), rtol=0, atol=0.03)


def test_ode_likelihood_of_a_correlated_gaussian_with_gaussian_probes():
    """Off-diagonal Jacobian terms make one probe noisy (std ≈ 1.5 nats here); the mean over 4000 probes per
    point must land within five standard errors of the exact value."""
    sde = VPSDE()
    torch.manual_seed(3)
    points = (MU + torch.randn(3, 2) @ torch.linalg.cholesky(COV).T).double()
    data = points.repeat_interleave(4000, dim=0)
    logp, z, _ = ode_log_likelihood(gaussian_score(sde, MU, COV), sde, data, hutchinson_type="gaussian",
                                    rtol=1e-4, atol=1e-4)
    reference = flow_reference(sde, data, z, MU, COV, 1e-5).reshape(3, 4000).mean(1)
    per_point = logp.reshape(3, 4000)
    standard_error = per_point.std(1) / math.sqrt(4000)
    assert ((per_point.mean(1) - reference).abs() < 5 * standard_error).all()
    assert (standard_error < 0.05).all()


def test_bits_per_dim_conventions():
    sde = VPSDE()
    score_fn = gaussian_score(sde, MU, COV)
    data = MU[None].double().repeat(2, 1)
    probe = hutchinson_probe(data)
    logp, _, _ = ode_log_likelihood(score_fn, sde, data, probe=probe)
    plain, _, _ = bits_per_dim(score_fn, sde, data, probe=probe)
    torch.testing.assert_close(plain, -logp / (2 * math.log(2)))
    # Centred 8-bit images ([-1, 1] <-> [0, 1]): +7 bits; data already in [0, 1]: +8 bits.
    centred, _, _ = bits_per_dim(score_fn, sde, data, probe=probe, inverse_scaler=lambda v: (v + 1) / 2)
    unit, _, _ = bits_per_dim(score_fn, sde, data, probe=probe, inverse_scaler=lambda v: v)
    torch.testing.assert_close(centred, plain + 7)
    torch.testing.assert_close(unit, plain + 8)


def test_hutchinson_estimate_is_unbiased():
    torch.manual_seed(4)
    A = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(1, 4, dtype=torch.float64).repeat(20000, 1)
    for kind in ("rademacher", "gaussian"):
        probe = hutchinson_probe(x, kind)
        est = divergence_estimate(lambda v, t: torch.tanh(v) @ A.T, x, torch.zeros(len(x)), probe)
        exact = (A * (1 - torch.tanh(x[0]) ** 2)[None, :]).trace()
        assert est.mean().item() == pytest.approx(exact.item(), abs=5 * est.std().item() / math.sqrt(len(x)))
    with pytest.raises(ValueError):
        hutchinson_probe(x, "uniform")


# -- hot sampler ---------------------------------------------------------------------------------------


def test_hot_sampler_one_published_step_is_the_euler_maruyama_update():
    """EM + ALD at t = 0.01, snr 1e-4: x -> x + β(t)/N (x/2 + s(x)) up to the ALD noise (≈ 1e-5)."""
    sde = VPSDE()
    mu, cov = torch.zeros(8), torch.eye(8) * 0.25
    score_fn = gaussian_score(sde, mu, cov)
    torch.manual_seed(5)
    x = torch.randn(64, 8, dtype=torch.float64)
    out, nfe = hot_sampler(x, score_fn, sde, t=0.01, hot_steps=1, predictor="euler_maruyama", corrector="ald",
                           snr=1e-4)
    assert nfe == 2
    t = torch.full((64,), 0.01, dtype=torch.float64)
    beta = 0.1 + 0.01 * 19.9
    expected = x + beta / sde.N * (0.5 * x + score_fn(x, t))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    assert (out - x).abs().max() > 1e-3  # it did move
    # the ALD noise is there but tiny: √(2ε), ε = 2 (snr · std_t)² α
    std = sde.marginal_prob(x, t)[1][0].item()
    assert (out - expected).std().item() == pytest.approx(math.sqrt(4 * (1e-4 * std) ** 2 * (1 - 0.1 / 1000)), rel=0.2)


@pytest.mark.parametrize(
    "predictor,corrector,snr,steps",
    [("euler_maruyama", "ald", 5e-3, 400), ("euler_maruyama", "langevin", 0.16, 100), ("none", "langevin", 0.16, 50)],
)
def test_hot_sampler_moves_perturbed_samples_towards_high_density(predictor, corrector, snr, steps):
    sde = VPSDE()
    mu, cov = torch.zeros(16), 0.1 * torch.eye(16)
    score_fn = gaussian_score(sde, mu, cov)
    torch.manual_seed(6)
    clean = torch.randn(256, 16) * math.sqrt(0.1)
    perturbed = clean + 0.8 * torch.randn(256, 16)
    out, _ = hot_sampler(perturbed, score_fn, sde, t=0.01, hot_steps=steps, predictor=predictor,
                         corrector=corrector, snr=snr)
    before = gaussian_logpdf(perturbed, mu, cov)
    after = gaussian_logpdf(out, mu, cov)
    assert (after > before).float().mean() > 0.95
    assert after.mean() > before.mean() + 0.25 * (gaussian_logpdf(clean, mu, cov).mean() - before.mean())


def test_hot_sampler_leaves_typical_samples_typical():
    """At the target, Langevin at fixed small t keeps the distribution (no collapse onto the mode).

    A small snr keeps the step-size bias of unadjusted Langevin (≈ ε / 2λ_min of the variance) well below
    the tolerance; at snr 0.16 it is ≈ 5 % along the narrow direction of this Gaussian.
    """
    sde = VPSDE()
    score_fn = gaussian_score(sde, MU, COV)
    torch.manual_seed(7)
    x = MU + torch.randn(N_SAMPLES, 2) @ torch.linalg.cholesky(COV).T
    out, _ = hot_sampler(x, score_fn, sde, hot_steps=20, predictor="none", corrector="langevin", snr=0.05)
    mean_err, cov_err = whitened_moment_errors(out)
    assert mean_err < MEAN_TOL and cov_err < COV_TOL


# -- registries, dtype, end to end ------------------------------------------------------------------------


def test_registries():
    assert {"euler_maruyama", "reverse_diffusion", "none"} <= set(PREDICTORS)
    assert {"langevin", "ald", "none"} <= set(CORRECTORS)
    assert get_predictor(None) is PREDICTORS["none"] and get_corrector(None) is CORRECTORS["none"]
    with pytest.raises(ValueError, match="registered"):
        get_predictor("heun")
    with pytest.raises(ValueError, match="registered"):
        get_corrector("hmc")


def test_samplers_keep_dtype_and_accept_a_start():
    sde = VPSDE(N=20)
    score_fn = gaussian_score(sde, MU, COV)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    x, nfe = pc_sampler(score_fn, sde, x0.shape, x=x0.clone(), progress=False)
    assert x.dtype == torch.float64 and nfe == 40
    y, _ = pc_sampler(score_fn, sde, (4, 2), dtype=torch.float64, predictor="none", corrector="none",
                      progress=False, x=x0.clone())
    torch.testing.assert_close(y, x0)  # no steps: the start comes back


def test_samplers_with_a_vit_on_layer_shaped_batches():
    from score.models import small_vit

    torch.manual_seed(10)
    sde = VPSDE(N=100)  # Euler–Maruyama needs β_max / N well below 1
    score_fn = get_score_fn(sde, small_vit((6, 4, 4), dim=32, depth=1))
    x = torch.rand(2, 6, 4, 4)
    for sample, nfe in (
        pc_sampler(score_fn, sde, (2, 6, 4, 4), corrector="ald", snr=5e-3, n_steps=2, progress=False),
        hot_sampler(x, score_fn, sde, hot_steps=5, snr=5e-3),
        ode_sampler(score_fn, sde, (2, 6, 4, 4), rtol=1e-3, atol=1e-3, denoise=True),
    ):
        assert sample.shape == (2, 6, 4, 4) and torch.isfinite(sample).all() and nfe > 0
    bpd, z, _ = bits_per_dim(score_fn, sde, x, rtol=1e-3, atol=1e-3)
    assert bpd.shape == (2,) and z.shape == x.shape and torch.isfinite(bpd).all()


class TinyScoreNet(nn.Module):
    """A small MLP noise predictor for 2-D data, conditioned on Fourier features of t."""

    def __init__(self, hidden=128, n_freq=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(n_freq) * 4)
        self.net = nn.Sequential(
            nn.Linear(2 + 2 * n_freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)
        )

    def forward(self, x, t):
        angles = t[:, None] * self.freqs * (2 * math.pi)
        return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=-1))


MODES = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


@pytest.mark.slow  # > 15 s; the fast tier must stay under 5 minutes
def test_training_on_a_gaussian_mixture_lands_samples_on_the_modes():
    torch.manual_seed(8)

    def mixture(n):
        return MODES[torch.randint(0, 4, (n,))] + 0.1 * torch.randn(n, 2)

    sde = VPSDE()
    model = TinyScoreNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ema = ExponentialMovingAverage(model.parameters(), decay=0.99)
    loss_fn = get_sde_loss_fn(sde)
    losses = [
        train_step(model, mixture(512), optimizer, loss_fn, step, lr=3e-3, warmup=50, grad_clip=1.0, ema=ema).item()
        for step in range(2500)
    ]
    first, last = sum(losses[:50]) / 50, sum(losses[-100:]) / 100
    assert last < 0.5 * first, (first, last)  # measured ≈ 0.63 -> 0.17

    ema.copy_to(model.parameters())
    x, _ = pc_sampler(get_score_fn(sde, model), VPSDE(N=200), (2000, 2), snr=0.16, progress=False)
    dist = torch.cdist(x, MODES)
    nearest = dist.argmin(1)
    assert (dist.min(1).values < 0.35).float().mean() > 0.95  # measured 0.989-0.994 over 4 seeds
    shares = torch.bincount(nearest, minlength=4).float() / len(x)
    assert shares.min() > 0.15 and shares.max() < 0.35, shares
    spread = (x - MODES[nearest]).std().item()
    assert 0.05 < spread < 0.15, spread  # the modes' std is 0.1; measured 0.094-0.098 over 4 seeds


@pytest.mark.gpu
def test_samplers_and_likelihood_run_on_cuda_like_on_cpu():
    from score.models import small_vit

    torch.manual_seed(9)
    sde = VPSDE(N=50)
    model = small_vit((4, 4, 4)).eval()
    x = torch.randn(3, 4, 4, 4)
    outputs = {}
    for device in ("cpu", "cuda"):
        m = model.to(device)
        score_fn = get_score_fn(sde, m)
        pc, _ = pc_sampler(score_fn, sde, (3, 4, 4, 4), device=device, progress=False)
        hot, _ = hot_sampler(x.to(device), score_fn, sde, hot_steps=5, snr=5e-3)
        assert pc.device.type == hot.device.type == device and torch.isfinite(pc).all()
        ode, _ = ode_sampler(score_fn, sde, x.shape, x=x.to(device), rtol=1e-4, atol=1e-4)
        probe = hutchinson_probe(x)
        logp, _, _ = ode_log_likelihood(score_fn, sde, x.to(device), probe=probe, rtol=1e-4, atol=1e-4)
        outputs[device] = (ode.cpu(), logp.cpu())
    torch.testing.assert_close(outputs["cuda"][0], outputs["cpu"][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(outputs["cuda"][1], outputs["cpu"][1], rtol=1e-3, atol=1e-2)
