"""Train a small StyleGAN2 with adaptive discriminator augmentation on an image folder or dataset zip.

    python train_stylegan.py                                  # the emoji faces (prepared on first use), 32 px
    python train_stylegan.py data.train=~/datasets/cats.zip data.val=null data.held_out=null
    python train_stylegan.py ada.target=null                  # no augmentation
    python train_stylegan.py steps=20                         # a smoke run (seconds on CPU)
    python train_stylegan.py resume=outputs/train_stylegan/<run>/checkpoints/step_0000500.pt steps=4000

Data: a folder or zip in NVIDIA's dataset_tool layout, or ``emoji:<split>`` (:mod:`data.emoji`). Writes into the
Hydra run directory: ``checkpoints/step_*.pt`` (resumable: G, D, G_ema, optimisers, ADA state, step, RNG),
``samples/step_*.png`` (G_ema on fixed z) and ``reals.png``, ``train_log.csv`` (losses, R1, ADA's p and r_t, SWD
to the validation images; + TensorBoard when installed), ``generator.pt`` (the final G_ema, for
``stylegan.load_generator``) and ``summary.json`` (+ SWD to the held-out images and its floor, training images
against held-out ones). The loop itself lives in :mod:`stylegan.training`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from data import open_images
from stylegan.discriminator import Discriminator
from stylegan.loading import save_generator
from stylegan.networks import Generator
from stylegan.swd import swd
from stylegan.training import GANSettings, StyleGANTrainer, generate, swd_metric
from utils import (
    ScalarLog,
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
            style_mixing_prob=float(cfg.style_mixing_prob),
            ada_target=None if cfg.ada.target is None else float(cfg.ada.target), ada_interval=int(cfg.ada.interval),
            ada_kimg=float(cfg.ada.kimg), ada_p=float(cfg.ada.p))
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
    res = int(cfg.resolution)
    try:
        train_data = open_images(d.train, res)
        val = open_images(d.val, res, max_images=int(cfg.metric.num_images)) if d.val else None
        held_out = open_images(d.held_out, res, max_images=int(cfg.metric.num_images)) if d.held_out else None
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

    swd_kwargs = dict(patches_per_image=int(cfg.metric.patches_per_image),
                      min_resolution=int(cfg.metric.min_resolution))
    # The SWD reference during training: the validation images (else a fixed subset of the training images).
    reference = (val.batch(range(len(val))) if val is not None
                 else _fixed_images(train_data, int(cfg.metric.num_images)))
    # How far two real image sets are apart: the floor a perfect generator would reach.
    floors = {name: _floor(ref, train_data, swd_kwargs) for name, ref in (("val", val), ("held_out", held_out))
              if ref is not None}
    save_grid(train_data.batch(range(0, len(train_data), max(1, len(train_data) // int(cfg.grid_size)))
                               [: int(cfg.grid_size)]), out_dir / "reals.png", overwrite=True)
    log.info("G %d / D %d parameters, %d px, batch %d, %d training images (%s), SWD floors %s, ADA %s, run dir %s",
             sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters()), res,
             settings.batch_size, len(train_data), d.train, {k: round(v, 4) for k, v in floors.items()},
             "off" if settings.ada_target is None else f"target {settings.ada_target}", out_dir)

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
               "train": str(d.train), "num_train": len(train_data), "ada_p": float(trainer.augment.p),
               **{f"swd_{k}_floor": v for k, v in floors.items()}, **stats}
    if held_out is not None:  # the number to compare with the floor: G_ema against images no setting saw
        summary["swd_held_out"] = swd_metric(trainer.G_ema, held_out.batch(range(len(held_out))), SAMPLE_SEED,
                                             device, **swd_kwargs)()["swd"]
    save_json(summary, out_dir / "summary.json")
    log.info("saved %s (%.2f steps/s, %.3f kimg/s over %d steps; SWD to val %.4f; to held-out %.4f, floor %.4f)",
             path, stats["steps_per_second"], stats["kimg_per_second"], stats["steps"], stats.get("swd", float("nan")),
             summary.get("swd_held_out", float("nan")), floors.get("held_out", float("nan")))


def _fixed_images(data, count: int) -> torch.Tensor:
    """``count`` images (count, 3, R, R) of ``data`` in a fixed seeded order (the same in every run)."""
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(SAMPLE_SEED))[:count]
    return data.batch(pick)


def _floor(reference, train_data, swd_kwargs: dict) -> float:
    """SWD between ``reference`` and as many fixed training images: what a perfect generator would score."""
    return swd(reference.batch(range(len(reference))), _fixed_images(train_data, len(reference)), seed=SAMPLE_SEED,
               **swd_kwargs)["swd"]


register_resolvers()


@hydra.main(config_path="configs", config_name="train_stylegan", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_main(train, cfg)


if __name__ == "__main__":
    check_command_line("train_stylegan", sys.argv[1:])
    main()
