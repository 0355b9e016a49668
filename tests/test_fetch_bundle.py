"""fetch_bundle.py: unpacks a bundle zip under checkpoints/ (never replacing files), checks the expected files,
and fails with one line when something is missing or nothing can be downloaded."""

import subprocess
import sys
import zipfile
from pathlib import Path

import fetch_bundle

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "fetch_bundle.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def make_zip(path: Path, names: list[str], top: str = "sgilo") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(f"{top}/{name}", f"content of {name}")
    return path


def test_expected_files_are_the_ones_the_configs_name():
    files = fetch_bundle.expected_files()
    assert "checkpoints/stylegan/ffhq.pkl" in files and "checkpoints/stylegan/gaussian_fit.pt" in files
    assert {f"checkpoints/score_based/vp_sde/{n}.pth" for n in fetch_bundle.PUBLISHED_PRIORS} <= set(files)


def test_unpack_and_check(tmp_path):
    root = tmp_path / "repo"
    names = [f.replace("vp_sde", "vp") if f.endswith("layer1.pth") else f for f in fetch_bundle.expected_files()]
    archive = make_zip(tmp_path / "bundle.zip", names + ["README.txt"])
    (root / "checkpoints" / "stylegan").mkdir(parents=True)
    (root / "checkpoints" / "stylegan" / "ffhq.pkl").write_text("mine")  # an existing file is kept
    proc = run("--zip", str(archive), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "all 7 bundle files are in place" in proc.stdout
    assert (root / "checkpoints" / "stylegan" / "ffhq.pkl").read_text() == "mine"
    assert (root / "checkpoints" / "score_based" / "vp" / "layer1.pth").is_file()  # the vp/ spelling is accepted
    assert not (root / "README.txt").exists()  # only checkpoints/ members are unpacked


def test_incomplete_bundle_and_bad_zip_give_one_line(tmp_path):
    archive = make_zip(tmp_path / "partial.zip", fetch_bundle.expected_files()[:2])
    proc = run("--zip", str(archive), "--root", str(tmp_path / "repo"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: the bundle is incomplete") and "latent.pth" in proc.stderr
    (tmp_path / "broken.zip").write_text("not a zip")
    proc = run("--zip", str(tmp_path / "broken.zip"), "--root", str(tmp_path / "repo"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot unpack") and "Traceback" not in proc.stderr
