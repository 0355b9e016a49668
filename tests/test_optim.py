"""The round optimiser: FusedAdam steps bit for bit like torch.optim.Adam(fused=True)."""

import torch

from inverse.optim import FusedAdam, round_optimizer


def tensors(seed: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 8, 32), (4, 1, 4, 4), (4, 1, 8, 8), (4, 32, 4, 4)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_(True) for s in shapes]


def test_fused_adam_matches_torch_adam_bit_for_bit():
    ours, theirs = tensors(0), tensors(0)
    opt_ours = FusedAdam(ours, lr=0.05)
    opt_theirs = torch.optim.Adam(theirs, lr=0.05, fused=True)
    g = torch.Generator().manual_seed(1)
    for step in range(12):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        lr = 0.05 * (1 - step / 12)  # the lr changes between steps, through param_groups as with a torch optimiser
        for opt in (opt_ours, opt_theirs):
            opt.param_groups[0]["lr"] = lr
        for params in (ours, theirs):
            for i, (p, grad) in enumerate(zip(params, grads)):
                # the third tensor has no gradient on the first steps: both skip it and start its state later
                p.grad = None if (i == 2 and step < 4) else grad.clone()
        opt_ours.step()
        opt_theirs.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    # A step that changes nothing would also pass the loop above: make sure the tensors moved.
    assert not torch.equal(ours[0], tensors(0)[0])


def test_round_optimizer_picks_fused_adam_where_it_applies():
    assert isinstance(round_optimizer(tensors(0), "adam", 0.1), FusedAdam)
    mixed = [*tensors(0), torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    assert isinstance(round_optimizer(mixed, "adam", 0.1), torch.optim.Adam)
    assert isinstance(round_optimizer(tensors(0), "sgd", 0.1), torch.optim.SGD)
    assert round_optimizer([], "adam", 0.1) is None


def test_fused_adam_in_double_precision():
    ours, theirs = tensors(3, torch.float64), tensors(3, torch.float64)
    opt_ours, opt_theirs = FusedAdam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01, fused=True)
    for p, q in zip(ours, theirs):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    opt_ours.step()
    opt_theirs.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
