"""latent_init: search (inverse.init_search) on the tiny generator: the chains start from the lowest-loss W-space
samples (checked against a brute-force loop), a sample that reproduces the measurements is found, the start of
an image does not depend on its batch (per-image masks included), and bad settings are refused."""

import pytest
import torch

from inverse.ilo import ImageRng, Problem, init_variables, solve
from inverse.init_search import search_latents
from inverse.operators import build_operator
from inverse.settings import SettingsError, SolverSettings
from stylegan.build import build_generator
from tests.test_ilo import TINY


@pytest.fixture(scope="module")
def tiny():
    return build_generator(TINY)


def candidate_latents(G, proxy, seed: int, image_id: int, chains: int, m: int) -> torch.Tensor:
    """The candidates search_latents draws for one image: after its noise maps, from the image's own stream."""
    rng = ImageRng(seed, [image_id], chains, torch.device("cpu"))
    for shape in G.synthesis.noise_shapes():
        rng.randn(*shape[1:])
    z = torch.randn(m, G.z_dim, generator=rng.gens[0])
    with torch.no_grad():
        return proxy.to_z(G.mapping(z, None)[:, 0])


def brute_force_order(G, proxy, op, y_row, noises_row, u) -> torch.Tensor:
    """Candidate indices by increasing measurement loss, one candidate at a time."""
    losses = []
    with torch.no_grad():
        for c in range(u.shape[0]):
            ws = proxy(u[c:c + 1])[:, None].expand(-1, G.num_ws, -1)
            img = G.synthesis(ws, noises=noises_row, noise_mode="const").clamp(-1, 1)
            losses.append(float(op.measurement_loss(op.A(img), y_row)))
    return torch.tensor(losses).argsort()


def test_search_starts_the_chains_at_the_best_candidates(tiny):
    G, proxy = tiny
    m, k, ids = 40, 2, [3, 8]
    s = SolverSettings.build({"steps": [1], "latent_init": "search", "init_candidates": m, "chains": k})
    op = build_operator({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0.3},
                        G.img_resolution)
    # Image 3's reference is one of its own candidates (rendered with its chain-0 noise maps): search must find it.
    u3 = candidate_latents(G, proxy, 5, 3, k, m)
    rng = ImageRng(5, ids, k, torch.device("cpu"))
    v0 = init_variables(G, 2, SolverSettings.build({"steps": [1], "latent_init": "zeros", "chains": k}), rng)
    with torch.no_grad():
        planted = G.synthesis(proxy(u3[17:18])[:, None].expand(-1, G.num_ws, -1), noises=[t[:1] for t in v0.noises],
                              noise_mode="const").clamp(-1, 1)
        other = G.synthesis(G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(9)), None),
                            noise_mode="const").clamp(-1, 1)
    y = op.measure(torch.cat([planted, other]))
    p = Problem(G, proxy, op, y.repeat_interleave(k, 0))
    v = init_variables(G, 2, s, ImageRng(5, ids, k, torch.device("cpu")), p)
    assert v.z.shape == (2 * k, G.num_ws, G.w_dim)
    assert torch.equal(v.z[:, :1].expand_as(v.z), v.z)  # every w row holds the same sample
    assert torch.allclose(v.z[0, 0], u3[17], atol=1e-6)  # the planted sample, loss 0, comes first
    for i, image_id in enumerate(ids):
        u = candidate_latents(G, proxy, 5, image_id, k, m)
        order = brute_force_order(G, proxy, op, y[i:i + 1], [t[i * k:i * k + 1] for t in v.noises], u)
        for chain in range(k):
            assert torch.allclose(v.z[i * k + chain, 0], u[order[chain]], atol=1e-5), (image_id, chain)


def test_search_start_does_not_depend_on_the_batch(tiny):
    G, proxy = tiny
    refs = G.synthesis(G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(2)), None),
                       noise_mode="const").clamp(-1, 1).detach()
    # Black-pixel masks: one mask per image, the operator state the image-major candidate layout must respect.
    refs[:, :, :8] = -1.0
    refs[1, :, 20:] = -1.0
    s = SolverSettings.build({"steps": [2], "latent_init": "search", "init_candidates": 20})
    op = build_operator({"operator_type": "inpainting", "mask": "black_pixels"}, G.img_resolution, reference=refs)
    together = solve(Problem(G, proxy, op, op.measure(refs)), s, image_ids=[0, 1, 2], seed=4, progress=False)
    op1 = build_operator({"operator_type": "inpainting", "mask": "black_pixels"}, G.img_resolution,
                         reference=refs[1:2])
    alone = solve(Problem(G, proxy, op1, op1.measure(refs[1:2])), s, image_ids=[1], seed=4, progress=False)
    assert torch.allclose(together.final[1], alone.final[0], atol=1e-5)


def test_search_settings_are_checked(tiny):
    with pytest.raises(SettingsError, match="init_candidates"):
        SolverSettings.build({"steps": [1], "latent_init": "search", "init_candidates": 2, "chains": 3})
    with pytest.raises(SettingsError, match="init_candidates"):
        SolverSettings.build({"steps": [1], "latent_init": "search", "init_candidates": "many"})
    G, proxy = tiny
    op = build_operator({"operator_type": "dummy"}, G.img_resolution)

    class NoInverse(torch.nn.Module):
        def forward(self, z):
            return proxy(z)

    y = torch.zeros(1, 3, G.img_resolution, G.img_resolution)
    with pytest.raises(ValueError, match="to_z"):
        search_latents(Problem(G, NoInverse(), op, y), [], [torch.Generator()], 4, 1)


def test_landscape_refuses_the_search_start():
    """θ sits between the optimised latent and the generator and has no inverse: a one-line UserError at build."""
    from hydra import compose, initialize_config_dir

    from inverse.methods import build_method
    from utils import ROOT, UserError

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("solve_inverse", overrides=["method=landscape", "latent_init=search"])
    with pytest.raises(UserError, match="latent_init=search"):
        build_method(cfg)
