"""Finding the published LPIPS weights, or saying clearly that there are none.

Two files are needed per network:

* the backbone: torchvision's ImageNet checkpoint, looked up as
  1. the configured ``backbone_path``,
  2. ``torch.hub.get_dir()/checkpoints/<torchvision file name>`` (where torchvision itself caches it, so a
     machine that ever ran torchvision already has it),
  3. a download from download.pytorch.org into that same hub folder. torchvision file names embed the first
     hex digits of the file's SHA-256 (``vgg16-397923af.pth``); the download is checked against them.
* the linear heads (LPIPS v0.1), looked up as
  1. the configured ``head_path``,
  2. ``<sgilo cache>/lpips/v0.1/<net>.pth`` (``$SGILO_CACHE`` or ``~/.cache/sgilo``),
  3. ``../shared/reference/lpips_v0.1/<net>.pth`` next to the repository, when that folder exists,
  4. a download from the LPIPS repository into the cache, checked against the full SHA-256.

A configured path that does not exist is an error (a typo must not silently fall back to other weights).
When nothing else works, :func:`load_lpips` logs one warning that says what was tried and how to fix it,
and returns None: callers drop the perceptual term and report the metric as unavailable, never computing
it with a random network.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dnnlib import util

from .network import LPIPS

__all__ = ["BACKBONES", "HEAD_URL", "HEAD_SHA256", "load_lpips", "resolve_backbone", "resolve_heads"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneFile:
    """A torchvision ImageNet checkpoint: its published file name and URL."""

    file_name: str
    url: str

    @property
    def hash_prefix(self) -> str:
        """The SHA-256 prefix torchvision embeds in the file name (after the last '-')."""
        return Path(self.file_name).stem.rsplit("-", 1)[1]


_TORCHVISION = "https://download.pytorch.org/models/"
BACKBONES: dict[str, BackboneFile] = {
    "vgg": BackboneFile("vgg16-397923af.pth", _TORCHVISION + "vgg16-397923af.pth"),
    "alex": BackboneFile("alexnet-owt-7be5be79.pth", _TORCHVISION + "alexnet-owt-7be5be79.pth"),
    "squeeze": BackboneFile("squeezenet1_1-b8a52dc0.pth", _TORCHVISION + "squeezenet1_1-b8a52dc0.pth"),
}

HEAD_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth"
# SHA-256 of the published v0.1 head files (as found in ../shared/reference/lpips_v0.1/).
HEAD_SHA256: dict[str, str] = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "squeeze": "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
}

_REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_HEADS_DIR = _REPO_ROOT.parent / "shared" / "reference" / "lpips_v0.1"


class WeightsUnavailable(RuntimeError):
    """No copy of a weights file could be found or fetched; the message is one line."""


def _check_net(net: str) -> None:
    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(BACKBONES)}")


def _configured(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"configured {what} {p} does not exist")
    return p


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: torchvision's download cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def head_cache_dir() -> Path:
    """``<sgilo cache>/lpips/v0.1``."""
    return util.cache_dir("lpips", "v0.1")


def resolve_backbone(net: str, path: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """A local torchvision checkpoint for ``net`` (configured path, hub cache, then a verified download)."""
    _check_net(net)
    if path is not None:
        return _configured(path, f"LPIPS backbone ({net})")
    entry = BACKBONES[net]
    cached = hub_checkpoint_dir() / entry.file_name
    if cached.is_file():
        return cached
    if not download:
        raise WeightsUnavailable(f"{entry.file_name} is not in {cached.parent} and downloads are off")
    # dnnlib's download wants a full SHA-256 but torchvision publishes only a prefix: fetch (dnnlib writes to a
    # temporary file and moves it into place only when complete), then check the prefix and delete on mismatch.
    try:
        util.download(entry.url, cached)
    except util.DownloadError as exc:
        raise WeightsUnavailable(str(exc)) from exc
    digest = util.sha256sum(cached)
    if not digest.startswith(entry.hash_prefix):
        cached.unlink(missing_ok=True)
        raise WeightsUnavailable(
            f"checksum mismatch for {entry.url}: sha256 {digest} does not start with {entry.hash_prefix}"
        )
    return cached


def resolve_heads(net: str, path: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """A local LPIPS v0.1 head file for ``net`` (configured path, cache, ../shared/reference, download)."""
    _check_net(net)
    if path is not None:
        return _configured(path, f"LPIPS head weights ({net})")
    for candidate in (head_cache_dir() / f"{net}.pth", SHARED_HEADS_DIR / f"{net}.pth"):
        if candidate.is_file():
            return candidate
    dest = head_cache_dir() / f"{net}.pth"
    if not download:
        raise WeightsUnavailable(f"no LPIPS v0.1 heads for {net} in {dest.parent} or {SHARED_HEADS_DIR}")
    try:
        return util.download(HEAD_URL.format(net=net), dest, sha256=HEAD_SHA256[net])
    except util.DownloadError as exc:
        raise WeightsUnavailable(str(exc)) from exc


def load_lpips(
    net: str = "vgg",
    backbone_path: str | os.PathLike[str] | None = None,
    head_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    resize: int | None = None,
    resize_mode: str = "area",
    download: bool = True,
) -> LPIPS | None:
    """The published LPIPS network on ``device``, or None (after one ``logging.warning``) when its weights
    cannot be had. See the module docstring for where weights are looked for.

    Raises FileNotFoundError for a configured path that does not exist, and ValueError / RuntimeError for a
    file that is not the expected kind of weights (wrong keys or shapes): those are configuration mistakes.
    """
    _check_net(net)
    problems: list[str] = []
    backbone_file = head_file = None
    try:
        backbone_file = resolve_backbone(net, backbone_path, download=download)
    except WeightsUnavailable as exc:
        problems.append(f"backbone: {exc}")
    try:
        head_file = resolve_heads(net, head_path, download=download)
    except WeightsUnavailable as exc:
        problems.append(f"heads: {exc}")
    if backbone_file is None or head_file is None:
        logger.warning(
            "LPIPS (%s) is unavailable, so the perceptual loss is dropped and the metric reported as null "
            "[%s]. To enable it, put %s in %s (or configure the backbone path) and the v0.1 heads %s.pth in %s "
            "(or configure the head path).",
            net, "; ".join(problems), BACKBONES[net].file_name, hub_checkpoint_dir(), net, head_cache_dir(),
        )
        return None
    model = LPIPS(net, backbone_weights=backbone_file, head_weights=head_file, resize=resize, resize_mode=resize_mode)
    return model.to(device)
