"""Small utilities shared across the project: an attribute-access dict, a cache folder and file downloads.

``EasyDict`` lives here (as ``dnnlib.util.EasyDict``) because NVIDIA's network pickles name it by that exact
path; the safe pickle reader in ``torch_utils.persistence`` maps that name onto this class.

Downloads go through :func:`download`, which takes either an ordinary URL (fetched with ``urllib``) or a
Google-Drive file id / link (fetched with ``gdown``, imported only when needed), writes to a temporary file
next to the destination, checks the SHA-256 when one is given and only then moves the file into place, so an
interrupted or corrupted download never leaves a plausible-looking file behind.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "EasyDict",
    "DownloadError",
    "cache_dir",
    "is_drive_id",
    "sha256sum",
    "download",
    "cached_download",
]

CACHE_ENV = "SGILO_CACHE"  # Environment variable that overrides the cache folder.
_DEFAULT_CACHE = Path("~/.cache/sgilo")
_CHUNK = 1 << 20


class EasyDict(dict):
    """A ``dict`` whose items can also be read and written as attributes (``d.key`` is ``d['key']``)."""

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not real attributes; a missing key must look like a missing
        # attribute so that getattr(d, name, default), hasattr and copy/pickle probing behave normally.
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its checksum; the message is a single line meant for users."""


def cache_dir(*parts: str) -> Path:
    """The project's cache folder (``$SGILO_CACHE`` or ``~/.cache/sgilo``), joined with ``parts``; not created."""
    root = os.environ.get(CACHE_ENV) or str(_DEFAULT_CACHE)
    return Path(root).expanduser().joinpath(*parts)


# Google-Drive file ids are long URL-safe base64-ish tokens; requiring 20+ characters and no separators keeps
# ordinary file names and URLs from being mistaken for one.
_DRIVE_ID = re.compile(r"[A-Za-z0-9_-]{20,}")
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


def is_drive_id(source: str) -> bool:
    """True when ``source`` is a bare Google-Drive file id or a Google-Drive link."""
    if _DRIVE_ID.fullmatch(source):
        return True
    return any(f"//{host}/" in source for host in _DRIVE_HOSTS)


def sha256sum(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_url(url: str, dest: Path, timeout: float) -> None:
    """Copy ``url`` into ``dest`` with urllib (works for http(s):// and file:// URLs)."""
    request = urllib.request.Request(url, headers={"User-Agent": "sgilo-downloader"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def _fetch_drive(source: str, dest: Path, timeout: float) -> None:
    """Copy a Google-Drive file (bare id or link) into ``dest`` with gdown, which handles Drive's
    confirmation page for large files."""
    try:
        import gdown
    except ImportError as exc:  # gdown is in requirements.txt, but keep the failure readable.
        raise DownloadError("downloading from Google Drive needs the 'gdown' package (pip install gdown)") from exc
    kwargs: dict[str, Any] = {"output": str(dest), "quiet": True}
    accepted = inspect.signature(gdown.download).parameters
    if _DRIVE_ID.fullmatch(source):
        kwargs["id"] = source
    else:
        kwargs["url"] = source
        if "fuzzy" in accepted:  # gdown 4.x needs it to accept share links; later versions always parse them
            kwargs["fuzzy"] = True
    if "timeout" in accepted:
        kwargs["timeout"] = timeout
    result = gdown.download(**kwargs)
    if result is None or not dest.is_file():
        raise DownloadError(f"gdown could not fetch Google-Drive file {source!r}")


def _network_message(exc: BaseException) -> str:
    """A short reason for a failed fetch, calling out the common no-network case explicitly."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
    offline_markers = ("Name or service not known", "Temporary failure in name resolution", "Network is unreachable",
                       "No route to host", "timed out", "Connection refused", "nodename nor servname",
                       "getaddrinfo failed", "ConnectionError", "Max retries exceeded", "Failed to establish")
    if isinstance(exc, (TimeoutError, ConnectionError)) or any(m in text for m in offline_markers):
        return f"no network connection? ({text})"
    return text


def download(
    url_or_drive_id: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    timeout: float = 60.0,
    overwrite: bool = False,
) -> Path:
    """Download ``url_or_drive_id`` to ``dest`` and return ``dest`` as a Path.

    A bare Google-Drive id or a drive.google.com link is fetched with gdown, anything else with urllib
    (``file://`` URLs included, which is what the tests use). When ``sha256`` is given the file must match it.
    An existing ``dest`` is kept (after checking ``sha256``, if given) unless ``overwrite``. Any failure raises
    :class:`DownloadError` with a one-line message and leaves no partial file at ``dest``.
    """
    dest = Path(dest).expanduser()
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and not overwrite:
        if expected is None or sha256sum(dest) == expected:
            return dest
        # A stale or corrupted copy: fetch again rather than trusting it.

    fetch: Callable[[str, Path, float], None] = _fetch_drive if is_drive_id(url_or_drive_id) else _fetch_url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            fetch(url_or_drive_id, tmp, timeout)
        except DownloadError as exc:
            raise DownloadError(f"could not download {url_or_drive_id} to {dest}: {exc}") from exc
        except Exception as exc:  # urllib's URLError/OSError, and gdown's/requests' own exception types.
            raise DownloadError(
                f"could not download {url_or_drive_id} to {dest}: {_network_message(exc)}; "
                f"fetch it by hand and place it at {dest}"
            ) from exc
        if expected is not None:
            actual = sha256sum(tmp)
            if actual != expected:
                raise DownloadError(
                    f"checksum mismatch for {url_or_drive_id}: expected sha256 {expected}, got {actual}; "
                    f"the download is corrupt or the file changed upstream (nothing was written to {dest})"
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def cached_download(
    url_or_drive_id: str,
    filename: str,
    sha256: str | None = None,
    *,
    subdir: str = "downloads",
    timeout: float = 60.0,
) -> Path:
    """Download once into ``cache_dir(subdir, filename)`` and return that path on every later call."""
    return download(url_or_drive_id, cache_dir(subdir, filename), sha256=sha256, timeout=timeout)
