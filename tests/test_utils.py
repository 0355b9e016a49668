"""utils: image I/O for any mode and bit depth, grids without torchvision, devices, one-line user errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import (
    UserError,
    load_image,
    make_grid,
    resolve_device,
    run_main,
    save_grid,
    save_image,
    seed_everything,
    unique_run_dir,
)


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x / (w - 1), y / (h - 1), 1 - x / (w - 1)], axis=-1)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "F"])
def test_load_image_any_mode(tmp_path, mode):
    rgb = (_gradient(24, 40) * 255).round().astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode in ("I;16", "I", "F"):
        gray = (_gradient(24, 40)[..., 0] * (65535 if mode != "F" else 1.0))
        img = Image.fromarray(gray.astype({"I;16": np.uint16, "F": np.float32}[mode]))
        assert img.mode == mode
    elif mode != "RGB":
        img = img.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else (".tiff" if mode == "F" else ".png")
    path = tmp_path / f"x{suffix}"
    img.save(path)
    if suffix == ".tiff":  # not an accepted input type: one clear error
        with pytest.raises(UserError, match="unsupported image type"):
            load_image(path, 16)
        return
    out = load_image(path, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert -1.0 <= float(out.min()) and float(out.max()) <= 1.0
    if mode == "I;16":
        # 16-bit data keeps its range (PIL's own RGB conversion would saturate it at 255).
        # The centre crop of the 0..1 ramp spans about 0.2..0.8, i.e. -0.58..0.58.
        assert float(out.min()) == pytest.approx(-0.58, abs=0.03) and float(out.max()) == pytest.approx(0.58, abs=0.03)
        torch.testing.assert_close(out[0], out[1])


def test_32_bit_integer_images_are_scaled():
    from utils import _image_to_float_array

    a = _image_to_float_array(Image.fromarray(np.array([[0, 65535]], dtype=np.int32)))
    np.testing.assert_allclose(a[..., 0], [[0.0, 1.0]])
    b = _image_to_float_array(Image.fromarray(np.array([[0, 255]], dtype=np.int32)))  # 8-bit data held in 'I'
    np.testing.assert_allclose(b[..., 2], [[0.0, 1.0]])


def test_load_image_crops_and_round_trips(tmp_path):
    rgb = (_gradient(20, 30) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    full = load_image(tmp_path / "a.png")  # no resize: centre crop only
    assert full.shape == (3, 20, 20)
    expected = torch.from_numpy(rgb[:, 5:25].astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    torch.testing.assert_close(full, expected)
    save_image(full, tmp_path / "b.png")
    torch.testing.assert_close(load_image(tmp_path / "b.png"), full, atol=1 / 127.5, rtol=0)
    with pytest.raises(FileExistsError):
        save_image(full, tmp_path / "b.png")
    with pytest.raises(UserError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="not a readable image"):
        load_image(tmp_path / "bad.png")


def test_make_grid_layout(tmp_path):
    images = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 3, 2, 3) / 10
    grid = make_grid(images, nrow=3, padding=1, pad_value=-1)
    assert grid.shape == (3, 2 * 3 + 1, 3 * 4 + 1)
    assert float(grid[0, 1, 1]) == 0.0 and float(grid[0, 1, 5]) == pytest.approx(0.1)
    assert float(grid[0, 4, 5]) == pytest.approx(0.4)  # second row, second cell
    assert float(grid[0, 4, 9]) == -1.0  # empty sixth cell stays padding
    save_grid(images, tmp_path / "g.png", nrow=3)
    assert Image.open(tmp_path / "g.png").size == (3 * 5 + 2, 2 * 4 + 2)


def test_devices_and_errors(capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")

    def bad() -> None:
        raise UserError("something\nwrong")

    with pytest.raises(SystemExit) as info:
        run_main(bad)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: something wrong\n"


def test_seed_everything_and_run_dirs(tmp_path):
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    torch.testing.assert_close(torch.rand(3), a)
    first = unique_run_dir(str(tmp_path / "runs"))
    assert unique_run_dir(str(tmp_path / "runs")) == first  # stable within a process


def test_usable_run_dir(tmp_path):
    from utils import usable_run_dir

    assert usable_run_dir(tmp_path / "new" / "run") is None and (tmp_path / "new" / "run").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the write probe is gone
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in usable_run_dir(tmp_path / "file")
    assert "cannot be used as the run directory" in usable_run_dir("/proc/sgilo_run")


@pytest.mark.parametrize("script", ["train_score.py", pytest.param("train_stylegan.py", marks=pytest.mark.slow),
                                    pytest.param("eval_score_based.py", marks=pytest.mark.slow)])
def test_entry_scripts_refuse_an_unusable_run_dir(script):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, script, "hydra.run.dir=/proc/x"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: /proc/x cannot be used as the run directory (No such file "
                                                "or directory); choose another hydra.run.dir"]
