"""Reconstruction quality of every method on every task, with the demo generator and its priors.

    python bench/quality.py                        # 88 solves, ~17 min on a 2-core CPU; writes bench/results/
    python bench/quality.py --images 2 --out /tmp/q --no-sweeps     # a quick look

Two image sets, ``--images`` each:

* in-range: references sampled from the generator (``input_source=generator``, ``--seed``);
* held-out: emoji of the held-out split (``images/held_out/``: identities the generator never saw in any skin tone
  or style), drawn with ``--heldout-seed``, copied to ``<out>/heldout/`` and read back as a folder, like a user's
  images.

Every task (``configs/task``) x {naive, csgm, ilo, sgilo, and the ``--extra`` methods sgilo_published, brgm and
landscape} runs ``solve_inverse.py`` once per method and set, with the same seed, so all methods see the same
measurements. ``sgilo`` is ``method=sgilo`` as a user gets it: on the demo, the settings calibrated on its
validation split (configs/calibrated/sgilo_demo.yaml); ``sgilo_published`` is ``method=sgilo ~calibrated``, the
published settings and prior step. Step budgets are equal: CSGM, BRGM and CSGM + θ one round of ``3 x --steps``,
ILO and both SGILOs three rounds of ``--steps``; the posterior samplers (``--extra langevin,dps,resample``) a
CSGM start of ``--steps`` and about ``2 x --steps`` decoder evaluations, with the settings chosen on validation
(``SAMPLER_SETTINGS``); their pixel-space versions (``--extra langevin_pixel,dps_pixel,resample_pixel``: the
prior on pixels, no generator) about ``3 x --steps`` prior evaluations. (method=landscape needs a θ trained for
the generator: checkpoints/demo/landscape.pt for the demo.)
The held-out centre box also gets the fill's realism (SWD of the fill's patches to real patches) for every method
and, with ``--chains K``, K draws of each sampler, scored by how well their spread ranks the error.
Sweeps over the number of measurements (sparse inpainting: observed fraction; compressed sensing: m / n) run on
both sets. An ablation on the held-out set says what SGILO's prior adds: SGILO with the prior's weight 0 and
everything else the same.

Writes ``samples.png`` (the generator's samples), ``results.md`` (tables and whether SGILO >= ILO >= CSGM
holds), ``results.json``, per-task grids
``recon_<set>_<task>.png`` (rows: images; columns: reference, measurement, naive, CSGM, ILO, SGILO) and
``sweep_<name>_<set>.png``. Runs already finished under ``<out>/runs`` are reused, so an interrupted bench resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import load_image, make_grid, save_image  # noqa: E402

CLAIM = ("csgm", "ilo", "sgilo")  # the paper's claim: SGILO >= ILO >= CSGM
EXTRA = ("sgilo_published", "brgm", "landscape", "langevin", "dps", "resample",  # the harness' other methods (--extra)
         "langevin_pixel", "dps_pixel", "resample_pixel")
DEFAULT_EXTRA = ("sgilo_published", "brgm", "landscape")
LABELS = {"naive": "naive", "csgm": "CSGM", "ilo": "ILO", "sgilo": "SGILO", "sgilo_published": "SGILO (published)",
          "brgm": "BRGM", "landscape": "CSGM + θ",
          "langevin": "Langevin (layer 2)", "dps": "DPS (layer 2)", "resample": "ReSample (layer 2)",
          "langevin_pixel": "Langevin (pixels)", "dps_pixel": "DPS (pixels)", "resample_pixel": "ReSample (pixels)"}
TASKS = {
    "inpainting": ["task=inpainting"],
    "super_resolution": ["task=super_resolution"],
    "compressed_sensing": ["task=compressed_sensing"],
    "colorization": ["task=colorization"],
    "denoising": ["task=denoising"],
}
SWEEPS = {  # name -> (x label, values, overrides for a value)
    "sparse_inpainting": ("observed fraction of pixels", [0.02, 0.05, 0.1, 0.25],
                          lambda f: ["task=inpainting", "operators.mask=random_pixels",
                                     f"operators.observed_fraction={f}"]),
    "compressed_sensing": ("measurements m / n", [0.01, 0.02, 0.05, 0.1],
                           lambda f: ["task=compressed_sensing", f"operators.fraction={f}"]),
}
METRICS = ("psnr", "ssim", "lpips", "seconds")
# Methods whose K draws differ by design (Langevin noise, reverse-SDE noise): the posterior-spread runs. The MAP
# methods' chains differ only by their starting point, or not at all (round 0 from zeros, no noise): so does the
# demo's calibrated SGILO, a MAP estimate; its published settings keep the Langevin noise.
CHAIN_METHODS = ("sgilo_published", "langevin", "dps", "resample", "langevin_pixel", "dps_pixel", "resample_pixel")
SAMPLER_SETTINGS = {  # chosen on validation (bench/results/samplers_val/table.md); the YAMLs keep the papers' values
    "langevin": ["langevin.spacing=geometric", "langevin.t_start=0.01", "langevin.step_size=1e-6"],
    "dps": ["dps.spacing=geometric", "dps.t_start=0.01", "dps.zeta=0.01"],
    "resample": ["resample.spacing=geometric", "resample.t_start=0.03", "resample.start_fraction=1.0",
                 "resample.lr=0.001", "resample.gamma_scale=1e5"],
    "langevin_pixel": ["langevin.spacing=geometric"], "dps_pixel": [],
    "resample_pixel": ["resample.spacing=geometric", "resample.gamma_scale=1e5"],
}
# What SGILO's priors add, on the held-out set: SGILO with the weights of its score priors and of its range prior 0,
# everything else (optimiser, ball, Langevin noise where there is any) the same.
ABLATIONS = {"sgilo_no_prior": ["latent_temperature=0", "gen_temperature=0", "range_weight=0"]}


def method_overrides(method: str, steps: int) -> list[str]:
    if method == "csgm":
        return ["method=csgm", f"steps=[{3 * steps}]"]
    if method == "brgm":
        return ["method=brgm", f"brgm.steps={3 * steps}"]
    if method == "landscape":
        return ["method=landscape", f"steps=[{3 * steps}]"]
    # The posterior samplers: a CSGM start of `steps`, then about 2 x `steps` decoder evaluations with gradients,
    # with the settings chosen on the validation split (bench/results/samplers_val/): the geometric time grid and
    # SDEdit's start from the CSGM features at t_start (the demo's features sit at noise levels t < 0.03).
    if method.endswith("_pixel"):  # a prior on pixels: no CSGM start, about 3 x `steps` prior evaluations
        sampler = method.removesuffix("_pixel")
        budget = {"langevin": [f"langevin.levels={steps}"], "dps": [f"dps.steps={3 * steps}"],
                  "resample": [f"resample.steps={2 * steps}", f"resample.every={max(1, steps // 5)}",
                               f"resample.opt_steps={max(1, steps // 5)}"]}[sampler]
        return [f"method={sampler}", "space=pixel", *budget, *SAMPLER_SETTINGS[method]]
    if method == "langevin":
        return ["method=langevin", f"init_steps={steps}", f"langevin.levels={max(1, 2 * steps // 3)}",
                *SAMPLER_SETTINGS["langevin"]]
    if method == "dps":
        return ["method=dps", f"init_steps={steps}", f"dps.steps={2 * steps}", *SAMPLER_SETTINGS["dps"]]
    if method == "resample":  # `steps` reverse steps + 10 consistency steps of steps / 5 Adam steps
        return ["method=resample", f"init_steps={steps}", f"resample.steps={steps}",
                f"resample.every={max(1, steps // 10)}", f"resample.opt_steps={max(1, steps // 5)}",
                *SAMPLER_SETTINGS["resample"]]
    if method == "sgilo_published":  # without configs/calibrated/sgilo_<generator>.yaml: the published settings
        return ["method=sgilo", "~calibrated", f"steps=[{steps},{steps},{steps}]"]
    return [f"method={method}", f"steps=[{steps},{steps},{steps}]"]  # ilo, sgilo


def write_heldout(folder: Path, count: int, seed: int, source: Path = ROOT / "images" / "held_out") -> Path:
    """``count`` images of ``source`` drawn with ``seed``, copied into ``folder`` (which must hold no others)."""
    files = sorted(source.glob("*.png"))
    if len(files) < count:
        raise SystemExit(f"error: {source} holds {len(files)} images, fewer than {count}")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count]
    chosen = [files[i] for i in sorted(order.tolist())]
    folder.mkdir(parents=True, exist_ok=True)
    present = {p.name for p in folder.glob("*.png")}
    if present and present != {f.name for f in chosen}:
        raise SystemExit(f"error: {folder} holds other images; remove it (or choose another --out)")
    for f in chosen:
        if f.name not in present:
            shutil.copyfile(f, folder / f.name)
    return folder


def solve(run_dir: Path, overrides: list[str], n_images: int, threads: int) -> dict:
    """metrics.json of one solve_inverse.py run (reused when it already holds every image)."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        if len(data.get("images", [])) == n_images:
            return data
        raise SystemExit(f"error: {run_dir} holds an unfinished run; remove it and start again")
    cmd = [sys.executable, "solve_inverse.py", *overrides, f"batch_size={n_images}", "progress=false",
           f"num_threads={threads}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[1:])} failed:\n{proc.stderr[-2000:]}")
    return json.loads(metrics.read_text())


def mean(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def summarise(data: dict) -> dict[str, float | None]:
    records = data["images"]
    out = {k: mean(records, k) for k in METRICS}
    psnrs = [r["psnr"] for r in records if r.get("psnr") is not None]
    out["psnr_std"] = statistics.stdev(psnrs) if len(psnrs) > 1 else None
    out.update({f"naive_{k}": mean(records, f"naive_{k}") for k in ("psnr", "ssim", "lpips")})
    out["failed"] = sum(bool(r.get("failed")) for r in records)
    out["psnr_by_image"] = {r["name"]: r["psnr"] for r in records}  # for paired differences between methods
    return out


def paired(a: dict, b: dict) -> str:
    """Mean PSNR difference a − b over the images both solved, ± its standard error (the same images and
    measurements: the spread between images cancels)."""
    pa, pb = a.get("psnr_by_image") or {}, b.get("psnr_by_image") or {}
    d = [pa[k] - pb[k] for k in pa if pa[k] is not None and pb.get(k) is not None]
    if len(d) < 2:
        return "n/a"
    return f"{statistics.mean(d):+.2f} ± {statistics.stdev(d) / len(d) ** 0.5:.2f}"


def recon_grid(runs: dict[str, Path], names: list[str], path: Path) -> None:
    """Rows: images; columns: reference, measurement, naive, then each method's final image."""
    methods = list(runs)
    first = runs[methods[0]] / "images"
    side = load_image(first / names[0] / "reference.png").shape[-1]
    tiles = []
    for name in names:  # (a super-resolution measurement is smaller: shown resized to the image side)
        tiles += [load_image(first / name / f"{p}.png", side) for p in ("reference", "measurement", "naive")]
        tiles += [load_image(runs[m] / "images" / name / "final.png", side) for m in methods]
    grid = make_grid(torch.stack(tiles), nrow=3 + len(methods))
    up = torch.nn.functional.interpolate(grid[None], scale_factor=4, mode="nearest")[0]  # 32 px is tiny on screen
    save_image(up, path, overwrite=True)


def fill_realism(runs: dict[str, Path], names: list[str], pool_dir: Path, exclude: set[str], resolution: int,
                 pairs: list[tuple[str, str]], resamples: int = 50) -> dict[str, dict]:
    """Centre-box inpainting on the held-out set: SWD of each method's fill patches to real patches at the same
    places (``inverse.fill_metrics.fill_swd``) from the held-out images not being solved; 'reference' (the true
    content) is the floor, 'naive' the measurement's own fill. Lower is more realistic.

    Returns ``swd`` (per method), ``spread`` (the standard deviation over ``resamples`` bootstrap draws of the
    images, with replacement; each draw also redraws the SWD's directions and real patches) and ``paired`` (for
    each (a, b) of ``pairs``: the difference a − b and the standard deviation of its bootstrap values, the same
    draws for both methods)."""
    from inverse.fill_metrics import fill_swd
    from inverse.operators import build_operator

    task = OmegaConf.load(ROOT / "configs" / "task" / "inpainting.yaml").operators
    mask = build_operator(task, resolution).mask
    pool = torch.stack([load_image(p, resolution) for p in sorted(pool_dir.glob("*.png")) if p.name not in exclude])
    first = next(iter(runs.values())) / "images"
    sets = {k: [first / n / f"{k}.png" for n in names] for k in ("reference", "naive")}
    sets.update({m: [d / "images" / n / "final.png" for n in names] for m, d in runs.items()})
    fills = {k: torch.stack([load_image(p, resolution) for p in paths]) for k, paths in sets.items()}
    gen = torch.Generator().manual_seed(0)
    draws = [torch.randint(0, len(names), (len(names),), generator=gen) for _ in range(resamples)]
    boot = {k: [fill_swd(x[i], mask, pool, seed=j + 1) for j, i in enumerate(draws)] for k, x in fills.items()}
    swd = {k: fill_swd(x, mask, pool) for k, x in fills.items()}
    paired = {f"{a} - {b}": [swd[a] - swd[b], statistics.stdev(x - y for x, y in zip(boot[a], boot[b], strict=True))]
              for a, b in pairs if a in swd and b in swd}
    return {"swd": swd, "spread": {k: statistics.stdev(v) for k, v in boot.items()}, "paired": paired}


def sample_grid(generator: str, path: Path, rows: int = 4, cols: int = 8, seed: int = 0) -> None:
    """Random samples G(z) of the generator (z ~ N(0, I), constant noise), enlarged for the README."""
    from omegaconf import OmegaConf

    from stylegan.build import build_generator
    from utils import resolve_path

    entry = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "generator" / f"{generator}.yaml"))
    G, _ = build_generator(entry, resolve=resolve_path)
    z = torch.randn(rows * cols, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1)
    grid = make_grid(images, nrow=cols)
    save_image(torch.nn.functional.interpolate(grid[None], scale_factor=3, mode="nearest")[0], path, overwrite=True)


def line_chart(path: Path, title: str, xlabel: str, xs: list[float], series: dict[str, list[float]]) -> None:
    """A small PSNR-vs-x chart drawn with PIL (no plotting library in the requirements)."""
    w, h, left, right, top, bottom = 560, 360, 60, 130, 40, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    values = [v for vs in series.values() for v in vs if v is not None]
    lo, hi = min(values) - 1, max(values) + 1
    px = lambda i: left + (w - left - right) * i / max(len(xs) - 1, 1)  # noqa: E731 -- evenly spaced x
    py = lambda v: top + (h - top - bottom) * (hi - v) / (hi - lo)  # noqa: E731
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        draw.text((8, py(v) - 6), f"{v:.1f}", fill="black")
    for i, x in enumerate(xs):
        draw.text((px(i) - 12, h - bottom + 6), f"{x:g}", fill="black")
    draw.text((left, h - 22), xlabel, fill="black")
    draw.text((left, 12), f"{title}: PSNR (dB)", fill="black")
    colours = {"naive": (128, 128, 128), "csgm": (31, 119, 180), "ilo": (44, 160, 44), "sgilo": (214, 39, 40),
               "sgilo_published": (140, 86, 75), "brgm": (148, 103, 189), "landscape": (255, 127, 14)}
    for j, (name, vs) in enumerate(series.items()):
        points = [(px(i), py(v)) for i, v in enumerate(vs) if v is not None]
        draw.line(points, fill=colours[name], width=3)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[name])
        draw.line([w - right + 10, top + 20 * j + 8, w - right + 30, top + 20 * j + 8], fill=colours[name], width=3)
        draw.text((w - right + 36, top + 20 * j + 2), LABELS[name], fill="black")
    img.save(path)


def cell(s: dict, prefix: str = "") -> str:
    psnr, ssim, lp = s[f"{prefix}psnr"], s[f"{prefix}ssim"], s[f"{prefix}lpips"]
    spread = s.get(f"{prefix}psnr_std")
    text = f"{psnr:.2f}" + (f" ± {spread:.2f}" if spread is not None else "") + f" / {ssim:.3f}" \
        if psnr is not None else "failed"
    return text + (f" / {lp:.3f}" if lp is not None else "")


def claim(s: dict[str, dict]) -> str:
    p = {m: s[m]["psnr"] for m in CLAIM}
    if any(v is None for v in p.values()):
        return "n/a"
    order = " ≥ ".join(LABELS[m] for m in sorted(CLAIM, key=lambda m: -p[m]))
    holds = p["sgilo"] >= p["ilo"] >= p["csgm"]
    return ("holds" if holds else "no") + f" ({order})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--images", type=int, default=8, help="images per set")
    parser.add_argument("--steps", type=int, default=100, help="Adam steps per round (CSGM: 3x in one round)")
    parser.add_argument("--seed", type=int, default=1, help="in-range references, measurement noise, solver")
    parser.add_argument("--heldout-seed", type=int, default=7, help="which held-out images")
    parser.add_argument("--generator", default="demo")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per solve")
    parser.add_argument("--chains", type=int, default=4,
                        help="chains of the posterior-spread runs of the samplers (held-out centre box; 1: none)")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--extra", default=",".join(DEFAULT_EXTRA),
                        help=f"comma-separated methods beside {', '.join(CLAIM)} (of: {', '.join(EXTRA)}; '' for none)")
    args = parser.parse_args()
    if args.images < 1 or args.steps < 1:
        raise SystemExit("error: --images and --steps must be positive")
    extra = [m.strip() for m in args.extra.split(",") if m.strip()]
    if set(extra) - set(EXTRA):
        raise SystemExit(f"error: --extra takes methods of {', '.join(EXTRA)}, got {', '.join(extra)}")
    methods = CLAIM + tuple(m for m in EXTRA if m in extra)

    start = time.perf_counter()
    out, n = args.out, args.images
    sample_grid(args.generator, out / "samples.png")
    heldout = write_heldout(out / "heldout", n, args.heldout_seed)
    sets = {"in_range": ["input_source=generator", f"num_images={n}"],
            "held_out": ["input_source=folders", f"input_folders=[{heldout}]", f"max_images={n}"]}
    common = [f"generator={args.generator}", f"seed={args.seed}"]
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "methods": list(methods), "tasks": {},
                     "sweeps": {}}

    for set_name, set_overrides in sets.items():
        for task, task_overrides in TASKS.items():
            runs = {m: out / "runs" / f"{set_name}_{task}_{m}" for m in methods}
            summary = {}
            for m in methods:
                data = solve(runs[m], common + set_overrides + task_overrides + method_overrides(m, args.steps), n,
                             args.threads)
                summary[m] = summarise(data)
                print(f"{set_name:9s} {task:19s} {m:6s} {cell(summary[m])}  {summary[m]['seconds']:.2f} s/image",
                      flush=True)
            results["tasks"].setdefault(set_name, {})[task] = summary
            names = [r["name"] for r in json.loads((runs["csgm"] / "metrics.json").read_text())["images"]]
            recon_grid(runs, names, out / f"recon_{set_name}_{task}.png")

    names = [r["name"] for r in json.loads((out / "runs" / f"held_out_inpainting_{methods[0]}" / "metrics.json")
                                            .read_text())["images"]]
    fill = fill_realism({m: out / "runs" / f"held_out_inpainting_{m}" for m in methods}, names,
                        ROOT / "images" / "held_out", {f"{n}.png" for n in names}, 32,
                        [("sgilo", "ilo"), ("ilo", "csgm"), ("sgilo", "csgm"), ("sgilo_published", "ilo")])
    results["fill_swd"], results["fill_swd_spread"], results["fill_swd_paired"] = (
        fill["swd"], fill["spread"], fill["paired"])
    print("fill SWD (held-out centre box): " + ", ".join(f"{k} {v:.3f}" for k, v in results["fill_swd"].items()),
          flush=True)
    if args.chains > 1:  # posterior spread against error, on the held-out centre box
        results["std_error"] = {}
        for m in (x for x in methods if x in CHAIN_METHODS):
            data = solve(out / "runs" / f"held_out_inpainting_{m}_chains{args.chains}", common + sets["held_out"]
                         + TASKS["inpainting"] + method_overrides(m, args.steps) + [f"chains={args.chains}"], n,
                         args.threads)
            rhos = [r["std_error_spearman"] for r in data["images"] if r.get("std_error_spearman") is not None]
            results["std_error"][m] = {"psnr": summarise(data)["psnr"], "rho": statistics.mean(rhos) if rhos else None,
                                       "rho_se": statistics.stdev(rhos) / len(rhos) ** 0.5 if len(rhos) > 1 else None}
            print(f"chains {args.chains} {m}: std-error Spearman {results['std_error'][m]['rho']}", flush=True)

    if not args.no_sweeps:
        for (sweep, (xlabel, values, make)), set_name in itertools.product(SWEEPS.items(), sets):
            table: dict[str, list] = {m: [] for m in ("naive", *methods)}
            for v in values:
                for m in methods:
                    data = solve(out / "runs" / f"sweep_{set_name}_{sweep}_{v}_{m}",
                                 common + sets[set_name] + make(v) + method_overrides(m, args.steps), n, args.threads)
                    s = summarise(data)
                    table[m].append(s["psnr"])
                    if m == methods[0]:
                        table["naive"].append(s["naive_psnr"])
                print(f"sweep {set_name} {sweep} {v}: " + ", ".join(f"{k} {table[k][-1]:.2f}" for k in table),
                      flush=True)
            key = f"{sweep}_{set_name}"
            results["sweeps"][key] = {"x": values, "xlabel": xlabel, "psnr": table, "set": set_name, "task": sweep}
            line_chart(out / f"sweep_{key}.png", f"{sweep} ({set_name})".replace("_", " "), xlabel, values, table)

    if not args.no_ablations:
        for task, task_overrides in TASKS.items():
            row = {}
            for name, extra in ABLATIONS.items():
                data = solve(out / "runs" / f"held_out_{task}_{name}", common + sets["held_out"] + task_overrides
                             + method_overrides("sgilo", args.steps) + extra, n, args.threads)
                row[name] = summarise(data)
            row["sgilo"] = results["tasks"]["held_out"][task]["sgilo"]
            row["ilo"] = results["tasks"]["held_out"][task]["ilo"]
            results.setdefault("ablations", {})[task] = row
            print(f"ablation {task}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in row.items()), flush=True)

    results["seconds_this_call"] = time.perf_counter() - start  # runs reused from earlier calls cost nothing
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results, args))
    print(f"wrote {out / 'results.md'} ({results['seconds_this_call'] / 60:.1f} min)")


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [f"Generator `{args.generator}`, {args.images} images per set, seed {args.seed}, {args.steps} Adam steps "
             f"per round (one-round methods: {3 * args.steps} steps). Cells: PSNR (dB) ± its standard deviation over "
             "the images / SSIM (/ LPIPS when its weights are available), means over the images.", ""]
    methods = results["methods"]
    labels = [LABELS[m] for m in methods]
    for set_name, tasks in results["tasks"].items():
        lines += [f"**{set_name.replace('_', '-')}**", "",
                  f"| task | naive | {' | '.join(labels)} | SGILO ≥ ILO ≥ CSGM | s/image ({' / '.join(labels)}) |",
                  "|---|---|" + "---|" * len(methods) + "---|---|"]
        for task, s in tasks.items():
            secs = " / ".join(f"{s[m]['seconds']:.1f}" for m in methods)
            lines.append(f"| {task.replace('_', ' ')} | {cell(s['csgm'], 'naive_')} | "
                         + " | ".join(cell(s[m]) for m in methods) + f" | {claim(s)} | {secs} |")
        lines.append("")
        pairs = [("sgilo", "ilo"), ("ilo", "csgm")] + [(m, "ilo" if m == "sgilo_published" else "csgm") for m in methods
                                                      if m not in CLAIM]
        lines += [f"Paired PSNR differences ({set_name.replace('_', '-')}; mean over the images ± standard error, dB; "
                  "within about two standard errors of 0 is a tie):", "",
                  "| task | " + " | ".join(f"{LABELS[a]} − {LABELS[b]}" for a, b in pairs) + " |",
                  "|---|" + "---|" * len(pairs)]
        for task, s in tasks.items():
            lines.append(f"| {task.replace('_', ' ')} | " + " | ".join(paired(s[a], s[b]) for a, b in pairs) + " |")
        lines.append("")
    if results.get("fill_swd"):
        fills = results["fill_swd"]
        lines += ["**Realism of the fill** (held-out centre box): SWD of 8×8 patches wholly inside the box to patches "
                  "of the other held-out images at the same places (`inverse/fill_metrics.py`; lower is more real; "
                  "'reference' is the true content, the floor)", "",
                  "| " + " | ".join(LABELS.get(k, k) for k in fills) + " |", "|" + "---|" * len(fills),
                  "| " + " | ".join(f"{v:.3f}" for v in fills.values()) + " |"]
        if results.get("fill_swd_spread"):
            lines.append("| " + " | ".join(f"± {results['fill_swd_spread'][k]:.3f}" for k in fills) + " |")
        lines.append("")
        if results.get("fill_swd_paired"):
            lines += ["Differences (± the bootstrap standard deviation over images): " + "; ".join(
                f"{LABELS.get(k.split(' - ')[0])} − {LABELS.get(k.split(' - ')[1])} {d:+.3f} ± {e:.3f}"
                for k, (d, e) in results["fill_swd_paired"].items()), ""]
    if results.get("std_error"):
        rows = results["std_error"]
        lines += [f"**Posterior spread against error** (held-out centre box, {args.chains} chains): per image, "
                  "Spearman's ρ over pixels between the chains' std and the error of their mean; mean ± standard "
                  "error over the images", "", "| method | PSNR of the mean | ρ |", "|---|---|---|"]
        for m, r in rows.items():
            rho = "n/a" if r["rho"] is None else f"{r['rho']:.2f}" + (f" ± {r['rho_se']:.2f}" if r["rho_se"] else "")
            lines.append(f"| {LABELS[m]} | {r['psnr']:.2f} | {rho} |")
        lines.append("")
    for data in results["sweeps"].values():
        lines += [f"**{data['task'].replace('_', ' ')}** ({data['set'].replace('_', '-')}, PSNR dB)", "",
                  f"| {data['xlabel']} | " + " | ".join(LABELS[k] for k in data["psnr"]) + " |",
                  "|---|" + "---|" * len(data["psnr"])]
        for i, x in enumerate(data["x"]):
            lines.append(f"| {x:g} | " + " | ".join(f"{data['psnr'][k][i]:.2f}" for k in data["psnr"]) + " |")
        lines.append("")
    if results.get("ablations"):
        lines += ["**What the prior adds** (held-out, PSNR dB / SSIM): SGILO with the prior's weight 0 (everything "
                  "else the same), SGILO, and ILO", "",
                  "| task | SGILO, no prior | SGILO | ILO |", "|---|---|---|---|"]
        for task, row in results["ablations"].items():
            lines.append(f"| {task.replace('_', ' ')} | " + " | ".join(
                cell(row[k]) for k in ("sgilo_no_prior", "sgilo", "ilo")) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
