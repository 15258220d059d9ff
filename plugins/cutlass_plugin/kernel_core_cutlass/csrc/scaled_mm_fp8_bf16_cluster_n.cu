// fp8 x fp8 -> bf16, the tiles of group kClusterN (one unit per type pair and group, so the
// build runs them in parallel; see scaled_mm_dispatch.cuh).
// Grid-dependency waits in the kernels, so they can be launched as programmatic dependents of
// the activation quantizer at M = 128 like the mid-M tiles (see launch() in scaled_mm_sm90.cuh;
// no stream-K kernel here). Before any CUTLASS header.
#define CUTLASS_ENABLE_GDC_FOR_SM90
#include "scaled_mm_dispatch.cuh"

namespace kernel_core_cutlass {

const char* scaled_mm_fp8_bf16_cluster_n(int config, ScaledMmArgs const& args) {
  return dispatch_scaled_mm<cutlass::float_e4m3_t, cutlass::bfloat16_t, kClusterN>::run(config, args);
}

}  // namespace kernel_core_cutlass
