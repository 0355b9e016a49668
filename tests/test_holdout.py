"""holdout_fraction (inverse.holdout) on the tiny generator: held-out entries do not enter the fit, each chain ends
with the round of the lowest held-out error, the counts are those of the kept entries, bad fractions are refused."""

import pytest
import torch

from inverse.holdout import FitOperator, holdout_operator
from inverse.ilo import Problem, image_generator, solve
from inverse.operators import build_operator
from inverse.settings import SettingsError, SolverSettings
from stylegan.build import build_generator
from tests.test_ilo import TINY

SPARSE = {"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0.5}


@pytest.fixture(scope="module")
def tiny():
    return build_generator(TINY)


def refs(G, n: int) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1)


def settings(**extra) -> SolverSettings:
    return SolverSettings.build({"steps": [4, 4, 4], "lr": 0.1, "vars": ["nl", "nlg", "nlg"], "latent_init": "zeros",
                                 "holdout_fraction": 0.3, **extra})


def test_held_out_entries_do_not_enter_the_fit(tiny):
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    x = refs(G, 2)
    y = op.measure(x)
    held = holdout_operator(op, y, 0.3, [image_generator(3, i, stream=5) for i in (0, 1)])
    changed = y + (1 - held.keep) * 5.0  # garbage on the held-out entries only
    a = solve(Problem(G, proxy, op, y), settings(), seed=3, progress=False)
    b = solve(Problem(G, proxy, op, changed), settings(), seed=3, progress=False)
    for ra, rb in zip(a.rounds, b.rounds):  # the same path: only the choice of round may differ
        assert torch.allclose(ra, rb, atol=1e-6)
    plain = solve(Problem(G, proxy, op, y), settings(holdout_fraction=0.0), seed=3, progress=False)
    assert not torch.allclose(plain.rounds[-1], a.rounds[-1])  # ... and it is a different fit than with all of y


def test_each_chain_ends_with_its_best_round(tiny):
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    y = op.measure(refs(G, 2))
    sol = solve(Problem(G, proxy, op, y), settings(chains=2), image_ids=[0, 1], seed=5, progress=False)
    held = holdout_operator(op, y, 0.3, [image_generator(5, i, stream=5) for i in (0, 1)])
    rows = y.repeat_interleave(2, 0)
    errors = torch.stack([held.check_error(op.A(r.flatten(0, 1)), rows) for r in sol.rounds])  # (rounds, 4)
    best = errors.argmin(0)
    for row in range(4):
        i, k = divmod(row, 2)
        assert torch.equal(sol.final[i, k], sol.rounds[int(best[row])][i, k])


def test_counts_and_losses_use_the_kept_entries(tiny):
    G, _ = tiny
    op = build_operator(SPARSE, G.img_resolution)
    y = op.measure(refs(G, 2))
    keep = (torch.rand(y.shape[1:], generator=torch.Generator().manual_seed(0)) > 0.5).float().expand(2, -1, -1, -1)
    fit = FitOperator(op, keep.clone())
    observed = op.restrict_to_observed(torch.ones_like(y))
    assert torch.equal(fit.measurement_count(y), (observed * keep).flatten(1).sum(1))
    ax = y + 0.1
    assert torch.allclose(fit.measurement_loss(ax, y), torch.full((2,), 0.01), atol=1e-6)
    assert torch.allclose(fit.check_error(ax, y), torch.full((2,), 0.01), atol=1e-6)
    assert fit.measurement_loss(ax.repeat_interleave(3, 0), y.repeat_interleave(3, 0)).shape == (6,)  # 3 chains


def test_fraction_is_checked():
    for bad in (1.0, -0.1, "half", True):
        with pytest.raises(SettingsError, match="holdout_fraction"):
            SolverSettings.build({"steps": [1], "holdout_fraction": bad})
