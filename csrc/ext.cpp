// The `stylegan_fast._C` module: the schemas of the ops compiled into it, and what this
// build contains.
//
// The namespace's one TORCH_LIBRARY block is here; each op's csrc/<op>_binding.cpp adds its schemas
// with TORCH_LIBRARY_FRAGMENT and its implementations with TORCH_LIBRARY_IMPL. Loading this
// module makes the ops callable as torch.ops.stylegan_fast.<op>.

#include <algorithm>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

// setup.py passes the arch list unquoted (8.0,8.6,9.0+PTX), as a shell-safe token sequence.
#define STYLEGAN_FAST_STRINGIFY_(...) #__VA_ARGS__
#define STYLEGAN_FAST_STRINGIFY(...) STYLEGAN_FAST_STRINGIFY_(__VA_ARGS__)

namespace {

// The public ops (stylegan_fast.ops.<name>) that have a CUDA kernel in this module.
// modulated_conv2d's are the passes around cuDNN's convolution (conv_epilogue*).
const std::vector<std::string> kKernelOps = {"bias_act", "upfirdn2d", "modulated_conv2d"};

std::string compiled_archs() {
  std::string archs = STYLEGAN_FAST_STRINGIFY(STYLEGAN_FAST_CUDA_ARCHS);
  std::replace(archs.begin(), archs.end(), ',', ';');
  return archs;
}

std::string cuda_version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

}  // namespace

TORCH_LIBRARY(stylegan_fast, m) {
  m.def("probe(Tensor x) -> Tensor");  // x * 2 + 1, float32 only: a self-test of the build (probe.cu)
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stylegan_fast's CUDA kernels; the ops are called through torch.ops.stylegan_fast";
  m.def("kernel_ops", [] { return kKernelOps; },
        "Names of the public ops that have a CUDA kernel in this module.");
  m.def("compiled_archs", &compiled_archs,
        "The GPU architectures compiled for, as in STYLEGAN_FAST_CUDA_ARCHS: \"8.0;8.6;8.9;9.0+PTX\".");
  m.def("cuda_version", &cuda_version, "The CUDA toolkit version compiled with: \"13.0\".");
}
