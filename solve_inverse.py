"""Solve imaging inverse problems with a generator and its layer priors: CSGM, ILO or SGILO (DESIGN §2, §4).

    python solve_inverse.py                                   # demo: 4 held-out emoji of images/examples/, CPU
    python solve_inverse.py task=super_resolution method=ilo input_folders=[my/photos]
    python solve_inverse.py input_source=generator num_images=8                # in-range references G(z)
    python solve_inverse.py generator=ffhq method=sgilo task=inpainting input_folders=[my/photos] device=cuda
    python solve_inverse.py -m task=inpainting,denoising method=csgm,ilo,sgilo # a sweep (+ a page comparing it)
    torchrun --nproc_per_node=2 solve_inverse.py ...          # images sharded over processes; rank 0 merges

Writes into the Hydra run directory (all updated after every batch, so a crash or Ctrl-C keeps what was done):
``metrics.json`` (per image and mean), ``report.html`` (tiles, metrics, curves and config on one offline page),
``images/<name>/{reference,measurement,naive,round<r>,final,grid}.png`` (+ ``mean.png``/``std.png`` with
``chains`` > 1, ``latents_layer<r>.pt`` with ``save_latent``), ``grid.png`` (one row per image: reference |
measurement | naive | round 0..R-1 | final | std) and TensorBoard curves in ``tensorboard/``. The work itself
lives in :mod:`inverse.run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from inverse.run import prepare, solve_all, summary
from utils import check_command_line, register_resolvers, run_main


def override_keys() -> set[str]:
    """The config keys set on the command line (``key=value``, ``+key=``, ``++key=``)."""
    overrides = HydraConfig.get().overrides.task
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def solve_inverse(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    run = prepare(cfg, Path(hc.runtime.output_dir), folders_given="input_folders" in override_keys(),
                  sweep_dir=sweep_dir)
    records = solve_all(run)
    if records is not None:
        print(summary(run, records), flush=True)


register_resolvers()


@hydra.main(config_path="configs", config_name="solve_inverse", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_main(solve_inverse, cfg)
    except KeyboardInterrupt:
        print("error: interrupted; finished images and their metrics are kept", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    check_command_line("solve_inverse", sys.argv[1:])
    main()
