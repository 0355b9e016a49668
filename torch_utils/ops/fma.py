"""Fused multiply-add ``fma(a, b, c) = a * b + c`` with broadcasting.

One ``torch.addcmul`` pass in the forward direction; the backward reduces each gradient back to the shape
of its own input (sum over the broadcast axes), which is what autograd would do for ``a * b + c`` but
without materialising the intermediate product in the forward pass.
"""
from __future__ import annotations

import torch

__all__ = ["fma"]


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return ``a * b + c``; all three broadcast against each other (e.g. (N,C,H,W), (N,C,1,1), (N,1,H,W))."""
    return _FusedMultiplyAdd.apply(a, b, c)


def _sum_to_shape(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient ``g`` to ``shape`` by summing over the axes that were expanded."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = [i for i in range(g.ndim) if i < lead or (shape[i - lead] == 1 and g.shape[i] != 1)]
    if axes:
        g = g.sum(dim=axes, keepdim=True)
    return g.reshape(shape)


class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        # Ordinary (differentiable) ops, so that a double backward through fma works.
        da = _sum_to_shape(grad * b, a.shape) if ctx.needs_input_grad[0] else None
        db = _sum_to_shape(grad * a, b.shape) if ctx.needs_input_grad[1] else None
        dc = _sum_to_shape(grad, ctx.c_shape) if ctx.needs_input_grad[2] else None
        return da, db, dc
