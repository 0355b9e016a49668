"""CPU speed of our StyleGAN2 synthesis (forward + backward) against NVIDIA's reference PyTorch path.

Goal (issue 2): ours <= 0.8x NVIDIA's time at 64 px, 128 channels, batch 4, on this 2-core CPU.

    python bench/synthesis_cpu.py --nvidia-repo /path/to/stylegan2-ada-pytorch   # or env NVIDIA_STYLEGAN2_ADA

Each implementation is timed in its own subprocess (same harness, same seed, same thread count), in both
inference mode (gradients w.r.t. ws only, as in SGILO's latent optimisation) and training mode (weight
gradients too). The two are run alternately ``--rounds`` times and the fastest step of each is compared,
which keeps the ratio meaningful on a machine with other load. Without an NVIDIA checkout only our timings
are printed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_harness(impl: str, repo: str | None, kwargs: dict, args: argparse.Namespace, train: bool) -> dict:
    cmd = [sys.executable, str(HERE / "gen_harness.py"), "time", "--impl", impl, "--kwargs", json.dumps(kwargs),
           "--batch", str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if repo:
        cmd += ["--repo", repo]
    if train:
        cmd.append("--train")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvidia-repo", default=os.environ.get("NVIDIA_STYLEGAN2_ADA"))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating ours/NVIDIA subprocess runs")
    args = parser.parse_args()

    kwargs = dict(z_dim=args.channels, c_dim=0, w_dim=args.channels, img_resolution=args.resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=args.channels * args.resolution * 64,
                                        channel_max=args.channels))
    result: dict = {"resolution": args.resolution, "channels": args.channels, "batch": args.batch,
                    "threads": args.threads}
    impls = [("ours", None)] + ([("nvidia", args.nvidia_repo)] if args.nvidia_repo else [])
    for mode, train in (("inference", False), ("train", True)):
        best = {name: float("inf") for name, _ in impls}
        for _ in range(args.rounds):
            for name, repo in impls:
                best[name] = min(best[name], run_harness(name, repo, kwargs, args, train)["min_s"])
        result[f"{mode}_ours_s"] = best["ours"]
        line = f"{mode:9s}  ours {best['ours'] * 1e3:8.1f} ms"
        if args.nvidia_repo:
            ratio = best["ours"] / best["nvidia"]
            result[f"{mode}_nvidia_s"] = best["nvidia"]
            result[f"{mode}_ratio"] = ratio
            line += f"   nvidia {best['nvidia'] * 1e3:8.1f} ms   ratio {ratio:.3f}"
        print(line, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
