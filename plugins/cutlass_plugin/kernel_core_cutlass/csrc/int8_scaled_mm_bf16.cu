// int8 x int8 -> bf16: every tile configuration of dispatch_scaled_mm (one TU per type pair so the
// build runs them in parallel).
#include "scaled_mm_dispatch.cuh"

namespace kernel_core_cutlass {

const char* int8_scaled_mm_bf16(int config, ScaledMmArgs const& args) {
  return dispatch_scaled_mm<int8_t, cutlass::bfloat16_t>(config, args);
}

}  // namespace kernel_core_cutlass
