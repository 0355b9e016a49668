"""Load and save generators: ``load_generator(path)`` reads every checkpoint format the project accepts.

Accepted formats (recognised from the file contents, not the suffix):

* **NVIDIA stylegan2-ada-pytorch network pickle** (``.pkl``, a dict with ``G_ema``): read with the restricted
  unpickler of :mod:`torch_utils.persistence`, which never executes the source code such pickles embed; the
  generator is rebuilt as :class:`stylegan.networks.Generator` from the pickled ``_init_kwargs`` and its
  tensors are copied strictly.
* **SGILO generator file**, written by :func:`save_generator`:
  ``{'format': 'sgilo.generator', 'version': 1, 'init_kwargs': ..., 'state_dict': ...}``.
* **Whole-Generator state dict** (``.pt``/``.pth``, NVIDIA key names): the constructor arguments are inferred
  from key names and shapes (:func:`infer_generator_kwargs`); whatever cannot be inferred (``conv_clamp``,
  ``num_fp16_res``, the mapping ``lr_multiplier`` ...) takes NVIDIA's defaults unless passed explicitly.
* **rosinality stylegan2-pytorch checkpoint** (``{'g_ema': state_dict, 'latent_avg': ...}``, or a bare
  ``g_ema`` state dict): keys converted to NVIDIA's layout by :func:`convert_rosinality_state_dict`.

Every ``torch.save`` file is read with ``torch.load(weights_only=True)``. Any failure raises
:class:`CheckpointError` (or its subclass :class:`UnsafeCheckpointError` for refused content) whose message is one
line naming the file and the accepted formats.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from stylegan.networks import Generator
from torch_utils.misc import strip_prefix
from torch_utils.persistence import (
    CheckpointError,
    PersistentRecord,
    UnsafeCheckpointError,
    load_network_pickle,
    load_state_dict_strict,
    merge_kwargs,
    plain,
    safe_torch_load,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "UnsafeCheckpointError",
    "load_generator",
    "save_generator",
    "generator_from_state_dict",
    "infer_generator_kwargs",
    "convert_rosinality_state_dict",
]

FORMAT_NAME = "sgilo.generator"
FORMAT_VERSION = 1
ACCEPTED_FORMATS = (
    "NVIDIA stylegan2-ada-pytorch network pickle with 'G_ema'; SGILO generator file (stylegan.save_generator); "
    "whole-Generator state dict .pt/.pth; rosinality stylegan2-pytorch checkpoint with 'g_ema'"
)

_ZIP_MAGIC = b"PK\x03\x04"
# A legacy (pre-1.6) torch.save file starts with a protocol-2 pickle of torch's magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


# ---------------------------------------------------------------------------------------------------------------------
# Public API.


def save_generator(G: Generator, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``G`` in the project's self-describing format (constructor kwargs + weights); returns the path.

    Raises FileExistsError rather than replace an existing file, unless ``overwrite``.
    """
    init_kwargs = getattr(G, "init_kwargs", None)
    if not isinstance(init_kwargs, Mapping):
        raise TypeError("save_generator needs a stylegan.networks.Generator (with init_kwargs)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "init_kwargs": plain(dict(init_kwargs)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in G.state_dict().items()},
    }
    with open(path, "wb" if overwrite else "xb") as f:
        torch.save(payload, f)
    return path


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu", **init_kwargs: Any) -> Generator:
    """Load a generator from any accepted format (see the module docstring); eval mode, gradients off.

    ``init_kwargs`` override or complete the constructor arguments found in (or inferred from) the file, with
    nested dicts merged, e.g. ``load_generator(p, synthesis_kwargs={'conv_clamp': 256})``. The weights must
    still fit the resulting architecture exactly.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"load_generator: device {device} asked for, but CUDA is not available here")
    path = Path(path)
    try:
        obj = _read(path)
        G = _to_generator(obj, init_kwargs)
    except CheckpointError as exc:
        raise exc.with_context(path=path, accepted=ACCEPTED_FORMATS) from None
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise CheckpointError(path, reason, ACCEPTED_FORMATS) from None
    return G.to(device).eval().requires_grad_(False)


def generator_from_state_dict(state_dict: Mapping[str, torch.Tensor], **init_kwargs: Any) -> Generator:
    """Build a Generator for a whole-Generator state dict (NVIDIA key names), inferring what is not given."""
    kwargs = merge_kwargs(infer_generator_kwargs(state_dict), init_kwargs)
    G = _construct(kwargs)
    load_state_dict_strict(G, state_dict)
    return G


# ---------------------------------------------------------------------------------------------------------------------
# Reading files.


def _read(path: Path) -> Any:
    """The file's top-level object, read data-only; the route is chosen from the first bytes."""
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a file")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if not head:
        raise CheckpointError(path, "the file is empty")
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_TORCH_MAGIC:
        return safe_torch_load(path)
    if head[:1] != b"\x80":  # every pickle of protocol >= 2 starts with the PROTO opcode
        raise CheckpointError(path, "unknown file format (neither a PyTorch checkpoint nor a pickle)")
    return load_network_pickle(path)


def _to_generator(obj: Any, overrides: Mapping[str, Any]) -> Generator:
    """Dispatch on the loaded object's shape."""
    if isinstance(obj, PersistentRecord):
        return _from_record(obj, overrides)
    if not isinstance(obj, Mapping):
        raise CheckpointError(None, f"the file holds a {type(obj).__name__}, not a generator checkpoint")

    if obj.get("format") == FORMAT_NAME:
        return _from_own_format(obj, overrides)
    if "G_ema" in obj:
        g = obj["G_ema"]
        if isinstance(g, PersistentRecord):
            return _from_record(g, overrides)
        if _is_tensor_dict(g):
            return _from_state_dict(g, overrides, extra=obj)
        raise CheckpointError(None, f"'G_ema' holds a {type(g).__name__}, not a network")
    if "g_ema" in obj:
        if not _is_tensor_dict(obj["g_ema"]):
            raise CheckpointError(None, "'g_ema' is not a state dict")
        return _from_rosinality(obj["g_ema"], obj.get("latent_avg"), overrides)
    if "state_dict" in obj and _is_tensor_dict(obj["state_dict"]):
        return _from_state_dict(obj["state_dict"], overrides, extra=obj)
    if _is_tensor_dict(obj) and obj:
        return _from_state_dict(obj, overrides, extra=None)

    keys = ", ".join(repr(k) for k in list(obj)[:8])
    raise CheckpointError(None, f"unrecognised checkpoint contents (top-level keys: {keys or 'none'})")


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in value.items())


def _construct(kwargs: Mapping[str, Any]) -> Generator:
    try:
        return Generator(**kwargs)
    except TypeError as exc:
        raise ValueError(f"Generator does not accept the checkpoint's arguments: {exc}") from exc


def _from_record(record: PersistentRecord, overrides: Mapping[str, Any]) -> Generator:
    """NVIDIA pickle: construct from the pickled init kwargs, then copy the tensors strictly."""
    if record.class_name != "Generator":
        raise ValueError(f"'G_ema' is a pickled {record.class_name}, expected a Generator")
    if record.init_args:
        raise ValueError("the pickled Generator was constructed with positional arguments; expected keywords only")
    G = _construct(merge_kwargs(record.init_kwargs, overrides))
    load_state_dict_strict(G, record.state_dict())
    return G


def _from_own_format(obj: Mapping[str, Any], overrides: Mapping[str, Any]) -> Generator:
    version = obj.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"SGILO generator file version {version!r} is newer than this code ({FORMAT_VERSION})")
    init_kwargs, state_dict = obj.get("init_kwargs"), obj.get("state_dict")
    if not isinstance(init_kwargs, Mapping) or not _is_tensor_dict(state_dict):
        raise ValueError("SGILO generator file lacks 'init_kwargs' or 'state_dict'")
    G = _construct(merge_kwargs(plain(dict(init_kwargs)), overrides))
    load_state_dict_strict(G, state_dict)
    return G


def _from_state_dict(state_dict: Mapping[str, torch.Tensor], overrides: Mapping[str, Any],
                     extra: Mapping[str, Any] | None) -> Generator:
    state_dict = strip_prefix(state_dict, "module.", require_all=True)
    if any(k.startswith("style.") or k == "input.input" for k in state_dict):  # a bare rosinality g_ema
        latent_avg = extra.get("latent_avg") if extra is not None else None
        return _from_rosinality(state_dict, latent_avg, overrides)
    return generator_from_state_dict(state_dict, **overrides)


# ---------------------------------------------------------------------------------------------------------------------
# Inferring constructor arguments from a state dict.


def infer_generator_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor keywords of the Generator that produced ``state_dict`` (NVIDIA key names), as far as the
    keys and shapes determine them. Not recoverable from weights: ``mapping_kwargs.lr_multiplier``,
    ``activation``, ``synthesis_kwargs.conv_clamp``, ``num_fp16_res``; NVIDIA's defaults apply to those."""
    sd = state_dict

    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"not a StyleGAN2 generator state dict: missing {key!r}")
        return sd[key]

    fc_ids = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    if not fc_ids or fc_ids != list(range(len(fc_ids))):
        raise ValueError("not a StyleGAN2 generator state dict: no mapping.fc0 ... mapping.fcN layers")
    num_layers = len(fc_ids)
    fc_first, fc_last = need("mapping.fc0.weight"), need(f"mapping.fc{num_layers - 1}.weight")
    w_dim = int(fc_last.shape[0])

    c_dim, embed_features = 0, 0
    if "mapping.embed.weight" in sd:
        embed_features, c_dim = (int(v) for v in sd["mapping.embed.weight"].shape)
    z_dim = int(fc_first.shape[1]) - embed_features
    mapping_kwargs: dict[str, Any] = {"num_layers": num_layers}
    if c_dim and embed_features != w_dim:
        mapping_kwargs["embed_features"] = embed_features
    if num_layers > 1 and int(fc_first.shape[0]) != w_dim:
        mapping_kwargs["layer_features"] = int(fc_first.shape[0])
    if "mapping.w_avg" not in sd:
        mapping_kwargs["w_avg_beta"] = None

    resolutions = sorted({int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    expected = [2**i for i in range(2, 2 + len(resolutions))]
    if not resolutions or resolutions != expected:
        raise ValueError(f"not a StyleGAN2 generator state dict: synthesis blocks {resolutions}, expected b4, b8, ...")
    img_resolution = resolutions[-1]
    channels = {res: int(need(f"synthesis.b{res}.conv1.weight").shape[0]) for res in resolutions}
    img_channels = int(need(f"synthesis.b{img_resolution}.torgb.weight").shape[0])
    channel_base, channel_max = _infer_channel_rule(channels)

    synthesis_kwargs: dict[str, Any] = {"channel_base": channel_base, "channel_max": channel_max}
    if any(k.endswith(".skip.weight") for k in sd):
        synthesis_kwargs["architecture"] = "resnet"
    elif sum(f"synthesis.b{res}.torgb.weight" in sd for res in resolutions) == 1:
        synthesis_kwargs["architecture"] = "orig"
    if not any(k.endswith(".noise_const") for k in sd):
        synthesis_kwargs["use_noise"] = False
    kernel_size = int(need(f"synthesis.b{img_resolution}.conv1.weight").shape[-1])
    if kernel_size != 3:
        synthesis_kwargs["kernel_size"] = kernel_size

    return {"z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "img_resolution": img_resolution,
            "img_channels": img_channels, "mapping_kwargs": mapping_kwargs, "synthesis_kwargs": synthesis_kwargs}


def _infer_channel_rule(channels: Mapping[int, int]) -> tuple[int, int]:
    """``(channel_base, channel_max)`` with ``min(channel_base // res, channel_max) == channels[res]`` for every
    block, NVIDIA's channel rule. The smallest such ``channel_base`` is returned (every valid one gives the same
    network)."""
    channel_max = max(channels.values())
    # Each block needs channel_base >= channels[res] * res; the largest of these bounds is the candidate.
    channel_base = max(ch * res for res, ch in channels.items())
    if any(min(channel_base // res, channel_max) != ch for res, ch in channels.items()):
        raise ValueError(
            f"per-block channel counts {dict(channels)} do not follow min(channel_base // res, channel_max)")
    return channel_base, channel_max


# ---------------------------------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch.
#
# Facts about that layout (from reading its model.py and convert_weight.py): the mapping network is
# `style.{1..n}` (index 0 is the pixel norm) with the same stored-weight convention as NVIDIA's
# FullyConnectedLayer (weights divided by lr_mul at init, effective gain lr_mul/sqrt(fan_in), bias gain
# lr_mul, default lr_mul 0.01); modulated convolutions store a (1, out, in, k, k) weight and modulate with an
# EqualLinear `modulation` (bias init 1) = NVIDIA's `affine`; the up-sampling convolution weights are stored
# already flipped exactly like NVIDIA's conv0 (both converters flip TensorFlow's kernel), so no transform is
# needed beyond dropping the leading 1; the activation bias lives in `activate.bias`, the noise gain in
# `noise.weight` (shape (1,)), the fixed noise maps in `noises.noise_{i}` (1, 1, R, R) in execution order; the
# to-RGB bias is (1, 3, 1, 1). The constant scale factors are identical on both sides, so values copy as is.


def convert_rosinality_state_dict(state_dict: Mapping[str, torch.Tensor],
                                  latent_avg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Rename/reshape a rosinality ``g_ema`` state dict to NVIDIA's Generator keys.

    The fixed FIR filter buffers (``*.resample_filter``) have no counterpart and are not produced. The blur
    kernels of the source (``*.kernel``) must be the ones rosinality's code builds from ``[1, 3, 3, 1]``, which is
    the filter NVIDIA's networks apply; a checkpoint trained with another ``blur_kernel`` would render different
    images and raises ValueError, like unknown keys do.
    """
    sd = strip_prefix(state_dict, "module.", require_all=True)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"not a rosinality generator state dict: missing {key!r}")
        used.add(key)
        return sd[key]

    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    if n_mlp == 0:
        raise ValueError("not a rosinality generator state dict: no style.N.weight mapping layers")
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")

    def styled_conv(src: str, dst: str, noise_index: int) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight").squeeze(0)
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape([])
        out[f"{dst}.bias"] = take(f"{src}.activate.bias")
        out[f"{dst}.noise_const"] = take(f"noises.noise_{noise_index}").reshape(
            take(f"noises.noise_{noise_index}").shape[-2:])

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight").squeeze(0)
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)

    out["synthesis.b4.const"] = take("input.input").squeeze(0)
    styled_conv("conv1", "synthesis.b4.conv1", 0)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    num_blocks = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    for j in range(num_blocks):
        res = 2 ** (j + 3)
        styled_conv(f"convs.{2 * j}", f"synthesis.b{res}.conv0", 2 * j + 1)
        styled_conv(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", 2 * j + 2)
        to_rgb(f"to_rgbs.{j}", f"synthesis.b{res}.torgb")

    check_blur_kernels(sd)
    leftover = sorted(k for k in sd if k not in used and not k.endswith(".kernel"))
    if leftover:
        raise ValueError(f"unexpected keys in rosinality state dict: {', '.join(leftover[:4])}"
                         + (f" and {len(leftover) - 4} more" if len(leftover) > 4 else ""))
    if latent_avg is not None:
        out["mapping.w_avg"] = latent_avg.reshape(-1)
    return out


def rosinality_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), factor: int = 2) -> torch.Tensor:
    """The 2-D buffer rosinality's ``Blur``/``Upsample`` store for a 1-D ``blur_kernel`` and up-sampling factor:
    the normalised outer product times factor²."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * factor**2


def check_blur_kernels(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse a generator whose blur kernels are not rosinality's ``[1, 3, 3, 1]`` ones (ValueError)."""
    expected = rosinality_kernel()
    for key in sorted(k for k in sd if k.endswith(".kernel")):
        kernel = sd[key]
        if tuple(kernel.shape) != tuple(expected.shape) or not torch.allclose(kernel.float().cpu(), expected,
                                                                             rtol=1e-5, atol=1e-7):
            raise ValueError(f"{key} is not the blur kernel of rosinality's blur_kernel=[1, 3, 3, 1] "
                             f"(shape {list(kernel.shape)}): only that filter, the one NVIDIA's networks apply, "
                             f"is supported")


def _from_rosinality(g_ema: Mapping[str, torch.Tensor], latent_avg: Any, overrides: Mapping[str, Any]) -> Generator:
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise ValueError(f"'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    sd = convert_rosinality_state_dict(g_ema, latent_avg)
    has_avg = "mapping.w_avg" in sd
    if not has_avg:
        sd["mapping.w_avg"] = torch.zeros(sd[f"mapping.fc{_last_fc(sd)}.weight"].shape[0])
    kwargs = merge_kwargs(infer_generator_kwargs(sd), overrides)
    G = _construct(kwargs)
    # The FIR filters are fixed functions of `resample_filter`; take them from the freshly built network.
    for key, value in G.state_dict().items():
        if key.endswith("resample_filter"):
            sd.setdefault(key, value)
    load_state_dict_strict(G, sd)
    if not has_avg:
        _estimate_w_avg(G)
    return G


def _last_fc(sd: Mapping[str, torch.Tensor]) -> int:
    return max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))


@torch.no_grad()
def _estimate_w_avg(G: Generator, num_samples: int = 4096, seed: int = 0) -> None:
    """Training checkpoints of rosinality's code carry no W-space mean; truncation needs one, so estimate it
    from seeded samples (what that code's own ``mean_latent`` does, with a fixed seed for reproducibility)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([num_samples, G.z_dim], generator=gen)
    c = torch.zeros([num_samples, G.c_dim]) if G.c_dim else None
    was_training = G.mapping.training
    G.mapping.eval()
    w = G.mapping(z, c, skip_w_avg_update=True)[:, 0]
    G.mapping.train(was_training)
    G.mapping.w_avg.copy_(w.mean(dim=0))
