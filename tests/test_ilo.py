"""inverse.ilo on the tiny random generator: CSGM recovers an in-range image, the projections hold, SGILO with
zero temperatures is ILO without the ball, runs repeat exactly, a NaN image fails alone, the prior step is
T·Δ + noise, the learning-rate ramp and the settings checks."""

import math
from dataclasses import replace

import pytest
import torch

from dataloaders import MinMaxNormalizer
from inverse.ilo import (
    ImageRng,
    LayerPriors,
    Problem,
    Projections,
    advance_layer,
    init_variables,
    objective,
    project_l1_ball,
    render,
    row_norms,
    run_round,
    solve,
    trainable,
)
from inverse.losses import geocross
from inverse.operators import build_operator
from inverse.prior_step import prior_time
from inverse.settings import SettingsError, SolverSettings, learning_rate
from score.prior import ScorePrior, parse_prior_spec
from stylegan.build import build_generator

TINY = {"name": "tiny", "ckpt": None, "gaussian_fit": None, "seed": 0, "fit_samples": 2000,
        "init": {"z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 32, "img_channels": 3,
                 "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 512, "channel_max": 32}}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return build_generator(TINY)


def references(G, proxy, n: int, seed: int = 1) -> torch.Tensor:
    """In-range images: G(mapping(z)) with the generator's stored noise."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(4.0 / (x - y).square().flatten(1).mean(1))


def random_prior(layer: int, shape: tuple[int, int, int], t_hot: float = 0.01) -> ScorePrior:
    """A small untrained ViT prior: enough to check how the solver applies Δ."""
    spec = parse_prior_spec({"layer": layer, "image_shape": list(shape),
                             "model": {"name": "vit", "patch_size": 1, "dim": 32, "depth": 1, "heads": 1,
                                       "dim_head": 16, "mlp_dim": 32},
                             "sde": {"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0, "N": 1000},
                             "sampling": {"t_hot": t_hot, "snr": 5e-3}})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer)
        model = spec.build_model()
    return ScorePrior(model, spec.build_sde(), layer, MinMaxNormalizer(-3.0, 3.0), spec.sampling)


def problem(G, proxy, task: dict, ref: torch.Tensor) -> Problem:
    op = build_operator(task, G.img_resolution)
    return Problem(G, proxy, op, op.measure(ref), geocross=geocross, reference=ref)


@pytest.mark.slow  # > 15 s; the fast tier must stay under 5 minutes
def test_csgm_recovers_an_in_range_image_from_full_measurements(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 1)
    s = SolverSettings.build({"steps": [1200], "lr": 0.05, "vars": ["l"], "latent_init": "zeros"})
    sol = solve(problem(G, proxy, {"operator_type": "dummy"}, ref), s, progress=False)
    assert sol.final.shape == (1, 1, 3, 32, 32) and not sol.failed.any()
    assert (psnr(sol.final[:, 0], ref) > 30).all(), psnr(sol.final[:, 0], ref)


def test_l1_ball_projection():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(5, 3, 4, 4, generator=g) * torch.tensor([0.01, 1, 3, 10, 0.5])[:, None, None, None]
    radius = 4.0
    out = project_l1_ball(delta, radius)
    l1 = out.flatten(1).abs().sum(1)
    assert (l1 <= radius * (1 + 1e-5)).all()
    inside = delta.flatten(1).abs().sum(1) <= radius
    assert torch.equal(out[inside], delta[inside])  # points inside stay put
    assert torch.allclose(l1[~inside], torch.full_like(l1[~inside], radius), rtol=1e-5)  # the rest land on the sphere
    # It is the Euclidean projection: no other point of the ball is closer (random feasible competitors).
    for _ in range(20):
        other = project_l1_ball(out + 0.1 * torch.randn(out.shape, generator=g), radius)
        assert ((other - delta).flatten(1).norm(dim=1) >= (out - delta).flatten(1).norm(dim=1) - 1e-5).all()


def test_ilo_round_keeps_the_features_in_the_l1_ball(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "inpainting", "mask": "center_box"}, ref)
    s = SolverSettings.build({"steps": [5, 20], "lr": 0.1, "vars": ["nl", "nlg"], "radius": [None, 3.0]})
    rng = ImageRng(0, [0, 1], 1, torch.device("cpu"))
    v = init_variables(G, 2, s, rng)
    failed = torch.zeros(2, dtype=torch.bool)
    run_round(p, v, 0, s, LayerPriors(), rng, failed, progress=False)
    advance_layer(p, v, s)
    x0 = v.x.clone()
    run_round(p, v, 1, s, LayerPriors(), rng, failed, progress=False)
    moved = (v.x - x0).flatten(1).abs().sum(1)
    assert (moved <= 3.0 * (1 + 1e-5)).all() and (moved > 1.0).all(), moved


def test_spherical_projection_keeps_norms(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    s = SolverSettings.build({"steps": [10, 10], "vars": ["nl", "nlg"], "project_latent": True,
                              "project_noises": True, "latent_noise_temp": 0.05, "latent_init": "randn"})
    rng = ImageRng(3, [0, 1], 1, torch.device("cpu"))
    v = init_variables(G, 2, s, rng)
    z_norms, noise_norms = row_norms(v.z), [row_norms(n) for n in v.noises]
    sol = solve(problem(G, proxy, {"operator_type": "dummy"}, ref), s, seed=3, progress=False)
    assert torch.allclose(row_norms(sol.variables.z), z_norms, rtol=1e-5)
    for n, norms in zip(sol.variables.noises, noise_norms):
        assert torch.allclose(row_norms(n), norms, rtol=1e-5)
    assert not torch.allclose(sol.variables.z, v.z)  # it did move, along the spheres


def test_projections_start_from_the_round_state(tiny):
    G, _ = tiny
    s = SolverSettings.build({"steps": [1], "project_latent": True})
    v = init_variables(G, 1, s, ImageRng(0, [0], 1, torch.device("cpu")))
    proj = Projections.start(v, 0, s, trainable(v, 0, s))
    v.z.mul_(3.0)
    proj.apply(v)
    assert torch.allclose(v.z, torch.ones_like(v.z))


def sgilo_settings(**overrides) -> SolverSettings:
    cfg = {"steps": [8, 8], "lr": 0.05, "vars": ["nlg", "nlg"], "latent_temperature": 0.0,
           "gen_temperature": [0.0, 0.0], "latent_noise_temp": 0.0, "gen_noise_temp": 0.0,
           "project_latent": True, "project_noises": True, "prior_step": "pc", "geocross": 0.001}
    return SolverSettings.build({**cfg, **overrides})


def test_sgilo_at_zero_temperature_is_ilo_without_projection(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "downsampler", "factor": 2}, ref)
    priors = LayerPriors(latent=random_prior(0, (G.w_dim, G.num_ws, 1)), layers={1: random_prior(1, (32, 4, 4))})
    sgilo = solve(p, sgilo_settings(), priors, seed=5, progress=False)
    ilo = solve(p, sgilo_settings(radius=None), None, seed=5, progress=False)
    for a, b in zip(sgilo.rounds, ilo.rounds):
        assert torch.equal(a, b)
    warm = solve(p, sgilo_settings(latent_temperature=0.1, gen_temperature=[0.0, 0.1]), priors, seed=5,
                 progress=False)
    assert not torch.equal(warm.final, ilo.final)  # the priors do act when the temperatures are on


def test_prior_step_adds_temperature_times_delta(tiny):
    """With lr 0 (Adam does not move) and no noise, one step moves x by exactly T·ε·s(x) ('score' form)."""
    G, proxy = tiny
    ref = references(G, proxy, 1)
    p = problem(G, proxy, {"operator_type": "dummy"}, ref)
    prior = random_prior(1, (32, 4, 4))
    s = sgilo_settings(steps=[0, 1], lr=0.0, gen_temperature=[0.0, 0.5], prior_step="score", score_eps=0.01,
                       project_latent=False, project_noises=False)
    rng = ImageRng(0, [0], 1, torch.device("cpu"))
    v = init_variables(G, 1, s, rng)
    advance_layer(p, v, s)
    x0 = v.x.clone()
    run_round(p, v, 1, s, LayerPriors(layers={1: prior}), rng, torch.zeros(1, dtype=torch.bool), progress=False)
    expected = x0 + 0.5 * 0.01 * prior.variable_score(x0)
    assert torch.allclose(v.x, expected, atol=1e-6)


def test_grad_prior_step_is_adam_on_the_regularised_objective(tiny):
    """prior_step 'grad': one step equals Adam on loss − T·log p_t(x) with that gradient written out: the score,
    times −T, joins the data gradient before the step (a sign error or a skipped term fails)."""
    G, proxy = tiny
    ref = references(G, proxy, 1)
    p = problem(G, proxy, {"operator_type": "dummy"}, ref)
    prior = random_prior(1, (32, 4, 4))
    s = sgilo_settings(steps=[0, 1], lr=0.05, vars=["nlg", "g"], gen_temperature=[0.0, 3.0], prior_step="grad",
                       project_latent=False, project_noises=False, geocross=0.0)
    rng = ImageRng(0, [0], 1, torch.device("cpu"))
    v = init_variables(G, 1, s, rng)
    advance_layer(p, v, s)
    x0 = v.x.clone().requires_grad_(True)
    loss = objective(p, render(p, replace(v, x=x0)), v, 1, s).sum()
    (grad,) = torch.autograd.grad(loss, x0)
    grad = grad - 3.0 * prior.variable_score(x0.detach())
    opt = torch.optim.Adam([x0], lr=0.05)
    x0.grad = grad
    opt.step()
    run_round(p, v, 1, s, LayerPriors(layers={1: prior}), rng, torch.zeros(1, dtype=torch.bool), progress=False)
    assert torch.allclose(v.x, x0.detach(), atol=1e-6)
    # Without the prior the step is a different one: the test sees the prior term.
    bare = init_variables(G, 1, s, ImageRng(0, [0], 1, torch.device("cpu")))
    advance_layer(p, bare, s)
    run_round(p, bare, 1, s, LayerPriors(), rng, torch.zeros(1, dtype=torch.bool), progress=False)
    assert not torch.allclose(bare.x, v.x, atol=1e-4)


def test_prior_weight_per_measurement_scales_the_temperature_by_m_ref_over_m(tiny):
    """prior_reference_measurements m_ref: a row with m measurements weighs its prior by T·m_ref/m, so the run
    equals the plain run at that temperature."""
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "downsampler", "factor": 2}, ref)  # m = 3·16·16 = 768 per row
    assert p.operator.measurement_count(p.y).tolist() == [768.0, 768.0]
    priors = LayerPriors(layers={1: random_prior(1, (32, 4, 4))})
    common = {"prior_step": "grad", "project_latent": False, "project_noises": False}
    scaled = solve(p, sgilo_settings(gen_temperature=[0.0, 0.3], prior_reference_measurements=192, **common),
                   priors, seed=5, progress=False)
    plain = solve(p, sgilo_settings(gen_temperature=[0.0, 0.3 * 192 / 768], **common), priors, seed=5,
                  progress=False)
    full = solve(p, sgilo_settings(gen_temperature=[0.0, 0.3], **common), priors, seed=5, progress=False)
    torch.testing.assert_close(scaled.final, plain.final, rtol=0, atol=1e-5)
    assert not torch.allclose(scaled.final, full.final, atol=1e-3)  # the weight did change
    with pytest.raises(SettingsError, match="prior_reference_measurements"):
        sgilo_settings(prior_reference_measurements=0)


def test_prior_time_is_constant_or_annealed_geometrically():
    assert prior_time(3, 10, sgilo_settings()) is None  # each prior's own t_hot
    assert prior_time(3, 10, sgilo_settings(t_hot=0.1)) == 0.1
    s = sgilo_settings(t_hot=0.1, t_hot_end=0.001)
    ts = [prior_time(i, 5, s) for i in range(5)]
    assert math.isclose(ts[0], 0.1) and math.isclose(ts[-1], 0.001) and math.isclose(ts[2], 0.01)
    with pytest.raises(SettingsError, match="t_hot too"):
        sgilo_settings(t_hot_end=0.01)
    with pytest.raises(SettingsError, match="t_hot must be"):
        sgilo_settings(t_hot=0.0)


def test_same_seed_same_result_and_batches_do_not_matter(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "colorizer"}, ref)
    s = sgilo_settings(latent_noise_temp=0.02, gen_noise_temp=0.02, gen_temperature=[0.0, 0.1], prior_step="score",
                       chains=2)
    priors = LayerPriors(layers={1: random_prior(1, (32, 4, 4))})
    a = solve(p, s, priors, image_ids=[10, 11], seed=7, progress=False)
    b = solve(p, s, priors, image_ids=[10, 11], seed=7, progress=False)
    assert torch.equal(a.final, b.final)
    assert a.final.shape == (2, 2, 3, 32, 32) and (a.std > 0).any()  # two different posterior samples
    c = solve(p, s, priors, image_ids=[10, 11], seed=8, progress=False)
    assert not torch.equal(a.final, c.final)
    # Image 11 solved on its own gives what it gave in the batch: its random streams are its own.
    alone = solve(Problem(G, proxy, p.operator, p.y[1:], geocross=geocross), s, priors, image_ids=[11], seed=7,
                  progress=False)
    assert torch.allclose(alone.final[0], a.final[1], atol=1e-5)


def test_published_pc_prior_step_repeats_with_the_seed(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "inpainting"}, ref)
    s = sgilo_settings(latent_temperature=0.1, gen_temperature=[0.0, 0.1], latent_noise_temp=0.025,
                       gen_noise_temp=0.025, prior_step="pc")
    priors = LayerPriors(latent=random_prior(0, (G.w_dim, G.num_ws, 1)), layers={1: random_prior(1, (32, 4, 4))})
    a, b = (solve(p, s, priors, seed=11, progress=False) for _ in range(2))
    assert torch.equal(a.final, b.final) and torch.isfinite(a.final).all()


def test_a_nan_measurement_fails_one_image_and_the_others_finish(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "dummy"}, ref)
    y = p.y.clone()
    y[1, 0, 3, 3] = float("nan")
    s = SolverSettings.build({"steps": [10, 10], "vars": ["nl", "nlg"]})
    bad = solve(Problem(G, proxy, p.operator, y, geocross=geocross), s, progress=False)
    assert bad.failed.tolist() == [False, True]
    assert torch.isfinite(bad.final).all()
    good = solve(Problem(G, proxy, p.operator, y[:1], geocross=geocross), s, progress=False)
    assert torch.allclose(bad.final[0], good.final[0], atol=1e-5)


def test_a_nan_prior_step_fails_its_row_through_the_variable_guard(tiny):
    """A NaN that enters the variables after the loss (here the prior's Δ of row 1, from step 3 of round 1 on) is
    caught at that step by the guard on the variables: the row is frozen at its round start and marked failed,
    the others finish as they would alone."""
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "downsampler", "factor": 2}, ref)
    prior = random_prior(1, (32, 4, 4))
    calls = {"n": 0}
    clean_score = prior.variable_score

    def poisoned(v, t=None):
        out = clean_score(v, t)
        calls["n"] += 1
        if calls["n"] >= 4 and out.shape[0] == 2:
            out[1] = float("nan")
        return out

    prior.variable_score = poisoned
    s = sgilo_settings(prior_step="score", gen_temperature=[0.0, 0.1])
    both = solve(p, s, LayerPriors(layers={1: prior}), seed=5, progress=False)
    assert both.failed.tolist() == [False, True]
    assert torch.isfinite(both.final).all()
    assert torch.isnan(both.logs[1].row_losses[3:, 1]).all() and torch.isfinite(both.logs[1].row_losses[:, 0]).all()
    alone = solve(replace(p, y=p.y[:1], reference=ref[:1]), s, LayerPriors(layers={1: prior}), seed=5,
                  progress=False)
    assert torch.allclose(both.final[0], alone.final[0], atol=1e-5)  # (batch sizes round differently)


def test_learning_rate_schedules():
    assert learning_rate(7, 100, 0.05, "constant") == 0.05
    ramp = [learning_rate(i, 100, 0.1, "cosine") for i in range(100)]
    assert ramp[0] == 0.0 and math.isclose(ramp[2], 0.1 * 2 / 5)  # linear warm-up over the first 5 %
    assert math.isclose(max(ramp), 0.1) and ramp[10] == ramp[25] == 0.1  # flat until 25 %
    assert ramp[-1] < 0.001 and all(a >= b for a, b in zip(ramp[25:], ramp[26:]))  # cosine decay to ~0


@pytest.mark.parametrize("cfg, fragment", [
    ({"steps": [10, 10, 10], "lr": [0.1, 0.1]}, "lr has 2 entries"),
    ({"steps": [10], "vars": ["lx"]}, "vars[0]"),
    ({"steps": []}, "steps must be a non-empty list"),
    ({"steps": [10], "lr_schedule": "linear"}, "lr_schedule"),
    ({"steps": [10, 10], "lr_schedule": ["cosine", "linear"]}, "lr_schedule[1]"),
    ({"steps": [10], "prior_step": "ode"}, "prior_step"),
    ({"steps": [10], "gen_temperature": -1.0}, "gen_temperature[0]"),
    ({"steps": [10], "chains": 0}, "chains"),
])
def test_settings_are_checked(cfg, fragment):
    with pytest.raises(SettingsError) as info:
        SolverSettings.build(cfg)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_more_rounds_than_layers_is_an_error(tiny):
    G, _ = tiny
    s = SolverSettings.build({"steps": [1] * 5})
    with pytest.raises(SettingsError, match="only 4 layers"):
        s.check(G.synthesis.num_blocks)


def test_published_lists_longer_than_the_rounds_are_accepted():
    s = SolverSettings.build({"steps": [300, 300, 300], "vars": ["nlg", "nlg", "nlg", "lg"],
                              "gen_temperature": [0.0, 0.1, 0.1, 0.1], "lr": 0.05})
    assert s.rounds == 3 and s.vars == ["nlg"] * 3 and s.lr == [0.05] * 3 and s.gen_temperature == [0.0, 0.1, 0.1]


def test_perceptual_term_sees_rgb_views_and_one_fixed_target(tiny):
    G, proxy = tiny
    ref = references(G, proxy, 2)
    p = problem(G, proxy, {"operator_type": "colorizer"}, ref)
    seen_targets, seen_inputs = [], []

    def perceptual(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen_inputs.append(x.shape)
        seen_targets.append(target)
        return (x - target).square().flatten(1).mean(1)

    solve(replace(p, perceptual=perceptual), sgilo_settings(pe=0.5, steps=[3, 2]), None, seed=0, progress=False)
    assert len(seen_targets) == 5
    assert all(t is seen_targets[0] for t in seen_targets)  # built once, so LPIPS can cache its features
    assert all(s[1] == 3 for s in seen_inputs)  # grayscale measurements shown to the network as RGB
    torch.testing.assert_close(seen_targets[0], p.operator.rgb_view(p.y))


def test_project_spherical_rescales_every_row_to_its_radius_as_row_norms_measures_it():
    from inverse.ilo import project_spherical, row_norms

    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(3, 6, 16, generator=g), torch.randn(3, 1, 4, 4, generator=g)]
    radii = [row_norms(t) * 2 for t in tensors]
    expected = [t * (r / row_norms(t)) for t, r in zip(tensors, radii)]
    project_spherical(tensors, radii)
    for t, e, r in zip(tensors, expected, radii):
        assert torch.equal(t, e)  # the multi-tensor kernels give exactly the one-tensor values
        torch.testing.assert_close(row_norms(t), r)
