"""The forward-operator contract: the base class every operator of :mod:`inverse.operators` derives from.

An operator maps images ``x`` of shape (N, C, H, W) in [-1, 1] to measurements ``y`` (batch first). Subclasses
implement ``A`` (and ``A_adjoint`` where linear) and ``naive``; the base class supplies the seeded noise model
(``measure``), the data fit (``loss``, ``measurement_loss``) and the shape check. The concrete operators, their
registry and ``build_operator`` are in :mod:`inverse.operators`, which also re-exports these names.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from utils import UserError

__all__ = ["Operator", "OperatorConfigError", "cpu_generator", "rows_for"]


class OperatorConfigError(UserError, ValueError):
    """A bad ``operators`` setting. A ``ValueError`` for library callers; a ``UserError`` so that the entry scripts
    print it as one line without a traceback."""


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the random parts of an operator are the same on every device."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def rows_for(values: Tensor, t: Tensor, what: str) -> Tensor:
    """Per-measurement ``values`` (M, ...) laid out for the batch ``t`` (N, ...), on its device and dtype: as they
    are when M is 1 or N, else each repeated N/M times in a row (measurement-major, as ``x.repeat_interleave(K, 0)``
    lays out K chains or candidates per measurement). ``what`` names them in the error."""
    m, n = values.shape[0], t.shape[0]
    values = values.to(device=t.device, dtype=t.dtype)
    if m == 1 or m == n:
        return values
    if n % m == 0:
        return values.repeat_interleave(n // m, 0)
    raise ValueError(f"{what}: {m} masks cannot serve a batch of {n} images (need 1, {m} or a multiple).")


class Operator(torch.nn.Module):
    """Base class of the forward operators (the contract: :mod:`inverse.operators`' docstring).

    Attributes:
        name: the ``operator_type`` this class is registered under.
        linear: whether ``A`` is linear (then ``A_adjoint`` is its exact transpose).
        noise_std: the configured measurement noise σ, used by ``measure`` when ``noise_std`` is not passed.
    """

    name: str = "operator"
    linear: bool = True

    def __init__(self, resolution: int, channels: int = 3, noise_std: float = 0.0) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.noise_std = float(noise_std)

    # -- the map itself ------------------------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        """Noiseless forward map: images (N, C, H, W) -> measurements (N, ...)."""
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Exact transpose of ``A``: measurements (N, ...) -> images (N, C, H, W). Linear operators only."""
        raise NotImplementedError(f"operator {self.name!r} is not linear and has no adjoint")

    def naive(self, y: Tensor) -> Tensor:
        """Naive reconstruction (N, C, H, W) in [-1, 1], reported beside the methods."""
        raise NotImplementedError

    def measurement_image(self, y: Tensor) -> Tensor:
        """A picture of the measurements, (N, C', H', W') in [-1, 1], to save as a PNG."""
        return y.clamp(-1.0, 1.0)

    # -- noise and data fit --------------------------------------------------------------------------------------
    def restrict_to_observed(self, noise: Tensor) -> Tensor:
        """Zero the noise (shaped like ``A(x)``) on entries that are not observed; only inpainting has such entries."""
        return noise

    def measure(self, x: Tensor, noise_std: float | None = None, generator: torch.Generator | None = None,
                noise: Tensor | None = None) -> Tensor:
        """Measurements ``y = A(x) + σ ξ``, ``ξ ~ N(0, I)`` drawn from ``generator`` (reproducible when seeded).

        Args:
            x: images (N, C, H, W) in [-1, 1].
            noise_std: σ; ``None`` uses the configured ``self.noise_std``.
            generator: source of ξ; it may live on another device than ``x`` (the noise is drawn there and moved),
                so a CPU generator gives the same measurements on every device.
            noise: ξ itself, shaped like ``A(x)`` (e.g. drawn per image by the caller); overrides ``generator``.
        Returns:
            y with the shape of ``A(x)``.
        """
        sigma = self.noise_std if noise_std is None else float(noise_std)
        if sigma < 0 or not math.isfinite(sigma):
            raise OperatorConfigError(f"noise_std must be a finite number >= 0, got {sigma}.")
        with torch.no_grad():
            y = self.A(x)
            if y is x:  # identity operator: never hand back the caller's tensor itself
                y = y.clone()
            if sigma == 0:
                return y
            if noise is None:
                device = generator.device if generator is not None else y.device
                noise = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype)
            return y + sigma * self.restrict_to_observed(noise.to(device=y.device, dtype=y.dtype))

    def _observed_count(self, y: Tensor) -> Tensor:
        """Number of observed entries per sample, shape (N,)."""
        return torch.full((y.shape[0],), y[0].numel(), dtype=y.dtype, device=y.device)

    def measurement_count(self, y: Tensor) -> Tensor:
        """Number of measurements per sample (N,): the entries of y that the operator observes."""
        return self._observed_count(y)

    def loss(self, x_hat: Tensor, y: Tensor) -> Tensor:
        """Per-sample mean squared error ``‖A(x_hat) − y‖² / #observed``, shape (N,); differentiable in x_hat."""
        return self.measurement_loss(self.A(x_hat), y)

    def measurement_loss(self, ax: Tensor, y: Tensor) -> Tensor:
        """:meth:`loss` for measurements ``ax = A(x_hat)`` already computed (a solver that needs ``A(x_hat)``
        for other terms too applies the operator once)."""
        diff = (ax - y).flatten(1)
        return diff.square().sum(1) / self._observed_count(y)

    def rgb_view(self, y: Tensor) -> Tensor:
        """:meth:`measurement_image` with 3 channels (grayscale repeated): what RGB networks such as LPIPS see."""
        image = self.measurement_image(y)
        return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image

    def _check_image(self, x: Tensor) -> None:
        expected = (self.channels, self.resolution, self.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.name}: expected images of shape (N, {expected[0]}, {expected[1]}, {expected[2]}), "
                             f"got {tuple(x.shape)}.")

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, channels={self.channels}, noise_std={self.noise_std}"
