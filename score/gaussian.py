"""A Gaussian layer prior with an exact score: the floor every learned prior has to beat (issue: priors).

The layer variables x0 (in the prior's normalised model space, flattened to D numbers) are modelled as
N(μ, Σ) with a low-rank-plus-diagonal covariance

    Σ = U diag(λ) Uᵀ + diag(d),      U (D, k) the top-k principal directions, d the residual variances.

Under the forward SDE x_t = α_t x0 + σ_t ε, so x_t ~ N(α_t μ, Σ_t) with Σ_t = α_t² Σ + σ_t² I and the exact
score ∇ log p_t(x) = −Σ_t⁻¹ (x − α_t μ), solved with the Woodbury identity (a k×k system per sample):

    Σ_t⁻¹ r = r / e − (U / e) M⁻¹ Uᵀ (r / e),     e = α_t² d + σ_t²,   M = diag(1 / (α_t² λ)) + Uᵀ diag(1/e) U.

:class:`GaussianScoreModel` is an ``nn.Module`` that returns σ_t · Σ_t⁻¹ (x − α_t μ), i.e. what a trained
network predicts (``score = −model(x, t) / σ_t``), so a Gaussian prior is a :class:`score.prior.ScorePrior` like
any other: the same checkpoint format, samplers, hot step and ``prior_step: score``.

    python -m score.gaussian configs/trained_networks/demo_gauss_layer2.yaml checkpoints/demo/gauss_layer2.pt
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from score.sde import SDE, get_sde


class GaussianScoreModel(nn.Module):
    """Exact noise prediction σ_t Σ_t⁻¹ (x − α_t μ) of a low-rank-plus-diagonal Gaussian (module docstring).

    Args:
        width, height, channels: the variable's model-space shape (C, H, W), as for the ViT.
        sde: the forward SDE's config (``SDE.config()``), which fixes α_t and σ_t.
        rank: k, the number of principal directions (0: a diagonal Gaussian).
    """

    def __init__(self, width: int, height: int, channels: int, sde: Mapping[str, Any], rank: int = 32):
        super().__init__()
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self.config = {"width": int(width), "height": int(height), "channels": int(channels), "sde": dict(sde),
                       "rank": int(rank)}
        dim = int(width) * int(height) * int(channels)
        if rank > dim:
            raise ValueError(f"rank {rank} exceeds the dimension {dim}")
        self.sde: SDE = get_sde(**sde)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis", torch.zeros(dim, rank))  # U, orthonormal columns
        self.register_buffer("eigenvalues", torch.ones(rank))  # λ
        self.register_buffer("residual", torch.ones(dim))  # d

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def precision_times(self, r: Tensor, t: Tensor) -> Tensor:
        """Σ_t⁻¹ r for r (N, D) and times t (N,)."""
        alpha, sigma = self._alpha_sigma(t, r)
        return self._woodbury(r, alpha, sigma)[0]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        alpha, sigma = self._alpha_sigma(t, flat)
        out = self._woodbury(flat - alpha[:, None] * self.mean, alpha, sigma)[0] * sigma[:, None]
        return out.reshape(x.shape)

    def marginal_log_density(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """log p_t(x) = log N(x; α_t μ, Σ_t) per sample (N,) and the noise prediction (what ``forward`` returns),
        for x (N, ...) and times t (N,)."""
        n = x.shape[0]
        flat = x.reshape(n, -1)
        alpha, sigma = self._alpha_sigma(t, flat)
        r = flat - alpha[:, None] * self.mean
        w, logdet = self._woodbury(r, alpha, sigma, with_logdet=True)
        log_p = -0.5 * ((r * w).sum(1) + logdet + self.dim * math.log(2 * math.pi))
        return log_p, (w * sigma[:, None]).reshape(x.shape)

    def _woodbury(self, r: Tensor, alpha: Tensor, sigma: Tensor,
                  with_logdet: bool = False) -> tuple[Tensor, Tensor | None]:
        """Σ_t⁻¹ r (module docstring) for α_t, σ_t (N,) of :meth:`_alpha_sigma` and, if asked, log det Σ_t by the
        matrix determinant lemma: Σ log e + Σ log(α_t² λ) + log det M."""
        e = alpha[:, None] ** 2 * self.residual + sigma[:, None] ** 2  # (N, D)
        w = r / e
        logdet = e.log().sum(1) if with_logdet else None
        if self.basis.shape[1] == 0:
            return w, logdet
        u, lam = self.basis, alpha[:, None] ** 2 * self.eigenvalues  # (D, k), (N, k)
        m = torch.diag_embed(1.0 / lam) + u.T @ (u[None] / e[..., None])
        correction = torch.linalg.solve(m, (w @ u)[..., None])[..., 0]  # (N, k)
        if with_logdet:
            logdet = logdet + lam.log().sum(1) + torch.linalg.slogdet(m)[1]
        return w - (correction @ u.T) / e, logdet

    def _alpha_sigma(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        t = t.to(like) if torch.is_tensor(t) else torch.full((like.shape[0],), float(t)).to(like)
        mean, std = self.sde.marginal_prob(torch.ones(t.shape[0], 1, device=like.device, dtype=like.dtype), t)
        return mean[:, 0], std

    @torch.no_grad()
    def fit(self, samples: Tensor, variance_floor: float = 1e-6) -> GaussianScoreModel:
        """Fit μ, U, λ, d to model-space samples (N, C, H, W) (or (N, D)): mean, top-k principal components of
        the centred samples (randomised SVD), residual variance per element (at least ``variance_floor`` times
        the mean variance)."""
        x = samples.reshape(samples.shape[0], -1).double()
        n, dim = x.shape
        if dim != self.dim:
            raise ValueError(f"samples have {dim} numbers each, the model {self.dim}")
        if n < 2:
            raise ValueError("fitting a Gaussian needs at least 2 samples")
        mu = x.mean(0)
        xc = x - mu
        var = xc.square().sum(0) / (n - 1)
        k = self.basis.shape[1]
        if k > 0:
            if k > min(n, dim):
                raise ValueError(f"rank {k} needs at least {k} samples, got {n}")
            if k >= min(n, dim) // 2:
                _, s, vh = torch.linalg.svd(xc, full_matrices=False)
                v = vh.T
            else:
                torch.manual_seed(0)  # pca_lowrank is randomised; a fit is reproducible
                _, s, v = torch.pca_lowrank(xc, q=min(k + 10, min(n, dim)), center=False, niter=4)
            v, lam = v[:, :k], s[:k].square() / (n - 1)
            var = var - (v.square() * lam).sum(1)
            self.basis.copy_(v.float())
            self.eigenvalues.copy_(lam.clamp_min(1e-12).float())
        floor = variance_floor * float(xc.square().mean())
        self.mean.copy_(mu.float())
        self.residual.copy_(var.clamp_min(floor).float())
        return self

    def log_likelihood(self, samples: Tensor) -> Tensor:
        """log N(x; μ, Σ) per sample (N,) at t = 0 (for comparing fits), via the matrix determinant lemma."""
        x = samples.reshape(samples.shape[0], -1).double()
        d, lam, u = self.residual.double(), self.eigenvalues.double(), self.basis.double()
        r = x - self.mean.double()
        w = r / d
        m = torch.diag(1.0 / lam) + u.T @ (u / d[:, None]) if lam.numel() else None
        quad = (r * w).sum(1)
        logdet = d.log().sum()
        if m is not None:
            proj = w @ u
            quad = quad - (proj * torch.linalg.solve(m, proj.T).T).sum(1)
            logdet = logdet + torch.linalg.slogdet(m)[1] + lam.log().sum()
        return (-0.5 * (quad + logdet + self.dim * math.log(2 * math.pi))).float()


class GaussianMixtureScoreModel(nn.Module):
    """The exact noise prediction of a mixture of K low-rank-plus-diagonal Gaussians, one per data source.

    p(x0) = Σ_i w_i N(x0; μ_i, Σ_i), so p_t(x) = Σ_i w_i N(x; α_t μ_i, Σ_t,i) and the score is the
    responsibility-weighted score of the components,

        ∇ log p_t(x) = Σ_i ρ_i(x, t) ∇ log N(x; α_t μ_i, Σ_t,i),   ρ = softmax_i(log w_i + log N_i(x, t)).

    Fitted on several sources at once (``fit([samples_1, ..., samples_K])``; one normalisation for all, set
    by the caller), e.g. G1(z) features and the features of inverted real images: where a point is
    likelier under one source, that source's score pulls it. The weights w are the sources' sample shares.

    Args:
        width, height, channels: the variable's model-space shape (C, H, W).
        sde: the forward SDE's config. rank: every component's covariance rank (see GaussianScoreModel).
        components: K, the number of sources (>= 1).
    """

    def __init__(self, width: int, height: int, channels: int, sde: Mapping[str, Any], rank: int = 32,
                 components: int = 2):
        super().__init__()
        if not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be an integer >= 1, got {components!r}")
        self.config = {"width": int(width), "height": int(height), "channels": int(channels), "sde": dict(sde),
                       "rank": int(rank), "components": components}
        self.parts = nn.ModuleList(GaussianScoreModel(width, height, channels, sde, rank)
                                   for _ in range(components))
        self.register_buffer("log_weights", torch.full((components,), -math.log(components)))

    @torch.no_grad()
    def fit(self, samples: Sequence[Tensor]) -> GaussianMixtureScoreModel:
        """Fit component i on ``samples[i]`` (N_i, C, H, W) (model space); weights ∝ N_i."""
        if isinstance(samples, Tensor) or len(samples) != len(self.parts):
            raise ValueError(f"a mixture of {len(self.parts)} Gaussians is fitted on {len(self.parts)} sample sets "
                             "(one per source)")
        for part, x in zip(self.parts, samples):
            part.fit(x)
        counts = torch.tensor([float(x.shape[0]) for x in samples])
        self.log_weights.copy_((counts / counts.sum()).log())
        return self

    def responsibilities(self, x: Tensor, t: Tensor) -> Tensor:
        """ρ (N, K): the posterior probability of each component given x_t."""
        return self._combine(x, t)[1]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self._combine(x, t)[0]

    def _combine(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        logs, preds = zip(*(part.marginal_log_density(x, t) for part in self.parts))
        rho = torch.softmax(torch.stack(logs, 1) + self.log_weights, dim=1)  # (N, K)
        out = sum(rho[:, i].reshape(-1, *[1] * (x.dim() - 1)) * p for i, p in enumerate(preds))
        return out, rho


def fit_prior_from_config(conf: Mapping[str, Any], num_samples: int, seed: int = 0, batch: int = 512,
                          device: str = "cpu", images: str = "emoji:train",
                          latents: Sequence[str] | None = None) -> Any:
    """A Gaussian :class:`ScorePrior` for the layer a ``trained_networks`` config (``model.name: gaussian``)
    names, fitted on ``num_samples`` G1(z) features of its generator (noise maps 'const', truncation 1) with the
    min-max normalisation of those features. A prior on the image itself (``layer: -1``) is fitted on the
    training images ``images`` (a folder, zip or ``emoji:<split>``; at most ``num_samples``) instead. With
    ``latents`` (files or folders of ``save_latents`` files, e.g. inversions of the train split by
    ``solve_inverse.py save_latent=true``: the published priors' data) it is fitted on those, at most
    ``num_samples`` of them. A mixture (``model.name: gaussian_mixture``, 2 components) is fitted on both
    sources, the G1(z) features and the ``latents``, one component each, with one min-max normalisation of
    their union."""
    from omegaconf import OmegaConf

    from dataloaders import MinMaxNormalizer
    from score.evaluation import LayerRenderer
    from score.prior import PriorFormatError, ScorePrior, parse_prior_spec
    from stylegan.build import build_generator, generator_record, layer_sample_shape
    from utils import ROOT, resolve_path

    spec = parse_prior_spec(conf)
    kind = str(spec.model.get("name", "")).lower()
    if kind not in ("gaussian", "gaussian_mixture"):
        raise PriorFormatError(f"model.name must be gaussian or gaussian_mixture for a fitted Gaussian prior, got "
                               f"{spec.model}")
    mixture = kind == "gaussian_mixture"
    if mixture and (not latents or spec.layer < 1 or int(spec.model.get("components", 2)) != 2):
        raise PriorFormatError("a gaussian_mixture prior is fitted on G1(z) features and --latents, one component "
                               "each: it needs components: 2, a layer >= 1 and --latents")
    if spec.generator_name is None:
        raise PriorFormatError("the config names no generator")
    entry = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "generator" / f"{spec.generator_name}.yaml"))
    G, proxy = build_generator(entry, device, resolve=resolve_path)
    shape = layer_sample_shape(G, spec.layer)

    def generated() -> Tensor:
        renderer = LayerRenderer(G, proxy, spec.layer, noise_mode="const")
        gen = torch.Generator().manual_seed(seed)
        parts = []
        for start in range(0, num_samples, batch):
            _, v, _, _ = renderer.start(min(batch, num_samples - start), gen)
            parts.append(v.cpu())
        return torch.cat(parts)

    sources: list[Tensor] = []
    if mixture:
        sources.append(generated())
    if latents:  # stored latents, e.g. of inverted real images: read and checked as train_score.py reads them
        from dataloaders import latent_from_layout
        from score.train_config import load_data_tensor

        data = load_data_tensor({"source": "latents", "path": list(latents)}, spec.layer, shape, resolve_path)
        sources.append((latent_from_layout(data) if spec.layer == 0 else data)[:num_samples])  # the variables
    elif spec.layer == -1:  # the image itself: real training images, not generator samples
        from data import open_images

        data = open_images(images, G.img_resolution)
        sources.append(data.batch(list(range(min(len(data), num_samples)))))
    else:
        sources.append(generated())
    union = torch.cat(sources)
    normalizer = MinMaxNormalizer(float(union.min()), float(union.max()))
    sde = spec.build_sde()
    model = spec.build_model(shape)
    probe = ScorePrior(model, sde, spec.layer, normalizer, spec.sampling, generator=generator_record(entry))
    in_model_space = [probe.to_model_space(v) for v in sources]
    model.fit(in_model_space if mixture else in_model_space[0])
    probe.step = int(union.shape[0])  # for a fitted prior: the number of samples behind it
    return probe


def main(argv: Sequence[str] | None = None) -> None:
    from omegaconf import OmegaConf

    from score.prior import PriorFormatError

    parser = argparse.ArgumentParser(description="Fit a Gaussian layer prior (model.name: gaussian) on G1(z) "
                                     "features or stored latents, or a two-source mixture (gaussian_mixture) on "
                                     "both, and write it as a score-prior checkpoint (never over a file).")
    parser.add_argument("config", help="a configs/trained_networks YAML with model.name: gaussian")
    parser.add_argument("out", help="checkpoint to write (must not exist)")
    parser.add_argument("--samples", type=int, default=8192,
                        help="G1(z) draws to fit on (with --latents: at most this many stored latents; a "
                             "gaussian_mixture takes this many of each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", default="emoji:train", help="training images of a pixel prior (layer: -1)")
    parser.add_argument("--latents", nargs="+", default=None, metavar="PATH",
                        help="fit on stored latents instead of G1(z): save_latents files or folders holding them "
                             "(e.g. a solve_inverse.py run with save_latent=true)")
    args = parser.parse_args(argv)
    try:
        prior = fit_prior_from_config(OmegaConf.load(args.config), args.samples, args.seed, images=args.images,
                                      latents=args.latents)
        path = prior.save(args.out, for_sampling=True)
    except FileExistsError:
        raise SystemExit(f"error: {args.out} exists; not overwriting it") from None
    except (PriorFormatError, ValueError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {prior!r}")


class GaussianResidualViT(nn.Module):
    """A learned prior that starts as the Gaussian one: noise prediction = Gaussian's exact one + a ViT residual.

    The ViT's output layer starts at zero, so before training the prior *is* the fitted Gaussian (the floor of
    bench/prior_check.py) and denoising score matching only has to learn what is not Gaussian about the layer.
    The Gaussian part is fitted once, before training (``fit``), on samples of the training stream, and then
    stays fixed (buffers, saved with the weights).

    Args:
        width, height, channels: the variable's model-space shape (C, H, W).
        sde: the forward SDE's config. rank: rank of the Gaussian's covariance (see GaussianScoreModel).
        **vit: the ViT's own arguments (patch_size, dim, depth, heads, mlp_dim, dim_head, dropout, ...).
    """

    def __init__(self, width: int, height: int, channels: int, sde: Mapping[str, Any], rank: int = 32,
                 **vit: Any):
        super().__init__()
        from score.models import ViT

        self.config = {"width": int(width), "height": int(height), "channels": int(channels), "sde": dict(sde),
                       "rank": int(rank), **vit}
        self.gaussian = GaussianScoreModel(width, height, channels, sde, rank)
        self.vit = ViT(width=width, height=height, channels=channels, **vit)
        nn.init.zeros_(self.vit.projector.weight)
        nn.init.zeros_(self.vit.projector.bias)

    def fit(self, samples: Tensor) -> GaussianResidualViT:
        self.gaussian.fit(samples)
        return self

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.gaussian(x, t) + self.vit(x, t)


if __name__ == "__main__":
    main()
