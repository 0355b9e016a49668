"""data.emoji (fetch, checksum, splits by identity, dataset_tool layout) and data.images, on a fake package."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import dataset_path, open_images
from data.emoji import SPLITS, EmojiDataError, EmojiPackage, export_splits, fetch_package, prepare, split_of
from data.images import ImageDataset

ROOT = Path(__file__).resolve().parents[1]


def _png(colour, alpha=255, size=64) -> bytes:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (size // 2, size // 2), (*colour, alpha)), (size // 4, size // 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _catalogue(n: int = 40) -> list[dict]:
    emoji = []
    for i in range(n):
        code = f"1F{0x600 + i:03X}"
        entry = {"name": f"FACE {i}", "unified": code, "short_name": f"face{i}", "image": f"{code.lower()}.png",
                 "category": "Smileys & Emotion" if i % 2 else "People & Body", "subcategory": "x",
                 "has_img_fake": True}
        if i % 4 == 0:  # skin variations share the identity
            entry["skin_variations"] = {t: {"unified": f"{code}-{t}", "image": f"{code.lower()}-{t.lower()}.png",
                                            "has_img_fake": True} for t in ("1F3FB", "1F3FF")}
        emoji.append(entry)
    emoji.append({"name": "FLAG", "unified": "1F1EA-1F1EC", "short_name": "flag", "image": "1f1ea-1f1ec.png",
                  "category": "Flags", "has_img_fake": True})
    return emoji


def _fake_package(folder: Path) -> EmojiPackage:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake-emoji-1.0.0.tgz"
    catalogue = _catalogue()
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("emoji.json", json.dumps(catalogue).encode())
        for i, e in enumerate(catalogue):
            add(f"img/fake/64/{e['image']}", _png((200, 10 * (i % 20), 30)))
            for v in (e.get("skin_variations") or {}).values():
                add(f"img/fake/64/{v['image']}", _png((90, 60, 30)))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return EmojiPackage("fake", "fake-emoji", "1.0.0", sha, "test art", registry="http://127.0.0.1:9")


@pytest.fixture()
def fake(tmp_path):
    cache = tmp_path / "cache"
    package = _fake_package(cache / "emoji" / "packages")
    return cache, {"fake": package}


def test_split_is_a_pure_function_of_identity_with_the_documented_proportions():
    assert split_of("1f600") == split_of("1f600")
    ids = [f"{i:05x}" for i in range(20000)]
    counts = {s: sum(split_of(i) == s for i in ids) / len(ids) for s in SPLITS}
    assert abs(counts["train"] - 0.85) < 0.01 and abs(counts["val"] - 0.05) < 0.01
    assert abs(counts["held_out"] - 0.10) < 0.01
    # The documented formula, recomputed.
    h = int.from_bytes(hashlib.sha256(b"1f44b").digest()[:8], "big") % 1000
    assert split_of("1f44b") == ("train" if h < 850 else "val" if h < 900 else "held_out")


def test_prepare_writes_splits_by_identity_in_dataset_tool_layout(fake):
    cache, packages = fake
    out = prepare(cache, vendors=("fake",), resolution=16, packages=packages, log=lambda *_: None)
    manifest = json.loads((out / "manifest.json").read_text())
    records = manifest["images"]
    assert len(records) == 40 + 10 * 2  # 40 emoji + 2 skin tones of every 4th; the flag left out
    assert all(r["category"] != "Flags" for r in records)
    for r in records:
        assert r["split"] == split_of(r["identity"]) and (out / r["split"] / r["file"]).is_file()
        assert r["unified"].startswith(r["identity"])
    assert {r["split"] for r in records if r["identity"] == "1f600"} == {split_of("1f600")}
    for split in SPLITS:
        assert json.loads((out / split / "dataset.json").read_text()) == {"labels": None}
    img = Image.open(out / records[0]["split"] / records[0]["file"])
    assert img.mode == "RGB" and img.size == (16, 16)
    a = np.asarray(img)
    assert (a[0, 0] == 255).all() and a[8, 8, 0] < 230  # transparent -> white; the art's colour inside
    # A second call reuses the dataset; other settings in the same folder are refused.
    assert prepare(cache, vendors=("fake",), resolution=16, packages=packages, log=lambda *_: None) == out
    with pytest.raises(EmojiDataError, match="other settings"):
        prepare(cache, vendors=("fake",), resolution=8, packages=packages, name=out.name, log=lambda *_: None)


def test_checksum_mismatch_removes_the_file_and_no_network_is_an_error(fake, tmp_path, monkeypatch):
    cache, packages = fake
    bad = EmojiPackage("fake", "fake-emoji", "1.0.0", "0" * 64, "x", registry="http://127.0.0.1:9")
    folder = cache / "emoji" / "packages"
    with pytest.raises(EmojiDataError, match="sha256"):
        fetch_package(bad, folder)
    assert not (folder / bad.tarball_name).exists()
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no npm: the HTTPS fallback, refused
    with pytest.raises(EmojiDataError, match="cannot fetch"):
        fetch_package(bad, folder)


def test_cli_without_network_is_one_error_line(tmp_path):
    env = {**os.environ, "SGILO_CACHE": str(tmp_path), "PATH": str(Path(sys.executable).parent),
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "data.emoji"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot fetch emoji-datasource-google@16.0.0")


def test_export_and_image_dataset_from_folder_and_zip(fake, tmp_path):
    cache, packages = fake
    out = prepare(cache, vendors=("fake",), resolution=16, packages=packages, log=lambda *_: None)
    export_splits(out, tmp_path / "images")
    for split in ("val", "held_out"):
        pngs = sorted(p.name for p in (tmp_path / "images" / split).glob("*.png"))
        assert pngs == sorted(p.name for p in (out / split).glob("*.png"))
        assert "test art" in (tmp_path / "images" / split / "ATTRIBUTION.md").read_text()
    with pytest.raises(EmojiDataError, match="exists"):
        export_splits(out, tmp_path / "images")
    folder = ImageDataset(out / "train", 8)
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((out / "train").iterdir()):
            z.write(p, f"00000/{p.name}")
    zipped = ImageDataset(archive, 8)
    assert len(folder) == len(zipped) > 0 and folder.batch([0, 1]).shape == (2, 3, 8, 8)
    assert np.allclose(folder.batch(range(len(folder))).numpy(), zipped.batch(range(len(zipped))).numpy())
    assert -1 <= float(folder.batch([0]).min()) and float(folder.batch([0]).max()) <= 1


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="no dataset"):
        open_images(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        ImageDataset(tmp_path / "empty", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        ImageDataset(tmp_path / "bad", 8)
    with pytest.raises(ValueError, match="emoji splits"):
        dataset_path("emoji:test")


def test_committed_splits_match_the_split_function():
    for split in ("val", "held_out"):
        folder = ROOT / "images" / split
        records = json.loads((folder / "manifest.json").read_text())["images"]
        assert sorted(r["file"] for r in records) == sorted(p.name for p in folder.glob("*.png"))
        assert len(records) >= 100 and (folder / "ATTRIBUTION.md").is_file()
        for r in records:
            assert r["split"] == split == split_of(r["identity"]), r["file"]
            with Image.open(folder / r["file"]) as img:
                assert img.size == (32, 32) and img.mode == "RGB"
    val = {r["identity"] for r in json.loads((ROOT / "images" / "val" / "manifest.json").read_text())["images"]}
    held = {r["identity"] for r in json.loads((ROOT / "images" / "held_out" / "manifest.json").read_text())["images"]}
    assert not val & held


def test_examples_are_held_out_images():
    examples = sorted((ROOT / "images" / "examples").glob("*.png"))
    assert len(examples) == 4
    for f in examples:
        assert f.read_bytes() == (ROOT / "images" / "held_out" / f.name).read_bytes()
    cfg = (ROOT / "configs" / "solve_inverse.yaml").read_text()
    assert "input_source: folders" in cfg and "input_folders: [images/examples/]" in cfg
