// Kernel instances for float16 activations (one translation unit per type: parallel builds).
#include "launch.cuh"

namespace kcm {

int launch_gemm_half(const GemmParams& p, int fmt, int mt, int r, int pipeline,
                       void* stream) {
  return launch_gemm_typed<half>(p, fmt, mt, r, pipeline, stream);
}

int launch_dequantize_half(const GemmParams& p, int fmt, void* stream) {
  return launch_dequantize_typed<half>(p, fmt, stream);
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace kcm
