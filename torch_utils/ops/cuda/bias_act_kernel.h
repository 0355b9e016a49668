// Per-element arithmetic of bias_act, shared by the CUDA kernel (bias_act.cu) and by a CPU emulation used
// in the tests, so that the exact kernel arithmetic can be checked on machines without a GPU.
//
// Three modes:
//   mode 0:  out = clamp(act(x + b) * gain)
//   mode 1:  out = g * gain * act'(x + b)  * [|act(x + b) * gain| <= clamp]
//   mode 2:  out = g * gain * act''(x + b) * [|act(x + b) * gain| <= clamp]
// where g is an incoming gradient. Everything is recomputed from the pre-activation x + b, so only x
// (never the output) has to be kept for the backward pass.
#pragma once

#include <math.h>

#include "common.h"

namespace sgilo {

// Activation indices; keep in sync with ActivationSpec.cuda_idx in bias_act.py.
enum Act : int { kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5, kElu = 6, kSelu = 7, kSoftplus = 8,
                 kSwish = 9 };

struct BiasActArgs {
  int64_t total;
  int64_t bias_stride;  // memory stride of the bias axis: element at offset i has bias index (i / stride) % len
  int64_t bias_len;
  int act, mode;
  double alpha, gain, clamp;  // clamp < 0: no clamping; cast to the accumulation type in the kernel
};

// Precision-matched math: float stays float, double stays double (host and device).
C10_HOST_DEVICE inline float exp_(float v) { return expf(v); }
C10_HOST_DEVICE inline double exp_(double v) { return exp(v); }
C10_HOST_DEVICE inline float tanh_(float v) { return tanhf(v); }
C10_HOST_DEVICE inline double tanh_(double v) { return tanh(v); }
C10_HOST_DEVICE inline float log1p_(float v) { return log1pf(v); }
C10_HOST_DEVICE inline double log1p_(double v) { return log1p(v); }

template <typename T>
C10_HOST_DEVICE inline T sigmoid_(T v) { return T(1) / (T(1) + exp_(-v)); }

// Value, first and second derivative of the activation at v.
template <typename T>
C10_HOST_DEVICE inline void activation(int act, T v, T alpha, T& y, T& d1, T& d2) {
  const T selu_scale = T(1.0507009873554804934193349852946);
  const T selu_alpha = T(1.6732632423543772848170429916717);
  switch (act) {
    case kRelu: y = v > T(0) ? v : T(0); d1 = v > T(0) ? T(1) : T(0); d2 = T(0); break;
    case kLrelu: y = v > T(0) ? v : v * alpha; d1 = v > T(0) ? T(1) : alpha; d2 = T(0); break;
    case kTanh: { const T t = tanh_(v); y = t; d1 = T(1) - t * t; d2 = T(-2) * t * d1; break; }
    case kSigmoid: { const T s = sigmoid_(v); y = s; d1 = s * (T(1) - s); d2 = d1 * (T(1) - T(2) * s); break; }
    case kElu:
      if (v > T(0)) { y = v; d1 = T(1); d2 = T(0); } else { const T e = exp_(v); y = e - T(1); d1 = e; d2 = e; }
      break;
    case kSelu:
      if (v > T(0)) { y = selu_scale * v; d1 = selu_scale; d2 = T(0); }
      else { const T e = selu_scale * selu_alpha * exp_(v); y = e - selu_scale * selu_alpha; d1 = e; d2 = e; }
      break;
    case kSoftplus: {  // log(1 + e^v), linear above 20 like torch.nn.functional.softplus
      const T s = sigmoid_(v);
      y = v > T(20) ? v : log1p_(exp_(v)); d1 = s; d2 = s * (T(1) - s); break;
    }
    case kSwish: {
      const T s = sigmoid_(v);
      y = v * s; d1 = s * (T(1) + v * (T(1) - s)); d2 = s * (T(1) - s) * (T(2) + v * (T(1) - T(2) * s)); break;
    }
    default: y = v; d1 = T(1); d2 = T(0); break;  // linear
  }
}

// Result for element number `i` (memory order) of x; b and g may be null.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t bias_act_point(const scalar_t* x, const scalar_t* b, const scalar_t* g,
                                            const BiasActArgs& a, int64_t i) {
  acc_t v = static_cast<acc_t>(x[i]);
  if (b != nullptr) v += static_cast<acc_t>(b[(i / a.bias_stride) % a.bias_len]);
  acc_t y, d1, d2;
  activation<acc_t>(a.act, v, static_cast<acc_t>(a.alpha), y, d1, d2);
  const acc_t gain = static_cast<acc_t>(a.gain), clamp = static_cast<acc_t>(a.clamp);
  y *= gain;
  if (a.mode == 0) {
    if (clamp >= acc_t(0)) y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
    return y;
  }
  const bool inside = clamp < acc_t(0) || (y <= clamp && y >= -clamp);
  return inside ? static_cast<acc_t>(g[i]) * gain * (a.mode == 1 ? d1 : d2) : acc_t(0);
}

// Fill in the kernel arguments (host code). x must be dense (any axis order), see bias_act.cpp.
inline BiasActArgs bias_act_prepare(const torch::Tensor& x, int64_t mode, int64_t dim, int64_t act, double alpha,
                                    double gain, double clamp) {
  BiasActArgs a;
  a.total = x.numel();
  a.bias_stride = x.stride(dim);
  a.bias_len = x.size(dim);
  a.act = static_cast<int>(act);
  a.mode = static_cast<int>(mode);
  a.alpha = alpha;
  a.gain = gain;
  a.clamp = clamp;
  return a;
}

}  // namespace sgilo
