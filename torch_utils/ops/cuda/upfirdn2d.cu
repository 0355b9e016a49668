// upfirdn2d on the GPU: one thread per output sample (grid-stride loop); the arithmetic is in
// upfirdn2d_kernel.h.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "upfirdn2d_kernel.h"

namespace {

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y, const sgilo::FirArgs a) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.total; i += stride) {
    int64_t offset;
    const acc_t v = sgilo::upfirdn2d_point<scalar_t, acc_t>(x, f, a, i, &offset);
    y[offset] = static_cast<scalar_t>(v);
  }
}

}  // namespace

torch::Tensor upfirdn2d_cuda(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x, int64_t up_y,
                             int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                             int64_t pad_y1, bool flip_filter, double gain) {
  const c10::cuda::OptionalCUDAGuard device_guard(x.device());
  const torch::Tensor fc = f.contiguous();
  sgilo::FirArgs a;
  torch::Tensor y = sgilo::upfirdn2d_prepare(x, fc, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1,
                                             flip_filter, gain, &a);
  if (a.total == 0) return y;
  const int threads = 256;
  const unsigned int blocks = sgilo::grid_size(a.total, threads);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, stream>>>(x.data_ptr<scalar_t>(), fc.data_ptr<float>(),
                                                               y.data_ptr<scalar_t>(), a);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}
