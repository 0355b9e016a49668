"""The optimisers of a solver round (:func:`inverse.ilo.run_round`).

A round runs a few hundred steps on a handful of small tensors (z, a few noise maps, one layer's features), so
``torch.optim.Adam.step``'s per-call bookkeeping (grouping by device and dtype, hooks, state look-ups: about
0.1 ms a step on the CPU, 1 % of a demo step) is a cost of its own. :class:`FusedAdam` keeps Adam's state in
plain lists and calls the same fused kernel ``torch.optim.Adam(fused=True)`` calls, with the same arguments, so
its updates are bit for bit those of the PyTorch optimiser (tested); where that kernel does not apply
(mixed devices or dtypes, other backends) :func:`round_optimizer` falls back to ``torch.optim.Adam``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# torch.optim.Adam's defaults, which the solver uses (ILO and SGILO set only the learning rate).
BETAS = (0.9, 0.999)
EPS = 1e-8


class FusedAdam:
    """Adam with PyTorch's defaults over tensors of one device and dtype, one fused kernel call a step.

    Args:
        params: the tensors to optimise (leaves with ``requires_grad``); a tensor whose ``grad`` is None at a
            step is skipped at that step, as ``torch.optim.Adam`` skips it.
        lr: learning rate; ``param_groups[0]["lr"]`` changes it between steps, as with a torch optimiser.
    """

    def __init__(self, params: Sequence[Tensor], lr: float):
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [{"lr": float(lr)}]
        # Allocated at the first step a tensor has a gradient, as torch.optim.Adam does (zeros either way).
        self.exp_avgs: list[Tensor | None] = [None] * len(self.params)
        self.exp_avg_sqs: list[Tensor | None] = [None] * len(self.params)
        self.steps: list[Tensor | None] = [None] * len(self.params)

    @staticmethod
    def supports(params: Sequence[Tensor]) -> bool:
        """Whether the fused kernel applies: CPU or CUDA floating-point tensors, all of one device and dtype."""
        if not params or not hasattr(torch, "_fused_adam_"):
            return False
        first = params[0]
        return (first.device.type in ("cpu", "cuda") and first.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                                         torch.float64)
                and all(p.device == first.device and p.dtype == first.dtype for p in params))

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        for i in live:
            if self.steps[i] is None:
                p = self.params[i]
                self.exp_avgs[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.exp_avg_sqs[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.steps[i] = torch.zeros((), dtype=torch.float32, device=p.device)
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_([self.params[i] for i in live], [self.params[i].grad for i in live],
                           [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [], steps,
                           amsgrad=False, lr=self.param_groups[0]["lr"], beta1=BETAS[0], beta2=BETAS[1],
                           weight_decay=0.0, eps=EPS, maximize=False, grad_scale=None, found_inf=None)


def round_optimizer(params: list[Tensor], name: str, lr: float) -> FusedAdam | torch.optim.Optimizer | None:
    """The optimiser of a round: ``adam`` (:class:`FusedAdam` where it applies, else ``torch.optim.Adam``) or
    ``sgd``; None when the round optimises nothing."""
    if not params:
        return None
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if FusedAdam.supports(params):
        return FusedAdam(params, lr)
    return torch.optim.Adam(params, lr=lr, betas=BETAS, eps=EPS)
