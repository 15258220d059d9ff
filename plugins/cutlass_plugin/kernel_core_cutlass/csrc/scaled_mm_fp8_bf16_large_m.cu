// fp8 x fp8 -> bf16, the tiles of group kLargeM (one unit per type pair and group, so the build
// runs them in parallel; see scaled_mm_dispatch.cuh).
// No grid-dependency waits here: the stream-K kernel does not compile with them (see launch()
// in scaled_mm_sm90.cuh); these tiles serve M > 128, where a plain launch costs little.
#include "scaled_mm_dispatch.cuh"

namespace kernel_core_cutlass {

const char* scaled_mm_fp8_bf16_large_m(int config, ScaledMmArgs const& args) {
  return dispatch_scaled_mm<cutlass::float_e4m3_t, cutlass::bfloat16_t, kLargeM>::run(config, args);
}

}  // namespace kernel_core_cutlass
