// Block-scaled FP8 -> f16: every block tile configuration (one unit per output dtype, so the
// two build in parallel; see block_scaled_mm_sm90.cuh).
#include "block_scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {

const char* fp8_block_scaled_mm_f16(int config, BlockScaledMmArgs const& args) {
  return dispatch_block_scaled_mm<cutlass::half_t>(config, args);
}

}  // namespace kernel_core_cutlass
