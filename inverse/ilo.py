"""The round loop of SGILO (DESIGN §2): CSGM, ILO and SGILO as configurations of one layer-wise solver.

Round r optimises at layer r of the generator G = G2 ∘ G1 (layer 0 = the Gaussianised latent z; layer r ≥ 1 =
the input of block r). Per step::

    image  = clamp(G_r(z, noises, x))                      # forward from layer r
    loss_i = mse[r]·A-loss + pe[r]·LPIPS + geocross·GeoCross(z[:, 2r:])   # one value per chain
             + range_weight[r]·w·|x − G_{0→r}(z)|²/|G_{0→r}(z)|²   # the range prior (off unless set)
    Δ      = prior(z), prior(x)                            # at the same iterate as the gradient
    Adam step on Σ_i loss_i                                # per-chain losses are independent
    z += latent_temperature[r]·Δz + latent_noise_temp·ξ    # SGILO's prior step (Langevin)
    x += gen_temperature[r]·Δx + gen_noise_temp·ξ
    project: spherical (z rows, noise maps keep their round-start norms), l1 ball of radius[r] around x_0

After the round, the layer-(r+1) state is block r applied to the current state. The Δ of a prior is either the
published hot predictor–corrector step (``prior_step='pc'``: :meth:`ScorePrior.hot_delta`) or one score
evaluation (``prior_step='score'``: Δ = score_eps · s_θ(v, t_hot)); ``prior_step='grad'`` instead adds
−temperature · s_θ(v, t_hot) to the gradient before the Adam step (the prior as a term of the objective).
The prior step lives in :mod:`inverse.prior_step`.

Batch layout: ``N`` measurements × ``K`` chains = ``B`` rows, row ``i·K + k`` is chain k of measurement i. Every
random draw (initial latent and noise maps, the Langevin noise ξ) comes from a per-measurement generator
seeded with ``(seed, image id)``, so an image's result does not depend on which batch or process solved it
(the ``pc`` sampler's internal draws and step sizes are the one exception: they come from the global RNG, seeded
here from the batch's first image, and from batch statistics, as published).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inverse.holdout import holdout_operator
from inverse.init_search import search_latents
from inverse.losses import geocross
from inverse.operators import Operator
from inverse.optim import round_optimizer
from inverse.prior_step import LayerPriors, add_prior_gradients, apply_prior_step, prior_deltas, prior_time
from inverse.range_prior import range_distance, range_row_weights
from inverse.settings import SolverSettings, learning_rate
from stylegan.networks import Generator
from stylegan.proxy import MappingProxy

# ---------------------------------------------------------------------------------------------------------------------
# State.


@dataclass
class Variables:
    """The solver's state at layer ``layer`` for B = N·K rows.

    z: (B, num_ws, w_dim) Gaussianised latent. noises: per noise layer (B, 1, R, R), execution order.
    x: (B, C_layer, H, W) layer features (None at layer 0). img: (B, img_channels, H, W) skip-branch image at
    the layer (None at layer 0 or when dropped); held fixed during a round.
    """

    z: Tensor
    noises: list[Tensor]
    layer: int = 0
    x: Tensor | None = None
    img: Tensor | None = None

    def tensors(self) -> list[Tensor]:
        return [self.z, *self.noises, *([self.x] if self.x is not None else [])]


def image_seed(seed: int, image_id: int, stream: int = 0) -> int:
    """Seed of one random stream of one image (0: the solver's draws; solve_inverse.py uses 1, 2 for references
    and measurement noise). Large odd multipliers keep nearby ids and streams apart."""
    return (int(seed) * 1_000_003 + int(image_id) * 7919 + int(stream)) % 2**63


def image_generator(seed: int, image_id: int, stream: int = 0) -> torch.Generator:
    """A CPU generator per (run seed, image, purpose): results do not depend on batching or sharding."""
    return torch.Generator().manual_seed(image_seed(seed, image_id, stream))


class ImageRng:
    """One seeded CPU generator per measurement; draws (B, ...) tensors with each image's K rows from its own."""

    def __init__(self, seed: int, image_ids: Sequence[int], chains: int, device: torch.device):
        self.gens = [image_generator(seed, i) for i in image_ids]
        self.chains = chains
        self.device = device

    def randn(self, *shape: int) -> Tensor:
        """(N·K, *shape) standard normal."""
        out = torch.empty((len(self.gens) * self.chains, *shape))
        for i, g in enumerate(self.gens):
            torch.randn((self.chains, *shape), generator=g, out=out[i * self.chains:(i + 1) * self.chains])
        return out.to(self.device)


def init_variables(G: Generator, n_images: int, settings: SolverSettings, rng: ImageRng,
                   problem: Problem | None = None) -> Variables:
    """Round-0 state: z by ``latent_init``, noise maps by ``noise_init`` (one set per chain). ``latent_init:
    search`` judges candidates on ``problem``'s measurements (N·K rows) and draws them from the rng's streams."""
    b = n_images * settings.chains
    shape = (G.num_ws, G.w_dim)
    device = rng.device
    if settings.latent_init == "randn":
        z = rng.randn(*shape)
    else:
        z = torch.full((b, *shape), 1.0 if settings.latent_init == "ones" else 0.0, device=device)
    syn = G.synthesis
    if settings.noise_init == "const":
        noises = syn.make_noises(b, mode="const", device=device)
    else:
        noises = [rng.randn(*s[1:]) for s in syn.noise_shapes()]
    if settings.latent_init == "search":
        if problem is None:
            raise ValueError("latent_init 'search' needs the problem (its measurements judge the candidates)")
        z = search_latents(problem, noises, rng.gens, settings.init_candidates, settings.chains)
    return Variables(z=z, noises=noises)


# ---------------------------------------------------------------------------------------------------------------------
# One step: render, loss, prior step, projections.


@dataclass
class Problem:
    """What is being solved: generator, proxy, operator, measurements y (B rows), an optional perceptual loss and
    the GeoCross regulariser (callables returning (B,)), optional references (B, C, H, W) for live PSNR."""

    G: Generator
    proxy: MappingProxy
    operator: Operator
    y: Tensor
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None
    geocross: Callable[[Tensor], Tensor] | None = geocross
    reference: Tensor | None = None
    perceptual_target: Tensor | None = None  # RGB view of y for LPIPS; built once per solve (see solve)


def render(problem: Problem, v: Variables) -> Tensor:
    """G_r(z, noises, x) clamped to [-1, 1]: (B, C, R, R)."""
    ws = problem.proxy(v.z)
    image = problem.G.synthesis.forward_from(ws, v.layer, v.x, v.img, noises=v.noises, noise_mode="const")
    return image.clamp(-1, 1)


def objective(problem: Problem, image: Tensor, v: Variables, r: int, s: SolverSettings,
              range_weights: Tensor | None = None) -> Tensor:
    """Per-row loss (B,) of round r; ``range_weights`` (B,) are the rows' weights w of the range prior."""
    op = problem.operator
    ax = op.A(image)  # applied once, shared by the data term and the perceptual term
    loss = op.measurement_loss(ax, problem.y)
    if s.mse[r] != 1.0:  # (x·1 is x: the multiply and its backward node are skipped, same values)
        loss = s.mse[r] * loss
    if s.pe[r] > 0 and problem.perceptual is not None:
        # LPIPS compares what the measurements show (as images), like the published solver. The target is one
        # tensor for the whole solve, so the perceptual loss can keep its features instead of recomputing them.
        target = problem.perceptual_target if problem.perceptual_target is not None else op.rgb_view(problem.y)
        loss = loss + s.pe[r] * problem.perceptual(op.rgb_view(ax), target)
    if s.geocross > 0 and problem.geocross is not None and v.z.shape[1] - 2 * r > 1:
        loss = loss + s.geocross * problem.geocross(v.z[:, 2 * r:])
    if s.range_weight[r] > 0 and v.x is not None:
        distance = range_distance(problem, v)
        loss = loss + s.range_weight[r] * (distance if range_weights is None else distance * range_weights)
    return loss


def row_norms(t: Tensor) -> Tensor:
    """Norm over the dims after the first two, kept for broadcasting: z rows (B, num_ws, 1), noises (B, 1, 1, 1)."""
    return (t.square().sum(tuple(range(2, t.ndim)), keepdim=True) + 1e-9).sqrt()


@torch.no_grad()
def project_spherical(tensors: Sequence[Tensor], radii: Sequence[Tensor]) -> None:
    """Rescale each row of each tensor back to its recorded norm: ``t *= radii / row_norms(t)``, computed with one
    multi-tensor kernel per op for all tensors (the same values as :func:`row_norms` tensor by tensor)."""
    if not tensors:
        return
    norms = [sq.sum(tuple(range(2, sq.ndim)), keepdim=True) for sq in torch._foreach_mul(tensors, tensors)]
    torch._foreach_add_(norms, 1e-9)
    torch._foreach_sqrt_(norms)
    torch._foreach_mul_(tensors, torch._foreach_div(list(radii), norms))


def project_l1_ball(delta: Tensor, radius: float) -> Tensor:
    """Euclidean projection of each row of ``delta`` (B, ...) onto the l1 ball of ``radius`` (Duchi et al. 2008)."""
    flat = delta.reshape(delta.shape[0], -1)
    inside = flat.abs().sum(1) <= radius
    if bool(inside.all()):
        return delta
    mu = flat.abs().sort(dim=1, descending=True).values
    cumsum = mu.cumsum(1)
    k = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    rho = ((mu * k) > (cumsum - radius)).to(flat.dtype).mul(k).argmax(1)  # last index where the condition holds
    theta = (cumsum.gather(1, rho[:, None]) - radius) / (rho[:, None] + 1).to(flat.dtype)
    projected = flat.sign() * (flat.abs() - theta).clamp_min(0)
    return torch.where(inside[:, None], flat, projected).reshape(delta.shape)


@dataclass
class Projections:
    """What the projections of one round hold on to: round-start norms and the l1-ball centre.

    Only the round's trainable tensors are projected: the others do not move, so their projection is the identity.
    """

    spherical: list[tuple[Tensor, Tensor]]  # (tensor, its round-start row norms)
    x_center: Tensor | None
    x_radius: float | None

    @classmethod
    @torch.no_grad()
    def start(cls, v: Variables, r: int, s: SolverSettings, params: Sequence[Tensor]) -> Projections:
        ids = {id(t) for t in params}
        spherical = []
        if s.project_latent and id(v.z) in ids:
            spherical.append((v.z, row_norms(v.z)))
        if s.project_noises:
            spherical += [(n, row_norms(n)) for n in v.noises if id(n) in ids]
        radius = s.radius[r]
        use_ball = v.x is not None and id(v.x) in ids and radius is not None and radius > 0
        return cls(spherical, v.x.detach().clone() if use_ball else None, float(radius) if use_ball else None)

    @torch.no_grad()
    def apply(self, v: Variables) -> None:
        project_spherical([t for t, _ in self.spherical], [radii for _, radii in self.spherical])
        if self.x_center is not None:
            v.x.copy_(self.x_center + project_l1_ball(v.x - self.x_center, self.x_radius))


# ---------------------------------------------------------------------------------------------------------------------
# Rounds.


def trainable(v: Variables, r: int, s: SolverSettings) -> list[Tensor]:
    """The tensors round r optimises: z ('l'), the first noises_lookahead + 2r noise maps ('n'), x ('g')."""
    out = []
    if "l" in s.vars[r]:
        out.append(v.z)
    if "n" in s.vars[r]:
        out += v.noises[: s.noises_lookahead + 2 * r]
    if "g" in s.vars[r] and v.x is not None:
        out.append(v.x)
    return out


@torch.no_grad()
def advance_layer(problem: Problem, v: Variables, s: SolverSettings) -> None:
    """Layer r -> r+1: run block r on the current state; the result becomes the next round's features."""
    syn = problem.G.synthesis
    ws = problem.proxy(v.z)
    x, img = syn.run_blocks(ws, v.layer, v.layer + 1, v.x, v.img, v.noises, noise_mode="const")
    v.x = x.detach().clone()
    v.img = img.detach().clone() if s.carry_skip else None
    v.layer += 1


@dataclass
class RoundLog:
    """What one round did: its layer, the summed loss per step, the wall time, and per step and row (B = N·K)
    the loss and, when references are known, the PSNR (both (steps, B), on the CPU; NaN for failed rows)."""

    layer: int
    losses: list[float]
    seconds: float
    row_losses: Tensor | None = None
    row_psnrs: Tensor | None = None


def row_psnr(image: Tensor, reference: Tensor) -> Tensor:
    """PSNR (dB) per row of images in [-1, 1], (B,); no gradient."""
    mse = (image.detach() - reference).square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def prior_row_weights(problem: Problem, s: SolverSettings) -> Tensor | None:
    """m_ref / m per row (B,), m the row's number of measurements (``prior_reference_measurements``), or None."""
    if s.prior_reference_measurements is None:
        return None
    return s.prior_reference_measurements / problem.operator.measurement_count(problem.y)


def run_round(problem: Problem, v: Variables, r: int, s: SolverSettings, priors: LayerPriors, rng: ImageRng,
              failed: Tensor, progress: bool = True) -> RoundLog:
    """Optimise round r in place; rows that turn NaN/Inf are marked in ``failed`` (B,) and frozen."""
    for t in v.tensors():
        t.requires_grad_(False)
    params = trainable(v, r, s)  # also all that the prior step moves
    for t in params:
        t.requires_grad_(True)
    optimizer = round_optimizer(params, s.optimizer, s.lr[r])
    projections = Projections.start(v, r, s, params)
    frozen = [t.detach().clone() for t in params]  # where failed rows stay
    weight = prior_row_weights(problem, s)
    range_weights = None
    if s.range_weight[r] > 0 and v.x is not None:  # the range prior's row weights, from where the round starts
        range_weights = range_row_weights(problem, render(problem, v), weight, s.range_adaptive)
    losses: list[float] = []
    row_losses: list[Tensor] = []
    row_psnrs: list[Tensor] = []
    start = time.perf_counter()
    # Whether any row has failed, kept as a Python bool. NaN/Inf checks take the sum over all rows first: a
    # finite sum means every row is finite, and only a non-finite one (a NaN/Inf, or an overflow, which the row
    # check then clears) pays for the check row by row.
    any_failed = bool(failed.any())
    bar = tqdm(range(s.steps[r]), desc=f"round {r} (layer {v.layer})", disable=not progress, leave=False)
    for step in bar:
        image = render(problem, v)
        loss = objective(problem, image, v, r, s, range_weights)
        dz, dx = prior_deltas(v, r, s, priors, prior_time(step, s.steps[r], s))
        if weight is not None:
            dz, dx = (None if d is None else d * weight.reshape(-1, *[1] * (d.dim() - 1)) for d in (dz, dx))

        # Failed rows get no gradient (and no NaN in the sum).
        total = (loss.masked_fill(failed, 0.0) if any_failed else loss).sum()
        total_value = float(total.detach())
        if not math.isfinite(total_value):
            failed |= ~torch.isfinite(loss.detach())
            any_failed = bool(failed.any())
            if any_failed:
                total = loss.masked_fill(failed, 0.0).sum()
                total_value = float(total.detach())
        if optimizer is not None:
            if s.lr_schedule[r] != "constant":  # a constant rate stays as the optimiser was built with
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, s.steps[r], s.lr[r], s.lr_schedule[r])
            for t in params:  # optimizer.zero_grad(set_to_none=True) without its per-call bookkeeping (0.1 ms)
                t.grad = None
            total.backward()
            if s.prior_step == "grad":
                add_prior_gradients(v, r, s, dz, dx)
            optimizer.step()
        apply_prior_step(v, r, s, dz, dx, rng)
        projections.apply(v)

        with torch.no_grad():
            if params:  # one sum per row over all tensors: non-finite iff the row holds a NaN/Inf (or overflows)
                rows = torch.cat([t.flatten(1) for t in params], 1).sum(1)
                if not math.isfinite(float(rows.sum())):
                    failed |= ~torch.isfinite(rows)
                    any_failed = bool(failed.any())
            if any_failed:
                for t, saved in zip(params, frozen):
                    t[failed] = saved[failed]
        all_failed = any_failed and bool(failed.all())
        losses.append(total_value if not all_failed else float("nan"))
        row_losses.append(loss.detach().masked_fill(failed, float("nan")) if any_failed else loss.detach())
        if problem.reference is not None:
            psnr = row_psnr(image, problem.reference)
            row_psnrs.append(psnr.masked_fill(failed, float("nan")) if any_failed else psnr)
        if progress:
            post = {"loss": f"{losses[-1]:.4g}"}
            if row_psnrs:
                alive = row_psnrs[-1][~failed]
                post["psnr"] = f"{float(alive.mean()) if alive.numel() else float('nan'):.2f}"
            bar.set_postfix(post, refresh=False)
    bar.close()
    for t in v.tensors():
        t.requires_grad_(False)
    stacked = [torch.stack(x).cpu() if x else None for x in (row_losses, row_psnrs)]
    return RoundLog(layer=v.layer, losses=losses, seconds=time.perf_counter() - start, row_losses=stacked[0],
                    row_psnrs=stacked[1])


@dataclass
class Solution:
    """What :func:`solve` returns, for N measurements × K chains.

    rounds: per round, the image (N, K, C, H, W) at its end. final: the last round's images (N, K, C, H, W).
    failed: (N,) measurements with a NaN/Inf chain. variables: the final state (B = N·K rows). layer_states:
    per round r ≥ 1, the optimised features x of layer r (B, ...). logs: per-round losses and seconds.
    """

    rounds: list[Tensor]
    final: Tensor
    failed: Tensor
    variables: Variables
    layer_states: dict[int, Tensor]
    logs: list[RoundLog]
    seconds: float

    @property
    def mean(self) -> Tensor:
        """Posterior mean (N, C, H, W) over the chains."""
        return self.final.mean(1)

    @property
    def std(self) -> Tensor:
        """Per-pixel posterior standard deviation (N, C, H, W) over the chains (zeros for K = 1)."""
        k = self.final.shape[1]
        return self.final.std(1) if k > 1 else torch.zeros_like(self.final[:, 0])


def solve(problem: Problem, settings: SolverSettings, priors: LayerPriors | None = None,
          image_ids: Sequence[int] | None = None, seed: int = 0, progress: bool = True) -> Solution:
    """Solve N inverse problems at once (``problem.y`` holds N measurements; chains are added here).

    Args:
        problem: generator, operator, measurements (N, ...), optional references (N, C, H, W).
        settings: see :class:`SolverSettings`.
        priors: score priors (None: no prior step anywhere, i.e. ILO/CSGM).
        image_ids: ids that seed each measurement's random streams (default 0..N-1).
        seed: run seed.
    """
    priors = priors or LayerPriors()
    s, G = settings, problem.G
    settings.check(G.synthesis.num_blocks)
    n, k = problem.y.shape[0], settings.chains
    device = problem.y.device
    ids = list(image_ids) if image_ids is not None else list(range(n))
    rng = ImageRng(seed, ids, k, device)
    # Chains: each measurement (and reference) repeated K times, row i·K + k.
    batch = replace(problem, y=problem.y.repeat_interleave(k, 0),
                    reference=None if problem.reference is None else problem.reference.repeat_interleave(k, 0))
    if batch.perceptual is not None:
        batch.perceptual_target = batch.operator.rgb_view(batch.y)
    holdout = None
    if s.holdout_fraction > 0:  # a share of each measurement left out of the fit, to choose the round by
        holdout = holdout_operator(problem.operator, problem.y, s.holdout_fraction,
                                   [image_generator(seed, i, stream=5) for i in ids])
        batch = replace(batch, operator=holdout)

    v = init_variables(G, n, s, rng, batch)
    failed = torch.zeros(n * k, dtype=torch.bool, device=device)
    rounds, logs, layer_states, checks = [], [], {}, []
    start = time.perf_counter()
    # The 'pc' sampler draws from the global RNG: seed it from the batch, without disturbing the caller's stream.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(image_seed(seed, ids[0], stream=3))
        for r in range(s.rounds):
            if r > 0:
                advance_layer(batch, v, s)  # x of layer r = block r-1 on the state the previous round ended in
            logs.append(run_round(batch, v, r, s, priors, rng, failed, progress))
            if v.x is not None:
                layer_states[v.layer] = v.x.detach().clone()
            with torch.no_grad():
                image = render(batch, v)
                rounds.append(image.reshape(n, k, *image.shape[1:]))
                if holdout is not None:
                    checks.append(holdout.check_error(holdout.A(image), batch.y))
    final = rounds[-1]
    if holdout is not None:  # per chain, the round whose image best predicts the held-out measurements
        best = torch.stack(checks).nan_to_num(float("inf")).argmin(0).reshape(n, k)
        final = torch.stack(rounds)[best, torch.arange(n)[:, None], torch.arange(k)[None, :]]
    return Solution(rounds=rounds, final=final, failed=failed.reshape(n, k).any(1), variables=v,
                    layer_states=layer_states, logs=logs, seconds=time.perf_counter() - start)
