// bias_act on the GPU: one element per thread (grid-stride loop).
//
// Three modes share the kernel so that first- and second-order gradients are exact and consistent:
//   mode 0:  out = clamp(act(x + b) * gain)
//   mode 1:  out = g * gain * act'(x + b)  * [|act(x + b) * gain| <= clamp]
//   mode 2:  out = g * gain * act''(x + b) * [|act(x + b) * gain| <= clamp]
// where g is an incoming gradient. Everything is recomputed from the pre-activation x + b, so only x
// (never the output) has to be kept for the backward pass.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "common.h"

namespace {

// Activation indices; keep in sync with ActivationSpec.cuda_idx in bias_act.py.
enum Act : int { kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5, kElu = 6, kSelu = 7, kSoftplus = 8,
                 kSwish = 9 };

struct BiasActArgs {
  int64_t total;
  int64_t bias_stride;  // memory stride of the bias axis: element at offset i has bias index (i / stride) % len
  int64_t bias_len;
  int act, mode;
  float alpha, gain, clamp;  // clamp < 0: no clamping
};

template <typename T>
__device__ inline T sigmoid_of(T v) { return T(1) / (T(1) + exp(-v)); }

// Value, first and second derivative of the activation at v.
template <typename T>
__device__ inline void activation(int act, T v, T alpha, T& y, T& d1, T& d2) {
  const T selu_scale = T(1.0507009873554804934193349852946);
  const T selu_alpha = T(1.6732632423543772848170429916717);
  switch (act) {
    case kRelu: y = v > T(0) ? v : T(0); d1 = v > T(0) ? T(1) : T(0); d2 = T(0); break;
    case kLrelu: y = v > T(0) ? v : v * alpha; d1 = v > T(0) ? T(1) : alpha; d2 = T(0); break;
    case kTanh: { const T t = tanh(v); y = t; d1 = T(1) - t * t; d2 = T(-2) * t * d1; break; }
    case kSigmoid: { const T s = sigmoid_of(v); y = s; d1 = s * (T(1) - s); d2 = d1 * (T(1) - T(2) * s); break; }
    case kElu:
      if (v > T(0)) { y = v; d1 = T(1); d2 = T(0); } else { const T e = exp(v); y = e - T(1); d1 = e; d2 = e; }
      break;
    case kSelu:
      if (v > T(0)) { y = selu_scale * v; d1 = selu_scale; d2 = T(0); }
      else { const T e = selu_scale * selu_alpha * exp(v); y = e - selu_scale * selu_alpha; d1 = e; d2 = e; }
      break;
    case kSoftplus: {  // log(1 + e^v), linear above 20 like torch.nn.functional.softplus
      const T s = sigmoid_of(v);
      y = v > T(20) ? v : log1p(exp(v)); d1 = s; d2 = s * (T(1) - s); break;
    }
    case kSwish: {
      const T s = sigmoid_of(v);
      y = v * s; d1 = s * (T(1) + v * (T(1) - s)); d2 = s * (T(1) - s) * (T(2) + v * (T(1) - T(2) * s)); break;
    }
    default: y = v; d1 = T(1); d2 = T(0); break;  // linear
  }
}

template <typename scalar_t>
__global__ void bias_act_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, const scalar_t* __restrict__ g, const BiasActArgs a) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const acc_t alpha = static_cast<acc_t>(a.alpha), gain = static_cast<acc_t>(a.gain);
  const acc_t clamp = static_cast<acc_t>(a.clamp);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.total; i += stride) {
    acc_t v = static_cast<acc_t>(x[i]);
    if (b != nullptr) v += static_cast<acc_t>(b[(i / a.bias_stride) % a.bias_len]);
    acc_t y, d1, d2;
    activation<acc_t>(a.act, v, alpha, y, d1, d2);
    y *= gain;
    acc_t r;
    if (a.mode == 0) {
      r = (clamp >= acc_t(0)) ? (y > clamp ? clamp : (y < -clamp ? -clamp : y)) : y;
    } else {
      const bool inside = clamp < acc_t(0) || (y <= clamp && y >= -clamp);
      r = inside ? static_cast<acc_t>(g[i]) * gain * (a.mode == 1 ? d1 : d2) : acc_t(0);
    }
    out[i] = static_cast<scalar_t>(r);
  }
}

}  // namespace

// x, g (if defined) and the result share one dense memory layout (checked by the caller); b is contiguous.
torch::Tensor bias_act_cuda(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& g, int64_t mode,
                            int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  const c10::cuda::OptionalCUDAGuard device_guard(x.device());
  torch::Tensor out = torch::empty_like(x);
  if (x.numel() == 0) return out;
  BiasActArgs a;
  a.total = x.numel();
  a.bias_stride = x.stride(dim);
  a.bias_len = x.size(dim);
  a.act = static_cast<int>(act);
  a.mode = static_cast<int>(mode);
  a.alpha = static_cast<float>(alpha);
  a.gain = static_cast<float>(gain);
  a.clamp = static_cast<float>(clamp);
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
