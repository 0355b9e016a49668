"""Forward diffusion SDEs dx = f(x, t) dt + g(t) dw and their time reversals (Song et al., ICLR 2021).

Every method works on a mini-batch ``x`` of shape (N, *D) (any number of data dimensions, any device and
dtype) and a per-sample time ``t`` of shape (N,). The formulas, default constants and discretisations
are those of score_sde_pytorch, so that priors trained there (and the published SGILO priors) behave the
same here. Per-sample scalars are broadcast over the data dimensions with :func:`batch_broadcast`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A time-dependent score s(x, t) ≈ ∇_x log p_t(x): (N, *D), (N,) -> (N, *D)."""


def batch_broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a per-sample vector v (N,) as (N, 1, ..., 1) so that it broadcasts against x (N, *D)."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def _data_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


class SDE(abc.ABC):
    """A forward SDE on [0, T], discretised with N steps for the samplers that need a grid."""

    def __init__(self, N: int):
        super().__init__()
        self.N = N
        # Discrete schedules are kept on the CPU in float32 (as score_sde_pytorch builds them) and copied
        # to the (device, dtype) of the data on first use.
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    @property
    @abc.abstractmethod
    def T(self) -> float:
        """End time of the SDE."""

    @abc.abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) (N, *D) and diffusion g(t) (N,)."""

    @abc.abstractmethod
    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (N, *D) and standard deviation (N,) of the perturbation kernel p_0t(x(t) | x(0) = x)."""

    @abc.abstractmethod
    def prior_sampling(self, shape: Sequence[int]) -> torch.Tensor:
        """A sample of the prior p_T of the given shape (CPU, float32; move it where it is needed)."""

    @abc.abstractmethod
    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior p_T at z (N, *D) -> (N,); used for likelihoods through the ODE."""

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward step x_{i+1} = x_i + f_i(x_i) + G_i z_i; returns f (N, *D) and G (N,).

        The default is Euler–Maruyama with dt = 1/N.
        """
        dt = 1.0 / self.N
        drift, diffusion = self.sde(x, t)
        # √dt as a tensor of the diffusion's dtype, so float32 results match score_sde_pytorch bit for bit.
        sqrt_dt = torch.sqrt(torch.tensor(dt, device=diffusion.device, dtype=diffusion.dtype))
        return drift * dt, diffusion * sqrt_dt

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow``, the probability-flow ODE) driven by score_fn."""
        return ReverseSDE(self, score_fn, probability_flow)

    # -- helpers -------------------------------------------------------------------------------------

    def _schedule(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The discrete schedule ``name`` (a CPU tensor attribute) on the device/dtype of ``like``."""
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def config(self) -> dict:
        """Constructor arguments plus the class name, for self-describing checkpoints (see :func:`get_sde`)."""
        return {"name": type(self).__name__, **self._config()}

    def _config(self) -> dict:
        return {"N": self.N}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def timestep_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index of the discrete step that contains t: floor(t (N - 1) / T), as in score_sde_pytorch."""
        return (t * (self.N - 1) / self.T).long()


class ReverseSDE:
    """dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw̄ run backwards in time.

    With ``probability_flow`` the score term is halved and the noise removed, which gives the ODE whose
    marginals equal those of the forward SDE.
    """

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.N = forward.N

    @property
    def T(self) -> float:
        return self.forward.T

    def _score_weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift (N, *D) and diffusion (N,) of the reverse process at (x, t)."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - batch_broadcast(diffusion, x) ** 2 * score * self._score_weight()
        if self.probability_flow:
            diffusion = torch.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse of the forward discretisation: f (N, *D) and G (N,), used by reverse diffusion."""
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_broadcast(G, x) ** 2 * self.score_fn(x, t) * self._score_weight()
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class _LinearBetaSDE(SDE):
    """Shared part of VP and sub-VP: β(t) = β_0 + t (β_1 - β_0) and the DDPM discrete schedule."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.beta_0 = beta_min
        self.beta_1 = beta_max
        # DDPM's discrete betas β_i = β(i / (N - 1)) / N; they drive the `reverse_diffusion` predictor and
        # scale the Langevin step sizes.
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N)
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_alphas_cumprod = torch.sqrt(self.alphas_cumprod)
        self.sqrt_1m_alphas_cumprod = torch.sqrt(1.0 - self.alphas_cumprod)

    @property
    def T(self) -> float:
        return 1

    def _config(self) -> dict:
        return {"beta_min": self.beta_0, "beta_max": self.beta_1, "N": self.N}

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log of the mean scale exp(-½ ∫_0^t β(s) ds) = -¼ t² (β_1 - β_0) - ½ t β_0."""
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def prior_sampling(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(*shape)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        D = math.prod(z.shape[1:])
        return -D / 2.0 * math.log(2 * math.pi) - torch.sum(z**2, dim=_data_dims(z)) / 2.0


class VPSDE(_LinearBetaSDE):
    """Variance-preserving SDE dx = -½ β(t) x dt + √β(t) dw (the continuous limit of DDPM)."""

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta_t = self.beta(t)
        return -0.5 * batch_broadcast(beta_t, x) * x, torch.sqrt(beta_t)

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lmc = self.log_mean_coeff(t)
        mean = torch.exp(batch_broadcast(lmc, x)) * x
        std = torch.sqrt(1.0 - torch.exp(2.0 * lmc))
        return mean, std

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM's step x_{i+1} = √(1 - β_i) x_i + √β_i z_i, written as f = (√α_i - 1) x, G = √β_i."""
        i = self.timestep_index(t)
        beta = self._schedule("discrete_betas", x)[i]
        alpha = self._schedule("alphas", x)[i]
        f = batch_broadcast(torch.sqrt(alpha), x) * x - x
        return f, torch.sqrt(beta)


class subVPSDE(_LinearBetaSDE):
    """Sub-VP SDE: the VP drift with diffusion √(β(t) (1 - exp(-2 ∫β))); its variance stays below VP's."""

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta_t = self.beta(t)
        drift = -0.5 * batch_broadcast(beta_t, x) * x
        discount = 1.0 - torch.exp(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        return drift, torch.sqrt(beta_t * discount)

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lmc = self.log_mean_coeff(t)
        mean = torch.exp(batch_broadcast(lmc, x)) * x
        # Not a typo: the sub-VP *standard deviation* is 1 - exp(-∫β) (its variance is the square).
        std = 1 - torch.exp(2.0 * lmc)
        return mean, std


SubVPSDE = subVPSDE  # the spelling used by the published SGILO configs ("SubVP_SDE")


class VESDE(SDE):
    """Variance-exploding SDE dx = σ(t) √(2 log(σ_max / σ_min)) dw with σ(t) = σ_min (σ_max / σ_min)^t."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        # NCSN's geometric noise levels σ_i = σ(i / (N - 1)).
        self.discrete_sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N))

    @property
    def T(self) -> float:
        return 1

    def _config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self.sigma(t)
        log_ratio = torch.tensor(
            2 * (math.log(self.sigma_max) - math.log(self.sigma_min)), device=sigma.device, dtype=sigma.dtype
        )
        return torch.zeros_like(x), sigma * torch.sqrt(log_ratio)

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # score_sde_pytorch's convention: std = σ(t), neglecting the σ_min² already present at t = 0.
        return x, self.sigma(t)

    def prior_sampling(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(*shape) * self.sigma_max

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        D = math.prod(z.shape[1:])
        return -D / 2.0 * math.log(2 * math.pi * self.sigma_max**2) - torch.sum(z**2, dim=_data_dims(z)) / (
            2 * self.sigma_max**2
        )

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SMLD step x_{i+1} = x_i + √(σ_i² - σ_{i-1}²) z_i (σ_{-1} = 0)."""
        i = self.timestep_index(t)
        sigmas = self._schedule("discrete_sigmas", t)
        sigma = sigmas[i]
        adjacent_sigma = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return torch.zeros_like(x), torch.sqrt(sigma**2 - adjacent_sigma**2)


SDES: dict[str, type[SDE]] = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE}


def marginal_coefficients(sde: SDE, t: float) -> tuple[float, float]:
    """(α_t, σ_t) of the perturbation kernel x_t = α_t x_0 + σ_t ε at one scalar time t (float64 on the CPU)."""
    mean, std = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), torch.tensor([float(t)], dtype=torch.float64))
    return float(mean[0, 0]), float(std[0])


def get_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by name: 'VPSDE' / 'VP_SDE' / 'vp', 'subVPSDE' / 'SubVP_SDE' / 'subvp', 'VESDE' / 'VE_SDE' / 've'.

    ``get_sde(**sde.config())`` rebuilds ``sde``.
    """
    key = name.lower().replace("_", "").replace("-", "")
    if not key.endswith("sde"):
        key += "sde"
    if key not in SDES:
        raise ValueError(f"unknown SDE {name!r}; choose one of {sorted(SDES)}")
    return SDES[key](**kwargs)
