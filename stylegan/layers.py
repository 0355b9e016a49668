"""Layer classes of StyleGAN2 (NVIDIA stylegan2-ada-pytorch names, keywords, parameters and numerics).

Dense and convolution layers use the equalised learning rate: weights are stored at unit scale and
multiplied by 1/sqrt(fan_in) at run time. ``modulated_conv2d`` is StyleGAN2's style modulation;
``MappingNetwork`` (z -> w) is a stack of dense layers, shared by the generator and the conditional discriminator.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

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
