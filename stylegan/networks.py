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

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

NoiseMaps = Sequence[Tensor | None] | None

# ---------------------------------------------------------------------------------------------------------------------
# Functional building blocks.


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (the pixel norm applied to z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: Tensor,  # Input features, (N, I, H, W).
    weight: Tensor,  # Shared convolution weight, (O, I, kh, kw).
    styles: Tensor,  # Per-sample input-channel scales, (N, I).
    noise: Tensor | None = None,  # Added after demodulation; broadcastable to (N, O, H', W').
    up: int = 1,  # Integer upsampling factor.
    down: int = 1,  # Integer downsampling factor.
    padding: int = 0,  # Padding applied to the convolution input.
    resample_filter: Tensor | None = None,  # FIR filter for up/downsampling.
    demodulate: bool = True,  # Normalise each output channel to unit expected variance?
    flip_weight: bool = True,  # False = convolution, True = correlation (faster for up == 1).
    fused_modconv: bool = True,  # One grouped convolution with per-sample weights, or scale-conv-scale?
) -> Tensor:
    """StyleGAN2 weight modulation/demodulation followed by a (resampling) convolution. Returns (N, O, H', W')."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape

    # In half precision, the products below can overflow; pre-scaling both factors by their max-norm is
    # harmless because demodulation divides the scale out again.
    if x.dtype == torch.float16 and demodulate:
        max_abs = weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / max_abs)
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    # Demodulation coefficients: 1 / ||w[o] * s||, computed without materialising the per-sample weights,
    # since sum_{i,k} (w[o,i,k] s[i])^2 = sum_i s[i]^2 sum_k w[o,i,k]^2.
    dcoefs = None
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, O)

    if not fused_modconv:
        # Modulate the activations instead of the weights: one ordinary batched convolution.
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(
            x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight
        )
        if demodulate and noise is not None:
            return fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            return x.add_(noise.to(x.dtype))
        return x

    # Per-sample weights, run as one grouped convolution with the batch folded into channels.
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # (N, O, I, kh, kw)
    if demodulate:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(
        x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=batch_size,
        flip_weight=flip_weight,
    )
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x


# ---------------------------------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights are stored at unit scale and rescaled at run time."""

    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Add a learned bias?
        activation: str = "linear",  # Activation after the bias, a key of bias_act.activation_funcs.
        lr_multiplier: float = 1,  # Learning-rate multiplier (the mapping network uses 0.01).
        bias_init: float = 0,  # Initial bias value (1 for the style affines, so styles start near 1).
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_features) -> (N, out_features)."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Equalised-learning-rate convolution with optional FIR up/downsampling (used by the discriminator)."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        kernel_size: int,  # Width and height of the convolution kernel.
        bias: bool = True,  # Add a learned bias?
        activation: str = "linear",  # Activation after the bias.
        up: int = 1,  # Integer upsampling factor.
        down: int = 1,  # Integer downsampling factor.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # Low-pass filter for resampling.
        conv_clamp: float | None = None,  # Clamp the output to +-X (None = no clamping).
        channels_last: bool = False,  # Store the weight in channels-last memory format?
        trainable: bool = True,  # False = weight and bias are buffers (frozen layers).
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_value) if bias_value is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_value is not None:
                self.register_buffer("bias", bias_value)
            else:
                self.bias = None

    def forward(self, x: Tensor, gain: float = 1) -> Tensor:
        """(N, I, H, W) -> (N, O, H*up/down, W*up/down)."""
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample.conv2d_resample(
            x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
            flip_weight=(self.up == 1),
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(torch.nn.Module):
    """z (and optional label c) -> w, broadcast to ``num_ws`` copies; keeps the running mean ``w_avg``."""

    def __init__(
        self,
        z_dim: int,  # Input latent (z) dimensionality, 0 = no latent.
        c_dim: int,  # Conditioning label (c) dimensionality, 0 = no label.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        num_ws: int | None,  # Number of w copies to output, None = return a single (N, w_dim) batch.
        num_layers: int = 8,  # Number of dense layers.
        embed_features: int | None = None,  # Label embedding size, None = w_dim.
        layer_features: int | None = None,  # Hidden layer width, None = w_dim.
        activation: str = "lrelu",  # Activation of every dense layer.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of every dense layer.
        w_avg_beta: float | None = 0.995,  # Decay of the running w average (None = no w_avg, no truncation).
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(widths[idx], widths[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Tensor | None,  # (N, z_dim)
        c: Tensor | None,  # (N, c_dim)
        truncation_psi: float = 1,  # 1 = no truncation; 0 = every w equals w_avg.
        truncation_cutoff: int | None = None,  # Truncate only the first `cutoff` ws (None = all).
        skip_w_avg_update: bool = False,  # Do not update w_avg even in training mode.
    ) -> Tensor:
        """Returns ws (N, num_ws, w_dim), or (N, w_dim) when num_ws is None."""
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            assert self.w_avg_beta is not None, "truncation needs w_avg (w_avg_beta is None)"
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling) + per-pixel noise + bias + leaky ReLU."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        resolution: int,  # Output resolution of this layer.
        kernel_size: int = 3,  # Convolution kernel size.
        up: int = 1,  # Integer upsampling factor (2 for the first layer of a block).
        use_noise: bool = True,  # Add per-pixel noise?
        activation: str = "lrelu",  # Activation after the bias.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # Low-pass filter for upsampling.
        conv_clamp: float | None = None,  # Clamp the output to +-X (None = no clamping).
        channels_last: bool = False,  # Store the weight in channels-last memory format?
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: Tensor,  # (N, in_channels, R/up, R/up)
        w: Tensor,  # (N, w_dim)
        noise_mode: str = "random",  # 'random' | 'const' | 'none'; ignored where `noise` is given.
        fused_modconv: bool = True,  # See modulated_conv2d.
        gain: float = 1,  # Extra output gain.
        noise: Tensor | None = None,  # Explicit unit-variance noise map, (N or 1, 1, R, R) or (R, R).
    ) -> Tensor:
        """Returns (N, out_channels, R, R)."""
        assert noise_mode in ("random", "const", "none"), f"unknown noise_mode {noise_mode!r}"
        styles = self.affine(w)

        scaled_noise = None
        if self.use_noise:
            if noise is not None:
                scaled_noise = noise * self.noise_strength
            elif noise_mode == "random":
                scaled_noise = (
                    torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                    * self.noise_strength
                )
            elif noise_mode == "const":
                scaled_noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(
            x=x, weight=self.weight, styles=styles, noise=scaled_noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution (no demodulation) from features to image channels."""

    def __init__(
        self,
        in_channels: int,  # Number of input feature channels.
        out_channels: int,  # Number of image channels.
        w_dim: int,  # Intermediate latent (w) dimensionality.
        kernel_size: int = 1,  # Convolution kernel size.
        conv_clamp: float | None = None,  # Clamp the output to +-X (None = no clamping).
        channels_last: bool = False,  # Store the weight in channels-last memory format?
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))

    def forward(self, x: Tensor, w: Tensor, fused_modconv: bool = True) -> Tensor:
        """(N, in_channels, R, R), (N, w_dim) -> (N, out_channels, R, R)."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


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
    and running one shared-weight convolution is faster than a grouped convolution, so fused mode is used
    only for a single sample.
    """
    if device.type != "cuda":
        return batch_size == 1
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
        self._check_layer(layer, allow_zero=False)
        block = self.blocks[layer - 1]
        return (block.out_channels, block.resolution, block.resolution), (
            self.img_channels, block.resolution, block.resolution)

    def _check_layer(self, layer: int, allow_zero: bool = True) -> None:
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

    def _run_blocks(self, ws: Tensor, start: int, stop: int, x: Tensor | None, img: Tensor | None,
                    noises: NoiseMaps, **block_kwargs: Any) -> tuple[Tensor | None, Tensor | None]:
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
        _, img = self._run_blocks(ws, 0, self.num_blocks, None, None, noises, **block_kwargs)
        return img

    def forward_to(self, ws: Tensor, layer: int, noises: NoiseMaps = None,
                   **block_kwargs: Any) -> tuple[Tensor | None, Tensor | None]:
        """G1: run blocks 0..layer-1 and return the layer-``layer`` state ``(x, img)``.

        x: (N, C_layer, 2^(layer+1), 2^(layer+1)); img: (N, img_channels, same). Layer 0 returns (None, None).
        """
        self._check_layer(layer)
        return self._run_blocks(ws, 0, layer, None, None, noises, **block_kwargs)

    def forward_from(self, ws: Tensor, layer: int, x: Tensor | None, img: Tensor | None = None,
                     noises: NoiseMaps = None, **block_kwargs: Any) -> Tensor:
        """G2: run blocks layer..end from the layer-``layer`` state and return the image (N, img_channels, R, R).

        ``img=None`` starts the skip branch at zero (earlier to-RGB contributions dropped).
        ``forward_from(ws, k, *forward_to(ws, k)) == forward(ws)`` for every k (same noise).
        """
        self._check_layer(layer)
        if layer > 0 and x is None:
            raise ValueError(f"forward_from(layer={layer}) needs the layer features x")
        if layer == self.num_blocks:
            if img is None:
                raise ValueError("forward_from at the last layer needs img (the finished image)")
            return img
        _, img = self._run_blocks(ws, layer, self.num_blocks, x, img, noises, **block_kwargs)
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
            mapping_kwargs=_plain(mapping_kwargs), synthesis_kwargs=_plain(synthesis_kwargs),
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


def _plain(value: Any) -> Any:
    """Convert containers/numpy scalars to plain Python values (so init_kwargs saves with weights_only)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Discriminator (for GAN training of the demo generator).


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
        self.init_kwargs = _plain(dict(
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
