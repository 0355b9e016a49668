"""BRGM (inverse/brgm.py): its prior terms against their definitions, the MAP point without data, the
variational hyperprior's analytic optimum, data fits that improve, chains, and the command line."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inverse.brgm import BrgmSettings, WStats, colinearity, inverse_gamma_nll, solve_brgm, w_prior
from inverse.ilo import Problem
from inverse.operators import build_operator
from stylegan.build import build_generator

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "ckpt": None, "gaussian_fit": None, "seed": 0, "fit_samples": 1000,
        "init": {"z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 32, "img_channels": 3,
                 "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 512, "channel_max": 32}}}


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    G, proxy = build_generator(TINY)
    return G, proxy, WStats.of(G.mapping, 2000, 123)


def problem_for(G, proxy, y, op, reference=None):
    return Problem(G, proxy, op, y, perceptual=None, reference=reference)


def test_colinearity_is_the_pairwise_cosine_sum():
    ws = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([sum(1 - torch.cosine_similarity(w[i], w[j], dim=0) for i in range(5) for j in range(5))
                            for w in ws])
    assert torch.allclose(colinearity(ws), expected, atol=1e-5)
    same = ws[:, :1].expand(-1, 5, -1) * torch.arange(1, 6.0)[None, :, None]  # colinear rows, any lengths
    assert torch.allclose(colinearity(same), torch.zeros(3), atol=1e-5)


def test_w_prior_uses_the_mean_and_the_scalar_std(tiny):
    G, _, stats = tiny
    assert stats.mean.shape == stats.std.shape == (G.w_dim,)
    assert torch.allclose(stats.scalar, stats.std.square().sum().sqrt(), rtol=1e-5)
    at_mean = stats.mean.expand(2, G.num_ws, -1)
    assert torch.allclose(w_prior(at_mean, stats), torch.zeros(2), atol=1e-10)
    one_sigma = at_mean + stats.scalar  # every coordinate one σ away
    assert torch.allclose(w_prior(one_sigma, stats), torch.ones(2), rtol=1e-5)


def test_inverse_gamma_matches_torch_distributions():
    x = torch.tensor([0.3, 1.0, 2.5])
    ig = torch.distributions.InverseGamma(torch.tensor(0.1), torch.tensor(0.95))
    assert torch.allclose(inverse_gamma_nll(x, 0.1, 0.95), -ig.log_prob(x), atol=1e-5)


def in_range_problem(G, proxy, seed=1, n=2):
    op = build_operator({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0.5,
                         "noise_std": 0.0}, 32, 3, seed=0)
    with torch.no_grad():
        reference = G(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)), None,
                      noise_mode="const").clamp(-1, 1)
    return problem_for(G, proxy, op.A(reference), op, reference)


@pytest.mark.parametrize("term", ["w", "colin"])
def test_each_prior_holds_the_fit_back_more_as_its_weight_grows(tiny, term):
    """The data pull ws away from μ (where they start) and the rows apart; a larger λ_w keeps them nearer μ, a
    larger λ_colin keeps them more colinear (a sign error or a lost term breaks the order)."""
    G, proxy, stats = tiny
    problem = in_range_problem(G, proxy)
    values = []
    for weight in (0.0, 100.0, 10_000.0) if term == "w" else (0.0, 0.01, 1.0):
        weights = {"w": 0.0, "colin": 0.0, term: weight}
        sol = solve_brgm(problem, BrgmSettings(steps=40, percept=0.0, **weights), stats, [0, 1], seed=0, chains=1,
                         progress=False)
        ws = proxy(sol.variables.z)
        values.append(float((w_prior(ws, stats) if term == "w" else colinearity(ws)).mean()))
    assert values[0] > values[1] > values[2], values
    assert values[2] < 0.5 * values[0], values


def test_map_fits_the_measurements(tiny):
    G, proxy, stats = tiny
    sol = solve_brgm(in_range_problem(G, proxy), BrgmSettings(steps=60, percept=0.0), stats, [0, 1], seed=0,
                     chains=1, progress=False)
    losses = sol.logs[0].row_losses
    assert losses.shape == (60, 2)
    assert (losses[-1] < 0.5 * losses[0]).all(), losses[[0, -1]]
    psnr = sol.logs[0].row_psnrs
    assert (psnr[-1] > psnr[0] + 1).all(), psnr[[0, -1]]
    assert sol.final.shape == (2, 1, 3, 32, 32) and not sol.failed.any()


def test_variational_hyperprior_alone_reaches_its_mode(tiny):
    """With every energy weight 0, s only feels −log IG(s/2; α, β), minimal at s = 2β / (α + 1)."""
    G, proxy, stats = tiny
    op = build_operator({"operator_type": "dummy", "noise_std": 0.0}, 32, 3)
    s = BrgmSettings(steps=150, lr=0.3, pixel=0.0, percept=0.0, w=0.0, colin=0.0, variational=True, samples=2)
    y = torch.zeros(1, 3, 32, 32)
    import inverse.brgm as brgm

    fit = brgm._optimise(problem_for(G, proxy, y, op), y, None, [torch.zeros(1, *shape[1:]) for shape in
                         G.synthesis.noise_shapes()], stats, s, brgm.ImageRng(0, [0], 1, y.device), False)
    mode = 2 * 0.95 / 1.1
    assert torch.allclose(fit.spread, torch.full_like(fit.spread, mode), rtol=0.02), fit.spread.flatten()[:5]


def test_variational_chains_are_draws_of_the_fitted_posterior(tiny):
    G, proxy, stats = tiny
    op = build_operator({"operator_type": "downsampler", "factor": 4, "noise_std": 0.0}, 32, 3)
    with torch.no_grad():
        reference = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2)), None,
                      noise_mode="const").clamp(-1, 1)
    problem = problem_for(G, proxy, op.A(reference), op, reference)
    s = BrgmSettings(steps=20, percept=0.0, variational=True, samples=3)
    three = solve_brgm(problem, s, stats, [5], seed=0, chains=3, progress=False)
    one = solve_brgm(problem, s, stats, [5], seed=0, chains=1, progress=False)
    assert three.final.shape == (1, 3, 3, 32, 32)
    assert three.logs[0].row_psnrs.shape == (20, 3)  # one curve per row of the output (the draws share theirs)
    assert float(three.std.mean()) > 1e-3  # K draws differ
    # K = 1 is the posterior mean m; the mean of K draws scatters around it.
    assert float((one.final[:, 0] - three.mean).abs().mean()) < float(three.std.mean())


def test_bad_settings_are_refused_before_any_work():
    from hydra import compose, initialize_config_dir

    from inverse.methods import build_method
    from utils import UserError

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for override, fragment in [("brgm.steps=-1", "brgm.steps must be an integer >= 0"),
                                   ("brgm.sigma_prior=[0.1]", "brgm.sigma_prior must be"),
                                   ("brgm.variational=3", "brgm.variational must be true or false"),
                                   ("+brgm.lamda=1", r"brgm: unknown setting\(s\) \['lamda'\]")]:
            with pytest.raises(UserError, match=fragment):
                build_method(compose("solve_inverse", overrides=["method=brgm", override]))


def test_variational_brgm_from_the_command_line(tmp_path):
    """A user's run: method=brgm with the variational posterior and two chains writes the mean and std images;
    (bad settings: test_bad_settings_are_refused_before_any_work; the one-line form of every UserError is tested
    for all entry scripts in test_solve_cli)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "solve_inverse.py", "generator=tiny", "generator.fit_samples=1000",
                           "method=brgm", "brgm.steps=3", "brgm.samples=2", "brgm.variational=true", "chains=2",
                           "input_source=generator", "num_images=1", "num_threads=1", "progress=false",
                           f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"][0]["psnr"] is not None
    name = metrics["images"][0]["name"]
    assert (out / "images" / name / "std.png").is_file() and (out / "images" / name / "mean.png").is_file()


def test_settings_defaults_are_the_published_weights():
    s = BrgmSettings()
    assert math.isclose(s.pixel, 0.001 * 127.5**2)
    assert math.isclose(s.percept, 1e7 / 7_995_392)
    assert (s.w, s.colin, s.lr, s.steps, s.samples) == (100.0, 0.1, 0.1, 501, 6)
