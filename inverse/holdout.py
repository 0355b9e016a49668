"""Which round to stop at, chosen per image by measurements the solver does not fit (``holdout_fraction``).

The layer rounds fit the measurements ever better, and past some layer the fit leaves the generator's range: on
the demo's in-range references ILO and SGILO gain 2–4 dB at layer 1 and give 1.5–2.8 dB back at layer 2, while on
held-out emoji layer 2 gains (README, *Results*). Which case an image is in can be read off measurements set
aside: a random ``holdout_fraction`` of each measurement's observed entries is left out of the data term, and
after each round the error on them is computed; each chain ends with the image of the round where it was lowest.
This is hold-out validation (cross-validated early stopping) on one image's own measurements.

Per measurement i, with y_i's observed entries O_i and a seeded draw H_i ⊂ O_i of about |O_i|·f entries::

    fit loss     = Σ_{O_i \\ H_i} (A(x) − y_i)² / |O_i \\ H_i|         (what every step descends)
    check error  = Σ_{H_i} (A(x_r) − y_i)² / |H_i|                   (after round r, no gradient)
    final_i      = x_r  with r = argmin_r check error
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from inverse.operator_base import Operator, rows_for


class FitOperator(Operator):
    """``base`` with a share of each measurement's entries left out of the data fit (``keep`` is 0 there).

    keep: (N, *y.shape[1:]) one mask per measurement; a batch of N·K rows (K chains, or K candidates of the search
    start) uses them measurement-major, as ``x.repeat_interleave(K, 0)`` lays rows out.
    """

    def __init__(self, base: Operator, keep: Tensor):
        super().__init__(base.resolution, base.channels, base.noise_std)
        self.base = base
        self.name = base.name
        self.linear = base.linear
        self.register_buffer("keep", keep, persistent=False)

    def A(self, x: Tensor) -> Tensor:
        return self.base.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.base.A_adjoint(y)

    def naive(self, y: Tensor) -> Tensor:
        return self.base.naive(y)

    def measurement_image(self, y: Tensor) -> Tensor:
        return self.base.measurement_image(y)

    def restrict_to_observed(self, noise: Tensor) -> Tensor:
        return self.base.restrict_to_observed(noise)

    def measurement_count(self, y: Tensor) -> Tensor:
        observed = self.base.restrict_to_observed(torch.ones_like(y))
        return (observed * rows_for(self.keep, y, "hold-out")).flatten(1).sum(1)

    def _masked_mse(self, ax: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """Mean of (ax − y)² per row (B,) over the observed entries where ``mask`` (N, ...) is 1."""
        weight = self.base.restrict_to_observed(rows_for(mask, y, "hold-out"))
        return ((ax - y).square() * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)

    def measurement_loss(self, ax: Tensor, y: Tensor) -> Tensor:
        return self._masked_mse(ax, y, self.keep)

    def check_error(self, ax: Tensor, y: Tensor) -> Tensor:
        """Mean squared error (B,) on the held-out entries."""
        return self._masked_mse(ax, y, 1.0 - self.keep)


def holdout_operator(base: Operator, y: Tensor, fraction: float, gens: Sequence[torch.Generator]) -> FitOperator:
    """A :class:`FitOperator` leaving out about ``fraction`` of each measurement's entries, drawn per measurement
    from ``gens`` (one seeded CPU generator each; y holds one row per measurement, (N, ...))."""
    masks = [(torch.rand(y.shape[1:], generator=g) >= fraction).float() for g in gens]
    return FitOperator(base, torch.stack(masks).to(y.device))
