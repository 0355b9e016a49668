// bias_act on the GPU: one element per thread (grid-stride loop); the arithmetic is in bias_act_kernel.h.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bias_act_kernel.h"

namespace {

template <typename scalar_t>
__global__ void bias_act_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, const scalar_t* __restrict__ g,
                                const sgilo::BiasActArgs a) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.total; i += stride) {
    out[i] = static_cast<scalar_t>(sgilo::bias_act_point<scalar_t, acc_t>(x, b, g, a, i));
  }
}

}  // namespace

// x, g (if defined) and the result share one dense memory layout (arranged by bias_act.cpp); b is contiguous.
torch::Tensor bias_act_cuda(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& g, int64_t mode,
                            int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  const c10::cuda::OptionalCUDAGuard device_guard(x.device());
  torch::Tensor out = torch::empty_like(x);
  if (x.numel() == 0) return out;
  const sgilo::BiasActArgs a = sgilo::bias_act_prepare(x, mode, dim, act, alpha, gain, clamp);
  const int threads = 256;
  const unsigned int blocks = sgilo::grid_size(a.total, threads);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act_cuda", [&] {
    bias_act_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr,
        g.defined() ? g.data_ptr<scalar_t>() : nullptr, a);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}
