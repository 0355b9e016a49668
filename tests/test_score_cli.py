"""train_score.py and eval_score_based.py from the command line (subprocesses, Hydra overrides, tmp run dirs):
training lowers the loss, resumes exactly, runs under torchrun like one process with the doubled batch; the
trained prior samples cold and hot; bad input gives one line and exit status 2."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from score.prior import ScorePrior
from utils import read_scalar_log

ROOT = Path(__file__).resolve().parents[1]
# Tiny generator + small ViT at layer 2; only what the tests need to be quick changes.
QUICK = ["generator=tiny", "trained_networks=tiny_layer2", "batch_size=8", "norm_samples=256",
         "generator.fit_samples=512", "progress=false", "num_threads=1"]


def run(script: str, *overrides: str, launcher: list[str] | None = None, timeout: float = 120):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    cmd = (launcher or [sys.executable]) + [script, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 40-step run with a resumable checkpoint at step 20 and per-step losses."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    ok(run("train_score.py", *QUICK, "steps=40", "ckpt_every=20", "log_every=1", "warmup=5", "lr=3e-3",
           f"hydra.run.dir={run_dir}"))
    return run_dir


def test_training_lowers_the_loss_and_describes_itself(trained):
    rows = read_scalar_log(trained / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    losses = [r["loss"] for r in rows]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:5]) / 5
    assert (trained / "checkpoints" / "step_0000020.pt").is_file()
    prior = ScorePrior.load(trained / "prior.pt")
    assert prior.layer == 2 and prior.image_shape == (32, 8, 8) and prior.step == 40
    assert prior.generator["name"] == "tiny" and prior.generator["init"]["img_resolution"] == 32
    assert prior.training["config"]["batch_size"] == 8
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["steps_per_second"] > 0


def test_resume_continues_exactly(trained, tmp_path):
    resumed = tmp_path / "resumed"
    ok(run("train_score.py", *QUICK, "steps=40", "ckpt_every=20", "log_every=1", "warmup=5", "lr=3e-3",
           f"resume={trained / 'checkpoints' / 'step_0000020.pt'}", f"hydra.run.dir={resumed}"))
    full = read_scalar_log(trained / "train_log.csv")[20:]
    again = read_scalar_log(resumed / "train_log.csv")
    assert [r["step"] for r in again] == [r["step"] for r in full]
    assert [r["loss"] for r in again] == [r["loss"] for r in full]  # the same loss curve, bit for bit
    a, b = torch.load(trained / "prior.pt", weights_only=True), torch.load(resumed / "prior.pt", weights_only=True)
    for key in ("state_dict", "ema_state_dict"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)


@pytest.mark.slow  # > 15 s; the fast tier must stay under 5 minutes
def test_eval_hot_and_cold(trained, tmp_path):
    for mode, hot in (("hot", "true"), ("cold", "false")):
        out = tmp_path / mode
        ok(run("eval_score_based.py", f"prior={trained / 'prior.pt'}", f"sampling.hot_sampler={hot}",
               "sample_batch_size=3", "progress=false", f"hydra.run.dir={out}"))
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["mode"] == mode and metrics["samples"] == 3 and metrics["layer"] == 2
        assert metrics["mean_l2"] > 0 and metrics["relative_change"] > 0
        for name in ("start", "result", "start_vs_result"):
            assert (out / f"batch000_{name}.png").is_file()
    # Running into a folder that holds results refuses instead of overwriting them.
    one_line_error(run("eval_score_based.py", f"prior={trained / 'prior.pt'}", f"hydra.run.dir={out}"),
                   "already holds results")


def test_eval_finds_the_newest_trained_prior(trained, tmp_path):
    search = tmp_path / "outputs"
    shutil.copytree(trained, search / "run")
    out = tmp_path / "eval"
    tiny = "default_gen_conf=configs/trained_networks/tiny_layer2.yaml"  # its ckpt: null means "search"
    ok(run("eval_score_based.py", tiny, f"search_dir={search}", "sample_batch_size=2", "progress=false",
           f"hydra.run.dir={out}"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "hot" and metrics["prior"].endswith("prior.pt")
    line = one_line_error(run("eval_score_based.py", tiny, f"search_dir={tmp_path / 'empty'}",
                              f"hydra.run.dir={tmp_path / 'eval2'}"), "python train_score.py")
    assert "no trained layer-2 prior" in line


@pytest.mark.slow  # > 15 s; the fast tier must stay under 5 minutes
def test_ddp_matches_one_process_with_the_doubled_batch(tmp_path):
    common = [*QUICK, "steps=4", "log_every=1", "ckpt_every=0", "warmup=0", "lr=1e-3"]
    single, double = tmp_path / "one", tmp_path / "two"
    ok(run("train_score.py", *common, "data.streams=2", f"hydra.run.dir={single}"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ok(run("train_score.py", *common, f"hydra.run.dir={double}", launcher=torchrun))
    assert json.loads((double / "summary.json").read_text())["processes"] == 2
    la = [r["loss"] for r in read_scalar_log(single / "train_log.csv")]
    lb = [r["loss"] for r in read_scalar_log(double / "train_log.csv")]
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    a, b = torch.load(single / "prior.pt", weights_only=True), torch.load(double / "prior.pt", weights_only=True)
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    assert a["training"]["num_streams"] == b["training"]["num_streams"] == 2


@pytest.mark.parametrize(
    ("script", "overrides", "fragments"),
    [
        ("train_score.py", ["prior.layer=7"], ["prior.layer", "layer must be an integer in [1, 4]"]),
        ("train_score.py", ["batch_size=6", "data.streams=4"], ["batch_size=6", "4 data streams"]),
        ("train_score.py", ["resume=does/not/exist.pt"], ["score checkpoint not found"]),
        ("train_score.py", ["generator=demo", "trained_networks=demo_pixel"], ["layer -1) trains on images"]),
        ("eval_score_based.py", ["gen_conf=configs/trained_networks/nope.yaml"], ["gen_conf: no such file"]),
    ],
)
def test_bad_input_gives_one_line(tmp_path, script, overrides, fragments):
    one_line_error(run(script, *QUICK[-2:], *overrides, f"hydra.run.dir={tmp_path / 'run'}"), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_gives_one_line(tmp_path):
    one_line_error(run("train_score.py", "device=cuda", f"hydra.run.dir={tmp_path / 'run'}"), "CUDA is not available")
