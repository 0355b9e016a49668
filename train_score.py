"""Train a score prior on one layer of a generator.

    python train_score.py                                   # demo generator, layer 2, a few hundred CPU steps
    python train_score.py generator=ffhq trained_networks=syn_layer3 batch_size=128 steps=200000
    python train_score.py resume=outputs/train_score/<run>/checkpoints/step_0000100.pt   # same overrides
    torchrun --nproc_per_node=2 train_score.py ...          # DDP (gloo on CPU, NCCL on GPU)

Writes into the Hydra run directory: ``checkpoints/step_*.pt`` (resumable), ``prior.pt`` (final; also
resumable), ``train_log.csv`` (+ TensorBoard when installed) and ``summary.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from score.prior import PriorFormatError, ScorePrior, parse_prior_spec
from score.train_config import (
    TrainConfigError,
    check_resume,
    load_data_tensor,
    make_streams,
    resolve_normalizer,
    settings_from_config,
    stream_layout,
)
from score.trainer import ScoreTrainer, derive_seed, prior_describer
from stylegan.build import GeneratorConfigError, build_generator, generator_record, layer_sample_shape
from utils import (
    ScalarLog,
    UserError,
    check_command_line,
    close_distributed,
    init_distributed,
    register_resolvers,
    resolve_path,
    run_main,
    save_json,
    seed_everything,
    set_threads,
    to_plain,
)

log = logging.getLogger("train_score")
CONFIG_ERRORS = (TrainConfigError, PriorFormatError, GeneratorConfigError)


def train(cfg: DictConfig) -> None:
    set_threads(cfg.num_threads)
    dist_info = init_distributed(cfg.device)
    try:
        _train(cfg, dist_info)
    finally:
        close_distributed()


def _train(cfg: DictConfig, dist_info) -> None:
    if not dist_info.is_main:
        log.setLevel(logging.WARNING)  # one voice in the shared log
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if any((out_dir / name).exists() for name in ("prior.pt", "train_log.csv", "checkpoints")):
        raise UserError(f"{out_dir} already holds a training run; choose another hydra.run.dir")
    device = dist_info.device
    try:
        settings = settings_from_config(cfg)
        spec = parse_prior_spec(cfg.prior)
        gen = generator_record(cfg.generator)
        resume = ScorePrior.load(resolve_path(cfg.resume)) if cfg.resume else None
        G, proxy = build_generator(gen, device, resolve=resolve_path)
        try:
            image_shape = layer_sample_shape(G, spec.layer)
        except ValueError as exc:
            raise TrainConfigError(f"prior.layer: {exc}") from None
        if spec.image_shape is not None and tuple(spec.image_shape) != image_shape:
            raise TrainConfigError(f"prior.image_shape {spec.image_shape} does not match layer {spec.layer} of "
                                   f"generator {gen['name']!r} {list(image_shape)}; pick the matching generator= "
                                   "or set prior.image_shape=null")
        if resume is not None:
            check_resume(resume, spec, image_shape, gen, settings)
        num_streams, ids = stream_layout(cfg.data.streams, dist_info.world_size, dist_info.rank, settings.batch_size)
        data = load_data_tensor(cfg.data, spec.layer, image_shape, resolve_path)
        streams = make_streams(ids, cfg.seed, device, cfg.data, G, proxy, spec.layer, data)
        normalizer = resume.normalizer if resume is not None else resolve_normalizer(
            spec, cfg.seed, int(cfg.norm_samples), device, cfg.data, G, proxy, data)
    except CONFIG_ERRORS as exc:
        raise UserError(str(exc)) from None

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = spec.build_model(image_shape).to(device)
    if hasattr(model, "fit") and resume is None:  # a Gaussian part: fitted once on a dedicated stream, then fixed
        fit_stream = make_streams([0], derive_seed(cfg.seed, 7), device, cfg.data, G, proxy, spec.layer, data)[0]
        model.fit(normalizer.normalize(fit_stream.next(int(cfg.norm_samples))))
        log.info("fitted the Gaussian part of the prior on %d samples", int(cfg.norm_samples))
    sde = spec.build_sde()
    describe = prior_describer(lambda: spec.build_model(image_shape), sde, spec.layer, normalizer, spec.sampling,
                               gen, config=to_plain(cfg))
    trainer = ScoreTrainer(model, sde, streams, ids, num_streams, normalizer, settings, describe,
                           rank=dist_info.rank, world_size=dist_info.world_size)
    if resume is not None:
        try:
            trainer.load_training_state(resume.training, resume.raw_state_dict, resume.step)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"resume: {exc}") from None
        log.info("resumed %s at step %d", cfg.resume, resume.step)

    params = sum(p.numel() for p in model.parameters())
    log.info("layer %d %s of generator %r, %s, %d parameters, %s, %d process(es) x %d stream(s), batch %d, run dir %s",
             spec.layer, list(image_shape), gen["name"], type(model).__name__, params, normalizer,
             dist_info.world_size, len(ids), settings.batch_size, out_dir)
    scalars = ScalarLog(out_dir) if dist_info.is_main else None
    try:
        stats = trainer.fit(
            on_checkpoint=lambda prior, step: log.info("checkpoint %s", prior.save(
                out_dir / "checkpoints" / f"step_{step:07d}.pt")),
            log=scalars.log if scalars is not None else None,
            progress=bool(cfg.progress),
        )
    finally:
        if scalars is not None:
            scalars.close()
    final = trainer.snapshot()
    if dist_info.is_main:
        path = final.save(out_dir / "prior.pt")
        summary = {"prior": str(path), "layer": spec.layer, "image_shape": list(image_shape),
                   "generator": gen["name"], "parameters": params, "batch_size": settings.batch_size,
                   "processes": dist_info.world_size, "step": trainer.step, **stats}
        save_json(summary, out_dir / "summary.json")
        log.info("saved %s (%.2f steps/s over %d steps)", path, stats["steps_per_second"], stats["steps"])


register_resolvers()


@hydra.main(config_path="configs", config_name="train_score", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_main(train, cfg)


if __name__ == "__main__":
    check_command_line("train_score", sys.argv[1:])
    main()
