"""Fused bias + activation + gain + clamp (``bias_act``).

``bias_act(x, b, dim, act, alpha, gain, clamp)`` computes, element-wise,

    y = clamp(act(x + b[broadcast along dim], alpha) * gain, -clamp, clamp)

with the call signature of NVIDIA's stylegan2-ada-pytorch. ``alpha`` and ``gain`` default per activation
(see :data:`activation_funcs`); ``clamp=None`` disables clamping. ``impl='cuda'`` runs this project's
CUDA kernel for GPU tensors when the extension builds and the PyTorch path otherwise; ``impl='ref'`` always
runs the PyTorch path.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["activation_funcs", "ActivationSpec", "bias_act"]


@dataclass(frozen=True)
class ActivationSpec:
    """Description of one activation function.

    Attributes:
        func: ``func(x, alpha) -> y`` in plain PyTorch ops.
        def_alpha: default ``alpha`` (only ``lrelu`` uses it: the negative slope).
        def_gain: default output gain (sqrt(2) for the ReLU family keeps the signal variance).
        cuda_idx: index of the activation inside the CUDA kernel.
        ref: which tensor the first derivative is computed from: ``'x'`` (the pre-activation) or ``'y'``
            (the output); the CUDA path saves only that tensor.
        has_2nd_grad: whether the second derivative is non-zero (then the pre-activation is kept as well).
    """

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    cuda_idx: int
    ref: str
    has_2nd_grad: bool

    # Dict-style access, for code written against an EasyDict of these fields.
    def __getitem__(self, key: str):
        return getattr(self, key)


activation_funcs: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0, 1, "y", False),
    "relu": ActivationSpec(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2), 2, "y", False),
    "lrelu": ActivationSpec(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2), 3, "y", False),
    "tanh": ActivationSpec(lambda x, alpha: torch.tanh(x), 0.0, 1.0, 4, "y", True),
    "sigmoid": ActivationSpec(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, 5, "y", True),
    "elu": ActivationSpec(lambda x, alpha: F.elu(x), 0.0, 1.0, 6, "y", True),
    "selu": ActivationSpec(lambda x, alpha: F.selu(x), 0.0, 1.0, 7, "y", True),
    "softplus": ActivationSpec(lambda x, alpha: F.softplus(x), 0.0, 1.0, 8, "y", True),
    "swish": ActivationSpec(lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2), 9, "x", True),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "cuda",
) -> torch.Tensor:
    """Add a bias, apply an activation, scale and clamp.

    Args:
        x: input of any shape, e.g. ``(N, C, H, W)`` or ``(N, C)``.
        b: optional 1-D bias of length ``x.shape[dim]``.
        dim: the axis of ``x`` the bias runs along.
        act: a key of :data:`activation_funcs`.
        alpha: activation parameter (negative slope for ``lrelu``); ``None`` = the activation's default.
        gain: output scale; ``None`` = the activation's default.
        clamp: clamp the output to ``[-clamp, clamp]``; ``None`` = no clamping.
        impl: ``'cuda'`` or ``'ref'`` (see the module docstring).

    Returns:
        tensor of the shape and dtype of ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError("x must be a tensor")
    if impl not in ("cuda", "ref"):
        raise ValueError(f"impl must be 'cuda' or 'ref', got {impl!r}")
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; choose from {sorted(activation_funcs)}")
    if clamp is not None and clamp < 0:
        raise ValueError("clamp must be non-negative")
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1:
            raise ValueError("b must be a 1-D tensor")
        if not 0 <= dim < x.ndim or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of length {b.shape[0]} does not match dim {dim} of x {tuple(x.shape)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp) if clamp is not None else -1.0

    if impl == "cuda" and x.device.type == "cuda":
        from . import _bias_act_cuda  # local import: keeps CPU-only use free of the build machinery

        if _bias_act_cuda.available():
            if b is None and act == "linear" and gain == 1 and clamp < 0:
                return x  # nothing to do (mirrors the PyTorch path, which returns x itself)
            return _bias_act_cuda.bias_act(x, b, dim, spec.cuda_idx, spec.has_2nd_grad, alpha, gain, clamp)
    return _bias_act_torch(x, b, dim, spec, alpha, gain, clamp)


def _bias_act_torch(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, spec: ActivationSpec, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """PyTorch path; ``clamp < 0`` means no clamping."""
    if b is None and spec.cuda_idx == _LINEAR and gain == 1 and clamp < 0:
        return x  # nothing to do
    if spec.cuda_idx in _PIECEWISE_LINEAR and gain > 0:
        return _PiecewiseLinearBiasAct.apply(x, b, _PwlConfig(dim, spec.cuda_idx, alpha, gain, clamp))
    # Smooth activations: plain ops, autograd provides every derivative order.
    if b is not None:
        x = x + _along(b, dim, x.ndim)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------------------------------------
# Fast path for linear / relu / lrelu (the activations of StyleGAN2).
#
# The plain composition allocates a new tensor at every step (add, activation, gain, clamp) and keeps the
# intermediates alive for autograd. Here the forward pass makes one new tensor and updates it in place,
# and only the input is kept; the backward pass recomputes the pre-activation and applies the derivative
# (slope times the clamp mask) with ops that are themselves differentiable in the incoming gradient, so
# double backward (R1 regularisation) works. With gain > 0 the activations commute with the gain, which
# lets the clamp bounds be expressed on the pre-activation.

_LINEAR, _RELU, _LRELU = 1, 2, 3
_PIECEWISE_LINEAR = (_LINEAR, _RELU, _LRELU)


def _along(b: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """View 1-D ``b`` so that it broadcasts along axis ``dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return b.reshape(shape)


class _PwlConfig:
    """Static arguments of one piecewise-linear bias_act call."""

    def __init__(self, dim: int, act: int, alpha: float, gain: float, clamp: float):
        self.dim, self.act, self.alpha, self.gain, self.clamp = dim, act, alpha, gain, clamp
        # Slope of the activation for negative inputs.
        self.neg_slope = {_LINEAR: 1.0, _RELU: 0.0, _LRELU: alpha}[act]
        # Pre-activation interval in which the output is not clamped: gain * act(v) in [-clamp, clamp].
        lo, hi = -math.inf, math.inf
        if clamp >= 0:
            hi = clamp / gain
            lo = -clamp / (gain * self.neg_slope) if self.neg_slope > 0 else -math.inf
        self.lo, self.hi = lo, hi

    @property
    def needs_input(self) -> bool:
        """Whether the derivative depends on the pre-activation (otherwise it is the constant gain)."""
        return self.neg_slope != 1.0 or self.clamp >= 0


class _PiecewiseLinearBiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor | None, cfg: _PwlConfig) -> torch.Tensor:
        y = torch.add(x, _along(b, cfg.dim, x.ndim)) if b is not None else x.clone()
        if cfg.act == _RELU:
            y.relu_()
        elif cfg.act == _LRELU:
            F.leaky_relu_(y, cfg.alpha)
        if cfg.gain != 1:
            y.mul_(cfg.gain)
        if cfg.clamp >= 0:
            y.clamp_(-cfg.clamp, cfg.clamp)
        ctx.cfg = cfg
        ctx.has_bias = b is not None
        ctx.bias_dtype = b.dtype if b is not None else None
        ctx.save_for_backward(x if cfg.needs_input else None, b if cfg.needs_input else None)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        cfg: _PwlConfig = ctx.cfg
        x, b = ctx.saved_tensors
        if torch.is_grad_enabled():
            dx = _pwl_grad_differentiable(dy, x, b, cfg)
        else:
            dx = _pwl_grad_lean(dy, x, b, cfg)
        db = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            db = dx.sum(dim=[i for i in range(dx.ndim) if i != cfg.dim]).to(ctx.bias_dtype)
        return dx, db, None


def _pwl_grad_differentiable(dy: torch.Tensor, x, b, cfg: _PwlConfig) -> torch.Tensor:
    """dx for a backward pass that is itself recorded (create_graph=True): out-of-place ops only."""
    dx = dy
    if cfg.needs_input:
        v = x + _along(b, cfg.dim, x.ndim) if b is not None else x
        v = v.detach()  # the derivative is piecewise constant: no gradient flows through v
        if cfg.neg_slope != 1.0:
            dx = torch.ops.aten.leaky_relu_backward(dx, v, cfg.neg_slope, False)
        if cfg.clamp >= 0:
            dx = torch.ops.aten.hardtanh_backward(dx, v, cfg.lo, cfg.hi)
    if cfg.gain != 1:
        dx = dx * cfg.gain
    return dx


def _pwl_grad_lean(dy: torch.Tensor, x, b, cfg: _PwlConfig) -> torch.Tensor:
    """dx for a plain backward pass, with as few new buffers as possible.

    On CPUs a fresh multi-megabyte buffer costs several times more than the arithmetic (the pages have to
    be faulted in), so the result is written into the buffer that holds the pre-activation where possible.
    """
    if not cfg.needs_input:
        return dy * cfg.gain if cfg.gain != 1 else dy
    own_v = b is not None
    v = torch.add(x, _along(b, cfg.dim, x.ndim)) if own_v else x
    slope = cfg.neg_slope != 1.0
    clamp = cfg.clamp >= 0
    if slope and clamp:
        dx = torch.ops.aten.hardtanh_backward(dy, v, cfg.lo, cfg.hi)
        torch.ops.aten.leaky_relu_backward.grad_input(dx, v, cfg.neg_slope, False, grad_input=dx)
    elif slope:
        out = v if own_v else torch.empty_like(dy)
        dx = torch.ops.aten.leaky_relu_backward.grad_input(dy, v, cfg.neg_slope, False, grad_input=out)
    else:
        out = v if own_v else torch.empty_like(dy)
        dx = torch.ops.aten.hardtanh_backward.grad_input(dy, v, cfg.lo, cfg.hi, grad_input=out)
    if cfg.gain != 1:
        dx.mul_(cfg.gain)
    return dx
