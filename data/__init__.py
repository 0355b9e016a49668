"""Image datasets: the emoji demo domain (:mod:`data.emoji`) and folders / zips in NVIDIA's dataset_tool
layout (:mod:`data.images`). :func:`open_images` resolves the dataset names the configs use."""

from __future__ import annotations

from pathlib import Path

from data.images import ImageDataset

EMOJI_PREFIX = "emoji:"


def dataset_path(spec: str | Path) -> Path:
    """``emoji:<split>`` -> that split of the prepared emoji faces (prepared on first use); else the path itself.

    Raises:
        ValueError: an unknown emoji split, or the emoji data cannot be fetched / prepared.
    """
    spec = str(spec)
    if not spec.startswith(EMOJI_PREFIX):
        from utils import resolve_path

        return resolve_path(spec)
    from data import emoji

    split = spec[len(EMOJI_PREFIX):]
    if split not in emoji.SPLITS:
        raise ValueError(f"{spec!r}: the emoji splits are {', '.join(emoji.SPLITS)}")
    try:
        return emoji.prepare(log=lambda *_: None) / split
    except emoji.EmojiDataError as exc:
        raise ValueError(f"emoji data: {exc}") from None


def open_images(spec: str | Path, resolution: int, max_images: int | None = None) -> ImageDataset:
    """The images of a folder, a zip or an ``emoji:<split>`` name as an :class:`ImageDataset`."""
    return ImageDataset(dataset_path(spec), resolution, max_images=max_images)
