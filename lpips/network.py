"""The LPIPS distance (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric"), version 0.1, written for this project.

    d(x, y) = sum_l mean_{h,w} sum_c w_{l,c} * (f̂_l(x) - f̂_l(y))²_{c,h,w}

where f_l are the tapped activations of an ImageNet feature stack applied to the *scaled* image, f̂_l is f_l
divided by its channel-wise L2 norm at every pixel, and w_l ≥ 0 are the learned linear heads
(``lin<l>.model.1.weight``, shape (1, C_l, 1, 1)) published as ``weights/v0.1/<net>.pth``.

Inputs are images in [-1, 1]. The scaling layer maps them to roughly the ImageNet-normalised range the
backbones were trained on: ``(x - shift) / scale`` with LPIPS's constants (computed from the ImageNet
mean/std re-expressed for [-1, 1] inputs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import FeatureStack, build_backbone

__all__ = ["LPIPS", "LinearHeads", "ScalingLayer", "normalize_channels", "resize_images", "read_state_dict"]

WeightsSource = Union[str, "os.PathLike[str]", Mapping[str, torch.Tensor], None]

# LPIPS v0.1 scaling constants for inputs in [-1, 1] (shift, then divide), one per RGB channel.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# Added to the channel norm before dividing, as in LPIPS: keeps all-zero ReLU outputs at 0 instead of NaN.
_NORM_EPS = 1e-10
RESIZE_MODES = ("area", "bilinear", "bicubic")


class ScalingLayer(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (x - shift) / scale. Buffers are non-persistent: they are constants of the
    method, not weights, so neither checkpoint format carries them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _LinearHead(nn.Module):
    """One 1x1 conv C -> 1 without bias, stored as ``model.1`` to match the published key ``lin<l>.model.1.weight``.

    Slot 0 held a Dropout in the original training code; an Identity keeps the key index while making the
    distance deterministic even if someone leaves the module in train mode during an optimisation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LinearHeads(nn.Module):
    """``lin0 .. lin{L-1}``: the per-layer channel weightings; state-dict keys ``lin<l>.model.1.weight``."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.num_layers = len(channels)
        for index, c in enumerate(channels):
            self.add_module(f"lin{index}", _LinearHead(c))

    def __getitem__(self, index: int) -> _LinearHead:
        return getattr(self, f"lin{index}")


def normalize_channels(features: torch.Tensor, eps: float = _NORM_EPS) -> torch.Tensor:
    """Divide (N, C, H, W) features by their L2 norm over C at each pixel (plus ``eps``)."""
    norm = torch.sqrt(torch.sum(features * features, dim=1, keepdim=True))
    return features / (norm + eps)


def resize_images(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """Resize (N, C, H, W) to (N, C, size, size).

    ``area`` averages boxes when shrinking (exact box filter for integer factors, the cheap anti-aliased
    choice) and falls back to bilinear when enlarging, where area sampling would just replicate pixels;
    ``bilinear`` / ``bicubic`` are anti-aliased interpolations.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if mode == "area" and x.shape[-2] >= size and x.shape[-1] >= size:
        return F.interpolate(x, size=(size, size), mode="area")
    interp = "bilinear" if mode == "area" else mode
    return F.interpolate(x, size=(size, size), mode=interp, align_corners=False, antialias=True)


def read_state_dict(source: WeightsSource, keep_prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with ``keep_prefix`` from a file (CPU, ``weights_only``) or a mapping.

    A ``module.`` prefix (DataParallel) is stripped. Other entries are dropped on purpose: torchvision's
    ImageNet files also carry the ``classifier.*`` head, which LPIPS never uses.
    """
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        state = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{source}: expected a state dict, found {type(state).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(keep_prefix):
            out[key] = value
    if not out:
        where = "the given mapping" if isinstance(source, Mapping) else str(source)
        raise ValueError(f"{where} has no '{keep_prefix}*' entries; is it the right kind of weights file?")
    return out


class LPIPS(nn.Module):
    """Learned perceptual distance between image batches.

    Args:
        net: backbone, one of 'vgg' (VGG16), 'alex' (AlexNet), 'squeeze' (SqueezeNet 1.1).
        backbone_weights: torchvision ImageNet checkpoint (path or state dict) for the feature stack; its
            ``features.*`` entries must match exactly. None leaves random weights (tests only; use
            :func:`lpips.load_lpips` to get the published network or nothing).
        head_weights: LPIPS v0.1 linear heads (path or state dict, keys ``lin<l>.model.1.weight``). None leaves
            random heads.
        resize: if given, both images are resized to ``resize`` x ``resize`` before comparing (the published
            SGILO setting is VGG at 256 px); None compares at the input resolution.
        resize_mode: 'area' (default), 'bilinear' or 'bicubic'; see :func:`resize_images`.

    The network is frozen (no parameter requires grad) but differentiable with respect to its inputs.
    ``pretrained`` is True only when both weight sets were loaded.
    """

    def __init__(
        self,
        net: str = "vgg",
        backbone_weights: WeightsSource = None,
        head_weights: WeightsSource = None,
        resize: int | None = None,
        resize_mode: str = "area",
    ) -> None:
        super().__init__()
        if resize is not None and resize < 1:
            raise ValueError(f"resize must be a positive size or None, got {resize}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize_mode!r}; choose one of {RESIZE_MODES}")
        self.net_name = net
        self.resize = resize
        self.resize_mode = resize_mode
        self.scaling_layer = ScalingLayer()
        self.net: FeatureStack = build_backbone(net)
        self.heads = LinearHeads(self.net.channels)
        if backbone_weights is not None:
            self.load_backbone(backbone_weights)
        if head_weights is not None:
            self.load_heads(head_weights)
        self.pretrained = backbone_weights is not None and head_weights is not None
        self.requires_grad_(False)
        self.eval()

    def load_backbone(self, source: WeightsSource) -> None:
        """Strictly load torchvision-layout ``features.*`` weights (extra ``classifier.*`` entries are ignored)."""
        self.net.load_state_dict(read_state_dict(source, "features."), strict=True)

    def load_heads(self, source: WeightsSource) -> None:
        """Strictly load LPIPS v0.1 linear heads (files saved on CUDA are mapped to the CPU)."""
        self.heads.load_state_dict(read_state_dict(source, "lin"), strict=True)

    def _prepare(self, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        """Check, rescale to [-1, 1] if asked, resize if configured, apply the scaling layer."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects (N, 3, H, W) images, got {tuple(x.shape)}")
        if normalize:
            x = 2 * x - 1
        if self.resize is not None:
            x = resize_images(x, self.resize, self.resize_mode)
        return self.scaling_layer(x.to(self.scaling_layer.shift.dtype))

    def features(self, x: torch.Tensor, normalize: bool = False) -> list[torch.Tensor]:
        """Channel-normalised features of one image batch, one (N, C_l, H_l, W_l) tensor per layer.

        Computing them once for a fixed reference and passing them to :meth:`distance_to_features` saves a
        backbone pass per optimisation step.
        """
        return [normalize_channels(f) for f in self.net(self._prepare(x, normalize))]

    def _compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-layer terms from normalised features: weighted channel sum of the squared difference, spatial mean."""
        return [self.heads[i]((a - b) ** 2).mean(dim=(1, 2, 3)) for i, (a, b) in enumerate(zip(fx, fy))]

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> list[torch.Tensor]:
        """Per-layer terms of the distance, each of shape (N,); their sum is ``forward(x, y)``.

        x, y: (N, 3, H, W) (or y with N = 1, broadcast) in [-1, 1], or in [0, 1] with ``normalize=True``.
        """
        px, py = self._prepare(x, normalize), self._prepare(y, normalize)
        if px.shape == py.shape:
            # One backbone pass over both batches: fewer, larger convolutions, same numbers.
            halves = [normalize_channels(f).chunk(2, 0) for f in self.net(torch.cat([px, py], 0))]
            return self._compare([h[0] for h in halves], [h[1] for h in halves])
        fx = [normalize_channels(f) for f in self.net(px)]
        fy = [normalize_channels(f) for f in self.net(py)]
        return self._compare(fx, fy)

    def distance_to_features(
        self, x: torch.Tensor, y_features: list[torch.Tensor], normalize: bool = False
    ) -> torch.Tensor:
        """``forward(x, y)`` given ``y_features = self.features(y)`` computed earlier: (N, 3, H, W) -> (N,)."""
        return torch.stack(self._compare(self.features(x, normalize), y_features), 0).sum(0)

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """LPIPS distance, (N, 3, H, W) x 2 -> (N,). Images in [-1, 1] (or [0, 1] with ``normalize=True``)."""
        return torch.stack(self.layer_distances(x, y, normalize=normalize), 0).sum(0)

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, resize={self.resize}, resize_mode={self.resize_mode!r}"
