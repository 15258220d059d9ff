// DeepSeek-style FP8 GEMM: activations scaled per 1x128 group, weights per 128x128 block.
//
// The mainloop is CUTLASS's SM90 blockwise-scaling collective: it applies As[m, j] * Bs[n/128, j]
// to each 128-deep partial sum in FP32 registers, so the scales never touch the FP8 operands. The
// epilogue only adds the bias. Both operands are K-major; the scales are MN-major (the only
// layout the SM90 collective reads): x_scale [k/128, m_pad], w_scale [k/128, n/128], or the same
// scales repeated per 64 rows, [k/128, ceil(n/64)], for the tiles 64 wide in N (CUTLASS wants
// whole scale blocks per tile: kBlockWeightScaleRows). Two translation units per output dtype
// include this header (fp8_block_scaled_mm_{bf16,f16}_{wide,narrow}.cu, by BlockTileGroup).
#pragma once

#include "scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {

template <class ElementD, class Tile, class Cluster, class MainloopSchedule, class EpilogueSchedule,
          class Scheduler = cutlass::gemm::PersistentScheduler, int WeightScaleRows = 128>
struct BlockScaledMmSm90 {
  using ElementAB = cutlass::float_e4m3_t;
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = cutlass::layout::ColumnMajor;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignAB = 16;
  static constexpr int kAlignD = 16 / sizeof(ElementD);

  using ScaleConfig = cutlass::detail::Sm90BlockwiseScaleConfig<1, WeightScaleRows, 128>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());

  // out = acc + bias[n] (a null bias reads as 0)
  using Tree = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, ElementD, float, cutlass::FloatRoundStyle::round_to_nearest>,
      cutlass::epilogue::fusion::Sm90AccFetch, PerColVector<Tile, ElementD>>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD, kAlignD, ElementD,
      LayoutD, kAlignD, EpilogueSchedule, Tree>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, cute::tuple<LayoutA, LayoutSFA>,
      kAlignAB, ElementAB, cute::tuple<LayoutB, LayoutSFB>, kAlignAB, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue,
                                                      Scheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static const char* run(BlockScaledMmArgs const& a) {
    using StrideA = typename Gemm::GemmKernel::StrideA;
    using StrideB = typename Gemm::GemmKernel::StrideB;
    using StrideD = typename Gemm::GemmKernel::StrideD;
    StrideA stride_a = cutlass::make_cute_packed_stride(StrideA{}, {a.m, a.k, 1});
    StrideB stride_b = cutlass::make_cute_packed_stride(StrideB{}, {a.n, a.k, 1});
    StrideD stride_d = cutlass::make_cute_packed_stride(StrideD{}, {a.m, a.n, 1});
    int const k_blocks = a.k / 128;
    // The activation scales' leading dimension is m_pad (16-byte rows for the scale TMA), not m.
    LayoutSFA layout_sfa = make_layout(
        make_shape(make_shape(_1{}, a.m), make_shape(_128{}, k_blocks), 1),
        make_stride(make_stride(_0{}, _1{}), make_stride(_0{}, a.m_pad), a.m_pad * k_blocks));
    LayoutSFB layout_sfb = ScaleConfig::tile_atom_to_shape_SFB(make_shape(a.m, a.n, a.k, 1));

    typename PerColVector<Tile, ElementD>::StrideMNL bias_stride{};
    get<1>(bias_stride) = true;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {a.m, a.n, a.k, 1},
        {static_cast<ElementAB const*>(a.x), stride_a, static_cast<ElementAB const*>(a.w), stride_b,
         a.x_scale, layout_sfa, a.w_scale, layout_sfb},
        {{{}, {static_cast<ElementD const*>(a.bias), ElementD(0), bias_stride}, {}},
         nullptr, stride_d, static_cast<ElementD*>(a.out), stride_d},
    };
    args.hw_info.device_id = a.device;
    args.hw_info.sm_count = a.sm_count;
    set_tile_order<Scheduler>(args, a.order, false);
    // A plain launch: this unit holds a stream-K kernel, so no grid-dependency waits.
    return launch<Gemm>(args, a.workspace, a.workspace_bytes, a.stream, false);
  }
};

// dispatch_block_scaled_mm<ElementD, Group>::run(config, args) runs one block tile of the table;
// a unit instantiates only the tiles of its BlockTileGroup.
template <class ElementD, BlockTileGroup Group>
struct dispatch_block_scaled_mm {
  using Cluster1 = Shape<_1, _1, _1>;
  using Pingpong = cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8Blockwise;
  using Cooperative = cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8Blockwise;
  using PingpongEpilogue = cutlass::epilogue::TmaWarpSpecialized;
  using CooperativeEpilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
  using DataParallel = cutlass::gemm::PersistentScheduler;
  template <int Tile, class TileShape, class Cluster, class Schedule, class Epi, class Scheduler = DataParallel>
  using K = BlockScaledMmSm90<ElementD, TileShape, Cluster, Schedule, Epi, Scheduler, kBlockWeightScaleRows[Tile]>;

  static const char* run(int config, BlockScaledMmArgs const& a) {
    switch (config) {
      case kBlockPingpong64x128:
        return run_if_in_unit<kBlockTileGroup[kBlockPingpong64x128] == Group,
                              K<kBlockPingpong64x128, Shape<_64, _128, _128>, Cluster1, Pingpong, PingpongEpilogue>>(a);
      case kBlockCooperative128x128:
        return run_if_in_unit<kBlockTileGroup[kBlockCooperative128x128] == Group,
                              K<kBlockCooperative128x128, Shape<_128, _128, _128>, Cluster1, Cooperative, CooperativeEpilogue>>(a);
      case kBlockCooperative128x128StreamK:
        return run_if_in_unit<kBlockTileGroup[kBlockCooperative128x128StreamK] == Group,
                              K<kBlockCooperative128x128StreamK, Shape<_128, _128, _128>, Cluster1, Cooperative,
                                CooperativeEpilogue, cutlass::gemm::StreamKScheduler>>(a);
      case kBlockCooperative128x128Cluster2:
        return run_if_in_unit<kBlockTileGroup[kBlockCooperative128x128Cluster2] == Group,
                              K<kBlockCooperative128x128Cluster2, Shape<_128, _128, _128>, Shape<_2, _1, _1>,
                                Cooperative, CooperativeEpilogue>>(a);
      case kBlockPingpong64x64:
        return run_if_in_unit<kBlockTileGroup[kBlockPingpong64x64] == Group,
                              K<kBlockPingpong64x64, Shape<_64, _64, _128>, Cluster1, Pingpong, PingpongEpilogue>>(a);
      case kBlockCooperative128x64:
        return run_if_in_unit<kBlockTileGroup[kBlockCooperative128x64] == Group,
                              K<kBlockCooperative128x64, Shape<_128, _64, _128>, Cluster1, Cooperative, CooperativeEpilogue>>(a);
      default:
        return "unknown block tile configuration id";
    }
  }
};

}  // namespace kernel_core_cutlass
