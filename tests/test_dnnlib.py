"""dnnlib: EasyDict, the cache folder and downloads (local file:// URLs and a stubbed Drive fetch; no network)."""

from __future__ import annotations

import copy
import hashlib
import pickle
import urllib.error
from pathlib import Path

import pytest

import dnnlib
from dnnlib import util


def test_easydict_attribute_access_and_pickling():
    d = dnnlib.EasyDict(a=1, nested=dnnlib.EasyDict(b=2))
    assert dnnlib.EasyDict is util.EasyDict
    assert d.a == 1 and d.nested.b == 2
    d.c = 3
    assert d["c"] == 3
    del d.c
    assert "c" not in d
    with pytest.raises(AttributeError):
        _ = d.missing
    assert getattr(d, "missing", "default") == "default"
    assert copy.deepcopy(d) == d
    again = pickle.loads(pickle.dumps(d))
    assert isinstance(again, util.EasyDict) and again == d and again.nested.b == 2


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("SGILO_CACHE", str(tmp_path / "cache"))
    assert util.cache_dir() == tmp_path / "cache"
    assert util.cache_dir("a", "b.pt") == tmp_path / "cache" / "a" / "b.pt"
    monkeypatch.delenv("SGILO_CACHE")
    assert util.cache_dir() == Path("~/.cache/sgilo").expanduser()


def test_is_drive_id():
    assert util.is_drive_id("1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUv")
    assert util.is_drive_id("https://drive.google.com/file/d/1A2b3C4d5E6f7G8h9I0j/view?usp=sharing")
    assert not util.is_drive_id("https://example.com/ffhq.pkl")
    assert not util.is_drive_id("file:///tmp/x.pt")
    assert not util.is_drive_id("ffhq.pkl")


def _source(tmp_path: Path, data: bytes = b"weights" * 1000) -> tuple[str, str]:
    src = tmp_path / "src" / "file.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    return src.as_uri(), hashlib.sha256(data).hexdigest()


def test_download_file_url_with_checksum(tmp_path):
    url, digest = _source(tmp_path)
    dest = util.download(url, tmp_path / "out" / "file.bin", sha256=digest)
    assert dest.read_bytes() == b"weights" * 1000
    assert util.sha256sum(dest) == digest
    assert list(dest.parent.iterdir()) == [dest]  # no leftover temporary files


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    url, _ = _source(tmp_path)
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(util.DownloadError, match="checksum mismatch") as info:
        util.download(url, dest, sha256="0" * 64)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_download_keeps_valid_existing_file_and_replaces_corrupt_one(tmp_path):
    url, digest = _source(tmp_path)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"stale")
    # Without a checksum an existing file is trusted ...
    assert util.download(url, dest).read_bytes() == b"stale"
    # ... with one, a mismatching copy is fetched again.
    assert util.download(url, dest, sha256=digest).read_bytes() == b"weights" * 1000


def test_download_missing_file_url_is_one_line_error(tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(util.DownloadError) as info:
        util.download((tmp_path / "nope.bin").as_uri(), dest)
    assert "\n" not in str(info.value) and str(dest) in str(info.value)
    assert not dest.exists()


def test_download_without_network_says_so(tmp_path, monkeypatch):
    def offline(url, dest, timeout):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(util, "_fetch_url", offline)
    with pytest.raises(util.DownloadError, match="no network connection") as info:
        util.download("https://example.com/ffhq.pkl", tmp_path / "ffhq.pkl")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ffhq.pkl").exists()


def test_drive_ids_go_through_the_drive_fetcher(tmp_path, monkeypatch):
    calls = []

    def fake_drive(source, dest, timeout):
        calls.append(source)
        Path(dest).write_bytes(b"drive-bytes")

    monkeypatch.setattr(util, "_fetch_drive", fake_drive)
    drive_id = "1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUv"
    digest = hashlib.sha256(b"drive-bytes").hexdigest()
    dest = util.download(drive_id, tmp_path / "x.pt", sha256=digest)
    assert calls == [drive_id] and dest.read_bytes() == b"drive-bytes"


def test_cached_download_uses_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SGILO_CACHE", str(tmp_path / "cache"))
    url, digest = _source(tmp_path)
    path = util.cached_download(url, "file.bin", sha256=digest, subdir="models")
    assert path == tmp_path / "cache" / "models" / "file.bin" and path.is_file()


def test_drive_fetcher_calls_gdown_with_id_or_url(tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    def fake_download(url=None, output=None, quiet=False, id=None, timeout=None):  # gdown >= 5 signature subset
        calls.append(dict(url=url, id=id, timeout=timeout))
        Path(output).write_bytes(b"x")
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake_download))
    util.download("1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUv", tmp_path / "a.bin", timeout=5)
    link = "https://drive.google.com/file/d/1A2b3C4d5E6f7G8h9I0j/view"
    util.download(link, tmp_path / "b.bin")
    assert calls == [dict(url=None, id="1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUv", timeout=5),
                     dict(url=link, id=None, timeout=60.0)]
