"""Train a small StyleGAN2 on crops of the offline sample photographs.

    python train_stylegan.py                                  # 32 px, small channels, batch 16, 2000 steps
    python train_stylegan.py steps=20                         # a smoke run (seconds on CPU)
    python train_stylegan.py resume=outputs/train_stylegan/<run>/checkpoints/step_0000500.pt steps=4000

Writes into the Hydra run directory: ``checkpoints/step_*.pt`` (resumable: G, D, G_ema, optimisers, step, RNG),
``samples/step_*.png`` (G_ema on fixed z) and ``reals.png``, ``train_log.csv`` (losses, R1, SWD against held-out
crops; + TensorBoard when installed), ``generator.pt`` (the final G_ema, for ``stylegan.load_generator``) and
``summary.json``. The loop itself lives in :mod:`stylegan.training`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dataloaders import PhotoCrops
from stylegan.discriminator import Discriminator
from stylegan.loading import save_generator
from stylegan.networks import Generator
from stylegan.swd import swd
from stylegan.training import GANSettings, StyleGANTrainer, generate, swd_metric
from utils import (
    ScalarLog,
    UserError,
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

log = logging.getLogger("train_stylegan")
SAMPLE_SEED = 123  # fixed z of the sample grids and of the SWD samples (independent of the training RNG)


def _build(cfg: DictConfig) -> tuple[Generator, Discriminator, GANSettings]:
    res = int(cfg.resolution)
    if res < 8 or res & (res - 1):
        raise UserError(f"resolution must be a power of two >= 8, got {res}")
    try:
        settings = GANSettings(
            steps=int(cfg.steps), batch_size=int(cfg.batch_size), g_lr=float(cfg.g_lr), d_lr=float(cfg.d_lr),
            betas=tuple(float(b) for b in cfg.betas), r1_gamma=float(cfg.r1_gamma),
            d_reg_interval=int(cfg.d_reg_interval), ema_kimg=float(cfg.ema_kimg),
            ema_rampup=None if cfg.ema_rampup is None else float(cfg.ema_rampup),
            style_mixing_prob=float(cfg.style_mixing_prob))
        seed_everything(cfg.seed)  # initial weights
        G = Generator(c_dim=0, img_resolution=res, img_channels=3, **to_plain(OmegaConf.to_container(cfg.G)))
        D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, **to_plain(OmegaConf.to_container(cfg.D)))
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad network or optimisation settings: {exc}") from None
    if settings.batch_size % 4 and D.b4.mbstd is not None and (D.b4.mbstd.group_size or 0) > 0:
        raise UserError(f"batch_size must be a multiple of the minibatch-std group (4), got {settings.batch_size}")
    return G, D, settings


def train(cfg: DictConfig) -> None:
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if any((out_dir / name).exists() for name in ("generator.pt", "train_log.csv", "checkpoints")):
        raise UserError(f"{out_dir} already holds a training run; choose another hydra.run.dir")
    G, D, settings = _build(cfg)
    d = cfg.data
    try:
        crops = dict(min_scale=float(d.min_scale), max_scale=float(d.max_scale), short_side=int(d.short_side))
        train_data = PhotoCrops(int(cfg.resolution), "train", length=int(d.length), seed=int(d.seed),
                                flip=bool(d.flip), **crops)
        heldout = PhotoCrops(int(cfg.resolution), "heldout", length=int(cfg.metric.num_images), seed=int(d.seed),
                             flip=False, **crops)
    except ValueError as exc:
        raise UserError(f"data: {exc}") from None
    trainer = StyleGANTrainer(G, D, train_data, settings, device)
    if cfg.resume:
        path = resolve_path(cfg.resume)
        if not path.is_file():
            raise UserError(f"resume: no such file {path}")
        try:
            trainer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"resume {path}: {exc}") from None
        log.info("resumed %s at step %d", path, trainer.step)

    reference = heldout.batch(range(len(heldout)))
    swd_kwargs = dict(patches_per_image=int(cfg.metric.patches_per_image),
                      min_resolution=int(cfg.metric.min_resolution))
    # How far two real image sets are apart: the floor a perfect generator would reach.
    floor = swd(reference, train_data.batch(range(len(reference))), seed=SAMPLE_SEED, **swd_kwargs)["swd"]
    save_grid(train_data.batch(range(int(cfg.grid_size))), out_dir / "reals.png", overwrite=True)
    log.info("G %d / D %d parameters, %d px, batch %d, held-out %s, SWD(train, held-out) %.4f, run dir %s",
             sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters()), cfg.resolution,
             settings.batch_size, ",".join(heldout.source_names()), floor, out_dir)

    def checkpoint(step: int) -> None:
        path = torch_save_new(trainer.state_dict(config=to_plain(OmegaConf.to_container(cfg))),
                              out_dir / "checkpoints" / f"step_{step:07d}.pt")
        log.info("checkpoint %s", path)

    def images(step: int) -> None:
        save_grid(generate(trainer.G_ema, int(cfg.grid_size), SAMPLE_SEED, device=device),
                  out_dir / "samples" / f"step_{step:07d}.png")

    scalars = ScalarLog(out_dir)
    try:
        stats = trainer.fit(
            log=scalars.log, log_every=int(cfg.log_every),
            on_checkpoint=checkpoint, ckpt_every=int(cfg.ckpt_every) or settings.steps,
            on_images=images, image_every=int(cfg.image_every) or settings.steps,
            metric=swd_metric(trainer.G_ema, reference, SAMPLE_SEED, device, **swd_kwargs),
            metric_every=int(cfg.metric.every) or settings.steps, progress=bool(cfg.progress))
    finally:
        scalars.close()
    path = save_generator(trainer.G_ema, out_dir / "generator.pt")
    summary = {"generator": str(path), "step": trainer.step, "kimg": trainer.nimg / 1000,
               "swd_train_vs_heldout": floor,
               "heldout_photos": list(heldout.source_names()), "train_photos": list(train_data.source_names()),
               **stats}
    save_json(summary, out_dir / "summary.json")
    log.info("saved %s (%.2f steps/s, %.3f kimg/s over %d steps; SWD to held-out %.4f, floor %.4f)", path,
             stats["steps_per_second"], stats["kimg_per_second"], stats["steps"], stats.get("swd", float("nan")), floor)


register_resolvers()


@hydra.main(config_path="configs", config_name="train_stylegan", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_main(train, cfg)


if __name__ == "__main__":
    main()
