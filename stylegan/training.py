"""StyleGAN2 training for small resolutions: the loop behind ``train_stylegan.py``.

Objective (Karras et al. 2020, StyleGAN2; facts as in NVIDIA's stylegan2-ada-pytorch, code our own):

- non-saturating logistic loss: D minimises ``softplus(D(G(z))) + softplus(-D(x))``, G minimises
  ``softplus(-D(G(z)))``;
- lazy R1 on reals: every ``d_reg_interval`` D steps an extra D step on ``(gamma / 2) * ||grad_x D(x)||^2``,
  multiplied by the interval so that its average weight is unchanged; Adam's learning rate and betas of the
  regularised network are rescaled by ``interval / (interval + 1)`` to compensate for the extra steps;
- Adam with betas (0, 0.99);
- generator EMA (``G_ema``) with a half-life of ``ema_kimg`` thousand images, optionally ramped up to
  ``ema_rampup * images seen`` early on, buffers copied;
- style mixing: with probability ``style_mixing_prob`` the ws from a cut-off layer on come from a second z.

- adaptive discriminator augmentation (:mod:`stylegan.augment`, optional): D sees every image, real or fake,
  through the augmentation pipe, R1 included (its gradient is taken w.r.t. the un-augmented reals); the strength
  p follows the overfitting heuristic r_t = E[sign(D(real))] toward its target.

Not implemented (yet): path-length regularisation of G, mixed precision, several processes.

The data is any indexable dataset of (3, R, R) images in [-1, 1] with a ``batch(indices)`` method, e.g.
:class:`data.images.ImageDataset`. All randomness of a step comes from torch's global RNG (batch indices, z,
synthesis noise, mixing), whose state goes into every checkpoint, so a resumed run repeats the original.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from stylegan.augment import AdaController, AugmentPipe
from stylegan.discriminator import Discriminator
from stylegan.networks import Generator
from stylegan.swd import swd

TRAINING_FORMAT = "sgilo.stylegan_training"
TRAINING_VERSION = 2  # 2: + ADA state (version 1 checkpoints load with p = 0)


class ImageBatches(Protocol):
    """What the trainer needs of a dataset: its length and a stacked batch (B, C, R, R) in [-1, 1]."""

    def __len__(self) -> int: ...

    def batch(self, indices: Tensor | list[int]) -> Tensor: ...


@dataclass(frozen=True)
class GANSettings:
    """Optimisation settings of a StyleGAN2 run (see the module docstring for their meaning)."""

    steps: int = 2000
    batch_size: int = 16
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.01
    d_reg_interval: int = 16  # 0 = no R1 at all
    ema_kimg: float = 5.0
    ema_rampup: float | None = 0.05
    style_mixing_prob: float = 0.9
    ada_target: float | None = None  # None: no augmentation; else ADA's r_t target (paper: 0.6)
    ada_interval: int = 4  # steps between adjustments of p
    ada_kimg: float = 100.0  # thousands of images for p to move from 0 to 1
    ada_p: float = 0.0  # initial p (with ada_target None: a fixed strength, 0 = off)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"need steps >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.d_reg_interval < 0 or self.r1_gamma < 0:
            raise ValueError("r1_gamma and d_reg_interval must be >= 0")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ValueError(f"style_mixing_prob must lie in [0, 1], got {self.style_mixing_prob}")
        if not 0 <= self.ada_p <= 1:
            raise ValueError(f"ada_p must lie in [0, 1], got {self.ada_p}")


# ---------------------------------------------------------------------------------------------------------------------
# Pieces of the objective.


def lazy_adam(params: Any, lr: float, betas: tuple[float, float], reg_interval: int) -> torch.optim.Adam:
    """Adam for a network regularised every ``reg_interval`` steps (0 or 1: plain Adam).

    The extra regularisation steps would otherwise speed up the moment estimates and the effective learning
    rate; scaling by ``c = interval / (interval + 1)`` (lr * c, beta ** c) keeps both per *main* step.
    """
    c = reg_interval / (reg_interval + 1) if reg_interval > 1 else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8)


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator's logistic loss, mean over the batch: softplus(D(fake)) + softplus(-D(real)). Logits (N, 1)."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Generator's non-saturating loss softplus(-D(G(z))), mean over the batch. Logits (N, 1)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(D: Callable[[Tensor], Tensor], reals: Tensor) -> Tensor:
    """Per-image squared gradient norm of D's logit w.r.t. its real input: (N, C, R, R) -> (N,), >= 0.

    Built with ``create_graph`` so that the penalty itself back-propagates into D's parameters.
    """
    reals = reals.detach().requires_grad_(True)
    logits = D(reals)
    (grad,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def mapped_ws(G: Generator, z: Tensor, style_mixing_prob: float = 0.0) -> Tensor:
    """z (N, z_dim) -> ws (N, num_ws, w_dim), with style mixing from a second z with the given probability.

    The mixing cut-off is uniform in [1, num_ws) and shared by the batch; the second mapping call does not
    update ``w_avg`` (it is the same distribution, counted once).
    """
    ws = G.mapping(z, None)
    if style_mixing_prob > 0 and torch.rand([]).item() < style_mixing_prob:
        cutoff = int(torch.randint(1, ws.shape[1], []).item()) if ws.shape[1] > 1 else ws.shape[1]
        ws2 = G.mapping(torch.randn_like(z), None, skip_w_avg_update=True)
        ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
    return ws


def ema_beta(batch_size: int, nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images (shortened early by the ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers (w_avg, noise_const, ...) copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def generate(G: Generator, num: int, seed: int, batch: int = 64, device: torch.device | str = "cpu") -> Tensor:
    """``num`` images (num, C, R, R) from fixed seeded z and constant noise; leaves the global RNG untouched."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, G.z_dim, generator=gen).to(device)
    return torch.cat([G(z[i : i + batch], None, noise_mode="const").cpu() for i in range(0, num, batch)])


# ---------------------------------------------------------------------------------------------------------------------
# The trainer.


class StyleGANTrainer:
    """G, D, G_ema and their optimisers; ``train_step`` runs one G step, one D step and (lazily) one R1 step."""

    def __init__(self, G: Generator, D: Discriminator, data: ImageBatches, settings: GANSettings,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.G = G.to(self.device).train().requires_grad_(False)
        self.D = D.to(self.device).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.data = data
        self.settings = settings
        s = settings
        # G gets no lazy regulariser here (no path-length term), hence interval 0: plain Adam.
        self.opt_G = lazy_adam(self.G.parameters(), s.g_lr, s.betas, 0)
        self.opt_D = lazy_adam(self.D.parameters(), s.d_lr, s.betas, s.d_reg_interval if s.r1_gamma > 0 else 0)
        self.step = 0
        self.nimg = 0
        self.augment = AugmentPipe().to(self.device)
        self.augment.p.fill_(s.ada_p)
        self.ada = (AdaController(self.augment, s.ada_target, s.ada_interval, s.ada_kimg)
                    if s.ada_target is not None else None)

    def _D(self, images: Tensor) -> Tensor:
        """D's logits (N, 1) of augmented images (the pipe is the identity at p = 0)."""
        return self.D(self.augment(images))

    def _reals(self) -> Tensor:
        idx = torch.randint(len(self.data), (self.settings.batch_size,))
        return self.data.batch(idx).to(self.device)

    def _fakes(self, grad: bool) -> Tensor:
        z = torch.randn(self.settings.batch_size, self.G.z_dim, device=self.device)
        with torch.set_grad_enabled(grad):
            return self.G.synthesis(mapped_ws(self.G, z, self.settings.style_mixing_prob))

    def train_step(self) -> dict[str, float]:
        """One iteration; returns the scalars of this step (losses, mean logits, R1 when computed)."""
        s = self.settings
        out: dict[str, float] = {}

        # Generator: non-saturating loss through a frozen D.
        self.G.requires_grad_(True)
        fake_logits = self._D(self._fakes(grad=True))
        loss_G = g_nonsaturating_loss(fake_logits)
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self.G.requires_grad_(False)
        out["loss_G"] = loss_G.item()

        # Discriminator: logistic loss on fresh fakes and reals.
        self.D.requires_grad_(True)
        reals = self._reals()
        fake_logits = self._D(self._fakes(grad=False).detach())
        real_logits = self._D(reals)
        loss_D = d_logistic_loss(real_logits, fake_logits)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        out.update(loss_D=loss_D.item(), logits_real=real_logits.mean().item(), logits_fake=fake_logits.mean().item())
        if self.ada is not None:
            self.ada.observe(real_logits, s.batch_size)
            out["ada_rt"] = self.ada.rt
        out["ada_p"] = float(self.augment.p)

        # Lazy R1: a separate D step every d_reg_interval steps, weighted by the interval.
        out["r1"] = float("nan")
        if s.r1_gamma > 0 and s.d_reg_interval > 0 and self.step % s.d_reg_interval == 0:
            penalty = r1_penalty(self._D, reals)
            loss_r1 = penalty.mean() * (s.r1_gamma / 2) * s.d_reg_interval
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            self.opt_D.step()
            out["r1"] = penalty.mean().item()
        self.D.requires_grad_(False)

        self.step += 1
        self.nimg += s.batch_size
        update_ema(self.G_ema, self.G, ema_beta(s.batch_size, self.nimg, s.ema_kimg, s.ema_rampup))
        return out

    def fit(self, log: Callable[..., None] | None = None, log_every: int = 10,
            on_checkpoint: Callable[[int], None] | None = None, ckpt_every: int = 0,
            on_images: Callable[[int], None] | None = None, image_every: int = 0,
            metric: Callable[[], dict[str, float]] | None = None, metric_every: int = 0,
            progress: bool = True) -> dict[str, float]:
        """Train until ``settings.steps`` (from the current step); callbacks run every so many steps and at the end.

        ``log(step, **scalars)`` receives the step's scalars (averaged over the last ``log_every`` steps; R1 over
        the steps that computed it) plus the metric's values (NaN between evaluations, so that CSV columns stay
        fixed); the metric is also evaluated and logged once before the first step. Returns throughput: steps,
        seconds, steps_per_second, kimg_per_second (training only: time in callbacks is left out), and the
        last metric values.
        """
        from tqdm import tqdm

        start_step = self.step
        overhead = 0.0  # seconds spent in metric / image / checkpoint callbacks
        sums: dict[str, list[float]] = {}
        names = ("loss_G", "loss_D", "logits_real", "logits_fake", "r1", "ada_p", "ada_rt")
        metric_keys: list[str] = []
        last_values: dict[str, float] = {}
        if metric is not None and self.step < self.settings.steps:
            # Evaluated once up front: the starting value, and the CSV columns are known before the first row.
            values = last_values = metric()
            metric_keys = list(values)
            if log is not None:
                log(self.step, **dict.fromkeys(names, float("nan")), **values, kimg=self.nimg / 1000,
                    steps_per_second=float("nan"))
        t0 = time.perf_counter()

        def due(every: int, last: bool) -> bool:
            return every > 0 and (self.step % every == 0 or last)

        bar = tqdm(total=self.settings.steps, initial=self.step, disable=not progress, dynamic_ncols=True,
                   desc="stylegan")
        while self.step < self.settings.steps:
            scalars = self.train_step()
            for k, v in scalars.items():
                if v == v:  # skip NaN (R1 on steps that did not compute it)
                    sums.setdefault(k, []).append(v)
            last = self.step == self.settings.steps
            values: dict[str, float] = {}
            t_cb = time.perf_counter()
            if metric is not None and due(metric_every, last):
                values = last_values = metric()
            overhead += time.perf_counter() - t_cb
            t_cb = time.perf_counter()
            if log is not None and (due(log_every, last) or values):
                row = {k: (sum(sums[k]) / len(sums[k]) if sums.get(k) else float("nan")) for k in names}
                row.update({k: values.get(k, float("nan")) for k in metric_keys})
                elapsed = time.perf_counter() - t0 - overhead
                row["kimg"] = self.nimg / 1000
                row["steps_per_second"] = (self.step - start_step) / max(elapsed, 1e-9)
                log(self.step, **row)
                sums.clear()
            if on_images is not None and due(image_every, last):
                on_images(self.step)
            if on_checkpoint is not None and due(ckpt_every, last):
                on_checkpoint(self.step)
            overhead += time.perf_counter() - t_cb
            bar.update(1)
            bar.set_postfix(loss_G=f"{scalars['loss_G']:.3f}", loss_D=f"{scalars['loss_D']:.3f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - t0 - overhead
        steps = self.step - start_step
        return {"steps": steps, "seconds": seconds, "steps_per_second": steps / max(seconds, 1e-9),
                "kimg_per_second": steps * self.settings.batch_size / 1000 / max(seconds, 1e-9), **last_values}

    # --- checkpoints --------------------------------------------------------------------------------------------

    def state_dict(self, **extra: Any) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimisers, counters, RNG states (+ ``extra``)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        return {
            "format": TRAINING_FORMAT, "version": TRAINING_VERSION, "step": self.step, "nimg": self.nimg,
            "G_kwargs": dict(self.G.init_kwargs), "D_kwargs": dict(self.D.init_kwargs),
            "G": cpu(self.G.state_dict()), "D": cpu(self.D.state_dict()), "G_ema": cpu(self.G_ema.state_dict()),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "rng": rng,
            "ada": self.ada.state_dict() if self.ada is not None else {"p": float(self.augment.p)},
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.settings).items()},
            **extra,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the networks must have been built with the same kwargs.

        Raises:
            ValueError: not a training checkpoint, or built for other networks / another batch size.
        """
        if state.get("format") != TRAINING_FORMAT:
            raise ValueError(f"not a StyleGAN training checkpoint (format {state.get('format')!r})")
        for name, net in (("G_kwargs", self.G), ("D_kwargs", self.D)):
            if dict(state[name]) != dict(net.init_kwargs):
                raise ValueError(f"{name} differ from this run's: {dict(state[name])} vs {dict(net.init_kwargs)}")
        if int(state["settings"]["batch_size"]) != self.settings.batch_size:
            raise ValueError(f"batch_size {self.settings.batch_size} differs from the checkpoint's "
                             f"{state['settings']['batch_size']}")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.step, self.nimg = int(state["step"]), int(state["nimg"])
        ada = state.get("ada", {"p": 0.0})  # version 1: trained without augmentation
        if self.ada is not None and "steps" in ada:
            self.ada.load_state_dict(ada)
        else:
            self.augment.p.fill_(float(ada["p"]))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)


def swd_metric(G_ema: Generator, reference: Tensor, seed: int, device: torch.device | str = "cpu",
               **swd_kwargs: Any) -> Callable[[], dict[str, float]]:
    """A metric callback: SWD between ``reference`` (N, C, R, R) and N fixed-seed samples of ``G_ema``."""

    def metric() -> dict[str, float]:
        fakes = generate(G_ema, len(reference), seed, device=device)
        return swd(reference, fakes, seed=seed, **swd_kwargs)

    return metric
