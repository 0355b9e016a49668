"""CPU speed of torch_utils.ops (this project) against NVIDIA's reference PyTorch path, op by op.

    python bench/ops_cpu.py --nvidia-repo /path/to/stylegan2-ada-pytorch   # or env NVIDIA_STYLEGAN2_ADA
    python bench/ops_cpu.py                                                 # our timings only

Shapes are those of a StyleGAN2 synthesis network at --resolution (64), --channels (128), --batch (4).
Each case is timed forward only and forward + backward. Both implementations run in this one process and
are timed in alternation (round-robin, best of --rounds), which keeps the comparison fair on a shared,
noisy machine; with one thread the default clock is the process CPU time, which time-slicing by other
processes does not inflate. NVIDIA's ``torch_utils``/``dnnlib`` are imported under their own names by swapping
``sys.modules`` while loading them; nothing of theirs is copied.

The last case, ``synthesis_chain``, strings the ops together the way a StyleGAN2 synthesis network calls
them (modulate, conv2d_resample, fma with demodulation and noise, bias_act, ToRGB, skip upsampling), so its
ratio weights each op by how much it matters. The last line printed is JSON.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d  # noqa: E402

OURS = SimpleNamespace(upfirdn2d=upfirdn2d, bias_act=bias_act, conv2d_resample=conv2d_resample, fma=fma, impl={})

_SHARED_PACKAGES = ("torch_utils", "dnnlib")


def _is_shared(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _SHARED_PACKAGES)


def load_nvidia_ops(repo: str) -> SimpleNamespace:
    """Import NVIDIA's op modules from ``repo`` without disturbing ours (same package names)."""
    ours = {k: v for k, v in sys.modules.items() if _is_shared(k)}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, repo)
    try:
        mods: dict[str, ModuleType] = {
            n: importlib.import_module(f"torch_utils.ops.{n}") for n in ("upfirdn2d", "bias_act", "conv2d_resample",
                                                                         "fma")
        }
    finally:
        sys.path.remove(repo)
        for k in [k for k in sys.modules if _is_shared(k)]:
            del sys.modules[k]
        sys.modules.update(ours)
    return SimpleNamespace(**mods, impl={"impl": "ref"})


# ----------------------------------------------------------------------------------------------------------
# Timing.


def time_round_robin(
    fns: dict[str, callable], rounds: int, min_time: float = 0.05, clock=time.perf_counter
) -> dict[str, float]:
    """Best-of-``rounds`` seconds per call for each function, alternating between them every round."""
    reps = {}
    for name, fn in fns.items():  # warm up and choose a repetition count per function
        fn()
        t0 = clock()
        fn()
        reps[name] = max(1, math.ceil(min_time / max(clock() - t0, 1e-6)))
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(reps[name]):
                fn()
            best[name] = min(best[name], (clock() - t0) / reps[name])
    return best


def fwd_and_fwdbwd(make_inputs, run):
    """Two closures: forward only (no autograd), and forward + backward w.r.t. the inputs needing grad."""
    inputs = make_inputs()

    def forward():
        with torch.no_grad():
            run(*inputs)

    def forward_backward():
        leaves = [t.detach().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in inputs]
        out = run(*leaves)
        out.backward(torch.ones_like(out))

    return forward, forward_backward


# ----------------------------------------------------------------------------------------------------------
# Cases: (name, make_inputs, run(ops, *inputs)).


def build_cases(n: int, c: int, res: int) -> list[tuple[str, callable, callable]]:
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    half = res // 2

    def t(*shape, grad=True):
        return lambda: torch.randn(*shape).requires_grad_(grad)

    def inputs(*makers):
        return lambda: [m() for m in makers]

    sqrt2 = math.sqrt(2)
    return [
        ("upsample2d img", inputs(t(n, 3, half, half)), lambda o, x: o.upfirdn2d.upsample2d(x, f, **o.impl)),
        ("filter after up-conv", inputs(t(n, c, res + 1, res + 1)),
         lambda o, x: o.upfirdn2d.upfirdn2d(x, f, padding=1, gain=4, **o.impl)),
        ("downsample2d", inputs(t(n, c, res, res)), lambda o, x: o.upfirdn2d.downsample2d(x, f, **o.impl)),
        ("filter before down-conv", inputs(t(n, c, res, res)),
         lambda o, x: o.upfirdn2d.upfirdn2d(x, f, padding=2, **o.impl)),
        ("bias_act lrelu+clamp", inputs(t(n, c, res, res), t(c)),
         lambda o, x, b: o.bias_act.bias_act(x, b, act="lrelu", gain=sqrt2, clamp=256, **o.impl)),
        ("bias_act lrelu", inputs(t(n, c, res, res), t(c)),
         lambda o, x, b: o.bias_act.bias_act(x, b, act="lrelu", **o.impl)),
        ("bias_act linear (ToRGB)", inputs(t(n, 3, res, res), t(3)),
         lambda o, x, b: o.bias_act.bias_act(x, b, clamp=256, **o.impl)),
        ("bias_act lrelu (mapping)", inputs(t(n, 512), t(512)),
         lambda o, x, b: o.bias_act.bias_act(x, b, act="lrelu", **o.impl)),
        ("fma demod+noise", inputs(t(n, c, res, res), t(n, c, 1, 1), t(n, 1, res, res)),
         lambda o, x, d, z: o.fma.fma(x, d, z)),
        ("conv 3x3 up=2", inputs(t(n, c, half, half), t(c, c, 3, 3)),
         lambda o, x, w: o.conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)),
        ("conv 3x3", inputs(t(n, c, res, res), t(c, c, 3, 3)),
         lambda o, x, w: o.conv2d_resample.conv2d_resample(x, w, f, padding=1)),
        ("conv 1x1 ToRGB", inputs(t(n, c, res, res), t(3, c, 1, 1)),
         lambda o, x, w: o.conv2d_resample.conv2d_resample(x, w)),
        ("conv 3x3 down=2 (D)", inputs(t(n, c, res, res), t(c, c, 3, 3)),
         lambda o, x, w: o.conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1)),
        ("conv 1x1 down=2 (D skip)", inputs(t(n, c, res, res), t(c, c, 1, 1)),
         lambda o, x, w: o.conv2d_resample.conv2d_resample(x, w, f, down=2)),
        ("conv 3x3 up=2 grouped (fused modconv)", inputs(t(1, n * c, half, half), t(n * c, c, 3, 3)),
         lambda o, x, w: o.conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, groups=n, flip_weight=False)),
    ]


def synthesis_chain(o: SimpleNamespace, params: dict, styles: torch.Tensor, n: int, res: int) -> torch.Tensor:
    """The op sequence of a StyleGAN2 synthesis network (non-fused modulated convs, skip architecture)."""
    f = params["filter"]
    x = params["const"].unsqueeze(0).repeat(n, 1, 1, 1)
    img = None
    k = 0

    def layer(x, up):
        nonlocal k
        w, b, s = params["w"][k], params["b"][k], styles[:, k]
        k += 1
        dcoefs = (w.unsqueeze(0) * s.reshape(n, 1, -1, 1, 1)).square().sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
        x = x * s.reshape(n, -1, 1, 1)
        x = o.conv2d_resample.conv2d_resample(x, w, f, up=up, padding=1, flip_weight=(up == 1))
        noise = params["noise"][x.shape[-1]]
        x = o.fma.fma(x, dcoefs.reshape(n, -1, 1, 1), noise)
        return o.bias_act.bias_act(x, b, act="lrelu", gain=math.sqrt(2), clamp=256, **o.impl)

    r = 4
    while r <= res:
        if r > 4:
            x = layer(x, 2)
        x = layer(x, 1)
        if img is not None:
            img = o.upfirdn2d.upsample2d(img, f, **o.impl)
        s = styles[:, k]
        y = o.conv2d_resample.conv2d_resample(x * s.reshape(n, -1, 1, 1), params["rgb"][r])
        y = o.bias_act.bias_act(y, params["rgb_b"][r], clamp=256, **o.impl)
        img = y if img is None else img + y
        r *= 2
    return img


def chain_case(n: int, c: int, res: int, train: bool):
    g = torch.Generator().manual_seed(0)
    num_layers = 2 * int(math.log2(res)) - 2
    params = {
        "filter": upfirdn2d.setup_filter([1, 3, 3, 1]),
        "const": torch.randn(c, 4, 4, generator=g),
        "w": [torch.randn(c, c, 3, 3, generator=g) / math.sqrt(9 * c) for _ in range(num_layers)],
        "b": [torch.zeros(c) for _ in range(num_layers)],
        "rgb": {4 * 2**i: torch.randn(3, c, 1, 1, generator=g) / math.sqrt(c) for i in range(int(math.log2(res)) - 1)},
        "rgb_b": {4 * 2**i: torch.zeros(3) for i in range(int(math.log2(res)) - 1)},
        "noise": {4 * 2**i: torch.randn(1, 1, 4 * 2**i, 4 * 2**i, generator=g) for i in range(int(math.log2(res)) - 1)},
    }
    leaves = [params["const"], *params["w"], *params["b"], *params["rgb"].values(), *params["rgb_b"].values()]
    styles0 = torch.randn(n, num_layers + 1, c, generator=g)

    def make(o):
        def run():
            for p in leaves:
                p.requires_grad_(train)
                p.grad = None
            styles = styles0.detach().requires_grad_(True)
            img = synthesis_chain(o, params, styles, n, res)
            img.square().mean().backward()

        return run

    return make


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvidia-repo", default=os.environ.get("NVIDIA_STYLEGAN2_ADA"))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="", help="comma-separated substrings: run only matching cases")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="apply torch_utils.ops.cpu_malloc.tune_cpu_malloc() (affects both implementations)")
    parser.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                        help="cpu = process CPU time (robust on a busy machine, exact for --threads 1); "
                             "auto = cpu for one thread, wall otherwise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tune_malloc:
        from torch_utils.ops.cpu_malloc import tune_cpu_malloc

        print(f"tune_cpu_malloc: {tune_cpu_malloc()}")
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter

    impls = {"ours": OURS}
    if args.nvidia_repo and (Path(args.nvidia_repo) / "torch_utils" / "ops").is_dir():
        impls["nvidia"] = load_nvidia_ops(str(Path(args.nvidia_repo).resolve()))
    else:
        print("(no NVIDIA checkout given: --nvidia-repo or NVIDIA_STYLEGAN2_ADA; timing ours only)")
    n, c, res = args.batch, args.channels, args.resolution
    only = [s for s in args.only.split(",") if s]
    results: dict[str, dict[str, float]] = {}
    header = f"{'case':40s} {'mode':8s} " + " ".join(f"{k + ' ms':>10s}" for k in impls)
    print(header + ("   ratio" if "nvidia" in impls else ""))

    def report(name: str, mode: str, times: dict[str, float]) -> None:
        row = {f"{k}_ms": v * 1e3 for k, v in times.items()}
        line = f"{name:40s} {mode:8s} " + " ".join(f"{v * 1e3:10.3f}" for v in times.values())
        if "nvidia" in times:
            row["ratio"] = times["ours"] / times["nvidia"]
            line += f"   {row['ratio']:.3f}"
        results[f"{name} | {mode}"] = row
        print(line, flush=True)

    for name, make_inputs, run in build_cases(n, c, res):
        if only and not any(s in name for s in only):
            continue
        fns_f, fns_fb = {}, {}
        for k, o in impls.items():
            fns_f[k], fns_fb[k] = fwd_and_fwdbwd(make_inputs, lambda *a, o=o, run=run: run(o, *a))
        report(name, "fwd", time_round_robin(fns_f, args.rounds, clock=clock))
        report(name, "fwd+bwd", time_round_robin(fns_fb, args.rounds, clock=clock))

    for train in (False, True):
        name = "synthesis_chain" + (" (weight grads)" if train else "")
        if only and not any(s in name for s in only):
            continue
        make = chain_case(n, c, res, train)
        report(name, "fwd+bwd", time_round_robin({k: make(o) for k, o in impls.items()}, args.rounds, 0.0, clock))
    print(json.dumps({"batch": n, "channels": c, "resolution": res, "threads": args.threads,
                      "clock": "cpu" if use_cpu else "wall", "results": results}))


if __name__ == "__main__":
    main()
