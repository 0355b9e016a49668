"""ImageNet feature stacks that LPIPS compares: VGG16, AlexNet and SqueezeNet 1.1 convolutional parts.

Each stack is an ``nn.Module`` whose only child is ``features``, an ``nn.Sequential`` laid out layer for layer
like torchvision's ``features`` so that the published ImageNet checkpoints (``features.0.weight``, ...,
``features.3.squeeze.weight`` for SqueezeNet's Fire modules) load strictly into it. torchvision itself is not
used: it cannot be imported with this project's CPU-only PyTorch build (DESIGN §5).

LPIPS taps the ReLU outputs listed in ``taps`` (indices into ``features``): relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3 for VGG16; the five conv ReLUs of AlexNet; the first ReLU and the outputs of Fire modules
2, 4, 6 (after the pools), 7, 8 and 9 for SqueezeNet 1.1. Layers after the last tap are still built (a
checkpoint must load strictly) but never run.

ReLUs are not in-place: the tapped activations are kept for the comparison and autograd must see them
unmodified when gradients flow back into the images.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureStack", "Fire", "vgg16_features", "alexnet_features", "squeezenet1_1_features", "build_backbone"]


class FeatureStack(nn.Module):
    """``features`` (torchvision layout) plus the indices whose outputs LPIPS compares.

    ``forward(x)`` with x of shape (N, 3, H, W) returns one tensor per tap, (N, channels[i], H_i, W_i).
    """

    def __init__(self, layers: list[nn.Module], taps: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__()
        if len(taps) != len(channels):
            raise ValueError("one channel count per tap is needed")
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        wanted = set(self.taps)
        last = self.taps[-1]
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                outputs.append(x)
            if index == last:
                break
        return outputs


def _conv_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding), nn.ReLU()]


def vgg16_features() -> FeatureStack:
    """VGG16 (configuration "D", no batch norm): 13 3x3 convs in 5 stages, 2x2 max-pools between them.

    Indices: convs at 0, 2 | 5, 7 | 10, 12, 14 | 17, 19, 21 | 24, 26, 28; pools at 4, 9, 16, 23, 30.
    """
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    c_in = 3
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += _conv_relu(c_in, int(item), 3, padding=1)
            c_in = int(item)
    return FeatureStack(layers, taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512))


def alexnet_features() -> FeatureStack:
    """AlexNet ("one weird trick" variant that torchvision ships): 5 convs, 3x3/2 max-pools after 1, 2 and 5."""
    layers: list[nn.Module] = [
        *_conv_relu(3, 64, 11, stride=4, padding=2),  # 0, 1
        nn.MaxPool2d(kernel_size=3, stride=2),  # 2
        *_conv_relu(64, 192, 5, padding=2),  # 3, 4
        nn.MaxPool2d(kernel_size=3, stride=2),  # 5
        *_conv_relu(192, 384, 3, padding=1),  # 6, 7
        *_conv_relu(384, 256, 3, padding=1),  # 8, 9
        *_conv_relu(256, 256, 3, padding=1),  # 10, 11
        nn.MaxPool2d(kernel_size=3, stride=2),  # 12
    ]
    return FeatureStack(layers, taps=(1, 4, 7, 9, 11), channels=(64, 192, 384, 256, 256))


class Fire(nn.Module):
    """SqueezeNet Fire module: 1x1 squeeze, then parallel 1x1 and 3x3 expands concatenated on channels.

    (N, c_in, H, W) -> (N, e1 + e3, H, W). Child names match torchvision's so checkpoint keys line up.
    """

    def __init__(self, c_in: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze(x))
        e1 = self.expand1x1_activation(self.expand1x1(s))
        e3 = self.expand3x3_activation(self.expand3x3(s))
        return torch.cat([e1, e3], 1)


def squeezenet1_1_features() -> FeatureStack:
    """SqueezeNet 1.1: a 3x3/2 conv, then Fire modules in three groups separated by ceil-mode 3x3/2 max-pools."""
    pool = dict(kernel_size=3, stride=2, ceil_mode=True)  # ceil mode: torchvision's pools keep partial windows
    layers: list[nn.Module] = [
        *_conv_relu(3, 64, 3, stride=2),  # 0, 1
        nn.MaxPool2d(**pool),  # 2
        Fire(64, 16, 64, 64),  # 3
        Fire(128, 16, 64, 64),  # 4
        nn.MaxPool2d(**pool),  # 5
        Fire(128, 32, 128, 128),  # 6
        Fire(256, 32, 128, 128),  # 7
        nn.MaxPool2d(**pool),  # 8
        Fire(256, 48, 192, 192),  # 9
        Fire(384, 48, 192, 192),  # 10
        Fire(384, 64, 256, 256),  # 11
        Fire(512, 64, 256, 256),  # 12
    ]
    return FeatureStack(layers, taps=(1, 4, 7, 9, 10, 11, 12), channels=(64, 128, 256, 384, 384, 512, 512))


_BUILDERS = {"vgg": vgg16_features, "alex": alexnet_features, "squeeze": squeezenet1_1_features}


def build_backbone(net: str) -> FeatureStack:
    """The feature stack for ``net`` in {'vgg', 'alex', 'squeeze'}, randomly initialised."""
    try:
        return _BUILDERS[net]()
    except KeyError:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(_BUILDERS)}") from None
