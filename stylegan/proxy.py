"""The Gaussianised W+ parameterisation used by ILO and SGILO (DESIGN §2).

StyleGAN2's mapping network ends in a leaky ReLU of slope 0.2, so ``leaky_relu(w, 5.0)`` undoes it and
the result is close to Gaussian per coordinate. Fitting a mean and standard deviation to it gives a map

    w = leaky_relu(std * z + mean, 0.2)

under which z ~ N(0, I) in each of the num_ws rows lands near the generator's W space. Optimising z
(with spherical projection) instead of w keeps the latent "in distribution".

File format ``gaussian_fit.pt``: ``{'mean': Tensor[w_dim], 'std': Tensor[w_dim]}`` (float32). Fit one with

    python -m stylegan.proxy GENERATOR_FILE OUT.pt [--samples 100000] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

W_SLOPE = 0.2  # Negative slope of the mapping network's last activation.


class MappingProxy(torch.nn.Module):
    """Maps Gaussianised latents z (..., w_dim) to W+ latents and back, with fitted per-coordinate mean/std."""

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"mean and std must be 1-D of equal length, got {tuple(mean.shape)}, {tuple(std.shape)}")
        self.register_buffer("mean", mean.detach().to(torch.float32).clone())
        self.register_buffer("std", std.detach().to(torch.float32).clone())

    @property
    def w_dim(self) -> int:
        return self.mean.shape[0]

    def forward(self, z: Tensor) -> Tensor:
        """z (..., w_dim) -> w (..., w_dim)."""
        return F.leaky_relu(z * self.std + self.mean, W_SLOPE)

    to_w = forward

    def to_z(self, w: Tensor) -> Tensor:
        """Inverse map: w (..., w_dim) -> z (..., w_dim)."""
        return (F.leaky_relu(w, 1 / W_SLOPE) - self.mean) / self.std

    # --- fitting and files -----------------------------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def fit(cls, mapping: torch.nn.Module, num_samples: int = 100_000, seed: int = 0, batch_size: int = 10_000,
            device: torch.device | str | None = None) -> MappingProxy:
        """Fit mean/std of ``leaky_relu(mapping(z), 5)`` over ``num_samples`` seeded Gaussian z.

        ``mapping`` is a MappingNetwork (called as ``mapping(z, None)``; its first w row is used). Moments are
        accumulated in float64 over batches; std is the unbiased sample standard deviation.
        """
        if num_samples < 2:
            raise ValueError("num_samples must be >= 2")
        device = torch.device(device) if device is not None else next(mapping.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(seed)
        total = torch.zeros(mapping.w_dim, dtype=torch.float64, device=device)
        total_sq = torch.zeros_like(total)
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            z = torch.randn([n, mapping.z_dim], generator=gen).to(device)
            w = mapping(z, None)
            if w.ndim == 3:
                w = w[:, 0]
            v = F.leaky_relu(w, 1 / W_SLOPE).to(torch.float64)
            total += v.sum(0)
            total_sq += v.square().sum(0)
            done += n
        mean = total / num_samples
        var = (total_sq - num_samples * mean.square()) / (num_samples - 1)
        return cls(mean.float(), var.clamp_min(0).sqrt().float())

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write ``gaussian_fit.pt``; raises FileExistsError rather than replace a file, unless ``overwrite``."""
        with open(path, "wb" if overwrite else "xb") as f:
            torch.save({"mean": self.mean.cpu(), "std": self.std.cpu()}, f)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> MappingProxy:
        """Read a ``gaussian_fit.pt`` (data only: ``torch.load(weights_only=True)``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gaussian fit file not found: {path}")
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # any decoding failure means the same thing to the user
            raise ValueError(f"{path}: not a readable gaussian_fit.pt ({type(exc).__name__}: {exc})") from None
        if not (isinstance(data, dict) and all(isinstance(data.get(k), Tensor) for k in ("mean", "std"))):
            raise ValueError(f"{path}: expected a dict with tensors 'mean' and 'std'")
        return cls(data["mean"], data["std"]).to(device)


def main(argv: list[str] | None = None) -> None:
    """Command line: fit the proxy of a generator file and write ``gaussian_fit.pt`` (never over an existing file)."""
    import argparse

    from stylegan.loading import CheckpointError, load_generator

    parser = argparse.ArgumentParser(description="Fit a gaussian_fit.pt for a generator checkpoint.")
    parser.add_argument("generator", help="any file stylegan.load_generator reads")
    parser.add_argument("out", help="where to write the fit (must not exist)")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        G = load_generator(args.generator)
        MappingProxy.fit(G.mapping, num_samples=args.samples, seed=args.seed).save(args.out)
    except FileExistsError:
        raise SystemExit(f"error: {args.out} exists; not overwriting it") from None
    except (OSError, CheckpointError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.out} (w_dim {G.w_dim}, {args.samples} samples, seed {args.seed})")


if __name__ == "__main__":
    main()
