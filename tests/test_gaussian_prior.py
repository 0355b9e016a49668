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
