"""Compare generators (or checkpoints of one training run) by SWD to real images, on more samples than training logs.

    python bench/gan_swd.py checkpoints/demo/generator.pt outputs/<run>/checkpoints/step_0030000.pt
    python bench/gan_swd.py FILES... --grids DIR --out table.json    # + an 8 x 8 sample grid per file

Each FILE is any generator ``stylegan.load_generator`` reads; a training checkpoint of ``train_stylegan.py``
contributes its G_ema. G(z) for ``--samples`` fixed-seed z (constant noise, truncation 1) is compared with two
sets of real images:

* ``held_out``: every image of ``--held-out`` (the emoji held-out split: emoji no setting was tuned on);
* ``train``: a fixed seeded draw of ``--samples`` images of ``--train``, the set the generator was fit to.

Each comparison uses as many samples as it has real images, so the floors are comparable: ``floor`` is the same
comparison with other training images (disjoint from the ``train`` draw) in place of the samples, what a
generator that reproduces the training distribution would score. The training-time metric of
``train_stylegan.py`` compares 124 validation images with 124 samples; its values move by up to 0.02 between
evaluations. Deterministic given the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import open_images  # noqa: E402
from stylegan import CheckpointError, load_generator  # noqa: E402
from stylegan.swd import swd  # noqa: E402
from stylegan.training import generate  # noqa: E402
from utils import make_grid, save_image  # noqa: E402


def _two_draws(images: torch.Tensor, count: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint fixed seeded draws of ``count`` images each from ``images`` (N, C, R, R)."""
    if 2 * count > len(images):
        raise SystemExit(f"error: --samples {count} needs {2 * count} training images, there are {len(images)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:count]], images[order[count : 2 * count]]


def _load(path: Path):
    """The generator in ``path``, or a one-line error naming the file."""
    try:
        return load_generator(path)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None


def _grid_name(path: Path) -> str:
    """``<run>_step_N`` for a run's checkpoints/step_N.pt, else the file's stem."""
    return f"{path.parents[1].name}_{path.stem}" if path.parent.name == "checkpoints" else path.stem


def compare(samples: torch.Tensor, references: dict[str, torch.Tensor], seed: int = 0) -> dict[str, dict[str, float]]:
    """SWD of ``samples`` (N, C, R, R) to each reference set (cut to the smaller size), per pyramid level."""
    return {name: swd(ref, samples[: len(ref)], seed=seed) for name, ref in references.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="generator files or train_stylegan.py checkpoints")
    parser.add_argument("--held-out", default="emoji:held_out", help="folder, zip or emoji:<split>")
    parser.add_argument("--train", default="emoji:train", help="folder, zip or emoji:<split>")
    parser.add_argument("--samples", type=int, default=2048, help="generator samples (and training images drawn)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the z (the SWD projections use seed 0)")
    parser.add_argument("--grids", type=Path, help="write an 8 x 8 grid of the first 64 samples per file here")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise SystemExit(f"error: no such file: {', '.join(missing)}")
    if args.samples < 4:
        raise SystemExit("error: --samples must be >= 4")
    existing = ([args.out] if args.out is not None else []) + (
        [args.grids / f"{_grid_name(f)}.png" for f in args.files] if args.grids is not None else [])
    existing = [str(p) for p in existing if p.exists()]
    if existing:
        raise SystemExit(f"error: would overwrite {', '.join(existing)}; remove them or choose another --out/--grids")
    torch.set_num_threads(args.threads)

    first = _load(args.files[0])
    res = first.img_resolution
    try:
        held_out = open_images(args.held_out, res)
        train = open_images(args.train, res)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    held_out = held_out.batch(range(len(held_out)))
    train = train.batch(range(len(train)))
    train_ref, train_other = _two_draws(train, args.samples)
    references = {"held_out": held_out, "train": train_ref}
    floor = compare(train_other, references)
    rows = {"floor": floor}
    print("| generator | held_out | (32 / 16 px) | train | (32 / 16 px) |\n|---|---|---|---|---|")

    def line(name: str, r: dict[str, dict[str, float]]) -> None:
        h, t = r["held_out"], r["train"]
        print(f"| {name} | {h['swd']:.4f} | {h.get('swd_32', float('nan')):.4f} / {h.get('swd_16', float('nan')):.4f}"
              f" | {t['swd']:.4f} | {t.get('swd_32', float('nan')):.4f} / {t.get('swd_16', float('nan')):.4f} |",
              flush=True)

    line("floor (train images)", floor)
    for i, path in enumerate(args.files):
        G = first if i == 0 else _load(path)
        if G.img_resolution != res:
            raise SystemExit(f"error: {path}: {G.img_resolution} px, but {args.files[0]} is {res} px")
        samples = generate(G, args.samples, args.seed)
        rows[str(path)] = compare(samples, references)
        line(str(path), rows[str(path)])
        if args.grids is not None:
            grid = make_grid(samples[:64].clamp(-1, 1), nrow=8)
            save_image(torch.nn.functional.interpolate(grid[None], scale_factor=3, mode="nearest")[0],
                       args.grids / f"{_grid_name(path)}.png")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"samples": args.samples, "seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
