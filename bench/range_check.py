"""How far out of the generator's range are the held-out images? Inversion of fully observed images.

    python bench/range_check.py                        # 16 held-out + 16 in-range images; writes bench/results/range.*
    python bench/range_check.py --images 4 --out /tmp/r  # a quick look

Every image is observed completely and without noise (the ``dummy`` operator, ``task=denoising
operators.noise_std=0``) and inverted by CSGM at layer 0 and by ILO ending at layers 1, 2 and 3 (rounds 0..k). A
second CSGM run with as many steps as the longest ILO run is the control that separates reach from step count.
Held-out images are drawn from ``images/held_out/`` (``--heldout-seed``), in-range ones are G(z) for seeded z. What
the demo needs for the paper's claim: held-out images that CSGM (G1 at layer 0) cannot reach but the later layers
nearly can, while in-range images are reached from layer 0 already.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from quality import solve, summarise, write_heldout  # noqa: E402


def runs(steps: int) -> dict[str, list[str]]:
    """name -> solve_inverse overrides: CSGM, CSGM with ILO-3's budget, ILO ending at layers 1-3 (each from its
    method's published start, z = 0 / z = 1, not the demo's calibrated search: the table measures reach from a
    fixed start and stays comparable with earlier runs)."""
    out = {"csgm": ["method=csgm", f"steps=[{steps}]", "latent_init=zeros"],
           "csgm_long": ["method=csgm", f"steps=[{steps * 4}]", "latent_init=zeros"]}
    for k in (1, 2, 3):
        out[f"ilo_layer{k}"] = ["method=ilo", f"steps=[{','.join([str(steps)] * (k + 1))}]", "latent_init=ones"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--images", type=int, default=16, help="images per set")
    parser.add_argument("--steps", type=int, default=200, help="Adam steps per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--heldout-seed", type=int, default=7)
    parser.add_argument("--generator", default="demo")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.images < 2 or args.steps < 1:
        raise SystemExit("error: need --images >= 2 and --steps >= 1")
    start = time.perf_counter()
    out, n = args.out, args.images
    heldout = write_heldout(out / "range_heldout", n, args.heldout_seed)
    sets = {"in_range": ["input_source=generator", f"num_images={n}"],
            "held_out": ["input_source=folders", f"input_folders=[{heldout}]", f"max_images={n}"]}
    common = [f"generator={args.generator}", f"seed={args.seed}", "task=denoising", "operators.noise_std=0"]
    table: dict[str, dict[str, dict]] = {}
    for set_name, set_overrides in sets.items():
        for name, overrides in runs(args.steps).items():
            data = solve(out / "runs" / f"range_{set_name}_{name}", common + set_overrides + overrides, n,
                         args.threads)
            table.setdefault(set_name, {})[name] = summarise(data)
            s = table[set_name][name]
            print(f"{set_name:9s} {name:11s} PSNR {s['psnr']:.2f} ± {s['psnr_std']:.2f}  SSIM {s['ssim']:.3f}",
                  flush=True)
    results = {"settings": {k: str(v) for k, v in vars(args).items()}, "psnr": table,
               "seconds_this_call": time.perf_counter() - start}
    (out / "range.json").write_text(json.dumps(results, indent=2))
    names = list(runs(args.steps))
    labels = {"csgm": f"CSGM (layer 0, {args.steps})", "csgm_long": f"CSGM ({4 * args.steps})",
              **{f"ilo_layer{k}": f"ILO to layer {k} ({(k + 1) * args.steps})" for k in (1, 2, 3)}}
    lines = [f"Fully observed images (no noise), generator `{args.generator}`, {n} images per set, seed {args.seed}; "
             f"in brackets: Adam steps in all. Cells: PSNR (dB) ± standard deviation over the images / SSIM.", "",
             "| set | " + " | ".join(labels[k] for k in names) + " |", "|---|" + "---|" * len(names)]
    for set_name, row in table.items():
        lines.append(f"| {set_name.replace('_', '-')} | " + " | ".join(
            f"{row[k]['psnr']:.2f} ± {row[k]['psnr_std']:.2f} / {row[k]['ssim']:.3f}" for k in names) + " |")
    (out / "range.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'range.md'} ({results['seconds_this_call'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
