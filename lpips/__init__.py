"""The project's own LPIPS (v0.1): VGG16 / AlexNet / SqueezeNet 1.1 feature stacks with torchvision's parameter
names, LPIPS's scaling layer and linear heads, and weight resolution that never falls back to a random network.

    import lpips
    metric = lpips.load_lpips("vgg", resize=256)  # None (and one warning) when weights are unavailable
    if metric is not None:
        d = metric(x, y)  # x, y: (N, 3, H, W) in [-1, 1] -> (N,)

Neither torchvision nor the ``lpips`` PyPI package is used: torchvision cannot be imported with the CPU-only
PyTorch build this project targets, and the ``lpips`` package imports it.
"""

from .backbones import FeatureStack, build_backbone
from .network import LPIPS, normalize_channels, read_state_dict, resize_images
from .weights import BACKBONES, HEAD_SHA256, HEAD_URL, WeightsUnavailable, load_lpips, resolve_backbone, resolve_heads

__all__ = [
    "LPIPS",
    "load_lpips",
    "resolve_backbone",
    "resolve_heads",
    "WeightsUnavailable",
    "BACKBONES",
    "HEAD_URL",
    "HEAD_SHA256",
    "FeatureStack",
    "build_backbone",
    "normalize_channels",
    "read_state_dict",
    "resize_images",
]
