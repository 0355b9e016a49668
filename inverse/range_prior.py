"""The generator-range prior of the layer features: how far round r's features x are from the generator's own
features G_{0→r}(z) of the current latent and noise maps (``range_weight``; issue 10).

Per row i (B = N·K)::

    penalty_i = λ_r · w_i · |x_i − G_{0→r}(z_i)|² / |G_{0→r}(z_i)|²

With z optimised jointly, this is −log p(x | z) for p(x | z) = N(G_{0→r}(z), σ²I) at its MAP: the σ-smoothed
push-forward of z through the first r blocks, the distribution a score prior trained on G1(z) features models,
here exact in its mode and with no network to train. Unlike ILO's l1 ball, whose centre stays where the round
started, the anchor moves with z, so the features may follow the measurements along the generator's range.

w_i: ``m_ref / m`` (``prior_reference_measurements``, as for the score priors) and, with ``range_adaptive``, the
inverse of the row's measurement loss at the round's start: σ² is then set per image by how well the range
already explains its measurements, so a measurement the range fits (an in-range image) holds its features close,
one it does not (an image the generator cannot make) lets them go (an empirical-Bayes choice of σ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # the round loop's types; inverse.ilo imports this module
    from inverse.ilo import Problem, Variables


def range_distance(problem: Problem, v: Variables) -> Tensor:
    """|x − G_{0→r}(z)|² / |G_{0→r}(z)|² per row (B,), differentiable in x, z and the noise maps (r = v.layer ≥ 1)."""
    ws = problem.proxy(v.z)
    anchor, _ = problem.G.synthesis.run_blocks(ws, 0, v.layer, None, None, v.noises, noise_mode="const")
    scale = anchor.detach().square().flatten(1).sum(1).clamp_min(1e-12)
    return (v.x - anchor).square().flatten(1).sum(1) / scale


@torch.no_grad()
def range_row_weights(problem: Problem, image: Tensor, m_weight: Tensor | None, adaptive: bool) -> Tensor | None:
    """w (B,) of a round that starts at ``image`` (B, C, H, W): m_ref/m, times 1/loss at the start when adaptive."""
    weight = m_weight
    if adaptive:
        op = problem.operator
        start = op.measurement_loss(op.A(image), problem.y).clamp_min(1e-8)
        weight = 1.0 / start if weight is None else weight / start
    return weight
