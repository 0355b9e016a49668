"""SGILO's prior step (DESIGN §2): what the score priors do to the variables after (or, ``grad``, inside) each
optimiser step of :func:`inverse.ilo.run_round`.

- ``pc`` (published): Δ = the hot predictor–corrector sample minus the variable (:meth:`ScorePrior.hot_delta`),
  added with the round's temperature after the Adam step, with the Langevin noise.
- ``score``: Δ = score_eps · s_θ(v, t), added the same way.
- ``grad``: the prior as a term of the objective, loss − T·log p_t(v): −T·s_θ(v, t) joins the data gradient
  before the Adam step, so Adam normalises both together; only the noise is added after it.

t is each prior's ``sampling.t_hot`` unless the run sets ``t_hot`` (optionally annealed to ``t_hot_end``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from score.prior import ScorePrior

if TYPE_CHECKING:  # the round loop's types; inverse.ilo imports this module
    from inverse.ilo import ImageRng, Variables
    from inverse.settings import SolverSettings


@dataclass
class LayerPriors:
    """The score priors of the run: ``latent`` (on z, layer 0) and one optional prior per round's layer."""

    latent: ScorePrior | None = None
    layers: dict[int, ScorePrior] = field(default_factory=dict)


def prior_time(step: int, steps: int, s: SolverSettings) -> float | None:
    """The diffusion time of the prior step at ``step`` of a round of ``steps``: None (each prior's own t_hot),
    ``t_hot``, or annealed geometrically from ``t_hot`` to ``t_hot_end`` over the round."""
    if s.t_hot is None or s.t_hot_end is None or steps <= 1:
        return s.t_hot
    return s.t_hot * (s.t_hot_end / s.t_hot) ** (step / (steps - 1))


@torch.no_grad()
def prior_deltas(v: Variables, r: int, s: SolverSettings, priors: LayerPriors,
                 t: float | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Δz and Δx of the prior step of round r (None where no prior applies), from the current iterate, with the
    priors evaluated at diffusion time t (None: each prior's ``t_hot``)."""

    def delta(prior: ScorePrior, value: Tensor) -> Tensor:
        if s.prior_step == "pc":
            return prior.hot_delta(value, t)
        if s.prior_step == "grad":  # the score itself: it joins the gradient (see add_prior_gradients)
            return prior.variable_score(value, t)
        return s.score_eps * prior.variable_score(value, t)

    dz = dx = None
    if priors.latent is not None and s.latent_temperature[r] > 0 and "l" in s.vars[r]:
        dz = delta(priors.latent, v.z)
    gen_prior = priors.layers.get(v.layer)
    if gen_prior is not None and v.x is not None and s.gen_temperature[r] > 0 and "g" in s.vars[r]:
        dx = delta(gen_prior, v.x)
    return dz, dx


@torch.no_grad()
def add_prior_gradients(v: Variables, r: int, s: SolverSettings, dz: Tensor | None, dx: Tensor | None) -> None:
    """``prior_step: grad``: the prior as a term of the objective, loss − T·log p_t(v), so its gradient
    −T·s(v, t_hot) joins the data gradient before the optimiser step (regularisation by the score, as
    regularisation-by-denoising methods do). Unlike the additive Δ, Adam then normalises data and prior together."""
    for t, d, temp in ((v.z, dz, s.latent_temperature[r]), (v.x, dx, s.gen_temperature[r])):
        if d is not None and t is not None and t.grad is not None:
            t.grad.add_(d, alpha=-temp)


@torch.no_grad()
def apply_prior_step(v: Variables, r: int, s: SolverSettings, dz: Tensor | None, dx: Tensor | None,
                     rng: ImageRng) -> None:
    """z += T_z·Δz + σ_z·ξ (whenever z is optimised, as published); x += T_x·Δx + σ_x·ξ (where x has a prior).
    With ``prior_step: grad`` the Δ went into the gradient (:func:`add_prior_gradients`): only the noise is added."""
    additive = s.prior_step != "grad"
    if "l" in s.vars[r]:
        if dz is not None and additive:
            v.z.add_(dz, alpha=s.latent_temperature[r])
        if s.latent_noise_temp > 0:
            v.z.add_(rng.randn(*v.z.shape[1:]), alpha=s.latent_noise_temp)
    if dx is not None:
        if additive:
            v.x.add_(dx, alpha=s.gen_temperature[r])
        if s.gen_noise_temp > 0:
            v.x.add_(rng.randn(*v.x.shape[1:]), alpha=s.gen_noise_temp)
