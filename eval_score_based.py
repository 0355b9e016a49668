"""Unconditional hot/cold sampling with a layer prior: a quick look at what a prior has learned.

    python eval_score_based.py                      # the committed demo prior on layer 2 (checkpoints/demo/)
    python eval_score_based.py gen_conf=./configs/trained_networks/syn_layer3.yaml   # published prior (FFHQ bundle)
    python eval_score_based.py prior=outputs/train_score/<run>/prior.pt sampling.hot_sampler=false

``sampling.hot_sampler`` (from the prior's YAML, or overridden) picks hot start (naturalise G1 outputs) or
cold start (sample the layer from noise). Writes into the Hydra run directory per batch
``batch<i>_start.png``, ``batch<i>_result.png`` and ``batch<i>_start_vs_result.png`` (top row: generator,
bottom row: with the prior), and ``metrics.json`` with how far the latents moved.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from score.evaluation import LayerRenderer, find_trained_prior, moments, movement, sample_batch
from score.prior import PriorFormatError, SamplingSettings, ScorePrior, parse_prior_spec
from stylegan.build import GeneratorConfigError, build_generator, layer_sample_shape
from utils import (
    ROOT,
    UserError,
    check_command_line,
    register_resolvers,
    resolve_device,
    resolve_path,
    run_main,
    save_grid,
    save_json,
    seed_everything,
    set_threads,
    to_plain,
    torch_save_new,
)

log = logging.getLogger("eval_score_based")


def load_prior(cfg: DictConfig, device: torch.device) -> tuple[ScorePrior, str]:
    """The prior to evaluate and where it came from (explicit checkpoint, YAML, or newest trained one)."""
    conf_path = cfg.gen_conf if cfg.gen_conf is not None else (None if cfg.prior is not None else cfg.default_gen_conf)
    spec = None
    if conf_path is not None:
        path = resolve_path(conf_path)
        if not path.is_file():
            raise UserError(f"gen_conf: no such file {conf_path}")
        try:
            spec = parse_prior_spec(OmegaConf.load(path))
        except PriorFormatError as exc:
            raise UserError(f"gen_conf {conf_path}: {exc}") from None
        except Exception as exc:  # YAML syntax errors and the like
            raise UserError(f"gen_conf {conf_path}: not a readable YAML file ({type(exc).__name__})") from None
    ckpt = resolve_path(cfg.prior) if cfg.prior is not None else None
    if ckpt is None and spec is not None and spec.ckpt is None:
        gen_name = spec.generator_name
        ckpt = find_trained_prior(resolve_path(cfg.search_dir), gen_name, spec.layer)
        if ckpt is None:
            raise UserError(f"no trained layer-{spec.layer} prior for generator {gen_name!r} under {cfg.search_dir}; "
                            "train one with `python train_score.py` (about a minute on a CPU) or pass prior=PATH")
    try:
        if spec is None:
            prior = ScorePrior.load(ckpt, device=device)
        else:
            prior = ScorePrior.from_spec(spec, ckpt=ckpt, device=device, resolve=resolve_path)
        prior.sampling = SamplingSettings.from_dict(to_plain(cfg.sampling), base=prior.sampling)
    except PriorFormatError as exc:
        raise UserError(str(exc)) from None
    return prior, str(ckpt if ckpt is not None else spec.ckpt)


def generator_entry(cfg: DictConfig, prior: ScorePrior) -> dict[str, Any]:
    """The generator to sample with: the one selected on the command line, else the one the prior names."""
    if cfg.get("generator") is not None:
        return to_plain(cfg.generator)
    record = prior.generator or {}
    if record.get("ckpt") is not None or record.get("init"):
        return record
    name = record.get("name")
    path = ROOT / "configs" / "generator" / f"{name}.yaml"
    if name is None or not path.is_file():
        raise UserError(f"the prior names generator {name!r}, which has no configs/generator entry; "
                        "pass generator=<name>")
    return to_plain(OmegaConf.load(path))


def evaluate(cfg: DictConfig) -> None:
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    if int(cfg.sample_batch_size) < 1 or int(cfg.total_batches) < 1:
        raise UserError("sample_batch_size and total_batches must be >= 1")
    seed_everything(cfg.seed)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if (out_dir / "metrics.json").exists():
        raise UserError(f"{out_dir} already holds results; choose another hydra.run.dir")
    prior, source = load_prior(cfg, device)
    entry = generator_entry(cfg, prior)
    try:
        G, proxy = build_generator(entry, device, resolve=resolve_path)
        shape = layer_sample_shape(G, prior.layer)
        renderer = LayerRenderer(G, proxy, prior.layer, str(cfg.noise_mode))
    except (GeneratorConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if tuple(shape) != prior.image_shape:
        raise UserError(f"the prior expects layer-{prior.layer} variables of shape {list(prior.image_shape)}, "
                        f"generator {entry.get('name')!r} gives {list(shape)}")
    hot = prior.sampling.hot_sampler
    mode = "hot" if hot else "cold"
    log.info("%s start with %r from %s on generator %r", mode, prior, source, entry.get("name"))

    gen = torch.Generator().manual_seed(int(cfg.seed))
    batches, starts, results = [], [], []
    for b in range(int(cfg.total_batches)):
        batch = sample_batch(prior, renderer, int(cfg.sample_batch_size), hot, gen, progress=bool(cfg.progress))
        n = batch.start_images.shape[0]
        save_grid(batch.start_images, out_dir / f"batch{b:03d}_start.png", nrow=n)
        save_grid(batch.result_images, out_dir / f"batch{b:03d}_result.png", nrow=n)
        save_grid(torch.cat([batch.start_images, batch.result_images]), out_dir / f"batch{b:03d}_start_vs_result.png",
                  nrow=n)
        moved = movement(batch.start_latents, batch.result_latents)
        batches.append({"batch": b, **moved, "prior_seconds": batch.seconds})
        log.info("batch %d: latents moved by %.4g on average (L2), relative change %.4g, %.2fs in the prior",
                 b, moved["mean_l2"], moved["relative_change"], batch.seconds)
        starts.append(batch.start_latents)
        results.append(batch.result_latents)

    start, result = torch.cat(starts), torch.cat(results)
    metrics = {
        "mode": mode, "layer": prior.layer, "prior": source, "generator": entry.get("name"),
        "samples": int(start.shape[0]), "sampling": to_plain(vars(prior.sampling)),
        **movement(start, result),
        "start_stats": moments(start), "result_stats": moments(result), "batches": batches,
    }
    save_json(metrics, out_dir / "metrics.json")
    if cfg.save_latents:
        torch_save_new({"layer": prior.layer, "start": start, "result": result}, out_dir / "latents.pt")
    log.info("%s start, %d samples: mean L2 move %.4g, relative change %.4g; images and metrics.json in %s",
             mode, start.shape[0], metrics["mean_l2"], metrics["relative_change"], out_dir)


register_resolvers()


@hydra.main(config_path="configs", config_name="eval_score_based", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_main(evaluate, cfg)


if __name__ == "__main__":
    check_command_line("eval_score_based", sys.argv[1:])
    main()
