// Kernel instances for bfloat16 activations (one translation unit per type: parallel builds).
#include "launch.cuh"

namespace kcm {

int launch_gemm_bfloat16(const GemmParams& p, int fmt, int mt, int r, int pipeline,
                       void* stream) {
  return launch_gemm_typed<__nv_bfloat16>(p, fmt, mt, r, pipeline, stream);
}

int launch_dequantize_bfloat16(const GemmParams& p, int fmt, void* stream) {
  return launch_dequantize_typed<__nv_bfloat16>(p, fmt, stream);
}

}  // namespace kcm
