"""solve_inverse.py from the command line (subprocesses, tiny generator, a few steps): the outputs of DESIGN §4,
one-line errors (exit 2) for bad input before any work, no overwriting, crash safety, torchrun = one process."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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
        assert -1 <= im["std_error_spearman"] <= 1  # two chains: their spread ranked against the error
    assert set(m["mean"]) >= {"psnr", "ssim", "lpips", "measurement_mse", "seconds", "std_error_spearman"}
    d = out / "images" / "sample0001"
    for name in ("reference", "measurement", "naive", "round0", "round1", "round2", "final", "mean", "std", "grid"):
        assert (d / f"{name}.png").is_file(), name
    with Image.open(out / "grid.png") as grid:  # 2 rows of reference | measurement | naive | 3 rounds | final | std
        assert grid.size == (8 * 130 + 2, 2 * 130 + 2)  # 32 px tiles enlarged to 128 for viewing
    with Image.open(d / "grid.png") as row, Image.open(d / "view" / "final.png") as tile:
        assert row.size == (8 * 130 + 2, 130 + 2) and tile.size == (128, 128)
        with Image.open(d / "final.png") as native:  # the enlarged tile is the native one, nearest neighbour
            assert native.size == (32, 32) and native.resize((128, 128), Image.Resampling.NEAREST).tobytes() == \
                tile.tobytes()
    assert list((out / "tensorboard" / "batch000").iterdir()), "no TensorBoard events"
    check_report(out, names=["sample0000", "sample0001"], tiles=8)
    saved = torch.load(d / "latents_layer2.pt", weights_only=True)
    assert saved["layer"] == 2 and saved["latents"].shape == (2, 32, 8, 8)


def test_given_folder_of_any_image_kind_is_solved(tmp_path):
    """input_folders means exactly those files: gray, RGBA, 16-bit, non-square and large inputs all work."""
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (36, 36, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (48, 48), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    Image.fromarray(rng.integers(0, 255, (1200, 1500, 3), dtype=np.uint8)).save(folder / "large.png")
    out = tmp_path / "run"
    ok(run("input_source=folders", f"input_folders=[{folder}]", "method=csgm", "steps=[2]", "batch_size=5",
           f"hydra.run.dir={out}"))
    assert sorted(im["name"] for im in metrics(out)["images"]) == ["deep16", "gray", "large", "rgba", "wide"]
    check_report(out, names=["deep16", "gray", "large", "rgba", "wide"], tiles=5)


@pytest.mark.slow  # two jobs (10 s); the fast tier must stay under 5 minutes
def test_multirun_gets_a_page_comparing_its_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, "solve_inverse.py", "-m", *QUICK, "method=csgm,ilo", "steps=[2]", "vars=[nl]",
            "num_images=1", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}_${method.name}"]
    ok(subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0_csgm", "1_ilo"]
    text = (sweep / "report.html").read_text()
    for job in jobs:
        assert (job / "report.html").is_file() and f'href="{job.name}/report.html"' in text
    for src in re.findall(r'<img[^>]* src="([^"]+)"', text):
        assert (sweep / src).is_file(), src
    assert ">csgm<" in text and ">ilo<" in text and "method × task" in text


def check_report(run_dir: Path, names: list[str], tiles: int, curves: bool = True) -> str:
    """report.html names every image, each tile it links exists, it has curves and the config."""
    text = (run_dir / "report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', text)
    assert len(sources) == len(names) * tiles, sources
    for src in sources:
        assert not src.startswith(("http:", "https:", "/")) and (run_dir / src).is_file(), src
    for name in names:
        assert f"images/{name}/view/final.png" in sources and name in text
    assert ("<svg" in text and "<polyline" in text) == curves
    assert "mean ± std" in text and "input_source:" in text
    assert "<script" not in text and "<link" not in text  # no scripts, no external stylesheets
    return text


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
    a_file = tmp / "a_file.png"
    a_file.write_bytes(b"")
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
        "run_dir_proc": (["hydra.run.dir=/proc/x"], "/proc/x cannot be used as the run directory"),
        "run_dir_file": ([f"hydra.run.dir={a_file}"], "exists and is not a folder"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, *args, *([] if "run.dir" in " ".join(args) else
                                                   [f"hydra.run.dir={tmp / name}"]))
                   for name, (args, _) in cases.items()}
        return {name: (futures[name].result(), cases[name][1], tmp / name) for name in cases}


@pytest.mark.parametrize("case", ["short_list", "factor", "folder", "operator", "device", "rounds", "generator",
                                  "image", "source", "overwrite", "task", "key", "run_dir_proc", "run_dir_file"])
def test_bad_input_is_one_line_and_exit_2(errors, case):
    proc, fragment, run_dir = errors[case]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "[WARNING]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], lines[0]
    assert not (run_dir / "images").exists() and not (run_dir / "report.html").exists()  # nothing was solved


def test_input_listing_errors(tmp_path):
    """The input checks of inverse.inputs (each becomes one error line, like the cases above)."""
    from omegaconf import OmegaConf

    from inverse.inputs import list_inputs
    from utils import UserError

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    a_file = tmp_path / "a_file.png"
    a_file.write_bytes(b"")
    base = {"input_source": "folders", "num_images": 2, "max_images": None}
    cases = [({"input_folders": [str(empty)]}, False, "holds no png/jpg/jpeg images"),
             ({"input_folders": [str(a_file)]}, False, "is not a folder"),
             ({"input_folders": []}, False, "input_folders is empty"),
             ({"input_source": "generator", "input_folders": ["images/examples/"]}, True,
              "input_folders was given but input_source=generator")]
    for overrides, given, fragment in cases:
        with pytest.raises(UserError, match=fragment):
            list_inputs(OmegaConf.create({**base, **overrides}), folders_given=given)
    ok_cfg = OmegaConf.create({**base, "input_source": "generator", "input_folders": ["images/examples/"]})
    assert len(list_inputs(ok_cfg, folders_given=False)) == 2  # the default folders alone are no contradiction


def test_overwrite_refusal_keeps_the_earlier_run(errors):
    taken = errors["overwrite"][2].parent / "taken"
    assert metrics(taken)["images"] == [{"name": "earlier"}]
    assert sorted(p.name for p in taken.iterdir()) == [".hydra", "metrics.json", "solve_inverse.log"] or \
        not (taken / "images").exists()


def test_interrupt_keeps_finished_images(tmp_path):
    out = tmp_path / "run"
    # Enough work after the first batch (7 more images, ~1 s each) that the interrupt lands mid-run on a fast,
    # loaded machine too.
    proc = subprocess.Popen(command("method=ilo", "steps=[100,100,100]", "num_images=8", "batch_size=1",
                                    f"hydra.run.dir={out}"), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # A shell's background job inherits SIGINT ignored, and Python keeps it so: give
                            # the child the default disposition, so that this test also runs under `cmd &`.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 90
    while time.time() < deadline and not (out / "metrics.json").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert (out / "metrics.json").exists(), stderr[-3000:]
    assert proc.returncode != 0, "the run finished before it could be interrupted"
    done = metrics(out)["images"]
    assert 1 <= len(done) < 8 and "Traceback" not in stderr
    for im in done:
        assert (out / "images" / im["name"] / "final.png").is_file()


@pytest.mark.slow  # > 15 s; the fast tier must stay under 5 minutes
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

    from inverse.methods import Rounds
    from utils import UserError

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for generator, expected in [("demo", [50, 50, 200]), ("ffhq", [1000, 1000, 6000])]:
            cfg = compose("solve_inverse", overrides=["method=ilo", f"generator={generator}"])  # task: inpainting
            assert Rounds.from_config(cfg).settings.radius == expected  # one per round (3 rounds)
        for task, expected in [("super_resolution", [50, 50, 200]), ("colorization", [50, 50, 200]),
                               ("compressed_sensing", [100, 100, 400]), ("denoising", [100, 100, 400])]:
            cfg = compose("solve_inverse", overrides=["method=ilo", f"task={task}"])  # the demo's per-task factor
            assert Rounds.from_config(cfg).settings.radius == expected
        cfg = compose("solve_inverse", overrides=["method=ilo", "generator=ffhq", "task=super_resolution"])
        assert Rounds.from_config(cfg).settings.radius == [1000, 1000, 6000]  # the published radii are not scaled
        cfg = compose("solve_inverse", overrides=["method=sgilo_grad", "task=super_resolution"])
        assert Rounds.from_config(cfg).settings.radius == [50.0, 50.0, 200.0]  # SGILO has ILO's per-task balls
        cfg = compose("solve_inverse", overrides=["method=sgilo_grad", "task=super_resolution", "~radius_task_scale"])
        assert Rounds.from_config(cfg).settings.radius == [100, 100, 400]
        cfg = compose("solve_inverse", overrides=["method=ilo", "radius_task_scale.demo.inpainting=-1"])
        with pytest.raises(UserError, match="radius_task_scale.demo.inpainting must be a number > 0"):
            Rounds.from_config(cfg)
        cfg = compose("solve_inverse", overrides=["method=ilo", "radius=[0,5,6,7]"])  # an explicit radius wins
        assert Rounds.from_config(cfg).settings.radius == [0, 5, 6]
        cfg = compose("solve_inverse", overrides=["method=sgilo", "~calibrated"])  # published SGILO: no ball
        assert Rounds.from_config(cfg).settings.radius == [None] * 3


def test_prior_weight_per_task():
    """prior_task_scale: on the demo, the calibrated SGILO has no layer prior on SR, CS and colorization (validation
    found it harmful there) and keeps it elsewhere; other generators, the published settings and ~prior_task_scale
    are untouched; a bad factor is a one-line error."""
    from hydra import compose, initialize_config_dir

    from inverse.methods import Rounds
    from utils import UserError

    def T(*overrides: str) -> list[float]:
        return Rounds.from_config(compose("solve_inverse", overrides=list(overrides))).settings.gen_temperature

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for task in ("super_resolution", "compressed_sensing", "colorization"):
            assert T("method=sgilo", f"task={task}") == [0.0, 0.0, 0.0]
        for task in ("inpainting", "denoising"):
            assert T("method=sgilo", f"task={task}") == [0.0, 0.01, 0.01]
        assert T("method=sgilo", "task=super_resolution", "~prior_task_scale") == [0.0, 0.01, 0.01]
        assert T("method=sgilo_grad", "generator=ffhq", "task=super_resolution") == [0.0, 0.01, 0.01]
        assert T("method=sgilo", "~calibrated", "task=super_resolution") == [0.0, 0.1, 0.1]  # published: no key
        assert T("method=sgilo", "task=colorization", "prior_task_scale.demo.colorization=0.5",
                 "gen_temperature=[0,0.02,0.02,0.02]") == [0.0, 0.01, 0.01]
        cfg = compose("solve_inverse", overrides=["method=sgilo", "+prior_task_scale.demo.inpainting=-1"])
        with pytest.raises(UserError, match="prior_task_scale.demo.inpainting must be a number >= 0"):
            Rounds.from_config(cfg)


def test_task_overrides_and_range_prior_settings():
    """task_overrides: on the demo, the calibrated SGILO has ILO's spherical projections except on denoising (where
    validation found them harmful), the range prior and ILO's per-task balls; the published settings have none of
    them; ~task_overrides drops the exception; an unknown key or a non-mapping is a one-line error."""
    from hydra import compose, initialize_config_dir

    from inverse.methods import Rounds
    from utils import UserError

    def S(*overrides: str):
        return Rounds.from_config(compose("solve_inverse", overrides=list(overrides))).settings

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        s = S("method=sgilo", "task=inpainting")
        assert (s.project_latent, s.project_noises, s.range_adaptive) == (True, True, True)
        assert s.range_weight == [0.0, 1e-4, 1e-4] and s.radius == [50.0, 50.0, 200.0]
        s = S("method=sgilo", "task=denoising")
        assert (s.project_latent, s.project_noises) == (False, False) and s.radius == [100, 100, 400]
        s = S("method=sgilo", "task=denoising", "~task_overrides")
        assert (s.project_latent, s.project_noises) == (True, True)
        s = S("method=sgilo", "task=denoising", "generator=tiny")  # the exception is the demo's
        assert (s.project_latent, s.project_noises) == (True, True)
        s = S("method=sgilo", "~calibrated", "task=inpainting")  # published: no range prior, no ball
        assert s.range_weight == [0.0] * 3 and not s.range_adaptive and s.radius == [None] * 3
        cfg = compose("solve_inverse", overrides=["method=sgilo", "+task_overrides.demo.inpainting.bogus=1"])
        with pytest.raises(UserError, match=r"task_overrides.demo.inpainting: unknown solver key\(s\) \['bogus'\]"):
            Rounds.from_config(cfg)
        cfg = compose("solve_inverse", overrides=["method=sgilo", "task=denoising", "task_overrides.demo.denoising=3"])
        with pytest.raises(UserError, match="task_overrides.demo.denoising must map solver keys to values"):
            Rounds.from_config(cfg)


def test_calibrated_settings_apply_per_method_and_generator():
    """configs/calibrated/<method>_<generator>.yaml: on the demo, method=sgilo is sgilo_grad's calibration and
    csgm / ilo / sgilo share the 300-step budget; other generators keep the published settings; ~calibrated and
    the command line win."""
    from dataclasses import asdict

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from inverse.methods import Rounds

    def settings(*overrides: str) -> tuple[dict, dict]:
        cfg = compose("solve_inverse", overrides=list(overrides))
        return asdict(Rounds.from_config(cfg).settings), OmegaConf.to_container(cfg.priors)

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        assert compose("solve_inverse").method.name == "sgilo"  # the no-argument demo
        assert settings() == settings("method=sgilo") == settings("method=sgilo_grad")
        published, _ = settings("method=sgilo", "~calibrated")
        assert published["prior_step"] == "pc" and published["steps"] == [300, 300, 300]
        assert settings("method=sgilo", "~calibrated") != settings("method=sgilo")
        ffhq, ffhq_priors = settings("method=sgilo", "generator=ffhq")
        assert ffhq["prior_step"] == "pc" and ffhq["steps"] == [300, 300, 300] and ffhq["radius"] == [None] * 3
        assert ffhq_priors["ffhq"]["gen_configs"] == [None, "layer1", "layer2", "syn_layer3"]
        for method, demo, other, start in [("csgm", [300], [1200], "zeros"), ("ilo", [100] * 3, [300] * 3, "ones")]:
            assert settings(f"method={method}")[0]["steps"] == demo
            assert settings(f"method={method}")[0]["latent_init"] == "search"  # the demo's calibrated start
            assert settings(f"method={method}", "generator=ffhq")[0]["steps"] == other
            assert settings(f"method={method}", "~calibrated")[0]["steps"] == other
            for extra in ("generator=ffhq", "~calibrated"):  # the published start
                assert settings(f"method={method}", extra)[0]["latent_init"] == start
        assert settings("method=sgilo", "steps=[7,7]", "lr=0.3")[0]["steps"] == [7, 7]  # the command line wins
        assert settings("method=sgilo", "lr=0.3")[0]["lr"] == [0.3] * 3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(tmp_path):
    out = tmp_path / "run"
    ok(run("method=ilo", "steps=[3,3,3]", f"hydra.run.dir={out}"))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1000,900", (out / "report.html").as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (900, 1000)
    assert (pixels < 200).mean() > 0.02 and pixels.std() > 20  # text, tables and tiles drawn, not a blank page


SAMPLER_RUNS = {
    "langevin_layer": ["method=langevin", "langevin.levels=3", "langevin.steps_per_level=1", "init_steps=2"],
    "dps_pixel": ["method=dps", "space=pixel", "dps.steps=3", "chains=2"],
    "resample_layer": ["method=resample", "resample.steps=6", "resample.every=2", "resample.opt_steps=2",
                       "init_steps=2"],
}


@pytest.fixture(scope="module")
def sampler_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("samplers")
    demo = ["generator=demo", "max_images=1", "input_source=folders", "progress=false", "num_threads=1"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, *demo, *args, f"hydra.run.dir={tmp / name}")
                   for name, args in SAMPLER_RUNS.items()}
        return {name: (f.result(), tmp / name) for name, f in futures.items()}


@pytest.mark.parametrize("name", sorted(SAMPLER_RUNS))
def test_posterior_samplers_run_through_the_same_outputs(sampler_runs, name):
    proc, out = sampler_runs[name]
    ok(proc)
    m = metrics(out)
    assert len(m["images"]) == 1 and m["images"][0]["psnr"] is not None and not m["images"][0]["failed"]
    stages = 2 if name.endswith("layer") else 1  # the CSGM start (layer space) and the sample
    assert len(m["images"][0]["rounds"]) == stages
    chains = 2 if name == "dps_pixel" else 1
    check_report(out, names=[m["images"][0]["name"]], tiles=3 + stages + 1 + (chains > 1), curves=stages == 2)


def test_sampler_settings_are_checked():
    from hydra import compose, initialize_config_dir

    from inverse.methods import build_method
    from utils import UserError

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for overrides, fragment in [(["method=dps", "+dps.stepz=3"], r"dps: unknown setting\(s\) \['stepz'\]"),
                                    (["method=langevin", "space=latent"], "space must be one of"),
                                    (["method=resample", "layer=0"], "layer must be an integer >= 1"),
                                    (["method=dps", "chains=0"], "chains must be an integer >= 1"),
                                    (["method=dps", "dps.t_start=0"], r"dps.t_start must be a number in \(0, 1\]"),
                                    (["method=langevin", "langevin.spacing=log"], "langevin.spacing must be one of")]:
            with pytest.raises(UserError, match=fragment):
                build_method(compose("solve_inverse", overrides=overrides))
