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


def saved_latent_files(paths: list[str | Path], layer: int) -> list[Path]:
    """The files behind ``paths``: a file stays as it is; a folder (e.g. a solve_inverse.py run directory
    with ``save_latent=true``) stands for every ``latents_layer<layer>.pt`` below it, in sorted order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob(f"latents_layer{layer}.pt"))
            if not found:
                raise ValueError(f"{p}: no latents_layer{layer}.pt below this folder (solve with save_latent=true)")
            files += found
        else:
            files.append(p)
    return files


def load_saved_latents(paths: list[str | Path], layer: int) -> Tensor:
    """Concatenate latents of ``layer`` from files written by :func:`save_latents` (e.g. by solve_inverse.py);
    a folder in ``paths`` stands for its ``latents_layer<layer>.pt`` files (:func:`saved_latent_files`)."""
    out = []
    for p in saved_latent_files(paths, layer):
        d = torch.load(p, map_location="cpu", weights_only=True)
        if not (isinstance(d, dict) and d.get("format") == LATENTS_FORMAT):
            raise ValueError(f"{p}: not a latents file written by save_latents")
        if d["layer"] != layer:
            raise ValueError(f"{p}: holds layer {d['layer']} latents, expected layer {layer}")
        out.append(d["latents"])
    if not out:
        raise ValueError("no latent files given")
    return torch.cat(out)


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
