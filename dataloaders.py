"""Datasets of generator-layer latents, the data on which SGILO's score priors are trained.

Layer k >= 1: the features ``x`` (N, C_k, H_k, W_k) that blocks 0..k-1 (G1) produce from Gaussian inputs
(z -> mapping -> ws -> forward_to). Layer 0: the Gaussianised W+ latent z of DESIGN §2, laid out as the
published latent prior expects, ``(N, w_dim, num_ws, 1)``.

Sources: on the fly (``GeneratorLayerLatents``), cached as shards on disk (``cache_layer_latents`` +
``LatentShards``), or latents that ``solve_inverse.py`` saved (``load_saved_latents``). Normalisation
statistics (``MinMaxNormalizer``) are computed once and stored with the prior. Shards from the command line::

    python dataloaders.py latents/demo_layer2 --generator demo --layer 2 --num-samples 100000
    python train_score.py data.source=shards data.path=latents/demo_layer2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from stylegan.networks import Generator
from stylegan.proxy import MappingProxy

LATENTS_FORMAT = "sgilo.latents"


def latent_to_layout(z: Tensor) -> Tensor:
    """(N, num_ws, w_dim) -> (N, w_dim, num_ws, 1), the image-like layout of the published latent prior."""
    return z.permute(0, 2, 1).unsqueeze(-1)


def latent_from_layout(v: Tensor) -> Tensor:
    """(N, w_dim, num_ws, 1) -> (N, num_ws, w_dim)."""
    return v.squeeze(-1).permute(0, 2, 1)


class MinMaxNormalizer:
    """Scalar min-max normalisation ``(v - min) / (max - min + 1e-8)``, as the published priors use."""

    EPS = 1e-8

    def __init__(self, vmin: float, vmax: float):
        if not vmax >= vmin:
            raise ValueError(f"max ({vmax}) must be >= min ({vmin})")
        self.min = float(vmin)
        self.max = float(vmax)

    @property
    def scale(self) -> float:
        return self.max - self.min + self.EPS

    def normalize(self, v: Tensor) -> Tensor:
        return (v - self.min) / self.scale

    def denormalize(self, u: Tensor) -> Tensor:
        return u * self.scale + self.min

    @classmethod
    def fit(cls, batches: Iterator[Tensor] | list[Tensor]) -> MinMaxNormalizer:
        lo, hi = float("inf"), float("-inf")
        for batch in batches:
            lo = min(lo, batch.min().item())
            hi = max(hi, batch.max().item())
        if lo == float("inf"):
            raise ValueError("cannot fit a normaliser on no data")
        return cls(lo, hi)

    def to_dict(self) -> dict:
        return {"kind": "minmax", "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict) -> MinMaxNormalizer:
        if d.get("kind", "minmax") != "minmax":
            raise ValueError(f"unknown normalisation kind {d.get('kind')!r}")
        return cls(d["min"], d["max"])

    def __repr__(self) -> str:
        return f"MinMaxNormalizer(min={self.min:.6g}, max={self.max:.6g})"


class GeneratorLayerLatents(torch.utils.data.IterableDataset):
    """Endless batches of layer-``layer`` latents from Gaussian inputs through G1 (seeded, per-rank streams).

    Yields tensors of shape ``sample_shape`` with a leading batch dimension: (B, C, H, W) for k >= 1,
    (B, w_dim, num_ws, 1) for k = 0 (needs ``proxy``).
    """

    def __init__(
        self,
        G: Generator,  # The generator (its mapping and synthesis are used; no gradients).
        layer: int,  # 0 = Gaussianised latent, k >= 1 = input of synthesis block k.
        batch_size: int,  # Samples per yielded batch.
        proxy: MappingProxy | None = None,  # Needed for layer 0.
        noise_mode: str = "random",  # Noise inside G1: 'random' (diverse) or 'const'.
        truncation_psi: float = 1.0,  # Truncation of the mapped ws.
        seed: int = 0,  # Base seed; stream i uses seed + 1000003 * i.
        stream: int = 0,  # Stream index (e.g. the DDP rank) so that processes draw different samples.
        device: torch.device | str = "cpu",  # Where G runs.
    ):
        super().__init__()
        if layer == 0 and proxy is None:
            raise ValueError("layer 0 latents need the mapping proxy (gaussian_fit.pt)")
        G.synthesis.check_layer(layer)
        if layer == G.synthesis.num_blocks:
            raise ValueError(f"layer {layer} is the finished image; choose a layer in [0, {layer - 1}]")
        self.G = G
        self.layer = layer
        self.batch_size = batch_size
        self.proxy = proxy
        self.noise_mode = noise_mode
        self.truncation_psi = truncation_psi
        self.seed = seed + 1000003 * stream
        self.device = torch.device(device)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.layer == 0:
            return (self.G.w_dim, self.G.num_ws, 1)
        return self.G.synthesis.layer_shape(self.layer)[0]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n latents (n, *sample_shape) on the CPU."""
        z = torch.randn([n, self.G.z_dim], generator=generator).to(self.device)
        ws = self.G.mapping(z, None, truncation_psi=self.truncation_psi)
        if self.layer == 0:
            return latent_to_layout(self.proxy.to(self.device).to_z(ws)).cpu()
        x, _ = self.G.synthesis.forward_to(ws, self.layer, noise_mode=self.noise_mode)
        return x.float().cpu()

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield self.sample(self.batch_size, generator)


def cache_layer_latents(source: GeneratorLayerLatents, num_samples: int, out_dir: str | Path,
                        shard_size: int = 4096) -> Path:
    """Write ``num_samples`` latents from ``source`` as ``shard_XXXXX.pt`` files plus ``meta.json``.

    Refuses to write into a folder that already holds shards (never overwrite results).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.glob("shard_*.pt")):
        raise FileExistsError(f"{out_dir} already holds latent shards; choose another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(source.seed)
    done, index = 0, 0
    while done < num_samples:
        n = min(shard_size, num_samples - done)
        chunks, got = [], 0
        while got < n:
            m = min(source.batch_size, n - got)
            chunks.append(source.sample(m, generator))
            got += m
        torch.save(torch.cat(chunks), out_dir / f"shard_{index:05d}.pt")
        done += n
        index += 1
    meta = {"format": LATENTS_FORMAT, "layer": source.layer, "num_samples": num_samples,
            "sample_shape": list(source.sample_shape), "seed": source.seed, "noise_mode": source.noise_mode,
            "truncation_psi": source.truncation_psi}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


class LatentShards(torch.utils.data.Dataset):
    """Map-style dataset over cached shards (all shards are memory-mapped on load)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        shards = sorted(folder.glob("shard_*.pt"))
        if not shards:
            raise FileNotFoundError(f"no latent shards (shard_*.pt) in {folder}")
        meta_path = folder / "meta.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.data = torch.cat([torch.load(p, map_location="cpu", weights_only=True, mmap=True) for p in shards])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, idx: int) -> Tensor:
        return self.data[idx]


def save_latents(path: str | Path, latents: Tensor, layer: int, overwrite: bool = False, **extra: object) -> None:
    """Save solved latents of one layer: ``{'format', 'layer', 'latents': (N, ...), **extra}``.

    Raises FileExistsError rather than replace an existing file, unless ``overwrite``.
    """
    with open(path, "wb" if overwrite else "xb") as f:
        torch.save({"format": LATENTS_FORMAT, "layer": int(layer), "latents": latents.detach().cpu(), **extra}, f)


def load_saved_latents(paths: list[str | Path], layer: int) -> Tensor:
    """Concatenate latents of ``layer`` from files written by :func:`save_latents` (e.g. by solve_inverse.py)."""
    out = []
    for p in paths:
        d = torch.load(p, map_location="cpu", weights_only=True)
        if not (isinstance(d, dict) and d.get("format") == LATENTS_FORMAT):
            raise ValueError(f"{p}: not a latents file written by save_latents")
        if d["layer"] != layer:
            raise ValueError(f"{p}: holds layer {d['layer']} latents, expected layer {layer}")
        out.append(d["latents"])
    if not out:
        raise ValueError("no latent files given")
    return torch.cat(out)


# =====================================================================================================================
# RGB photographs available offline: the training data of the demo StyleGAN2 (issue 5).
#
# scikit-image ships a few RGB photographs inside its wheel, so they exist wherever `requirements.txt` is installed
# (no download). The demo generator learns the distribution of random crops of them. Two photographs are kept out
# of training entirely, so that held-out crops are images the generator has never seen any part of.
# =====================================================================================================================

# name -> role. `cat` is the same file as `chelsea`; `colorwheel`/`logo` are synthetic graphics; `lily`/`skin`
# need a download (pooch) and are therefore not used.
TRAIN_PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "immunohistochemistry", "retina", "hubble_deep_field")
HELDOUT_PHOTOS: tuple[str, ...] = ("coffee", "rocket")
PHOTO_SPLITS = ("train", "heldout")


def sample_photographs(split: str | None = None) -> tuple[str, ...]:
    """Names of the scikit-image RGB sample photographs used (``skimage.data.<name>()``).

    split: 'train' -> :data:`TRAIN_PHOTOS`, 'heldout' -> :data:`HELDOUT_PHOTOS`, None -> both (train first).
    """
    if split is None:
        return TRAIN_PHOTOS + HELDOUT_PHOTOS
    if split == "train":
        return TRAIN_PHOTOS
    if split == "heldout":
        return HELDOUT_PHOTOS
    raise ValueError(f"split must be one of {PHOTO_SPLITS}, got {split!r}")


def load_photograph(name: str, short_side: int | None = None) -> Tensor:
    """One sample photograph as a float tensor (3, H, W) in [-1, 1].

    short_side: when given, the photo is first resized (antialiased) so that min(H, W) == short_side; crops are
    then taken from this version, which bounds their cost and fixes what "scale" means across photos.
    """
    import skimage.data

    if name not in sample_photographs():
        raise ValueError(f"unknown sample photograph {name!r}; known: {', '.join(sample_photographs())}")
    array = getattr(skimage.data, name)()
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"skimage.data.{name} is not an RGB image (shape {array.shape})")
    img = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)
    if short_side is not None:
        h, w = img.shape[1:]
        factor = short_side / min(h, w)
        size = (max(short_side, round(h * factor)), max(short_side, round(w * factor)))
        img = torch.nn.functional.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                              align_corners=False)[0].clamp(-1, 1)
    return img


class PhotoCrops(torch.utils.data.Dataset):
    """Square crops of the sample photographs, resized to ``resolution``: items (3, R, R) float in [-1, 1].

    Item ``i`` is a pure function of (``seed``, ``i``): a photo of the split (uniformly), a crop side drawn
    uniformly in ``[min_scale, max_scale] * short_side``, a uniform position, an optional horizontal flip, then an
    antialiased bilinear resize to R x R. The dataset is therefore reproducible and indexable: a trainer draws
    random indices with its own RNG, and a fixed evaluation set is simply ``[ds[i] for i in range(n)]``.

    The 'train' and 'heldout' splits use disjoint photographs (:data:`TRAIN_PHOTOS`, :data:`HELDOUT_PHOTOS`).
    """

    def __init__(self, resolution: int, split: str = "train", length: int = 100_000, seed: int = 0,
                 min_scale: float = 0.25, max_scale: float = 1.0, flip: bool = True, short_side: int = 256,
                 photos: tuple[str, ...] | None = None):
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.resolution = int(resolution)
        self.split = split
        self.photos = tuple(photos) if photos is not None else sample_photographs(split)
        self.length = int(length)
        self.seed = int(seed)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.flip = bool(flip)
        self.short_side = int(short_side)
        # Decoded once: a few MB at short_side 256, and every crop is then a slice + one small resize.
        self.images = [load_photograph(name, self.short_side) for name in self.photos]

    def __len__(self) -> int:
        return self.length

    def crop_params(self, index: int) -> tuple[int, int, int, int, bool]:
        """(photo index, top, left, side, flip) of item ``index``, drawn from a generator seeded by (seed, index)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} crops")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        u = torch.rand(5, generator=gen).tolist()
        photo = min(int(u[0] * len(self.images)), len(self.images) - 1)
        h, w = self.images[photo].shape[1:]
        short = min(h, w)
        side = max(1, round(short * (self.min_scale + (self.max_scale - self.min_scale) * u[1])))
        top = min(int(u[2] * (h - side + 1)), h - side)
        left = min(int(u[3] * (w - side + 1)), w - side)
        return photo, top, left, side, self.flip and u[4] < 0.5

    def __getitem__(self, index: int) -> Tensor:
        photo, top, left, side, flip = self.crop_params(int(index))
        crop = self.images[photo][:, top : top + side, left : left + side]
        if flip:
            crop = crop.flip(-1)
        out = torch.nn.functional.interpolate(crop[None], size=(self.resolution, self.resolution), mode="bilinear",
                                              antialias=True, align_corners=False)[0]
        return out.clamp(-1, 1)

    def batch(self, indices: Tensor | list[int]) -> Tensor:
        """Items ``indices`` stacked: (len(indices), 3, R, R)."""
        return torch.stack([self[int(i)] for i in indices])

    def source_names(self) -> tuple[str, ...]:
        """The photographs this split draws from."""
        return self.photos


def main(argv: list[str] | None = None) -> None:
    """Command line: cache layer latents of a configs/generator entry as shards for ``data.source=shards``."""
    import argparse

    from omegaconf import OmegaConf

    from stylegan.build import GeneratorConfigError, build_generator
    from utils import ROOT, resolve_path

    parser = argparse.ArgumentParser(description="Cache layer latents as shards (train_score.py data.source=shards).")
    parser.add_argument("out", help="folder for shard_*.pt and meta.json (must not hold shards yet)")
    parser.add_argument("--generator", default="demo", help="a configs/generator entry")
    parser.add_argument("--layer", type=int, required=True, help="0 = Gaussianised latent z, k >= 1 = input of block k")
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--noise-mode", default="random", choices=("random", "const", "none"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    entry = ROOT / "configs" / "generator" / f"{args.generator}.yaml"
    if not entry.is_file():
        raise SystemExit(f"error: no generator entry {entry}")
    if args.num_samples < 1 or args.batch_size < 1:
        raise SystemExit("error: --num-samples and --batch-size must be positive")
    try:
        G, proxy = build_generator(OmegaConf.to_container(OmegaConf.load(entry)), args.device, resolve=resolve_path)
        source = GeneratorLayerLatents(G, args.layer, args.batch_size, proxy=proxy, noise_mode=args.noise_mode,
                                       seed=args.seed, device=args.device)
        out = cache_layer_latents(source, args.num_samples, args.out)
    except (GeneratorConfigError, ValueError, FileExistsError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.num_samples} layer-{args.layer} latents of {args.generator!r} to {out}")


if __name__ == "__main__":
    main()
