// Python binding of the upfirdn2d CUDA kernel: argument checks here, the kernel in upfirdn2d.cu.
#include <torch/extension.h>

#include "common.h"

torch::Tensor upfirdn2d_cuda(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x, int64_t up_y,
                             int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                             int64_t pad_y1, bool flip_filter, double gain);

// x: (N, C, H, W) on the GPU, any strides; f: (fh, fw) float32 on the same GPU.
// Returns (N, C, out_h, out_w) in the memory format suggested by x.
static torch::Tensor upfirdn2d(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x, int64_t up_y,
                               int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                               int64_t pad_y1, bool flip_filter, double gain) {
  SGILO_CHECK_CUDA(x);
  SGILO_CHECK_CUDA(f);
  TORCH_CHECK(x.dim() == 4, "x must have shape (N, C, H, W)");
  TORCH_CHECK(f.dim() == 2 && f.scalar_type() == torch::kFloat32, "f must be a 2-D float32 tensor");
  TORCH_CHECK(x.device() == f.device(), "x and f must be on the same device");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "up/down factors must be >= 1");
  TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "empty filter");
  return upfirdn2d_cuda(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample a batch of images (CUDA).");
}
