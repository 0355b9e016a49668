"""StyleGAN2 generator and discriminator, written for SGILO.

Constructor keywords, defaults, parameter/buffer names, shapes and numerics follow NVIDIA's
stylegan2-ada-pytorch, so its checkpoints load strictly and produce the same images. On top of that,
the synthesis network can be cut at any block boundary (``forward_to`` / ``forward_from``) and accepts
explicit per-layer noise maps, which SGILO optimises.

Vocabulary used below:
  * *block* ``b{res}``: one resolution of the synthesis network (b4, b8, ..., b{img_resolution}).
  * *layer k* (k >= 1): the input of block k, i.e. the state ``(x, img)`` after blocks 0..k-1.
    Layer 0 is the latent itself; layer ``num_blocks`` is the finished image.
  * *noise layer*: a SynthesisLayer with per-pixel noise; they are numbered in execution order
    (b4.conv1, b8.conv0, b8.conv1, b16.conv0, ...).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from stylegan.discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue, MinibatchStdLayer
from stylegan.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MappingNetwork,
    SynthesisLayer,
    ToRGBLayer,
    modulated_conv2d,
    normalize_2nd_moment,
)
from torch_utils.misc import plain_data
from torch_utils.ops import upfirdn2d

NoiseMaps = Sequence[Tensor | None] | None


__all__ = [
    "Conv2dLayer", "Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "FullyConnectedLayer",
    "Generator", "MappingNetwork", "MinibatchStdLayer", "SynthesisBlock", "SynthesisLayer", "SynthesisNetwork",
    "ToRGBLayer", "modulated_conv2d", "normalize_2nd_moment",
]

class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: [conv0 (2x up)], conv1, and the to-RGB skip branch."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels, 0 = first block (starts from a learned constant).
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of output color channels.
        is_last: bool,  # Is this the last block?
        architecture: str = "skip",  # 'orig', 'skip' or 'resnet'.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # Low-pass filter for upsampling.
        conv_clamp: float | None = None,  # Clamp convolution outputs to +-X (None = no clamping).
        use_fp16: bool = False,  # Run this block in float16 (on CUDA)?
        fp16_channels_last: bool = False,  # Use channels-last memory format with float16?
        **layer_kwargs: Any,  # Extra arguments of SynthesisLayer.
    ):
        assert architecture in ("orig", "skip", "resnet"), f"unknown architecture {architecture!r}"
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2, resample_filter=resample_filter,
                conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp,
            channels_last=self.channels_last, **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, channels_last=self.channels_last
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    @property
    def conv_layers(self) -> list[SynthesisLayer]:
        """The block's SynthesisLayers in execution order."""
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(
        self,
        x: Tensor | None,  # Features from the previous block, (N, in_channels, R/2, R/2); None for the first block.
        img: Tensor | None,  # Skip-branch image, (N, img_channels, R/2, R/2), or None.
        ws: Tensor,  # This block's latents, (N, num_conv + num_torgb, w_dim).
        force_fp32: bool = False,  # Ignore use_fp16?
        fused_modconv: bool | None = None,  # None = choose by mode, dtype and device.
        noises: Sequence[Tensor | None] | None = None,  # One explicit noise map (or None) per conv layer.
        **layer_kwargs: Any,  # noise_mode, gain.
    ) -> tuple[Tensor, Tensor | None]:
        """Returns (x, img) at resolution R: (N, out_channels, R, R), (N, img_channels, R, R)."""
        w_iter = iter(ws.unbind(dim=1))
        device = ws.device
        # float16 only where it is fast and supported; on CPU the block stays in float32.
        use_half = self.use_fp16 and not force_fp32 and device.type == "cuda"
        dtype = torch.float16 if use_half else torch.float32
        memory_format = torch.channels_last if self.channels_last and use_half else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = _default_fused_modconv(self.training, dtype, ws.shape[0], device)
        noise_iter = iter(noises) if noises is not None else iter([None] * 2)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, noise=next(noise_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, noise=next(noise_iter), **layer_kwargs)
            x = self.conv1(
                x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), noise=next(noise_iter), **layer_kwargs
            )
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, noise=next(noise_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, noise=next(noise_iter), **layer_kwargs)

        if img is not None:
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


def _default_fused_modconv(training: bool, dtype: torch.dtype, batch_size: int, device: torch.device) -> bool:
    """Pick the faster of two numerically equivalent modulated-convolution paths.

    On CUDA this is NVIDIA's rule (fused per-sample weights in inference). On CPU, scaling the activations
    and running one shared-weight convolution is faster at every batch size: the grouped convolution of
    the fused path is slower, and even at batch 1 its per-sample weights cost an extra weight-gradient
    convolution in the backward pass (measured 45 ms vs 65 ms for a batch-1 step of the 64 px bench model).
    """
    if device.type != "cuda":
        return False
    return (not training) and (dtype == torch.float32 or batch_size == 1)


# ---------------------------------------------------------------------------------------------------------------------
# Networks.


class SynthesisNetwork(torch.nn.Module):
    """ws -> image, as a chain of SynthesisBlocks that can be cut at any block boundary (see module docstring)."""

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (w) dimensionality.
        img_resolution: int,  # Output image resolution (a power of two >= 4).
        img_channels: int,  # Number of color channels.
        channel_base: int = 32768,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        num_fp16_res: int = 0,  # Use float16 (on CUDA) for the N highest resolutions.
        **block_kwargs: Any,  # Arguments of SynthesisBlock.
    ):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0, "img_resolution: power of 2 >= 4"
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels_dict[res // 2] if res > 4 else 0, channels_dict[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, is_last=(res == self.img_resolution), use_fp16=(res >= fp16_resolution),
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if block.is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    # --- structure ----------------------------------------------------------------------------------------------

    @property
    def blocks(self) -> list[SynthesisBlock]:
        """Blocks in execution order (b4 first)."""
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    @property
    def num_blocks(self) -> int:
        return len(self.block_resolutions)

    @property
    def noise_layers(self) -> list[SynthesisLayer]:
        """Every SynthesisLayer with noise, in execution order; index i is noise map i."""
        return [layer for block in self.blocks for layer in block.conv_layers if layer.use_noise]

    @property
    def num_noises(self) -> int:
        return len(self.noise_layers)

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes (1, 1, R, R) of the noise maps, in execution order."""
        return [(1, 1, layer.resolution, layer.resolution) for layer in self.noise_layers]

    def make_noises(self, batch_size: int = 1, mode: str = "random", device: torch.device | str | None = None,
                    generator: torch.Generator | None = None) -> list[Tensor]:
        """Explicit per-sample noise maps (batch_size, 1, R, R): fresh Gaussians ('random') or the stored
        ``noise_const`` maps ('const'); pass them to ``forward`` / ``forward_to`` / ``forward_from``."""
        device = torch.device(device) if device is not None else self.b4.const.device
        maps = []
        for layer in self.noise_layers:
            shape = (batch_size, 1, layer.resolution, layer.resolution)
            if mode == "const":
                maps.append(layer.noise_const.to(device).expand(shape).clone())
            elif mode == "random":
                maps.append(torch.randn(shape, device=device, generator=generator))
            else:
                raise ValueError(f"make_noises: mode must be 'random' or 'const', got {mode!r}")
        return maps

    def layer_shape(self, layer: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Per-sample shapes ((C, H, W) of x, (img_channels, H, W) of img) at layer 1..num_blocks."""
        self.check_layer(layer, allow_zero=False)
        block = self.blocks[layer - 1]
        return (block.out_channels, block.resolution, block.resolution), (
            self.img_channels, block.resolution, block.resolution)

    def check_layer(self, layer: int, allow_zero: bool = True) -> None:
        """Raise ValueError unless ``layer`` is an integer in [0 (or 1), num_blocks]."""
        low = 0 if allow_zero else 1
        if not (isinstance(layer, (int, np.integer)) and low <= layer <= self.num_blocks):
            raise ValueError(f"layer must be an integer in [{low}, {self.num_blocks}], got {layer!r}")

    def _block_ws(self, ws: Tensor) -> list[Tensor]:
        """Slice ws (N, num_ws, w_dim) per block; consecutive blocks share one w (a conv's and the previous to-RGB)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        out, w_idx = [], 0
        for block in self.blocks:
            out.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        return out

    def _block_noises(self, noises: NoiseMaps) -> list[list[Tensor | None] | None]:
        """Split the flat list of noise maps into one list per block."""
        if noises is None:
            return [None] * self.num_blocks
        noises = list(noises)
        if len(noises) != self.num_noises:
            raise ValueError(f"expected {self.num_noises} noise maps (one per noise layer), got {len(noises)}")
        out, idx = [], 0
        for block in self.blocks:
            count = sum(layer.use_noise for layer in block.conv_layers)
            out.append(noises[idx:idx + count])
            idx += count
        return out

    def run_blocks(self, ws: Tensor, start: int, stop: int, x: Tensor | None, img: Tensor | None,
                   noises: NoiseMaps = None, **block_kwargs: Any) -> tuple[Tensor | None, Tensor | None]:
        """Run blocks ``start..stop-1`` from the layer-``start`` state ``(x, img)``; returns the layer-``stop`` state.

        ``ws`` is the full (N, num_ws, w_dim) latent and ``noises`` the full list of maps (or None): each block
        takes its own slice of both. ``forward_to`` / ``forward_from`` are the two ends of this.
        """
        block_ws = self._block_ws(ws)
        block_noises = self._block_noises(noises)
        for idx in range(start, stop):
            x, img = self.blocks[idx](x, img, block_ws[idx], noises=block_noises[idx], **block_kwargs)
        return x, img

    # --- forward passes -------------------------------------------------------------------------------------------

    def forward(self, ws: Tensor, noises: NoiseMaps = None, **block_kwargs: Any) -> Tensor:
        """ws (N, num_ws, w_dim) -> image (N, img_channels, R, R).

        block_kwargs: noise_mode ('random' default | 'const' | 'none'), force_fp32, fused_modconv.
        noises: optional list of ``num_noises`` explicit maps (entries may be None = use noise_mode).
        """
        _, img = self.run_blocks(ws, 0, self.num_blocks, None, None, noises, **block_kwargs)
        return img

    def forward_to(self, ws: Tensor, layer: int, noises: NoiseMaps = None,
                   **block_kwargs: Any) -> tuple[Tensor | None, Tensor | None]:
        """G1: run blocks 0..layer-1 and return the layer-``layer`` state ``(x, img)``.

        x: (N, C_layer, 2^(layer+1), 2^(layer+1)); img: (N, img_channels, same). Layer 0 returns (None, None).
        """
        self.check_layer(layer)
        return self.run_blocks(ws, 0, layer, None, None, noises, **block_kwargs)

    def forward_from(self, ws: Tensor, layer: int, x: Tensor | None, img: Tensor | None = None,
                     noises: NoiseMaps = None, **block_kwargs: Any) -> Tensor:
        """G2: run blocks layer..end from the layer-``layer`` state and return the image (N, img_channels, R, R).

        ``img=None`` starts the skip branch at zero (earlier to-RGB contributions dropped).
        ``forward_from(ws, k, *forward_to(ws, k)) == forward(ws)`` for every k (same noise).
        """
        self.check_layer(layer)
        if layer > 0 and x is None:
            raise ValueError(f"forward_from(layer={layer}) needs the layer features x")
        if layer == self.num_blocks:
            if img is None:
                raise ValueError("forward_from at the last layer needs img (the finished image)")
            return img
        _, img = self.run_blocks(ws, layer, self.num_blocks, x, img, noises, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(torch.nn.Module):
    """z -> MappingNetwork -> ws -> SynthesisNetwork -> image. ``init_kwargs`` records the constructor call."""

    def __init__(
        self,
        z_dim: int,  # Input latent (z) dimensionality.
        c_dim: int,  # Conditioning label (c) dimensionality.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        img_resolution: int,  # Output resolution.
        img_channels: int,  # Number of output color channels.
        mapping_kwargs: dict | None = None,  # Arguments of MappingNetwork.
        synthesis_kwargs: dict | None = None,  # Arguments of SynthesisNetwork.
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            mapping_kwargs=plain_data(mapping_kwargs), synthesis_kwargs=plain_data(synthesis_kwargs),
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        # Built before the mapping network so that a seeded construction draws the same weights as NVIDIA's.
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, **synthesis_kwargs: Any) -> Tensor:
        """z (N, z_dim), c (N, c_dim) -> image (N, img_channels, R, R) in roughly [-1, 1]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
