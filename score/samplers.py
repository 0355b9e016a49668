"""Samplers for the reverse-time SDE: predictor–corrector (cold and hot start) and the probability-flow ODE.

A sampler is a composition of a *predictor*, which takes one step of the reverse SDE, and a *corrector*,
which runs Langevin MCMC on the current marginal p_t; both are looked up by name in ``PREDICTORS`` and
``CORRECTORS``. Every update maps (x (N, *D), t (N,)) to (x, x_mean): the next state and the same state
without the last injected noise (what one returns at the end, "denoising").

All samplers take a score function ``score_fn(x, t)`` (see ``score.models.get_score_fn``) rather than a
network, work on the device/dtype of their input and return ``(x, nfe)`` with nfe the number of score
evaluations actually made.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import integrate
from tqdm.auto import tqdm

from .sde import SDE, VESDE, ScoreFn, _LinearBetaSDE, batch_broadcast

PREDICTORS: dict[str, type[Predictor]] = {}
CORRECTORS: dict[str, type[Corrector]] = {}


def register_predictor(name: str) -> Callable[[type], type]:
    def register(cls: type) -> type:
        if name in PREDICTORS:
            raise ValueError(f"predictor {name!r} is already registered")
        PREDICTORS[name] = cls
        return cls

    return register


def register_corrector(name: str) -> Callable[[type], type]:
    def register(cls: type) -> type:
        if name in CORRECTORS:
            raise ValueError(f"corrector {name!r} is already registered")
        CORRECTORS[name] = cls
        return cls

    return register


def get_predictor(name: str | None) -> type[Predictor]:
    name = "none" if name is None else name
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; registered: {sorted(PREDICTORS)}")
    return PREDICTORS[name]


def get_corrector(name: str | None) -> type[Corrector]:
    name = "none" if name is None else name
    if name not in CORRECTORS:
        raise ValueError(f"unknown corrector {name!r}; registered: {sorted(CORRECTORS)}")
    return CORRECTORS[name]


class CountedScore:
    """A score function that counts its calls (the samplers' nfe)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.score_fn(x, t)


# -- predictors ----------------------------------------------------------------------------------------


class Predictor(abc.ABC):
    """One step of the reverse-time SDE (or probability-flow ODE) from t towards t - 1/N."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.sde = sde
        self.score_fn = score_fn
        self.rsde = sde.reverse(score_fn, probability_flow)

    @abc.abstractmethod
    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, t) -> (x_next, x_next_mean)."""


@register_predictor("euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """x ← x - f̄(x, t) Δt + ḡ(t) √Δt z with Δt = T/N (f̄, ḡ: reverse drift and diffusion)."""

    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dt = -1.0 / self.rsde.N
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        return x_mean + batch_broadcast(diffusion, x) * math.sqrt(-dt) * torch.randn_like(x), x_mean


@register_predictor("reverse_diffusion")
class ReverseDiffusionPredictor(Predictor):
    """Run the forward discretisation backwards: x ← x - f_i + G_i² s(x, t) + G_i z."""

    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, G = self.rsde.discretize(x, t)
        x_mean = x - f
        return x_mean + batch_broadcast(G, x) * torch.randn_like(x), x_mean


@register_predictor("none")
class NonePredictor(Predictor):
    """Leaves x unchanged (corrector-only sampling)."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.sde = sde
        self.score_fn = score_fn

    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


# -- correctors ----------------------------------------------------------------------------------------


class Corrector(abc.ABC):
    """``n_steps`` Langevin steps targeting p_t, with step sizes set by the signal-to-noise ratio ``snr``."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, snr: float, n_steps: int):
        self.sde = sde
        self.score_fn = score_fn
        self.snr = snr
        self.n_steps = n_steps

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """α_i = 1 - β_i of the discrete schedule for VP/sub-VP (scales the step), 1 for VE."""
        if isinstance(self.sde, _LinearBetaSDE):
            return self.sde._schedule("alphas", t)[self.sde.timestep_index(t)]
        if isinstance(self.sde, VESDE):
            return torch.ones_like(t)
        raise NotImplementedError(f"{type(self.sde).__name__} has no Langevin step-size rule")

    @abc.abstractmethod
    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, t) -> (x_next, x_next_mean)."""


def _langevin_step(x: torch.Tensor, grad: torch.Tensor, noise: torch.Tensor, step_size: torch.Tensor):
    """x + ε ∇log p + √(2ε) z with a per-sample ε (N,); returns (x, x_mean)."""
    x_mean = x + batch_broadcast(step_size, x) * grad
    return x_mean + batch_broadcast(torch.sqrt(step_size * 2), x) * noise, x_mean


@register_corrector("langevin")
class LangevinCorrector(Corrector):
    """Langevin MCMC with ε = 2 α (snr · ‖z‖ / ‖s‖)², norms averaged over the batch (Song et al., Alg. 4/5)."""

    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alpha(t)
        x_mean = x
        for _ in range(self.n_steps):
            grad = self.score_fn(x, t)
            noise = torch.randn_like(x)
            grad_norm = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
            noise_norm = torch.linalg.vector_norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
            step_size = (self.snr * noise_norm / grad_norm) ** 2 * 2 * alpha
            x, x_mean = _langevin_step(x, grad, noise, step_size)
        return x, x_mean


@register_corrector("ald")
class AnnealedLangevinDynamics(Corrector):
    """NCSN's annealed Langevin dynamics: ε = 2 α (snr · std_t)², independent of the current score."""

    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alpha(t)
        std = self.sde.marginal_prob(x, t)[1]
        step_size = (self.snr * std) ** 2 * 2 * alpha
        x_mean = x
        for _ in range(self.n_steps):
            x, x_mean = _langevin_step(x, self.score_fn(x, t), torch.randn_like(x), step_size)
        return x, x_mean


@register_corrector("none")
class NoneCorrector(Corrector):
    """Leaves x unchanged (predictor-only sampling)."""

    def update_fn(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


# -- samplers ------------------------------------------------------------------------------------------


def _pc_pair(
    sde: SDE,
    score_fn: ScoreFn,
    predictor: str | None,
    corrector: str | None,
    snr: float,
    n_steps: int,
    probability_flow: bool,
) -> tuple[Predictor, Corrector]:
    return (
        get_predictor(predictor)(sde, score_fn, probability_flow),
        get_corrector(corrector)(sde, score_fn, snr, n_steps),
    )


def _batch_time(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


@torch.no_grad()
def pc_sampler(
    score_fn: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    *,
    predictor: str | None = "euler_maruyama",
    corrector: str | None = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float = 1e-3,
    x: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> tuple[torch.Tensor, int]:
    """Cold-start predictor–corrector sampling: x_T ~ p_T, then N (corrector, predictor) pairs on the grid
    t_i = linspace(T, eps, N).

    Args:
        shape: (N, *D) of the batch. x: start from this x_T instead of a prior sample.
        snr, n_steps: corrector step size and steps per level. probability_flow: predict with the ODE.
        denoise: return the last noise-free mean (x_mean) instead of x.
    Returns:
        samples (N, *D) and the number of score evaluations.
    """
    counted = CountedScore(score_fn)
    pred, corr = _pc_pair(sde, counted, predictor, corrector, snr, n_steps, probability_flow)
    x = sde.prior_sampling(shape).to(device=device, dtype=dtype) if x is None else x
    timesteps = torch.linspace(sde.T, eps, sde.N, device=x.device, dtype=x.dtype)
    x_mean = x
    for i in tqdm(range(sde.N), desc="PC sampling", disable=not progress, leave=False):
        vec_t = _batch_time(timesteps[i], x)
        x, x_mean = corr.update_fn(x, vec_t)
        x, x_mean = pred.update_fn(x, vec_t)
    return (x_mean if denoise else x), counted.calls


@torch.no_grad()
def hot_sampler(
    x: torch.Tensor,
    score_fn: ScoreFn,
    sde: SDE,
    *,
    t: float = 0.01,
    hot_steps: int = 1,
    predictor: str | None = "euler_maruyama",
    corrector: str | None = "ald",
    snr: float = 1e-4,
    n_steps: int = 1,
    probability_flow: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, int]:
    """Hot-start PC sampling: ``hot_steps`` (corrector, predictor) pairs at one fixed small time t from x.

    This is the published SGILO prior step and "naturalization": the state is not re-noised first, t does
    not move, and the last predictor's mean (its noise left out) is returned. Corrector noise and the
    noise of all but the last predictor step are kept. The defaults are those of the published priors
    (t = 0.01, Euler–Maruyama + ALD, one corrector step; snr 1e-4, hot_steps 1 for latent/layer1-2; snr
    5e-3, hot_steps 5 for syn_layer3). With Euler–Maruyama each step moves x by
    β(t)/N · (x/2 + s(x, t)) (VP), i.e. a small step up the density of p_t.

    Args:
        x: the state (N, *D), already normalised the way the prior was trained.
    Returns:
        the moved state (N, *D) and the number of score evaluations.
    """
    counted = CountedScore(score_fn)
    pred, corr = _pc_pair(sde, counted, predictor, corrector, snr, n_steps, probability_flow)
    vec_t = _batch_time(t, x)
    x_mean = x
    for _ in tqdm(range(hot_steps), desc="hot sampling", disable=not progress, leave=False):
        x, x_mean = corr.update_fn(x, vec_t)
        x, x_mean = pred.update_fn(x, vec_t)
    return x_mean, counted.calls


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().reshape(-1).astype(np.float64)


def _from_numpy(y: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y)).to(device=like.device, dtype=like.dtype).reshape(like.shape)


@torch.no_grad()
def ode_sampler(
    score_fn: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    *,
    x: torch.Tensor | None = None,
    denoise: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    eps: float = 1e-3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, int]:
    """Integrate the probability-flow ODE dx/dt = f(x, t) - ½ g(t)² s(x, t) from T down to eps with
    ``scipy.integrate.solve_ivp`` (adaptive RK45 by default; the tolerances of score_sde_pytorch).

    Args:
        x: the latent x_T (N, *D) to decode; a prior sample when None. The map x_T -> x_eps is deterministic.
        denoise: finish with one noise-free reverse-diffusion step at eps.
    Returns:
        samples (N, *D) and the number of score evaluations (the solver's nfev, +1 when denoising).
    """
    counted = CountedScore(score_fn)
    rsde = sde.reverse(counted, probability_flow=True)
    x = sde.prior_sampling(shape).to(device=device, dtype=dtype) if x is None else x

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        state = _from_numpy(y, x)
        return _to_numpy(rsde.sde(state, _batch_time(t, state))[0])

    solution = integrate.solve_ivp(ode_func, (sde.T, eps), _to_numpy(x), rtol=rtol, atol=atol, method=method)
    if not solution.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {solution.message}")
    x = _from_numpy(solution.y[:, -1], x)
    if denoise:
        _, x = ReverseDiffusionPredictor(sde, counted).update_fn(x, _batch_time(eps, x))
    return x, counted.calls
