// Maps a TileConfigId to one CUTLASS instantiation of ScaledMmSm90 (see tiles.py for the why).
#pragma once

#include "scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {

template <class ElementAB, class ElementD>
const char* dispatch_scaled_mm(int config, ScaledMmArgs const& a) {
  // FP8 accumulates in the tensor core without periodic FP32 promotion ("fast accumulation"),
  // as torch._scaled_mm(use_fast_accum=True) and cuBLASLt do; int8 accumulates exactly in int32.
  constexpr bool kFp8 = !std::is_same_v<ElementAB, int8_t>;
  using Pingpong = std::conditional_t<kFp8, cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum,
                                      cutlass::gemm::KernelTmaWarpSpecializedPingpong>;
  using Cooperative = std::conditional_t<kFp8, cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum,
                                         cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
  using PingpongEpilogue = cutlass::epilogue::TmaWarpSpecialized;
  using CooperativeEpilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
  using Cluster1 = Shape<_1, _1, _1>;
  using Cluster2 = Shape<_2, _1, _1>;
  switch (config) {
    case kSwap64x16:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_64, _16, _128>, Cluster1, Pingpong, PingpongEpilogue, true>::run(a);
    case kSwap64x64:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_64, _64, _128>, Cluster1, Pingpong, PingpongEpilogue, true>::run(a);
    case kPingpong64x128:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_64, _128, _128>, Cluster1, Pingpong, PingpongEpilogue, false>::run(a);
    case kCooperative128x128:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_128, _128, _128>, Cluster2, Cooperative, CooperativeEpilogue, false>::run(a);
    case kCooperative128x256:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_128, _256, _128>, Cluster2, Cooperative, CooperativeEpilogue, false>::run(a);
    case kCooperative256x128:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_256, _128, _128>, Shape<_1, _2, _1>, Cooperative, CooperativeEpilogue, false>::run(a);
    case kPingpong64x256:
      return ScaledMmSm90<ElementAB, ElementD, Shape<_64, _256, _128>, Cluster1, Pingpong, PingpongEpilogue, false>::run(a);
    default:
      return "unknown tile configuration id";
  }
}

}  // namespace kernel_core_cutlass
