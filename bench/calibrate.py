"""Calibrate solver settings on the validation split, the only split any setting may be tuned on; then measure
the chosen ones on the held-out split and on in-range images with the same command.

    python bench/calibrate.py bench/results/calibration_val/jobs.txt --out bench/results/calibration_val
    python bench/calibrate.py JOBS --tasks sparse10 --images 8 --out /tmp/cal     # a quick look
    python bench/calibrate.py JOBS --split held_out --out /tmp/heldout            # report, do not tune, on these

JOBS holds one run per line, ``name | solve_inverse.py overrides`` (``#`` starts a comment). Every job is solved
on the same ``--images`` images drawn from ``images/val/`` (``--split val``, the default) or ``images/held_out/``
(``--image-seed``), or on in-range references G(z) (``--split in_range``), and the same measurements (``--seed``)
for every task of ``--tasks``, ``--parallel`` solves at a time on one thread each; finished runs are reused.
``table.md`` then gives per job and task the final PSNR (mean ± standard error over the images), its paired
difference to the ``--baseline`` job on the same images and measurements, and the PSNR after each round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from quality import paired, solve, summarise, write_heldout  # noqa: E402

TASKS = {  # name -> overrides: the goal cells and the centre box
    "sparse10": ["task=inpainting", "operators.mask=random_pixels", "operators.observed_fraction=0.1"],
    "sr4": ["task=super_resolution", "operators.factor=4"],
    "box": ["task=inpainting"],
    "cs": ["task=compressed_sensing"],
    "denoise": ["task=denoising"],
    "color": ["task=colorization"],
}
SPLITS = {"val": ROOT / "images" / "val", "held_out": ROOT / "images" / "held_out", "in_range": None}


def read_jobs(path: Path) -> dict[str, list[str]]:
    """name -> overrides, from ``name | overrides`` lines."""
    jobs: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, overrides = (part.strip() for part in line.partition("|"))
        if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise SystemExit(f"error: {path}:{n}: expected 'name | overrides' with a plain name, got {line!r}")
        if name in jobs:
            raise SystemExit(f"error: {path}:{n}: job {name!r} is listed twice")
        jobs[name] = overrides.split()
    if not jobs:
        raise SystemExit(f"error: {path} lists no jobs")
    return jobs


def round_psnrs(data: dict) -> list[float]:
    """Mean PSNR after each round."""
    records = data["images"]
    rounds = len(records[0].get("rounds") or [])
    return [statistics.mean(r["rounds"][k]["psnr"] for r in records) for k in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", default="sparse10,sr4", help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--split", default="val", choices=list(SPLITS))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--image-seed", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--baseline", default=None, help="job the paired differences refer to (default: the first)")
    args = parser.parse_args()
    if not args.jobs.is_file():
        raise SystemExit(f"error: {args.jobs}: no such file")
    jobs = read_jobs(args.jobs)
    tasks = args.tasks.split(",")
    if unknown := [t for t in tasks if t not in TASKS]:
        raise SystemExit(f"error: unknown task(s) {unknown}; choose from {list(TASKS)}")
    baseline = args.baseline or next(iter(jobs))
    if baseline not in jobs:
        raise SystemExit(f"error: --baseline {baseline!r} is not a job of {args.jobs}")
    if args.split == "in_range":
        source = "in-range references G(z)"
        common = ["input_source=generator", f"num_images={args.images}"]
    else:
        source = f"`images/{args.split}/` (drawn with seed {args.image_seed})"
        folder = write_heldout(args.out / f"{args.split}_images", args.images, args.image_seed,
                               source=SPLITS[args.split])
        common = [f"input_folders=[{folder}]"]
    common += [f"seed={args.seed}", "save_images=false", "tensorboard=false"]
    cells = [(job, task) for task in tasks for job in jobs]

    def run(cell: tuple[str, str]) -> dict:
        job, task = cell
        data = solve(args.out / "runs" / f"{task}_{job}", common + TASKS[task] + jobs[job], args.images, 1)
        print(f"{task:9s} {job:24s} {summarise(data)['psnr']:.2f}", flush=True)
        return data

    with ThreadPoolExecutor(args.parallel) as pool:
        results = dict(zip(cells, pool.map(run, cells)))

    lines = [f"Split `{args.split}`: {args.images} images, {source}, "
             f"seed {args.seed}; jobs from `{args.jobs.name}`. Cells: final PSNR (dB) ± standard error "
             f"over the images; [paired difference to `{baseline}`]; PSNR after each round.", ""]
    table: dict[str, dict[str, dict]] = {}
    for task in tasks:
        lines += [f"### {task}", "", f"| job | PSNR | − {baseline} | rounds | s/image |", "|---|---|---|---|---|"]
        base = summarise(results[(baseline, task)])
        for job in jobs:
            data = results[(job, task)]
            s = summarise(data)
            se = s["psnr_std"] / len(data["images"]) ** 0.5 if s["psnr_std"] is not None else float("nan")
            per_round = round_psnrs(data)
            lines.append(f"| {job} | {s['psnr']:.2f} ± {se:.2f} | {paired(s, base) if job != baseline else ''} | "
                         f"{' / '.join(f'{p:.2f}' for p in per_round)} | {s['seconds']:.2f} |")
            table.setdefault(task, {})[job] = {"psnr": s["psnr"], "psnr_se": se, "rounds": per_round,
                                               "seconds": s["seconds"], "overrides": jobs[job]}
        lines.append("")
    (args.out / "table.md").write_text("\n".join(lines))
    (args.out / "table.json").write_text(json.dumps(table, indent=1))
    print(f"wrote {args.out / 'table.md'}")


if __name__ == "__main__":
    main()
