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


def time_grid(n: int, eps: float, device: torch.device) -> Tensor:
    """n times from 1 down to eps (inclusive)."""
    return torch.linspace(1.0, eps, n, device=device)


def annealed_langevin(ld: LatentDiffusion, op: Operator, y: Tensor, rng: Callable[..., Tensor], sigma_y: float = 0.0,
                      levels: int = 100, steps_per_level: int = 3, step_size: float = 2e-5, eps: float = 1e-3,
                      u_init: Tensor | None = None, progress: bool = False) -> Tensor:
    """Annealed Langevin dynamics with the likelihood score (module docstring); returns v (B, ...).

    Args:
        ld: prior + decoder. op, y: operator and measurements (B, ...). sigma_y: measurement noise std.
        rng: ``rng(*shape) -> (B, *shape)`` standard normal draws.
        levels, steps_per_level: the noise levels t_i (from 1 to eps) and Langevin steps per level.
        step_size: ε, the step at the last level (η_i = ε σ_i² / σ_L²).
        u_init: start (model space); default: a draw of the SDE's prior N(0, I).
    """
    u = rng(*ld.prior.image_shape) if u_init is None else u_init.clone()
    ts = time_grid(levels, eps, u.device).tolist()
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
        zeta: float = 1.0, eps: float = 1e-3, progress: bool = False) -> Tensor:
    """Diffusion posterior sampling (module docstring); returns v (B, ...) decoded from the last Tweedie estimate.

    Args:
        steps: reverse-SDE steps from t = 1 to eps (the paper: 1000).
        zeta: ζ, the step along ∇‖y − A(D(û_0))‖ (the paper's ζ' = 1.0 for most FFHQ tasks).
    """
    u = rng(*ld.prior.image_shape)
    ts = time_grid(steps, eps, u.device).tolist()
    dt = (1.0 - eps) / max(steps - 1, 1)
    for t in tqdm(ts, desc="dps", disable=not progress, leave=False):
        u = u.detach().requires_grad_(True)
        score = ld.score(u, t)
        a, s = ld.alpha_sigma(t)
        u0 = (u + s**2 * score) / a
        residual = misfit(op, ld.decode_model(u0), y).clamp_min(1e-12).sqrt()
        grad = torch.autograd.grad(residual.sum(), u)[0]  # rows are independent: one backward for all
        with torch.no_grad():
            u = reverse_step(ld, u, t, dt, score, rng(*u.shape[1:])) - zeta * grad
            last = u0
    return ld.prior.from_model_space(last.detach())


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
             gamma_scale: float = 40.0, eps: float = 1e-3, progress: bool = False) -> Tensor:
    """ReSample (module docstring); returns the decoded variables of the last (measurement-consistent) estimate.

    Args:
        steps: reverse-SDE steps from t = 1 to eps. every: steps between hard data consistency, applied once
            t < start_fraction. opt_steps, lr: the Adam optimisation of each consistency step.
    """
    u = rng(*ld.prior.image_shape)
    ts = time_grid(steps, eps, u.device).tolist()
    dt = (1.0 - eps) / max(steps - 1, 1)
    last = u
    for i, t in enumerate(tqdm(ts, desc="resample", disable=not progress, leave=False)):
        with torch.no_grad():
            score = ld.score(u, t)
            a, s = ld.alpha_sigma(t)
            last = (u + s**2 * score) / a
            u = reverse_step(ld, u, t, dt, score, rng(*u.shape[1:]))
        t_now = max(t - dt, eps)
        if t_now < start_fraction and i % every == 0 and t_now > eps:
            last = consistent(ld, op, y, last, opt_steps, lr)
            with torch.no_grad():
                a, s = ld.alpha_sigma(t_now)
                a_next = ld.alpha_sigma(max(t_now - dt, eps))[0]
                abar, abar_next = a**2, a_next**2
                gamma2 = gamma_scale * (1 - abar_next) / abar * (1 - abar / abar_next)
                mean = (gamma2 * a * last + s**2 * u) / (gamma2 + s**2)
                std = (gamma2 * s**2 / (gamma2 + s**2)) ** 0.5
                u = mean + std * rng(*u.shape[1:])
    return ld.prior.from_model_space(last.detach())
