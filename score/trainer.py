"""Training a score prior on a generator layer (the engine behind ``train_score.py``).

Reproducibility is built on *data streams*: the global batch of every step is the concatenation of
``num_streams`` equal chunks, chunk i drawn from stream i (its own seeded ``torch.Generator``, which draws
the generator inputs, the G1 noise maps, the diffusion times and the perturbation noise). Processes of a
``torchrun`` job own disjoint sets of streams; so a run with S streams follows the same trajectory on 1 or
on S processes (up to float reduction order), and a resumed run continues exactly: the stream states are
part of every checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from dataloaders import MinMaxNormalizer, latent_to_layout
from stylegan.networks import Generator
from stylegan.proxy import MappingProxy

from .losses import ExponentialMovingAverage, dsm_loss, optimize_step
from .prior import SamplingSettings, ScorePrior
from .sde import SDE

# Purposes of derived seeds: one generator per (seed, purpose, index) so streams never share numbers.
_SEED_STREAM, _SEED_NORMALIZER = 1, 2


def derive_seed(seed: int, purpose: int, index: int = 0) -> int:
    """A 63-bit seed for (base seed, purpose, index), statistically independent across arguments."""
    state = np.random.SeedSequence([int(seed) % 2**32, purpose, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


# ---------------------------------------------------------------------------------------------------------------------
# Data streams.


class LatentStream:
    """One seeded stream of layer variables in model layout, (n, *sample_shape) per call to :meth:`next`.

    Two sources: a generator (``G`` + ``layer``: Gaussian inputs through the mapping and G1, the ``syn_`` kind
    of the published priors) or a tensor of stored latents (cached shards, solved latents) drawn uniformly with
    replacement. The same stream also draws the diffusion noise (:meth:`loss_noise`).
    """

    def __init__(
        self,
        seed: int,
        device: torch.device | str = "cpu",
        *,
        G: Generator | None = None,
        layer: int | None = None,
        proxy: MappingProxy | None = None,
        noise_mode: str = "random",
        truncation_psi: float = 1.0,
        data: Tensor | None = None,
    ):
        if (G is None) == (data is None):
            raise ValueError("a stream draws either from a generator or from a data tensor")
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random, const or none, got {noise_mode!r}")
        self.gen = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.G, self.layer, self.proxy = G, layer, proxy
        self.noise_mode, self.truncation_psi = noise_mode, truncation_psi
        self.data = data
        if G is not None and layer == 0 and proxy is None:
            raise ValueError("layer-0 (latent) streams need the mapping proxy")

    @torch.no_grad()
    def next(self, n: int) -> Tensor:
        if self.data is not None:
            idx = torch.randint(self.data.shape[0], (n,), generator=self.gen)
            return self.data[idx].to(self.device, torch.float32)
        G = self.G
        z = torch.randn([n, G.z_dim], generator=self.gen).to(self.device)
        ws = G.mapping(z, None, truncation_psi=self.truncation_psi)
        if self.layer == 0:
            return latent_to_layout(self.proxy.to_z(ws))
        noises = None
        if self.noise_mode == "random":
            # Explicit maps from this stream's generator (not the global RNG) for the noise layers of G1.
            last_res = G.synthesis.blocks[self.layer - 1].resolution
            noises = [torch.randn([n, 1, lyr.resolution, lyr.resolution], generator=self.gen).to(self.device)
                      if lyr.resolution <= last_res else None for lyr in G.synthesis.noise_layers]
        x, _ = G.synthesis.forward_to(ws, self.layer, noises=noises,
                                      noise_mode="const" if self.noise_mode == "random" else self.noise_mode)
        return x.float()

    def loss_noise(self, shape: Sequence[int], T: float, eps: float) -> tuple[Tensor, Tensor]:
        """Diffusion times t ~ U(eps, T) (N,) and perturbations z ~ N(0, I) (N, *D), on the stream's device."""
        t = torch.rand(shape[0], generator=self.gen) * (T - eps) + eps
        z = torch.randn(list(shape), generator=self.gen)
        return t.to(self.device), z.to(self.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.gen.set_state(state["generator"])


def fit_normalizer(stream: LatentStream, num_samples: int, batch_size: int = 256) -> MinMaxNormalizer:
    """Min-max statistics of ``num_samples`` draws of a (dedicated) stream."""
    def batches() -> Iterator[Tensor]:
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            yield stream.next(n)
            done += n

    return MinMaxNormalizer.fit(batches())


# ---------------------------------------------------------------------------------------------------------------------
# Loss.


# ---------------------------------------------------------------------------------------------------------------------
# Trainer.


@dataclass
class TrainSettings:
    """Optimisation settings (batch_size is GLOBAL: split evenly over streams, streams over processes)."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    likelihood_weighting: bool = False
    reduce_mean: bool = True
    loss_eps: float = 1e-5
    log_every: int = 10
    ckpt_every: int = 100


class ScoreTrainer:
    """Adam + warm-up + clipping + EMA on a score network, over data streams, optionally under DDP.

    Args:
        model: the network (on ``device``), freshly initialised or loaded.
        sde: the forward SDE.
        streams: this process's data streams (``stream_ids`` gives their global indices).
        num_streams: streams in the whole job; the global batch is split evenly over them.
        normalizer: applied to every batch before the loss.
        settings: :class:`TrainSettings`.
        rank, world_size: position in the process group (world_size 1: no DDP).
        describe: ``(ema_state_dict, raw_state_dict, step, training) -> ScorePrior`` used for checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        sde: SDE,
        streams: Sequence[LatentStream],
        stream_ids: Sequence[int],
        num_streams: int,
        normalizer: MinMaxNormalizer,
        settings: TrainSettings,
        describe: Callable[[nn.Module, dict, int, dict], ScorePrior],
        rank: int = 0,
        world_size: int = 1,
    ):
        if settings.batch_size % num_streams:
            raise ValueError(f"batch_size={settings.batch_size} must be a multiple of the {num_streams} data streams")
        self.model = model
        self.sde = sde
        self.streams = list(streams)
        self.stream_ids = list(stream_ids)
        self.num_streams = num_streams
        self.chunk = settings.batch_size // num_streams
        self.normalizer = normalizer
        self.settings = settings
        self.describe = describe
        self.rank, self.world_size = rank, world_size
        self.step = 0
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=tuple(settings.adam_betas),
                                          eps=settings.adam_eps, weight_decay=settings.weight_decay)
        self.ema = ExponentialMovingAverage(model.parameters(), decay=settings.ema_decay)
        self.ddp: nn.Module = model
        if world_size > 1:
            device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
            # Gradients are averaged over processes: each holds batch_size / world_size samples.
            self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # -- state ----------------------------------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """Everything beyond the weights that an exact continuation needs (plain data; call on every rank)."""
        local = {i: s.state_dict() for i, s in zip(self.stream_ids, self.streams)}
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, local)
            local = {k: v for part in gathered for k, v in part.items()}
        return {
            "optimizer": self.optimizer.state_dict(),
            "ema": {"decay": self.ema.decay, "num_updates": self.ema.num_updates,
                    "shadow_params": [p.detach().cpu().clone() for p in self.ema.shadow_params]},
            "streams": [local[i] for i in range(self.num_streams)],
            "rng": self._gather_rng_states(),
            "num_streams": self.num_streams,
            "batch_size": self.settings.batch_size,
        }

    def load_training_state(self, state: Mapping[str, Any], raw_state_dict: Mapping[str, Tensor], step: int) -> None:
        if state.get("num_streams") != self.num_streams:
            raise ValueError(f"the checkpoint used {state.get('num_streams')} data streams, this run "
                             f"{self.num_streams}; resume with data.streams={state.get('num_streams')}")
        if state.get("batch_size") != self.settings.batch_size:
            raise ValueError(f"the checkpoint used batch_size={state.get('batch_size')}, this run "
                             f"{self.settings.batch_size}")
        self.model.load_state_dict(raw_state_dict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        for i, s in zip(self.stream_ids, self.streams):
            s.load_state_dict(state["streams"][i])
        rng = state.get("rng") or []
        if len(rng) == self.world_size:
            # The global RNG only matters for dropout; restored when the process layout is the same.
            torch.set_rng_state(rng[self.rank])
        self.step = int(step)

    def _gather_rng_states(self) -> list[Tensor]:
        """Global CPU RNG state of every rank (rank order)."""
        state = torch.get_rng_state()
        if self.world_size == 1:
            return [state]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, state)
        return gathered

    def ema_model_state(self) -> dict[str, Tensor]:
        """The model's state dict with the EMA weights swapped in (what priors sample with)."""
        params = list(self.model.parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        finally:
            self.ema.restore(params)

    def snapshot(self) -> ScorePrior:
        """The current prior (EMA weights) with the training weights and resume state attached."""
        training = self.training_state()
        raw = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return self.describe(self.ema_model_state(), raw, self.step, training)

    # -- steps ----------------------------------------------------------------------------------------------------

    def next_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """This process's part of the global batch: normalised data, times, perturbations."""
        xs, ts, zs = [], [], []
        for s in self.streams:
            x = self.normalizer.normalize(s.next(self.chunk))
            t, z = s.loss_noise(x.shape, self.sde.T, self.settings.loss_eps)
            xs.append(x)
            ts.append(t)
            zs.append(z)
        return torch.cat(xs), torch.cat(ts), torch.cat(zs)

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the loss (averaged over the whole job), lr and gradient norm."""
        st = self.settings
        x, t, z = self.next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        loss = dsm_loss(self.ddp, self.sde, x, t, z, likelihood_weighting=st.likelihood_weighting,
                        reduce_mean=st.reduce_mean)
        loss.backward()
        grad_norm = optimize_step(self.optimizer, self.model.parameters(), self.step, st.lr, warmup=st.warmup,
                                  grad_clip=st.grad_clip)
        self.ema.update(self.model.parameters())
        self.step += 1
        loss = loss.detach()
        if self.world_size > 1:
            dist.all_reduce(loss)
            loss = loss / self.world_size
        return {"loss": float(loss), "lr": self.optimizer.param_groups[0]["lr"],
                "grad_norm": float("nan") if grad_norm is None else grad_norm}

    def fit(self, on_checkpoint: Callable[[ScorePrior, int], None], log: Callable[..., None] | None = None,
            progress: bool = True) -> dict[str, float]:
        """Train until ``settings.steps``; every ``ckpt_every`` steps (not at the end) ``on_checkpoint(prior, step)``
        is called on rank 0 with a resumable snapshot. Returns timing figures."""
        st = self.settings
        start_step = self.step
        bar = tqdm(total=st.steps, initial=self.step, desc="train_score", disable=not (progress and self.rank == 0),
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        running, count = 0.0, 0
        while self.step < st.steps:
            out = self.train_step()
            running += out["loss"]
            count += 1
            bar.update(1)
            if self.step % max(1, st.log_every) == 0 or self.step == st.steps:
                mean_loss = running / count
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if log is not None and self.rank == 0:
                    log(self.step, loss=mean_loss, lr=out["lr"], grad_norm=out["grad_norm"])
                running, count = 0.0, 0
            if not math.isfinite(out["loss"]):
                raise FloatingPointError(f"loss became {out['loss']} at step {self.step}")
            if st.ckpt_every > 0 and self.step % st.ckpt_every == 0 and self.step < st.steps:
                snap = self.snapshot()  # collective under DDP: every rank takes part
                if self.rank == 0:
                    on_checkpoint(snap, self.step)
        bar.close()
        seconds = time.perf_counter() - t0
        done = self.step - start_step
        return {"steps": done, "seconds": seconds, "steps_per_second": done / seconds if seconds > 0 else float("nan")}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def prior_describer(
    model_factory: Callable[[], nn.Module],
    sde: SDE,
    layer: int,
    normalizer: MinMaxNormalizer,
    sampling: SamplingSettings,
    generator: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None = None,
) -> Callable[[dict, dict, int, dict], ScorePrior]:
    """``describe`` callback for :class:`ScoreTrainer`: wraps weights into a CPU :class:`ScorePrior`."""

    def describe(ema_state: dict, raw_state: dict, step: int, training: dict) -> ScorePrior:
        with torch.random.fork_rng(devices=[]):  # building a network must not move the training RNG
            model = model_factory()
        model.load_state_dict(ema_state)
        training = {**training, "config": dict(config) if config is not None else None}
        return ScorePrior(model, sde, layer, normalizer, sampling, generator=generator, step=step,
                          raw_state_dict=raw_state, training=training)

    return describe
