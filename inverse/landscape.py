"""Landscape learning (Liu, Mao, Tendulkar, Wang & Vondrick, "Landscape learning for neural network inversion",
ICCV 2023): a network θ: Z′ → Z in front of the generator, trained so that gradient descent on z′ through
G ∘ θ reaches a good reconstruction in few steps.

Here Z is the Gaussianised latent of ILO/SGILO (num_ws rows of w_dim) and θ acts on each row::

    θ(z′) = z′ + MLP(z′)        (the MLP's last layer starts at zero: an untrained θ is the identity)

Training alternates the paper's two phases on images of the train split (fully observed):

1. collect: from z′_0 = 0 (CSGM's start) run ``trajectory_steps`` Adam steps on z′ with the loss of the images
   through G ∘ θ (θ fixed, the noise maps drawn once per trajectory and fixed); every iterate z′_t joins a
   replay buffer with its image and noise maps;
2. learn: ``theta_steps`` AdamW steps on θ, each on a minibatch (z′_t, image) from the buffer, minimising the
   same loss L(G(θ(z′_t)), x): wherever a trajectory passes, θ is moved to make the image there better.

The buffer keeps the newest ``buffer_size`` trajectory points. At solve time θ is simply placed between the
optimised variable and the generator's mapping proxy (:class:`LandscapeProxy`), so CSGM (and ILO's later rounds)
run unchanged on z′. The MLP shape (LayerNorm + LeakyReLU 0.2, width 1024 for 512 dims) and AdamW with weight
decay 0.1 follow a public re-implementation of the paper (NeuralInversion); the residual, identity start and the
loss without LPIPS (CPU-sized) are this harness' choices.

File format (read with ``weights_only=True``): ``{'format': 'sgilo-landscape-1', 'dim', 'hidden', 'depth',
'generator': <generator record>, 'step': int, 'state_dict', 'training'}``; ``training`` is None in the final
``landscape.pt`` (θ only, what solving needs) and holds the optimiser, replay buffer (z′, image index, noise seed
per point), RNG and settings in the resumable ``checkpoints/step_*.pt``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stylegan.proxy import MappingProxy

FORMAT = "sgilo-landscape-1"


class LandscapeFormatError(ValueError):
    """A landscape.pt that cannot be used (one line, meant for the user)."""


class LandscapeMap(nn.Module):
    """θ: (..., dim) -> (..., dim), θ(z′) = z′ + MLP(z′); the MLP is ``depth`` linear layers, LayerNorm and
    LeakyReLU(0.2) between them, the last one zero-initialised."""

    def __init__(
        self,
        dim: int,  # w_dim of the generator: each latent row is mapped on its own.
        hidden: int = 256,  # Width of the hidden layers.
        depth: int = 3,  # Number of linear layers (>= 2).
    ):
        super().__init__()
        if depth < 2 or hidden < 1 or dim < 1:
            raise ValueError(f"LandscapeMap needs dim >= 1, hidden >= 1, depth >= 2; got {dim}, {hidden}, {depth}")
        self.dim, self.hidden, self.depth = int(dim), int(hidden), int(depth)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2)]
            width = hidden
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    def forward(self, z: Tensor) -> Tensor:
        return z + self.mlp(z)


class LandscapeProxy(nn.Module):
    """The generator's mapping proxy with θ in front: z′ (..., w_dim) -> w = proxy(θ(z′))."""

    def __init__(self, theta: LandscapeMap, proxy: MappingProxy):
        super().__init__()
        self.theta = theta
        self.proxy = proxy

    @property
    def w_dim(self) -> int:
        return self.proxy.w_dim

    def forward(self, z: Tensor) -> Tensor:
        return self.proxy(self.theta(z))


# ---------------------------------------------------------------------------------------------------------------------
# Training.


@dataclass
class LandscapeSettings:
    """The alternation of :mod:`inverse.landscape` (module docstring); every count is per iteration."""

    iterations: int = 500  # collect + learn rounds
    images: int = 16  # trajectories collected per iteration (one train image each)
    trajectory_steps: int = 20  # T: Adam steps per trajectory (the paper's figure and the re-implementation: 20)
    inner_lr: float = 0.05  # Adam on z′ (CSGM's learning rate in this harness)
    theta_steps: int = 20  # AdamW steps on θ per iteration
    theta_batch: int = 32  # buffer points per θ step
    theta_lr: float = 1e-3  # the re-implementation: 1e-4 at batch 256; 1e-3 chosen on images/val for the demo
    weight_decay: float = 0.1
    buffer_size: int = 10_000  # newest trajectory points kept (z′ is 2 kB a point for the demo)
    hidden: int = 256
    depth: int = 3

    def check(self) -> None:
        for name in ("iterations", "images", "trajectory_steps", "theta_steps", "theta_batch", "buffer_size",
                     "hidden", "depth"):
            v = getattr(self, name)
            low = 2 if name == "depth" else (0 if name == "iterations" else 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        for name in ("inner_lr", "theta_lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def reconstruction_loss(G: Any, proxy: nn.Module, z: Tensor, noises: list[Tensor], target: Tensor) -> Tensor:
    """Mean squared error per row (B,) of G(proxy(z)) (clamped to [-1, 1]) against target (B, C, R, R)."""
    image = G.synthesis(proxy(z), noises=noises, noise_mode="const").clamp(-1, 1)
    return (image - target).square().flatten(1).mean(1)


def noise_maps(G: Any, seeds: Tensor, device: torch.device | str) -> list[Tensor]:
    """The generator's noise maps for each seed (one CPU generator per seed): per layer (len(seeds), 1, R, R)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return [torch.cat([torch.randn(shape[1:], generator=g)[None] for g in gens]).to(device)
            for shape in G.synthesis.noise_shapes()]


class ReplayBuffer:
    """The newest ``capacity`` trajectory points: z′ (M, num_ws, w_dim), the index of their target image in the
    training images and the seed of their noise maps (so a point costs z′ and two integers)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.z: Tensor | None = None
        self.image_index = torch.zeros(0, dtype=torch.long)
        self.noise_seed = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return 0 if self.z is None else self.z.shape[0]

    def add(self, z: Tensor, image_index: Tensor, noise_seed: Tensor) -> None:
        """Append P points (z (P, ...), image_index (P,), noise_seed (P,)); drop the oldest beyond capacity."""
        self.z = z if self.z is None else torch.cat([self.z, z])
        self.image_index = torch.cat([self.image_index, image_index.cpu()])
        self.noise_seed = torch.cat([self.noise_seed, noise_seed.cpu()])
        keep = slice(max(0, len(self) - self.capacity), None)
        self.z, self.image_index, self.noise_seed = self.z[keep], self.image_index[keep], self.noise_seed[keep]

    def sample(self, count: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``count`` points drawn uniformly with replacement: z′, image indices, noise seeds."""
        idx = torch.randint(len(self), (count,), generator=gen)
        return self.z[idx.to(self.z.device)], self.image_index[idx], self.noise_seed[idx]

    def state(self) -> dict[str, Any]:
        return {"z": None if self.z is None else self.z.cpu(), "image_index": self.image_index,
                "noise_seed": self.noise_seed}

    def load(self, state: dict[str, Any], device: torch.device | str) -> None:
        self.z = None if state["z"] is None else state["z"].to(device)
        self.image_index, self.noise_seed = state["image_index"], state["noise_seed"]


def collect(G: Any, proxy: LandscapeProxy, images: Tensor, noises: list[Tensor], steps: int,
            lr: float) -> Tensor:
    """Phase 1: Adam on z′ from 0 for ``steps`` steps (θ fixed); the iterates z′_0..z′_{T-1} as (T·B, ...)."""
    z = torch.zeros((images.shape[0], G.num_ws, G.w_dim), device=images.device, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=lr)
    points = []
    for _ in range(steps):
        points.append(z.detach().clone())
        loss = reconstruction_loss(G, proxy, z, noises, images).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return torch.cat(points)


class LandscapeTrainer:
    """The alternation, with its state (θ, its optimiser, the buffer, the RNG) resumable from a checkpoint."""

    def __init__(self, G: Any, proxy: MappingProxy, images: Tensor, settings: LandscapeSettings, seed: int,
                 generator_record: dict[str, Any]):
        settings.check()
        self.G, self.images, self.s = G, images, settings
        with torch.random.fork_rng(devices=[]):  # θ's initial weights from the run seed, not the global stream
            torch.manual_seed(int(seed))
            self.theta = LandscapeMap(G.w_dim, settings.hidden, settings.depth).to(images.device)
        self.mapped = LandscapeProxy(self.theta, proxy)
        self.optimizer = torch.optim.AdamW(self.theta.parameters(), lr=settings.theta_lr,
                                           weight_decay=settings.weight_decay)
        self.buffer = ReplayBuffer(settings.buffer_size)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.generator_record = generator_record
        self.step = 0

    def iteration(self) -> dict[str, float]:
        """One collect + learn round; returns its scalars (collect loss at the start and end of the
        trajectories, mean θ loss)."""
        s, G = self.s, self.G
        device = self.images.device
        idx = torch.randint(self.images.shape[0], (s.images,), generator=self.gen)
        seeds = torch.randint(2**62, (s.images,), generator=self.gen)
        targets = self.images[idx.to(device)]
        noises = noise_maps(G, seeds, device)
        for p in self.theta.parameters():
            p.requires_grad_(False)
        points = collect(G, self.mapped, targets, noises, s.trajectory_steps, s.inner_lr)
        with torch.no_grad():
            first = reconstruction_loss(G, self.mapped, points[: s.images], noises, targets).mean()
            last = reconstruction_loss(G, self.mapped, points[-s.images:], noises, targets).mean()
        t = s.trajectory_steps
        self.buffer.add(points, idx.repeat(t), seeds.repeat(t))  # points are step-major: (T·B, ...)
        for p in self.theta.parameters():
            p.requires_grad_(True)
        theta_losses = []
        for _ in range(s.theta_steps):
            z, image_index, noise_seed = self.buffer.sample(s.theta_batch, self.gen)
            loss = reconstruction_loss(G, self.mapped, z, noise_maps(G, noise_seed, device),
                                       self.images[image_index.to(device)]).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            theta_losses.append(float(loss.detach()))
        self.step += 1
        return {"collect_start_mse": float(first), "collect_end_mse": float(last),
                "theta_mse": sum(theta_losses) / max(len(theta_losses), 1), "buffer": float(len(self.buffer))}

    # --- checkpoints ----------------------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        record = describe(self.theta, self.generator_record, self.step)
        record["training"] = {"optimizer": self.optimizer.state_dict(), "buffer": self.buffer.state(),
                              "rng": self.gen.get_state(), "settings": asdict(self.s),
                              "images": int(self.images.shape[0])}
        return record

    def resume(self, record: dict[str, Any]) -> None:
        training = record.get("training")
        if not isinstance(training, dict):
            raise LandscapeFormatError("the file holds θ but no training state; resume from a "
                                       "checkpoints/step_*.pt of the run")
        if training.get("settings", {}).get("hidden") != self.s.hidden or \
                training.get("settings", {}).get("depth") != self.s.depth:
            raise LandscapeFormatError(f"the checkpoint's θ has hidden={training['settings'].get('hidden')}, "
                                       f"depth={training['settings'].get('depth')}; this run asks for "
                                       f"hidden={self.s.hidden}, depth={self.s.depth}")
        if training.get("images") != self.images.shape[0]:
            raise LandscapeFormatError(f"the checkpoint was trained on {training.get('images')} images, this run "
                                       f"has {self.images.shape[0]} (the buffer refers to them by index)")
        self.theta.load_state_dict(record["state_dict"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.buffer.load(training["buffer"], self.images.device)
        self.gen.set_state(training["rng"])
        self.step = int(record["step"])


def describe(theta: LandscapeMap, generator_record: dict[str, Any], step: int) -> dict[str, Any]:
    """The file record of θ (no training state)."""
    return {"format": FORMAT, "dim": theta.dim, "hidden": theta.hidden, "depth": theta.depth,
            "generator": generator_record, "step": int(step),
            "state_dict": {k: v.detach().cpu() for k, v in theta.state_dict().items()}, "training": None}


def save(record: dict[str, Any], path: str | Path) -> Path:
    """Write a record; never over an existing file (FileExistsError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        torch.save(record, f)
    return path


def load_record(path: str | Path) -> dict[str, Any]:
    """Read and check a landscape.pt (data only); raises LandscapeFormatError."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeFormatError(f"landscape checkpoint not found: {path}")
    try:
        record = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure means the same to the user
        raise LandscapeFormatError(f"{path}: not a readable landscape.pt ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise LandscapeFormatError(f"{path}: not a landscape.pt (format {FORMAT!r} expected)")
    for key in ("dim", "hidden", "depth", "step"):
        if isinstance(record.get(key), bool) or not isinstance(record.get(key), int):
            raise LandscapeFormatError(f"{path}: {key!r} must be an integer")
    if not isinstance(record.get("state_dict"), dict):
        raise LandscapeFormatError(f"{path}: no state_dict")
    return record


def load_theta(path: str | Path, w_dim: int, device: torch.device | str = "cpu") -> tuple[LandscapeMap, dict]:
    """θ of a landscape.pt for a generator with ``w_dim``; raises LandscapeFormatError."""
    record = load_record(path)
    if record["dim"] != w_dim:
        raise LandscapeFormatError(f"{path}: θ is for w_dim {record['dim']}, the generator has {w_dim}")
    try:
        theta = LandscapeMap(record["dim"], record["hidden"], record["depth"])
        theta.load_state_dict(record["state_dict"])
    except (ValueError, RuntimeError) as exc:
        raise LandscapeFormatError(f"{path}: state_dict does not fit θ ({str(exc).splitlines()[0]})") from None
    return theta.to(device).eval().requires_grad_(False), record


__all__ = ["LandscapeMap", "LandscapeProxy", "LandscapeSettings", "LandscapeTrainer", "ReplayBuffer",
           "LandscapeFormatError", "load_theta", "load_record", "save", "describe", "collect"]
