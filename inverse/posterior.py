"""Diffusion posterior samplers over a score prior and a differentiable decoder (DESIGN §7).

A score prior on variables v (the features of layer k, or the image itself) together with a decoder D (G2, the
generator from layer k on, or the identity) is a latent diffusion model; these samplers draw from p(v | y) for
measurements y = A(D(v)) + σ_y ξ. Everything runs in the prior's normalised model space u (v = denorm(u)), where
its SDE x_t = α_t x_0 + σ_t ε lives; ``s(u, t)`` is the prior's score there.

- :func:`annealed_langevin` (Jalal et al., NeurIPS 2021, "Robust compressed sensing MRI with deep generative
  priors"): over noise levels t_1 > … > t_L, ``steps_per_level`` Langevin steps

      u ← u + η_i [ s(u, t_i) + ∇_u log p(y | u, t_i) ] + √(2 η_i) ξ,
      log p(y | u, t) ≈ −‖y − A(D(denorm(u / α_t)))‖² / (2 (σ_y² + γ_t²)),   γ_t = σ_t / α_t,
      η_i = ε · σ_{t_i}² / σ_{t_L}²                                                     (NCSNv2's step rule)

  The γ_t² term is the paper's annealing of the likelihood (their A*(A x − y)/(σ² + γ²)); through a nonlinear
  decoder it is an approximation, exact only for a linear D and A. NCSNv2's rule scales the step with the
  variance of the perturbation kernel of the variable being moved: σ_t² for the VP-SDE's u_t (whose score is of
  size 1/σ_t²), which is γ_t² in the VE parameterisation the paper uses.
- :func:`dps` (Chung et al., ICLR 2023, "Diffusion posterior sampling for general noisy inverse problems"): the
  reverse SDE (Euler–Maruyama) with, after each step, a step along the gradient of the measurement misfit of
  Tweedie's estimate

      û_0(u_t) = (u_t + σ_t² s(u_t, t)) / α_t,      u ← u' − ζ_i ∇_{u_t} ‖y − A(D(denorm(û_0)))‖²,
      ζ_i = ζ / ‖y − A(D(denorm(û_0)))‖                                        (their Algorithm 1 and App. C)

  i.e. ζ times the gradient of the (unsquared) residual norm: the form their code uses.
- :func:`resample` (Song et al., ICLR 2024, "Solving inverse problems with latent diffusion models via hard data
  consistency"): unconditional reverse steps, and every ``every`` steps in the later part of the process hard
  data consistency: û_0' = argmin_u ‖y − A(D(denorm(u)))‖² started at Tweedie's estimate (Adam, ``opt_steps``;
  a GAN has no encoder, so the optimisation runs in the variable space itself: the paper's latent-space
  optimisation), mapped back to the noisy manifold at the current time t by their stochastic resampling

      u_t ~ N( (γ_t² α_t û_0' + (1 − ᾱ_t) u'_t) / (γ_t² + 1 − ᾱ_t),  γ_t² (1 − ᾱ_t) / (γ_t² + 1 − ᾱ_t) I ),
      γ_t² = gamma_scale · (1 − ᾱ_{t'}) / ᾱ_t · (1 − ᾱ_t / ᾱ_{t'}),   ᾱ_t = α_t², t' = the next (less noisy) time,

  u'_t the unconditional sample; gamma_scale 40 as in their code.

The samplers return final variables v (B, *variable_shape); every random draw comes from ``rng`` (per-image
streams, see :class:`inverse.ilo.ImageRng`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inverse.operators import Operator
from score.prior import ScorePrior
from score.sde import marginal_coefficients


@dataclass
class LatentDiffusion:
    """A score prior on variables and the decoder from them to images.

    prior: the score prior (its normaliser maps v to model space u).
    decode: v (B, *variable_shape) -> images (B, C, H, W), differentiable.
    """

    prior: ScorePrior
    decode: Callable[[Tensor], Tensor]

    def decode_model(self, u: Tensor) -> Tensor:
        return self.decode(self.prior.from_model_space(u))

    def score(self, u: Tensor, t: float) -> Tensor:
        return self.prior.score(u, t)

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        return marginal_coefficients(self.prior.sde, t)


def misfit(op: Operator, image: Tensor, y: Tensor) -> Tensor:
    """‖y − A(image)‖² per row (B,): the sum over observed entries (unobserved ones are zero on both sides)."""
    return (op.A(image) - y).flatten(1).square().sum(1)


SPACINGS = ("linear", "geometric")


def time_grid(ld: LatentDiffusion, n: int, eps: float, t_start: float = 1.0, spacing: str = "linear") -> list[float]:
    """n times from t_start down to eps (inclusive): equally spaced in t (``linear``: the papers' VP/DDPM grids),
    or with the noise-to-signal ratio γ_t = σ_t / α_t in geometric progression (``geometric``: NCSN's noise
    levels, which Jalal et al. use). A variable normalised to a small range in model space (the published minmax
    normalisation gives feature stds of ~0.03) is invisible under the noise for most of a linear grid (γ_t
    exceeds its std for t > ~0.01 on the VP-SDE); the geometric grid spends the steps evenly over the noise
    scales."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if n == 1:
        return [t_start]
    if spacing == "linear":
        return torch.linspace(t_start, eps, n, dtype=torch.float64).tolist()
    dense = torch.linspace(eps, t_start, 4097, dtype=torch.float64)  # γ_t is increasing: invert it by interpolation
    mean, std = ld.prior.sde.marginal_prob(torch.ones(dense.numel(), 1, dtype=torch.float64), dense)
    log_gamma = (std / mean[:, 0]).log()
    targets = torch.linspace(float(log_gamma[-1]), float(log_gamma[0]), n, dtype=torch.float64)
    idx = torch.searchsorted(log_gamma, targets).clamp(1, dense.numel() - 1)
    lo, hi = log_gamma[idx - 1], log_gamma[idx]
    w = ((targets - lo) / (hi - lo)).clamp(0, 1)
    ts = dense[idx - 1] + w * (dense[idx] - dense[idx - 1])
    ts[0], ts[-1] = t_start, eps
    return ts.tolist()


def start(ld: LatentDiffusion, rng: Callable[..., Tensor], t_start: float, u_init: Tensor | None) -> Tensor:
    """The sampler's first state at time t_start: a draw of the SDE's prior N(0, I) at t_start = 1 or without a
    start point; else SDEdit's start (Meng et al., ICLR 2022) from a clean estimate u_init (B, ...) in model
    space, the forward SDE's marginal x_t = α_t u_init + σ_t ξ."""
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    if u_init is None or t_start >= 1.0:
        return rng(*ld.prior.image_shape)
    a, s = ld.alpha_sigma(t_start)
    return a * u_init + s * rng(*u_init.shape[1:])


def annealed_langevin(ld: LatentDiffusion, op: Operator, y: Tensor, rng: Callable[..., Tensor], sigma_y: float = 0.0,
                      levels: int = 100, steps_per_level: int = 3, step_size: float = 2e-5, eps: float = 1e-3,
                      t_start: float = 1.0, spacing: str = "linear", u_init: Tensor | None = None,
                      progress: bool = False) -> Tensor:
    """Annealed Langevin dynamics with the likelihood score (module docstring); returns v (B, ...).

    Args:
        ld: prior + decoder. op, y: operator and measurements (B, ...). sigma_y: measurement noise std.
        rng: ``rng(*shape) -> (B, *shape)`` standard normal draws.
        levels, steps_per_level: the noise levels t_i (from t_start to eps, spaced by ``spacing``: see
            :func:`time_grid`) and Langevin steps per level.
        step_size: ε, the step at the last level (η_i = ε σ_i² / σ_L²).
        t_start, u_init: the first level and a clean start (model space) noised to it (:func:`start`).
    """
    u = start(ld, rng, t_start, u_init)
    ts = time_grid(ld, levels, eps, t_start, spacing)
    sigma_last = ld.alpha_sigma(ts[-1])[1]
    for t in tqdm(ts, desc="langevin", disable=not progress, leave=False):
        eta = step_size * (ld.alpha_sigma(t)[1] / sigma_last) ** 2
        for _ in range(steps_per_level):
            u = langevin_step(ld, op, y, u, t, eta, sigma_y, rng)
    return ld.prior.from_model_space(u / ld.alpha_sigma(ts[-1])[0])


def langevin_step(ld: LatentDiffusion, op: Operator, y: Tensor, u: Tensor, t: float, eta: float, sigma_y: float,
                  rng: Callable[..., Tensor]) -> Tensor:
    """u + η [s(u, t) + ∇_u log p(y | u, t)] + √(2η) ξ at level t (module docstring); u (B, *image_shape)."""
    a, s = ld.alpha_sigma(t)
    gamma = s / a
    u = u.detach().requires_grad_(True)
    log_lik = -misfit(op, ld.decode_model(u / a), y).sum() / (2 * (sigma_y**2 + gamma**2))
    grad_lik = torch.autograd.grad(log_lik, u)[0]
    with torch.no_grad():
        return u + eta * (ld.score(u, t) + grad_lik) + (2 * eta) ** 0.5 * rng(*u.shape[1:])


def reverse_step(ld: LatentDiffusion, u: Tensor, t: float, dt: float, score: Tensor, noise: Tensor) -> Tensor:
    """One Euler–Maruyama step of the reverse SDE from t to t − dt: u − [f − g² s] dt + g √dt ξ."""
    tt = torch.full((u.shape[0],), t, device=u.device, dtype=u.dtype)
    drift, diffusion = ld.prior.sde.sde(u, tt)
    g = diffusion.view(-1, *([1] * (u.ndim - 1)))
    return u - (drift - g**2 * score) * dt + g * dt**0.5 * noise


def dps(ld: LatentDiffusion, op: Operator, y: Tensor, rng: Callable[..., Tensor], steps: int = 1000,
        zeta: float = 1.0, eps: float = 1e-3, t_start: float = 1.0, spacing: str = "linear",
        u_init: Tensor | None = None, progress: bool = False) -> Tensor:
    """Diffusion posterior sampling (module docstring); returns v (B, ...) decoded from the last Tweedie estimate.

    Args:
        steps: reverse-SDE steps from t_start to eps (the paper: 1000 from 1), spaced by ``spacing``
            (:func:`time_grid`).
        zeta: ζ, the step along ∇‖y − A(D(û_0))‖ (the paper's ζ' = 1.0 for most FFHQ tasks).
        t_start, u_init: the first time and a clean start (model space) noised to it (:func:`start`).
    """
    u = start(ld, rng, t_start, u_init)
    ts = time_grid(ld, steps, eps, t_start, spacing)
    for i, t in enumerate(tqdm(ts, desc="dps", disable=not progress, leave=False)):
        u = u.detach().requires_grad_(True)
        score = ld.score(u, t)
        a, s = ld.alpha_sigma(t)
        u0 = (u + s**2 * score) / a
        if i == len(ts) - 1:  # the last estimate is the answer
            break
        residual = misfit(op, ld.decode_model(u0), y).clamp_min(1e-12).sqrt()
        grad = torch.autograd.grad(residual.sum(), u)[0]  # rows are independent: one backward for all
        with torch.no_grad():
            u = reverse_step(ld, u, t, t - ts[i + 1], score, rng(*u.shape[1:])) - zeta * grad
    return ld.prior.from_model_space(u0.detach())


def consistent(ld: LatentDiffusion, op: Operator, y: Tensor, u0: Tensor, opt_steps: int, lr: float) -> Tensor:
    """ReSample's hard data consistency: min_u ‖y − A(D(denorm(u)))‖² from u0 by Adam (per row; rows are
    independent, so the summed loss gives each its own gradient)."""
    u = u0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    for _ in range(opt_steps):
        opt.zero_grad(set_to_none=True)
        misfit(op, ld.decode_model(u), y).sum().backward()
        opt.step()
    return u.detach()


def resample(ld: LatentDiffusion, op: Operator, y: Tensor, rng: Callable[..., Tensor], steps: int = 500,
             every: int = 10, start_fraction: float = 0.5, opt_steps: int = 50, lr: float = 0.01,
             gamma_scale: float = 40.0, eps: float = 1e-3, t_start: float = 1.0, spacing: str = "linear",
             u_init: Tensor | None = None, progress: bool = False) -> Tensor:
    """ReSample (module docstring); returns the decoded variables of the last (measurement-consistent) estimate.

    Args:
        steps: reverse-SDE steps from t_start to eps, spaced by ``spacing`` (:func:`time_grid`). every: steps
            between hard data consistency, applied once t < start_fraction. opt_steps, lr: the Adam optimisation
            of each consistency step.
        t_start, u_init: the first time and a clean start (model space) noised to it (:func:`start`).
    """
    u = start(ld, rng, t_start, u_init)
    ts = time_grid(ld, steps, eps, t_start, spacing)
    last = u
    for i, t in enumerate(tqdm(ts, desc="resample", disable=not progress, leave=False)):
        with torch.no_grad():
            score = ld.score(u, t)
            a, s = ld.alpha_sigma(t)
            last = (u + s**2 * score) / a
            if i == len(ts) - 1:
                break
            t_now = ts[i + 1]
            u = reverse_step(ld, u, t, t - t_now, score, rng(*u.shape[1:]))
        if t_now < start_fraction and i % every == 0 and i + 2 < len(ts):
            last = consistent(ld, op, y, last, opt_steps, lr)
            with torch.no_grad():
                a, s = ld.alpha_sigma(t_now)
                a_next = ld.alpha_sigma(ts[i + 2])[0]
                abar, abar_next = a**2, a_next**2
                gamma2 = gamma_scale * (1 - abar_next) / abar * (1 - abar / abar_next)
                mean = (gamma2 * a * last + s**2 * u) / (gamma2 + s**2)
                std = (gamma2 * s**2 / (gamma2 + s**2)) ** 0.5
                u = mean + std * rng(*u.shape[1:])
    return ld.prior.from_model_space(last.detach())
