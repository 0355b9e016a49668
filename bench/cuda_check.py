"""GPU check of the generator: CUDA kernels against the PyTorch path, GPU against CPU, ours against NVIDIA.

    python bench/cuda_check.py [--nvidia-repo PATH] [--out FILE.json]

For the published FFHQ-1024 architecture (seeded random weights, or NVIDIA's seeded weights when a
stylegan2-ada-pytorch checkout is given) it runs ``bench/gen_harness.py`` once per implementation:

* ``ours`` (our CUDA kernels), ``ours-torch`` (our PyTorch path on the GPU), ``ours`` on the CPU and
  ``nvidia`` (NVIDIA's code and, when they build, NVIDIA's kernels);
* float32 everywhere (TF32 off) and the GPU default with the four top blocks in float16;

and prints the largest absolute difference of each image from the CPU float32 reference, then the median
time of a synthesis forward + backward with respect to ws (batch 1 and 4, float16 blocks). The last line of
output is JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "bench" / "gen_harness.py"
FFHQ_1024 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                 mapping_kwargs=dict(num_layers=8),
                 synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256))


def harness(mode: str, impl: str, repo: str | None, extra: list[str]) -> str:
    cmd = [sys.executable, str(HARNESS), mode, "--impl", impl, "--kwargs", json.dumps(FFHQ_1024), *extra]
    if impl == "nvidia":
        cmd += ["--repo", repo]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} {mode} failed:\n{proc.stderr[-3000:]}")
    warnings = [line for line in proc.stderr.splitlines() if "Warning" in line]
    if warnings:
        print(f"  ({impl}: {warnings[0].strip()[:200]})")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvidia-repo", help="a stylegan2-ada-pytorch checkout (adds NVIDIA's code to the check)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", help="also write the JSON summary here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: bench/cuda_check.py needs a CUDA device")
    tmp = Path(tempfile.mkdtemp())
    summary: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "max_abs_diff": {}}

    # Weights: NVIDIA's seeded draw when available (ours is bit-identical), loaded by every run.
    base = "nvidia" if args.nvidia_repo else "ours"
    harness("dump", base, args.nvidia_repo, ["--device", "cpu", "--seed", "3", "--out", str(tmp / "ref.pt")])
    reference = torch.load(tmp / "ref.pt", weights_only=True)
    torch.save(reference["state_dict"], tmp / "weights.pt")
    print(f"reference: {base} on the CPU, float32; image range "
          f"[{reference['img'].min():.2f}, {reference['img'].max():.2f}]")

    runs = [("ours", "cuda"), ("ours-torch", "cuda")] + ([("nvidia", "cuda")] if args.nvidia_repo else [])
    if base == "nvidia":
        runs.append(("ours", "cpu"))
    for impl, device in runs:
        for fp16 in ([False, True] if device == "cuda" else [False]):
            name = f"{impl}/{device}/{'fp16' if fp16 else 'fp32'}"
            out = tmp / f"{name.replace('/', '_')}.pt"
            extra = ["--device", device, "--seed", "3", "--load", str(tmp / "weights.pt"), "--out", str(out)]
            harness("dump", impl, args.nvidia_repo, extra + (["--fp16"] if fp16 else []))
            got = torch.load(out, weights_only=True)
            diff = (got["img"] - reference["img"]).abs().max().item()
            blocks = [(x - x_ref).abs().max().item() for (x, _), (x_ref, _) in zip(got["states"], reference["states"])]
            summary["max_abs_diff"][name] = {"image": diff, "block_x_max": max(blocks)}
            print(f"{name:24s} image max |diff| {diff:.2e}   block states max |diff| {max(blocks):.2e}")

    summary["synthesis_fwd_bwd_ms"] = {}
    for batch in (1, 4):
        for impl in ["ours", "ours-torch"] + (["nvidia"] if args.nvidia_repo else []):
            line = harness("time", impl, args.nvidia_repo, ["--device", "cuda", "--fp16", "--batch", str(batch),
                                                             "--repeats", str(args.repeats), "--warmup", "5"])
            result = json.loads(line.strip().splitlines()[-1])
            ms = result["median_s"] * 1e3
            summary["synthesis_fwd_bwd_ms"][f"{impl}/b{batch}"] = ms
            print(f"synthesis fwd+bwd (grad to ws), batch {batch}, {impl:10s}: {ms:8.2f} ms (median)")
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
