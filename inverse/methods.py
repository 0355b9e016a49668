"""The methods registry: ``method.solver`` picks one of these; each turns measurements into a :class:`Solution`
for the shared input, output, metrics and sharding code of :mod:`inverse.run` (DESIGN §7).

- ``rounds``: the layer-wise round loop of :mod:`inverse.ilo`; CSGM, ILO and SGILO are its settings.
- ``landscape``: the round loop with a learned landscape network θ between the optimised latent and the generator
  (:mod:`inverse.landscape`; trained by ``train_landscape.py``).
- ``brgm``: MAP (or a Gaussian variational posterior) in W+ under BRGM's priors (:mod:`inverse.brgm`).
- ``langevin``, ``dps``, ``resample``: the diffusion posterior samplers of :mod:`inverse.posterior`, with
  ``space: layer`` (a score prior on the features of ``layer`` and G2, the generator from there on, as the
  decoder: a latent diffusion model) or ``space: pixel`` (a score prior on the image, the identity as decoder).
  In layer space the styles (z) and noise maps come from a first CSGM round of ``init_steps`` on the same
  measurements and stay fixed: the samplers draw only the layer features. (Sampling z too would need a joint
  prior on (z, features); the published priors are per layer.)

A method is built in two steps so that configuration errors surface before any work: ``from_config`` (plain
checks) and ``build`` (generator-dependent: priors, shapes).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from omegaconf import DictConfig

from inverse.brgm import BrgmSettings, WStats, solve_brgm
from inverse.ilo import ImageRng, LayerPriors, Problem, RoundLog, Solution, advance_layer, solve
from inverse.inputs import positive_int
from inverse.landscape import LandscapeFormatError, LandscapeMap, LandscapeProxy, load_theta
from inverse.posterior import SPACINGS, LatentDiffusion, annealed_langevin, dps, resample
from inverse.settings import SettingsError, SolverSettings
from score.prior import ScorePrior
from utils import UserError, resolve_path, to_plain

log = logging.getLogger("solve_inverse")
SPACES = ("layer", "pixel")
PIXEL_LAYER = -1  # the ``layer`` of a prior on the image itself


class Method:
    """One way of solving: ``solve(problem, image_ids, seed, progress) -> Solution`` on N measurements."""

    name: str = "?"

    @property
    def stages(self) -> int:
        """How many images ``Solution.rounds`` holds per measurement."""
        raise NotImplementedError

    @property
    def uses_perceptual(self) -> bool:
        """Whether the method's objective has an LPIPS term (the run then loads LPIPS for it)."""
        return False

    def build(self, cfg: DictConfig, G: Any, load_prior: Callable[..., ScorePrior | None], device: Any) -> None:
        """Generator-dependent set-up (priors); raises UserError."""

    def solve(self, problem: Problem, image_ids: list[int], seed: int, progress: bool) -> Solution:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------------
# The round loop.


def _task_factor(flat: dict[str, Any], cfg: DictConfig, key: str, *, zero_ok: bool) -> float | None:
    """``flat[key][generator][task]``: a per-task factor a method config holds (chosen on validation), or None."""
    factor = ((flat.get(key) or {}).get(cfg.generator.name) or {}).get(cfg.task.name)
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (factor >= 0 if zero_ok else factor > 0):
        raise UserError(f"{key}.{cfg.generator.name}.{cfg.task.name} must be a number {'>=' if zero_ok else '>'} 0, "
                        f"got {factor!r}")
    return factor


@dataclass
class Rounds(Method):
    """CSGM / ILO / SGILO: the flat published keys (steps, lr, vars, temperatures, ...) of the method config."""

    settings: SolverSettings
    priors: LayerPriors = field(default_factory=LayerPriors)
    name: str = "rounds"

    @property
    def stages(self) -> int:
        return self.settings.rounds

    @property
    def uses_perceptual(self) -> bool:
        return any(w > 0 for w in self.settings.pe)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Rounds:
        flat = {**to_plain(cfg), "chains": cfg.chains}
        # Where validation preferred another value of a solver key for one task, the method config says so per
        # generator and task (``task_overrides.<generator>.<task>: {key: value}``); it wins over the flat key.
        overrides = ((flat.get("task_overrides") or {}).get(cfg.generator.name) or {}).get(cfg.task.name) or {}
        if not isinstance(overrides, dict):
            raise UserError(f"task_overrides.{cfg.generator.name}.{cfg.task.name} must map solver keys to values, "
                            f"got {overrides!r}")
        if unknown := sorted(set(overrides) - {f.name for f in fields(SolverSettings)}):
            raise UserError(f"task_overrides.{cfg.generator.name}.{cfg.task.name}: unknown solver key(s) {unknown}")
        flat.update(overrides)
        per_generator = flat.get("radius_per_generator") or {}
        if flat.get("radius") is None and per_generator:
            # The l1 norm of a feature tensor grows with its size, so ILO's radii are given per generator.
            if cfg.generator.name not in per_generator:
                log.warning("radius_per_generator has no entry for generator %r: no l1 ball (set radius=[...])",
                            cfg.generator.name)
            flat["radius"] = per_generator.get(cfg.generator.name)
            # ... and, where validation preferred another ball for a task, scaled per task (ILO on the demo).
            scale = _task_factor(flat, cfg, "radius_task_scale", zero_ok=False) if flat["radius"] is not None else None
            if scale is not None:
                flat["radius"] = [None if r is None else r * scale for r in flat["radius"]]
        try:
            settings = SolverSettings.build(flat)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        # Where validation found the layer priors harmful for a task, their weight T is scaled (0: off) per task.
        prior_scale = _task_factor(flat, cfg, "prior_task_scale", zero_ok=True)
        if prior_scale is not None:
            settings.gen_temperature = [t * prior_scale for t in settings.gen_temperature]
        for key in ("project_latent", "project_noises", "carry_skip"):
            if not isinstance(getattr(settings, key), bool):
                raise UserError(f"{key} must be true or false, got {getattr(settings, key)!r}")
        return cls(settings)

    def build(self, cfg: DictConfig, G: Any, load_prior: Callable[..., ScorePrior | None], device: Any) -> None:
        try:
            self.settings.check(G.synthesis.num_blocks)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        s = self.settings
        wants_latent = any(t > 0 for t in s.latent_temperature)
        wants_layer = [r for r in range(s.rounds) if r > 0 and s.gen_temperature[r] > 0]
        if not (wants_latent or wants_layer):
            return
        entry = prior_table(cfg)
        if wants_latent and entry.get("latent_config"):
            self.priors.latent = load_prior(entry["latent_config"], 0)
        gen_configs = list(entry.get("gen_configs") or [])
        for r in wants_layer:
            if r < len(gen_configs) and gen_configs[r]:
                prior = load_prior(gen_configs[r], r)
                if prior is not None:
                    self.priors.layers[r] = prior

    def solve(self, problem: Problem, image_ids: list[int], seed: int, progress: bool) -> Solution:
        return solve(problem, self.settings, self.priors, image_ids=image_ids, seed=seed, progress=progress)


@dataclass
class Landscape(Rounds):
    """The round loop on z′ with θ in front of the generator's proxy: the rounds optimise z′ and render
    G(proxy(θ(z′))); ``Solution.variables.z`` is θ(z′), the generator's own latent. ``landscape.ckpt`` names θ."""

    ckpt: str = ""
    theta: LandscapeMap | None = None
    name: str = "landscape"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Landscape:
        rounds = Rounds.from_config(cfg)
        ckpt = (cfg.get("landscape") or {}).get("ckpt")
        if not isinstance(ckpt, str) or not ckpt:
            raise UserError("method landscape needs landscape.ckpt (a landscape.pt from train_landscape.py)")
        if rounds.settings.latent_init == "search":  # the candidates are W-space samples; θ has no inverse
            raise UserError("method landscape cannot start by latent_init=search (θ has no inverse); use zeros, "
                            "ones or randn")
        return cls(rounds.settings, ckpt=ckpt)

    def build(self, cfg: DictConfig, G: Any, load_prior: Callable[..., ScorePrior | None], device: Any) -> None:
        super().build(cfg, G, load_prior, device)
        try:
            self.theta, record = load_theta(resolve_path(self.ckpt), G.w_dim, device)
        except LandscapeFormatError as exc:
            raise UserError(f"landscape.ckpt: {exc}") from None
        trained_for = (record.get("generator") or {}).get("name")
        if trained_for != cfg.generator.name:
            raise UserError(f"landscape.ckpt {self.ckpt} was trained for generator {trained_for!r}, not "
                            f"{cfg.generator.name!r}")

    def solve(self, problem: Problem, image_ids: list[int], seed: int, progress: bool) -> Solution:
        assert self.theta is not None, "build() first"
        mapped = replace(problem, proxy=LandscapeProxy(self.theta, problem.proxy))
        sol = solve(mapped, self.settings, self.priors, image_ids=image_ids, seed=seed, progress=progress)
        with torch.no_grad():
            sol.variables.z = self.theta(sol.variables.z)
        return sol


def settings_block(cfg: DictConfig, key: str, known: set[str]) -> dict[str, Any]:
    """The ``key:`` block of the method config as a plain dict; raises UserError naming any unknown setting."""
    options = to_plain(cfg.get(key) or {})
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"{key}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return options


def prior_table(cfg: DictConfig) -> dict[str, Any]:
    """``priors.<generator name>`` of the method config; raises UserError when the generator has no entry."""
    table = to_plain(cfg.get("priors") or {})
    name = cfg.generator.name
    if name not in table:
        raise UserError(f"method {cfg.method.name!r} uses score priors but lists none for generator {name!r}; "
                        f"add priors.{name} (latent_config / gen_configs / pixel_config), or set the temperatures "
                        f"to 0")
    return table[name] or {}


# ---------------------------------------------------------------------------------------------------------------------
# Diffusion posterior samplers.

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"langevin": annealed_langevin, "dps": dps, "resample": resample}


@dataclass
class PosteriorSampler(Method):
    """A sampler of :mod:`inverse.posterior` over a layer's features or over pixels (module docstring)."""

    kind: str
    space: str
    layer: int
    chains: int
    init: SolverSettings | None  # the CSGM round that fixes z and the noise maps (space: layer)
    options: dict[str, Any]
    prior: ScorePrior | None = None
    name: str = "posterior"

    @property
    def stages(self) -> int:
        return 2 if self.space == "layer" else 1  # (the CSGM start,) the sample

    @classmethod
    def from_config(cls, cfg: DictConfig, kind: str) -> PosteriorSampler:
        space = cfg.get("space", "layer")
        if space not in SPACES:
            raise UserError(f"space must be one of {SPACES}, got {space!r}")
        layer = cfg.get("layer", 2)
        if space == "layer" and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 1):
            raise UserError(f"layer must be an integer >= 1 for space=layer, got {layer!r}")
        not_settings = {"ld", "op", "y", "rng", "sigma_y", "progress", "u_init"}  # what the method itself passes
        options = settings_block(cfg, kind, set(inspect.signature(SAMPLERS[kind]).parameters) - not_settings)
        t_start = options.get("t_start", 1.0)
        if isinstance(t_start, bool) or not isinstance(t_start, (int, float)) or not 0.0 < t_start <= 1.0:
            raise UserError(f"{kind}.t_start must be a number in (0, 1], got {t_start!r}")
        if options.get("spacing", "linear") not in SPACINGS:
            raise UserError(f"{kind}.spacing must be one of {SPACINGS}, got {options.get('spacing')!r}")
        init = None
        if space == "layer":
            steps = cfg.get("init_steps", 300)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise UserError(f"init_steps must be an integer >= 0, got {steps!r}")
            init = SolverSettings.build({"steps": [steps], "lr": cfg.get("init_lr", 0.05), "vars": "nl",
                                         "latent_init": "zeros", "project_latent": False, "project_noises": False,
                                         "geocross": 0.001, "chains": cfg.chains})
        return cls(kind=kind, space=space, layer=int(layer) if space == "layer" else PIXEL_LAYER,
                   chains=int(cfg.chains), init=init, options=options)

    def build(self, cfg: DictConfig, G: Any, load_prior: Callable[..., ScorePrior | None], device: Any) -> None:
        entry = prior_table(cfg)
        if self.space == "pixel":
            name = entry.get("pixel_config")
            if not name:
                raise UserError(f"method {cfg.method.name!r} with space=pixel needs priors.{cfg.generator.name}"
                                f".pixel_config (a prior on the image)")
        else:
            if self.layer >= G.synthesis.num_blocks:
                raise UserError(f"layer {self.layer}: the generator has only layers 1..{G.synthesis.num_blocks - 1}")
            gen_configs = list(entry.get("gen_configs") or [])
            name = gen_configs[self.layer] if self.layer < len(gen_configs) else None
            if not name:
                raise UserError(f"method {cfg.method.name!r} needs a prior for layer {self.layer}: "
                                f"priors.{cfg.generator.name}.gen_configs[{self.layer}] is empty")
        self.prior = load_prior(name, self.layer)
        if self.prior is None:
            raise UserError(f"prior {name!r} has no trained checkpoint yet")

    def solve(self, problem: Problem, image_ids: list[int], seed: int, progress: bool) -> Solution:
        start = time.perf_counter()
        n, k = problem.y.shape[0], self.chains
        y = problem.y.repeat_interleave(k, 0)
        rng = ImageRng(seed, image_ids, k, y.device)
        stages, variables, states, logs = [], None, {}, []
        if self.space == "layer":
            first = solve(problem, self.init, None, image_ids=image_ids, seed=seed, progress=progress)
            stages.append(first.rounds[0])
            logs += first.logs
            variables = first.variables
            batch = replace(problem, y=y)
            while variables.layer < self.layer:
                advance_layer(batch, variables, self.init)
            z, noises, img, layer = variables.z.detach(), [m.detach() for m in variables.noises], variables.img, \
                variables.layer
            ws = problem.proxy(z).detach()

            def decode(v: torch.Tensor) -> torch.Tensor:
                return problem.G.synthesis.forward_from(ws, layer, v, img, noises=noises,
                                                        noise_mode="const").clamp(-1, 1)
        else:

            def decode(v: torch.Tensor) -> torch.Tensor:
                return v.clamp(-1, 1)

        sampler = SAMPLERS[self.kind]
        extra = {"sigma_y": float(problem.operator.noise_std)} if self.kind == "langevin" else {}
        if self.options.get("t_start", 1.0) < 1.0:  # SDEdit's start: the CSGM features, or the naive image
            clean = variables.x.detach() if variables is not None else problem.operator.naive(y).clamp(-1, 1)
            extra["u_init"] = self.prior.to_model_space(clean)
        ld = LatentDiffusion(self.prior, decode)
        v = sampler(ld, problem.operator, y, rng.randn, progress=progress, **extra, **self.options)
        with torch.no_grad():
            image = decode(v)
        failed = ~torch.isfinite(image.flatten(1).sum(1))
        image = torch.nan_to_num(image)
        stages.append(image.reshape(n, k, *image.shape[1:]))
        if variables is not None:
            variables.x = v.detach()
            states[self.layer] = v.detach()
        seconds = time.perf_counter() - start
        logs.append(RoundLog(layer=self.layer, losses=[], seconds=seconds - sum(lg.seconds for lg in logs)))
        return Solution(rounds=stages, final=stages[-1], failed=failed.reshape(n, k).any(1), variables=variables,
                        layer_states=states, logs=logs, seconds=seconds)


# ---------------------------------------------------------------------------------------------------------------------
# BRGM.


@dataclass
class Brgm(Method):
    """BRGM (:mod:`inverse.brgm`): the ``brgm:`` block of the method config holds :class:`BrgmSettings`."""

    settings: BrgmSettings
    chains: int
    stats: WStats | None = None
    name: str = "brgm"

    @property
    def stages(self) -> int:
        return 1

    @property
    def uses_perceptual(self) -> bool:
        return self.settings.percept > 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Brgm:
        options = settings_block(cfg, "brgm", set(inspect.signature(BrgmSettings).parameters))
        if isinstance(options.get("sigma_prior"), list):
            options["sigma_prior"] = tuple(options["sigma_prior"])
        settings = BrgmSettings(**options)
        try:
            settings.check()
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return cls(settings, int(cfg.chains))

    def build(self, cfg: DictConfig, G: Any, load_prior: Callable[..., ScorePrior | None], device: Any) -> None:
        s = self.settings
        self.stats = WStats.of(G.mapping, s.w_samples, s.w_seed, device)

    def solve(self, problem: Problem, image_ids: list[int], seed: int, progress: bool) -> Solution:
        assert self.stats is not None, "build() first"
        return solve_brgm(problem, self.settings, self.stats, image_ids, seed, self.chains, progress)


def build_method(cfg: DictConfig) -> Method:
    """The method ``method.solver`` names (default ``rounds``), checked; raises UserError."""
    positive_int(cfg, "chains")
    kind = cfg.method.get("solver", "rounds")
    if kind == "rounds":
        method = Rounds.from_config(cfg)
    elif kind == "landscape":
        method = Landscape.from_config(cfg)
    elif kind == "brgm":
        method = Brgm.from_config(cfg)
    elif kind in SAMPLERS:
        method = PosteriorSampler.from_config(cfg, kind)
    else:
        raise UserError(f"method.solver must be one of {['rounds', 'landscape', 'brgm', *SAMPLERS]}, got {kind!r}")
    method.name = str(cfg.method.name)
    return method
