"""bench/quality.py end to end on the tiny random generator (1 image per set, 1 step per round): every task x
method runs, the tables, JSON and figures are written, and a second call reuses the finished runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quality_bench_writes_tables_and_figures(tmp_path):
    cmd = [sys.executable, "bench/quality.py", "--generator", "tiny", "--images", "1", "--steps", "1", "--out",
           str(tmp_path), "--extra", "brgm,sgilo_published"]  # (no landscape network for the tiny generator)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["tasks"]) == {"in_range", "held_out"}
    for tasks in results["tasks"].values():
        methods = {"csgm", "ilo", "sgilo", "sgilo_published", "brgm"}
        assert len(tasks) == 5 and all(set(s) == methods for s in tasks.values())
        assert all(s["csgm"]["naive_psnr"] is not None for s in tasks.values())
    sweeps = {f"{task}_{s}" for task in ("sparse_inpainting", "compressed_sensing") for s in ("in_range", "held_out")}
    assert set(results["sweeps"]) == sweeps
    md = (tmp_path / "results.md").read_text()
    assert "| inpainting |" in md and "SGILO ≥ ILO ≥ CSGM" in md
    assert set(results["fill_swd"]) == {"reference", "naive", "csgm", "ilo", "sgilo", "sgilo_published", "brgm"}
    assert all(v > 0 for v in results["fill_swd"].values()) and "Realism of the fill" in md
    assert set(results["fill_swd_spread"]) == set(results["fill_swd"])  # bootstrap over the images
    assert all(v >= 0 for v in results["fill_swd_spread"].values())
    assert set(results["fill_swd_paired"]) == {"sgilo - ilo", "ilo - csgm", "sgilo - csgm", "sgilo_published - ilo"}
    d, spread = results["fill_swd_paired"]["sgilo - ilo"]
    assert abs(d - (results["fill_swd"]["sgilo"] - results["fill_swd"]["ilo"])) < 1e-9 and spread >= 0
    assert set(results["std_error"]) == {"sgilo_published"}  # 4 chains of each sampler (MAP methods: no spread)
    assert all(-1 <= r["rho"] <= 1 for r in results["std_error"].values() if r["rho"] is not None)
    for name in ["samples.png", "recon_held_out_denoising.png", "sweep_compressed_sensing_held_out.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    again = subprocess.run(cmd + ["--no-sweeps"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("s/image") == 50  # every run reused, none solved again
    assert "What the prior adds" in md and len(results["ablations"]) == 5


@pytest.mark.slow
def test_range_check_writes_its_table(tmp_path):
    cmd = [sys.executable, "bench/range_check.py", "--generator", "tiny", "--images", "2", "--steps", "1", "--out",
           str(tmp_path), "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "range.json").read_text())
    assert set(results["psnr"]) == {"in_range", "held_out"}
    assert all(set(row) == {"csgm", "csgm_long", "ilo_layer1", "ilo_layer2", "ilo_layer3"}
               for row in results["psnr"].values())
    assert len(list((tmp_path / "range_heldout").glob("*.png"))) == 2
    assert "| held-out |" in (tmp_path / "range.md").read_text()


def test_calibrate_reads_jobs_and_refuses_bad_files(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from calibrate import read_jobs

    good = tmp_path / "jobs.txt"
    good.write_text("# a comment\nilo | method=ilo steps=[1,1]   # trailing comment\ncsgm|method=csgm\n")
    assert read_jobs(good) == {"ilo": ["method=ilo", "steps=[1,1]"], "csgm": ["method=csgm"]}
    for text, fragment in [("ilo method=ilo\n", "expected 'name | overrides'"), ("a|x\na|y\n", "listed twice"),
                           ("# nothing\n", "lists no jobs"), ("a b|x\n", "plain name")]:
        good.write_text(text)
        with pytest.raises(SystemExit, match=fragment):
            read_jobs(good)


@pytest.mark.slow
def test_calibrate_solves_every_job_on_the_validation_split(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("ilo | generator=tiny method=ilo steps=[1,1]\n"
                    "grad | generator=tiny method=sgilo_grad steps=[1,1]\n")
    cmd = [sys.executable, "bench/calibrate.py", str(jobs), "--images", "2", "--tasks", "sr4", "--out",
           str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert set(table["sr4"]) == {"ilo", "grad"} and len(table["sr4"]["grad"]["rounds"]) == 2
    assert "− ilo" in (tmp_path / "out" / "table.md").read_text()
    assert len(list((tmp_path / "out" / "val_images").glob("*.png"))) == 2  # drawn from images/val/
