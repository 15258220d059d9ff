// int8 x int8 -> bf16, the tiles of group kSmallM (one unit per type pair and group, so the build
// runs them in parallel; see scaled_mm_dispatch.cuh).
// No CUTLASS grid-dependency waits here: the decode tiles wait for the quantizer themselves, after
// their first weight loads (WeightFirstMainloop in scaled_mm_sm90.cuh); the 128-deep swap tiles,
// swept only, then launch plainly.
#include "scaled_mm_dispatch.cuh"

namespace kernel_core_cutlass {

const char* scaled_mm_int8_bf16_small_m(int config, ScaledMmArgs const& args) {
  return dispatch_scaled_mm<int8_t, cutlass::bfloat16_t, kSmallM>::run(config, args);
}

}  // namespace kernel_core_cutlass
