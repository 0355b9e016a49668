"""The images a solve runs on and their measurements: image folders or in-range generator samples.

``input_source: folders`` solves the png/jpg/jpeg files of ``input_folders`` (sorted per folder, in the order the
folders are given); ``input_source: generator`` solves references G(mapping(z)) with z seeded per image. Every
check (missing or empty folders, unreadable files, contradictory settings) happens before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from inverse.ilo import image_generator
from inverse.operators import Operator
from utils import IMAGE_SUFFIXES, UserError, load_image, resolve_path

INPUT_SOURCES = ("folders", "generator")


def positive_int(cfg: DictConfig, key: str, allow_none: bool = False) -> int | None:
    """``cfg[key]`` checked to be an integer >= 1 (or None where allowed); raises UserError."""
    value = cfg.get(key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key} must be an integer >= 1{' or null' if allow_none else ''}, got {value!r}")
    return value


@dataclass
class InputImage:
    """One problem to solve: a global id (seeds its random streams, orders the shards) and a unique name."""

    index: int
    name: str
    path: Path | None = None


def folder_images(folder: str) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; raises UserError when there are none."""
    path = resolve_path(str(folder))
    if not path.exists():
        raise UserError(f"input folder not found: {folder}")
    if not path.is_dir():
        raise UserError(f"input folder {folder} is not a folder")
    try:
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise UserError(f"input folder {folder} cannot be read ({exc.strerror})") from None
    if not found:
        raise UserError(f"input folder {folder} holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images")
    return found


def list_inputs(cfg: DictConfig, folders_given: bool = False) -> list[InputImage]:
    """The images of the run, in a fixed order, checked to exist.

    Args:
        cfg: the solve config (``input_source``, ``input_folders``, ``num_images``, ``max_images``).
        folders_given: ``input_folders`` was set on the command line: with ``input_source=generator`` that is a
            contradiction (which images did the user mean?), refused rather than silently ignored.
    """
    source = cfg.input_source
    if source not in INPUT_SOURCES:
        raise UserError(f"input_source must be one of {INPUT_SOURCES}, got {source!r}")
    if source == "generator":
        if folders_given:
            raise UserError("input_folders was given but input_source=generator solves generator samples; "
                            "drop one of the two (input_source=folders is the default)")
        return [InputImage(i, f"sample{i:04d}") for i in range(positive_int(cfg, "num_images"))]
    limit = positive_int(cfg, "max_images", allow_none=True)
    folders = cfg.input_folders
    if isinstance(folders, str):
        folders = [folders]
    if not folders:
        raise UserError("input_folders is empty; give at least one folder of png/jpg/jpeg images")
    paths = [p for folder in folders for p in folder_images(str(folder))]
    paths = paths[:limit] if limit is not None else paths
    counts: dict[str, int] = {}
    out = []
    for i, p in enumerate(paths):  # the same file name in two folders gets a suffix: names stay unique
        counts[p.stem] = counts.get(p.stem, 0) + 1
        out.append(InputImage(i, p.stem if counts[p.stem] == 1 else f"{p.stem}_{counts[p.stem] - 1}", p))
    return out


@torch.no_grad()
def load_references(items: list[InputImage], cfg: DictConfig, G: Any, device: torch.device) -> torch.Tensor:
    """(N, C, R, R) in [-1, 1]: the files (any mode, bit depth and size; centre-cropped and resized to the
    generator's resolution), or in-range images G(mapping(z)) with z seeded per image."""
    if cfg.input_source == "folders":
        images = torch.stack([load_image(it.path, G.img_resolution) for it in items])
        if G.img_channels == 1:
            images = images.mean(1, keepdim=True)
        return images.to(device)
    z = torch.stack([torch.randn(G.z_dim, generator=image_generator(cfg.seed, it.index, 1)) for it in items])
    ws = G.mapping(z.to(device), None)
    return G.synthesis(ws, noise_mode="const").clamp(-1, 1)


@torch.no_grad()
def measure(op: Operator, x: torch.Tensor, items: list[InputImage], cfg: DictConfig) -> torch.Tensor:
    """y = A(x) + σξ with ξ drawn per image; ``forward_measurements: false`` means the inputs already are the
    observations: y = A(x), no noise added."""
    y = op.A(x)
    if not cfg.operators.get("forward_measurements", True) or op.noise_std == 0:
        return y
    xi = torch.stack([torch.randn(y.shape[1:], generator=image_generator(cfg.seed, it.index, 2)) for it in items])
    return op.measure(x, noise=xi)  # ξ per image, so a result does not depend on batching or sharding
