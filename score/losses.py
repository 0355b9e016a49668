"""Training objective and optimisation helpers for score networks.

Continuous-time denoising score matching (Song et al. 2021, eq. 7): with t ~ U(eps, T), z ~ N(0, I) and
x_t = mean_t(x_0) + std_t z,

    L = E[ λ(t) · ‖s_θ(x_t, t) + z / std_t‖² ]

with λ(t) = std_t² (the default, "noise prediction" weighting, written ‖s_θ std_t + z‖²) or λ(t) = g(t)²
(likelihood weighting, Song et al. 2021b, which makes L an upper bound on the negative log-likelihood).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .models import get_score_fn
from .sde import SDE, batch_broadcast

LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def dsm_loss(
    model: nn.Module,
    sde: SDE,
    x0: torch.Tensor,
    t: torch.Tensor,
    z: torch.Tensor,
    *,
    train: bool = True,
    reduce_mean: bool = True,
    likelihood_weighting: bool = False,
) -> torch.Tensor:
    """Denoising score matching of ``model`` on clean data x0 (N, *D) at GIVEN times t (N,) and unit
    perturbations z (N, *D); returns a scalar. Callers that own their randomness (the trainer's data streams)
    use this directly; :func:`sde_loss` draws t and z itself.

    Args:
        reduce_mean: average the squared error over the data dimensions; otherwise take half its sum
            (score_sde_pytorch's convention).
        likelihood_weighting: weight by g(t)² instead of std_t².
    """
    mean, std = sde.marginal_prob(x0, t)
    std_b = batch_broadcast(std, x0)
    score = get_score_fn(sde, model, train=train)(mean + std_b * z, t)
    if likelihood_weighting:
        residual = score + z / std_b
    else:
        residual = score * std_b + z
    per_sample = residual.square().reshape(x0.shape[0], -1)
    per_sample = per_sample.mean(dim=-1) if reduce_mean else 0.5 * per_sample.sum(dim=-1)
    if likelihood_weighting:
        per_sample = per_sample * sde.sde(torch.zeros_like(x0), t)[1] ** 2
    return per_sample.mean()


def sde_loss(
    model: nn.Module,
    batch: torch.Tensor,
    sde: SDE,
    *,
    train: bool = True,
    reduce_mean: bool = True,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """:func:`dsm_loss` with t ~ U(eps, T) and z ~ N(0, I) drawn from the global RNG; returns a scalar.

    eps: smallest time sampled (the score is unbounded as t -> 0).
    """
    t = torch.rand(batch.shape[0], device=batch.device, dtype=batch.dtype) * (sde.T - eps) + eps
    z = torch.randn_like(batch)
    return dsm_loss(model, sde, batch, t, z, train=train, reduce_mean=reduce_mean,
                    likelihood_weighting=likelihood_weighting)


def get_sde_loss_fn(
    sde: SDE,
    *,
    train: bool = True,
    reduce_mean: bool = True,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
) -> LossFn:
    """:func:`sde_loss` with its options bound: ``loss_fn(model, batch) -> scalar``."""

    def loss_fn(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return sde_loss(
            model,
            batch,
            sde,
            train=train,
            reduce_mean=reduce_mean,
            likelihood_weighting=likelihood_weighting,
            eps=eps,
        )

    return loss_fn


class ExponentialMovingAverage:
    """Moving average of a model's trainable parameters, sampled from instead of the raw weights.

    ``update`` after each optimiser step: shadow -= (1 - decay) (shadow - param). With ``use_num_updates``
    the decay is capped by (1 + k) / (10 + k) after k updates, so that early averages are not dominated by
    the random initialisation. ``store``/``copy_to``/``restore`` swap the averaged weights in for evaluation.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float, use_num_updates: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.num_updates: int | None = 0 if use_num_updates else None
        self.shadow_params = [p.detach().clone() for p in parameters if p.requires_grad]
        self.collected_params: list[torch.Tensor] = []

    @staticmethod
    def _trainable(parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
        return [p for p in parameters if p.requires_grad]

    def current_decay(self) -> float:
        if self.num_updates is None:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, parameters: Iterable[nn.Parameter]) -> None:
        if self.num_updates is not None:
            self.num_updates += 1
        one_minus_decay = 1.0 - self.current_decay()
        for shadow, param in zip(self.shadow_params, self._trainable(parameters), strict=True):
            shadow.sub_(one_minus_decay * (shadow - param))

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[nn.Parameter]) -> None:
        """Overwrite the parameters with their averages."""
        for shadow, param in zip(self.shadow_params, self._trainable(parameters), strict=True):
            param.copy_(shadow)

    def store(self, parameters: Iterable[nn.Parameter]) -> None:
        """Keep a copy of the current parameters, to be put back by :meth:`restore`."""
        self.collected_params = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def restore(self, parameters: Iterable[nn.Parameter]) -> None:
        for saved, param in zip(self.collected_params, parameters, strict=True):
            param.copy_(saved)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": self.shadow_params}

    def load_state_dict(self, state_dict: dict) -> None:
        self.decay = state_dict["decay"]
        self.num_updates = state_dict["num_updates"]
        saved = state_dict["shadow_params"]
        if len(saved) != len(self.shadow_params):
            raise ValueError(f"EMA state has {len(saved)} tensors, the model {len(self.shadow_params)}")
        with torch.no_grad():
            # Copy into the existing tensors so that they stay on the model's device.
            for shadow, value in zip(self.shadow_params, saved):
                shadow.copy_(value)


def warmup_lr(base_lr: float, step: int, warmup: int) -> float:
    """Linear warm-up: base_lr · min((step + 1) / warmup, 1) for the update with 0-based index ``step``.

    score_sde_pytorch uses step / warmup, which makes the very first update a no-op; counting from one
    avoids that and is otherwise the same ramp.
    """
    if warmup <= 0:
        return base_lr
    return base_lr * min((step + 1) / warmup, 1.0)


def optimize_step(
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    step: int,
    lr: float,
    warmup: int = 0,
    grad_clip: float = -1.0,
) -> float | None:
    """Apply warm-up to the learning rate, clip the global gradient norm (if ``grad_clip`` >= 0), step.

    Returns the gradient norm before clipping, or None when clipping is off.
    """
    for group in optimizer.param_groups:
        group["lr"] = warmup_lr(lr, step, warmup)
    grad_norm = None
    if grad_clip >= 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(list(parameters), max_norm=grad_clip))
    optimizer.step()
    return grad_norm


def train_step(
    model: nn.Module,
    batch: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    step: int,
    *,
    lr: float,
    warmup: int = 0,
    grad_clip: float = -1.0,
    ema: ExponentialMovingAverage | None = None,
) -> torch.Tensor:
    """One optimisation step on ``batch``: loss, backward, warm-up + clipping + optimiser, EMA update.

    ``model`` may be wrapped in DistributedDataParallel: gradients are averaged across processes in
    backward, so every process takes the same step. Returns the (detached) loss.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    optimize_step(optimizer, model.parameters(), step, lr, warmup=warmup, grad_clip=grad_clip)
    if ema is not None:
        ema.update(model.parameters())
    return loss.detach()


@torch.no_grad()
def eval_step(model: nn.Module, batch: torch.Tensor, loss_fn: LossFn, ema: ExponentialMovingAverage | None = None):
    """The loss on ``batch`` with the EMA weights swapped in (when given); training weights are put back."""
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    try:
        return loss_fn(model, batch).detach()
    finally:
        if ema is not None:
            ema.restore(model.parameters())
