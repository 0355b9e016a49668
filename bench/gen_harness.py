"""Run one StyleGAN2 implementation (ours or NVIDIA's) in this process and report on it.

Both implementations ship packages named ``torch_utils`` and ``dnnlib``, so they cannot share a process;
callers (``bench/synthesis_cpu.py``, ``tests/test_nvidia_parity.py``) run this script once per
implementation and compare what it writes.

    python bench/gen_harness.py dump --impl nvidia --repo PATH --kwargs JSON --seed 0 --out FILE
    python bench/gen_harness.py time --impl ours --kwargs JSON --batch 4 --repeats 10 [--train]

Both modes take ``--device cuda`` (TF32 off, so that float32 means float32) and ``--fp16`` (let blocks listed in
``num_fp16_res`` run in float16, as they do on a GPU by default; otherwise everything is forced to float32).

``dump`` saves the seeded generator's state dict, ws, the image (noise_mode='const', float32) and the
state (x, img) after every synthesis block. ``time`` prints one JSON line with the median seconds of a
synthesis forward + backward (gradient w.r.t. ws and, with --train, the weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build(impl: str, repo: str | None, kwargs: dict, seed: int):
    if impl == "nvidia":
        if not repo:
            raise SystemExit("--repo (a stylegan2-ada-pytorch checkout) is required for --impl nvidia")
        sys.path.insert(0, str(Path(repo).resolve()))
        from training.networks import Generator  # NVIDIA's
    else:
        sys.path.insert(0, str(ROOT))
        from stylegan.networks import Generator  # ours
        if impl == "ours-torch":  # our PyTorch path for the custom ops, even on a GPU
            from torch_utils.ops import _plugin

            _plugin._modules.update(upfirdn2d=None, bias_act=None)
    torch.manual_seed(seed)
    return Generator(**kwargs)


def setup_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_states(G, ws: torch.Tensor, force_fp32: bool = True) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(x, img) after every block, walking the blocks the way both implementations slice ws."""
    syn, states, x, img, w_idx = G.synthesis, [], None, None, 0
    for res in syn.block_resolutions:
        block = getattr(syn, f"b{res}")
        cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
        w_idx += block.num_conv
        x, img = block(x, img, cur, noise_mode="const", force_fp32=force_fp32)
        states.append((x.float().cpu(), None if img is None else img.float().cpu()))
    return states


def dump(args: argparse.Namespace) -> None:
    kwargs = json.loads(args.kwargs)
    device = setup_device(args.device)
    G = build(args.impl, args.repo, kwargs, args.seed).eval()
    if args.load:
        G.load_state_dict(torch.load(args.load, weights_only=True))
    state_dict = {k: v.clone() for k, v in G.state_dict().items()}
    G.to(device)
    gen = torch.Generator().manual_seed(args.seed + 1)
    z = torch.randn(args.batch, G.z_dim, generator=gen)
    force_fp32 = not args.fp16
    with torch.no_grad():
        ws = G.mapping(z.to(device), None, truncation_psi=args.psi)
        img = G.synthesis(ws, noise_mode="const", force_fp32=force_fp32).float().cpu()
        states = block_states(G, ws, force_fp32)
    torch.save({"state_dict": state_dict, "z": z, "ws": ws.cpu(), "img": img, "states": states}, args.out)


def time_synthesis(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = setup_device(args.device)
    kwargs = json.loads(args.kwargs)
    G = build(args.impl, args.repo, kwargs, args.seed).to(device)
    G.train(args.train).requires_grad_(args.train)
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        ws = G.mapping(torch.randn(args.batch, G.z_dim, generator=gen).to(device), None)

    def step() -> None:
        w = ws.detach().requires_grad_(True)
        img = G.synthesis(w, noise_mode="const", force_fp32=not args.fp16)
        img.float().square().mean().backward()
        sync(device)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": args.impl, "median_s": statistics.median(times), "min_s": min(times),
                      "train": args.train, "batch": args.batch, "threads": args.threads, "device": args.device,
                      "fp16": args.fp16}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["dump", "time"])
    parser.add_argument("--impl", choices=["ours", "ours-torch", "nvidia"], default="ours")
    parser.add_argument("--repo", help="NVIDIA stylegan2-ada-pytorch checkout (for --impl nvidia)")
    parser.add_argument("--kwargs", required=True, help="Generator constructor kwargs as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--psi", type=float, default=1.0)
    parser.add_argument("--load", help="state dict to load after construction (dump)")
    parser.add_argument("--out", help="output file (dump)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="time in training mode with weight gradients")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (TF32 is switched off on cuda)")
    parser.add_argument("--fp16", action="store_true", help="let num_fp16_res blocks run in float16 (GPU)")
    args = parser.parse_args()
    dump(args) if args.mode == "dump" else time_synthesis(args)


if __name__ == "__main__":
    main()
