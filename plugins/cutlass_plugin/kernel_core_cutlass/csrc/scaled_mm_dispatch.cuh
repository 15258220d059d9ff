// Maps a TileConfigId to one CUTLASS instantiation of ScaledMmSm90 (see tiles.py for the why).
//
// One table for every tile; a translation unit instantiates only the tiles of its TileGroup (the
// other cases are discarded `if constexpr` branches), so four units per type pair build the table
// in parallel.
#pragma once

#include "scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {

// dispatch_scaled_mm<ElementAB, ElementD, Group>::run(config, args) runs one tile of the table.
template <class ElementAB, class ElementD, TileGroup Group>
struct dispatch_scaled_mm {
  // FP8 accumulates in the tensor core without periodic FP32 promotion ("fast accumulation"),
  // as torch._scaled_mm(use_fast_accum=True) and cuBLASLt do; int8 accumulates exactly in int32.
  static constexpr bool kFp8 = !std::is_same_v<ElementAB, int8_t>;
  using Pingpong = std::conditional_t<kFp8, cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum,
                                      cutlass::gemm::KernelTmaWarpSpecializedPingpong>;
  using Cooperative = std::conditional_t<kFp8, cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum,
                                         cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
  // One producer and one consumer warpgroup, one tile per CTA (a grid of all tiles).
  using Single = std::conditional_t<kFp8, cutlass::gemm::KernelTmaWarpSpecializedFP8FastAccum,
                                    cutlass::gemm::KernelTmaWarpSpecialized>;
  using PingpongEpilogue = cutlass::epilogue::TmaWarpSpecialized;
  using CooperativeEpilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
  using Cluster1 = Shape<_1, _1, _1>;
  using Cluster2 = Shape<_2, _1, _1>;
  // Along N (the problem's second mode): the CTAs of one cluster share the activation tile.
  using ClusterN2 = Shape<_1, _2, _1>;
  using ClusterN4 = Shape<_1, _4, _1>;
  template <class Tile, class Cluster, class Schedule, class Epi, bool Swap,
            class Scheduler = cutlass::gemm::PersistentScheduler>
  using K = ScaledMmSm90<ElementAB, ElementD, Tile, Cluster, Schedule, Epi, Swap, Scheduler>;
  // The decode tiles: one tile per CTA, the weight loaded before the quantizer ends.
  template <class Tile>
  using WeightFirstK = ScaledMmSm90<ElementAB, ElementD, Tile, Cluster1, Single, PingpongEpilogue, true,
                                    cutlass::gemm::PersistentScheduler, true>;

  static const char* run(int config, ScaledMmArgs const& a) {
    switch (config) {
      case kSwap64x16:
        return run_if_in_unit<kTileGroup[kSwap64x16] == Group, K<Shape<_64, _16, _128>, Cluster1, Pingpong, PingpongEpilogue, true>>(a);
      case kSwap64x64:
        return run_if_in_unit<kTileGroup[kSwap64x64] == Group, K<Shape<_64, _64, _128>, Cluster1, Pingpong, PingpongEpilogue, true>>(a);
      case kPingpong64x128:
        return run_if_in_unit<kTileGroup[kPingpong64x128] == Group, K<Shape<_64, _128, _128>, Cluster1, Pingpong, PingpongEpilogue, false>>(a);
      case kCooperative128x128:
        return run_if_in_unit<kTileGroup[kCooperative128x128] == Group, K<Shape<_128, _128, _128>, Cluster2, Cooperative, CooperativeEpilogue, false>>(a);
      case kCooperative128x256:
        return run_if_in_unit<kTileGroup[kCooperative128x256] == Group, K<Shape<_128, _256, _128>, Cluster2, Cooperative, CooperativeEpilogue, false>>(a);
      case kCooperative256x128:
        return run_if_in_unit<kTileGroup[kCooperative256x128] == Group, K<Shape<_256, _128, _128>, ClusterN2, Cooperative, CooperativeEpilogue, false>>(a);
      case kPingpong64x256:
        return run_if_in_unit<kTileGroup[kPingpong64x256] == Group, K<Shape<_64, _256, _128>, Cluster1, Pingpong, PingpongEpilogue, false>>(a);
      case kSwap64x16K256:
        return run_if_in_unit<kTileGroup[kSwap64x16K256] == Group, WeightFirstK<Shape<_64, _16, _256>>>(a);
      case kSwap64x64K256:
        return run_if_in_unit<kTileGroup[kSwap64x64K256] == Group, WeightFirstK<Shape<_64, _64, _256>>>(a);
      case kSwap64x16K512:
        return run_if_in_unit<kTileGroup[kSwap64x16K512] == Group, WeightFirstK<Shape<_64, _16, _512>>>(a);
      case kPingpong64x128Cluster2:
        return run_if_in_unit<kTileGroup[kPingpong64x128Cluster2] == Group, K<Shape<_64, _128, _128>, Cluster2, Pingpong, PingpongEpilogue, false>>(a);
      case kPingpong128x128Cluster2:
        return run_if_in_unit<kTileGroup[kPingpong128x128Cluster2] == Group, K<Shape<_128, _128, _128>, Cluster2, Pingpong, PingpongEpilogue, false>>(a);
      case kCooperative128x128StreamK:
        return run_if_in_unit<kTileGroup[kCooperative128x128StreamK] == Group,
                              K<Shape<_128, _128, _128>, Cluster1, Cooperative, CooperativeEpilogue, false,
                                cutlass::gemm::StreamKScheduler>>(a);
      case kPingpong128x128ClusterN2:
        return run_if_in_unit<kTileGroup[kPingpong128x128ClusterN2] == Group, K<Shape<_128, _128, _128>, ClusterN2, Pingpong, PingpongEpilogue, false>>(a);
      case kPingpong128x128ClusterN4:
        return run_if_in_unit<kTileGroup[kPingpong128x128ClusterN4] == Group, K<Shape<_128, _128, _128>, ClusterN4, Pingpong, PingpongEpilogue, false>>(a);
      case kCooperative128x128ClusterN2:
        return run_if_in_unit<kTileGroup[kCooperative128x128ClusterN2] == Group, K<Shape<_128, _128, _128>, ClusterN2, Cooperative, CooperativeEpilogue, false>>(a);
      case kPingpong128x128Cluster2x4:
        return run_if_in_unit<kTileGroup[kPingpong128x128Cluster2x4] == Group, K<Shape<_128, _128, _128>, Shape<_2, _4, _1>, Pingpong, PingpongEpilogue, false>>(a);
      default:
        return "unknown tile configuration id";
    }
  }
};

}  // namespace kernel_core_cutlass
