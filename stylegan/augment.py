"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training generative adversarial networks with
limited data"), the part of its pipeline that makes sense for 32 px images. Code our own; transforms, their
distributions and the adjustment rule as the paper describes them.

Every image the discriminator sees, real or generated, passes through the same pipe. Each transform is applied
to each image independently with probability ``p``:

1. x-flip;
2. integer translation by (tx, ty) ~ U(-1/8, 1/8) of the image size, rounded to whole pixels, reflect padding;
3. brightness: ``x + b``, b ~ N(0, 0.2²);
4. contrast: ``mean + (x - mean) · c``, c ~ lognormal(0, (0.5 ln 2)²), about the image's mean;
5. saturation: ``luma + (x - luma) · s``, s ~ lognormal(0, (ln 2)²), luma = the mean over the channels;
6. cutout: a square of half the image side, centred uniformly, set to 0 (mid-grey in [-1, 1]).

All are differentiable in the image, so G's gradient passes through them; each "leaks" nothing into G's
distribution as long as p stays below about 0.8 (the paper's analysis). The strength ``p`` is adjusted from the
overfitting heuristic ``r_t = E[sign(D(real))]``: every ``interval`` steps, ``p += sign(r_t - target) · B ·
interval / (speed_kimg · 1000)`` (B the batch size), clamped to [0, 1], so that p can move from 0 to 1 in
``speed_kimg`` thousand images. The paper's target is 0.6 and its speed 500 kimg; the demo trains for a few
hundred kimg, so its default speed is 100 kimg.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _chance(n: int, p: float, device: torch.device) -> Tensor:
    """(n,) bool: which images get a transform."""
    return torch.rand(n, device=device) < p


def _reflect(index: Tensor, size: int) -> Tensor:
    """Indices reflected into [0, size) (no repeated edge pixel), for shifts below the size."""
    period = 2 * size - 2
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def translate(images: Tensor, shift: Tensor) -> Tensor:
    """Shift each image (N, C, H, W) by whole pixels ``shift`` (N, 2) = (tx, ty), with reflect padding."""
    n, c, h, w = images.shape
    ys = _reflect(torch.arange(h, device=images.device)[None] - shift[:, 1:2], h)  # (N, H)
    xs = _reflect(torch.arange(w, device=images.device)[None] - shift[:, 0:1], w)  # (N, W)
    out = images.gather(2, ys[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, xs[:, None, None, :].expand(n, c, h, w))


class AugmentPipe(torch.nn.Module):
    """The transforms of the module docstring at strength ``p`` (a buffer, saved with the trainer)."""

    def __init__(
        self,
        xflip: bool = True,  # 1. horizontal flips.
        translate: bool = True,  # 2. integer translation.
        color: bool = True,  # 3-5. brightness, contrast, saturation.
        cutout: bool = True,  # 6. cutout.
        translate_max: float = 0.125,  # Largest shift as a fraction of the image size.
        brightness_std: float = 0.2,  # Std of the additive brightness offset (images in [-1, 1]).
        contrast_std: float = 0.5,  # Std of log2 of the contrast factor.
        saturation_std: float = 1.0,  # Std of log2 of the saturation factor.
        cutout_size: float = 0.5,  # Side of the cut-out square as a fraction of the image size.
    ):
        super().__init__()
        self.enabled = dict(xflip=xflip, translate=translate, color=color, cutout=cutout)
        self.translate_max = translate_max
        self.brightness_std = brightness_std
        self.contrast_std = contrast_std
        self.saturation_std = saturation_std
        self.cutout_size = cutout_size
        self.register_buffer("p", torch.zeros([]))

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W), each transform applied per image with probability p."""
        p = float(self.p)
        if p <= 0:
            return images
        n, _, h, w = images.shape
        dev = images.device
        if self.enabled["xflip"]:
            images = torch.where(_chance(n, p, dev)[:, None, None, None], images.flip(3), images)
        if self.enabled["translate"]:
            t = (torch.rand(n, 2, device=dev) * 2 - 1) * self.translate_max * torch.tensor([w, h], device=dev)
            t = t.round().long() * _chance(n, p, dev)[:, None]
            images = translate(images, t)
        if self.enabled["color"]:
            b = torch.randn(n, 1, 1, 1, device=dev) * self.brightness_std
            images = images + b * _chance(n, p, dev)[:, None, None, None]
            c = torch.exp2(torch.randn(n, 1, 1, 1, device=dev) * self.contrast_std)
            c = torch.where(_chance(n, p, dev)[:, None, None, None], c, torch.ones_like(c))
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = mean + (images - mean) * c
            s = torch.exp2(torch.randn(n, 1, 1, 1, device=dev) * self.saturation_std)
            s = torch.where(_chance(n, p, dev)[:, None, None, None], s, torch.ones_like(s))
            luma = images.mean(dim=1, keepdim=True)
            images = luma + (images - luma) * s
        if self.enabled["cutout"]:
            centre = torch.rand(n, 2, 1, 1, device=dev)
            ys = (torch.arange(h, device=dev).view(1, h, 1) + 0.5) / h
            xs = (torch.arange(w, device=dev).view(1, 1, w) + 0.5) / w
            half = self.cutout_size / 2
            inside = ((xs - centre[:, 0]).abs() < half) & ((ys - centre[:, 1]).abs() < half)  # (N, H, W)
            inside = inside & _chance(n, p, dev)[:, None, None]
            images = images * (~inside)[:, None].to(images.dtype)
        return images


class AdaController:
    """Adjusts an :class:`AugmentPipe`'s ``p`` toward the overfitting target ``r_t`` (see the module docstring)."""

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, speed_kimg: float = 100.0):
        if not 0 < target < 1 or interval < 1 or speed_kimg <= 0:
            raise ValueError(f"need 0 < target < 1, interval >= 1, speed_kimg > 0; got {target}, {interval}, "
                             f"{speed_kimg}")
        self.pipe = pipe
        self.target = target
        self.interval = interval
        self.speed_kimg = speed_kimg
        self._sum = 0.0  # sum of sign(D(real)) since the last adjustment
        self._count = 0  # logits in that sum
        self._steps = 0  # observations so far
        self.rt = math.nan

    def observe(self, real_logits: Tensor, batch_size: int) -> None:
        """Accumulate one D step's real logits; adjust p after every ``interval`` observations."""
        self._sum += real_logits.detach().sign().sum().item()
        self._count += real_logits.numel()
        self._steps += 1
        if self._steps % self.interval == 0:
            self.rt = self._sum / max(self._count, 1)
            delta = math.copysign(1.0, self.rt - self.target) * batch_size * self.interval / (self.speed_kimg * 1000)
            self.pipe.p.copy_((self.pipe.p + delta).clamp(0.0, 1.0))
            self._sum, self._count = 0.0, 0

    def state_dict(self) -> dict:
        return {"sum": self._sum, "count": self._count, "steps": self._steps, "rt": self.rt,
                "p": float(self.pipe.p)}

    def load_state_dict(self, state: dict) -> None:
        self._sum, self._count, self._steps = float(state["sum"]), int(state["count"]), int(state["steps"])
        self.rt = float(state["rt"])
        self.pipe.p.fill_(float(state["p"]))
