"""A score prior on one generator layer, as one object: network + SDE + layer + normalisation + sampling.

SGILO regularises the variable of layer k (the Gaussianised latent z for k = 0, the features x for k >= 1)
with a score network trained on min-max-normalised samples of that variable. :class:`ScorePrior` keeps
everything needed to use such a network and converts between the two spaces:

* *variable space*: what the solver optimises: z (N, num_ws, w_dim) for layer 0, x (N, C, H, W) otherwise;
* *model space*: what the network sees: normalised, and for layer 0 laid out as (N, w_dim, num_ws, 1).

Files. :meth:`ScorePrior.save` writes a self-describing checkpoint (plain data, readable with
``torch.load(weights_only=True)``)::

    format: 'sgilo.score_prior', version: 1
    model: {'class': 'ViT', 'config': {...constructor kwargs...}}
    sde: {'name': 'VPSDE', 'beta_min': ..., 'beta_max': ..., 'N': ...}
    layer, image_shape [C, H, W] (model space), normalization {'kind': 'minmax', 'min', 'max'}
    sampling: {...SamplingSettings...}, generator: {...generator entry, see stylegan.build...} or None
    state_dict (training weights; absent in sampling-only copies), ema_state_dict (the weights to sample
    with), step, training: optional resume state written by train_score.py

A sampling-only copy of any checkpoint (train_score.py's ``prior.pt`` or a resumable ``step_*.pt``)::

    python -m score.prior IN.pt OUT.pt

:meth:`ScorePrior.from_published` reads a published SGILO ``.pth`` (a bare ViT state dict, possibly with a
``module.`` prefix or inside a dict) with the settings of a ``configs/trained_networks/*.yaml``.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dataloaders import MinMaxNormalizer, latent_from_layout, latent_to_layout
from utils import torch_save_new

from .models import get_score_fn, load_score_state_dict, strip_prefix
from .prior_spec import MODEL_CLASSES, PriorFormatError, PriorSpec, SamplingSettings, parse_prior_spec
from .samplers import hot_sampler, pc_sampler
from .sde import SDE, get_sde

FORMAT = "sgilo.score_prior"
VERSION = 1

# ---------------------------------------------------------------------------------------------------------------------
# The prior.


class ScorePrior:
    """A score network for one layer, with its SDE, normalisation and sampling settings (see module docstring).

    Args:
        model: the network, holding the weights to sample with (EMA weights for trained priors).
        sde: the forward SDE it was trained with.
        layer: generator layer (0 = Gaussianised latent).
        normalizer: maps variables to the network's [0, 1]-ish range.
        sampling: PC/hot sampling settings.
        generator: the generator entry it was trained on (plain data; None = unknown).
        step: training steps behind the weights.
        raw_state_dict: training (non-EMA) weights, when they differ from the model's; kept for saving.
        training: resume state (optimizer, EMA, data streams, ...), kept for saving.
    """

    def __init__(
        self,
        model: nn.Module,
        sde: SDE,
        layer: int,
        normalizer: MinMaxNormalizer,
        sampling: SamplingSettings | None = None,
        generator: Mapping[str, Any] | None = None,
        step: int = 0,
        raw_state_dict: Mapping[str, torch.Tensor] | None = None,
        training: Mapping[str, Any] | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        self.sde = sde
        self.layer = int(layer)
        self.normalizer = normalizer
        self.sampling = sampling if sampling is not None else SamplingSettings()
        self.generator = dict(generator) if generator is not None else None
        self.step = int(step)
        self.raw_state_dict = raw_state_dict
        self.training = dict(training) if training is not None else None
        self._score_fn = get_score_fn(sde, self.model, train=False)

    # -- description ----------------------------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the network sees; for layer 0 this is (w_dim, num_ws, 1)."""
        cfg = self.model.config
        return (int(cfg["channels"]), int(cfg["height"]), int(cfg["width"]))

    @property
    def variable_shape(self) -> tuple[int, ...]:
        """Per-sample shape in variable space: (num_ws, w_dim) for layer 0, else (C, H, W)."""
        c, h, _ = self.image_shape
        return (h, c) if self.layer == 0 else self.image_shape

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.model.parameters(), self.model.buffers())).device

    def to(self, device: torch.device | str) -> ScorePrior:
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        name = (self.generator or {}).get("name")
        return (f"ScorePrior(layer={self.layer}, shape={list(self.image_shape)}, {self.sde!r}, {self.normalizer!r}, "
                f"generator={name!r}, step={self.step})")

    # -- spaces ---------------------------------------------------------------------------------------------------

    def to_model_space(self, v: torch.Tensor) -> torch.Tensor:
        """Variable (N, *variable_shape) -> normalised network input (N, *image_shape)."""
        u = latent_to_layout(v) if self.layer == 0 else v
        return self.normalizer.normalize(u)

    def from_model_space(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_model_space`."""
        v = self.normalizer.denormalize(u)
        return latent_from_layout(v) if self.layer == 0 else v

    # -- using the network ----------------------------------------------------------------------------------------

    def score(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """s_θ(x, t) ≈ ∇ log p_t(x) for NORMALISED x in model space (N, *image_shape); t scalar or (N,)."""
        if not torch.is_tensor(t) or t.ndim == 0:
            t = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        return self._score_fn(x, t)

    @torch.no_grad()
    def variable_score(self, v: torch.Tensor, t: float | torch.Tensor | None = None) -> torch.Tensor:
        """∇_v log p_t(v) for variables (N, *variable_shape) at t (default ``t_hot``): the model-space score
        divided by the normaliser's scale (chain rule) and laid out as v. SGILO's ``prior_step: score``."""
        s = self.score(self.to_model_space(v), self.sampling.t_hot if t is None else t) / self.normalizer.scale
        return latent_from_layout(s) if self.layer == 0 else s

    @torch.no_grad()
    def hot_delta(self, v: torch.Tensor, t: float | None = None) -> torch.Tensor:
        """SGILO's published prior step (``prior_step: pc``): hot-sample the normalised variable from time t
        (default ``t_hot``), map back, subtract. v: (N, *variable_shape) -> Δ of the same shape (the solver adds
        temperature · Δ)."""
        s = self.sampling
        u, _ = hot_sampler(self.to_model_space(v), self._score_fn, self.sde, t=s.t_hot if t is None else t,
                           hot_steps=s.hot_steps,
                           predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps,
                           probability_flow=s.probability_flow)
        return self.from_model_space(u) - v

    @torch.no_grad()
    def naturalize(self, v: torch.Tensor) -> torch.Tensor:
        """Hot start: move realizable variables (N, *variable_shape) along the learned field (v + Δ)."""
        return v + self.hot_delta(v)

    @torch.no_grad()
    def sample(self, n: int, progress: bool = True) -> torch.Tensor:
        """Cold start: n samples (N, *variable_shape) by PC sampling of the reverse SDE from noise."""
        s = self.sampling
        u, _ = pc_sampler(self._score_fn, self.sde, (n, *self.image_shape), predictor=s.predictor,
                          corrector=s.corrector, snr=s.snr, n_steps=s.n_steps, probability_flow=s.probability_flow,
                          denoise=s.noise_removal, eps=s.eps, device=self.device, progress=progress)
        return self.from_model_space(u)

    # -- files ----------------------------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint as plain data (see the module docstring)."""
        cls = type(self.model).__name__
        if cls not in MODEL_CLASSES or not hasattr(self.model, "config"):
            raise TypeError(f"cannot describe a {cls}; known network classes: {sorted(MODEL_CLASSES)}")
        ema = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        raw = {k: v.detach().cpu().clone() for k, v in (self.raw_state_dict or ema).items()}
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": {"class": cls, "config": dict(self.model.config)},
            "sde": self.sde.config(),
            "layer": self.layer,
            "image_shape": list(self.image_shape),
            "normalization": self.normalizer.to_dict(),
            "sampling": asdict(self.sampling),
            "generator": copy.deepcopy(self.generator),
            "state_dict": raw,
            "ema_state_dict": ema,
            "step": self.step,
            "training": self.training,
        }

    def save(self, path: str | os.PathLike[str], overwrite: bool = False, for_sampling: bool = False) -> Path:
        """Write the checkpoint; refuses to replace an existing file unless ``overwrite``.

        ``for_sampling`` leaves out the training weights and the resume state (optimiser moments, RNG): the
        file then holds only what sampling and SGILO read, about a third of the size.
        """
        ckpt = self.checkpoint()
        if for_sampling:
            del ckpt["state_dict"], ckpt["training"]
        return torch_save_new(ckpt, path, overwrite=overwrite)

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], device: torch.device | str = "cpu",
                        origin: str = "checkpoint") -> ScorePrior:
        """Rebuild a prior from :meth:`checkpoint` data."""
        if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
            raise PriorFormatError(f"{origin}: not an SGILO score-prior checkpoint (no '{FORMAT}' format tag); "
                                   "a published .pth needs its configs/trained_networks YAML (from_published)")
        if int(ckpt.get("version", 0)) > VERSION:
            raise PriorFormatError(f"{origin}: written by a newer version ({ckpt['version']}) of this code")
        spec = ckpt["model"]
        if spec.get("class") not in MODEL_CLASSES:
            raise PriorFormatError(f"{origin}: unknown network class {spec.get('class')!r}")
        try:
            model = MODEL_CLASSES[spec["class"]](**spec["config"])
            model.load_state_dict(ckpt["ema_state_dict"])
            sde = get_sde(**ckpt["sde"])
        except (TypeError, ValueError, RuntimeError, KeyError) as exc:
            raise PriorFormatError(f"{origin}: inconsistent checkpoint ({_one_line(exc)})") from None
        return cls(
            model.to(device),
            sde,
            layer=ckpt["layer"],
            normalizer=MinMaxNormalizer.from_dict(ckpt["normalization"]),
            sampling=SamplingSettings.from_dict(ckpt.get("sampling")),
            generator=ckpt.get("generator"),
            step=ckpt.get("step", 0),
            raw_state_dict=ckpt.get("state_dict"),
            training=ckpt.get("training"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> ScorePrior:
        """Read a checkpoint written by :meth:`save` (data only: ``weights_only=True``)."""
        return cls.from_checkpoint(read_checkpoint(path), device=device, origin=str(path))

    @classmethod
    def from_published(cls, ckpt_path: str | os.PathLike[str], conf: Mapping[str, Any] | PriorSpec,
                       device: torch.device | str = "cpu") -> ScorePrior:
        """A published SGILO ``.pth`` (ViT weights) with the settings of its trained_networks YAML.

        The weights may be a bare state dict, carry a ``module.`` prefix (DataParallel), or sit under
        ``'ema'``/``'model'``/``'state_dict'`` in a dict; they must fit the configured ViT exactly.
        """
        spec = conf if isinstance(conf, PriorSpec) else parse_prior_spec(conf)
        if spec.image_shape is None:
            raise PriorFormatError("a published prior's config must give image_shape")
        if spec.normalization is None:
            raise PriorFormatError("a published prior's config must give normalization min and max")
        state = read_checkpoint(ckpt_path)
        if isinstance(state, Mapping) and state.get("format") == FORMAT:
            raise PriorFormatError(f"{ckpt_path} is an SGILO checkpoint; read it with ScorePrior.load")
        model = spec.build_model()
        try:
            load_score_state_dict(model, state, strict=True)
        except (RuntimeError, AttributeError, TypeError) as exc:
            raise PriorFormatError(f"{ckpt_path}: weights do not fit the configured network "
                                   f"({_describe_mismatch(model, state, exc)})") from None
        generator = spec.generator if isinstance(spec.generator, Mapping) or spec.generator is None \
            else {"name": spec.generator}
        return cls(model.to(device), spec.build_sde(), spec.layer, MinMaxNormalizer.from_dict(spec.normalization),
                   spec.sampling, generator=generator)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | PriorSpec, ckpt: str | os.PathLike[str] | None = None,
                  device: torch.device | str = "cpu",
                  resolve: Callable[[str | os.PathLike[str]], Path] | None = None) -> ScorePrior:
        """The prior a trained_networks config describes: our checkpoint (the config's sampling settings take
        precedence over the saved ones) or a published ``.pth``. ``ckpt`` overrides the config's path;
        ``resolve`` maps the config's (relative) path to a file."""
        spec = spec if isinstance(spec, PriorSpec) else parse_prior_spec(spec)
        if ckpt is not None:
            path = Path(ckpt)
        elif spec.ckpt is not None:
            path = published_path(spec.ckpt, resolve or Path)
        else:
            raise PriorFormatError("the prior config names no checkpoint (ckpt: null)")
        data = read_checkpoint(path)
        if isinstance(data, Mapping) and data.get("format") == FORMAT:
            prior = cls.from_checkpoint(data, device=device, origin=str(path))
            if prior.layer != spec.layer:
                raise PriorFormatError(f"{path} is a layer-{prior.layer} prior, the config says layer {spec.layer}")
            prior.sampling = spec.sampling
            return prior
        return cls.from_published(path, spec, device=device)


def published_path(path: str | os.PathLike[str], resolve: Callable[[str | os.PathLike[str]], Path]) -> Path:
    """``resolve(path)``, or its ``score_based/vp/`` twin when only that exists (some copies of the published
    bundle use that folder name instead of ``score_based/vp_sde/``)."""
    first = Path(resolve(path))
    if first.is_file() or "vp_sde" not in Path(path).parts:
        return first
    twin = Path(resolve(Path(*("vp" if part == "vp_sde" else part for part in Path(path).parts))))
    return twin if twin.is_file() else first


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors."""
    path = Path(path)
    if not path.is_file():
        hint = " (published priors come in the SGILO checkpoint bundle, see the README)" \
            if "score_based" in path.parts else ""
        raise PriorFormatError(f"score checkpoint not found: {path}{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure means the same thing to the user
        raise PriorFormatError(f"{path}: not a readable torch checkpoint ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _describe_mismatch(model: nn.Module, state: Any, exc: BaseException) -> str:
    """Missing/unexpected key counts with an example of each, or the loader's own message."""
    if not isinstance(state, Mapping):
        return f"expected a state dict, got {type(state).__name__}"
    for key in ("ema", "model", "state_dict"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    have = set(strip_prefix(state))
    want = set(model.state_dict())
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        return "; ".join(parts)
    return _one_line(exc)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a sampling-only copy of a score-prior checkpoint (never over an existing file)."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a sampling-only copy of a score-prior checkpoint "
                                     "(EMA weights and settings; no training weights or optimiser state).")
    parser.add_argument("checkpoint", help="a prior.pt or step_*.pt written by train_score.py")
    parser.add_argument("out", help="where to write the copy (must not exist)")
    args = parser.parse_args(argv)
    try:
        path = ScorePrior.load(args.checkpoint).save(args.out, for_sampling=True)
    except FileExistsError:
        raise SystemExit(f"error: {args.out} exists; not overwriting it") from None
    except PriorFormatError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
