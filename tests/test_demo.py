"""The embedded demo (checkpoints/demo, configs/generator/demo.yaml): the committed files are complete and
consistent, the three README commands run with no download, and the two small file tools behave."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from score.prior import ScorePrior, parse_prior_spec
from stylegan.build import build_generator, layer_sample_shape
from stylegan.proxy import MappingProxy
from utils import resolve_path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo"
PRIORS = {"demo_latent": 0, "demo_layer1": 1, "demo_layer2": 2, "demo_layer3": 3}


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_demo_files_are_complete_small_and_consistent():
    files = sorted(p for p in DEMO.iterdir() if p.suffix == ".pt")
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    entry = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "generator" / "demo.yaml"))
    G, proxy = build_generator(entry, resolve=resolve_path)
    assert G.img_resolution >= 32 and G.img_channels == 3 and proxy.w_dim == G.w_dim
    for name, layer in PRIORS.items():
        spec = parse_prior_spec(OmegaConf.load(ROOT / "configs" / "trained_networks" / f"{name}.yaml"))
        prior = ScorePrior.load(resolve_path(spec.ckpt))
        assert prior.layer == layer and prior.generator["name"] == "demo"
        assert prior.image_shape == layer_sample_shape(G, layer) == tuple(spec.image_shape)
        assert prior.step > 0 and "training" not in torch.load(resolve_path(spec.ckpt), weights_only=True)


def test_demo_generator_images_are_not_constant():
    entry = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "generator" / "demo.yaml"))
    G, proxy = build_generator(entry, resolve=resolve_path)
    with torch.no_grad():
        img = G.synthesis(proxy(torch.randn(8, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))),
                          noise_mode="const")
    assert img.shape == (8, 3, 32, 32) and img.std(0).mean() > 0.1  # different images, not one mode


def test_readme_commands_run_on_the_demo(tmp_path):
    solve = tmp_path / "solve"
    proc = run("solve_inverse.py", "steps=[5,5,5]", "max_images=2", "batch_size=2", "progress=false",
               f"hydra.run.dir={solve}")
    assert "sgilo / inpainting / demo" in proc.stdout
    saved = OmegaConf.load(solve / ".hydra" / "config.yaml")  # the demo is the SGILO calibrated on validation
    assert saved.prior_step == "grad" and saved.priors.demo.gen_configs[1] == "demo_inv_gauss_layer1"
    assert len(json.loads((solve / "metrics.json").read_text())["images"]) == 2
    assert "no trained layer" not in proc.stderr  # every round found its committed prior
    run("eval_score_based.py", "sample_batch_size=2", "progress=false", f"hydra.run.dir={tmp_path / 'eval'}")
    assert (tmp_path / "eval" / "batch000_start_vs_result.png").is_file()
    run("train_score.py", "steps=3", "batch_size=8", "norm_samples=64", "progress=false",
        f"hydra.run.dir={tmp_path / 'train'}")
    assert ScorePrior.load(tmp_path / "train" / "prior.pt").generator["name"] == "demo"


def test_committed_landscape_network_fits_the_demo_generator():
    from inverse.landscape import load_theta

    G, _ = build_generator({"name": "demo", "ckpt": str(DEMO / "generator.pt"),
                            "gaussian_fit": str(DEMO / "gaussian_fit.pt")})
    theta, record = load_theta(DEMO / "landscape.pt", G.w_dim)
    assert record["generator"]["name"] == "demo" and record["training"] is None
    z = torch.zeros(1, G.num_ws, G.w_dim)
    assert not torch.equal(theta(z), z)  # trained: no longer the identity it started as


@pytest.mark.slow
def test_brgm_and_landscape_run_on_the_demo(tmp_path):
    """method=brgm and method=landscape (with the committed θ) from a fresh clone, a few steps each."""
    for method, steps in (("brgm", "brgm.steps=3"), ("landscape", "steps=[3]")):
        out = tmp_path / method
        proc = run("solve_inverse.py", f"method={method}", steps, "max_images=1", "progress=false",
                   f"hydra.run.dir={out}")
        assert f"{method} / inpainting / demo" in proc.stdout
        assert json.loads((out / "metrics.json").read_text())["images"][0]["psnr"] is not None


@pytest.mark.slow
def test_no_argument_commands(tmp_path):
    """Exactly the README's commands (only the run folder is moved into tmp_path)."""
    run("solve_inverse.py", f"hydra.run.dir={tmp_path / 'solve'}")
    run("eval_score_based.py", f"hydra.run.dir={tmp_path / 'eval'}")
    run("train_score.py", f"hydra.run.dir={tmp_path / 'train'}", timeout=600)


def test_proxy_and_prior_tools_write_new_files_only(tmp_path):
    fit = tmp_path / "fit.pt"
    run("-m", "stylegan.proxy", str(DEMO / "generator.pt"), str(fit), "--samples", "2000")
    assert MappingProxy.load(fit).w_dim == 64
    proc = subprocess.run([sys.executable, "-m", "stylegan.proxy", str(DEMO / "generator.pt"), str(fit)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "exists; not overwriting" in proc.stderr and "Traceback" not in proc.stderr

    full = tmp_path / "full.pt"
    prior = ScorePrior.load(DEMO / "prior_layer1.pt")
    prior.training = {"optimizer": {"big": torch.zeros(100_000)}}
    prior.save(full)
    slim = tmp_path / "slim.pt"
    run("-m", "score.prior", str(full), str(slim))
    assert slim.stat().st_size < full.stat().st_size
    again = ScorePrior.load(slim)
    x, t = torch.randn(2, *again.image_shape), torch.full((2,), 0.5)
    torch.testing.assert_close(again.model(x, t), prior.model(x, t))
    assert set(torch.load(slim, weights_only=True)) == set(torch.load(full, weights_only=True)) - {"state_dict",
                                                                                                 "training"}


def test_sgilo_grad_uses_the_priors_of_inverted_images():
    """method=sgilo_grad on the demo: the prior as a gradient term, ILO's optimiser (its per-task balls and
    spherical projections), the adaptive range prior, and the committed Gaussians fitted on inverted train images at
    layers 1-2 (no prior on z, no Langevin noise), weighted per measurement."""
    from hydra import compose, initialize_config_dir

    from inverse.methods import build_method
    from inverse.run import load_prior

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("solve_inverse", overrides=["method=sgilo_grad"])
    method = build_method(cfg)
    s = method.settings
    assert s.prior_step == "grad" and s.radius == [50, 50, 200] and s.lr_schedule == ["cosine"] * 3  # inpainting
    assert s.project_latent and s.project_noises and s.range_adaptive and s.range_weight == [0.0, 1e-4, 1e-4]
    assert s.gen_temperature == [0.0, 0.01, 0.01] and s.latent_temperature == [0.0] * 3
    assert s.prior_reference_measurements == 256  # T holds at 256 measurements, T·256/m at m
    assert s.latent_noise_temp == s.gen_noise_temp == 0.0
    assert s.latent_init == "search" and s.init_candidates == 256  # round 0 from the best W-space samples
    G, proxy = build_generator(OmegaConf.to_container(cfg.generator), resolve=resolve_path)
    method.build(cfg, G, lambda name, layer: load_prior(name, layer, G, cfg, torch.device("cpu")), "cpu")
    assert method.priors.latent is None and sorted(method.priors.layers) == [1, 2]
    for layer, prior in method.priors.layers.items():
        assert type(prior.model).__name__ == "GaussianScoreModel" and prior.step == 2048  # 2,048 inversions
        assert prior.image_shape == tuple(layer_sample_shape(G, layer))
