"""The generator-range prior (inverse.range_prior) on the tiny generator: the distance is the relative squared
distance to the generator's own layer features, its gradient reaches z and x, a heavy weight
holds the features on the range where none lets them go, the adaptive weights are 1 / round-start loss, off
means the same solve as before, bad weights are refused."""

import pytest
import torch

from inverse.ilo import ImageRng, Problem, Variables, init_variables, solve
from inverse.operators import build_operator
from inverse.range_prior import range_distance, range_row_weights
from inverse.settings import SettingsError, SolverSettings
from stylegan.build import build_generator
from tests.test_ilo import TINY

SPARSE = {"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0.5}


@pytest.fixture(scope="module")
def tiny():
    return build_generator(TINY)


def refs(G, n: int, seed: int = 1) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1)


def settings(**extra) -> SolverSettings:
    return SolverSettings.build({"steps": [3, 8], "lr": 0.1, "vars": ["nl", "nlg"], "latent_init": "zeros", **extra})


def layer_state(G, proxy, layer: int, n: int = 2) -> Variables:
    s = settings()
    v = init_variables(G, n, s, ImageRng(0, list(range(n)), 1, torch.device("cpu")))
    v.z = torch.randn(v.z.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        x, img = G.synthesis.forward_to(proxy(v.z), layer, noises=v.noises, noise_mode="const")
    return Variables(z=v.z, noises=v.noises, layer=layer, x=x.clone(), img=img)


def test_distance_is_relative_to_the_generators_features(tiny):
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    problem = Problem(G, proxy, op, op.measure(refs(G, 2)))
    for layer in (1, 2):
        v = layer_state(G, proxy, layer)
        assert torch.allclose(range_distance(problem, v), torch.zeros(2), atol=1e-10)
        anchor = v.x.clone()
        v.x = anchor * 1.1  # 10 % longer: relative squared distance 0.01
        assert torch.allclose(range_distance(problem, v), torch.full((2,), 0.01), rtol=1e-4)
        v.x = anchor + torch.randn(anchor.shape, generator=torch.Generator().manual_seed(layer))
        brute = (v.x - anchor).square().flatten(1).sum(1) / anchor.square().flatten(1).sum(1)
        assert torch.allclose(range_distance(problem, v), brute, rtol=1e-5)


def test_gradient_reaches_latent_and_features(tiny):  # (the untrained generator's noise strengths are 0)
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    problem = Problem(G, proxy, op, op.measure(refs(G, 2)))
    v = layer_state(G, proxy, 2)
    v.x = v.x + 0.1
    for t in (v.z, v.x):
        t.requires_grad_(True)
    range_distance(problem, v).sum().backward()
    for t in (v.z, v.x):
        assert t.grad is not None and float(t.grad.abs().sum()) > 0


def test_heavy_weight_holds_features_on_the_range(tiny):
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    y = op.measure(refs(G, 2, seed=7))
    problem = Problem(G, proxy, op, y)
    free = solve(problem, settings(), seed=2, progress=False)
    held = solve(problem, settings(range_weight=[0, 1e3]), seed=2, progress=False)
    d_free = range_distance(problem, free.variables)
    d_held = range_distance(problem, held.variables)
    assert bool((d_held < 0.5 * d_free).all()), (d_free, d_held)


def test_zero_weight_is_the_plain_solve(tiny):
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    problem = Problem(G, proxy, op, op.measure(refs(G, 2)))
    plain = solve(problem, settings(), seed=2, progress=False)
    off = solve(problem, settings(range_weight=0.0, range_adaptive=True), seed=2, progress=False)
    assert torch.equal(plain.final, off.final)
    on = solve(problem, settings(range_weight=[0, 10.0]), seed=2, progress=False)
    assert not torch.equal(plain.final, on.final)


def test_adaptive_weights_are_inverse_start_losses(tiny):
    G, proxy = tiny
    op = build_operator(SPARSE, G.img_resolution)
    x = refs(G, 3)
    y = op.measure(x)
    problem = Problem(G, proxy, op, y)
    start = x + torch.tensor([0.01, 0.1, 0.3]).reshape(3, 1, 1, 1)  # the fit the round starts from, worse and worse
    loss = op.measurement_loss(op.A(start), y)
    w = range_row_weights(problem, start, None, adaptive=True)
    assert torch.allclose(w, 1.0 / loss)
    assert bool((w[:-1] > w[1:]).all())  # the better the range fits, the tighter it holds
    m = torch.tensor([2.0, 3.0, 4.0])
    assert torch.allclose(range_row_weights(problem, start, m, adaptive=True), m / loss)
    assert torch.equal(range_row_weights(problem, start, m, adaptive=False), m)
    assert range_row_weights(problem, start, None, adaptive=False) is None


def test_weights_are_checked():
    for bad in (-1.0, float("nan"), "much"):
        with pytest.raises(SettingsError, match="range_weight"):
            SolverSettings.build({"steps": [1, 1], "range_weight": [0, bad]})
    with pytest.raises(SettingsError, match="range_adaptive"):
        SolverSettings.build({"steps": [1, 1], "range_adaptive": "yes"})
