"""Custom ops of the StyleGAN2 generator: ``upfirdn2d``, ``bias_act``, ``conv2d_resample``, ``fma``.

Each op has a PyTorch path tuned for CPUs and, for GPU tensors, this project's own CUDA kernels
(``upfirdn2d``, ``bias_act``) compiled on first use; the public signatures follow NVIDIA's
stylegan2-ada-pytorch so that network code written against them runs unchanged.
"""
