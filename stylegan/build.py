"""Build a generator and its mapping proxy from a ``configs/generator/*.yaml`` entry.

A generator entry is a mapping with these keys (all but ``name`` optional)::

    name: ffhq                       # identity recorded in score-prior checkpoints
    ckpt: checkpoints/stylegan/ffhq.pkl   # any format stylegan.load_generator reads; null = build from `init`
    gaussian_fit: checkpoints/stylegan/gaussian_fit.pt   # null = fit on the fly (`fit_samples`, `seed`)
    init: {z_dim: ..., ...}          # Generator(**init) when ckpt is null (weights drawn with `seed`)
    seed: 0
    fit_samples: 10000

The recorded form (:func:`generator_record`) is plain data, so that a score prior can say which generator
it was trained on and ``eval_score_based.py`` can rebuild the same network.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import torch

from stylegan.loading import CheckpointError, load_generator
from stylegan.networks import Generator
from stylegan.proxy import MappingProxy
from torch_utils.misc import plain_data

GENERATOR_KEYS = ("name", "ckpt", "gaussian_fit", "init", "seed", "fit_samples", "resolution", "description")


BUNDLE_HINT = " (the published FFHQ files come in the SGILO checkpoint bundle, see the README)"


class GeneratorConfigError(ValueError):
    """A generator entry that cannot be turned into a network (missing file, unknown key, ...)."""


def generator_record(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The plain-data identity of a generator entry (what score-prior checkpoints store)."""
    record = plain_data(cfg)
    unknown = sorted(set(record) - set(GENERATOR_KEYS))
    if unknown:
        raise GeneratorConfigError(f"unknown generator key(s) {unknown}; known: {list(GENERATOR_KEYS)}")
    if not record.get("name"):
        raise GeneratorConfigError("a generator entry needs a 'name'")
    if record.get("ckpt") is None and not record.get("init"):
        raise GeneratorConfigError(f"generator {record['name']!r}: give 'ckpt' (a file) or 'init' (constructor kwargs)")
    return record


def build_generator(
    cfg: Mapping[str, Any],
    device: torch.device | str = "cpu",
    resolve: Any = None,
) -> tuple[Generator, MappingProxy]:
    """Generator (eval mode, no gradients) and its :class:`MappingProxy` for a generator entry.

    Args:
        cfg: a generator entry (see the module docstring).
        device: where both go.
        resolve: optional ``path -> Path`` for relative file names (e.g. ``utils.resolve_path``).
    Raises:
        GeneratorConfigError: one-line message naming the entry and the problem.
    """
    record = generator_record(cfg)
    name = record["name"]
    resolve = resolve or (lambda p: p)
    if record.get("ckpt") is not None:
        path = resolve(record["ckpt"])
        if not os.path.exists(path):
            raise GeneratorConfigError(f"generator {name!r}: checkpoint {path} not found{BUNDLE_HINT}")
        try:
            G = load_generator(path, device="cpu")
        except FileNotFoundError:
            raise GeneratorConfigError(f"generator {name!r}: checkpoint {path} not found") from None
        except CheckpointError as exc:
            raise GeneratorConfigError(f"generator {name!r}: {exc}") from None
    else:
        init = copy.deepcopy(record["init"])
        # A private RNG stream: building the generator must not disturb (or depend on) the caller's seeding.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(record.get("seed") or 0))
            try:
                G = Generator(**init)
            except (TypeError, ValueError, AssertionError) as exc:
                raise GeneratorConfigError(f"generator {name!r}: bad init kwargs ({exc})") from None
    if G.c_dim > 0:
        raise GeneratorConfigError(f"generator {name!r} is conditional (c_dim={G.c_dim}); only c_dim=0 is supported")
    G = G.to(device).eval().requires_grad_(False)

    if record.get("gaussian_fit") is not None:
        fit_path = resolve(record["gaussian_fit"])
        if not os.path.exists(fit_path):
            raise GeneratorConfigError(f"generator {name!r}: gaussian fit {fit_path} not found{BUNDLE_HINT}")
        try:
            proxy = MappingProxy.load(fit_path, device=device)
        except (FileNotFoundError, ValueError) as exc:
            raise GeneratorConfigError(f"generator {name!r}: {exc}") from None
        if proxy.w_dim != G.w_dim:
            raise GeneratorConfigError(f"generator {name!r}: gaussian fit has w_dim {proxy.w_dim}, "
                                       f"the generator {G.w_dim}")
    else:
        proxy = MappingProxy.fit(G.mapping, num_samples=int(record.get("fit_samples") or 10_000),
                                 seed=int(record.get("seed") or 0), device=device)
    return G, proxy.to(device)


def layer_sample_shape(G: Generator, layer: int) -> tuple[int, int, int]:
    """Per-sample shape of the score-prior variable at ``layer``: (w_dim, num_ws, 1) for 0, the image
    (C, H, W) for -1 (a prior on pixels), else the layer's features (C, H, W)."""
    if layer == 0:
        return (G.w_dim, G.num_ws, 1)
    if layer == -1:
        return (G.img_channels, G.img_resolution, G.img_resolution)
    G.synthesis.check_layer(layer, allow_zero=False)
    if layer == G.synthesis.num_blocks:
        raise ValueError(f"layer {layer} is the finished image; priors live on layers 0..{layer - 1}")
    return tuple(G.synthesis.layer_shape(layer)[0])
