"""Landscape learning (inverse/landscape.py, train_landscape.py, method=landscape): θ starts as the identity (so
method=landscape with an untrained θ is exactly CSGM), training lowers the loss along the trajectories, a resumed
run continues exactly, and the command lines give results or one-line errors."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inverse.ilo import Problem, solve
from inverse.landscape import (
    LandscapeFormatError,
    LandscapeMap,
    LandscapeProxy,
    LandscapeSettings,
    LandscapeTrainer,
    describe,
    load_record,
    load_theta,
    noise_maps,
    reconstruction_loss,
    save,
)
from inverse.methods import Landscape
from inverse.operators import build_operator
from inverse.settings import SolverSettings
from stylegan.build import build_generator

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "ckpt": None, "gaussian_fit": None, "seed": 0, "fit_samples": 1000,
        "init": {"z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 32, "img_channels": 3,
                 "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 512, "channel_max": 32}}}
QUICK = ["generator=tiny", "generator.fit_samples=1000", "progress=false", "num_threads=1"]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    G, proxy = build_generator(TINY)
    with torch.no_grad():
        images = G(torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(3)), None,
                   noise_mode="const").clamp(-1, 1)
    return G, proxy, images


def small_settings(**kw) -> LandscapeSettings:
    base = dict(iterations=6, images=4, trajectory_steps=5, theta_steps=10, theta_batch=8, theta_lr=1e-3,
                buffer_size=500, hidden=32, depth=3)
    return LandscapeSettings(**{**base, **kw})


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_untrained_theta_is_the_identity():
    theta = LandscapeMap(16, hidden=8, depth=3)
    z = torch.randn(3, 5, 16)
    assert torch.equal(theta(z), z)


def test_landscape_with_an_untrained_theta_is_exactly_csgm(tiny):
    G, proxy, images = tiny
    op = build_operator({"operator_type": "inpainting", "mask": "random_pixels", "observed_fraction": 0.3,
                         "noise_std": 0.0}, 32, 3, seed=0)
    problem = Problem(G, proxy, op, op.A(images[:2]), perceptual=None, reference=images[:2])
    settings = SolverSettings.build({"steps": [15], "lr": 0.05, "vars": "nl", "latent_init": "zeros",
                                     "geocross": 0.001})
    plain = solve(problem, settings, None, image_ids=[0, 1], seed=4, progress=False)
    method = Landscape(settings, ckpt="-", theta=LandscapeMap(G.w_dim, 16, 3))
    mapped = method.solve(problem, [0, 1], seed=4, progress=False)
    assert torch.allclose(mapped.final, plain.final, atol=1e-6)
    assert torch.allclose(mapped.logs[0].row_psnrs, plain.logs[0].row_psnrs, atol=1e-4)


def test_training_lowers_the_loss_along_the_trajectories(tiny):
    """After a few rounds the trained θ reconstructs the buffer's trajectory points better than the identity
    (which θ started as): the quantity its training minimises."""
    G, proxy, images = tiny
    trainer = LandscapeTrainer(G, proxy, images, small_settings(iterations=8), seed=0, generator_record=TINY)
    for _ in range(8):
        trainer.iteration()
    buffer = trainer.buffer
    z, x, noises = buffer.z, images[buffer.image_index], noise_maps(G, buffer.noise_seed, "cpu")
    with torch.no_grad():
        trained = reconstruction_loss(G, trainer.mapped, z, noises, x).mean()
        identity = reconstruction_loss(G, LandscapeProxy(LandscapeMap(G.w_dim, 32, 3), proxy), z, noises, x).mean()
    assert float(trained) < 0.9 * float(identity), (float(trained), float(identity))


def test_resumed_training_continues_exactly(tiny, tmp_path):
    G, proxy, images = tiny
    straight = LandscapeTrainer(G, proxy, images, small_settings(), seed=1, generator_record=TINY)
    for _ in range(4):
        straight.iteration()
    first = LandscapeTrainer(G, proxy, images, small_settings(), seed=1, generator_record=TINY)
    for _ in range(2):
        first.iteration()
    path = save(first.checkpoint(), tmp_path / "half.pt")
    resumed = LandscapeTrainer(G, proxy, images, small_settings(), seed=1, generator_record=TINY)
    resumed.resume(load_record(path))
    for _ in range(2):
        resumed.iteration()
    assert resumed.step == straight.step == 4
    for (k, a), b in zip(straight.theta.state_dict().items(), resumed.theta.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileExistsError):
        save(first.checkpoint(), path)  # never over an existing file


def test_files_that_are_not_landscapes_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"format": "sgilo-landscape-1", "x": Payload()}))
    with pytest.raises(LandscapeFormatError, match="not a readable landscape.pt"):
        load_record(hostile)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(LandscapeFormatError, match="format"):
        load_record(other)
    wrong_dim = tmp_path / "dim.pt"
    save(describe(LandscapeMap(8, 4, 2), {"name": "tiny"}, 0), wrong_dim)
    with pytest.raises(LandscapeFormatError, match="w_dim 8"):
        load_theta(wrong_dim, 32)


TRAIN = [*QUICK, "images=images/examples", "iterations=2", "trajectory_images=2", "trajectory_steps=2",
         "theta_steps=2", "theta_batch=4", "hidden=16", "ckpt_every=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A two-round train_landscape.py run on the tiny generator (its run directory)."""
    out = tmp_path_factory.mktemp("landscape") / "a"
    proc = run("train_landscape.py", *TRAIN, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_train_then_solve_from_the_command_line(trained, tmp_path):
    assert (trained / "landscape.pt").is_file()
    assert {p.name for p in (trained / "checkpoints").iterdir()} == {"step_000001.pt", "step_000002.pt"}
    assert len((trained / "train_log.csv").read_text().splitlines()) == 3  # header + 2 rounds
    solved = run("solve_inverse.py", *QUICK, "method=landscape", "steps=[3]", "input_source=generator",
                 "num_images=2", f"landscape.ckpt={trained / 'landscape.pt'}", f"hydra.run.dir={tmp_path / 'solve'}")
    assert solved.returncode == 0, solved.stderr[-3000:]
    assert (tmp_path / "solve" / "metrics.json").is_file()


@pytest.mark.slow
def test_resume_from_the_command_line(trained, tmp_path):
    resumed = run("train_landscape.py", *TRAIN, "iterations=3", f"resume={trained / 'checkpoints' / 'step_000002.pt'}",
                  f"hydra.run.dir={tmp_path / 'b'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("3,"), rows  # continued at round 3
    bad = run("train_landscape.py", *TRAIN, "resume=README.md", f"hydra.run.dir={tmp_path / 'c'}")
    assert bad.returncode == 2 and "not a readable landscape.pt" in bad.stderr, bad.stderr
    final = run("train_landscape.py", *TRAIN, f"resume={trained / 'landscape.pt'}", f"hydra.run.dir={tmp_path / 'd'}")
    assert final.returncode == 2 and "no training state; resume from a checkpoints/step_" in final.stderr
    again = run("train_landscape.py", *TRAIN, f"hydra.run.dir={trained}")
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def prepared(tmp_path: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from inverse.run import prepare

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("solve_inverse", overrides=[*QUICK, "input_source=generator", "num_images=1", *overrides])
    return prepare(cfg, tmp_path / "run")


def test_bad_landscape_files_are_refused_before_any_work(tmp_path):
    from utils import UserError

    other = save(describe(LandscapeMap(64, 8, 2), {"name": "demo"}, 0), tmp_path / "demo_like.pt")
    named = save(describe(LandscapeMap(32, 8, 2), {"name": "demo"}, 0), tmp_path / "named.pt")
    for value, fragment in [("README.md", "not a readable landscape.pt"), ("null", "needs landscape.ckpt"),
                            (str(tmp_path / "missing.pt"), "not found"), (str(other), "w_dim 64"),
                            (str(named), "trained for generator 'demo'")]:
        with pytest.raises(UserError, match=fragment):
            prepared(tmp_path, "method=landscape", f"landscape.ckpt={value}")


def test_bad_training_settings_are_one_line(tmp_path):
    proc = run("train_landscape.py", *QUICK, "iterations=-1", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "iterations must be an integer >= 0" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
