"""Gaussianised W+ mapping proxy: fit statistics, inverse, file format."""

import pytest
import torch
import torch.nn.functional as F

from stylegan.networks import MappingNetwork
from stylegan.proxy import MappingProxy


def tiny_mapping(seed: int = 0) -> MappingNetwork:
    torch.manual_seed(seed)
    m = MappingNetwork(z_dim=8, c_dim=0, w_dim=6, num_ws=4, num_layers=3).eval()
    with torch.no_grad():  # Spread the biases so the fitted means differ per coordinate.
        for idx in range(3):
            getattr(m, f"fc{idx}").bias.normal_(0, 30)
    return m


def test_fit_matches_direct_statistics():
    m = tiny_mapping()
    proxy = MappingProxy.fit(m, num_samples=5000, seed=7, batch_size=1234)
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(5000, 8, generator=gen)
    with torch.no_grad():
        v = F.leaky_relu(m(z, None)[:, 0], 5.0).double()
    torch.testing.assert_close(proxy.mean, v.mean(0).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proxy.std, v.std(0).float(), rtol=1e-5, atol=1e-5)


def test_fit_is_seeded_and_standardises():
    m = tiny_mapping()
    a = MappingProxy.fit(m, num_samples=4000, seed=1)
    b = MappingProxy.fit(m, num_samples=4000, seed=1)
    c = MappingProxy.fit(m, num_samples=4000, seed=2)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert not torch.equal(a.mean, c.mean)
    # Fresh samples mapped to z are standardised: mean ~ 0, std ~ 1 per coordinate.
    with torch.no_grad():
        w = m(torch.randn(20000, 8, generator=torch.Generator().manual_seed(99)), None)[:, 0]
    z = a.to_z(w)
    assert z.mean(0).abs().max() < 0.05
    assert (z.std(0) - 1).abs().max() < 0.05


def test_inverse_round_trip():
    proxy = MappingProxy(torch.randn(6), torch.rand(6) + 0.5)
    z = torch.randn(3, 5, 6)
    torch.testing.assert_close(proxy.to_z(proxy(z)), z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proxy(z), F.leaky_relu(z * proxy.std + proxy.mean, 0.2))


def test_save_load_round_trip(tmp_path):
    proxy = MappingProxy(torch.randn(6), torch.rand(6) + 0.5)
    path = tmp_path / "gaussian_fit.pt"
    proxy.save(path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"mean", "std"}
    loaded = MappingProxy.load(path)
    assert torch.equal(loaded.mean, proxy.mean) and torch.equal(loaded.std, proxy.std)
    with pytest.raises(FileExistsError):  # never replaces a file unless asked
        MappingProxy(torch.zeros(6), torch.ones(6)).save(path)
    assert torch.equal(MappingProxy.load(path).mean, proxy.mean)
    MappingProxy(torch.zeros(6), torch.ones(6)).save(path, overwrite=True)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        MappingProxy.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable"):
        MappingProxy.load(bad)
    torch.save({"mean": torch.zeros(3)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        MappingProxy.load(tmp_path / "partial.pt")


def test_reference_ffhq_fit_loads(reference_dir):
    proxy = MappingProxy.load(reference_dir / "gaussian_fit_ffhq.pt")
    assert proxy.w_dim == 512
    assert (proxy.std > 0).all()
    # z = 0 maps to leaky_relu(mean): a finite W latent; inverse recovers z.
    z = torch.randn(2, 18, 512)
    torch.testing.assert_close(proxy.to_z(proxy(z)), z, rtol=1e-4, atol=1e-4)
