"""stylegan.augment: ADA's transforms at small resolution and the adjustment of p toward r_t."""

import copy

import pytest
import torch

from stylegan.augment import AdaController, AugmentPipe, translate
from stylegan.discriminator import Discriminator
from stylegan.networks import Generator
from stylegan.training import GANSettings, StyleGANTrainer


def test_identity_at_p0_and_every_transform_changes_images_at_p1():
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    pipe = AugmentPipe()
    assert pipe(x) is x
    for name in ("xflip", "translate", "color", "cutout"):
        only = AugmentPipe(**{k: k == name for k in ("xflip", "translate", "color", "cutout")})
        only.p.fill_(1.0)
        torch.manual_seed(0)
        y = only(x)
        assert y.shape == x.shape and not torch.allclose(y, x), name
        if name == "xflip":
            assert torch.equal(y, x.flip(3))
        if name == "cutout":  # a square of half the side (4 x 4), centred uniformly, so cut at the borders
            zeros = (y == 0).all(dim=1).flatten(1).sum(1)
            assert ((zeros >= 4) & (zeros <= 16)).all() and (zeros == 16).any()


def test_probability_is_per_image():
    x = torch.rand(2000, 3, 4, 4)
    pipe = AugmentPipe(translate=False, color=False, cutout=False)
    pipe.p.fill_(0.3)
    torch.manual_seed(0)
    flipped = (pipe(x) != x).flatten(1).any(1).float().mean()
    assert abs(flipped.item() - 0.3) < 0.04


def test_integer_translation_reflects_at_the_border_and_keeps_gradients():
    x = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_(True)
    y = translate(x, torch.tensor([[1, 0]]))
    assert y[0, 0, 0].tolist() == [1.0, 0.0, 1.0, 2.0]
    y = translate(x, torch.tensor([[0, -2]]))
    assert y[0, 0, :, 0].tolist() == [8.0, 12.0, 8.0, 4.0]
    y.sum().backward()
    assert x.grad is not None and x.grad.sum() == 16


def test_gradient_reaches_the_generator_through_every_transform():
    pipe = AugmentPipe()
    pipe.p.fill_(1.0)
    x = torch.randn(8, 3, 8, 8, requires_grad=True)
    pipe(x).square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_controller_steps_p_toward_the_target_and_round_trips():
    pipe = AugmentPipe()
    ada = AdaController(pipe, target=0.6, interval=2, speed_kimg=1.0)
    for _ in range(4):  # D sure of every real: overfitting, p rises by batch * interval / 1000 per adjustment
        ada.observe(torch.ones(10, 1), batch_size=10)
    assert ada.rt == 1.0 and float(pipe.p) == pytest.approx(0.04)
    for _ in range(2):
        ada.observe(-torch.ones(10, 1), batch_size=10)
    assert float(pipe.p) == pytest.approx(0.02)
    for _ in range(20):
        ada.observe(-torch.ones(10, 1), batch_size=10)
    assert float(pipe.p) == 0.0  # clamped
    other = AdaController(AugmentPipe(), 0.6, 2, 1.0)
    ada.observe(torch.ones(10, 1), batch_size=10)
    other.load_state_dict(ada.state_dict())
    assert other.state_dict() == ada.state_dict() and float(other.pipe.p) == float(pipe.p)
    with pytest.raises(ValueError):
        AdaController(pipe, target=1.5)


def _trainer(ada_target):
    torch.manual_seed(0)
    G = Generator(8, 0, 8, 8, 3, mapping_kwargs={"num_layers": 1}, synthesis_kwargs={"channel_base": 64,
                                                                                      "channel_max": 8})
    D = Discriminator(0, 8, 3, channel_base=64, channel_max=8)

    class Data:
        images = torch.rand(32, 3, 8, 8) * 2 - 1

        def __len__(self):
            return 32

        def batch(self, idx):
            return self.images[torch.as_tensor(idx)]

    return StyleGANTrainer(G, D, Data(), GANSettings(batch_size=4, d_reg_interval=2, ada_target=ada_target,
                                                     ada_interval=1, ada_kimg=0.01), "cpu")


def test_trainer_adjusts_p_and_resumes_the_ada_state():
    trainer = _trainer(0.6)
    for _ in range(6):
        trainer.train_step()
    assert float(trainer.augment.p) > 0 or trainer.ada.rt < 0.6
    state = copy.deepcopy(trainer.state_dict())  # as from disk: the optimisers' state_dict shares live tensors
    resumed = _trainer(0.6)
    resumed.load_state_dict(state)
    assert resumed.ada.state_dict() == trainer.ada.state_dict()
    torch.set_rng_state(state["rng"]["torch"])  # building `resumed` reseeded the global RNG
    a = trainer.train_step()
    torch.set_rng_state(state["rng"]["torch"])
    b = resumed.train_step()
    assert a == pytest.approx(b, nan_ok=True)
    # A run without augmentation keeps p at 0 and logs it.
    plain = _trainer(None)
    assert plain.train_step()["ada_p"] == 0.0 and plain.ada is None
