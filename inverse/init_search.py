"""Round 0's start by search (``latent_init: search``): the best of M generator samples, judged on the measurements.

From a fixed start (z = 0, the centre of the Gaussianised latent space) the layer-0 round is a non-convex fit
that often stops in a poor basin: on the demo, CSGM's 300 steps leave in-range references G(z) with a measurement
loss far above the truth's 0 (``bench/results/init_search/``). Bora et al. (2017) restart CSGM from random z and
keep the best; drawing the restarts from the generator's own W space and judging them before any step is the
cheap form of that. Per measurement i::

    z_c ~ N(0, I),  c = 1..M                       # the generator's input, per image from its own seeded stream
    w_c = mapping(z_c);  u_c = proxy.to_z(w_c)     # one W-space sample, in the solver's Gaussianised coordinates
    loss_c = ‖A(G(u_c, noises_i)) − y_i‖² / m      # forward passes only, no gradient
    chain k starts from u_(k)                      # the K lowest losses, every row of z the same sample

The cost is M forward passes of the generator per measurement (no backward): for M = 256 on the demo about
0.25 s per image on one CPU thread, against 0.6 s for its 300 Adam steps (bench/results/init_search/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # inverse.ilo imports this module
    from inverse.ilo import Problem

# Candidates rendered per forward pass, over all measurements of the batch (memory bound on the CPU).
RENDER_BATCH = 256


@torch.no_grad()
def search_latents(problem: Problem, noises: list[Tensor], gens: list[torch.Generator], candidates: int,
                   chains: int) -> Tensor:
    """The K = ``chains`` best of ``candidates`` W-space samples per measurement, as Gaussianised latents.

    Args:
        problem: a :class:`inverse.ilo.Problem` whose ``y`` holds N·K rows (chain-major per measurement).
        noises: the round-0 noise maps, per noise layer (N·K, 1, R, R); chain 0's maps render the candidates.
        gens: one seeded CPU generator per measurement (N), the source of its candidates' z.
        candidates: M ≥ K.
        chains: K.
    Returns:
        z (N·K, num_ws, w_dim): row i·K + k is the k-th best candidate of measurement i, in every w row.
    """
    G, proxy, op = problem.G, problem.proxy, problem.operator
    if not hasattr(proxy, "to_z"):
        raise ValueError("latent_init 'search' needs a latent proxy with an inverse (to_z)")
    n = len(gens)
    device = problem.y.device
    z = torch.stack([torch.randn(candidates, G.z_dim, generator=g) for g in gens]).to(device)  # (N, M, z_dim)
    u = proxy.to_z(G.mapping(z.flatten(0, 1), None)[:, 0]).reshape(n, candidates, G.w_dim)
    y = problem.y[::chains]  # one row per measurement
    first = [t[::chains] for t in noises]
    per_pass = max(1, RENDER_BATCH // n)
    losses = []
    for c0 in range(0, candidates, per_pass):
        c = min(per_pass, candidates - c0)
        # Image-major rows (i·c + j: candidate j of measurement i), the layout operators with per-image state use.
        ws = proxy(u[:, c0:c0 + c].flatten(0, 1))[:, None].expand(-1, G.num_ws, -1)
        image = G.synthesis(ws, noises=[t.repeat_interleave(c, 0) for t in first], noise_mode="const").clamp(-1, 1)
        losses.append(op.measurement_loss(op.A(image), y.repeat_interleave(c, 0)).reshape(n, c))
    best = torch.cat(losses, 1).topk(chains, dim=1, largest=False).indices  # (N, K)
    chosen = u.gather(1, best[..., None].expand(-1, -1, G.w_dim))  # (N, K, w_dim)
    return chosen.flatten(0, 1)[:, None].expand(-1, G.num_ws, -1).contiguous()
