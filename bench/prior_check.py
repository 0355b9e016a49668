"""Diagnostics of the layer priors: does each prior know its layer's distribution, and does its step pull back?

    python bench/prior_check.py                                  # the demo's learned and Gaussian priors
    python bench/prior_check.py --priors demo_layer2 demo_gauss_layer2 --samples 128 --quick

For every prior (a configs/trained_networks entry) on fresh in-range variables x0 = G1(z) (z seeded apart from
any training stream; for a prior on pixels, ``layer: -1``, the validation images, and G2 is the identity), in the
prior's normalised model space:

1. **Denoising.** At t in --times: x_t = α_t x0 + σ_t ε, Tweedie's x̂0 = (x_t + σ_t² s(x_t, t)) / α_t; the MSE of
   x̂0 per element next to the identity x_t / α_t (MSE σ_t²/α_t²) and to the exact best Gaussian of the same
   samples (the Gaussian priors are that baseline; a learned prior that loses to them is not learning the layer).
2. **Samples.** SWD (stylegan.swd) of G2(hot samples) and G2(cold samples, --cold-steps reverse steps) to the
   held-out images, next to G(z) itself, with the same image counts.
3. **Pull-back.** x_s = x0 + s·std(x0)·ξ for s in --perturb, then k = --pull-steps prior steps as the solver
   makes them (``prior_step: score``: x += T·score_eps·s(x, t_hot); ``pc``: x += T·Δ_hot) without noise: the
   relative distance ‖x_k − x0‖ / ‖x_s − x0‖ (< 1: the step pulls back toward the data) and PSNR of G2(x_k)
   against G2(x0) next to that of G2(x_s).

Writes ``bench/results/prior_check.{json,md}`` (``--out``). The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import ImageDataset  # noqa: E402
from score.evaluation import LayerRenderer  # noqa: E402
from score.prior import ScorePrior, parse_prior_spec  # noqa: E402
from score.sde import get_sde, marginal_coefficients  # noqa: E402
from stylegan.build import build_generator  # noqa: E402
from stylegan.swd import swd  # noqa: E402
from utils import ROOT, resolve_path  # noqa: E402

DEFAULT_PRIORS = ["demo_latent", "demo_gauss_latent", "demo_layer1", "demo_gauss_layer1", "demo_layer2",
                  "demo_gauss_layer2", "demo_layer3", "demo_gauss_layer3"]
SEED = 9_000_001  # the z of the checks: no training stream derives this seed


def load(name: str, device: torch.device) -> ScorePrior:
    conf = OmegaConf.load(ROOT / "configs" / "trained_networks" / f"{name}.yaml")
    return ScorePrior.from_spec(parse_prior_spec(conf), device=device, resolve=resolve_path)


@torch.no_grad()
def denoising(prior: ScorePrior, u0: torch.Tensor, times: list[float], batch: int) -> dict[str, Any]:
    """Tweedie MSE per element at each t (mean over the samples) and the identity baseline."""
    gen = torch.Generator().manual_seed(SEED + 1)
    out = {}
    for t in times:
        a, s = marginal_coefficients(prior.sde, t)
        err = 0.0
        for i in range(0, u0.shape[0], batch):
            x0 = u0[i : i + batch]
            xt = a * x0 + s * torch.randn(x0.shape, generator=gen).to(x0)
            x0_hat = (xt + s**2 * prior.score(xt, t)) / a
            err += float((x0_hat - x0).square().sum())
        out[f"{t:g}"] = {"tweedie_mse": err / u0.numel(), "identity_mse": s**2 / a**2}
    return out


@torch.no_grad()
def prior_steps(prior: ScorePrior, v: torch.Tensor, k: int, temperature: float, step: str,
                score_eps: float) -> torch.Tensor:
    for _ in range(k):
        delta = prior.hot_delta(v) if step == "pc" else score_eps * prior.variable_score(v)
        v = v + temperature * delta
    return v


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).square().flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(4.0 / mse)).mean())


def check_prior(name: str, G: Any, proxy: Any, reference: torch.Tensor, n_img: int,
                args: argparse.Namespace) -> dict[str, Any]:
    """The three diagnostics of one prior (module docstring)."""
    device = torch.device("cpu")
    start = time.perf_counter()
    prior = load(name, device)
    gen = torch.Generator().manual_seed(SEED)
    if prior.layer == -1:  # a prior on pixels: the validation images are its unseen data, the image is the variable
        val = ImageDataset(ROOT / "images" / "val", G.img_resolution)
        v0 = val.batch(list(range(min(args.samples, len(val)))))
        renderer = None
    else:
        renderer = LayerRenderer(G, proxy, prior.layer, noise_mode="const")
        ws, v0, img, _ = renderer.start(args.samples, gen)
    u0 = prior.to_model_space(v0)
    res: dict[str, Any] = {"layer": prior.layer, "kind": type(prior.model).__name__,
                           "denoising": denoising(prior, u0, args.times, args.batch)}
    with torch.no_grad():

        def image(v: torch.Tensor) -> torch.Tensor:
            if renderer is None:
                return v.clamp(-1, 1)
            return torch.cat([renderer.render(ws[i : i + args.batch], v[i : i + args.batch],
                                              None if img is None else img[i : i + args.batch], None)
                              for i in range(0, args.samples, args.batch)])

        clean = image(v0)
        pulls = []
        std = float(v0.std())
        for s in args.perturb:
            noisy = v0 + s * std * torch.randn(v0.shape, generator=gen)
            pulled = torch.cat([prior_steps(prior, noisy[i : i + args.batch], args.pull_steps, args.temperature,
                                            args.prior_step, args.score_eps)
                                for i in range(0, v0.shape[0], args.batch)])
            moved = float((pulled - v0).flatten(1).norm(dim=1).mean() / (noisy - v0).flatten(1).norm(dim=1).mean())
            pulls.append({"s": s, "relative_distance": moved, "psnr_perturbed": psnr(image(noisy), clean),
                          "psnr_pulled": psnr(image(pulled), clean)})
        res["pull_back"] = pulls
        hot = torch.cat([prior.naturalize(v0[i : i + args.batch]) for i in range(0, v0.shape[0], args.batch)])
        res["swd_hot"] = swd(reference, image(hot)[:n_img])["swd"]
        if not args.quick:
            sde_cfg = prior.sde.config()
            prior.sde = get_sde(**{**sde_cfg, "N": args.cold_steps})
            cold_v = torch.cat([prior.sample(min(args.batch, v0.shape[0] - i), progress=False)
                                for i in range(0, v0.shape[0], args.batch)])
            prior.sde = get_sde(**sde_cfg)
            res["swd_cold"] = swd(reference, image(cold_v)[:n_img])["swd"]
    res["seconds"] = time.perf_counter() - start
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors", nargs="+", default=DEFAULT_PRIORS)
    parser.add_argument("--samples", type=int, default=256, help="in-range variables per check")
    parser.add_argument("--times", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.3])
    parser.add_argument("--perturb", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--pull-steps", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.1, help="the solver's gen_temperature")
    parser.add_argument("--prior-step", default="pc", choices=("pc", "score"))
    parser.add_argument("--score-eps", type=float, default=1e-3)
    parser.add_argument("--cold-steps", type=int, default=200, help="reverse-SDE steps of the cold samples")
    parser.add_argument("--quick", action="store_true", help="skip the (slow) cold samples")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "prior_check"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    entry = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "generator" / "demo.yaml"))
    G, proxy = build_generator(entry, device, resolve=resolve_path)
    held = ImageDataset(ROOT / "images" / "held_out", G.img_resolution)
    n_img = min(args.samples, len(held))
    reference = held.batch(list(range(len(held))))[:n_img]
    with torch.no_grad():
        zs = torch.randn(n_img, G.z_dim, generator=torch.Generator().manual_seed(SEED + 7))
        gz = G.synthesis(G.mapping(zs, None), noise_mode="const").clamp(-1, 1)
    results: dict[str, Any] = {"generator": "demo", "samples": args.samples, "swd_G(z)_vs_held_out":
                               swd(reference, gz)["swd"], "priors": {}}
    print(f"SWD G(z) vs held-out ({n_img} images): {results['swd_G(z)_vs_held_out']:.4f}", flush=True)

    for name in args.priors:
        res = check_prior(name, G, proxy, reference, n_img, args)
        results["priors"][name] = res
        d = res["denoising"]
        print(f"{name}: " + ", ".join(f"t={t} mse {d[t]['tweedie_mse']:.4g} (id {d[t]['identity_mse']:.3g})"
                                      for t in d)
              + "; pull " + ", ".join(f"s={p['s']:g}: {p['relative_distance']:.3f} "
                                      f"({p['psnr_perturbed']:.1f}->{p['psnr_pulled']:.1f} dB)"
                                      for p in res["pull_back"])
              + f"; swd hot {res['swd_hot']:.4f}" + (f" cold {res['swd_cold']:.4f}" if "swd_cold" in res else "")
              + f" [{res['seconds']:.0f} s]", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, args))
    print(json.dumps({k: v for k, v in results.items() if k != "priors"} | {"priors": list(results["priors"])}))


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    times = [f"{t:g}" for t in args.times]
    lines = [f"# Prior diagnostics (demo generator, {args.samples} in-range samples per check)", "",
             f"Command: `python bench/prior_check.py {' '.join(sys.argv[1:])}`", "",
             "## Denoising: Tweedie MSE per element in model space (identity baseline in brackets)", "",
             "| prior | layer | kind | " + " | ".join(f"t={t}" for t in times) + " |",
             "|---|---|---|" + "---|" * len(times)]
    for name, r in results["priors"].items():
        d = r["denoising"]
        lines.append(f"| {name} | {r['layer']} | {r['kind']} | "
                     + " | ".join(f"{d[t]['tweedie_mse']:.4g} ({d[t]['identity_mse']:.3g})" for t in times) + " |")
    lines += ["", f"## Pull-back ({args.pull_steps} `{args.prior_step}` steps at temperature {args.temperature}): "
              "relative distance to x0; PSNR of G2(x) vs G2(x0), perturbed → pulled", "",
              "| prior | " + " | ".join(f"s={s:g}" for s in args.perturb) + " |", "|---|" + "---|" * len(args.perturb)]
    for name, r in results["priors"].items():
        lines.append(f"| {name} | " + " | ".join(f"{p['relative_distance']:.3f} ({p['psnr_perturbed']:.1f} → "
                                                 f"{p['psnr_pulled']:.1f} dB)" for p in r["pull_back"]) + " |")
    lines += ["", f"## Samples: SWD to the held-out images (G(z) itself: {results['swd_G(z)_vs_held_out']:.4f})", "",
              "| prior | hot | cold |", "|---|---|---|"]
    for name, r in results["priors"].items():
        cold = r.get("swd_cold")
        lines.append(f"| {name} | {r['swd_hot']:.4f} | {'-' if cold is None else f'{cold:.4f}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
