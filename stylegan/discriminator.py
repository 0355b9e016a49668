"""StyleGAN2's residual discriminator (NVIDIA stylegan2-ada-pytorch names, keywords and parameters)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from stylegan.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from torch_utils.misc import plain_data
from torch_utils.ops import upfirdn2d


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: [fromrgb], conv0, conv1 (2x down), [1x1 residual skip]."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels, 0 = first block (reads the image).
        tmp_channels: int,  # Number of intermediate channels.
        out_channels: int,  # Number of output channels.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of input color channels.
        first_layer_idx: int,  # Index of the first layer (for freeze_layers).
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        activation: str = "lrelu",  # Activation function.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # Low-pass filter for downsampling.
        conv_clamp: float | None = None,  # Clamp convolution outputs to +-X (None = no clamping).
        use_fp16: bool = False,  # Run this block in float16 (on CUDA)?
        fp16_channels_last: bool = False,  # Use channels-last memory format with float16?
        freeze_layers: int = 0,  # Freeze the first N layers of the discriminator.
    ):
        assert in_channels in (0, tmp_channels), "in_channels must be 0 or tmp_channels"
        assert architecture in ("orig", "skip", "resnet"), f"unknown architecture {architecture!r}"
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))

        self.num_layers = 0

        def trainable() -> bool:
            layer_idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp,
                                 channels_last=self.channels_last)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x: Tensor | None, img: Tensor | None, force_fp32: bool = False) -> tuple[Tensor, Tensor | None]:
        """(N, in_channels, R, R), (N, img_channels, R, R) -> (N, out_channels, R/2, R/2), downsampled img or None."""
        use_half = self.use_fp16 and not force_fp32 and (img if x is None else x).device.type == "cuda"
        dtype = torch.float16 if use_half else torch.float32
        memory_format = torch.channels_last if self.channels_last and use_half else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(torch.nn.Module):
    """Appends the average standard deviation over sample groups as extra feature channels."""

    def __init__(
        self,
        group_size: int | None,  # Samples per group (None = whole minibatch).
        num_channels: int = 1,  # Number of appended channels (features are split into this many groups).
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C + num_channels, H, W)."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # Group members along dim 0.
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # Variance over each group.
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # Mean std per group and channel split: (N/g, f).
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head of the discriminator: minibatch-std, conv, two dense layers, optional label projection."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        cmap_dim: int,  # Dimensionality of the label projection, 0 = unconditional.
        resolution: int,  # Resolution of this block (4).
        img_channels: int,  # Number of input color channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int | None = 4,  # Group size of the minibatch-std layer, None = whole minibatch.
        mbstd_num_channels: int = 1,  # Channels of the minibatch-std layer, 0 = disabled.
        activation: str = "lrelu",  # Activation function.
        conv_clamp: float | None = None,  # Clamp convolution outputs to +-X (None = no clamping).
    ):
        assert architecture in ("orig", "skip", "resnet"), f"unknown architecture {architecture!r}"
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
            if mbstd_num_channels > 0 else None
        )
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution**2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, img: Tensor | None, cmap: Tensor | None, force_fp32: bool = False) -> Tensor:
        """(N, in_channels, 4, 4) -> logits (N, 1)."""
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """image (and label) -> realness logit, NVIDIA's StyleGAN2 residual discriminator."""

    def __init__(
        self,
        c_dim: int,  # Conditioning label (c) dimensionality.
        img_resolution: int,  # Input resolution.
        img_channels: int,  # Number of input color channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        channel_base: int = 32768,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        num_fp16_res: int = 0,  # Use float16 (on CUDA) for the N highest resolutions.
        conv_clamp: float | None = None,  # Clamp convolution outputs to +-X (None = no clamping).
        cmap_dim: int | None = None,  # Label projection size, None = channels at 4x4.
        block_kwargs: dict | None = None,  # Arguments of DiscriminatorBlock.
        mapping_kwargs: dict | None = None,  # Arguments of the label MappingNetwork.
        epilogue_kwargs: dict | None = None,  # Arguments of DiscriminatorEpilogue.
    ):
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = plain_data(dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
            cmap_dim=cmap_dim, block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs,
        ))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels_dict[res] if res < img_resolution else 0, channels_dict[res], channels_dict[res // 2],
                resolution=res, first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution), **block_kwargs,
                **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs,
                                        **common)

    def forward(self, img: Tensor, c: Tensor | None = None, **block_kwargs: Any) -> Tensor:
        """img (N, img_channels, R, R), c (N, c_dim) -> logits (N, 1)."""
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)
