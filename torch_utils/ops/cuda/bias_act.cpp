// Python binding of the bias_act CUDA kernel: argument checks and layout handling here, kernel in bias_act.cu.
#include <torch/extension.h>

#include "common.h"

torch::Tensor bias_act_cuda(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& g, int64_t mode,
                            int64_t dim, int64_t act, double alpha, double gain, double clamp);

// x: any shape on the GPU. b: None or 1-D of length x.size(dim). g: None (mode 0) or the incoming gradient,
// shaped like x (modes 1 and 2). Returns a tensor with the shape and memory layout of x.
static torch::Tensor bias_act(torch::Tensor x, c10::optional<torch::Tensor> b, c10::optional<torch::Tensor> g,
                              int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  SGILO_CHECK_CUDA(x);
  TORCH_CHECK(mode >= 0 && mode <= 2, "mode must be 0, 1 or 2");
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "dim out of range");
  // The kernel walks memory linearly and finds the bias index from the stride of `dim`, which is valid for
  // any dense permutation of the axes (contiguous, channels_last, ...). Anything else is made contiguous.
  if (!x.is_non_overlapping_and_dense()) x = x.contiguous();
  torch::Tensor bias, grad;
  if (b.has_value() && b->defined()) {
    SGILO_CHECK_CUDA((*b));
    TORCH_CHECK(b->dim() == 1 && b->size(0) == x.size(dim), "b must be 1-D with x.size(dim) entries");
    bias = b->to(x.scalar_type()).contiguous();
  }
  if (mode != 0) {
    TORCH_CHECK(g.has_value() && g->defined(), "modes 1 and 2 need the incoming gradient g");
    SGILO_CHECK_CUDA((*g));
    TORCH_CHECK(g->sizes() == x.sizes(), "g must have the shape of x");
    grad = g->to(x.scalar_type());
    if (grad.strides() != x.strides()) grad = torch::empty_like(x).copy_(grad);
  }
  return bias_act_cuda(x, bias, grad, mode, dim, act, alpha, gain, clamp);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp and its derivatives (CUDA).",
        pybind11::arg("x"), pybind11::arg("b"), pybind11::arg("g"), pybind11::arg("mode"), pybind11::arg("dim"),
        pybind11::arg("act"), pybind11::arg("alpha"), pybind11::arg("gain"), pybind11::arg("clamp"));
}
