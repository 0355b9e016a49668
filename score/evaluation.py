"""Unconditional sampling with a layer prior (the engine behind ``eval_score_based.py``).

Both modes start from realizable inputs: Gaussian z -> mapping -> ws, and (for layers k >= 1) the G1 state
(x, img) = forward_to(ws, k). Then

* hot start (naturalisation): x' = prior.naturalize(x), image = G2(ws, x', img);
* cold start: x' = prior.sample(n) from noise, image = G2(ws, x', img), i.e. only the layer-k features are
  replaced (the styles of the later blocks and the skip image come from the same ws).

For the latent prior (layer 0) the variable is the Gaussianised z of ws and the image is G(proxy(z')).
The "start" image is always the generator's own output for the same inputs, so start vs result shows what
the prior changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from stylegan.networks import Generator
from stylegan.proxy import MappingProxy

from .prior import FORMAT, ScorePrior, read_checkpoint


@dataclass
class SampleBatch:
    """One batch of unconditional samples: variables and images before and after the prior."""

    start_latents: Tensor  # (N, *variable_shape)
    result_latents: Tensor  # (N, *variable_shape)
    start_images: Tensor  # (N, 3, R, R), roughly [-1, 1]
    result_images: Tensor  # (N, 3, R, R)
    seconds: float  # time spent in the prior


class LayerRenderer:
    """Realizable layer variables and their images for one generator, layer and noise mode."""

    def __init__(self, G: Generator, proxy: MappingProxy, layer: int, noise_mode: str = "const"):
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be const, random or none, got {noise_mode!r}")
        self.G, self.proxy, self.layer, self.noise_mode = G, proxy, layer, noise_mode

    @property
    def device(self) -> torch.device:
        return self.G.synthesis.b4.const.device

    @torch.no_grad()
    def start(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None, list | None]:
        """(ws (N, num_ws, w_dim), variable, skip image or None, explicit noise maps or None)."""
        z = torch.randn([n, self.G.z_dim], generator=generator).to(self.device)
        ws = self.G.mapping(z, None)
        noises = None
        if self.noise_mode == "random":
            # Drawn once, so that start and result images differ only by what the prior did.
            noises = [m.to(self.device) for m in self.G.synthesis.make_noises(n, "random", "cpu", generator)]
        if self.layer == 0:
            return ws, self.proxy.to_z(ws), None, noises
        x, img = self.G.synthesis.forward_to(ws, self.layer, noises=noises, noise_mode=self._mode())
        return ws, x, img, noises

    @torch.no_grad()
    def render(self, ws: Tensor, v: Tensor, img: Tensor | None, noises: list | None) -> Tensor:
        """Image (N, C, R, R) of layer variable ``v`` with the styles ``ws`` (and skip image ``img``)."""
        if self.layer == 0:
            return self.G.synthesis(self.proxy(v), noises=noises, noise_mode=self._mode())
        return self.G.synthesis.forward_from(ws, self.layer, v, img, noises=noises, noise_mode=self._mode())

    def _mode(self) -> str:
        return "const" if self.noise_mode == "random" else self.noise_mode  # random maps are passed explicitly


def sample_batch(prior: ScorePrior, renderer: LayerRenderer, n: int, hot: bool, generator: torch.Generator,
                 progress: bool = True) -> SampleBatch:
    """One batch of hot (naturalised) or cold (from-noise) samples with their start images."""
    ws, v0, img, noises = renderer.start(n, generator)
    t0 = time.perf_counter()
    v1 = prior.naturalize(v0) if hot else prior.sample(n, progress=progress)
    seconds = time.perf_counter() - t0
    return SampleBatch(v0.cpu(), v1.cpu(), renderer.render(ws, v0, img, noises).cpu(),
                       renderer.render(ws, v1, img, noises).cpu(), seconds)


def movement(start: Tensor, result: Tensor) -> dict[str, float]:
    """How far variables moved: mean per-sample L2 distance, mean relative change ‖Δ‖/‖start‖, RMS per entry."""
    d = (result - start).flatten(1).double()
    l2 = d.norm(dim=1)
    ref = start.flatten(1).double().norm(dim=1).clamp_min(1e-12)
    return {"mean_l2": float(l2.mean()), "relative_change": float((l2 / ref).mean()),
            "rms_change": float(d.square().mean().sqrt())}


def moments(v: Tensor) -> dict[str, float]:
    v = v.double()
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def find_trained_prior(search_dir: str | Path, generator: str | None, layer: int) -> Path | None:
    """The newest ``prior.pt`` under ``search_dir`` trained on generator ``generator`` at ``layer``."""
    root = Path(search_dir)
    if not root.is_dir():
        return None
    for path in sorted(root.glob("**/prior.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            ckpt = read_checkpoint(path)
        except ValueError:
            continue
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or ckpt.get("layer") != layer:
            continue
        if generator is None or (ckpt.get("generator") or {}).get("name") == generator:
            return path
    return None
