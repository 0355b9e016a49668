"""solve_inverse.py from the command line (subprocesses, tiny generator, a few steps): the outputs of DESIGN §4,
one-line errors (exit 2) for bad input before any work, no overwriting, crash safety, torchrun = one process."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["generator=tiny", "generator.fit_samples=1000", "progress=false", "num_threads=1", "input_source=generator",
         "num_images=2", "batch_size=2"]


def command(*overrides: str, launcher: list[str] | None = None) -> list[str]:
    quick = [q for q in QUICK if not q.startswith("generator")] if any(
        o.startswith("generator=") for o in overrides) else QUICK  # fit_samples is a key of the tiny entry only
    return (launcher or [sys.executable]) + ["solve_inverse.py", *quick, *overrides]


def env() -> dict[str, str]:
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}


def run(*overrides: str, launcher: list[str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command(*overrides, launcher=launcher), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_outputs_of_a_run(tmp_path):
    out = tmp_path / "run"
    proc = ok(run("method=sgilo", "steps=[3,3,3]", "chains=2", "save_latent=true", "task=super_resolution",
                  "operators.factor=2", f"hydra.run.dir={out}"))
    assert "psnr" in proc.stdout and "ssim" in proc.stdout  # the table of mean metrics
    m = metrics(out)
    assert [im["name"] for im in m["images"]] == ["sample0000", "sample0001"]
    for im in m["images"]:
        assert {"name", "psnr", "ssim", "lpips", "measurement_mse", "seconds", "rounds"} <= set(im)
        assert im["lpips"] is None or isinstance(im["lpips"], float)
        assert [r["layer"] for r in im["rounds"]] == [0, 1, 2] and im["psnr"] > 5
    assert set(m["mean"]) >= {"psnr", "ssim", "lpips", "measurement_mse", "seconds"}
    d = out / "images" / "sample0001"
    for name in ("reference", "measurement", "naive", "round0", "round1", "round2", "final", "mean", "std", "grid"):
        assert (d / f"{name}.png").is_file(), name
    with Image.open(out / "grid.png") as grid:  # 2 rows of reference | measurement | naive | 3 rounds | final | std
        assert grid.size == (8 * 34 + 2, 2 * 34 + 2)
    saved = torch.load(d / "latents_layer2.pt", weights_only=True)
    assert saved["layer"] == 2 and saved["latents"].shape == (2, 32, 8, 8)


def write_bad_image(folder: Path) -> Path:
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    """All bad-input runs at once (each stops before any work, so they are cheap in parallel)."""
    tmp = tmp_path_factory.mktemp("errors")
    taken = tmp / "taken"  # an earlier run's folder
    taken.mkdir()
    (taken / "metrics.json").write_text('{"images": [{"name": "earlier"}], "mean": {}}')
    cases = {
        "short_list": (["steps=[5,5]", "lr=[0.1]"], "lr has 1 entry"),
        "factor": (["task=super_resolution", "operators.factor=3"], "does not divide the resolution 32"),
        "folder": (["input_source=folders", f"input_folders=[{tmp / 'missing'}]"], "input folder not found"),
        "operator": (["operators.operator_type=blur"], "unknown operators.operator_type"),
        "device": (["device=cuda:99"], "cuda:99"),
        "rounds": (["method=csgm", "steps=[1,1,1,1,1]", "vars=nlg"], "only 4 layers"),
        "generator": (["generator=ffhq"], "not found"),
        "image": (["input_source=folders", f"input_folders=[{write_bad_image(tmp / 'bad')}]"], "not a readable image"),
        "source": (["input_source=camera"], "input_source must be one of"),
        "overwrite": ([f"hydra.run.dir={taken}"], "already holds results"),
        "task": (["task=deblurring"], "Could not find 'task/deblurring'"),
        "key": (["stepz=[3]"], "Could not override 'stepz'"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, *args, *([] if name == "overwrite" else [f"hydra.run.dir={tmp / name}"]))
                   for name, (args, _) in cases.items()}
        return {name: (futures[name].result(), cases[name][1], tmp / name) for name in cases}


@pytest.mark.parametrize("case", ["short_list", "factor", "folder", "operator", "device", "rounds", "generator",
                                  "image", "source", "overwrite", "task", "key"])
def test_bad_input_is_one_line_and_exit_2(errors, case):
    proc, fragment, run_dir = errors[case]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "[WARNING]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], lines[0]
    assert not (run_dir / "images").exists()  # nothing was solved


def test_overwrite_refusal_keeps_the_earlier_run(errors):
    taken = errors["overwrite"][2].parent / "taken"
    assert metrics(taken)["images"] == [{"name": "earlier"}]
    assert sorted(p.name for p in taken.iterdir()) == [".hydra", "metrics.json", "solve_inverse.log"] or \
        not (taken / "images").exists()


def test_interrupt_keeps_finished_images(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(command("method=ilo", "steps=[40,40,40]", "num_images=4", "batch_size=1",
                                    f"hydra.run.dir={out}"), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not (out / "metrics.json").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert (out / "metrics.json").exists(), stderr[-3000:]
    assert proc.returncode != 0, "the run finished before it could be interrupted"
    done = metrics(out)["images"]
    assert 1 <= len(done) < 4 and "Traceback" not in stderr
    for im in done:
        assert (out / "images" / im["name"] / "final.png").is_file()


def test_torchrun_two_processes_match_one(tmp_path):
    args = ["method=ilo", "task=compressed_sensing", "steps=[4,4]", "num_images=3", "batch_size=1"]
    single = tmp_path / "single"
    ok(run(*args, f"hydra.run.dir={single}"))
    double = tmp_path / "double"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    ok(run(*args, f"hydra.run.dir={double}", launcher=torchrun, timeout=180))
    a, b = metrics(single)["images"], metrics(double)["images"]
    assert [im["name"] for im in a] == [im["name"] for im in b] == ["sample0000", "sample0001", "sample0002"]
    for x, y in zip(a, b):
        assert x["psnr"] == pytest.approx(y["psnr"], abs=1e-4) and x["ssim"] == pytest.approx(y["ssim"], abs=1e-5)
    assert (double / "metrics_rank0.json").is_file() and (double / "metrics_rank1.json").is_file()


def test_ilo_radius_is_chosen_per_generator():
    from hydra import compose, initialize_config_dir

    import solve_inverse

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for generator, expected in [("demo", [100, 100, 400, 1600]), ("ffhq", [1000, 1000, 6000, 6000])]:
            cfg = compose("solve_inverse", overrides=["method=ilo", f"generator={generator}"])
            assert solve_inverse.solver_settings(cfg).radius == expected[:3]  # one per round (3 rounds)
        cfg = compose("solve_inverse", overrides=["method=ilo", "radius=[0,5,6,7]"])  # an explicit radius wins
        assert solve_inverse.solver_settings(cfg).radius == [0, 5, 6]
        cfg = compose("solve_inverse", overrides=["method=sgilo"])  # published SGILO: no ball
        assert solve_inverse.solver_settings(cfg).radius == [None] * 3
