"""What a score prior's config says: ``configs/trained_networks/*.yaml`` in our schema or the published one
(translated), its sampling settings, and the network a config names. :mod:`score.prior` builds the prior itself."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from .gaussian import GaussianMixtureScoreModel, GaussianResidualViT, GaussianScoreModel
from .models import ViT
from .sde import SDE, get_sde

# Network classes a checkpoint may name, by class name; their constructors take the saved config.
MODEL_CLASSES: dict[str, type[nn.Module]] = {"ViT": ViT, "GaussianScoreModel": GaussianScoreModel,
                                             "GaussianResidualViT": GaussianResidualViT,
                                             "GaussianMixtureScoreModel": GaussianMixtureScoreModel}
# Names accepted in YAML `model.name` -> class name.
MODEL_NAMES = {"vit": "ViT", "gaussian": "GaussianScoreModel", "gaussian_vit": "GaussianResidualViT",
               "gaussian_mixture": "GaussianMixtureScoreModel"}

# Settings of the published trained_networks YAMLs that have no effect here (the published code ignores them
# for hot sampling too, or they describe training).
_PUBLISHED_IGNORED_SAMPLING = {"sample_every", "sampling_method", "prior_sampler", "rtol", "atol", "continuous",
                               "likelihood_weighting"}


class PriorFormatError(ValueError):
    """A checkpoint or prior config that cannot be read; the message is one line."""


@dataclass
class SamplingSettings:
    """How a prior is sampled.

    hot_sampler: eval_score_based.py's mode: True = naturalise realizable latents (hot start),
        False = sample from noise (cold start).
    predictor, corrector, snr, n_steps: the PC pair (score.samplers registries), corrector steps per level.
    hot_steps, t_hot: PC iterations at the fixed time t_hot for hot starts and SGILO's `pc` prior step.
    eps: last time of cold sampling. probability_flow: predict with the ODE. noise_removal: return the
        noise-free mean of the last step.
    """

    hot_sampler: bool = True
    predictor: str = "euler_maruyama"
    corrector: str = "ald"
    snr: float = 1e-4
    n_steps: int = 1
    hot_steps: int = 1
    t_hot: float = 0.01
    eps: float = 1e-3
    probability_flow: bool = False
    noise_removal: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, base: SamplingSettings | None = None) -> SamplingSettings:
        """Settings from a mapping over ``base`` (defaults when None); None values keep the base value."""
        out = copy.copy(base) if base is not None else cls()
        names = {f.name: f.type for f in fields(cls)}
        for key, value in dict(d or {}).items():
            if key not in names:
                raise PriorFormatError(f"unknown sampling setting {key!r}; known: {sorted(names)}")
            if value is None:
                continue
            default = getattr(cls(), key)
            try:
                value = type(default)(value) if not isinstance(default, bool) else _as_bool(value, key)
            except (TypeError, ValueError):
                raise PriorFormatError(f"sampling.{key}: cannot use {value!r}") from None
            setattr(out, key, value)
        return out


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{key} must be true or false")


# ---------------------------------------------------------------------------------------------------------------------
# Prior configs (configs/trained_networks/*.yaml).


@dataclass
class PriorSpec:
    """What a ``configs/trained_networks/*.yaml`` says (our schema; the published one is translated).

    model: {'name': 'vit', dim, depth, heads, dim_head, mlp_dim, patch_size[, dropout]}; image_shape may be
    None (then it comes from the generator); normalization may be None (fitted at training time).
    """

    layer: int
    image_shape: list[int] | None
    model: dict[str, Any]
    sde: dict[str, Any]
    sampling: SamplingSettings
    normalization: dict[str, Any] | None = None
    generator: str | dict[str, Any] | None = None
    ckpt: str | None = None
    description: str | None = None

    @property
    def generator_name(self) -> str | None:
        """Name of the generator the prior belongs to (``generator`` may be a name or a recorded entry)."""
        return self.generator if isinstance(self.generator, str) else (self.generator or {}).get("name")

    def build_model(self, image_shape: Sequence[int] | None = None) -> nn.Module:
        """A fresh network for ``image_shape`` (C, H, W) (default: the spec's)."""
        shape = list(image_shape if image_shape is not None else (self.image_shape or []))
        if len(shape) != 3:
            raise PriorFormatError(f"image_shape must be [C, H, W], got {shape}")
        model = dict(self.model)
        if str(model.get("name", "vit")).lower() in ("gaussian", "gaussian_vit", "gaussian_mixture"):
            model["sde"] = dict(self.sde)  # the exact score of a Gaussian depends on the SDE's α_t, σ_t
        return build_model(model, shape)

    def build_sde(self) -> SDE:
        try:
            return get_sde(**self.sde)
        except (TypeError, ValueError) as exc:
            raise PriorFormatError(f"sde {self.sde}: {exc}") from None


OUR_KEYS = {"layer", "image_shape", "model", "sde", "sampling", "normalization", "generator", "ckpt", "description"}
PUBLISHED_KEYS = {"device", "N", "heads", "d_model", "patch_size", "image_shape", "sde_type", "VP_SDE", "VE_SDE",
                  "SubVP_SDE", "sampling", "ckpt"}
# Published min-max constants (their eval/solve configs): z priors use the latent pair, layer priors the gen pair.
PUBLISHED_NORMALIZATION = {"latent": (-3.0592, 3.0290), "gen": (-1.4007, 2.3453)}


def build_model(model_cfg: Mapping[str, Any], image_shape: Sequence[int]) -> nn.Module:
    """Network from a YAML model entry ``{'name': 'vit', ...}`` for a variable of shape (C, H, W)."""
    cfg = dict(model_cfg)
    name = str(cfg.pop("name", "vit")).lower()
    if name not in MODEL_NAMES:
        raise PriorFormatError(f"unknown model {name!r}; known: {sorted(MODEL_NAMES)}")
    c, h, w = (int(s) for s in image_shape)
    try:
        return MODEL_CLASSES[MODEL_NAMES[name]](width=w, height=h, channels=c, **cfg)
    except (TypeError, ValueError) as exc:
        raise PriorFormatError(f"model {dict(model_cfg)}: {exc}") from None


def _layer_from_shape(image_shape: Sequence[int]) -> int:
    """Published layout: (w_dim, num_ws, 1) is the latent (layer 0); (C, R, R) is layer log2(R) - 1."""
    h, w = int(image_shape[-2]), int(image_shape[-1])
    if w == 1:
        return 0
    if h != w or h < 4 or h & (h - 1):
        raise PriorFormatError(f"cannot tell the layer of image_shape {list(image_shape)}")
    return int(math.log2(h)) - 1


def _translate_published(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A published trained_networks YAML (N, d_model, heads, sde_type, VP_SDE, ...) in our schema."""
    unknown = sorted(set(conf) - PUBLISHED_KEYS)
    if unknown:
        raise PriorFormatError(f"unknown key(s) {unknown} in a published-style prior config")
    image_shape = [int(s) for s in conf["image_shape"]]
    sde_type = str(conf.get("sde_type", "VP_SDE"))
    sde_args = dict(conf.get(sde_type) or {})
    if "num_scales" in sde_args:
        sde_args["N"] = sde_args.pop("num_scales")
    d_model = int(conf["d_model"])
    layer = _layer_from_shape(image_shape)
    sampling = {k: v for k, v in dict(conf.get("sampling") or {}).items() if k not in _PUBLISHED_IGNORED_SAMPLING}
    if "n_steps_each" in sampling:
        sampling["n_steps"] = sampling.pop("n_steps_each")
    lo, hi = PUBLISHED_NORMALIZATION["latent" if layer == 0 else "gen"]
    return {
        "layer": layer,
        "image_shape": image_shape,
        # The published networks: MLP width 4·d_model, 64-wide heads, no dropout.
        "model": {"name": "vit", "dim": d_model, "depth": int(conf["N"]), "heads": int(conf["heads"]),
                  "mlp_dim": 4 * d_model, "dim_head": 64, "patch_size": int(conf["patch_size"])},
        "sde": {"name": sde_type, **sde_args},
        "sampling": sampling,
        "normalization": {"kind": "minmax", "min": lo, "max": hi},
        "generator": "ffhq",
        "ckpt": conf.get("ckpt"),
    }


def parse_prior_spec(conf: Mapping[str, Any]) -> PriorSpec:
    """Read a prior config (our schema, or the published one, recognised by its ``d_model`` key)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(conf, DictConfig):
            conf = OmegaConf.to_container(conf, resolve=True)
    except ImportError:
        pass
    conf = dict(conf)
    if "d_model" in conf or "sde_type" in conf:
        conf = _translate_published(conf)
    unknown = sorted(set(conf) - OUR_KEYS)
    if unknown:
        raise PriorFormatError(f"unknown prior config key(s) {unknown}; known: {sorted(OUR_KEYS)}")
    for key in ("layer", "model", "sde"):
        if conf.get(key) is None:
            raise PriorFormatError(f"prior config needs '{key}'")
    layer = conf["layer"]
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < -1:
        raise PriorFormatError(f"layer must be an integer >= 0 (or -1: the image itself), got {layer!r}")
    shape = conf.get("image_shape")
    if shape is not None and (len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape)):
        raise PriorFormatError(f"image_shape must be three positive integers [C, H, W], got {shape!r}")
    norm = conf.get("normalization")
    if norm is not None:
        norm = dict(norm)
        if norm.get("min") is None or norm.get("max") is None:
            norm = None  # to be fitted on data
    return PriorSpec(
        layer=layer,
        image_shape=list(shape) if shape is not None else None,
        model=dict(conf["model"]),
        sde=dict(conf["sde"]),
        sampling=SamplingSettings.from_dict(conf.get("sampling")),
        normalization=norm,
        generator=conf.get("generator"),
        ckpt=conf.get("ckpt"),
        description=conf.get("description"),
    )
