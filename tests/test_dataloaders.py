"""Layer-latent datasets: shapes and layouts, seeding, shards, saved latents, normalisation."""

from pathlib import Path

import pytest
import torch

from dataloaders import (
    GeneratorLayerLatents,
    LatentShards,
    MinMaxNormalizer,
    cache_layer_latents,
    latent_from_layout,
    latent_to_layout,
    load_saved_latents,
    save_latents,
)
from stylegan.networks import Generator
from stylegan.proxy import MappingProxy


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8)).eval()


def test_layer_latents_match_forward_to(G):
    src = GeneratorLayerLatents(G, layer=2, batch_size=5, noise_mode="const", seed=3)
    batch = next(iter(src))
    assert batch.shape == (5, *src.sample_shape) == (5, 8, 8, 8)
    z = torch.randn([5, 8], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x, _ = G.synthesis.forward_to(G.mapping(z, None), 2, noise_mode="const")
    torch.testing.assert_close(batch, x)


def test_streams_are_seeded_and_distinct(G):
    a = next(iter(GeneratorLayerLatents(G, 1, 4, seed=1, noise_mode="const")))
    torch.manual_seed(123)  # The global RNG state must not matter for the inputs.
    b = next(iter(GeneratorLayerLatents(G, 1, 4, seed=1, noise_mode="const")))
    c = next(iter(GeneratorLayerLatents(G, 1, 4, seed=1, stream=1, noise_mode="const")))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_layer0_layout_and_proxy(G):
    with pytest.raises(ValueError, match="proxy"):
        GeneratorLayerLatents(G, 0, 2)
    proxy = MappingProxy.fit(G.mapping, num_samples=500)
    src = GeneratorLayerLatents(G, 0, 3, proxy=proxy, seed=0)
    v = next(iter(src))
    assert v.shape == (3, G.w_dim, G.num_ws, 1)
    z = latent_from_layout(v)
    assert torch.equal(latent_to_layout(z), v)
    with torch.no_grad():
        ws = G.mapping(torch.randn([3, 8], generator=torch.Generator().manual_seed(0)), None)
    torch.testing.assert_close(proxy(z), ws, rtol=1e-4, atol=1e-4)


def test_final_layer_is_rejected(G):
    with pytest.raises(ValueError, match="finished image"):
        GeneratorLayerLatents(G, G.synthesis.num_blocks, 2)


def test_shards_round_trip_and_refuse_overwrite(G, tmp_path):
    src = GeneratorLayerLatents(G, 1, 3, noise_mode="const", seed=5)
    cache_layer_latents(src, num_samples=10, out_dir=tmp_path / "lat", shard_size=4)
    assert len(list((tmp_path / "lat").glob("shard_*.pt"))) == 3
    ds = LatentShards(tmp_path / "lat")
    assert len(ds) == 10 and ds[0].shape == src.sample_shape
    assert ds.meta["layer"] == 1
    cache_layer_latents(src, num_samples=10, out_dir=tmp_path / "again", shard_size=4)
    torch.testing.assert_close(LatentShards(tmp_path / "again").data, ds.data)  # Seeded: same samples.
    assert ds.data.std(0).mean() > 0  # Distinct samples, not one repeated.
    with pytest.raises(FileExistsError):
        cache_layer_latents(src, num_samples=2, out_dir=tmp_path / "lat")


def test_saved_latents(tmp_path):
    save_latents(tmp_path / "a.pt", torch.ones(2, 4, 4, 4), layer=1)
    save_latents(tmp_path / "b.pt", torch.zeros(3, 4, 4, 4), layer=1)
    assert load_saved_latents([tmp_path / "a.pt", tmp_path / "b.pt"], layer=1).shape == (5, 4, 4, 4)
    with pytest.raises(ValueError, match="layer 1"):
        load_saved_latents([tmp_path / "a.pt"], layer=2)


def test_a_folder_of_saved_latents_stands_for_its_layer_files(tmp_path):
    """A solve_inverse.py run dir with save_latent=true: images/<name>/latents_layer<k>.pt, read in sorted order."""
    for i, name in enumerate(["b", "a", "c"]):
        d = tmp_path / "run" / "images" / name
        d.mkdir(parents=True)
        save_latents(d / "latents_layer1.pt", torch.full((1, 4, 4, 4), float(i)), layer=1)
        save_latents(d / "latents_layer2.pt", torch.zeros(1, 4, 8, 8), layer=2)
    got = load_saved_latents([tmp_path / "run"], layer=1)
    assert got.shape == (3, 4, 4, 4) and got[:, 0, 0, 0].tolist() == [1.0, 0.0, 2.0]  # a, b, c
    assert load_saved_latents([tmp_path / "run"], layer=2).shape == (3, 4, 8, 8)
    with pytest.raises(ValueError, match="no latents_layer3.pt"):
        load_saved_latents([tmp_path / "run"], layer=3)


def test_minmax_normalizer():
    data = [torch.tensor([-1.0, 0.5]), torch.tensor([3.0])]
    norm = MinMaxNormalizer.fit(data)
    assert (norm.min, norm.max) == (-1.0, 3.0)
    v = torch.tensor([-1.0, 1.0, 3.0])
    u = norm.normalize(v)
    torch.testing.assert_close(u, (v + 1) / (4 + 1e-8))
    torch.testing.assert_close(norm.denormalize(u), v)
    assert MinMaxNormalizer.from_dict(norm.to_dict()).max == 3.0


def test_cache_command_writes_shards_once(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "dataloaders.py", str(tmp_path / "lat"), "--generator", "tiny", "--layer", "1",
           "--num-samples", "40", "--batch-size", "16"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shards = LatentShards(tmp_path / "lat")
    assert len(shards) == 40 and tuple(shards[0].shape) == (32, 4, 4)
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already holds latent shards" in again.stderr and "Traceback" not in again.stderr


def test_save_latents_never_replaces_a_file(tmp_path):
    save_latents(tmp_path / "a.pt", torch.ones(2, 4, 4, 4), layer=1)
    with pytest.raises(FileExistsError):
        save_latents(tmp_path / "a.pt", torch.zeros(2, 4, 4, 4), layer=1)
    assert load_saved_latents([tmp_path / "a.pt"], layer=1).eq(1).all()
