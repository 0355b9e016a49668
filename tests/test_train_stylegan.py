"""train_stylegan.py from the command line (tiny settings, tmp run dirs) and the pieces of stylegan.training."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan import load_generator
from stylegan.discriminator import Discriminator
from stylegan.networks import Generator
from stylegan.training import d_logistic_loss, ema_beta, g_nonsaturating_loss, lazy_adam, mapped_ws, r1_penalty
from utils import read_scalar_log

ROOT = Path(__file__).resolve().parents[1]
# 16 px, 16 channels, batch 4, 8 validation images: only what keeps the run a few seconds long.
TINY = ["resolution=16", "G.z_dim=16", "G.w_dim=16", "G.synthesis_kwargs.channel_max=16", "D.channel_max=16",
        "batch_size=4", "d_reg_interval=2", "metric.num_images=8",
        "metric.patches_per_image=8", "metric.min_resolution=8", "metric.every=3", "grid_size=4",
        "image_every=3", "ckpt_every=3", "log_every=1", "progress=false", "num_threads=1", "steps=6"]


def _image_folder(folder: Path, count: int, seed: int) -> Path:
    """``count`` 24-px RGBA PNGs (blobs on transparency): exercises the resize and the white compositing."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        a = np.zeros((24, 24, 4), np.uint8)
        y, x = rng.integers(2, 12, size=2)
        a[y : y + 10, x : x + 10] = [*rng.integers(0, 255, size=3), 255]
        Image.fromarray(a, "RGBA").save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("images")
    train, val = _image_folder(root / "train", 24, 0), _image_folder(root / "val", 8, 1)
    return [f"data.train={train}", f"data.val={val}", f"data.held_out={val}"]


@pytest.fixture(scope="module")
def run(data_dirs):
    def run(*overrides: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "train_stylegan.py", *data_dirs, *overrides], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    return run


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run) -> Path:
    run_dir = tmp_path_factory.mktemp("stylegan") / "run"
    ok(run(*TINY, f"hydra.run.dir={run_dir}"))
    return run_dir


def test_training_writes_checkpoints_samples_log_and_a_loadable_generator(trained):
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["step_0000003.pt", "step_0000006.pt"]
    assert (trained / "samples" / "step_0000006.png").is_file() and (trained / "reals.png").is_file()
    rows = read_scalar_log(trained / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(7))
    assert rows[0]["swd"] > 0 and rows[-1]["swd"] > 0 and rows[-1]["loss_D"] > 0
    # Lazy R1 every 2nd step: on the 1st, 3rd and 5th (0-based step counter 0, 2, 4 before the update).
    assert all(rows[i]["r1"] >= 0 for i in (1, 3, 5)) and all(rows[i]["r1"] != rows[i]["r1"] for i in (2, 4, 6))
    G = load_generator(trained / "generator.pt")
    assert G.img_resolution == 16 and G.z_dim == 16
    assert G(torch.randn(2, 16), None).shape == (2, 3, 16, 16)
    state = torch.load(trained / "checkpoints" / "step_0000006.pt", weights_only=True)
    assert state["step"] == 6 and state["nimg"] == 24
    assert set(state) >= {"G", "D", "G_ema", "opt_G", "opt_D", "rng", "settings", "config", "ada"}
    # ADA is on by default: its strength is logged, saved and moves with r_t.
    assert all(0 <= r["ada_p"] <= 1 for r in rows[1:]) and state["ada"]["steps"] == 6
    if importlib.util.find_spec("tensorboard") is not None:  # the same scalars, SWD included, for TensorBoard
        assert any((trained / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["swd_held_out"] > 0 and summary["swd_held_out_floor"] >= 0 and summary["num_train"] == 24
    assert all(torch.equal(G.state_dict()[k], v) for k, v in state["G_ema"].items())


def test_resume_continues_from_the_saved_step(trained, tmp_path, run):
    ok(run(*TINY, f"resume={trained / 'checkpoints' / 'step_0000003.pt'}", f"hydra.run.dir={tmp_path / 'resumed'}"))
    rows = read_scalar_log(tmp_path / "resumed" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [3, 4, 5, 6]
    a = torch.load(trained / "checkpoints" / "step_0000006.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "step_0000006.pt", weights_only=True)
    for key in ("G", "D", "G_ema"):  # the resumed run repeats the original one
        for name, value in a[key].items():
            assert torch.allclose(value, b[key][name], atol=1e-5), (key, name)


def test_gan_swd_bench_compares_a_generator_and_a_checkpoint_with_floors(trained, data_dirs, tmp_path):
    paths = dict(d.split("=", 1) for d in data_dirs)
    files = [str(trained / "generator.pt"), str(trained / "checkpoints" / "step_0000003.pt")]
    cmd = [sys.executable, "bench/gan_swd.py", *files, "--held-out", paths["data.held_out"], "--train",
           paths["data.train"], "--samples", "8", "--threads", "1", "--grids", str(tmp_path / "g"),
           "--out", str(tmp_path / "t.json")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert list(table) == ["floor", *files]
    assert all(table[k][ref]["swd"] > 0 for k in table for ref in ("held_out", "train"))
    # The fake-looking 6-step generator is further from the real images than other real images are.
    assert table[files[0]]["train"]["swd"] > table["floor"]["train"]["swd"]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["generator.png", "run_step_0000003.png"]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)  # never overwrites
    assert again.returncode != 0 and again.stderr.strip().startswith("error: would overwrite")
    assert "Traceback" not in again.stderr


def test_bad_resume_is_one_line_error(tmp_path, run):
    proc = run(*TINY, f"resume={tmp_path / 'missing.pt'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: resume") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, message", [("data.train=/no/such/folder", "error: data: no dataset"),
                                                ("data.val=emoji:test", "error: data: 'emoji:test'")])
def test_bad_data_is_one_line_error(tmp_path, run, override, message):
    proc = run(*TINY, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def _tiny_nets() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    G = Generator(8, 0, 8, 8, 3, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    return G, Discriminator(0, 8, 3, channel_base=64, channel_max=8)


def test_r1_is_nonnegative_and_reaches_the_discriminator():
    _, D = _tiny_nets()
    penalty = r1_penalty(D, torch.randn(4, 3, 8, 8))
    assert penalty.shape == (4,) and (penalty >= 0).all()
    penalty.mean().backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_losses_optimiser_ema_and_style_mixing():
    logits = torch.zeros(4, 1)
    assert torch.isclose(d_logistic_loss(logits, logits), torch.tensor(2 * 0.6931), atol=1e-4)
    assert g_nonsaturating_loss(torch.full((4, 1), 10.0)) < 1e-4
    opt = lazy_adam([torch.nn.Parameter(torch.zeros(1))], 0.01, (0.0, 0.99), 16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.01 * 16 / 17) and group["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17)))
    # Half-life: after ema_kimg thousand images at full length, the old weights count one half.
    assert ema_beta(16, 10**9, 1.0, 0.05) ** (1000 / 16) == pytest.approx(0.5)
    assert ema_beta(16, 160, 1.0, 0.05) < ema_beta(16, 10**9, 1.0, 0.05)  # ramp-up: shorter memory early
    G, _ = _tiny_nets()
    z = torch.randn(3, 8)
    plain = mapped_ws(G, z, 0.0)
    assert torch.equal(plain[:, 0], plain[:, -1])
    mixed = mapped_ws(G, z, 1.0)
    assert torch.equal(mixed[:, 0], plain[:, 0]) and not torch.equal(mixed[:, -1], plain[:, -1])
