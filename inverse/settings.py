"""The settings of the round loop (:mod:`inverse.ilo`): :class:`SolverSettings`, built and checked from a config,
and the per-step learning rate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# Per-round settings and the value they take when a config leaves them out.
PER_ROUND = {"lr": 0.05, "lr_schedule": "constant", "mse": 1.0, "pe": 0.0, "vars": "nlg", "latent_temperature": 0.0,
             "gen_temperature": 0.0, "radius": None, "range_weight": 0.0}
LR_SCHEDULES = ("constant", "cosine")
PRIOR_STEPS = ("pc", "score", "grad")
LATENT_INITS = ("ones", "zeros", "randn", "search")
NOISE_INITS = ("random", "const")
OPTIMIZERS = ("adam", "sgd")


class SettingsError(ValueError):
    """Solver settings that cannot work (the message is one line, meant for the user)."""


# ---------------------------------------------------------------------------------------------------------------------
# Settings.


def _per_round(name: str, value: Any, rounds: int) -> list[Any]:
    """A scalar broadcast to every round, or a list with at least one entry per round (extra entries ignored,
    as in the published configs, which list four layers for three rounds)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return [value] * rounds
    values = list(value)
    if len(values) < rounds:
        raise SettingsError(f"{name} has {len(values)} entr{'y' if len(values) == 1 else 'ies'} but steps asks for "
                            f"{rounds} rounds; give one per round (or a single value)")
    return values[:rounds]


@dataclass
class SolverSettings:
    """Everything that configures the loop; per-round entries are lists of length ``rounds`` (see ``build``).

    steps: Adam steps per round (one round per entry). lr / lr_schedule: base learning rate per round and
    'constant' or ILO's 'cosine' ramp per round. mse, pe: weights of the measurement loss and LPIPS per round; geocross:
    weight of GeoCross on z[:, 2r:]. vars: per round, 'l' (latent z), 'n' (noise maps), 'g' (layer features x).
    latent_temperature / gen_temperature: per-round weights of the prior's Δ on z and x; latent_noise_temp /
    gen_noise_temp: std of the Langevin noise added with them. project_latent / project_noises: spherical
    projections; radius: per-round l1-ball radius for x around its round-start value (None/0 = none).
    noises_lookahead: round r optimises the first noises_lookahead + 2r noise maps. prior_step: 'pc' | 'score' |
    'grad' (−temperature · score added to the gradient); score_eps: step of the 'score' form. chains: posterior
    samples per measurement. latent_init: 'ones' (published), 'zeros', 'randn', or 'search': the best
    ``init_candidates`` W-space samples by measurement loss, one per chain (:mod:`inverse.init_search`);
    noise_init: 'random' (published) or the generator's 'const' maps.
    carry_skip: carry the skip-branch RGB image of layer r (exact composition) or drop it as the published
    code does. optimizer: 'adam' (published) or 'sgd' (plain gradient steps: with the 'score' prior step and
    matched temperatures a round is then unadjusted Langevin dynamics on the posterior; see the tests).
    t_hot: the diffusion time at which every prior of the run is evaluated (None: each prior's own
    ``sampling.t_hot``); t_hot_end: anneal it geometrically from t_hot to this over each round (None: constant).
    prior_reference_measurements: m_ref; with it the prior's weights (latent_temperature, gen_temperature) are
    the weights at m_ref measurements, and a row with m measurements gets T·m_ref/m. The data term is a mean over
    the m measurements, so this keeps the balance of the MAP objective Σ(Ax − y)²/(2σ²) − log p(x): the more
    the measurements say, the less the prior weighs (None: the same T for every task, as published).
    holdout_fraction: leave this share of each measurement's entries out of the fit and end each chain with the
    round whose image predicts them best (:mod:`inverse.holdout`; 0: off, the last round).
    range_weight: per round, the weight λ of the generator-range prior |x − G_{0→r}(z)|² / |G_{0→r}(z)|² on the
    layer features (:mod:`inverse.range_prior`; 0: off), times m_ref/m like the score priors; range_adaptive: and
    divided per row by the measurement loss the round starts from (the range holds what it already explains).
    """

    steps: list[int]
    lr: list[float]
    mse: list[float]
    pe: list[float]
    vars: list[str]
    latent_temperature: list[float]
    gen_temperature: list[float]
    radius: list[float | None]
    lr_schedule: list[str]
    range_weight: list[float]
    geocross: float = 0.0
    latent_noise_temp: float = 0.0
    gen_noise_temp: float = 0.0
    project_latent: bool = False
    project_noises: bool = False
    noises_lookahead: int = 1
    prior_step: str = "pc"
    score_eps: float = 1e-3
    chains: int = 1
    latent_init: str = "ones"
    init_candidates: int = 256
    noise_init: str = "random"
    carry_skip: bool = True
    optimizer: str = "adam"
    t_hot: float | None = None
    t_hot_end: float | None = None
    prior_reference_measurements: int | None = None
    holdout_fraction: float = 0.0
    range_adaptive: bool = False

    @property
    def rounds(self) -> int:
        return len(self.steps)

    @classmethod
    def build(cls, cfg: Mapping[str, Any]) -> SolverSettings:
        """From a mapping with the published flat keys (scalars broadcast per round); unknown keys are ignored
        so that a whole solve config can be passed."""
        steps = cfg.get("steps")
        if steps is None or isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__") or len(steps) == 0:
            raise SettingsError(f"steps must be a non-empty list of step counts, one per round, got {steps!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
            raise SettingsError(f"steps must hold integers >= 0, got {list(steps)}")
        rounds = len(steps)
        kwargs: dict[str, Any] = {"steps": [int(s) for s in steps]}
        for name, default in PER_ROUND.items():
            value = cfg.get(name)
            kwargs[name] = _per_round(name, default if value is None else value, rounds)
        for f in fields(cls):
            if f.name not in kwargs and f.name in cfg and cfg[f.name] is not None:
                kwargs[f.name] = cfg[f.name]
        settings = cls(**kwargs)
        settings.check()
        return settings

    def check(self, num_blocks: int | None = None) -> None:
        """Raise :class:`SettingsError` (one line) for values the loop cannot use."""
        for r, v in enumerate(self.lr_schedule):
            if v not in LR_SCHEDULES:
                raise SettingsError(f"lr_schedule[{r}] must be one of {LR_SCHEDULES}, got {v!r}")
        if self.prior_step not in PRIOR_STEPS:
            raise SettingsError(f"prior_step must be one of {PRIOR_STEPS}, got {self.prior_step!r}")
        if self.latent_init not in LATENT_INITS:
            raise SettingsError(f"latent_init must be one of {LATENT_INITS}, got {self.latent_init!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SettingsError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.noise_init not in NOISE_INITS:
            raise SettingsError(f"noise_init must be one of {NOISE_INITS}, got {self.noise_init!r}")
        for name in ("lr", "mse", "pe", "latent_temperature", "gen_temperature", "range_weight"):
            for r, v in enumerate(getattr(self, name)):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    raise SettingsError(f"{name}[{r}] must be a finite number >= 0, got {v!r}")
        for r, v in enumerate(self.radius):
            if v is not None and (not isinstance(v, (int, float)) or v < 0):
                raise SettingsError(f"radius[{r}] must be a number >= 0 or null, got {v!r}")
        for r, v in enumerate(self.vars):
            if not isinstance(v, str) or not v or set(v) - set("lng"):
                raise SettingsError(f"vars[{r}] must be letters from 'l' (latent), 'n' (noises), 'g' (layer "
                                    f"features), got {v!r}")
        for name in ("geocross", "latent_noise_temp", "gen_noise_temp", "score_eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise SettingsError(f"{name} must be a number >= 0, got {v!r}")
        for name in ("t_hot", "t_hot_end"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1):
                raise SettingsError(f"{name} must be a diffusion time in (0, 1] or null, got {v!r}")
        m_ref = self.prior_reference_measurements
        if m_ref is not None and (not isinstance(m_ref, int) or isinstance(m_ref, bool) or m_ref < 1):
            raise SettingsError(f"prior_reference_measurements must be an integer >= 1 or null, got {m_ref!r}")
        f = self.holdout_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise SettingsError(f"holdout_fraction must be a number in [0, 1), got {f!r}")
        if not isinstance(self.range_adaptive, bool):
            raise SettingsError(f"range_adaptive must be true or false, got {self.range_adaptive!r}")
        if self.t_hot_end is not None and self.t_hot is None:
            raise SettingsError("t_hot_end anneals from t_hot: set t_hot too")
        if not isinstance(self.noises_lookahead, int) or self.noises_lookahead < 0:
            raise SettingsError(f"noises_lookahead must be an integer >= 0, got {self.noises_lookahead!r}")
        if not isinstance(self.chains, int) or isinstance(self.chains, bool) or self.chains < 1:
            raise SettingsError(f"chains must be an integer >= 1, got {self.chains!r}")
        m = self.init_candidates
        if self.latent_init == "search" and (not isinstance(m, int) or isinstance(m, bool) or m < self.chains):
            raise SettingsError(f"init_candidates must be an integer >= chains ({self.chains}) for latent_init "
                                f"'search', got {m!r}")
        if num_blocks is not None and self.rounds > num_blocks:
            raise SettingsError(f"steps asks for {self.rounds} rounds, but the generator has only {num_blocks} "
                                f"layers to optimise at (0..{num_blocks - 1})")


def learning_rate(step: int, steps: int, base: float, schedule: str) -> float:
    """Learning rate of ``step`` (0-based) of a round of ``steps``: constant, or ILO's cosine ramp (5 % linear
    warm-up from 0, cosine decay to 0 over the last 75 %, in fractions of the round)."""
    if schedule == "constant":
        return base
    t = step / max(steps, 1)
    ramp = 0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / 0.75) * math.pi)
    return base * ramp * min(1.0, t / 0.05)
