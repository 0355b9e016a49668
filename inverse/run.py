"""A solve from config to results: check everything, build the generator, operator, priors and inputs, then solve
batch by batch, writing metrics, images and report.html as results come in (``solve_inverse.py`` is its entry).

Every configuration error surfaces as a :class:`utils.UserError` in :func:`prepare`, before any image is solved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from inverse.ilo import Problem
from inverse.inputs import InputImage, list_inputs, load_references, measure, positive_int
from inverse.losses import PerceptualLoss
from inverse.methods import Method, build_method
from inverse.metrics import Metrics
from inverse.operators import OPERATORS, Operator, build_operator
from inverse.outputs import (
    CurveLog,
    batch_metrics,
    merge_ranks,
    public,
    save_outputs,
    tile_names,
    write_metrics,
)
from inverse.report import write_run_report, write_sweep_report
from score.evaluation import find_trained_prior
from score.prior import PriorFormatError, ScorePrior, parse_prior_spec
from stylegan.build import GeneratorConfigError, build_generator, layer_sample_shape
from utils import (
    ROOT,
    DistInfo,
    UserError,
    close_distributed,
    init_distributed,
    resolve_path,
    save_grid,
    seed_everything,
    set_threads,
    to_plain,
)

log = logging.getLogger("solve_inverse")
LPIPS_NETS = ("vgg", "alex", "squeeze")


# ---------------------------------------------------------------------------------------------------------------------
# Configuration checks.


def check_scalars(cfg: DictConfig) -> None:
    """Types of the plain keys (the method and operator settings are checked where they are used)."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise UserError(f"seed must be an integer, got {cfg.seed!r}")
    flags = {"save_images": cfg.save_images, "save_latent": cfg.save_latent, "progress": cfg.progress,
             "tensorboard": cfg.get("tensorboard", True)}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
    if cfg.lpips.net not in LPIPS_NETS:
        raise UserError(f"lpips.net must be one of {LPIPS_NETS}, got {cfg.lpips.net!r}")
    size = cfg.lpips.resolution
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise UserError(f"lpips.resolution must be an integer >= 16 or null, got {size!r}")


def check_run_dir(out_dir: Path) -> None:
    if (out_dir / "metrics.json").exists() or (out_dir / "images").exists():
        raise UserError(f"{out_dir} already holds results; choose another hydra.run.dir")


# ---------------------------------------------------------------------------------------------------------------------
# Score priors.


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


# ---------------------------------------------------------------------------------------------------------------------
# The run.


@dataclass
class Run:
    """Everything a run needs, built (and so checked) before any image is solved."""

    cfg: DictConfig
    method: Method
    dist: DistInfo
    out_dir: Path
    sweep_dir: Path | None  # the multirun's folder (its report.html compares the jobs), None for a single run
    G: Any
    proxy: Any
    op: Operator
    items: list[InputImage]
    references: torch.Tensor
    perceptual: Any  # LPIPS for the pe term (None when pe is 0 or LPIPS is unavailable)
    lpips_fn: Any  # LPIPS for the metric (None when unavailable)

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / ("metrics.json" if not self.dist.distributed else f"metrics_rank{self.dist.rank}.json")

    @property
    def title(self) -> str:
        return f"{self.cfg.method.name} / {self.cfg.task.name} / {self.cfg.generator.name}"


def prepare(cfg: DictConfig, out_dir: Path, folders_given: bool = False, sweep_dir: Path | None = None) -> Run:
    """Check the configuration and build the generator, operator, priors and inputs; raises UserError.

    ``folders_given``: ``input_folders`` came from the command line (see :func:`inverse.inputs.list_inputs`).
    """
    set_threads(cfg.num_threads)
    method = build_method(cfg)
    check_scalars(cfg)
    positive_int(cfg, "batch_size")
    items = list_inputs(cfg, folders_given)
    if cfg.operators.get("operator_type") not in OPERATORS:
        raise UserError(f"unknown operators.operator_type {cfg.operators.get('operator_type')!r}; valid types are: "
                        f"{', '.join(sorted(OPERATORS))}")
    dist = init_distributed(cfg.device)
    check_run_dir(out_dir)  # every rank looks before any rank writes
    if dist.distributed:
        import torch.distributed as tdist

        tdist.barrier()
    seed_everything(int(cfg.seed))
    try:
        G, proxy = build_generator(to_plain(cfg.generator), dist.device, resolve=resolve_path)
    except GeneratorConfigError as exc:
        raise UserError(str(exc)) from None
    method.build(cfg, G, lambda name, layer: load_prior(name, layer, G, cfg, dist.device), dist.device)
    op = build_operator(cfg.operators, G.img_resolution, G.img_channels, device=dist.device, seed=int(cfg.seed))
    references = load_references(items, cfg, G, dist.device)  # reads every file now: a bad one stops the run here
    try:
        lpips = PerceptualLoss.load(cfg.lpips.net, cfg.lpips.resolution, cfg.lpips.backbone_path,
                                    cfg.lpips.head_path, dist.device)
    except (ValueError, FileNotFoundError) as exc:  # a configured weights path that is missing or wrong
        raise UserError(f"lpips: {exc}") from None
    lpips_fn = lpips if lpips.available else None
    uses_pe = method.uses_perceptual
    if uses_pe and lpips_fn is None:
        log.warning("LPIPS is unavailable: the perceptual term of %s is dropped and lpips is reported as null",
                    method.name)
    return Run(cfg, method, dist, out_dir, sweep_dir, G, proxy, op, items, references,
               lpips_fn if uses_pe else None, lpips_fn)


def solve_batch(run: Run, batch: list[InputImage]) -> tuple[list[dict[str, Any]], torch.Tensor, list[Any]]:
    """Measure, solve and save one batch; its metric records, its rows of the run-level grid, its round logs."""
    ref = run.references[[it.index for it in batch]]
    op = run.op
    if op.name == "inpainting" and getattr(op, "kind", None) == "black_pixels":
        op.set_mask_from_image(ref)  # masks come from these photos
    y = measure(op, ref, batch, run.cfg)
    start = time.perf_counter()
    problem = Problem(run.G, run.proxy, op, y, perceptual=run.perceptual, reference=ref)
    sol = run.method.solve(problem, [it.index for it in batch], int(run.cfg.seed),
                           bool(run.cfg.progress) and run.dist.is_main)
    seconds = time.perf_counter() - start
    grid_rows = save_outputs(run.out_dir, batch, ref, y, op, sol, run.cfg)
    return batch_metrics(batch, ref, y, op, sol, run.lpips_fn, seconds), grid_rows, sol.logs


def write_reports(run: Run, records: list[dict[str, Any]]) -> None:
    """report.html of the run (rank 0, all ranks' records) and of its multirun."""
    tiles = tile_names(run.method.stages, int(run.cfg.chains))
    config = OmegaConf.to_yaml(run.cfg, resolve=False)
    write_run_report(run.out_dir, records, tiles, run.title, config, total=len(run.items))
    if run.sweep_dir is not None:
        write_sweep_report(run.sweep_dir)


def solve_all(run: Run) -> list[dict[str, Any]] | None:
    """Solve this rank's shard batch by batch; after each batch metrics.json (and on a single process
    report.html) are rewritten, so a crash or Ctrl-C keeps what is done. Returns the merged records on rank 0."""
    dist, cfg = run.dist, run.cfg
    mine = run.items[dist.rank :: dist.world_size]  # this rank's shard
    batches = [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    log.info("%s: %d image(s) on rank %d/%d, %d stage(s), %d chain(s)", run.title, len(mine), dist.rank,
             dist.world_size, run.method.stages, int(cfg.chains))
    curves = CurveLog(run.out_dir / ("tensorboard" if not dist.distributed else f"tensorboard/rank{dist.rank}"),
                      enabled=bool(cfg.get("tensorboard", True)))
    records: list[dict[str, Any]] = []
    grid_rows = []
    try:
        for b, batch in enumerate(batches):
            batch_records, rows, logs = solve_batch(run, batch)
            records += batch_records
            grid_rows.append(rows)
            write_metrics(run.metrics_path, records)  # after every batch: a crash keeps what is done
            curves.add(b, logs)
            if not dist.distributed:
                write_reports(run, records)
            log.info("batch %d/%d: psnr %s", b + 1, len(batches),
                     ", ".join("failed" if r["psnr"] is None else f"{r['psnr']:.2f}" for r in batch_records))
    except KeyboardInterrupt:
        log.warning("interrupted: %d finished image(s) kept in %s", len(records), run.metrics_path)
        raise

    if grid_rows:  # reference | measurement | naive | rounds | final (| std)
        name = "grid.png" if not dist.distributed else f"grid_rank{dist.rank}.png"
        save_grid(torch.cat(grid_rows), run.out_dir / name,
                  nrow=len(tile_names(run.method.stages, int(run.cfg.chains))))
    merged = merge_ranks(dist, records, run.items)
    if merged is not None and dist.distributed:
        write_metrics(run.out_dir / "metrics.json", merged)
        write_reports(run, merged)
    close_distributed()
    return merged


def summary(run: Run, records: list[dict[str, Any]]) -> str:
    """The line printed at the end: mean metrics and where the results are."""
    return f"{run.title}: {Metrics(public(records)).table()}\nresults in {run.out_dir} (report.html)"

