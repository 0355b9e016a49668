"""score.gaussian: the exact score of a low-rank-plus-diagonal Gaussian under the VP-SDE, its fit, the
Gaussian-residual ViT (equal to the Gaussian before training) and the fitting command."""

from pathlib import Path

import torch

from score.gaussian import GaussianResidualViT, GaussianScoreModel
from score.prior import ScorePrior
from score.sde import VPSDE

ROOT = Path(__file__).resolve().parents[1]


def dense_score(model: GaussianScoreModel, x: torch.Tensor, t: float) -> torch.Tensor:
    """-(α² Σ + σ² I)⁻¹ (x − α μ) with Σ built densely: what the Woodbury solve must equal."""
    a = float(torch.exp(model.sde.log_mean_coeff(torch.tensor([t]))))
    s2 = 1 - a**2
    cov = (model.basis @ torch.diag(model.eigenvalues) @ model.basis.T + torch.diag(model.residual)).double()
    cov_t = a**2 * cov + s2 * torch.eye(model.dim, dtype=torch.float64)
    r = x.flatten(1).double() - a * model.mean.double()
    return -torch.linalg.solve(cov_t, r.T).T


def test_woodbury_score_equals_the_dense_gaussian_score():
    sde = VPSDE(0.1, 20.0, 1000)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(500, 12, generator=g) @ torch.randn(12, 12, generator=g) * 0.1 + 0.3
    model = GaussianScoreModel(2, 2, 3, sde.config(), rank=4).fit(data)
    x = torch.randn(5, 3, 2, 2, generator=g) * 0.2
    for t in (0.001, 0.05, 0.5, 1.0):
        std = float(torch.sqrt(1 - torch.exp(2 * sde.log_mean_coeff(torch.tensor([t])))))
        score = -model(x, torch.full((5,), t)) / std  # the ScorePrior convention
        torch.testing.assert_close(score.flatten(1).double(), dense_score(model, x, t), rtol=1e-4, atol=1e-4)


def test_fit_recovers_mean_and_covariance():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(8, 8, generator=g)
    data = torch.randn(20000, 8, generator=g) @ mix.T * 0.1 + 0.5
    model = GaussianScoreModel(1, 1, 8, VPSDE().config(), rank=8).fit(data)
    cov = model.basis @ torch.diag(model.eigenvalues) @ model.basis.T + torch.diag(model.residual)
    torch.testing.assert_close(model.mean, torch.full((8,), 0.5), atol=0.01, rtol=0)
    torch.testing.assert_close(cov, mix @ mix.T * 0.01, atol=0.01, rtol=0.05)
    assert model.log_likelihood(data[:10]).shape == (10,)


def test_residual_vit_starts_as_the_gaussian_and_round_trips():
    sde = VPSDE()
    model = GaussianResidualViT(4, 4, 8, sde.config(), rank=3, patch_size=1, dim=16, depth=1, heads=2,
                                mlp_dim=16, dim_head=8)
    model.fit(torch.rand(64, 8, 4, 4))
    x, t = torch.rand(3, 8, 4, 4), torch.full((3,), 0.2)
    torch.testing.assert_close(model(x, t), model.gaussian(x, t))
    from dataloaders import MinMaxNormalizer

    prior = ScorePrior(model, sde, layer=1, normalizer=MinMaxNormalizer(0.0, 1.0))
    again = ScorePrior.from_checkpoint(prior.checkpoint())
    torch.testing.assert_close(again.model(x, t), model(x, t))
    assert again.device == torch.device("cpu")


def test_fitting_command_writes_a_prior_once(tmp_path, capsys):
    import pytest

    from score.gaussian import main

    out = tmp_path / "g.pt"
    argv = [str(ROOT / "configs" / "trained_networks" / "demo_gauss_layer1.yaml"), str(out), "--samples", "256"]
    main(argv)
    prior = ScorePrior.load(out)
    assert prior.layer == 1 and type(prior.model).__name__ == "GaussianScoreModel" and prior.step == 256
    with pytest.raises(SystemExit, match="exists; not overwriting"):
        main(argv)


def test_fitting_command_on_stored_latents(tmp_path):
    """--latents: fit on saved features (inverted images) instead of G1(z); a wrong shape is one clear error."""
    import pytest

    from dataloaders import save_latents
    from score.gaussian import main

    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        (tmp_path / "run" / str(i)).mkdir(parents=True)
        save_latents(tmp_path / "run" / str(i) / "latents_layer1.pt", 2.0 + torch.randn(40, 64, 4, 4, generator=gen),
                     layer=1)
    out = tmp_path / "g.pt"
    config = str(ROOT / "configs" / "trained_networks" / "demo_gauss_layer1.yaml")
    main([config, str(out), "--latents", str(tmp_path / "run"), "--samples", "100"])
    prior = ScorePrior.load(out)
    assert prior.step == 100 and prior.layer == 1
    assert abs(float(prior.normalizer.denormalize(prior.model.mean).mean()) - 2.0) < 0.05  # fitted on the files
    save_latents(tmp_path / "bad.pt", torch.zeros(4, 64, 8, 8), layer=1)
    with pytest.raises(SystemExit, match=r"stored latents have shape \[64, 8, 8\], layer 1 needs \[64, 4, 4\]"):
        main([config, str(tmp_path / "g2.pt"), "--latents", str(tmp_path / "bad.pt")])


def test_mixture_score_is_the_gradient_of_the_mixture_log_density():
    """GaussianMixtureScoreModel: log p_t of each component equals the dense log N(x; α μ, α² Σ + σ² I), and the
    noise prediction is −σ ∇ log Σ_i w_i N_i, the gradient of the dense mixture (autograd)."""
    from score.gaussian import GaussianMixtureScoreModel

    sde = VPSDE(0.1, 20.0, 1000)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(400, 12, generator=g) @ torch.randn(12, 12, generator=g) * 0.1 + 0.3
    b = torch.randn(200, 12, generator=g) * 0.2 - 0.2
    model = GaussianMixtureScoreModel(2, 2, 3, sde.config(), rank=4, components=2).fit([a, b])
    torch.testing.assert_close(model.log_weights.exp(), torch.tensor([2 / 3, 1 / 3]))
    x = torch.cat([a[:3], b[:3]]).reshape(6, 3, 2, 2) + 0.05 * torch.randn(6, 3, 2, 2, generator=g)
    for t in (0.001, 0.05, 0.5):
        alpha = float(torch.exp(sde.log_mean_coeff(torch.tensor([t]))))
        std = (1 - alpha**2) ** 0.5
        dense = []
        for part in model.parts:
            cov = (part.basis @ torch.diag(part.eigenvalues) @ part.basis.T + torch.diag(part.residual)).double()
            dense.append(torch.distributions.MultivariateNormal(
                alpha * part.mean.double(), alpha**2 * cov + std**2 * torch.eye(12, dtype=torch.float64)))
        tt = torch.full((6,), t)
        for part, dist in zip(model.parts, dense):
            log_p, _ = part.marginal_log_density(x, tt)
            torch.testing.assert_close(log_p.double(), dist.log_prob(x.flatten(1).double()), rtol=1e-4, atol=1e-3)
        xd = x.flatten(1).double().requires_grad_(True)
        mix = torch.logsumexp(torch.stack([d.log_prob(xd) for d in dense], 1) + model.log_weights.double(), 1)
        (grad,) = torch.autograd.grad(mix.sum(), xd)
        torch.testing.assert_close((-model(x, tt) / std).flatten(1).double(), grad, rtol=1e-3, atol=1e-3)
    rho = model.responsibilities(x, torch.full((6,), 0.001))
    assert (rho[:3, 0] > 0.5).all() and (rho[3:, 1] > 0.5).all()  # each point is claimed by its own source


def test_mixture_of_one_is_the_gaussian_and_round_trips():
    from dataloaders import MinMaxNormalizer
    from score.gaussian import GaussianMixtureScoreModel

    sde = VPSDE()
    data = torch.rand(64, 8, 2, 2)
    one = GaussianMixtureScoreModel(2, 2, 8, sde.config(), rank=3, components=1).fit([data])
    plain = GaussianScoreModel(2, 2, 8, sde.config(), rank=3).fit(data)
    x, t = torch.rand(3, 8, 2, 2), torch.full((3,), 0.2)
    torch.testing.assert_close(one(x, t), plain(x, t))
    prior = ScorePrior(one, sde, layer=1, normalizer=MinMaxNormalizer(0.0, 1.0))
    again = ScorePrior.from_checkpoint(prior.checkpoint())
    torch.testing.assert_close(again.model(x, t), one(x, t))


def test_mixture_fitting_command_needs_both_sources(tmp_path):
    """model.name gaussian_mixture: G1(z) features and --latents, one component each; without --latents one
    clear error line."""
    import pytest

    from dataloaders import save_latents
    from score.gaussian import main

    config = str(ROOT / "configs" / "trained_networks" / "demo_mix_gauss_layer1.yaml")
    with pytest.raises(SystemExit, match="error: a gaussian_mixture prior is fitted on G1.z. features and --latents"):
        main([config, str(tmp_path / "m.pt"), "--samples", "128"])
    save_latents(tmp_path / "latents_layer1.pt", 2.0 + torch.randn(100, 64, 4, 4), layer=1)
    main([config, str(tmp_path / "m.pt"), "--samples", "128", "--latents", str(tmp_path / "latents_layer1.pt")])
    prior = ScorePrior.load(tmp_path / "m.pt")
    assert type(prior.model).__name__ == "GaussianMixtureScoreModel" and prior.step == 228
    torch.testing.assert_close(prior.model.log_weights.exp(), torch.tensor([128 / 228, 100 / 228]))
    stored = prior.to_model_space(2.0 + torch.randn(8, 64, 4, 4))
    assert (prior.model.responsibilities(stored, torch.full((8,), 1e-3))[:, 1] > 0.99).all()
