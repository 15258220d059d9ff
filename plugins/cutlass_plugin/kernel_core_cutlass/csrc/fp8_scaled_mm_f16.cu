// fp8 x fp8 -> f16: every tile configuration of dispatch_scaled_mm (one TU per type pair so the
// build runs them in parallel).
#include "scaled_mm_dispatch.cuh"

namespace kernel_core_cutlass {

const char* fp8_scaled_mm_f16(int config, ScaledMmArgs const& args) {
  return dispatch_scaled_mm<cutlass::float_e4m3_t, cutlass::half_t>(config, args);
}

}  // namespace kernel_core_cutlass
