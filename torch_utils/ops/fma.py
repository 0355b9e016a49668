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
        need_a, need_b, need_c = ctx.needs_input_grad
        dc = _sum_to_shape(grad, ctx.c_shape) if need_c else None
        lean = need_a and need_b and a.shape == grad.shape and b.numel() < grad.numel()
        lean = lean and a.dtype == grad.dtype and b.dtype == grad.dtype
        if torch.is_grad_enabled() or not lean:
            # Ordinary (differentiable) ops, so that a double backward through fma works.
            da = _sum_to_shape(grad * b, a.shape) if need_a else None
            db = _sum_to_shape(grad * a, b.shape) if need_b else None
            return da, db, dc
        # Plain backward of the common case (a full-size, b broadcast): one scratch buffer serves both
        # products -- a fresh large buffer costs more than the multiplication on a CPU.
        scratch = torch.mul(grad, a)
        db = _sum_to_shape(scratch, b.shape)  # a reduction: a new, small tensor
        da = torch.mul(grad, b, out=scratch)
        return da, db, dc
