"""Score-based priors: SDEs, the SGILO ViT, denoising score matching, PC/ODE samplers and ODE likelihoods."""

from .likelihood import bits_per_dim, ode_log_likelihood
from .losses import ExponentialMovingAverage, get_sde_loss_fn, sde_loss, train_step
from .models import ViT, get_score_fn, load_score_state_dict, published_vit, small_vit, strip_prefix
from .samplers import CORRECTORS, PREDICTORS, hot_sampler, ode_sampler, pc_sampler
from .sde import SDE, VESDE, VPSDE, SubVPSDE, get_sde, subVPSDE

__all__ = [
    "CORRECTORS",
    "PREDICTORS",
    "SDE",
    "VESDE",
    "VPSDE",
    "ExponentialMovingAverage",
    "SubVPSDE",
    "ViT",
    "bits_per_dim",
    "get_score_fn",
    "get_sde",
    "get_sde_loss_fn",
    "hot_sampler",
    "load_score_state_dict",
    "ode_log_likelihood",
    "ode_sampler",
    "pc_sampler",
    "published_vit",
    "sde_loss",
    "small_vit",
    "strip_prefix",
    "subVPSDE",
    "train_step",
]
