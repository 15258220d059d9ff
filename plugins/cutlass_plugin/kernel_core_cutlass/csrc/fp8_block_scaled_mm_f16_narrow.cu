// Block-scaled FP8 -> f16, the tiles 64 wide in N (weight scales repeated
// per 64 rows): one unit per (output dtype, BlockTileGroup), so the four build in
// parallel (see block_scaled_mm_sm90.cuh).
#include "block_scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {

const char* fp8_block_scaled_mm_f16_narrow(int config, BlockScaledMmArgs const& args) {
  return dispatch_block_scaled_mm<cutlass::half_t, kBlockNarrow>::run(config, args);
}

}  // namespace kernel_core_cutlass
