"""StyleGAN2 for SGILO: the networks (:mod:`stylegan.networks`) and checkpoint loading (:mod:`stylegan.loading`)."""

from stylegan.loading import CheckpointError, UnsafeCheckpointError, load_generator, save_generator

__all__ = ["load_generator", "save_generator", "CheckpointError", "UnsafeCheckpointError"]
