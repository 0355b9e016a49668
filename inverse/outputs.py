"""What a solve writes into its run directory: per-image PNGs and latents, the run-level ``grid.png``, the metric
records of ``metrics.json`` (merged over ``torchrun`` ranks) and, when tensorboard is installed, per-round curves.

Layout (DESIGN §4)::

    metrics.json                      per image and mean; rewritten atomically after every batch (with K > 1
                                      chains also std_error_spearman: Spearman's ρ over pixels, std vs |error|)
    grid.png                          one row per image: reference | measurement | naive | rounds | final (| std)
    images/<name>/{reference,measurement,naive,round<r>,final}.png   native size (+ mean.png, std.png for K > 1)
    images/<name>/grid.png            the same row, tiles enlarged for viewing
    images/<name>/view/<tile>.png     each tile enlarged (nearest neighbour) for report.html
    images/<name>/latents_layer<r>.pt with save_latent
    tensorboard/batch<b>/             loss and PSNR per round and step (mean over the batch's live rows)
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dataloaders import save_latents
from inverse.fill_metrics import std_error_spearman
from inverse.ilo import RoundLog, Solution
from inverse.inputs import InputImage
from inverse.metrics import Metrics, image_metrics
from inverse.operators import Operator
from utils import DistInfo, save_grid, save_image, save_json

log = logging.getLogger(__name__)
VIEW_SIDE = 128  # tiles shown smaller than this are enlarged by an integer factor (nearest) to at least this side
GRID_SIDE = 128  # tile side in the run-level grid.png (1024 px images are shrunk to it, 32 px ones enlarged)


def view_side(side: int) -> int:
    """Side of a tile of ``side`` pixels enlarged for viewing: the smallest integer multiple >= VIEW_SIDE."""
    return side * max(1, math.ceil(VIEW_SIDE / side))


def as_panel(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, 3, side, side): gray to RGB, nearest resize up (pixels stay visible), area down."""
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


def tile_names(rounds: int, chains: int) -> list[str]:
    """The tiles of an image's row, in order (their PNG names without suffix)."""
    return ["reference", "measurement", "naive", *[f"round{r}" for r in range(rounds)], "final",
            *(["std"] if chains > 1 else [])]


def save_outputs(out_dir: Path, items: list[InputImage], ref: torch.Tensor, y: torch.Tensor, op: Operator,
                 sol: Solution, cfg: DictConfig) -> torch.Tensor:
    """Per-image PNGs (+ latents); returns this batch's rows of the run-level grid (N·tiles, 3, s, s)."""
    side = ref.shape[-1]
    k = sol.final.shape[1]
    measurement = op.measurement_image(y)
    panels = [ref, measurement, op.naive(y), *[r[:, 0] for r in sol.rounds], sol.final[:, 0]]
    std = std_image(sol.std) if k > 1 else None
    if std is not None:
        panels.append(std)
    names = tile_names(len(sol.rounds), k)
    big = view_side(side)
    rows = []
    for i, it in enumerate(items):
        d = out_dir / "images" / it.name
        tiles = [p[i : i + 1] for p in panels]
        if cfg.save_images:
            for name, tile in zip(names, tiles):
                save_image(tile[0], d / f"{name}.png")
                save_image(as_panel(tile, big)[0], d / "view" / f"{name}.png")
            if k > 1:
                save_image(sol.mean[i], d / "mean.png")
            save_grid(torch.cat([as_panel(t, big) for t in tiles]), d / "grid.png", nrow=len(tiles))
        if cfg.save_latent and sol.variables is not None:  # pixel-space methods have no generator variables
            save_variables(d, sol, i, k)
        rows.append(torch.cat([as_panel(t, GRID_SIDE) for t in tiles]))
    return torch.cat(rows)


def save_variables(d: Path, sol: Solution, i: int, k: int) -> None:
    """latents_layer<r>.pt per optimised layer (the K chains of image i), in the dataloaders.save_latents format."""
    d.mkdir(parents=True, exist_ok=True)
    rows = slice(i * k, (i + 1) * k)
    v = sol.variables
    save_latents(d / "latents_layer0.pt", v.z[rows], 0, noises=[n[rows].detach().cpu() for n in v.noises])
    for layer, x in sol.layer_states.items():
        save_latents(d / f"latents_layer{layer}.pt", x[rows], layer)


def _chain_mean(values: torch.Tensor | None, i: int, k: int) -> list[float | None] | None:
    """Column block of image i in a (steps, N·K) curve, averaged over its chains; None entries for NaN."""
    if values is None:
        return None
    mean = values[:, i * k : (i + 1) * k].double().mean(1)
    return [None if not math.isfinite(v) else round(v, 6) for v in mean.tolist()]


def batch_metrics(items: list[InputImage], ref: torch.Tensor, y: torch.Tensor, op: Operator, sol: Solution,
                  lpips_fn: Any, seconds: float) -> list[dict[str, Any]]:
    """One record per image: metrics of the posterior mean, per round, naive baseline; None for failed images.

    Each record also holds ``_curves`` (per round: layer, loss and PSNR per step, chain means) for report.html;
    keys starting with ``_`` stay out of metrics.json.
    """
    layers = [log_.layer for log_ in sol.logs]
    per_round = [image_metrics(r.mean(1), ref, op, y, lpips_fn) for r in sol.rounds]
    # The solution is the last round's images, unless the solver chose a round per chain (holdout_fraction).
    final = per_round[-1] if sol.final is sol.rounds[-1] else image_metrics(sol.mean, ref, op, y, lpips_fn)
    naive = image_metrics(op.naive(y), ref, None, None, lpips_fn)
    k = int(sol.final.shape[1])
    # With K > 1 chains: does the posterior std rank the pixels by the error of the mean? (None for K = 1)
    rho = std_error_spearman(sol.mean.cpu(), sol.std.cpu(), ref.cpu()).tolist() if k > 1 else [None] * len(items)
    records = []
    for i, it in enumerate(items):
        failed = bool(sol.failed[i])
        blank = dict.fromkeys(final[i])
        rec = {"name": it.name, **(blank if failed else final[i]), "seconds": seconds / len(items),
               "failed": failed, "naive_psnr": naive[i]["psnr"], "naive_ssim": naive[i]["ssim"],
               "naive_lpips": naive[i]["lpips"], "chains": k,
               "std_error_spearman": None if failed or rho[i] is None or not math.isfinite(rho[i]) else rho[i],
               "rounds": [{"layer": layer, **(blank if failed else m[i])} for layer, m in zip(layers, per_round)],
               "_curves": [{"layer": lg.layer, "loss": _chain_mean(lg.row_losses, i, k),
                            "psnr": _chain_mean(lg.row_psnrs, i, k)} for lg in sol.logs]}
        records.append(rec)
    return records


def public(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without their private (``_``-prefixed) keys: what metrics.json holds."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Write (atomically replace) this run's own metrics file: a crash never leaves it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_json(Metrics(public(records)).to_dict(), tmp, overwrite=True)
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


class CurveLog:
    """Per-round loss and PSNR curves of each batch into ``<run dir>/tensorboard/batch<b>/`` (tags
    ``round<r>/loss``, ``round<r>/psnr``; x = step of the round; mean over the batch's live rows). A no-op when
    tensorboard is not installed or ``enabled`` is false."""

    def __init__(self, directory: Path, enabled: bool = True) -> None:
        self.directory = directory
        self.writer_cls = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: no TensorBoard curves")
            else:
                self.writer_cls = SummaryWriter

    def add(self, batch: int, logs: list[RoundLog]) -> None:
        if self.writer_cls is None:
            return
        writer = self.writer_cls(str(self.directory / f"batch{batch:03d}"))
        for r, lg in enumerate(logs):
            for tag, values in (("loss", lg.row_losses), ("psnr", lg.row_psnrs)):
                if values is None:
                    continue
                for step, v in enumerate(values.double().nanmean(1).tolist()):
                    if math.isfinite(v):
                        writer.add_scalar(f"round{r}/{tag}", v, step)
        writer.close()
