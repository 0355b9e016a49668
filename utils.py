"""Small shared helpers of the entry scripts: errors for bad user input, seeding, devices, paths, image I/O,
image grids (written with torch alone: torchvision cannot be imported here), files that are never overwritten,
Hydra run directories, and process groups for ``torchrun``.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from torch_utils.misc import plain_data as to_plain  # noqa: F401 - re-exported for the entry scripts

ROOT = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------------------
# Bad user input.


class UserError(Exception):
    """A problem with the user's input or configuration: reported as one line, exit status 2, no traceback."""


def run_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``; a :class:`UserError` becomes ``error: <message>`` on stderr and exit status 2.

    Meant to wrap the body of a Hydra task function: Hydra would otherwise print a traceback.
    """
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


# ---------------------------------------------------------------------------------------------------------------------
# Seeds, devices, paths.


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(num_threads: int | None) -> None:
    """Intra-op CPU threads of this process (None: keep torch's choice).

    One thread is steady for small networks: on a busy 2-core machine a second thread made a training step
    of the tiny prior up to ten times slower (and at best 1.5 times faster on an idle one).
    """
    if num_threads is None:
        return
    if int(num_threads) < 1:
        raise UserError(f"num_threads must be >= 1 or null, got {num_threads}")
    torch.set_num_threads(int(num_threads))


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:<i>' -> a usable torch.device.

    Raises:
        UserError: CUDA asked for on a machine without it, a missing device index, or an unknown name.
    """
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device={spec} asked for, but CUDA is not available here; use device=cpu or device=auto")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:<index>")


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A path as given when absolute or present from the current directory, else relative to the repository.

    Lets the default configs (``checkpoints/...``) work from any working directory.
    """
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p
    candidate = ROOT / p
    return candidate if candidate.exists() else p


# ---------------------------------------------------------------------------------------------------------------------
# Images.


def _image_to_float_array(img: Image.Image) -> np.ndarray:
    """Any PIL image -> float32 (H, W, 3) in [0, 1], whatever its mode and bit depth."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # High bit-depth grayscale: PIL's RGB conversion would clip it at 255, so scale it ourselves.
        a = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            a = a / 65535.0
        elif mode == "I":
            a = a / (65535.0 if a.max(initial=0) > 255 else 255.0)
        elif a.max(initial=0) > 1.0:  # 'F' holding 0..255 values
            a = a / 255.0
        a = np.clip(a, 0.0, 1.0).astype(np.float32)
        return np.repeat(a[..., None], 3, axis=-1)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # Alpha is dropped (as in the published loader): masked photos arrive with black pixels, not transparency.
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike[str], resolution: int | None = None) -> torch.Tensor:
    """Read a png/jpg/jpeg of any mode and bit depth as an RGB tensor (3, R, R) in [-1, 1].

    The image is turned upright (EXIF), centre-cropped to a square and resized to ``resolution`` (Lanczos,
    per channel in float so that 16-bit inputs keep their precision). ``resolution=None`` keeps the crop size.

    Raises:
        UserError: missing file, unsupported suffix or unreadable contents.
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{path}: unsupported image type {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
    a = _image_to_float_array(img)
    h, w = a.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    a = a[top : top + side, left : left + side]
    if resolution is not None and resolution != side:
        channels = [
            np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c]), mode="F").resize(
                (resolution, resolution), Image.Resampling.LANCZOS))
            for c in range(3)
        ]
        a = np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() * 2.0 - 1.0


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (H, W) in [-1, 1] -> uint8 (H, W, C) or (H, W)."""
    image = image.detach().float().cpu()
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3:
        if image.shape[0] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {image.shape[0]}")
        image = image.permute(1, 2, 0)
    elif image.ndim != 2:
        raise ValueError(f"expected an image (C, H, W) or (H, W), got shape {tuple(image.shape)}")
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def save_image(image: torch.Tensor, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write one image (C, H, W) or (H, W) with values in [-1, 1] (clamped) as an 8-bit PNG/JPEG.

    Raises FileExistsError rather than overwrite an existing file unless ``overwrite``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_new(path, "wb", overwrite=overwrite) as f:
        Image.fromarray(_to_uint8_hwc(image)).save(f, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg")
                                                   else "PNG")
    return path


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile a batch (N, C, H, W) into one image (C, rows·(H+p)+p, nrow·(W+p)+p), row-major, ``nrow`` per row.

    ``pad_value`` is in the images' own scale (1.0 = white for [-1, 1] images). Empty cells stay padding.
    """
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = max(1, min(nrow, n))
    nrows = (n + ncol - 1) // ncol
    grid = images.new_full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int = 8, overwrite: bool = False) -> Path:
    """:func:`make_grid` of a batch in [-1, 1], written with :func:`save_image`."""
    return save_image(make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow), path, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------------------------------
# Files that are never overwritten.


def open_new(path: str | os.PathLike[str], mode: str = "w", overwrite: bool = False):
    """``open`` that refuses to replace an existing file (exclusive creation) unless ``overwrite``."""
    if "x" in mode or "a" in mode:
        raise ValueError("open_new chooses the creation mode itself")
    return open(path, mode if overwrite else mode.replace("w", "x"))


def save_json(obj: Any, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_new(path, "w", overwrite=overwrite) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    return path


def torch_save_new(obj: Any, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """``torch.save`` into a file that must not exist yet (unless ``overwrite``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_new(path, "wb", overwrite=overwrite) as f:
        torch.save(obj, f)
    return path


class ScalarLog:
    """Scalars per step into ``<dir>/<name>.csv`` and, when ``torch.utils.tensorboard`` imports, TensorBoard.

    The CSV is always written (tests and quick plots read it); columns are fixed by the first row.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = "train_log", tensorboard: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{name}.csv"
        self._file = open_new(self.path, "w")
        self._writer: csv.DictWriter | None = None
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self.tb = None
            else:
                self.tb = SummaryWriter(str(self.directory / "tensorboard"))

    def log(self, step: int, **scalars: float) -> None:
        row = {"step": step, **{k: (None if v is None else float(v)) for k, v in scalars.items()}}
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                if v is not None:
                    self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()


def read_scalar_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a :class:`ScalarLog` CSV as dicts of floats (empty cells -> nan)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in rows]


# ---------------------------------------------------------------------------------------------------------------------
# Hydra run directories.

_RUN_DIRS: dict[str, str] = {}


def _launcher_start_time() -> float | None:
    """Start time (epoch seconds) of the parent process when it is a torchrun agent, read from /proc.

    All ranks of one ``torchrun`` share that parent, so they agree on a run directory without talking.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ and "LOCAL_RANK" not in os.environ:
        return None
    try:
        ticks = int(Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def unique_run_dir(base: str) -> str:
    """``<base>/<YYYY-MM-DD_HH-MM-SS>``, made unique with a ``_<n>`` suffix when that folder exists already.

    Registered as the OmegaConf resolver ``sgilo_run_dir`` (see the ``hydra.run.dir`` of the configs): two runs
    started in the same second never share, and so never overwrite, a folder. Under ``torchrun`` every rank
    gets the same folder (named after the launcher's start time).
    """
    if base in _RUN_DIRS:  # Hydra may resolve its run dir more than once per process
        return _RUN_DIRS[base]
    launch = _launcher_start_time()
    stamp = datetime.datetime.fromtimestamp(launch if launch is not None else time.time())
    path = os.path.join(base, stamp.strftime("%Y-%m-%d_%H-%M-%S"))
    if launch is None:
        candidate, n = path, 0
        while os.path.exists(candidate):
            n += 1
            candidate = f"{path}_{n}"
        path = candidate
    _RUN_DIRS[base] = path
    return path


def register_resolvers() -> None:
    """Register the OmegaConf resolvers the configs use (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sgilo_run_dir"):
        OmegaConf.register_new_resolver("sgilo_run_dir", unique_run_dir)


def usable_run_dir(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot serve as a run directory (None when it can): it must be, or be creatable as, a
    folder we can write into. The folder is created (Hydra would create it next anyway)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe_{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        return f"{path} cannot be used as the run directory ({exc.strerror or exc})"
    return None


def check_command_line(config_name: str, args: list[str]) -> None:
    """Compose ``configs/<config_name>.yaml`` once with the command-line overrides, before Hydra runs: a typo (an
    unknown key, a missing group option such as ``task=blur``, bad override syntax) or a run directory that
    cannot be written is then one ``error:`` line and exit status 2 rather than Hydra's report or a traceback.
    Runs with Hydra flags (``-m``, ``--cfg``, ...) are left to Hydra."""
    if any(a.startswith("-") for a in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose(config_name, overrides=args, return_hydra_config=True)
            run_dir = str(cfg.hydra.run.dir)  # resolved as Hydra will (the run-dir resolver caches its answer)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split()).split(" Config search path")[0].split(" See https://")[0]
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    problem = usable_run_dir(run_dir)
    if problem is not None:
        print(f"error: {problem}; choose another hydra.run.dir", file=sys.stderr, flush=True)
        sys.exit(2)


# ---------------------------------------------------------------------------------------------------------------------
# torchrun process groups.


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run plainly)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by ``torchrun`` (NCCL on CUDA, gloo on CPU); else a 1-process info.

    Each CUDA rank takes the GPU of its local rank.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    import torch.distributed as dist

    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} present)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
