"""score.models (the published ViT layout, loading, score wrapper) and score.losses (DSM loss, EMA, steps)."""

import math

import pytest
import torch
from torch import nn

from score.losses import ExponentialMovingAverage, eval_step, get_sde_loss_fn, sde_loss, train_step, warmup_lr
from score.models import (
    PUBLISHED_SHAPES,
    Attention,
    PatchesToTokens,
    ViT,
    get_score_fn,
    load_score_state_dict,
    published_vit,
    small_vit,
    strip_prefix,
)
from score.sde import VESDE, VPSDE, subVPSDE


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small tensors: one thread avoids OpenMP spin-waits that stall them on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def published_keys(c, h, w, p=1, dim=1024, depth=8, heads=1, dim_head=64, mlp_dim=4096):
    """Keys and shapes of the published SGILO ViT (giannisdaras/sgilo, score/models.py), written out by hand."""
    n = (h // p) * (w // p)
    e = n + n % 2
    inner = heads * dim_head
    keys = [
        ("pos_embedding", (1, n, dim)),
        ("dense.dense.weight", (e, e)),
        ("dense.dense.bias", (e,)),
        ("embed.0.W", (e // 2,)),
        ("embed.1.weight", (e, e)),
        ("embed.1.bias", (e,)),
        ("to_patch_embedding.1.weight", (dim, p * p * c)),
        ("to_patch_embedding.1.bias", (dim,)),
    ]
    for i in range(depth):
        pre = f"transformer.layers.{i}"
        keys += [
            (f"{pre}.0.fn.norm.weight", (dim,)),
            (f"{pre}.0.fn.norm.bias", (dim,)),
            (f"{pre}.0.fn.fn.to_qkv.weight", (3 * inner, dim)),
            (f"{pre}.0.fn.fn.to_out.0.weight", (dim, inner)),
            (f"{pre}.0.fn.fn.to_out.0.bias", (dim,)),
            (f"{pre}.1.fn.norm.weight", (dim,)),
            (f"{pre}.1.fn.norm.bias", (dim,)),
            (f"{pre}.1.fn.fn.net.0.weight", (mlp_dim, dim)),
            (f"{pre}.1.fn.fn.net.0.bias", (mlp_dim,)),
            (f"{pre}.1.fn.fn.net.3.weight", (dim, mlp_dim)),
            (f"{pre}.1.fn.fn.net.3.bias", (dim,)),
        ]
    keys += [("projector.weight", (c, dim // (p * p))), ("projector.bias", (c,))]
    return keys


@pytest.mark.parametrize("name", sorted(PUBLISHED_SHAPES))
def test_published_configs_have_the_published_state_dict(name):
    # Built on the meta device: shapes without allocating the 70 M parameters.
    with torch.device("meta"):
        model = published_vit(PUBLISHED_SHAPES[name])
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == published_keys(*PUBLISHED_SHAPES[name])


def test_published_layer3_sizes():
    with torch.device("meta"):
        model = published_vit((512, 16, 16))
    sd = model.state_dict()
    assert sd["pos_embedding"].shape == (1, 256, 1024)
    assert sd["embed.0.W"].shape == (128,)
    assert sd["transformer.layers.7.0.fn.fn.to_qkv.weight"].shape == (192, 1024)
    assert "transformer.layers.8.0.fn.norm.weight" not in sd
    # the Fourier frequencies are saved but never trained
    assert "embed.0.W" not in dict(model.named_parameters())


@pytest.mark.parametrize(
    "c,h,w,p,dim,heads",
    [(8, 4, 4, 1, 32, 2), (6, 18, 1, 1, 32, 1), (5, 3, 3, 1, 16, 1), (4, 8, 4, 2, 32, 2)],
    ids=["square", "latent-like", "odd-tokens", "patch2"],
)
def test_small_vit_keys_shapes_and_forward(c, h, w, p, dim, heads):
    model = ViT(width=w, height=h, patch_size=p, dim=dim, depth=2, heads=heads, mlp_dim=2 * dim, channels=c,
                dim_head=8)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == published_keys(c, h, w, p=p, dim=dim, depth=2, heads=heads, dim_head=8, mlp_dim=2 * dim)
    x = torch.randn(3, c, h, w)
    out = model(x, torch.rand(3))
    assert out.shape == (3, c, h, w)
    assert torch.isfinite(out).all()


def test_state_dict_round_trip_strict_and_module_prefix(tmp_path):
    torch.manual_seed(0)
    model = small_vit((8, 4, 4)).eval()
    x, t = torch.randn(2, 8, 4, 4), torch.tensor([0.3, 0.9])
    ref = model(x, t)

    path = tmp_path / "prior.pth"
    torch.save(model.state_dict(), path)
    fresh = load_score_state_dict(small_vit((8, 4, 4)).eval(), path)
    torch.testing.assert_close(fresh(x, t), ref, rtol=0, atol=0)

    # a DataParallel / DDP checkpoint
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}
    path2 = tmp_path / "prior_dp.pth"
    torch.save(wrapped, path2)
    fresh = load_score_state_dict(small_vit((8, 4, 4)).eval(), path2)
    torch.testing.assert_close(fresh(x, t), ref, rtol=0, atol=0)
    assert list(strip_prefix(wrapped)) == list(model.state_dict())

    # a self-describing checkpoint with the EMA weights inside
    fresh = load_score_state_dict(small_vit((8, 4, 4)).eval(), {"config": {"dim": 64}, "ema": wrapped})
    torch.testing.assert_close(fresh(x, t), ref, rtol=0, atol=0)

    # strict loading refuses a checkpoint of another layout
    broken = dict(model.state_dict())
    broken.pop("projector.bias")
    with pytest.raises(RuntimeError, match="projector.bias"):
        load_score_state_dict(small_vit((8, 4, 4)), broken)


def test_patch_tokens_follow_b_c_hp1_wp2_to_b_hw_p1p2c():
    x = torch.randn(2, 3, 4, 6)
    tokens = PatchesToTokens(2)(x)
    assert tokens.shape == (2, 6, 12)
    for hi in range(2):
        for wi in range(3):
            for p1 in range(2):
                for p2 in range(2):
                    for c in range(3):
                        feat = (p1 * 2 + p2) * 3 + c
                        assert tokens[1, hi * 3 + wi, feat] == x[1, c, hi * 2 + p1, wi * 2 + p2]


def test_attention_is_softmax_qkT_over_sqrt_dim_head():
    torch.manual_seed(1)
    attn = Attention(dim=12, heads=3, dim_head=5)
    x = torch.randn(2, 7, 12)
    q, k, v = attn.to_qkv(x).chunk(3, dim=-1)

    def heads(a):  # (b, n, h·d) -> (b, h, n, d), head-major channels
        return a.reshape(2, 7, 3, 5).transpose(1, 2)

    weights = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(5), dim=-1)
    expected = attn.to_out((weights @ heads(v)).transpose(1, 2).reshape(2, 7, 15))
    torch.testing.assert_close(attn(x), expected)


def test_time_enters_as_a_per_token_scalar():
    torch.manual_seed(2)
    model = small_vit((4, 3, 3)).eval()
    x = torch.randn(1, 4, 3, 3)
    # Zero the time path: the output no longer depends on t.
    with torch.no_grad():
        model.dense.dense.weight.zero_()
        model.dense.dense.bias.zero_()
    torch.testing.assert_close(model(x, torch.tensor([0.1])), model(x, torch.tensor([0.9])))
    # A bias b on the time path shifts token i by b_i in every channel: same as adding b_i to it.
    with torch.no_grad():
        model.dense.dense.bias.copy_(torch.arange(10.0))
    out_t = model(x, torch.tensor([0.5]))
    with torch.no_grad():
        model.dense.dense.bias.zero_()
        model.pos_embedding += torch.arange(9.0)[None, :, None]
    torch.testing.assert_close(model(x, torch.tensor([0.5])), out_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_score_fn_is_minus_output_over_std(sde):
    torch.manual_seed(3)
    model = small_vit((4, 2, 2))
    x, t = torch.randn(5, 4, 2, 2), torch.rand(5) * 0.9 + 0.05
    score = get_score_fn(sde, model)(x, t)
    assert not model.training
    std = sde.marginal_prob(x, t)[1]
    torch.testing.assert_close(score, -model(x, t) / std[:, None, None, None])
    get_score_fn(sde, model, train=True)(x, t)
    assert model.training


# -- losses ------------------------------------------------------------------------------------------


class ExactPointScore(nn.Module):
    """The exact (noise-scaled) score model of data concentrated at x0: model(x, t) = (x - a_t x0) / std_t."""

    def __init__(self, sde, x0):
        super().__init__()
        self.sde = sde
        self.x0 = x0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        mean, std = self.sde.marginal_prob(self.x0.expand_as(x), t)
        return (x - mean) / std.reshape(-1, *[1] * (x.ndim - 1)) + 0 * self.dummy


class Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return torch.zeros_like(x) + 0 * self.dummy


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("weighting", [False, True])
def test_dsm_loss_vanishes_for_the_exact_score_of_a_point(sde, weighting):
    x0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    batch = x0.expand(256, 3)
    loss = sde_loss(ExactPointScore(sde, x0), batch, sde, likelihood_weighting=weighting)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)


def test_dsm_loss_of_the_zero_model_is_the_noise_energy():
    torch.manual_seed(4)
    batch = torch.randn(20000, 4)
    # ‖0·std + z‖² averaged over dims has mean 1 (s.e. ≈ 0.005 here); half the sum over dims: 2.
    assert sde_loss(Zero(), batch, VPSDE()).item() == pytest.approx(1.0, abs=0.03)
    assert sde_loss(Zero(), batch, VPSDE(), reduce_mean=False).item() == pytest.approx(2.0, abs=0.06)
    # With likelihood weighting the same residual is weighted by g²/std², whose mean over t ~ U(eps, 1)
    # is ∫ β/(1 - e^{-B}) dt / (1 - eps) with B = ∫β; as β/(1 - e^{-B}) = B' + (log(1 - e^{-B}))', that is
    # [B + log(1 - e^{-B})]_eps^1 / (1 - eps) for the VP SDE.
    eps = 1e-2

    def antiderivative(t):
        B = 0.1 * t + 9.95 * t**2
        return B + math.log(1 - math.exp(-B))

    expected = (antiderivative(1.0) - antiderivative(eps)) / (1 - eps)
    loss = sde_loss(Zero(), batch, VPSDE(), likelihood_weighting=True, eps=eps)
    assert loss.item() == pytest.approx(expected, rel=0.1)


def test_ema_matches_hand_computation_and_swaps_weights():
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    frozen = nn.Parameter(torch.tensor([5.0]), requires_grad=False)
    ema = ExponentialMovingAverage([p, frozen], decay=0.9)
    assert len(ema.shadow_params) == 1  # frozen parameters are not averaged
    with torch.no_grad():
        p.copy_(torch.tensor([3.0, 6.0]))
    ema.update([p, frozen])  # decay = min(0.9, 2/11)
    d = 2 / 11
    expected = torch.tensor([1.0, 2.0]) * d + torch.tensor([3.0, 6.0]) * (1 - d)
    torch.testing.assert_close(ema.shadow_params[0], expected)
    for _ in range(200):
        ema.update([p, frozen])
    assert ema.current_decay() == 0.9
    torch.testing.assert_close(ema.shadow_params[0], torch.tensor([3.0, 6.0]))

    ema2 = ExponentialMovingAverage([p], decay=0.5, use_num_updates=False)
    with torch.no_grad():
        p.copy_(torch.tensor([1.0, 0.0]))
    ema2.update([p])
    torch.testing.assert_close(ema2.shadow_params[0], torch.tensor([2.0, 3.0]))

    # store / copy_to / restore
    ema2.store([p])
    ema2.copy_to([p])
    torch.testing.assert_close(p.detach(), torch.tensor([2.0, 3.0]))
    ema2.restore([p])
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, 0.0]))

    # state dict round trip
    ema3 = ExponentialMovingAverage([nn.Parameter(torch.zeros(2))], decay=0.1)
    ema3.load_state_dict(ema.state_dict())
    assert ema3.decay == 0.9 and ema3.num_updates == 201
    torch.testing.assert_close(ema3.shadow_params[0], ema.shadow_params[0])


def test_warmup_and_gradient_clipping_in_train_step():
    torch.manual_seed(5)
    lin = nn.Linear(3, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    w0 = lin.weight.detach().clone()

    def loss_fn(model, batch):
        return 1000.0 * model(batch).sum()  # a huge gradient, to be clipped

    expected_loss = 1000.0 * (4 * (w0.sum() + lin.bias.sum())).item()
    loss = train_step(lin, torch.ones(4, 3), opt, loss_fn, step=0, lr=1.0, warmup=10, grad_clip=1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    total_norm = math.sqrt(sum((p.grad**2).sum().item() for p in lin.parameters()))
    assert total_norm == pytest.approx(1.0, rel=1e-5)
    # SGD moved the weights by lr · clipped gradient
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.1 * lin.weight.grad)
    assert warmup_lr(2.0, 50, 10) == 2.0 and warmup_lr(2.0, 4, 10) == 1.0 and warmup_lr(2.0, 0, 0) == 2.0


def test_eval_step_uses_ema_weights_and_restores_training_weights():
    model = small_vit((2, 2, 2))
    ema = ExponentialMovingAverage(model.parameters(), decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = [p.detach().clone() for p in model.parameters()]
    seen = []

    def loss_fn(m, batch):
        seen.append(m.projector.bias.detach().clone())
        return torch.zeros(())

    eval_step(model, torch.zeros(1, 2, 2, 2), loss_fn, ema)
    torch.testing.assert_close(seen[0], ema.shadow_params[-1])
    for a, b in zip(model.parameters(), before):
        torch.testing.assert_close(a.detach(), b)


def test_training_a_small_vit_lowers_the_loss():
    torch.manual_seed(6)
    sde = VPSDE()
    model = small_vit((4, 2, 2), dim=32, depth=1, heads=1, dim_head=16, mlp_dim=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = get_sde_loss_fn(sde)
    eval_fn = get_sde_loss_fn(sde, train=False)
    centre = torch.randn(1, 4, 2, 2)

    def data(n):
        return centre + 0.05 * torch.randn(n, 4, 2, 2)

    torch.manual_seed(7)
    before = eval_fn(model, data(4096)).item()
    for step in range(60):
        train_step(model, data(128), opt, loss_fn, step, lr=3e-3, warmup=10, grad_clip=1.0)
    torch.manual_seed(7)
    after = eval_fn(model, data(4096)).item()
    assert after < 0.25 * before  # measured: 1.41 -> 0.17


def test_patches_fold_back_onto_their_own_patch():
    """tokens_to_grid inverts PatchesToTokens (for dim = p²·C), so a token's output covers its own patch."""
    from score.models import PatchesToTokens, tokens_to_grid

    x = torch.randn(2, 3, 8, 4)
    for p in (1, 2, 4):
        tokens = PatchesToTokens(p)(x)
        torch.testing.assert_close(tokens_to_grid(tokens, 8, 4, p).permute(0, 3, 1, 2), x, rtol=0, atol=0)
    model = ViT(width=4, height=8, patch_size=2, dim=16, depth=1, heads=1, mlp_dim=8, channels=3, dim_head=8)
    tokens = torch.zeros(1, 8, 16)
    tokens[0, 5] = 1.0  # token 5 = patch row 2, column 1 of the (4, 2) patch grid
    moved = (model.projector(tokens_to_grid(tokens, 8, 4, 2)) - model.projector.bias).abs().sum(-1)[0]
    assert moved[4:6, 2:4].gt(0).all() and moved.sum() == moved[4:6, 2:4].sum()
