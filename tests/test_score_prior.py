"""ScorePrior: self-describing checkpoints, published .pth files through the trained_networks YAMLs, the
published settings themselves, and the pieces train_score.py is built from (loss with given noise, streams)."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dataloaders import MinMaxNormalizer
from score.losses import dsm_loss, sde_loss
from score.models import small_vit
from score.prior import (
    FORMAT,
    PriorFormatError,
    SamplingSettings,
    ScorePrior,
    parse_prior_spec,
)
from score.sde import VPSDE
from score.trainer import LatentStream, derive_seed
from stylegan.build import build_generator, layer_sample_shape

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ROOT / "configs" / "trained_networks"
PUBLISHED = ["latent", "layer1", "layer2", "layer3", "syn_layer3"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is steady on a shared 2-core machine (a second one can be 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_prior(layer: int = 2, shape=(4, 8, 8), seed: int = 0) -> ScorePrior:
    torch.manual_seed(seed)
    model = small_vit(shape, dim=16, depth=1, heads=1, dim_head=8, mlp_dim=32)
    return ScorePrior(model, VPSDE(0.1, 20.0, 50), layer, MinMaxNormalizer(-1.5, 2.5),
                      SamplingSettings(snr=5e-3, hot_steps=3), generator={"name": "toy", "init": {"z_dim": 4}},
                      step=7)


def test_checkpoint_round_trip_is_self_describing(tmp_path):
    prior = make_prior()
    raw = {k: v + 1.0 for k, v in prior.model.state_dict().items()}  # training weights differ from the EMA ones
    prior.raw_state_dict = raw
    path = prior.save(tmp_path / "prior.pt")

    data = torch.load(path, weights_only=True)  # plain data: no pickled classes
    assert data["format"] == FORMAT and data["version"] == 1
    assert data["model"]["class"] == "ViT" and data["model"]["config"]["channels"] == 4
    assert data["sde"] == {"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0, "N": 50}
    assert data["layer"] == 2 and data["image_shape"] == [4, 8, 8]
    assert data["normalization"] == {"kind": "minmax", "min": -1.5, "max": 2.5}
    assert data["sampling"]["hot_steps"] == 3 and data["generator"]["name"] == "toy" and data["step"] == 7
    torch.testing.assert_close(data["state_dict"]["projector.weight"], raw["projector.weight"])

    back = ScorePrior.load(path)
    assert back.layer == 2 and back.step == 7 and back.sampling == prior.sampling
    assert back.sde.config() == prior.sde.config() and back.normalizer.to_dict() == prior.normalizer.to_dict()
    for k, v in prior.model.state_dict().items():
        torch.testing.assert_close(back.model.state_dict()[k], v, rtol=0, atol=0)
    torch.testing.assert_close(back.raw_state_dict["projector.weight"], raw["projector.weight"])
    x = torch.rand(3, 4, 8, 8)
    torch.testing.assert_close(back.score(x, 0.3), prior.score(x, 0.3))

    with pytest.raises(FileExistsError):  # never overwrite earlier results
        prior.save(path)


def test_spaces_and_methods_latent_layout():
    prior = make_prior(layer=0, shape=(6, 5, 1))  # w_dim 6, num_ws 5
    assert prior.variable_shape == (5, 6)
    z = torch.randn(2, 5, 6)
    torch.testing.assert_close(prior.from_model_space(prior.to_model_space(z)), z, rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    delta = prior.hot_delta(z)
    assert delta.shape == z.shape and torch.isfinite(delta).all() and delta.abs().max() > 0
    torch.manual_seed(1)
    torch.testing.assert_close(prior.naturalize(z), z + delta)
    assert prior.sample(3, progress=False).shape == (3, 5, 6)
    # Variable-space score = model-space score / scale, back in z's layout.
    u = prior.to_model_space(z)
    expected = prior.score(u, 0.01) / prior.normalizer.scale
    torch.testing.assert_close(prior.variable_score(z), expected.squeeze(-1).permute(0, 2, 1))


def test_sampling_settings_reject_unknown_keys():
    with pytest.raises(PriorFormatError, match="unknown sampling setting"):
        SamplingSettings.from_dict({"hot_stepz": 2})
    base = SamplingSettings(snr=0.5)
    assert SamplingSettings.from_dict({"snr": None, "hot_steps": 4}, base=base) == SamplingSettings(snr=0.5,
                                                                                                   hot_steps=4)


def test_not_our_checkpoint_says_so(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(PriorFormatError, match="not an SGILO score-prior checkpoint"):
        ScorePrior.load(tmp_path / "x.pt")
    with pytest.raises(PriorFormatError, match="not found"):
        ScorePrior.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_settings(name):
    spec = parse_prior_spec(OmegaConf.load(NETWORKS / f"{name}.yaml"))
    assert spec.model == {"name": "vit", "patch_size": 1, "dim": 1024, "depth": 8, "heads": 1, "dim_head": 64,
                          "mlp_dim": 4096}
    assert spec.sde == {"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0, "N": 1000}
    shapes = {"latent": [512, 18, 1], "layer1": [512, 4, 4], "layer2": [512, 8, 8]}
    assert spec.image_shape == shapes.get(name, [512, 16, 16])
    assert spec.layer == {"latent": 0, "layer1": 1, "layer2": 2}.get(name, 3)
    s = spec.sampling
    assert (s.predictor, s.corrector, s.eps, s.t_hot, s.n_steps, s.hot_sampler) == (
        "euler_maruyama", "ald", 1e-3, 0.01, 1, True)
    assert (s.snr, s.hot_steps) == ((5e-3, 5) if name == "syn_layer3" else (1e-4, 1))
    lo, hi = (-3.0592, 3.0290) if name == "latent" else (-1.4007, 2.3453)
    assert spec.normalization == {"kind": "minmax", "min": lo, "max": hi}
    assert spec.ckpt == f"checkpoints/score_based/vp_sde/{name}.pth" and spec.generator == "ffhq"


def _fabricate_published(spec, path: Path, wrap: bool) -> dict:
    """A published-style file: the ViT state dict with DataParallel's `module.` prefix (optionally in a dict)."""
    torch.manual_seed(3)
    state = {f"module.{k}": v.clone() for k, v in spec.build_model().state_dict().items()}
    torch.save({"model": state} if wrap else state, path)
    return state


@pytest.mark.parametrize("wrap", [False, True])
def test_published_checkpoint_through_trained_networks_yaml(tmp_path, wrap):
    conf = OmegaConf.load(NETWORKS / "layer1.yaml")
    # The published width (1024 x depth 8, 280 MB) is not needed to exercise the format: shrink it.
    conf.model.dim, conf.model.depth, conf.model.mlp_dim = 64, 1, 128
    spec = parse_prior_spec(conf)
    state = _fabricate_published(spec, tmp_path / "layer1.pth", wrap)
    prior = ScorePrior.from_published(tmp_path / "layer1.pth", conf)
    assert prior.layer == 1 and prior.image_shape == (512, 4, 4) and prior.generator == {"name": "ffhq"}
    assert prior.normalizer.to_dict() == {"kind": "minmax", "min": -1.4007, "max": 2.3453}
    torch.testing.assert_close(prior.model.state_dict()["pos_embedding"], state["module.pos_embedding"])
    # from_spec picks the published reader for a non-SGILO file.
    again = ScorePrior.from_spec(spec, ckpt=tmp_path / "layer1.pth")
    torch.testing.assert_close(again.model.state_dict()["projector.weight"], state["module.projector.weight"])

    conf.model.depth = 2  # weights for depth 1 do not fit: one line with the key counts
    with pytest.raises(PriorFormatError, match=r"do not fit.*missing key") as info:
        ScorePrior.from_published(tmp_path / "layer1.pth", conf)
    assert "\n" not in str(info.value)


def test_published_bundle_folder_twin(tmp_path):
    conf = OmegaConf.load(NETWORKS / "layer2.yaml")
    conf.model.dim, conf.model.depth, conf.model.mlp_dim = 32, 1, 64
    spec = parse_prior_spec(conf)
    (tmp_path / "checkpoints" / "score_based" / "vp").mkdir(parents=True)
    _fabricate_published(spec, tmp_path / "checkpoints" / "score_based" / "vp" / "layer2.pth", wrap=False)
    prior = ScorePrior.from_spec(spec, resolve=lambda p: tmp_path / p)  # the YAML says score_based/vp_sde/
    assert prior.layer == 2 and prior.image_shape == (512, 8, 8)


def test_published_schema_yaml_is_translated(tmp_path):
    published_style = {
        "device": "cuda", "N": 1, "heads": 1, "d_model": 32, "patch_size": 1, "image_shape": [512, 18, 1],
        "sde_type": "VP_SDE", "VP_SDE": {"beta_min": 0.1, "beta_max": 20, "num_scales": 1000},
        "sampling": {"predictor": "euler_maruyama", "corrector": "ald", "snr": 0.0001, "hot_steps": 1,
                     "hot_sampler": True, "n_steps_each": 1, "eps": 1e-3, "sampling_method": "pc",
                     "likelihood_weighting": True},
        "ckpt": "./checkpoints/score_based/vp_sde/latent.pth",
    }
    spec = parse_prior_spec(published_style)
    assert spec.layer == 0 and spec.model["mlp_dim"] == 128 and spec.model["depth"] == 1
    assert spec.sde == {"name": "VP_SDE", "beta_min": 0.1, "beta_max": 20, "N": 1000}
    assert spec.normalization == {"kind": "minmax", "min": -3.0592, "max": 3.0290}
    _fabricate_published(spec, tmp_path / "latent.pth", wrap=False)
    prior = ScorePrior.from_published(tmp_path / "latent.pth", published_style)
    assert prior.variable_shape == (18, 512)


@pytest.mark.slow
@pytest.mark.parametrize("name", PUBLISHED)
def test_published_size_network_loads_strictly(tmp_path, name):
    spec = parse_prior_spec(OmegaConf.load(NETWORKS / f"{name}.yaml"))
    _fabricate_published(spec, tmp_path / f"{name}.pth", wrap=False)
    prior = ScorePrior.from_published(tmp_path / f"{name}.pth", spec)
    assert prior.image_shape == tuple(spec.image_shape)


def test_dsm_loss_matches_sde_loss_with_the_same_noise():
    torch.manual_seed(0)
    model = small_vit((3, 4, 4), dim=16, depth=1, heads=1, dim_head=8, mlp_dim=32)
    sde = VPSDE()
    x0 = torch.rand(5, 3, 4, 4)
    for lw in (False, True):
        torch.manual_seed(11)
        expected = sde_loss(model, x0, sde, likelihood_weighting=lw, eps=1e-5)
        g = torch.Generator().manual_seed(11)  # the same numbers the global RNG gave sde_loss
        t = torch.rand(5, generator=g) * (1 - 1e-5) + 1e-5
        z = torch.randn(x0.shape, generator=g)
        torch.testing.assert_close(dsm_loss(model, sde, x0, t, z, likelihood_weighting=lw), expected)


def test_streams_are_seeded_and_resumable():
    G, proxy = build_generator({"name": "t", "seed": 1, "fit_samples": 256, "init": dict(
        z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8})})
    assert layer_sample_shape(G, 2) == (8, 8, 8) and layer_sample_shape(G, 0) == (8, G.num_ws, 1)
    a = LatentStream(derive_seed(0, 1, 0), G=G, layer=2, proxy=proxy)
    b = LatentStream(derive_seed(0, 1, 0), G=G, layer=2, proxy=proxy)
    other = LatentStream(derive_seed(0, 1, 1), G=G, layer=2, proxy=proxy)
    first = a.next(3)
    assert first.shape == (3, 8, 8, 8)
    torch.testing.assert_close(first, b.next(3))
    assert not torch.allclose(first, other.next(3))
    state = a.state_dict()
    expected = a.next(2)
    b.load_state_dict(state)
    torch.testing.assert_close(b.next(2), expected)
    latent = LatentStream(5, G=G, layer=0, proxy=proxy).next(2)
    assert latent.shape == (2, 8, G.num_ws, 1)


def test_stored_latents_as_training_data(tmp_path):
    from dataloaders import GeneratorLayerLatents, cache_layer_latents, save_latents
    from score.train_config import TrainConfigError, load_data_tensor, resolve_normalizer

    G, proxy = build_generator({"name": "t", "seed": 1, "fit_samples": 256, "init": dict(
        z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8})})
    cache_layer_latents(GeneratorLayerLatents(G, 2, batch_size=5, noise_mode="const"), 12, tmp_path / "shards",
                        shard_size=5)
    data = load_data_tensor({"source": "shards", "path": str(tmp_path / "shards")}, 2, (8, 8, 8), Path)
    assert data.shape == (12, 8, 8, 8)
    spec = parse_prior_spec({"layer": 2, "model": {"name": "vit"}, "sde": {"name": "vpsde"}})
    norm = resolve_normalizer(spec, 0, 10, torch.device("cpu"), {}, G, proxy, data)
    assert (norm.min, norm.max) == (float(data.min()), float(data.max()))
    drawn = LatentStream(3, data=data).next(4)
    assert drawn.shape == (4, 8, 8, 8) and all(any(torch.equal(d, x) for x in data) for d in drawn)

    save_latents(tmp_path / "z.pt", torch.randn(6, G.num_ws, 8), layer=0)  # solved z, (N, num_ws, w_dim)
    z = load_data_tensor({"source": "latents", "path": [str(tmp_path / "z.pt")]}, 0, (8, G.num_ws, 1), Path)
    assert z.shape == (6, 8, G.num_ws, 1)
    with pytest.raises(TrainConfigError, match="layer 0 needs"):
        load_data_tensor({"source": "latents", "path": str(tmp_path / "z.pt")}, 0, (8, 8, 8), Path)
    with pytest.raises(TrainConfigError, match="needs data.path"):
        load_data_tensor({"source": "shards", "path": None}, 2, (8, 8, 8), Path)


def test_training_images_as_the_data_of_a_pixel_prior(tmp_path):
    """data.source=images reads a folder of images (resized to the prior's side, in [-1, 1]) for layer -1 only."""
    from PIL import Image

    from score.train_config import TrainConfigError, load_data_tensor

    folder = tmp_path / "imgs"
    folder.mkdir()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, c in enumerate(colours):
        Image.new("RGB", (24, 24), c).save(folder / f"{i}.png")
    data = load_data_tensor({"source": "images", "path": str(folder)}, -1, (3, 16, 16), Path)
    assert data.shape == (3, 3, 16, 16) and data.dtype == torch.float32
    means = sorted(tuple(round(float(v)) for v in img.mean((1, 2))) for img in data)
    assert means == sorted([(1, -1, -1), (-1, 1, -1), (-1, -1, 1)])
    assert load_data_tensor({"source": "images", "path": [str(folder)]}, -1, (3, 16, 16), Path).shape[0] == 3
    with pytest.raises(TrainConfigError, match=r"layer -1\) trains on images"):
        load_data_tensor({"source": "generator"}, -1, (3, 16, 16), Path)
    with pytest.raises(TrainConfigError, match=r"layer -1\) trains on images"):
        load_data_tensor({"source": "images", "path": str(folder)}, 2, (8, 8, 8), Path)
    with pytest.raises(TrainConfigError, match="data.path"):
        load_data_tensor({"source": "images", "path": str(tmp_path / "missing")}, -1, (3, 16, 16), Path)
