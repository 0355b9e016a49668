// Per-sample arithmetic of upfirdn2d, shared by the CUDA kernel (upfirdn2d.cu) and by a CPU emulation
// used in the tests, so that the exact kernel arithmetic can be checked on machines without a GPU.
#pragma once

#include "common.h"

namespace sgilo {

struct FirArgs {
  int64_t total;                   // number of output samples
  int64_t channels, in_h, in_w, out_h, out_w;
  int64_t xs_n, xs_c, xs_h, xs_w;  // input strides (elements)
  int64_t ys_n, ys_c, ys_h, ys_w;  // output strides (elements)
  bool channels_last;              // enumerate outputs in (n, y, x, c) order, matching the memory layout
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int f_w, f_h;
  bool flip_filter;                // true: correlate with f; false: convolve (correlate with flipped f)
  double gain;                     // cast to the accumulation type in the kernel
};

// Output sample number `i` (counted in memory order of the output): its value and its memory offset.
//
// The filter window of output (n, c, oy, ox) starts at m0 = o * down - pad0 in the zero-stuffed, padded
// input. Only taps that land on a real input sample (m0 + k divisible by `up`) contribute, so the loops
// visit ceil(taps / up) taps per axis directly instead of multiplying inserted zeros (polyphase).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t upfirdn2d_point(const scalar_t* x, const float* f, const FirArgs& a, int64_t i,
                                             int64_t* out_offset) {
  int64_t rest = i, n, c, oy, ox;
  if (a.channels_last) {
    c = rest % a.channels; rest /= a.channels;
    ox = rest % a.out_w; rest /= a.out_w;
    oy = rest % a.out_h; n = rest / a.out_h;
  } else {
    ox = rest % a.out_w; rest /= a.out_w;
    oy = rest % a.out_h; rest /= a.out_h;
    c = rest % a.channels; n = rest / a.channels;
  }
  const int64_t my0 = oy * a.down_y - a.pad_y0;  // window start, zero-stuffed coordinates
  const int64_t mx0 = ox * a.down_x - a.pad_x0;
  const int ky_first = static_cast<int>(floor_mod(-my0, a.up_y));
  const int kx_first = static_cast<int>(floor_mod(-mx0, a.up_x));
  const scalar_t* xc = x + n * a.xs_n + c * a.xs_c;
  acc_t acc = 0;
  for (int ky = ky_first; ky < a.f_h; ky += a.up_y) {
    const int64_t my = my0 + ky;
    if (my < 0) continue;
    const int64_t iy = my / a.up_y;
    if (iy >= a.in_h) break;
    const int fy = a.flip_filter ? ky : a.f_h - 1 - ky;
    for (int kx = kx_first; kx < a.f_w; kx += a.up_x) {
      const int64_t mx = mx0 + kx;
      if (mx < 0) continue;
      const int64_t ix = mx / a.up_x;
      if (ix >= a.in_w) break;
      const int fx = a.flip_filter ? kx : a.f_w - 1 - kx;
      acc += static_cast<acc_t>(xc[iy * a.xs_h + ix * a.xs_w]) * static_cast<acc_t>(f[fy * a.f_w + fx]);
    }
  }
  *out_offset = n * a.ys_n + c * a.ys_c + oy * a.ys_h + ox * a.ys_w;
  return acc * static_cast<acc_t>(a.gain);
}

// Allocate the output and fill in the kernel arguments (host code; the filter must be contiguous).
inline torch::Tensor upfirdn2d_prepare(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x, int64_t up_y,
                                       int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                                       int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain, FirArgs* a) {
  const int64_t out_h = (x.size(2) * up_y + pad_y0 + pad_y1 - f.size(0)) / down_y + 1;
  const int64_t out_w = (x.size(3) * up_x + pad_x0 + pad_x1 - f.size(1)) / down_x + 1;
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: empty output");
  const auto fmt = x.suggest_memory_format();
  torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(fmt));
  a->total = y.numel();
  a->channels = x.size(1);
  a->in_h = x.size(2); a->in_w = x.size(3); a->out_h = out_h; a->out_w = out_w;
  a->xs_n = x.stride(0); a->xs_c = x.stride(1); a->xs_h = x.stride(2); a->xs_w = x.stride(3);
  a->ys_n = y.stride(0); a->ys_c = y.stride(1); a->ys_h = y.stride(2); a->ys_w = y.stride(3);
  a->channels_last = (fmt == at::MemoryFormat::ChannelsLast);
  a->up_x = static_cast<int>(up_x); a->up_y = static_cast<int>(up_y);
  a->down_x = static_cast<int>(down_x); a->down_y = static_cast<int>(down_y);
  a->pad_x0 = static_cast<int>(pad_x0); a->pad_y0 = static_cast<int>(pad_y0);
  a->f_w = static_cast<int>(f.size(1)); a->f_h = static_cast<int>(f.size(0));
  a->flip_filter = flip_filter;
  a->gain = gain;
  return y;
}

}  // namespace sgilo
