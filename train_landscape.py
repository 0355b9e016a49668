"""Train the landscape network θ of a generator (inverse/landscape.py).

    python train_landscape.py                                   # demo generator, emoji train split
    python train_landscape.py iterations=600 resume=outputs/train_landscape/<run>/checkpoints/step_000300.pt

Writes into the Hydra run directory: ``checkpoints/step_*.pt`` (resumable; the last one is written at the end),
``landscape.pt`` (θ alone: what ``method=landscape`` reads), ``train_log.csv`` (+ TensorBoard when installed) and
``summary.json``. Use the result with
``python solve_inverse.py method=landscape landscape.ckpt=<run>/landscape.pt``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm.auto import tqdm

from data import open_images
from inverse.landscape import (
    LandscapeFormatError,
    LandscapeSettings,
    LandscapeTrainer,
    describe,
    load_record,
    save,
)
from stylegan.build import GeneratorConfigError, build_generator, generator_record
from utils import (
    ScalarLog,
    UserError,
    check_command_line,
    register_resolvers,
    resolve_device,
    resolve_path,
    run_main,
    save_json,
    seed_everything,
    set_threads,
    to_plain,
)

log = logging.getLogger("train_landscape")


def settings_from(cfg: DictConfig) -> LandscapeSettings:
    settings = LandscapeSettings(
        iterations=cfg.iterations, images=cfg.trajectory_images, trajectory_steps=cfg.trajectory_steps,
        inner_lr=cfg.inner_lr, theta_steps=cfg.theta_steps, theta_batch=cfg.theta_batch, theta_lr=cfg.theta_lr,
        weight_decay=cfg.weight_decay, buffer_size=cfg.buffer_size, hidden=cfg.hidden, depth=cfg.depth)
    try:
        settings.check()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for key in ("log_every", "ckpt_every"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{key} must be an integer >= 0, got {value!r}")
    return settings


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:06d}.pt"


def train(cfg: DictConfig) -> None:
    set_threads(cfg.num_threads)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if any((out_dir / name).exists() for name in ("landscape.pt", "train_log.csv", "checkpoints")):
        raise UserError(f"{out_dir} already holds a training run; choose another hydra.run.dir")
    settings = settings_from(cfg)
    device = resolve_device(cfg.device)
    try:
        record = generator_record(to_plain(cfg.generator))
        G, proxy = build_generator(record, device, resolve=resolve_path)
        dataset = open_images(cfg.images, G.img_resolution, cfg.max_images)
        images = dataset.batch(list(range(len(dataset)))).to(device)
        resume = load_record(resolve_path(cfg.resume)) if cfg.resume else None
    except (GeneratorConfigError, ValueError) as exc:  # LandscapeFormatError is a ValueError
        raise UserError(str(exc)) from None
    if G.img_channels == 1:  # the datasets are RGB
        images = images.mean(1, keepdim=True)
    seed_everything(int(cfg.seed))
    trainer = LandscapeTrainer(G, proxy, images, settings, int(cfg.seed), record)
    if resume is not None:
        if resume.get("generator", {}).get("name") != record["name"]:
            raise UserError(f"resume: the checkpoint is for generator {resume.get('generator', {}).get('name')!r}, "
                            f"this run uses {record['name']!r}")
        try:
            trainer.resume(resume)
        except (LandscapeFormatError, KeyError, RuntimeError, ValueError) as exc:
            raise UserError(f"resume: {str(exc).splitlines()[0]}") from None
        log.info("resumed %s at iteration %d", cfg.resume, trainer.step)
    params = sum(p.numel() for p in trainer.theta.parameters())
    log.info("θ for generator %r: %d parameters; %d train images from %s; run dir %s", record["name"], params,
             images.shape[0], cfg.images, out_dir)
    scalars = ScalarLog(out_dir)
    start, done = time.perf_counter(), 0
    bar = tqdm(range(trainer.step, settings.iterations), desc="landscape", disable=not cfg.progress)
    try:
        for _ in bar:
            stats = trainer.iteration()
            done += 1
            if cfg.log_every and trainer.step % cfg.log_every == 0:
                scalars.log(trainer.step, **stats)
            bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items() if k != "buffer"}, refresh=False)
            if cfg.ckpt_every and trainer.step % cfg.ckpt_every == 0:
                log.info("checkpoint %s", save(trainer.checkpoint(), checkpoint_path(out_dir, trainer.step)))
    finally:
        scalars.close()
    seconds = time.perf_counter() - start
    if not checkpoint_path(out_dir, trainer.step).exists():  # the end is always resumable
        log.info("checkpoint %s", save(trainer.checkpoint(), checkpoint_path(out_dir, trainer.step)))
    path = save(describe(trainer.theta, record, trainer.step), out_dir / "landscape.pt")
    save_json({"landscape": str(path), "generator": record["name"], "iterations": trainer.step,
               "parameters": params, "seconds": seconds,
               "iterations_per_second": done / seconds if seconds > 0 else None}, out_dir / "summary.json")
    log.info("saved %s after %d iterations (%.2f it/s)", path, trainer.step, done / max(seconds, 1e-9))


register_resolvers()


@hydra.main(config_path="configs", config_name="train_landscape", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_main(train, cfg)


if __name__ == "__main__":
    check_command_line("train_landscape", sys.argv[1:])
    main()
