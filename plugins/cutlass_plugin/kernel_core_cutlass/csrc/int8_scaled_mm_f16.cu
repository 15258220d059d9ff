// int8 x int8 -> f16: every tile configuration of dispatch_scaled_mm (one TU per type pair so the
// build runs them in parallel).
#include "scaled_mm_dispatch.cuh"

namespace kernel_core_cutlass {

const char* int8_scaled_mm_f16(int config, ScaledMmArgs const& args) {
  return dispatch_scaled_mm<int8_t, cutlass::half_t>(config, args);
}

}  // namespace kernel_core_cutlass
