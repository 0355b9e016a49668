// CPU emulation of bias_act.cu for the tests: the same per-element arithmetic (bias_act_kernel.h) and the
// same binding (bias_act.cpp, compiled with SGILO_CPU_EMULATION), executed by a plain loop on the host.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>

#include "bias_act_kernel.h"

torch::Tensor bias_act_cuda(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& g, int64_t mode,
                            int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  torch::Tensor out = torch::empty_like(x);
  const sgilo::BiasActArgs a = sgilo::bias_act_prepare(x, mode, dim, act, alpha, gain, clamp);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act_emu", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;  // the GPU's accumulation type
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gp = g.defined() ? g.data_ptr<scalar_t>() : nullptr;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < a.total; ++i) {
      op[i] = static_cast<scalar_t>(sgilo::bias_act_point<scalar_t, acc_t>(xp, bp, gp, a, i));
    }
  });
  return out;
}
