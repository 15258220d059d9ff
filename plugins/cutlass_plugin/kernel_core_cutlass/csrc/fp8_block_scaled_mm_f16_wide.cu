// Block-scaled FP8 -> f16, the tiles reading the checkpoint's 128-row weight scales: one unit per
// (output dtype, BlockTileGroup), so the four build in parallel (see block_scaled_mm_sm90.cuh).
#include "block_scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {

const char* fp8_block_scaled_mm_f16_wide(int config, BlockScaledMmArgs const& args) {
  return dispatch_block_scaled_mm<cutlass::half_t, kBlockWide>::run(config, args);
}

}  // namespace kernel_core_cutlass
