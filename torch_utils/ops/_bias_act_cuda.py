"""GPU backend of :func:`torch_utils.ops.bias_act.bias_act`: this project's kernel in ``cuda/bias_act.cu``.

Autograd: the forward pass keeps only the input ``x`` (and ``b``); the kernel recomputes the activation from
``x + b`` for the gradient (mode 1) and for its derivative (mode 2), which gives exact second-order
gradients (needed by R1 regularisation) and lets callers modify the output in place.
"""
from __future__ import annotations

import torch

from . import _plugin


def available() -> bool:
    """Whether the extension is built (building it on the first call); warns once if it cannot be."""
    return _plugin.load("bias_act") is not None


def _reduce_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``t`` over every axis except ``dim`` -> 1-D tensor of length ``t.shape[dim]``."""
    return t.sum(dim=[i for i in range(t.ndim) if i != dim])


class _Config:
    """Static arguments of one bias_act call (kept out of the autograd graph)."""

    def __init__(self, dim: int, act_idx: int, has_2nd_grad: bool, alpha: float, gain: float, clamp: float):
        self.dim, self.act_idx, self.has_2nd_grad = dim, act_idx, has_2nd_grad
        self.alpha, self.gain, self.clamp = alpha, gain, clamp

    def run(self, x: torch.Tensor, b: torch.Tensor | None, g: torch.Tensor | None, mode: int) -> torch.Tensor:
        plugin = _plugin.load("bias_act")
        return plugin.bias_act(x, b, g, mode, self.dim, self.act_idx, self.alpha, self.gain, self.clamp)


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor | None, cfg: _Config) -> torch.Tensor:
        ctx.cfg = cfg
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, b)
        return cfg.run(x, b, None, 0)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, b = ctx.saved_tensors
        cfg: _Config = ctx.cfg
        dx = db = None
        if ctx.needs_input_grad[0] or (ctx.has_bias and ctx.needs_input_grad[1]):
            dx = _BiasActGrad.apply(dy, x, b, cfg)
        if ctx.has_bias and ctx.needs_input_grad[1]:
            db = _reduce_to_bias(dx, cfg.dim)
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * d(bias_act)/dx, as a function of (dy, x, b) so that it can be differentiated once more."""

    @staticmethod
    def forward(ctx, dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, cfg: _Config) -> torch.Tensor:
        ctx.cfg = cfg
        ctx.has_bias = b is not None
        ctx.save_for_backward(dy, x, b)
        return cfg.run(x, b, dy, 1)

    @staticmethod
    def backward(ctx, ddx: torch.Tensor):
        dy, x, b = ctx.saved_tensors
        cfg: _Config = ctx.cfg
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            # The gradient is linear in dy with the same per-element factor.
            d_dy = _BiasActGrad.apply(ddx, x, b, cfg)
        wants_x = ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2])
        if wants_x and cfg.has_2nd_grad:
            d_x = cfg.run(x, b, ddx * dy, 2)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                d_b = _reduce_to_bias(d_x, cfg.dim)
        # Piecewise-linear activations (and the clamp) have a zero second derivative: None means zeros.
        return d_dy, d_x, d_b, None


def bias_act(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act_idx: int, has_2nd_grad: bool, alpha: float, gain: float,
    clamp: float,
) -> torch.Tensor:
    """bias_act on a CUDA tensor (arguments validated by the caller; ``clamp < 0`` disables clamping)."""
    if b is not None:
        b = b.to(x.dtype)
    return _BiasAct.apply(x, b, _Config(dim, act_idx, has_2nd_grad, alpha, gain, clamp))
