"""Score networks: the vision transformer of the published SGILO priors, checkpoint loading, score wrappers.

The ViT treats a layer latent (N, C, H, W) as H·W/p² tokens. Its module tree is laid out so that the
state-dict keys are exactly those of the published checkpoints (DESIGN §4)::

    pos_embedding                              (1, H·W/p², dim)
    dense.dense.{weight,bias}                  (E, E), (E,)        E = (H/p)(W/p), +1 if odd
    embed.0.W                                  (E/2,)              fixed Gaussian Fourier frequencies
    embed.1.{weight,bias}                      (E, E), (E,)
    to_patch_embedding.1.{weight,bias}         (dim, p²·C), (dim,)
    transformer.layers.<i>.0.fn.norm.{weight,bias}           (dim,)
    transformer.layers.<i>.0.fn.fn.to_qkv.weight             (3·heads·dim_head, dim)
    transformer.layers.<i>.0.fn.fn.to_out.0.{weight,bias}    (dim, heads·dim_head), (dim,)
    transformer.layers.<i>.1.fn.norm.{weight,bias}           (dim,)
    transformer.layers.<i>.1.fn.fn.net.0.{weight,bias}       (mlp_dim, dim), (mlp_dim,)
    transformer.layers.<i>.1.fn.fn.net.3.{weight,bias}       (dim, mlp_dim), (dim,)
    projector.{weight,bias}                    (C, dim/p²), (C,)

The network predicts the noise scaled to unit variance; the score is ``-model(x, t) / std(t)``
(:func:`get_score_fn`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torch_utils.misc import strip_prefix

from .sde import SDE, ScoreFn, batch_broadcast

# Architecture of every published SGILO prior (configs/trained_networks/*.yaml of the published code).
PUBLISHED_VIT = {"patch_size": 1, "dim": 1024, "depth": 8, "heads": 1, "mlp_dim": 4096, "dim_head": 64}

# Layer shapes (C, H, W) of the published priors; the latent prior sees z (N, 18, 512) as (N, 512, 18, 1).
PUBLISHED_SHAPES = {
    "latent": (512, 18, 1),
    "layer1": (512, 4, 4),
    "layer2": (512, 8, 8),
    "layer3": (512, 16, 16),
    "syn_layer3": (512, 16, 16),
}


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar time: t (N,) -> [sin(2π t W), cos(2π t W)] (N, 2·len(W)).

    W ~ N(0, scale²) is drawn once and never trained; it is a buffer, so it is saved (key ``W``) and moves
    with the module, but optimisers and EMAs leave it alone.
    """

    def __init__(self, embed_dim: int, scale: float = 30.0):
        super().__init__()
        self.register_buffer("W", torch.randn(embed_dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class Dense(nn.Module):
    """A linear layer kept in its own module so that the checkpoint key reads ``dense.dense.*``."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.dense = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class PatchesToTokens(nn.Module):
    """(N, C, H, W) -> (N, (H/p)(W/p), p·p·C): non-overlapping p×p patches, row-major, features (p1, p2, c)."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(n, c, h // p, p, w // p, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # n, h/p, w/p, p1, p2, c
        return x.reshape(n, (h // p) * (w // p), p * p * c)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        # Index layout (0: Linear, 3: Linear) is part of the checkpoint format.
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head self-attention over tokens (N, n, dim) with inner width heads·dim_head."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, 3 * inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, _ = x.shape
        # (N, n, 3·h·d) -> three (N, h, n, d): channels are ordered (q|k|v, head, d).
        qkv = self.to_qkv(x).reshape(n, tokens, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # softmax(q kᵀ / √d) v; the fused kernel uses the same 1/√dim_head scale.
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, tokens, self.heads * self.dim_head)
        return self.to_out(out)


class Transformer(nn.Module):
    """Pre-norm transformer: x += Attn(LN(x)); x += MLP(LN(x)), ``depth`` times, no final norm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Residual(PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head, dropout=dropout))),
                    Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout=dropout))),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


class ViT(nn.Module):
    """Time-conditioned vision transformer of the SGILO priors: (x (N, C, H, W), t (N,)) -> (N, C, H, W).

    Args:
        width, height: spatial size W, H of the input (divisible by ``patch_size``).
        patch_size: side p of the square patches (1 in every published prior: one token per position).
        dim: token width. depth: number of transformer blocks. heads, dim_head: attention heads and their width.
        mlp_dim: hidden width of the MLP. channels: C.
        dropout, emb_dropout: dropout inside the blocks and on the token embeddings.

    Time enters as one scalar per token: Fourier features of t, a linear layer, swish, a second linear layer
    whose first n outputs are added to the n tokens (broadcast over ``dim``).
    """

    def __init__(
        self,
        width: int,
        height: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        channels: int = 3,
        dim_head: int = 64,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ):
        super().__init__()
        if width % patch_size or height % patch_size:
            raise ValueError(f"image size {height}x{width} is not divisible by the patch size {patch_size}")
        if dim % (patch_size**2):
            raise ValueError(f"dim={dim} must be divisible by patch_size²={patch_size**2} for the projector")
        self.config: dict[str, Any] = dict(
            width=width,
            height=height,
            patch_size=patch_size,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_dim=mlp_dim,
            channels=channels,
            dim_head=dim_head,
            dropout=dropout,
            emb_dropout=emb_dropout,
        )
        self.num_patches = (width // patch_size) * (height // patch_size)
        # Fourier features come in (sin, cos) pairs, hence an even embedding width.
        self.embed_dim = self.num_patches + self.num_patches % 2
        self.patch_size = patch_size
        self.channels = channels

        # Registration order fixes the state-dict order of the published checkpoints.
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches, dim))
        self.dense = Dense(self.embed_dim, self.embed_dim)
        self.embed = nn.Sequential(GaussianFourierProjection(self.embed_dim), nn.Linear(self.embed_dim, self.embed_dim))
        self.to_patch_embedding = nn.Sequential(
            PatchesToTokens(patch_size), nn.Linear(channels * patch_size**2, dim)
        )
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.projector = nn.Linear(dim // patch_size**2, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        tokens = self.to_patch_embedding(x) + self.pos_embedding
        tokens = self.dropout(tokens)
        temb = self.dense(F.silu(self.embed(t)))  # (N, E), E >= number of tokens
        tokens = tokens + temb[:, : tokens.shape[1], None]
        tokens = self.transformer(tokens)
        out = self.projector(tokens_to_grid(tokens, h, w, self.patch_size))
        return out.permute(0, 3, 1, 2)


def tokens_to_grid(tokens: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """(N, (H/p)(W/p), dim) -> (N, H, W, dim/p²): each token's dim splits into p² chunks laid on its own p×p patch.

    For p = 1 (every published prior) this is the published network's plain reshape. For p > 1 the published
    code reshapes row-major, which lays a token's chunks along a run of p² pixels of one row instead of its
    patch; folding them back onto the patch (the inverse of :class:`PatchesToTokens`) keeps the parameter
    shapes and makes p > 1 usable.
    """
    n, _, dim = tokens.shape
    grid = tokens.reshape(n, h // p, w // p, p, p, dim // (p * p))  # n, h/p, w/p, p1, p2, chunk
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, dim // (p * p))


def published_vit(image_shape: Sequence[int], **overrides: Any) -> ViT:
    """The published SGILO prior architecture for a layer of shape (C, H, W) (see ``PUBLISHED_SHAPES``)."""
    c, h, w = image_shape
    kwargs = {**PUBLISHED_VIT, **overrides}
    return ViT(width=w, height=h, channels=c, **kwargs)


def small_vit(
    image_shape: Sequence[int],
    dim: int = 64,
    depth: int = 2,
    heads: int = 2,
    dim_head: int = 32,
    mlp_dim: int = 128,
    patch_size: int = 1,
    dropout: float = 0.0,
) -> ViT:
    """A CPU-sized ViT (≈0.1 M parameters plus the positional table) for the demo generator's layers."""
    c, h, w = image_shape
    return ViT(
        width=w,
        height=h,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_dim=mlp_dim,
        channels=c,
        dim_head=dim_head,
        dropout=dropout,
    )


def load_score_state_dict(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load a score network's weights from a path or a state dict, with or without a ``module.`` prefix.

    Files are read with ``torch.load(weights_only=True)``: data only, no code. A mapping that holds the
    weights under ``'model'``, ``'ema'`` or ``'state_dict'`` (the project's own checkpoints) is unwrapped;
    ``'ema'`` wins, since those are the weights to sample with.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
    state = checkpoint
    for key in ("ema", "model", "state_dict"):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    model.load_state_dict(strip_prefix(state), strict=strict)
    return model


def get_score_fn(sde: SDE, model: nn.Module, train: bool = False) -> ScoreFn:
    """Turn a noise-predicting network into a score: s(x, t) = -model(x, t) / std(t).

    ``std(t)`` is the standard deviation of the SDE's perturbation kernel, so that the network output has
    unit scale at every t. The model receives the continuous time t itself (as in SGILO's continuous
    training), and is switched to train/eval mode as asked before each call.
    """

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if model.training != train:
            model.train(train)
        std = sde.marginal_prob(torch.zeros_like(x), t)[1]
        return -model(x, t) / batch_broadcast(std, x)

    return score_fn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
