"""Image datasets in NVIDIA's dataset_tool layout: a folder or a zip of PNG/JPEG files (+ optional dataset.json).

Every image file at any depth counts (sorted by its path inside the folder or zip); ``dataset.json`` labels are
not used (the demo generator is unconditional). Images are read once into memory as uint8, converted to RGB,
centre-cropped to a square and resized to ``resolution`` (Lanczos) when they are not already that size.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def on_white(img: Image.Image) -> Image.Image:
    """Any PIL image as RGB; transparent pixels (RGBA, LA, palette with transparency) composited on white."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def _square(img: Image.Image, resolution: int) -> np.ndarray:
    """Centre crop to a square, Lanczos resize to ``resolution``: uint8 (R, R, 3)."""
    img = on_white(img)
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


class ImageDataset(torch.utils.data.Dataset):
    """All images of a folder or zip as one uint8 tensor; items and batches are float (3, R, R) in [-1, 1]."""

    def __init__(
        self,
        path: str | Path,  # A folder or a .zip in dataset_tool layout.
        resolution: int,  # Side of the square images returned.
        max_images: int | None = None,  # Keep only the first this many files (sorted by name); None: all.
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"no dataset at {self.path}")
        self.resolution = int(resolution)
        arrays, self.names = [], []
        for name, read in self._files():
            if max_images is not None and len(arrays) >= max_images:
                break
            try:
                with Image.open(io.BytesIO(read())) as img:
                    arrays.append(_square(img, self.resolution))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise ValueError(f"{self.path}: {name} is not a readable image ({exc})") from None
            self.names.append(name)
        if not arrays:
            raise ValueError(f"{self.path} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        self.images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, R, R) uint8

    def _files(self):
        if self.path.is_dir():
            files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            return [(str(p.relative_to(self.path)), p.read_bytes) for p in files]
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{self.path} is neither a folder nor a readable zip ({exc})") from None
        names = sorted(n for n in archive.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        return [(n, (lambda n=n: archive.read(n))) for n in names]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index].float() / 127.5 - 1.0

    def batch(self, indices: Tensor | list[int]) -> Tensor:
        """Images (B, 3, R, R) in [-1, 1]."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx].float() / 127.5 - 1.0
