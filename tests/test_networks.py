"""StyleGAN2 networks: structure (FFHQ-1024 parity), split composition, explicit noise, discriminator."""

import pytest
import torch

from stylegan.networks import Discriminator, Generator, modulated_conv2d

FFHQ_KWARGS = dict(
    z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
    mapping_kwargs=dict(num_layers=8),
    synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
)


def tiny_generator(seed: int = 0, resolution: int = 32, **synthesis_kwargs) -> Generator:
    torch.manual_seed(seed)
    G = Generator(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=256, channel_max=16, **synthesis_kwargs),
    ).eval()
    # Non-zero noise strengths and biases so that noise handling and skips matter in the comparisons.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith(".bias") and "affine" not in name):
                p.normal_(0, 0.3)
    return G


def expected_ffhq_keys() -> dict[str, tuple[int, ...]]:
    """State-dict layout of NVIDIA's FFHQ-1024 generator, written out from the architecture description."""
    keys: dict[str, tuple[int, ...]] = {}
    ch = {r: min(32768 // r, 512) for r in [2**i for i in range(2, 11)]}
    for res in ch:
        b = f"synthesis.b{res}"
        convs = ["conv1"] if res == 4 else ["conv0", "conv1"]
        if res == 4:
            keys[f"{b}.const"] = (512, 4, 4)
        keys[f"{b}.resample_filter"] = (4, 4)
        for conv in convs:
            cin = ch[res // 2] if (conv == "conv0") else ch[res]
            keys[f"{b}.{conv}.weight"] = (ch[res], cin, 3, 3)
            keys[f"{b}.{conv}.noise_strength"] = ()
            keys[f"{b}.{conv}.bias"] = (ch[res],)
            keys[f"{b}.{conv}.resample_filter"] = (4, 4)
            keys[f"{b}.{conv}.noise_const"] = (res, res)
            keys[f"{b}.{conv}.affine.weight"] = (cin, 512)
            keys[f"{b}.{conv}.affine.bias"] = (cin,)
        keys[f"{b}.torgb.weight"] = (3, ch[res], 1, 1)
        keys[f"{b}.torgb.bias"] = (3,)
        keys[f"{b}.torgb.affine.weight"] = (ch[res], 512)
        keys[f"{b}.torgb.affine.bias"] = (ch[res],)
    for i in range(8):
        keys[f"mapping.fc{i}.weight"] = (512, 512)
        keys[f"mapping.fc{i}.bias"] = (512,)
    keys["mapping.w_avg"] = (512,)
    return keys


@pytest.fixture(scope="module")
def ffhq_generator() -> Generator:
    return Generator(**FFHQ_KWARGS)


def test_ffhq_parameter_count_and_num_ws(ffhq_generator):
    G = ffhq_generator
    assert sum(p.numel() for p in G.parameters()) == 30_370_060
    assert G.num_ws == 18
    assert G.synthesis.num_noises == 17


def test_ffhq_state_dict_keys_and_shapes(ffhq_generator):
    got = {k: tuple(v.shape) for k, v in ffhq_generator.state_dict().items()}
    assert got == expected_ffhq_keys()


def test_ffhq_split_shapes(ffhq_generator):
    syn = ffhq_generator.synthesis
    for k in range(1, syn.num_blocks + 1):
        (c, h, w), (ic, ih, iw) = syn.layer_shape(k)
        assert h == w == ih == iw == 2 ** (k + 1)
        assert ic == 3
    assert syn.layer_shape(1)[0] == (512, 4, 4)
    assert syn.layer_shape(3)[0] == (512, 16, 16)


@pytest.mark.parametrize("architecture", ["skip", "orig", "resnet"])
def test_split_composes_exactly_at_every_layer(architecture):
    G = tiny_generator(architecture=architecture)
    syn = G.synthesis
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = G.mapping(z, None)
        full = syn(ws, noise_mode="const")
        assert full.shape == (3, 3, 32, 32)
        for k in range(0, syn.num_blocks + 1):
            x, img = syn.forward_to(ws, k, noise_mode="const")
            if k == 0:
                assert x is None and img is None
            else:
                (c, h, w), (ic, ih, iw) = syn.layer_shape(k)
                assert x.shape == (3, c, h, w)
                if architecture == "skip" or k == syn.num_blocks:
                    assert img.shape == (3, ic, ih, iw)
            out = syn.forward_from(ws, k, x, img, noise_mode="const")
            torch.testing.assert_close(out, full, rtol=0, atol=0)


def test_split_composes_with_gradients_and_random_noise_maps():
    G = tiny_generator()
    syn = G.synthesis
    G.requires_grad_(False)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    noises = syn.make_noises(2, mode="random", generator=torch.Generator().manual_seed(3))
    full = syn(ws, noises=noises)
    for k in range(1, syn.num_blocks):
        x, img = syn.forward_to(ws, k, noises=noises)
        x = x.detach().requires_grad_(True)
        out = syn.forward_from(ws, k, x, img, noises=noises)
        torch.testing.assert_close(out, full, rtol=1e-6, atol=1e-6)
        out.square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_explicit_noise_maps_match_noise_modes_and_receive_gradients():
    G = tiny_generator()
    syn = G.synthesis
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    with torch.no_grad():
        const_maps = syn.make_noises(2, mode="const")
        torch.testing.assert_close(syn(ws, noises=const_maps), syn(ws, noise_mode="const"), rtol=1e-6, atol=1e-6)
        zero_maps = [torch.zeros(s) for s in syn.noise_shapes()]
        torch.testing.assert_close(syn(ws, noises=zero_maps), syn(ws, noise_mode="none"), rtol=1e-6, atol=1e-6)
        # None entries fall back to noise_mode.
        mixed = [None] * syn.num_noises
        torch.testing.assert_close(syn(ws, noises=mixed, noise_mode="const"), syn(ws, noise_mode="const"))
        # Per-sample maps: changing sample 1's maps leaves sample 0 alone.
        other = [m.clone() for m in const_maps]
        for m in other:
            m[1].normal_()
        a, b = syn(ws, noises=const_maps), syn(ws, noises=other)
        torch.testing.assert_close(a[0], b[0])
        assert not torch.allclose(a[1], b[1])
    maps = [m.clone().requires_grad_(True) for m in syn.make_noises(2)]
    syn(ws.detach(), noises=maps).sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)


def test_noise_map_validation():
    G = tiny_generator()
    ws = G.mapping(torch.randn(1, G.z_dim), None)
    with pytest.raises(ValueError, match="noise maps"):
        G.synthesis(ws, noises=[None])
    with pytest.raises(ValueError, match="layer must be"):
        G.synthesis.forward_to(ws, 99)
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(ws[:, :2])


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modulated_conv_agree(demodulate, up):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 6, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 8, 3, 3, generator=gen, dtype=torch.float64)
    s = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    noise = torch.randn(3, 1, 6 * up, 6 * up, generator=gen, dtype=torch.float64)
    f = torch.tensor([[1, 3, 3, 1]], dtype=torch.float32)
    f = (f.t() @ f) / 64
    kw = dict(up=up, padding=1, resample_filter=f, demodulate=demodulate, flip_weight=(up == 1), noise=noise)
    a = modulated_conv2d(x, w, s, fused_modconv=True, **kw)
    b = modulated_conv2d(x, w, s, fused_modconv=False, **kw)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    if demodulate and up == 1:
        # Written out: demodulated weights, plain correlation, plus noise.
        ref = []
        for n in range(3):
            wn = w * s[n].reshape(1, -1, 1, 1)
            wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
            ref.append(torch.nn.functional.conv2d(x[n:n + 1], wn, padding=1))
        torch.testing.assert_close(a, torch.cat(ref) + noise, rtol=1e-10, atol=1e-10)


def test_truncation_and_w_avg_update():
    G = tiny_generator()
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        ws = G.mapping(z, None)
        assert ws.shape == (4, G.num_ws, G.w_dim)
        torch.testing.assert_close(G.mapping(z, None, truncation_psi=0), G.mapping.w_avg.expand_as(ws))
        half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
        torch.testing.assert_close(half[:, 2:], ws[:, 2:])
        torch.testing.assert_close(half[:, :2], 0.5 * (ws[:, :2] + G.mapping.w_avg))
    before = G.mapping.w_avg.clone()
    G.mapping.train()
    with torch.no_grad():
        G.mapping(z, None)
    assert not torch.equal(before, G.mapping.w_avg)


def test_generator_records_init_kwargs_and_rebuilds():
    G = tiny_generator()
    G2 = Generator(**G.init_kwargs).eval()
    G2.load_state_dict(G.state_dict())
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G(z, None, noise_mode="const"), G2(z, None, noise_mode="const"))


def test_conv_clamp_limits_outputs():
    G = tiny_generator(conv_clamp=0.05)
    with torch.no_grad():
        x, img = G.synthesis.forward_to(G.mapping(torch.randn(2, G.z_dim), None), 2, noise_mode="const")
    assert x.abs().max() <= 0.05 + 1e-6


@pytest.mark.parametrize("architecture", ["resnet", "skip", "orig"])
def test_discriminator_forward_backward(architecture):
    torch.manual_seed(0)
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, architecture=architecture, channel_base=256,
                      channel_max=16)
    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits = D(img, None)
    assert logits.shape == (4, 1)
    (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)  # R1 needs double backward
    grad.square().sum().backward()
    # The R1 term reaches every weight (the final bias does not affect d logits / d img).
    assert all(p.grad is not None for n, p in D.named_parameters() if n.endswith("weight"))


def test_conditional_generator_and_discriminator():
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3,
                  synthesis_kwargs=dict(channel_base=64, channel_max=8), mapping_kwargs=dict(num_layers=2))
    D = Discriminator(c_dim=3, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    c = torch.eye(3)
    img = G(torch.randn(3, 8), c, noise_mode="const")
    assert img.shape == (3, 3, 8, 8)
    assert D(img, c).shape == (3, 1)
