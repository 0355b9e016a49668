"""Checkpoint loading: every accepted format round-trips; hostile and broken files are refused cleanly.

The NVIDIA-format pickles here are written by hand, mirroring what stylegan2-ada-pytorch's persistence
mechanism emits (a call to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` per module, with the
module's ``__dict__`` as ``meta['state']`` and the defining module's source as ``meta['module_src']``).
A test against a pickle written by NVIDIA's own code runs when ``NVIDIA_STYLEGAN2_ADA`` points to a checkout.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dnnlib
from stylegan import CheckpointError, UnsafeCheckpointError, load_generator, save_generator
from stylegan.loading import ACCEPTED_FORMATS, convert_rosinality_state_dict, infer_generator_kwargs
from stylegan.networks import Generator
from torch_utils import persistence

TINY = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
            mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=64))


def make_generator(seed: int = 0, **overrides: Any) -> Generator:
    """A tiny generator whose every parameter and buffer is random (so that no tensor can load silently wrong)."""
    torch.manual_seed(seed)
    G = Generator(**persistence.merge_kwargs(TINY, overrides))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if not name.endswith("resample_filter"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
    return G.eval().requires_grad_(False)


def outputs(G: Generator, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    """ws (with truncation, so w_avg matters) and the const-noise image for a fixed batch."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([2, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(2) % G.c_dim, G.c_dim).float() if G.c_dim else None
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=0.7)
        img = G.synthesis(ws, noise_mode="const")
    return ws, img


def assert_same_generator(loaded: Generator, original: Generator) -> None:
    assert isinstance(loaded, Generator)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    ws0, img0 = outputs(original)
    ws1, img1 = outputs(loaded)
    torch.testing.assert_close(ws1, ws0, rtol=0, atol=0)
    torch.testing.assert_close(img1, img0, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Own format and whole-Generator state dicts.


def test_own_format_roundtrip(tmp_path):
    G = make_generator()
    path = save_generator(G, tmp_path / "g.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "sgilo.generator" and raw["version"] == 1 and raw["init_kwargs"] == G.init_kwargs
    G2 = load_generator(path)
    assert G2.init_kwargs == G.init_kwargs
    assert_same_generator(G2, G)


def test_own_format_accepts_explicit_overrides(tmp_path):
    G = make_generator()
    path = save_generator(G, tmp_path / "g.pt")
    G2 = load_generator(path, synthesis_kwargs={"conv_clamp": 256})
    assert G2.init_kwargs["synthesis_kwargs"] == {"channel_base": 256, "channel_max": 64, "conv_clamp": 256}
    assert G2.synthesis.b16.conv1.conv_clamp == 256


STATE_DICT_CONFIGS = {
    "tiny": {},
    "conditional": dict(c_dim=3, mapping_kwargs=dict(num_layers=3, embed_features=8, layer_features=24)),
    "resnet_no_noise": dict(synthesis_kwargs=dict(architecture="resnet", use_noise=False)),
    "orig_1ch": dict(img_channels=1, synthesis_kwargs=dict(architecture="orig")),
    "uniform_channels": dict(img_resolution=8, synthesis_kwargs=dict(channel_base=128, channel_max=16)),
}


@pytest.mark.parametrize("config", list(STATE_DICT_CONFIGS))
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_state_dict_roundtrip(tmp_path, config, suffix):
    G = make_generator(**STATE_DICT_CONFIGS[config])
    path = tmp_path / f"g{suffix}"
    torch.save(G.state_dict(), path)
    assert_same_generator(load_generator(path), G)


def test_state_dict_variants(tmp_path):
    G = make_generator()
    # Nested under 'state_dict', with a DataParallel prefix, and in the legacy (non-zip) torch.save format.
    torch.save({"state_dict": G.state_dict()}, tmp_path / "a.pt")
    torch.save({f"module.{k}": v for k, v in G.state_dict().items()}, tmp_path / "b.pt")
    torch.save(G.state_dict(), tmp_path / "c.pt", _use_new_zipfile_serialization=False)
    for name in ("a.pt", "b.pt", "c.pt"):
        assert_same_generator(load_generator(tmp_path / name), G)


def test_infer_kwargs_ffhq_1024():
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3)
    kwargs = infer_generator_kwargs(G.state_dict())
    assert kwargs == dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                          mapping_kwargs=dict(num_layers=8),
                          synthesis_kwargs=dict(channel_base=32768, channel_max=512))


def test_state_dict_with_wrong_explicit_kwargs_is_a_clear_error(tmp_path):
    G = make_generator()
    torch.save(G.state_dict(), tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_generator(tmp_path / "g.pt", synthesis_kwargs={"channel_max": 32})


def test_load_to_device_and_requires_grad_off(tmp_path):
    G = make_generator()
    G2 = load_generator(save_generator(G, tmp_path / "g.pt"), device=torch.device("cpu"))
    assert all(p.device.type == "cpu" and not p.requires_grad for p in G2.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# Hand-built NVIDIA network pickles.

HOOK_DICTS = ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
              "_load_state_dict_pre_hooks")


def module_src_with_side_effect(marker: Path) -> str:
    """Source text that would leave a trace if anyone executed it."""
    return (f"import os\nopen({str(marker)!r}, 'w').write('module_src was executed')\n"
            f"os.system('touch {marker}.system')\nclass Generator: pass\n")


def _easydicts(value: Any) -> Any:
    if isinstance(value, dict):
        return dnnlib.EasyDict({k: _easydicts(v) for k, v in value.items()})
    return value


class NvidiaStylePickler(pickle.Pickler):
    """Pickles nn.Modules the way NVIDIA's persistent classes do: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, file, protocol: int, module_src: str, init_kwargs: dict[int, dict]):
        super().__init__(file, protocol=protocol)
        self.module_src = module_src
        self.init_kwargs = init_kwargs  # id(module) -> constructor kwargs to record

    def reducer_override(self, obj):
        if not isinstance(obj, torch.nn.Module):
            return NotImplemented
        state: dict[str, Any] = {
            "training": obj.training,
            "_parameters": OrderedDict(obj._parameters),
            "_buffers": OrderedDict(obj._buffers),
            "_non_persistent_buffers_set": set(obj._non_persistent_buffers_set),
            **{name: OrderedDict() for name in HOOK_DICTS},
            "_is_full_backward_hook": None,
            "_modules": OrderedDict(obj._modules),
            "_init_args": (),
            "_init_kwargs": _easydicts(self.init_kwargs.get(id(obj), {})),
        }
        for key, value in vars(obj).items():  # plain attributes such as img_resolution and weight_gain
            if not key.startswith("_") and isinstance(value, (bool, int, float, str, list, tuple, np.generic)):
                state[key] = value
        state["weight_gain_np"] = np.float64(1 / np.sqrt(2.0))  # NVIDIA modules carry numpy float64 gains
        state["some_ints"] = [np.int64(3), np.float32(0.5)]
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=type(obj).__name__, state=state)
        return persistence._reconstruct_persistent_obj, (meta,)


class AugmentPipe(torch.nn.Module):
    """Stands in for NVIDIA's augmentation pipeline: a persistent object the loader must keep inert."""

    def __init__(self):
        super().__init__()
        self.register_buffer("Hz_geom", torch.arange(12.0))
        self.p = 0.25


def write_nvidia_pickle(path: Path, G_ema: Generator, marker: Path, protocol: int = 4, G: Generator | None = None,
                        extra: dict | None = None) -> None:
    aug = AugmentPipe()
    init_kwargs = {id(G_ema): G_ema.init_kwargs, id(aug): {}}
    if G is not None:
        init_kwargs[id(G)] = G.init_kwargs
    data = dict(G=G, D=None, G_ema=G_ema, augment_pipe=aug,
                training_set_kwargs=dnnlib.EasyDict(path="ffhq.zip", resolution=16, use_labels=False), **(extra or {}))
    with open(path, "wb") as f:
        NvidiaStylePickler(f, protocol, module_src_with_side_effect(marker), init_kwargs).dump(data)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_nvidia_pickle_roundtrip_never_runs_module_src(tmp_path, protocol):
    G_ema, G = make_generator(seed=1), make_generator(seed=2)
    marker = tmp_path / "module_src_ran"
    path = tmp_path / "network-snapshot.pkl"
    write_nvidia_pickle(path, G_ema, marker, protocol=protocol, G=G)

    loaded = load_generator(path)
    assert_same_generator(loaded, G_ema)  # G_ema, not G
    assert loaded.init_kwargs == G_ema.init_kwargs
    assert not marker.exists() and not Path(f"{marker}.system").exists()


def test_nvidia_pickle_with_tf_converted_kwargs(tmp_path):
    # NVIDIA's published pickles (converted from TensorFlow by its legacy.py) spell out every keyword.
    G = make_generator(
        mapping_kwargs=dict(num_layers=2, embed_features=None, layer_features=None, activation="lrelu",
                            lr_multiplier=0.01, w_avg_beta=0.995),
        synthesis_kwargs=dict(channel_base=256, channel_max=64, num_fp16_res=0, conv_clamp=None, architecture="skip",
                              resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu"),
    )
    path = tmp_path / "ffhq-like.pkl"
    write_nvidia_pickle(path, G, tmp_path / "marker", protocol=3)
    assert_same_generator(load_generator(path), G)


def test_nvidia_pickle_records_are_inert(tmp_path):
    G_ema = make_generator()
    marker = tmp_path / "module_src_ran"
    path = tmp_path / "snap.pkl"
    write_nvidia_pickle(path, G_ema, marker)
    data = persistence.load_network_pickle(path)
    assert isinstance(data["G_ema"], persistence.PersistentRecord)
    assert isinstance(data["training_set_kwargs"], dnnlib.EasyDict)
    aug = data["augment_pipe"]
    assert isinstance(aug, persistence.PersistentRecord) and aug.class_name == "AugmentPipe"
    assert torch.equal(aug.state_dict()["Hz_geom"], torch.arange(12.0)) and aug.attributes["p"] == 0.25
    rec = data["G_ema"]
    assert "import os" in rec.module_src  # kept as text, never executed
    assert rec.children["synthesis"].children["b4"].class_name == "SynthesisBlock"
    assert set(rec.state_dict()) == set(G_ema.state_dict())
    assert isinstance(rec.state["weight_gain_np"], np.float64)
    assert not marker.exists()


def test_nvidia_pickle_with_unknown_generator_class_is_refused_cleanly(tmp_path):
    class Generator2(torch.nn.Module):
        pass

    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        NvidiaStylePickler(f, 4, "", {}).dump({"G_ema": Generator2()})
    with pytest.raises(CheckpointError, match="Generator2"):
        load_generator(path)


# ---------------------------------------------------------------------------------------------------------------------
# Hostile files.


class Payload:
    """Pickles as a call to ``func(*args)``; the payloads below create a marker file when executed."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_payloads(marker: Path) -> dict[str, Payload]:
    touch = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.eval": Payload(eval, touch),
        "builtins.exec": Payload(exec, touch),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": Payload(getattr, Payload(__import__, "os"), "system"),
        "builtins.__import__": Payload(__import__, "os"),
        "builtins.open": Payload(open, str(marker), "w"),
        "torch.load": Payload(torch.load, str(marker)),
        "numpy.load": Payload(np.load, str(marker)),
    }


PAYLOAD_NAMES = list(hostile_payloads(Path("x")))


def _global_name(payload: Payload) -> str:
    return f"{payload.func.__module__}.{payload.func.__qualname__}"


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_hostile_pickle_global_is_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = hostile_payloads(marker)[name]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload}, protocol=4))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_generator(path)
    assert info.value.global_name == _global_name(payload)
    assert _global_name(payload) in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_global_deep_inside_a_valid_network_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    G = make_generator()
    G.synthesis.b8.conv0.evil = hostile_payloads(marker)["os.system"]  # pickled as a plain attribute

    class Pickler(NvidiaStylePickler):
        def reducer_override(self, obj):
            out = super().reducer_override(obj)
            if out is not NotImplemented and hasattr(obj, "evil"):
                out[1][0]["state"]["evil"] = obj.evil
            return out

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        Pickler(f, protocol, module_src_with_side_effect(marker), {id(G): G.init_kwargs}).dump({"G_ema": G})
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_generator(path)
    assert not marker.exists() and not Path(f"{marker}.system").exists()


def test_hostile_build_state_is_refused(tmp_path):
    # A BUILD on an allowed object could plant attributes (e.g. hooks on a tensor); only numpy dtypes may use it.
    class SetsState:
        def __reduce__(self):
            return OrderedDict, (), {"__class__": "x", "_backward_hooks": {}}

    path = tmp_path / "build.pkl"
    path.write_bytes(pickle.dumps({"G_ema": SetsState()}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="state"):
        load_generator(path)


def test_hostile_storage_bytes_are_refused(tmp_path):
    # Storage bytes are decoded by torch.load(weights_only=True): a torch.save of a payload inside is refused.
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(hostile_payloads(marker)["os.system"], buf, _use_new_zipfile_serialization=False)

    class FakeStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (buf.getvalue(),)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": FakeStorage()}, protocol=3))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_generator(path)
    assert not marker.exists()


def test_forged_tensor_view_cannot_read_out_of_bounds(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = torch.arange(4.0).storage()

    class Forged:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (1000,), (1,), False, OrderedDict())

    path = tmp_path / "forged.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Forged()}, protocol=4))
    with pytest.raises(CheckpointError, match="out of bounds"):
        load_generator(path)


@pytest.mark.parametrize("zipfile", [True, False])
def test_malicious_torch_file_is_refused(tmp_path, zipfile):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {"style.1.weight": hostile_payloads(marker)["os.system"]}}, path,
               _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_generator(path)
    assert "system" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_pickle_of_whole_module_is_refused(tmp_path):
    # torch.save(G) pickles classes by reference; loading it would import and run arbitrary code paths.
    path = tmp_path / "whole.pt"
    torch.save(make_generator(), path)
    with pytest.raises(UnsafeCheckpointError, match="stylegan.networks.Generator"):
        load_generator(path)


# ---------------------------------------------------------------------------------------------------------------------
# Broken files: one clear error naming the path and the accepted formats.


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    G = make_generator()
    files = {}
    good_pt = save_generator(G, tmp_path / "good.pt")
    good_pkl = tmp_path / "good.pkl"
    write_nvidia_pickle(good_pkl, G, tmp_path / "marker")
    for name, src in (("truncated.pt", good_pt), ("truncated.pkl", good_pkl)):
        data = src.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        files[name] = tmp_path / name
    (tmp_path / "empty.pt").write_bytes(b"")
    files["empty.pt"] = tmp_path / "empty.pt"
    (tmp_path / "notes.pkl").write_text("hello, not a checkpoint\n")
    files["text.pkl"] = tmp_path / "notes.pkl"
    (tmp_path / "random.bin").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    files["random.bin"] = tmp_path / "random.bin"
    torch.save({"optimizer": {"lr": torch.tensor(0.1)}}, tmp_path / "other.pt")
    files["unrelated.pt"] = tmp_path / "other.pt"
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    files["tensor.pt"] = tmp_path / "tensor.pt"
    (tmp_path / "a_dir.pt").mkdir()
    files["directory"] = tmp_path / "a_dir.pt"
    files["missing"] = tmp_path / "does_not_exist.pkl"
    return files


BROKEN = ["truncated.pt", "truncated.pkl", "empty.pt", "text.pkl", "random.bin", "unrelated.pt", "tensor.pt",
          "directory", "missing"]


@pytest.mark.parametrize("name", BROKEN)
def test_broken_files_give_one_clear_error(tmp_path, name):
    path = _broken_files(tmp_path)[name]
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and ACCEPTED_FORMATS in message
    if name != "truncated.pkl":  # a cut pickle may end anywhere, even inside a forged-looking opcode
        assert not isinstance(info.value, UnsafeCheckpointError)


# ---------------------------------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch layout.


def to_rosinality(G: Generator) -> dict[str, torch.Tensor]:
    """The inverse of the loader's conversion, written independently: NVIDIA keys -> rosinality keys."""
    sd = G.state_dict()
    out: dict[str, torch.Tensor] = {}
    for i in range(G.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])  # rosinality's default blur_kernel
    blur = torch.outer(taps, taps) / 64 * 4  # its make_kernel (normalised) times upsample_factor**2

    def styled(src: str, dst: str, noise_idx: int) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        out[f"noises.noise_{noise_idx}"] = sd[f"{src}.noise_const"][None, None]

    def rgb(src: str, dst: str) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)

    out["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)
    styled("synthesis.b4.conv1", "conv1", 0)
    rgb("synthesis.b4.torgb", "to_rgb1")
    for j, res in enumerate(G.synthesis.block_resolutions[1:]):
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * j}", 2 * j + 1)
        out[f"convs.{2 * j}.conv.blur.kernel"] = blur
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        rgb(f"synthesis.b{res}.torgb", f"to_rgbs.{j}")
        out[f"to_rgbs.{j}.upsample.kernel"] = blur
    return out


def test_rosinality_checkpoint_roundtrip(tmp_path):
    G = make_generator()
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg.clone()}, path)
    assert_same_generator(load_generator(path), G)


@pytest.mark.parametrize("kernel", [torch.ones(4, 4) / 4, torch.ones(3, 3) * 4 / 9])
def test_rosinality_checkpoint_with_another_blur_kernel_is_refused(tmp_path, kernel):
    # A generator trained with another blur_kernel renders other images than NVIDIA's [1, 3, 3, 1] filter gives:
    # loading it silently would be wrong (a max difference of ~0.95 was measured), so it is refused by name.
    G = make_generator()
    sd = to_rosinality(G)
    sd["to_rgbs.0.upsample.kernel"] = kernel
    path = tmp_path / "other_kernel.pt"
    torch.save({"g_ema": sd, "latent_avg": G.mapping.w_avg.clone()}, path)
    with pytest.raises(CheckpointError, match=r"to_rgbs\.0\.upsample\.kernel is not the blur kernel .*\[1, 3, 3, 1\]"):
        load_generator(path)


def test_rosinality_conversion_is_exact_key_for_key():
    G = make_generator()
    converted = convert_rosinality_state_dict(to_rosinality(G), G.mapping.w_avg)
    own = {k: v for k, v in G.state_dict().items() if not k.endswith("resample_filter")}
    assert set(converted) == set(own)
    for key, value in own.items():
        assert converted[key].shape == value.shape and torch.equal(converted[key], value), key


def test_rosinality_training_checkpoint_without_latent_avg(tmp_path):
    # rosinality's train.py saves g, d, g_ema, optimizer states and its argparse options, but no latent_avg.
    import argparse

    G = make_generator()
    path = tmp_path / "train.pt"
    torch.save({"g": to_rosinality(G), "d": {}, "g_ema": to_rosinality(G),
                "args": argparse.Namespace(size=16, n_mlp=2), "ada_aug_p": 0.0}, path)
    loaded = load_generator(path)
    sd, own = loaded.state_dict(), G.state_dict()
    assert all(torch.equal(sd[k], own[k]) for k in own if k != "mapping.w_avg")
    # w_avg is estimated from seeded samples of the mapping network (needed for truncation).
    z = torch.randn([4096, G.z_dim], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        w_mean = G.mapping(z, None)[:, 0].mean(0)
    assert (sd["mapping.w_avg"] - w_mean).abs().max() < 0.15 * w_mean.abs().max()


def test_bare_rosinality_state_dict(tmp_path):
    G = make_generator()
    torch.save(to_rosinality(G), tmp_path / "g_ema.pt")
    loaded = load_generator(tmp_path / "g_ema.pt")
    own = G.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], own[k]) for k in own if k != "mapping.w_avg")


# ---------------------------------------------------------------------------------------------------------------------
# A pickle written by NVIDIA's own code (only when a checkout is available).

NVIDIA_SCRIPT = r"""
import copy, pickle, sys, torch
import dnnlib
# Networks built and snapshotted the way NVIDIA's train.py / training_loop.py do it (EasyDict kwargs,
# construct_class_by_name, deep copies in eval mode), with weights randomised so that every tensor matters.
G_kwargs = dnnlib.EasyDict(class_name='training.networks.Generator', z_dim=32, w_dim=32,
                           mapping_kwargs=dnnlib.EasyDict(num_layers=2),
                           synthesis_kwargs=dnnlib.EasyDict(channel_base=256, channel_max=64, num_fp16_res=2,
                                                            conv_clamp=256))
D_kwargs = dnnlib.EasyDict(class_name='training.networks.Discriminator', channel_base=256, channel_max=64)
common = dict(c_dim=0, img_resolution=16, img_channels=3)
torch.manual_seed(0)
G = dnnlib.util.construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False)
D = dnnlib.util.construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False)
gen = torch.Generator().manual_seed(1)
with torch.no_grad():
    for name, t in list(G.named_parameters()) + list(G.named_buffers()):
        if not name.endswith('resample_filter'):
            t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
G_ema = copy.deepcopy(G).eval()
snapshot = dict(training_set_kwargs=dict(path='x.zip', use_labels=False))
for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', None)]:
    snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu() if module is not None else None
with open(sys.argv[1], 'wb') as f:
    pickle.dump(snapshot, f)
z = torch.randn([2, 32], generator=torch.Generator().manual_seed(123))
with torch.no_grad():
    ws = G_ema.mapping(z, None, truncation_psi=0.7)
    img = G_ema.synthesis(ws, noise_mode='const', force_fp32=True)
torch.save({'z': z, 'ws': ws, 'img': img}, sys.argv[2])
"""


def test_genuine_nvidia_pickle(tmp_path):
    checkout = os.environ.get("NVIDIA_STYLEGAN2_ADA")
    if not checkout or not (Path(checkout) / "training" / "networks.py").is_file():
        pytest.skip("set NVIDIA_STYLEGAN2_ADA to a stylegan2-ada-pytorch checkout to run this test")
    pkl, ref = tmp_path / "nv.pkl", tmp_path / "nv_ref.pt"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    run = subprocess.run([sys.executable, "-c", NVIDIA_SCRIPT, str(pkl), str(ref)], cwd=checkout, env=env,
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        pytest.skip(f"NVIDIA's code could not run here: {run.stderr.strip().splitlines()[-1:]}")
    G = load_generator(pkl)
    assert G.init_kwargs["synthesis_kwargs"]["conv_clamp"] == 256
    assert isinstance(persistence.load_network_pickle(pkl)["D"], persistence.PersistentRecord)
    expected = torch.load(ref, weights_only=True)
    with torch.no_grad():
        ws = G.mapping(expected["z"], None, truncation_psi=0.7)
        img = G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(ws, expected["ws"], rtol=0, atol=1e-5)
    torch.testing.assert_close(img, expected["img"], rtol=0, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_one_clear_error(tmp_path):
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    save_generator(G, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_generator(tmp_path / "g.pt", device="cuda")


def test_save_generator_never_replaces_a_file(tmp_path):
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=32, channel_max=8))
    path = save_generator(G, tmp_path / "g.pt")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_generator(G, path)
    assert path.read_bytes() == before
    save_generator(G, path, overwrite=True)
