"""Solve imaging inverse problems with a generator and its layer priors: CSGM, ILO or SGILO (DESIGN §2, §4).

    python solve_inverse.py                                   # demo: tiny generator, in-range references, CPU
    python solve_inverse.py task=super_resolution method=ilo input_source=folders input_folders=[images/]
    python solve_inverse.py generator=ffhq method=sgilo task=inpainting input_source=folders   # published settings
    python solve_inverse.py -m task=inpainting,denoising method=csgm,ilo,sgilo               # a local sweep
    torchrun --nproc_per_node=2 solve_inverse.py ...          # images sharded over processes; rank 0 merges

Writes into the Hydra run directory: ``metrics.json`` (per image and mean; updated after every batch, so a crash
or Ctrl-C keeps what was finished), ``images/<name>/{reference,measurement,naive,round<r>,final,grid}.png``
(+ ``mean.png``/``std.png`` with ``chains`` > 1, ``latents_layer<r>.pt`` with ``save_latent``) and ``grid.png``
(one row per image: reference | measurement | naive | round 0..R-1 | final | std).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dataloaders import save_latents
from inverse.ilo import LayerPriors, Problem, SettingsError, Solution, SolverSettings, image_generator, solve
from inverse.losses import PerceptualLoss
from inverse.metrics import Metrics, image_metrics
from inverse.operators import OPERATORS, Operator, build_operator
from score.evaluation import find_trained_prior
from score.prior import PriorFormatError, ScorePrior, parse_prior_spec
from stylegan.build import GeneratorConfigError, build_generator, layer_sample_shape
from utils import (
    IMAGE_SUFFIXES,
    ROOT,
    DistInfo,
    UserError,
    close_distributed,
    init_distributed,
    load_image,
    register_resolvers,
    resolve_path,
    run_main,
    save_grid,
    save_image,
    save_json,
    seed_everything,
    set_threads,
    to_plain,
)

log = logging.getLogger("solve_inverse")
INPUT_SOURCES = ("folders", "generator")
LPIPS_NETS = ("vgg", "alex", "squeeze")
GRID_SIDE = 128  # panel side in the run-level grid.png (keeps it small for 1024 px generators)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration checks (all before any work).


def solver_settings(cfg: DictConfig) -> SolverSettings:
    flat = {**to_plain(cfg), "chains": cfg.chains}
    per_generator = flat.get("radius_per_generator") or {}
    if flat.get("radius") is None and per_generator:
        # The l1 norm of a feature tensor grows with its size, so ILO's radii are given per generator.
        name = cfg.generator.name
        if name not in per_generator:
            log.warning("radius_per_generator has no entry for generator %r: no l1 ball (set radius=[...])", name)
        flat["radius"] = per_generator.get(name)
    try:
        return SolverSettings.build(flat)
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def positive_int(cfg: DictConfig, key: str, allow_none: bool = False) -> int | None:
    value = cfg.get(key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key} must be an integer >= 1{' or null' if allow_none else ''}, got {value!r}")
    return value


@dataclass
class InputImage:
    """One problem to solve: a global id (seeds its random streams, orders the shards) and a unique name."""

    index: int
    name: str
    path: Path | None = None


def list_inputs(cfg: DictConfig) -> list[InputImage]:
    """The images of the run, in a fixed order (sorted per folder), checked to exist."""
    source = cfg.input_source
    if source == "generator":
        return [InputImage(i, f"sample{i:04d}") for i in range(positive_int(cfg, "num_images"))]
    if source != "folders":
        raise UserError(f"input_source must be one of {INPUT_SOURCES}, got {source!r}")
    limit = positive_int(cfg, "max_images", allow_none=True)
    folders = cfg.input_folders
    if isinstance(folders, str):
        folders = [folders]
    if not folders:
        raise UserError("input_folders is empty; give at least one folder of png/jpg/jpeg images")
    paths: list[Path] = []
    for folder in folders:
        path = resolve_path(str(folder))
        if not path.is_dir():
            raise UserError(f"input folder not found: {folder}")
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"input folder {folder} holds no png/jpg/jpeg images")
        paths += found
    paths = paths[:limit] if limit is not None else paths
    names: dict[str, int] = {}
    out = []
    for i, p in enumerate(paths):
        names[p.stem] = names.get(p.stem, 0) + 1
        out.append(InputImage(i, p.stem if names[p.stem] == 1 else f"{p.stem}_{names[p.stem] - 1}", p))
    return out


def prior_config_path(name: str) -> Path:
    """A configs/trained_networks entry by name, or a YAML path."""
    path = resolve_path(name)
    if not path.is_file():
        path = ROOT / "configs" / "trained_networks" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"prior config {name!r}: neither a file nor a configs/trained_networks entry")
    return path


def load_prior(name: str, layer: int, G: Any, cfg: DictConfig, device: torch.device) -> ScorePrior | None:
    """The prior a trained_networks config names, checked against the generator's layer; None (with a warning)
    when the config says 'newest trained' and there is none yet."""
    from omegaconf import OmegaConf

    path = prior_config_path(name)
    try:
        spec = parse_prior_spec(OmegaConf.load(path))
        ckpt = None
        if spec.ckpt is None:
            gen_name = spec.generator_name
            ckpt = find_trained_prior(resolve_path(cfg.prior_search_dir), gen_name, spec.layer)
            if ckpt is None:
                log.warning("no trained layer-%d prior for %r under %s: no prior step at layer %d "
                            "(train one with `python train_score.py`)", spec.layer, gen_name, cfg.prior_search_dir,
                            layer)
                return None
        prior = ScorePrior.from_spec(spec, ckpt=ckpt, device=device, resolve=resolve_path)
    except PriorFormatError as exc:
        raise UserError(f"prior {name}: {exc}") from None
    if prior.layer != layer:
        raise UserError(f"prior {name} is for layer {prior.layer}, but it is listed for layer {layer}")
    shape = layer_sample_shape(G, layer)
    if tuple(prior.image_shape) != tuple(shape):
        raise UserError(f"prior {name} expects layer-{layer} variables of shape {list(prior.image_shape)}, "
                        f"the generator gives {list(shape)}")
    return prior


def load_priors(cfg: DictConfig, G: Any, s: SolverSettings, device: torch.device) -> LayerPriors:
    """The priors the method lists for this generator (``priors.<generator name>``), only where a temperature
    uses them."""
    wants_latent = any(t > 0 for t in s.latent_temperature)
    wants_layer = [r for r in range(s.rounds) if r > 0 and s.gen_temperature[r] > 0]
    if not (wants_latent or wants_layer):
        return LayerPriors()
    table = to_plain(cfg.get("priors") or {})
    name = cfg.generator.name
    if name not in table:
        raise UserError(f"method {cfg.method.name!r} uses score priors but lists none for generator {name!r}; "
                        f"add priors.{name}.latent_config / gen_configs, or set the temperatures to 0")
    entry = table[name] or {}
    priors = LayerPriors()
    if wants_latent and entry.get("latent_config"):
        priors.latent = load_prior(entry["latent_config"], 0, G, cfg, device)
    gen_configs = list(entry.get("gen_configs") or [])
    for r in wants_layer:
        if r < len(gen_configs) and gen_configs[r]:
            prior = load_prior(gen_configs[r], r, G, cfg, device)
            if prior is not None:
                priors.layers[r] = prior
    log.info("score priors: latent %s; layers %s", "yes" if priors.latent is not None else "none",
             sorted(priors.layers) or "none")
    return priors


def check_run_dir(out_dir: Path) -> None:
    if (out_dir / "metrics.json").exists() or (out_dir / "images").exists():
        raise UserError(f"{out_dir} already holds results; choose another hydra.run.dir")


# ---------------------------------------------------------------------------------------------------------------------
# Inputs and measurements.


@torch.no_grad()
def load_references(items: list[InputImage], cfg: DictConfig, G: Any, device: torch.device) -> torch.Tensor:
    """(N, C, R, R) in [-1, 1]: files, or in-range images G(mapping(z)) with z seeded per image."""
    if cfg.input_source == "folders":
        images = torch.stack([load_image(it.path, G.img_resolution) for it in items])
        if G.img_channels == 1:
            images = images.mean(1, keepdim=True)
        return images.to(device)
    z = torch.stack([torch.randn(G.z_dim, generator=image_generator(cfg.seed, it.index, 1)) for it in items])
    ws = G.mapping(z.to(device), None)
    return G.synthesis(ws, noise_mode="const").clamp(-1, 1)


@torch.no_grad()
def measure(op: Operator, x: torch.Tensor, items: list[InputImage], cfg: DictConfig) -> torch.Tensor:
    """y = A(x) + σξ with ξ drawn per image; ``forward_measurements: false`` means the inputs already are the
    observations: y = A(x), no noise added."""
    y = op.A(x)
    if not cfg.operators.get("forward_measurements", True) or op.noise_std == 0:
        return y
    xi = torch.stack([torch.randn(y.shape[1:], generator=image_generator(cfg.seed, it.index, 2)) for it in items])
    return op.measure(x, noise=xi)  # ξ per image, so a result does not depend on batching or sharding


# ---------------------------------------------------------------------------------------------------------------------
# Outputs.


def as_panel(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, 3, side, side): gray to RGB, nearest resize (measurements keep their pixels visible)."""
    images = images.detach().float().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != side:
        mode = "nearest" if images.shape[-1] < side else "area"
        images = F.interpolate(images, size=(side, side), mode=mode)
    return images


def std_image(std: torch.Tensor) -> torch.Tensor:
    """Per-pixel std (N, C, H, W) shown in [-1, 1], each image scaled by its own maximum."""
    peak = std.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
    return std / peak * 2 - 1


def save_outputs(out_dir: Path, items: list[InputImage], ref: torch.Tensor, y: torch.Tensor, op: Operator,
                 sol: Solution, cfg: DictConfig) -> torch.Tensor:
    """Per-image PNGs (+ latents); returns this batch's rows of the run-level grid (N·panels, 3, s, s)."""
    side = ref.shape[-1]
    k = sol.final.shape[1]
    measurement = op.measurement_image(y)
    naive = op.naive(y)
    panels = [ref, measurement, naive, *[r[:, 0] for r in sol.rounds], sol.final[:, 0]]
    std = std_image(sol.std) if k > 1 else None
    if std is not None:
        panels.append(std)
    rows = []
    for i, it in enumerate(items):
        d = out_dir / "images" / it.name
        if cfg.save_images:
            save_image(ref[i], d / "reference.png")
            save_image(measurement[i], d / "measurement.png")
            save_image(naive[i], d / "naive.png")
            for r, images in enumerate(sol.rounds):
                save_image(images[i, 0], d / f"round{r}.png")
            save_image(sol.final[i, 0], d / "final.png")
            if k > 1:
                save_image(sol.mean[i], d / "mean.png")
                save_image(std[i], d / "std.png")
        row = torch.cat([as_panel(p[i : i + 1], side) for p in panels])
        if cfg.save_images:
            save_grid(row, d / "grid.png", nrow=row.shape[0])
        if cfg.save_latent:
            save_variables(d, sol, i, k)
        rows.append(as_panel(row, min(side, GRID_SIDE)))
    return torch.cat(rows)


def save_variables(d: Path, sol: Solution, i: int, k: int) -> None:
    """latents_layer<r>.pt per optimised layer (the K chains of image i), in the dataloaders.save_latents format."""
    d.mkdir(parents=True, exist_ok=True)
    rows = slice(i * k, (i + 1) * k)
    v = sol.variables
    save_latents(d / "latents_layer0.pt", v.z[rows], 0, noises=[n[rows].detach().cpu() for n in v.noises])
    for layer, x in sol.layer_states.items():
        save_latents(d / f"latents_layer{layer}.pt", x[rows], layer)


def batch_metrics(items: list[InputImage], ref: torch.Tensor, y: torch.Tensor, op: Operator, sol: Solution,
                  lpips_fn: Any, seconds: float) -> list[dict[str, Any]]:
    """One record per image: metrics of the posterior mean, per round, naive baseline; None for failed images."""
    layers = [log_.layer for log_ in sol.logs]
    per_round = [image_metrics(r.mean(1), ref, op, y, lpips_fn) for r in sol.rounds]
    final = per_round[-1]  # the solution is the last round's images (sol.mean == sol.rounds[-1].mean(1))
    naive = image_metrics(op.naive(y), ref, None, None, lpips_fn)
    records = []
    for i, it in enumerate(items):
        failed = bool(sol.failed[i])
        blank = dict.fromkeys(final[i])
        rec = {"name": it.name, **(blank if failed else final[i]), "seconds": seconds / len(items),
               "failed": failed, "naive_psnr": naive[i]["psnr"], "naive_ssim": naive[i]["ssim"],
               "naive_lpips": naive[i]["lpips"], "chains": int(sol.final.shape[1]),
               "rounds": [{"layer": layer, **(blank if failed else m[i])} for layer, m in zip(layers, per_round)]}
        records.append(rec)
    return records


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Write (atomically replace) this run's own metrics file: a crash never leaves it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_json(Metrics(records).to_dict(), tmp, overwrite=True)
    os.replace(tmp, path)


def merge_ranks(dist: DistInfo, records: list[dict[str, Any]], items: list[InputImage]) -> list[dict[str, Any]] | None:
    """All ranks' records on rank 0, in input order; None on the other ranks."""
    if not dist.distributed:
        return records
    import torch.distributed as tdist

    gathered: list[Any] = [None] * dist.world_size if dist.is_main else None
    tdist.gather_object(records, gathered, dst=0)
    if not dist.is_main:
        return None
    order = {it.name: it.index for it in items}
    return sorted((r for part in gathered for r in part), key=lambda r: order[r["name"]])


# ---------------------------------------------------------------------------------------------------------------------
# The run.


@dataclass
class Run:
    """Everything a run needs, built (and so checked) before any image is solved."""

    cfg: DictConfig
    settings: SolverSettings
    dist: DistInfo
    out_dir: Path
    G: Any
    proxy: Any
    op: Operator
    priors: LayerPriors
    items: list[InputImage]
    references: torch.Tensor
    perceptual: Any  # LPIPS for the pe term (None when pe is 0 or LPIPS is unavailable)
    lpips_fn: Any  # LPIPS for the metric (None when unavailable)

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / ("metrics.json" if not self.dist.distributed else f"metrics_rank{self.dist.rank}.json")


def check_scalars(cfg: DictConfig, settings: SolverSettings) -> None:
    """Types of the plain keys (the solver and operator settings are checked where they are used)."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise UserError(f"seed must be an integer, got {cfg.seed!r}")
    flags = {"save_images": cfg.save_images, "save_latent": cfg.save_latent, "progress": cfg.progress,
             **{k: getattr(settings, k) for k in ("project_latent", "project_noises", "carry_skip")}}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
    if cfg.lpips.net not in LPIPS_NETS:
        raise UserError(f"lpips.net must be one of {LPIPS_NETS}, got {cfg.lpips.net!r}")
    size = cfg.lpips.resolution
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise UserError(f"lpips.resolution must be an integer >= 16 or null, got {size!r}")


def prepare(cfg: DictConfig) -> Run:
    """Check the configuration and build the generator, operator, priors and inputs; raises UserError."""
    set_threads(cfg.num_threads)
    settings = solver_settings(cfg)
    check_scalars(cfg, settings)
    positive_int(cfg, "batch_size")
    items = list_inputs(cfg)
    if cfg.operators.get("operator_type") not in OPERATORS:
        raise UserError(f"unknown operators.operator_type {cfg.operators.get('operator_type')!r}; valid types are: "
                        f"{', '.join(sorted(OPERATORS))}")
    dist = init_distributed(cfg.device)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    check_run_dir(out_dir)  # every rank looks before any rank writes
    if dist.distributed:
        import torch.distributed as tdist

        tdist.barrier()
    seed_everything(int(cfg.seed))
    try:
        G, proxy = build_generator(to_plain(cfg.generator), dist.device, resolve=resolve_path)
        settings.check(G.synthesis.num_blocks)
    except (GeneratorConfigError, SettingsError) as exc:
        raise UserError(str(exc)) from None
    op = build_operator(cfg.operators, G.img_resolution, G.img_channels, device=dist.device, seed=int(cfg.seed))
    priors = load_priors(cfg, G, settings, dist.device)
    references = load_references(items, cfg, G, dist.device)  # reads every file now: a bad one stops the run here
    try:
        lpips = PerceptualLoss.load(cfg.lpips.net, cfg.lpips.resolution, cfg.lpips.backbone_path,
                                    cfg.lpips.head_path, dist.device)
    except (ValueError, FileNotFoundError) as exc:  # a configured weights path that is missing or wrong
        raise UserError(f"lpips: {exc}") from None
    lpips_fn = lpips if lpips.available else None
    uses_pe = any(w > 0 for w in settings.pe)
    if uses_pe and lpips_fn is None:
        log.warning("LPIPS is unavailable: the perceptual term (pe) is dropped and lpips is reported as null")
    return Run(cfg, settings, dist, out_dir, G, proxy, op, priors, items, references,
               lpips_fn if uses_pe else None, lpips_fn)


def solve_batch(run: Run, batch: list[InputImage]) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Measure, solve and save one batch; its metric records and its rows of the run-level grid."""
    ref = run.references[[it.index for it in batch]]
    op = run.op
    if op.name == "inpainting" and getattr(op, "kind", None) == "black_pixels":
        op.set_mask_from_image(ref)  # masks come from these photos
    y = measure(op, ref, batch, run.cfg)
    start = time.perf_counter()
    sol = solve(Problem(run.G, run.proxy, op, y, perceptual=run.perceptual, reference=ref), run.settings,
                run.priors, image_ids=[it.index for it in batch], seed=int(run.cfg.seed),
                progress=bool(run.cfg.progress) and run.dist.is_main)
    seconds = time.perf_counter() - start
    grid_rows = save_outputs(run.out_dir, batch, ref, y, op, sol, run.cfg)
    return batch_metrics(batch, ref, y, op, sol, run.lpips_fn, seconds), grid_rows


def solve_inverse(cfg: DictConfig) -> None:
    run = prepare(cfg)
    dist, cfg = run.dist, run.cfg
    mine = run.items[dist.rank :: dist.world_size]  # this rank's shard
    batches = [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    log.info("%s on %s with %s: %d image(s) on rank %d/%d, %d round(s), %d chain(s)", cfg.method.name,
             cfg.task.name, cfg.generator.name, len(mine), dist.rank, dist.world_size, run.settings.rounds,
             run.settings.chains)
    records: list[dict[str, Any]] = []
    grid_rows = []
    try:
        for b, batch in enumerate(batches):
            batch_records, rows = solve_batch(run, batch)
            records += batch_records
            grid_rows.append(rows)
            write_metrics(run.metrics_path, records)  # after every batch: a crash keeps what is done
            log.info("batch %d/%d: psnr %s", b + 1, len(batches),
                     ", ".join("failed" if r["psnr"] is None else f"{r['psnr']:.2f}" for r in batch_records))
    except KeyboardInterrupt:
        log.warning("interrupted: %d finished image(s) kept in %s", len(records), run.metrics_path)
        raise

    if grid_rows:  # reference | measurement | naive | rounds | final (| std)
        panels = 3 + run.settings.rounds + 1 + (run.settings.chains > 1)
        name = "grid.png" if not dist.distributed else f"grid_rank{dist.rank}.png"
        save_grid(torch.cat(grid_rows), run.out_dir / name, nrow=panels)
    merged = merge_ranks(dist, records, run.items)
    if merged is not None:
        if dist.distributed:
            write_metrics(run.out_dir / "metrics.json", merged)
        print(f"{cfg.method.name} / {cfg.task.name} / {cfg.generator.name}: {Metrics(merged).table()}\n"
              f"results in {run.out_dir}", flush=True)
    close_distributed()


def check_overrides(args: list[str]) -> None:
    """Compose the config once with the command-line overrides, so that a typo (an unknown key, a missing group
    option such as ``task=blur``, bad override syntax) is one ``error:`` line and exit status 2 rather than Hydra's
    report. Runs with Hydra flags (``-m``, ``--cfg``, ...) are left to Hydra."""
    if any(a.startswith("-") for a in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            compose("solve_inverse", overrides=args)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split()).split(" Config search path")[0].split(" See https://")[0]
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


register_resolvers()


@hydra.main(config_path="configs", config_name="solve_inverse", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_main(solve_inverse, cfg)
    except KeyboardInterrupt:
        print("error: interrupted; finished images and their metrics are kept", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
