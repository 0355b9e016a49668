"""lpips: torchvision key layout of the feature stacks, the published v0.1 heads, the distance against a
written-out computation, and weight resolution (configured path, caches, verified download, or None)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lpips
from dnnlib import util
from lpips import weights as lpips_weights

NETS = ("vgg", "alex", "squeeze")


# ---------------------------------------------------------------------------------------------------------------
# Expected torchvision state dicts, written out from the architectures (not read from our modules).


def _conv(prefix: str, c_out: int, c_in: int, k: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.weight", (c_out, c_in, k, k)), (f"{prefix}.bias", (c_out,))]


def _expected_vgg16() -> list[tuple[str, tuple[int, ...]]]:
    convs = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
    return [entry for i, c_in, c_out in convs for entry in _conv(f"features.{i}", c_out, c_in, 3)]


def _expected_alexnet() -> list[tuple[str, tuple[int, ...]]]:
    convs = [(0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3)]
    return [entry for i, c_in, c_out, k in convs for entry in _conv(f"features.{i}", c_out, c_in, k)]


_FIRES = [(3, 64, 16, 64), (4, 128, 16, 64), (6, 128, 32, 128), (7, 256, 32, 128), (9, 256, 48, 192),
          (10, 384, 48, 192), (11, 384, 64, 256), (12, 512, 64, 256)]  # index, c_in, squeeze, expand (each)


def _expected_squeezenet1_1() -> list[tuple[str, tuple[int, ...]]]:
    out = _conv("features.0", 64, 3, 3)
    for i, c_in, s, e in _FIRES:
        out += _conv(f"features.{i}.squeeze", s, c_in, 1)
        out += _conv(f"features.{i}.expand1x1", e, s, 1)
        out += _conv(f"features.{i}.expand3x3", e, s, 3)
    return out


EXPECTED = {"vgg": _expected_vgg16, "alex": _expected_alexnet, "squeeze": _expected_squeezenet1_1}
HEAD_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256),
                 "squeeze": (64, 128, 256, 384, 384, 512, 512)}


@pytest.mark.parametrize("net", NETS)
def test_feature_stack_has_torchvision_keys_and_shapes(net):
    stack = lpips.build_backbone(net)
    got = [(k, tuple(v.shape)) for k, v in stack.state_dict().items()]
    assert got == EXPECTED[net]()
    assert stack.channels == HEAD_CHANNELS[net]


@pytest.mark.parametrize("net", NETS)
def test_lpips_state_dict_is_backbone_plus_v01_heads(net):
    model = lpips.LPIPS(net)
    keys = list(model.state_dict())
    heads = [f"heads.lin{i}.model.1.weight" for i in range(len(HEAD_CHANNELS[net]))]
    assert keys == [f"net.{k}" for k, _ in EXPECTED[net]()] + heads
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("net", NETS)
def test_reference_v01_heads_load_strictly(net, reference_dir):
    path = reference_dir / "lpips_v0.1" / f"{net}.pth"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(state) == [f"lin{i}.model.1.weight" for i in range(len(HEAD_CHANNELS[net]))]
    model = lpips.LPIPS(net, head_weights=path)
    for i, c in enumerate(HEAD_CHANNELS[net]):
        w = model.heads[i].model[1].weight
        assert w.shape == (1, c, 1, 1) and w.device.type == "cpu"
        assert torch.equal(w, state[f"lin{i}.model.1.weight"])
        assert (w >= 0).all()  # LPIPS clamps its heads non-negative during training
    assert lpips_weights.HEAD_SHA256[net] == util.sha256sum(path)


# ---------------------------------------------------------------------------------------------------------------
# The distance, written out with plain functional ops from the state dicts.

SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def _plain_features(net: str, sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    def conv(h, name, stride=1, padding=0):
        return F.relu(F.conv2d(h, sd[f"features.{name}.weight"], sd[f"features.{name}.bias"], stride, padding))

    taps = []
    if net == "vgg":
        h = x
        for stage in ([0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]):
            if stage[0] != 0:
                h = F.max_pool2d(h, 2, 2)
            for i in stage:
                h = conv(h, i, padding=1)
            taps.append(h)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    elif net == "alex":
        h = conv(x, 0, stride=4, padding=2)
        taps.append(h)
        h = conv(F.max_pool2d(h, 3, 2), 3, padding=2)
        taps.append(h)
        h = conv(F.max_pool2d(h, 3, 2), 6, padding=1)
        taps.append(h)
        h = conv(h, 8, padding=1)
        taps.append(h)
        taps.append(conv(h, 10, padding=1))
    else:
        def fire(h, i):
            s = conv(h, f"{i}.squeeze")
            return torch.cat([conv(s, f"{i}.expand1x1"), conv(s, f"{i}.expand3x3", padding=1)], 1)

        def pool(h):
            return F.max_pool2d(h, 3, 2, ceil_mode=True)

        h = conv(x, 0, stride=2)
        taps.append(h)
        h = fire(fire(pool(h), 3), 4)
        taps.append(h)
        h = fire(fire(pool(h), 6), 7)
        taps.append(h)
        h = fire(pool(h), 9)
        taps.append(h)
        for i in (10, 11, 12):
            h = fire(h, i)
            taps.append(h)
    return taps


def _plain_lpips(net, backbone_sd, head_sd, x, y):
    fx = _plain_features(net, backbone_sd, (x - SHIFT.to(x)) / SCALE.to(x))
    fy = _plain_features(net, backbone_sd, (y - SHIFT.to(y)) / SCALE.to(y))
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for layer, (a, b) in enumerate(zip(fx, fy)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = head_sd[f"lin{layer}.model.1.weight"].view(1, -1, 1, 1).to(x)
        total = total + ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


def _random_heads(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) / c for i, c in enumerate(HEAD_CHANNELS[net])}


def _heads(net: str) -> dict[str, torch.Tensor]:
    """The published heads when ../shared is here, else random non-negative ones of the same layout."""
    path = lpips_weights.SHARED_HEADS_DIR / f"{net}.pth"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    return _random_heads(net)


def _random_backbone(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return lpips.build_backbone(net).state_dict()


# Smallest convenient sizes at which every tap still has at least one pixel (AlexNet's 11x11/4 stem needs more).
MIN_SIZE = {"vgg": 32, "alex": 64, "squeeze": 32}


def _images(n=2, size=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.rand(n, 3, size, size, generator=g) * 2 - 1)


@pytest.mark.parametrize("net", NETS)
def test_distance_equals_written_out_computation(net):
    backbone, heads = _random_backbone(net), _heads(net)
    model = lpips.LPIPS(net, backbone_weights=backbone, head_weights=heads)
    x, y = _images()
    got = model(x, y)
    assert got.shape == (2,)
    # float64 on both sides so the comparison tests the formula, not float32 summation order.
    want = _plain_lpips(net, {k: v.double() for k, v in backbone.items()}, heads, x.double(), y.double())
    torch.testing.assert_close(model.double()(x.double(), y.double()), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    parts = model.layer_distances(x.double(), y.double())
    assert len(parts) == len(HEAD_CHANNELS[net])


@pytest.mark.parametrize("net", NETS)
def test_identity_symmetry_and_gradients(net):
    model = lpips.LPIPS(net, backbone_weights=_random_backbone(net), head_weights=_heads(net))
    x, y = _images(size=MIN_SIZE[net])
    assert torch.equal(model(x, x), torch.zeros(2))
    torch.testing.assert_close(model(x, y), model(y, x), rtol=1e-5, atol=1e-7)
    assert (model(x, y) > 0).all()
    # Broadcasting one reference against a batch gives the same numbers as repeating it.
    torch.testing.assert_close(model(x, y[:1]), model(x, y[:1].expand_as(x)), rtol=1e-5, atol=1e-7)
    # [0, 1] inputs with normalize=True are the same as their [-1, 1] versions.
    torch.testing.assert_close(model((x + 1) / 2, (y + 1) / 2, normalize=True), model(x, y), rtol=1e-5, atol=1e-7)
    x = x.clone().requires_grad_(True)
    model(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_resize_compares_downsampled_images():
    model = lpips.LPIPS("alex", backbone_weights=_random_backbone("alex"), head_weights=_heads("alex"))
    small = lpips.LPIPS("alex", backbone_weights=_random_backbone("alex"), head_weights=_heads("alex"), resize=64)
    x, y = _images(size=128)
    want = model(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2))  # area resampling by 2 is a 2x2 box average
    torch.testing.assert_close(small(x, y), want, rtol=1e-5, atol=1e-7)
    for mode in ("bilinear", "bicubic"):
        out = lpips.resize_images(x, 64, mode)
        assert out.shape == (2, 3, 64, 64)
    assert lpips.resize_images(x, 256, "area").shape == (2, 3, 256, 256)  # enlarging falls back to bilinear
    with pytest.raises(ValueError):
        lpips.resize_images(x, 64, "nearest")


def test_wrong_weights_are_rejected():
    with pytest.raises(RuntimeError):  # AlexNet weights into VGG: strict loading refuses
        lpips.LPIPS("vgg", backbone_weights=_random_backbone("alex"))
    with pytest.raises(RuntimeError):
        lpips.LPIPS("vgg", head_weights=_random_heads("alex"))
    with pytest.raises(ValueError, match="features"):
        lpips.LPIPS("vgg", backbone_weights=_random_heads("vgg"))
    with pytest.raises(ValueError, match="unknown LPIPS network"):
        lpips.LPIPS("resnet")


# ---------------------------------------------------------------------------------------------------------------
# Weight resolution.


def _isolate(monkeypatch, tmp_path: Path, offline: bool) -> dict:
    """Point the hub cache, the sgilo cache and the shared reference folder into tmp; optionally make every
    download fail the way dnnlib reports a missing network."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv(util.CACHE_ENV, str(tmp_path / "sgilo"))
    monkeypatch.setattr(lpips_weights, "SHARED_HEADS_DIR", tmp_path / "no-shared")
    calls: list[str] = []

    def offline_download(url, dest, sha256=None, **kwargs):
        calls.append(url)
        raise util.DownloadError(f"could not download {url} to {dest}: no network connection? (test)")

    if offline:
        monkeypatch.setattr(util, "download", offline_download)
    return {"hub": hub / "checkpoints", "heads": tmp_path / "sgilo" / "lpips" / "v0.1", "calls": calls,
            "tmp": tmp_path}


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    return _isolate(monkeypatch, tmp_path, offline=True)


def _save_torchvision_layout(net: str, path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random backbone saved like torchvision's file: ``features.*`` plus a classifier LPIPS ignores."""
    state = dict(_random_backbone(net, seed))
    state["classifier.6.weight"] = torch.zeros(1000, 8)
    state["classifier.6.bias"] = torch.zeros(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def _lpips_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("lpips") and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("net", NETS)
def test_load_lpips_returns_none_with_one_warning(net, isolated_caches, caplog):
    with caplog.at_level(logging.WARNING):
        assert lpips.load_lpips(net) is None
    records = _lpips_warnings(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "\n" not in message and "unavailable" in message
    assert lpips_weights.BACKBONES[net].file_name in message and "no network" in message
    assert len(isolated_caches["calls"]) == 2  # one download attempt each for backbone and heads


def test_load_lpips_from_configured_paths(isolated_caches, caplog):
    tmp = isolated_caches["tmp"]
    state = _save_torchvision_layout("vgg", tmp / "mine" / "vgg16.pth")
    torch.save(_random_heads("vgg"), tmp / "mine" / "heads.pth")
    with caplog.at_level(logging.WARNING):
        model = lpips.load_lpips("vgg", backbone_path=tmp / "mine" / "vgg16.pth", head_path=tmp / "mine" / "heads.pth")
    assert isinstance(model, lpips.LPIPS) and model.pretrained
    assert not _lpips_warnings(caplog) and not isolated_caches["calls"]
    assert torch.equal(model.net.features[28].weight, state["features.28.weight"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lpips.load_lpips("vgg", backbone_path=tmp / "missing.pth")


def test_load_lpips_from_caches(isolated_caches):
    _save_torchvision_layout("squeeze", isolated_caches["hub"] / "squeezenet1_1-b8a52dc0.pth")
    isolated_caches["heads"].mkdir(parents=True)
    torch.save(_random_heads("squeeze"), isolated_caches["heads"] / "squeeze.pth")
    model = lpips.load_lpips("squeeze", resize=64)
    assert model is not None and model.resize == 64 and not isolated_caches["calls"]


def test_load_lpips_uses_shared_reference_heads(isolated_caches, monkeypatch, reference_dir):
    monkeypatch.setattr(lpips_weights, "SHARED_HEADS_DIR", reference_dir / "lpips_v0.1")
    _save_torchvision_layout("alex", isolated_caches["hub"] / "alexnet-owt-7be5be79.pth")
    model = lpips.load_lpips("alex")
    assert model is not None and not isolated_caches["calls"]


def test_downloads_are_verified(tmp_path, monkeypatch, caplog):
    """Real download code on file:// URLs: a backbone whose hash prefix matches lands in the hub cache, a
    mismatching one is deleted and reported; heads are checked against their full SHA-256."""
    _isolate(monkeypatch, tmp_path, offline=False)
    tmp = tmp_path

    src = tmp / "upstream" / "backbone.pth"
    _save_torchvision_layout("alex", src)
    prefix = util.sha256sum(src)[:8]
    heads_src = tmp / "upstream" / "alex.pth"
    torch.save(_random_heads("alex"), heads_src)
    good = lpips_weights.BackboneFile(f"alexnet-test-{prefix}.pth", src.as_uri())
    monkeypatch.setitem(lpips_weights.BACKBONES, "alex", good)
    monkeypatch.setattr(lpips_weights, "HEAD_URL", (tmp / "upstream").as_uri() + "/{net}.pth")
    monkeypatch.setitem(lpips_weights.HEAD_SHA256, "alex", util.sha256sum(heads_src))
    model = lpips.load_lpips("alex")
    assert model is not None
    assert (tmp / "hub" / "checkpoints" / good.file_name).is_file()
    assert (tmp / "sgilo" / "lpips" / "v0.1" / "alex.pth").is_file()

    bad_prefix = "0" * 8 if not prefix.startswith("0") else "f" * 8
    bad = lpips_weights.BackboneFile(f"alexnet-test-{bad_prefix}.pth", src.as_uri())
    monkeypatch.setitem(lpips_weights.BACKBONES, "alex", bad)
    with caplog.at_level(logging.WARNING):
        assert lpips.load_lpips("alex") is None
    assert "checksum mismatch" in _lpips_warnings(caplog)[0].getMessage()
    assert not (tmp / "hub" / "checkpoints" / bad.file_name).exists()


def test_published_file_names_and_hash_prefixes():
    assert {k: v.file_name for k, v in lpips_weights.BACKBONES.items()} == {
        "vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}
    assert lpips_weights.BACKBONES["vgg"].hash_prefix == "397923af"
    assert all(v.url.startswith("https://download.pytorch.org/models/") for v in lpips_weights.BACKBONES.values())
    assert all(len(h) == 64 for h in lpips_weights.HEAD_SHA256.values())
    assert math.isclose(float(lpips.LPIPS().scaling_layer.scale[0, 2]), 0.450, rel_tol=1e-6)


def test_load_lpips_without_downloads_never_fetches(isolated_caches, caplog):
    with caplog.at_level(logging.WARNING):
        assert lpips.load_lpips("vgg", download=False) is None
    assert not isolated_caches["calls"] and len(_lpips_warnings(caplog)) == 1
    assert "downloads are off" in _lpips_warnings(caplog)[0].getMessage()
