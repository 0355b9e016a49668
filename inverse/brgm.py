"""BRGM (Marinescu, Moyer & Golland 2020, "Bayesian image reconstruction using deep generative models"): MAP in
W+ (the w rows themselves, not the Gaussianised z of ILO/SGILO) under a Gaussian prior on each row and a prior
that keeps the rows colinear, and its variational form (a Gaussian posterior over W+).

The energy of ws (num_ws rows w_i of w_dim), with the measurement y and the generator's noise maps held fixed::

    E(ws) = λ_pixel·‖A(G(ws)) − y‖²/m + λ_percept·LPIPS(A(G(ws)), y) + λ_w·L_w + λ_colin·L_colin
    L_w     = mean_{i,c} ((w_ic − μ_c) / σ)²          μ, σ: mapping-network outputs (see :class:`WStats`)
    L_colin = Σ_{i,j} (1 − cos(w_i, w_j))             = num_ws² − Σ_{i,j} cos(w_i, w_j)

The paper writes the colinearity prior as exp(κ Σ cos(w_i, w_j)); up to a constant, −log of it is κ·L_colin.
The weights are those of BRGM's PyTorch code (``bayesmap_recon.py``), converted to this harness' units:

- λ_pixel = 0.001 on the mean squared error of images in [0, 255] = 0.001 · 127.5² = 16.26 on images in [−1, 1].
  (Their inpainting operator zero-fills the hole and averages over all pixels; ours averages over the observed
  entries, so for inpainting their effective weight is 16.26 times the observed fraction.)
- λ_percept = 1e7 on the *mean* of squared differences of NVIDIA's VGG16 LPIPS features at 256 px, whose *sum*
  is the LPIPS distance: 7 995 392 features at 256 px, so 1e7 / 7 995 392 = 1.25 on LPIPS (VGG, 256 px: the
  harness' ``lpips`` settings).
- λ_w = 100 on the mean over rows and coordinates; σ is their scalar "w_std_scalar", √(Σ_c Var[w_c]), from
  10 000 mapped samples (numpy seed 123 there; a torch seed here).
- λ_colin = 0.1 ("tried many values, this is a good one for in-painting"; their code uses 1 for super-resolution
  by more than 16x).
- Adam, lr 0.1, default betas; 501 steps (their ``--num-steps`` default); ws start at μ in every row; the noise
  maps are drawn once and not optimised.

Variational form (their ``vi_recon.py``): q(ws) = N(m, diag(s²)) with s = softplus(ρ), m starting at μ and s at
the per-coordinate std of w. Each step averages E over ``samples`` reparameterised draws m + s·ε (the first with
ε = 0), the colinearity term on m, plus their inverse-gamma hyperprior −mean log IG(s/2; α = 0.1, β = 0.95).
Their "log q" term, −½·mean(((w − m)/s)²) = −½·mean(ε²), does not depend on m or s and adds no gradient; the
Gaussian entropy mean(log s) can be added with weight ``entropy`` (0 by default, as their code behaves). The K
chains of a measurement are K draws from its fitted q (K = 1: the mean m).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from inverse.ilo import ImageRng, Problem, RoundLog, Solution, Variables, row_psnr

# Their images are in [0, 255]; ours in [-1, 1]: squared errors scale by 127.5².
_PIXEL_SCALE = 127.5**2
_LPIPS_FEATURES_256 = 64 * 256**2 + 128 * 128**2 + 256 * 64**2 + 512 * 32**2 + 512 * 16**2  # VGG16 relu*_* at 256 px


@dataclass
class BrgmSettings:
    """BRGM's settings; defaults from BRGM's code (module docstring), in this harness' units.

    steps: Adam steps. lr: Adam learning rate. pixel, percept, w, colin: λ_pixel, λ_percept, λ_w, λ_colin.
    variational: fit q(ws) instead of the MAP point. samples: draws of q per step (the first is its mean).
    sigma_prior: (α, β) of the inverse-gamma hyperprior on s/2 (variational). entropy: weight of mean(log s).
    w_samples, w_seed: mapped samples for μ and σ.
    """

    steps: int = 501
    lr: float = 0.1
    pixel: float = 0.001 * _PIXEL_SCALE
    percept: float = 1e7 / _LPIPS_FEATURES_256
    w: float = 100.0
    colin: float = 0.1
    variational: bool = False
    samples: int = 6
    sigma_prior: tuple[float, float] = (0.1, 0.95)
    entropy: float = 0.0
    w_samples: int = 10_000
    w_seed: int = 123

    def check(self) -> None:
        """Raise ValueError (one line) for values that cannot work."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"brgm.steps must be an integer >= 0, got {self.steps!r}")
        for name in ("lr", "pixel", "percept", "w", "colin", "entropy"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"brgm.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.variational, bool):
            raise ValueError(f"brgm.variational must be true or false, got {self.variational!r}")
        for name in ("samples", "w_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "samples" else 2):
                raise ValueError(f"brgm.{name} must be an integer >= {1 if name == 'samples' else 2}, got {v!r}")
        prior = self.sigma_prior
        if not (isinstance(prior, (list, tuple)) and len(prior) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in prior)):
            raise ValueError(f"brgm.sigma_prior must be [alpha, beta] with both > 0, got {prior!r}")


@dataclass
class WStats:
    """Moments of the mapping network's outputs w: ``mean`` (w_dim,), ``std`` per coordinate (w_dim,) and
    ``scalar`` = √(Σ_c Var[w_c]) (BRGM's σ of L_w)."""

    mean: Tensor
    std: Tensor
    scalar: Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, mapping: torch.nn.Module, samples: int = 10_000, seed: int = 123,
           device: torch.device | str = "cpu") -> WStats:
        z = torch.randn([samples, mapping.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
        w = mapping(z, None)[:, 0].double()
        mean = w.mean(0)
        var = (w - mean).square().mean(0)  # numpy's default (population) variance, as in their code
        return cls(mean.float(), var.sqrt().float(), var.sum().sqrt().float())


def w_prior(ws: Tensor, stats: WStats) -> Tensor:
    """L_w per row: mean over rows and coordinates of ((w − μ) / σ)². ws (B, num_ws, w_dim) -> (B,)."""
    return ((ws - stats.mean) / stats.scalar).square().mean((1, 2))


def colinearity(ws: Tensor) -> Tensor:
    """L_colin per row: Σ over ordered pairs (i, j) of 1 − cos(w_i, w_j). ws (B, num_ws, w_dim) -> (B,)."""
    unit = F.normalize(ws, dim=2)
    return (1 - unit @ unit.transpose(1, 2)).sum((1, 2))


def inverse_gamma_nll(x: Tensor, alpha: float, beta: float) -> Tensor:
    """−log IG(x; α, β) elementwise: (α + 1)·log x + β / x − α·log β + log Γ(α)."""
    return (alpha + 1) * x.log() + beta / x - alpha * math.log(beta) + math.lgamma(alpha)


def render(problem: Problem, ws: Tensor, noises: Sequence[Tensor]) -> Tensor:
    """G.synthesis(ws) with fixed noise maps, unclamped (as BRGM optimises it): (B, C, R, R)."""
    return problem.G.synthesis.forward_from(ws, 0, None, None, noises=list(noises), noise_mode="const")


def data_terms(problem: Problem, image: Tensor, y: Tensor, target: Tensor | None, s: BrgmSettings) -> Tensor:
    """λ_pixel·(mean squared error in measurement space) + λ_percept·LPIPS(A(x), y), per row (B,)."""
    op = problem.operator
    ax = op.A(image)
    loss = s.pixel * op.measurement_loss(ax, y)
    if s.percept > 0 and problem.perceptual is not None and target is not None:
        loss = loss + s.percept * problem.perceptual(op.rgb_view(ax), target)
    return loss


@dataclass
class _Fit:
    """What one optimisation leaves: the final ws (B, num_ws, w_dim), per-step row losses and PSNRs, failures."""

    ws: Tensor
    spread: Tensor | None
    log: RoundLog
    failed: Tensor


def _optimise(problem: Problem, y: Tensor, reference: Tensor | None, noises: list[Tensor], stats: WStats,
              s: BrgmSettings, rng: ImageRng, progress: bool) -> _Fit:
    """Adam on the MAP energy (or the variational objective) for B = y.shape[0] rows (``rng`` draws the
    variational ε, one row per measurement)."""
    b, num_ws = y.shape[0], problem.G.num_ws
    mean = stats.mean.expand(b, num_ws, -1).clone().requires_grad_(True)
    params = [mean]
    if s.variational:
        s0 = stats.std.expand(b, num_ws, -1).clamp_min(1e-6)
        rho = torch.log(torch.expm1(s0)).clone().requires_grad_(True)  # softplus⁻¹ of the initial std
        params.append(rho)
        draws = s.samples
        noises = [n.repeat_interleave(draws, 0) for n in noises]
        y_rep = y.repeat_interleave(draws, 0)
    else:
        draws, y_rep = 1, y
    target = problem.operator.rgb_view(y_rep) if problem.perceptual is not None and s.percept > 0 else None
    optimizer = torch.optim.Adam(params, lr=s.lr)
    failed = torch.zeros(b, dtype=torch.bool, device=y.device)
    losses, row_losses, row_psnrs = [], [], []
    start = time.perf_counter()
    for _ in tqdm(range(s.steps), desc="brgm" + (" (variational)" if s.variational else ""), disable=not progress,
                  leave=False):
        if s.variational:
            sigma = F.softplus(rho)
            eps = rng.randn(draws - 1, *mean.shape[1:])  # (B, draws - 1, num_ws, w_dim)
            eps = torch.cat([torch.zeros_like(eps[:, :1]), eps], 1)  # draw 0 is the mean
            ws = (mean[:, None] + sigma[:, None] * eps).flatten(0, 1)
        else:
            ws = mean
        image = render(problem, ws, noises)
        energy = data_terms(problem, image, y_rep, target, s) + s.w * w_prior(ws, stats)
        energy = energy.reshape(b, draws).mean(1) + s.colin * colinearity(mean)
        if s.variational:
            alpha, beta = s.sigma_prior
            energy = energy + inverse_gamma_nll(sigma / 2, alpha, beta).mean((1, 2))
            energy = energy - s.entropy * sigma.log().mean((1, 2))
        failed |= ~torch.isfinite(energy.detach())
        total = energy.masked_fill(failed, 0.0).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        for p in params:  # failed rows stay where they were
            if p.grad is not None:
                p.grad[failed] = 0
        optimizer.step()
        losses.append(float(total.detach()))
        row_losses.append(energy.detach().masked_fill(failed, float("nan")))
        if reference is not None:
            shown = image.detach().reshape(b, draws, *image.shape[1:])[:, 0].clamp(-1, 1)
            row_psnrs.append(row_psnr(shown, reference).masked_fill(failed, float("nan")))
    spread = F.softplus(rho).detach() if s.variational else None
    log = RoundLog(layer=0, losses=losses, seconds=time.perf_counter() - start,
                   row_losses=torch.stack(row_losses).cpu() if row_losses else None,
                   row_psnrs=torch.stack(row_psnrs).cpu() if row_psnrs else None)
    return _Fit(mean.detach(), spread, log, failed)


def solve_brgm(problem: Problem, s: BrgmSettings, stats: WStats, image_ids: Sequence[int], seed: int,
               chains: int, progress: bool = True) -> Solution:
    """BRGM for N measurements (``problem.y``) with K = ``chains`` rows each (MAP: K independent fits with their
    own noise maps; variational: K draws from each measurement's q). ``Solution.rounds`` holds one stage."""
    start = time.perf_counter()
    n, k = problem.y.shape[0], chains
    G = problem.G
    per_fit = 1 if s.variational else k  # rows optimised per measurement
    rng = ImageRng(seed, image_ids, per_fit, problem.y.device)
    noises = [rng.randn(*shape[1:]) for shape in G.synthesis.noise_shapes()]
    y = problem.y.repeat_interleave(per_fit, 0)
    ref = None if problem.reference is None else problem.reference.repeat_interleave(per_fit, 0)
    fit = _optimise(problem, y, ref, noises, stats, s, rng, progress)
    ws, failed = fit.ws, fit.failed
    if s.variational and k > 1:
        rng.chains = k  # K draws per measurement from its own stream
        eps = rng.randn(*ws.shape[1:])
        ws = ws.repeat_interleave(k, 0) + fit.spread.repeat_interleave(k, 0) * eps
        noises = [m.repeat_interleave(k, 0) for m in noises]
        failed = failed.repeat_interleave(k, 0)
        for name in ("row_losses", "row_psnrs"):  # the K draws of a measurement share its fit's curves
            curve = getattr(fit.log, name)
            if curve is not None:
                setattr(fit.log, name, curve.repeat_interleave(k, 1))
    with torch.no_grad():
        image = render(problem, ws, noises).clamp(-1, 1)
    failed = failed | ~torch.isfinite(image.flatten(1).sum(1))
    image = torch.nan_to_num(image).reshape(n, k, *image.shape[1:])
    variables = Variables(z=problem.proxy.to_z(ws), noises=noises)
    return Solution(rounds=[image], final=image, failed=failed.reshape(n, k).any(1), variables=variables,
                    layer_states={}, logs=[fit.log], seconds=time.perf_counter() - start)
