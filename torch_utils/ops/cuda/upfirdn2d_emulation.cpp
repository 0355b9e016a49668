// CPU emulation of upfirdn2d.cu for the tests: the same per-sample arithmetic (upfirdn2d_kernel.h) and the
// same binding (upfirdn2d.cpp, compiled with SGILO_CPU_EMULATION), executed by a plain loop on the host.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>

#include "upfirdn2d_kernel.h"

torch::Tensor upfirdn2d_cuda(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x, int64_t up_y,
                             int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                             int64_t pad_y1, bool flip_filter, double gain) {
  const torch::Tensor fc = f.contiguous();
  sgilo::FirArgs a;
  torch::Tensor y = sgilo::upfirdn2d_prepare(x, fc, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1,
                                             flip_filter, gain, &a);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_emu", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;  // the GPU's accumulation type
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    for (int64_t i = 0; i < a.total; ++i) {
      int64_t offset;
      const acc_t v = sgilo::upfirdn2d_point<scalar_t, acc_t>(xp, fc.data_ptr<float>(), a, i, &offset);
      yp[offset] = static_cast<scalar_t>(v);
    }
  });
  return y;
}
