"""From a ``train_score.yaml`` config to the pieces of :mod:`score.trainer`, with one-line errors.

Every check that can fail on user input raises :class:`TrainConfigError` (a ValueError) before any work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from dataloaders import LatentShards, MinMaxNormalizer, latent_to_layout, load_saved_latents
from stylegan.networks import Generator
from stylegan.proxy import MappingProxy

from .prior import PriorSpec, ScorePrior
from .trainer import _SEED_NORMALIZER, _SEED_STREAM, LatentStream, TrainSettings, derive_seed, fit_normalizer


class TrainConfigError(ValueError):
    """Bad training configuration; the message is one line."""


def settings_from_config(cfg: Mapping[str, Any]) -> TrainSettings:
    """:class:`TrainSettings` from the top-level keys of ``train_score.yaml``, range-checked."""
    try:
        st = TrainSettings(
            steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]),
            warmup=int(cfg["warmup"]), grad_clip=float(cfg["grad_clip"]), ema_decay=float(cfg["ema_decay"]),
            likelihood_weighting=bool(cfg["likelihood_weighting"]), reduce_mean=bool(cfg["reduce_mean"]),
            loss_eps=float(cfg["loss_eps"]), log_every=int(cfg["log_every"]), ckpt_every=int(cfg["ckpt_every"]),
        )
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"bad training setting ({exc})") from None
    checks = [
        (st.steps >= 1, f"steps must be >= 1, got {st.steps}"),
        (st.batch_size >= 1, f"batch_size must be >= 1, got {st.batch_size}"),
        (st.lr > 0, f"lr must be > 0, got {st.lr}"),
        (st.warmup >= 0, f"warmup must be >= 0, got {st.warmup}"),
        (0.0 <= st.ema_decay <= 1.0, f"ema_decay must be in [0, 1], got {st.ema_decay}"),
        (0.0 < st.loss_eps < 1.0, f"loss_eps must be in (0, 1), got {st.loss_eps}"),
        (st.log_every >= 1, f"log_every must be >= 1, got {st.log_every}"),
        (st.ckpt_every >= 0, f"ckpt_every must be >= 0, got {st.ckpt_every}"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainConfigError(message)
    return st


def stream_layout(num_streams: int | None, world_size: int, rank: int, batch_size: int) -> tuple[int, list[int]]:
    """(streams in the job, the global indices this rank owns); rank r owns a contiguous block."""
    streams = world_size if num_streams is None else int(num_streams)
    if streams < 1 or streams % world_size:
        raise TrainConfigError(f"data.streams={streams} must be a positive multiple of the {world_size} processes")
    if batch_size % streams:
        raise TrainConfigError(f"batch_size={batch_size} must be a multiple of the {streams} data streams")
    per_rank = streams // world_size
    return streams, list(range(rank * per_rank, (rank + 1) * per_rank))


def load_data_tensor(data_cfg: Mapping[str, Any], layer: int, image_shape: Sequence[int],
                     resolve: Callable[[Any], Path]) -> torch.Tensor | None:
    """Stored variables (N, *image_shape) for ``data.source`` shards / latents / images (the training images of a
    prior on pixels, ``layer: -1``: a folder, a dataset zip or ``emoji:<split>``); None for the generator source."""
    source = data_cfg.get("source", "generator")
    if (layer == -1) != (source == "images"):
        raise TrainConfigError("a prior on the image (layer -1) trains on images: data.source=images "
                               "data.path=<folder, zip or emoji:train>; data.source=images is for layer -1 only")
    if source == "generator":
        return None
    path = data_cfg.get("path")
    if path is None:
        raise TrainConfigError(f"data.source={source} needs data.path")
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    try:
        if source == "images":
            from data import open_images

            if len(paths) != 1:
                raise TrainConfigError(f"data.source=images takes one folder, zip or emoji:<split>, got {len(paths)}")
            spec = str(paths[0])
            images = open_images(spec if spec.startswith("emoji:") else resolve(spec), image_shape[-1])
            data = images.batch(list(range(len(images))))
        elif source == "shards":
            data = LatentShards(resolve(path)).data
        elif source == "latents":
            data = load_saved_latents([resolve(p) for p in paths], layer)
        else:
            raise TrainConfigError(f"unknown data.source {source!r}; use generator, shards, latents or images")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        if isinstance(exc, TrainConfigError):
            raise
        raise TrainConfigError(f"data.path: {exc}") from None
    if layer == 0 and data.ndim == 3:  # solved z (N, num_ws, w_dim) -> the prior's layout
        data = latent_to_layout(data)
    if tuple(data.shape[1:]) != tuple(image_shape):
        raise TrainConfigError(f"stored latents have shape {list(data.shape[1:])}, layer {layer} needs "
                               f"{list(image_shape)}")
    if data.shape[0] < 2:
        raise TrainConfigError(f"need at least 2 stored latents, found {data.shape[0]}")
    return data.float()


def make_streams(ids: Sequence[int], seed: int, device: torch.device, data_cfg: Mapping[str, Any], G: Generator,
                 proxy: MappingProxy, layer: int, data: torch.Tensor | None) -> list[LatentStream]:
    """This rank's data streams (stream i seeded by ``derive_seed(seed, stream, i)``)."""
    return [_stream(derive_seed(seed, _SEED_STREAM, i), device, data_cfg, G, proxy, layer, data) for i in ids]


def _stream(seed: int, device: torch.device, data_cfg: Mapping[str, Any], G: Generator, proxy: MappingProxy,
            layer: int, data: torch.Tensor | None) -> LatentStream:
    if data is not None:
        return LatentStream(seed, device, data=data)
    try:
        return LatentStream(seed, device, G=G, layer=layer, proxy=proxy, noise_mode=str(data_cfg["noise_mode"]),
                            truncation_psi=float(data_cfg["truncation_psi"]))
    except ValueError as exc:
        raise TrainConfigError(f"data: {exc}") from None


def resolve_normalizer(spec: PriorSpec, seed: int, num_samples: int, device: torch.device,
                       data_cfg: Mapping[str, Any], G: Generator, proxy: MappingProxy,
                       data: torch.Tensor | None) -> MinMaxNormalizer:
    """The prior config's min/max when given, else statistics of the data (all stored latents, or
    ``num_samples`` draws of a dedicated generator stream)."""
    if spec.normalization is not None:
        try:
            return MinMaxNormalizer.from_dict(spec.normalization)
        except (KeyError, ValueError) as exc:
            raise TrainConfigError(f"prior.normalization: {exc}") from None
    if data is not None:
        return MinMaxNormalizer(float(data.min()), float(data.max()))
    if num_samples < 2:
        raise TrainConfigError(f"norm_samples must be >= 2, got {num_samples}")
    stream = _stream(derive_seed(seed, _SEED_NORMALIZER), device, data_cfg, G, proxy, spec.layer, None)
    return fit_normalizer(stream, num_samples)


def check_resume(prior: ScorePrior, spec: PriorSpec, image_shape: Sequence[int], generator: Mapping[str, Any],
                 settings: TrainSettings) -> None:
    """The checkpoint must continue THIS configuration: same layer, network, SDE and generator."""
    if prior.training is None or prior.raw_state_dict is None:
        raise TrainConfigError("resume: the checkpoint holds no training state (not written by train_score.py)")
    expected_model = spec.build_model(image_shape)
    pairs = [
        ("layer", prior.layer, spec.layer),
        ("network", prior.model.config, expected_model.config),
        ("sde", prior.sde.config(), spec.build_sde().config()),
        ("generator", (prior.generator or {}).get("name"), generator.get("name")),
    ]
    for name, saved, wanted in pairs:
        if saved != wanted:
            raise TrainConfigError(f"resume: the checkpoint's {name} ({saved}) differs from this run's ({wanted}); "
                                   "resume with the overrides of the original run")
    if prior.step >= settings.steps:
        raise TrainConfigError(f"resume: the checkpoint is at step {prior.step} >= steps={settings.steps}; "
                               "raise steps to train further")
