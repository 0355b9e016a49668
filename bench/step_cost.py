"""Cost of one SGILO step against its floor, in one process.

    python bench/step_cost.py                          # tiny generator, layer 1, batch 4, 'score' prior step
    python bench/step_cost.py --generator ffhq --layer 2 --device cuda --prior-step pc

A step (``inverse.ilo.run_round``) is: generator tail forward from the layer, data loss, prior Δ, backward, Adam,
the Langevin update, projections and the NaN guard. Its floor is what no implementation can skip: the tail
forward + backward (through the mapping proxy, with the same variables requiring gradients) and the score
evaluations the prior step makes (1 for 'score', 2 per hot step for 'pc'). Both are timed as blocks of
``--steps`` iterations, interleaved over ``--repeats`` rounds; the medians are compared. The prior is an
untrained ViT of the tiny prior's architecture (weights do not change the cost). Goal: ratio <= 1.10.
The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders import MinMaxNormalizer  # noqa: E402
from inverse.ilo import ImageRng, LayerPriors, Problem, advance_layer, init_variables, render, run_round  # noqa: E402
from inverse.losses import geocross  # noqa: E402
from inverse.operators import build_operator  # noqa: E402
from inverse.settings import SolverSettings  # noqa: E402
from score.prior import ScorePrior, parse_prior_spec  # noqa: E402
from stylegan.build import build_generator, layer_sample_shape  # noqa: E402
from utils import ROOT, resolve_device, resolve_path  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_prior(layer: int, shape: tuple[int, ...], conf: str, device: torch.device) -> ScorePrior:
    spec = parse_prior_spec(OmegaConf.load(ROOT / "configs" / "trained_networks" / f"{conf}.yaml"))
    torch.manual_seed(0)
    model = spec.build_model(shape)
    return ScorePrior(model.to(device), spec.build_sde(), layer, MinMaxNormalizer(-3.0, 3.0), spec.sampling)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="tiny", help="a configs/generator entry")
    parser.add_argument("--prior-config", default="tiny_layer2", help="architecture of the (untrained) prior")
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="iterations per timed block")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--prior-step", default="score", choices=("score", "pc"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    entry = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "generator" / f"{args.generator}.yaml"))
    G, proxy = build_generator(entry, device, resolve=resolve_path)
    shape = layer_sample_shape(G, args.layer)
    prior = make_prior(args.layer, shape, args.prior_config, device)
    op = build_operator({"operator_type": "inpainting", "mask": "center_box"}, G.img_resolution, device=device)

    r = args.layer
    settings = SolverSettings.build({
        "steps": [0] * r + [args.steps], "lr": 0.05, "vars": "nlg", "geocross": 0.001, "latent_temperature": 0.0,
        "gen_temperature": 0.1, "latent_noise_temp": 0.025, "gen_noise_temp": 0.025, "project_latent": True,
        "project_noises": True, "noises_lookahead": 1, "prior_step": args.prior_step,
    })
    y = op.A(torch.zeros(args.batch, G.img_channels, G.img_resolution, G.img_resolution, device=device))
    problem = Problem(G, proxy, op, y, geocross=geocross)
    priors = LayerPriors(layers={r: prior})
    rng = ImageRng(0, range(args.batch), 1, device)
    v = init_variables(G, args.batch, settings, rng)
    for _ in range(r):
        advance_layer(problem, v, settings)
    failed = torch.zeros(args.batch, dtype=torch.bool, device=device)
    evals = 1 if args.prior_step == "score" else 2 * prior.sampling.hot_steps
    model_input = prior.to_model_space(v.x)
    t = torch.full((args.batch,), prior.sampling.t_hot, device=device)

    def step_block() -> float:
        sync(device)
        start = time.perf_counter()
        run_round(problem, v, r, settings, priors, rng, failed, progress=False)
        sync(device)
        return (time.perf_counter() - start) / args.steps

    def floor_block() -> float:
        z, x = v.z.detach().requires_grad_(True), v.x.detach().requires_grad_(True)
        noises = [n.detach().requires_grad_(i < settings.noises_lookahead + 2 * r) for i, n in enumerate(v.noises)]
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            image = G.synthesis.forward_from(proxy(z), r, x, v.img, noises=noises, noise_mode="const").clamp(-1, 1)
            op.loss(image, y).sum().backward()
            with torch.no_grad():
                for _ in range(evals):
                    prior.score(model_input, t)
        sync(device)
        return (time.perf_counter() - start) / args.steps

    step_block(), floor_block()  # warm-up
    steps, floors = [], []
    for _ in range(args.repeats):
        steps.append(step_block())
        floors.append(floor_block())
    step_s, floor_s = statistics.median(steps), statistics.median(floors)
    with torch.no_grad():
        render(problem, v)  # the state is still a valid image (sanity)
    print(f"{args.generator} layer {r}, batch {args.batch}, prior step {args.prior_step!r} ({evals} score eval(s)), "
          f"{args.threads} thread(s), {device}")
    print(f"step  {step_s * 1e3:8.2f} ms   (min {min(steps) * 1e3:.2f})")
    print(f"floor {floor_s * 1e3:8.2f} ms   (min {min(floors) * 1e3:.2f})")
    print(json.dumps({"step_s": step_s, "floor_s": floor_s, "ratio": step_s / floor_s, "generator": args.generator,
                      "layer": r, "batch": args.batch, "prior_step": args.prior_step, "score_evals": evals,
                      "threads": args.threads, "device": str(device)}))


if __name__ == "__main__":
    main()
