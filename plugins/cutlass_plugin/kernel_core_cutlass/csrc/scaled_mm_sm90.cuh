// W8A8 scaled GEMMs on SM90 built from CUTLASS 3.x collectives.
//
// out[m, n] = s_tok[m] * s_ch[n] * (acc[m, n] + zp_neg[m] * colsum[n]) + bias[n]
// with acc = A_q[m, :] . W_q[n, :] (FP8: no zero-point term, SymmetricScaledEpilogueTree). The
// scales, the zero-point correction and the bias are one epilogue visitor tree (EVT), so the
// accumulator is read once and D is written once.
//
// Every scale vector uses a *dynamic* broadcast stride: stride true = one value per row/column,
// false = the first element for all (per-tensor). One instantiation then serves per-tensor and
// per-channel weights and static per-tensor or dynamic per-token activations. A null zero-point
// or bias pointer reads as 0 (symmetric activations, no bias). The decode tiles (WeightFirst) read
// the same vectors from shared memory instead, staged there by their mainloop (decode_staging.h).
//
// SwapAB computes out^T = W_q . A_q^T: for small M the weight's N fills the 64-row wgmma side and
// M becomes the narrow tile side. The output is then written column-major, which is out row-major.
//
// This header includes CUTLASS only (no torch): the .cu files compile anywhere nvcc does.
#pragma once

#include <atomic>
#include <cstdint>
#include <cuda_runtime.h>

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "decode_staging.h"
#include "decode_trace.h"
#include "scaled_mm_api.h"

namespace kernel_core_cutlass {

using namespace cute;

// Whether this translation unit compiles the kernels' grid-dependency waits. A unit defines
// CUTLASS_ENABLE_GDC_FOR_SM90 before its includes to get them; the units holding stream-K kernels
// cannot (CUTLASS 4.2's stream-K scheduler does not compile with it) and launch plainly, and the
// small-M unit leaves the kernels' own wait out for WeightFirstMainloop's (below).
#ifdef CUTLASS_ENABLE_GDC_FOR_SM90
constexpr bool kWaitsOnPredecessor = true;  // internal linkage: per unit
#else
constexpr bool kWaitsOnPredecessor = false;  // internal linkage: per unit
#endif

// Shared by every GEMM: checks, workspace, launch. Returns nullptr or a static error text.
// With `pdl` the kernel is launched as a programmatic dependent of the kernel before it in the
// stream; the caller passes it only for kernels that wait for that kernel before reading what it
// writes (CUTLASS's waits compiled in, or WeightFirstMainloop).
template <class Gemm>
const char* launch(typename Gemm::Arguments& args, void* workspace, size_t workspace_bytes,
                   int64_t stream, bool pdl) {
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
    return "CUTLASS can_implement refused the problem (alignment or shape)";
  }
  if (Gemm::get_workspace_size(args) > workspace_bytes) {
    return "the shared workspace is smaller than this GEMM needs";
  }
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  if (gemm.initialize(args, workspace, cuda_stream) != cutlass::Status::kSuccess) {
    return "CUTLASS initialize failed";
  }
  if (gemm.run(cuda_stream, nullptr, pdl) != cutlass::Status::kSuccess) {
    return "CUTLASS kernel launch failed";
  }
  return nullptr;
}

// How many clusters of Kernel's shape can be resident at once on `device`, by the occupancy
// calculator (cudaOccupancyMaxActiveClusters with the kernel's shared memory), cached per device.
// Without it CUTLASS's persistent scheduler sizes a clustered grid by a rule that assumes GPCs
// of 18 SMs: 116 CTAs for clusters of 4 and 112 for 8 on a 132-SM H100/H200, so 12-15% of the SMs
// sat out many-wave problems and 128 tiles in clusters of 4 took two waves (NOTES.md v11, v21).
// Clusters of 2 get 132 CTAs either way; the H200 holds 30 clusters of 4 (120 CTAs; ncu, v21).
// Returns 0 (CUTLASS's rule) when the query fails.
template <class Kernel>
int max_active_clusters(int device) {
  constexpr int kDevices = 64;
  static std::atomic<int> cached[kDevices] = {};  // 0: not asked yet, -1: the query failed
  if (device < 0 || device >= kDevices) return 0;
  int known = cached[device].load(std::memory_order_relaxed);
  if (known != 0) return known > 0 ? known : 0;
  auto const kernel = cutlass::device_kernel<Kernel>;
  int const smem = int(Kernel::SharedStorageSize);
  dim3 const cluster(size<0>(typename Kernel::ClusterShape{}), size<1>(typename Kernel::ClusterShape{}),
                     size<2>(typename Kernel::ClusterShape{}));
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = cluster.x;
  attribute.val.clusterDim.y = cluster.y;
  attribute.val.clusterDim.z = cluster.z;
  cudaLaunchConfig_t config{};
  config.gridDim = cluster;
  config.blockDim = dim3(Kernel::MaxThreadsPerBlock, 1, 1);
  config.dynamicSmemBytes = smem;
  config.attrs = &attribute;
  config.numAttrs = 1;
  int clusters = 0;
  bool const ok =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess &&
      cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) == cudaSuccess && clusters > 0;
  if (!ok) cudaGetLastError();  // so the next launch does not report this query's error
  cached[device].store(ok ? clusters : -1, std::memory_order_relaxed);
  return ok ? clusters : 0;
}

// A translation unit builds only the tiles of its group (see scaled_mm_api.h); the tables that
// dispatch a tile id are shared, so a tile of another group is a discarded `if constexpr` branch
// here and reports the binding/unit mismatch instead of instantiating the kernel.
template <bool InUnit, class Kernel, class Args>
const char* run_if_in_unit(Args const& a) {
  if constexpr (InUnit) {
    return Kernel::run(a);
  } else {
    return "tile configuration not built in this translation unit (binding and tile group disagree)";
  }
}

// griddepcontrol.wait: returns once the grid this one was launched as a programmatic dependent
// of has finished and its writes are visible (at once when launched plainly).
CUTLASS_DEVICE void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The mainloop of the one-tile-per-CTA swap-AB kernels (M <= 64), able to load the weight before
// the quantizer ends. At decode sizes the GEMM is a stream of weight bytes, and launched as a
// programmatic dependent of the activation quantizer, CUTLASS's kernel waits for the quantizer
// before its first load. The weight is not written by the quantizer, so here the producer may
// request the weight tiles of the first `lead_stages` stages (a runtime argument: 0 waits first, as
// CUTLASS does; -1 every stage) before it waits, then loads those stages' activation tiles and goes
// on as CUTLASS's load does. A stage's barrier expects both tiles' bytes from its producer_acquire
// on, so a consumer never reads a stage before its activation tile has landed. The consumer stages
// the epilogue's vectors (decode_staging.h) before its mainloop: the channel vectors at once, the
// token vectors (the quantizer's output) after the first stage has landed, i.e. after the
// producer's wait; the epilogue (StagedVector nodes) reads no global memory. Needs a unit without
// CUTLASS's own wait (which would come first) and a cluster of one CTA (no multicast), and is
// written for the non-persistent KernelTmaWarpSpecialized schedule, which calls load() and mma()
// once per CTA, for the tile at (blockIdx.x, blockIdx.y). How many stages pay was measured
// (NOTES.md v12, v12b): one stage ahead 0.07-0.9 us under waiting first on the H200, the whole ring
// slower (its requests hold back the quantizer's own reads).
template <class Mainloop, class ElementBias>
struct WeightFirstMainloop : Mainloop {
  static_assert(size(typename Mainloop::DispatchPolicy::ClusterShape{}) == 1,
                "WeightFirstMainloop issues no multicast copies");
  static constexpr int kStages = Mainloop::DispatchPolicy::Stages;
  using Staging = DecodeStaging<size<0>(typename Mainloop::TileShape{}), size<1>(typename Mainloop::TileShape{}),
                                ElementBias>;

  struct Arguments : Mainloop::Arguments {
    int lead_stages = 0;
    DecodeVectors vectors{};
  };
  struct Params : Mainloop::Params {
    int lead_stages = 0;
    DecodeVectors vectors{};
  };

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const& problem_shape, Arguments const& args,
                                                  void* workspace) {
    Params params{};
    static_cast<typename Mainloop::Params&>(params) =
        Mainloop::to_underlying_arguments(problem_shape, args, workspace);
    params.lead_stages = args.lead_stages;
    params.vectors = args.vectors;
    return params;
  }

  template <class TensorA, class TensorB, class KTileIterator, class BlockCoord>
  CUTLASS_DEVICE void load(Params const& params,
                           typename Mainloop::MainloopPipeline pipeline,
                           typename Mainloop::PipelineState write,
                           cute::tuple<TensorA, TensorB> const& load_inputs, BlockCoord const& blk_coord,
                           KTileIterator k_tile_iter, int k_tile_count, int /*thread_idx*/,
                           uint32_t /*block_rank_in_cluster*/,
                           typename Mainloop::TensorStorage& shared_tensors) {
    // With SwapAB, CUTLASS's A is the weight and B the activations.
    Tensor sA = make_tensor(make_smem_ptr(shared_tensors.smem_A.data()), typename Mainloop::SmemLayoutA{});
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.smem_B.data()), typename Mainloop::SmemLayoutB{});
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord;
    auto tma_a = params.tma_load_a.get_slice(0);
    auto tma_b = params.tma_load_b.get_slice(0);
    Tensor tAgA = tma_a.partition_S(get<0>(load_inputs)(_, _, m_coord, _, l_coord));  // (TMA,TMA_M,TMA_K,k)
    Tensor tAsA = tma_a.partition_D(sA);                                                  // (TMA,TMA_M,TMA_K,PIPE)
    Tensor tBgB = tma_b.partition_S(get<1>(load_inputs)(_, _, n_coord, _, l_coord));
    Tensor tBsB = tma_b.partition_D(sB);
    int lead = params.lead_stages < 0 || params.lead_stages > kStages ? kStages : params.lead_stages;
    lead = k_tile_count < lead ? k_tile_count : lead;
    bool const elected = cute::elect_one_sync();
    if (elected) {
      KCC_DECODE_STAMP(kProducerStart);
      auto stage = write;
      auto k_tile = k_tile_iter;
      for (int i = 0; i < lead; ++i, ++stage, ++k_tile) {
        pipeline.producer_acquire(stage);
        copy(params.tma_load_a.with(*pipeline.producer_get_barrier(stage)), tAgA(_, _, _, *k_tile),
             tAsA(_, _, _, stage.index()));
      }
    }
    if (elected) KCC_DECODE_STAMP(kLeadIssued);
    __syncwarp();
    wait_for_prerequisite_grid();
    if (elected) {
      KCC_DECODE_STAMP(kWaitReturned);
      CUTLASS_PRAGMA_NO_UNROLL
      for (int i = 0; i < k_tile_count; ++i, ++write, ++k_tile_iter) {
        auto* barrier = pipeline.producer_get_barrier(write);
        if (i >= lead) {
          pipeline.producer_acquire(write);
          copy(params.tma_load_a.with(*barrier), tAgA(_, _, _, *k_tile_iter), tAsA(_, _, _, write.index()));
        }
        copy(params.tma_load_b.with(*barrier), tBgB(_, _, _, *k_tile_iter), tBsB(_, _, _, write.index()));
      }
      KCC_DECODE_STAMP(kLastCopyIssued);
    }
  }

  // The consumer warpgroup: stages the epilogue's vectors, then CUTLASS's mainloop. Waiting on the
  // first stage here costs nothing: the mainloop's first wait is for the same stage.
  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(typename Mainloop::MainloopPipeline pipeline, typename Mainloop::PipelineState read,
                          FrgTensorC& accum, int k_tile_count, int thread_idx,
                          typename Mainloop::TensorStorage& shared_tensors, Params const& params) {
    bool const first = thread_idx == 0;
    if (first) KCC_DECODE_STAMP(kConsumerStart);
    Staging::stage_rows(params.vectors, int(blockIdx.x) * Staging::kRows, thread_idx);
    if (k_tile_count > 0) pipeline.consumer_wait(read);
    Staging::stage_cols(params.vectors, int(blockIdx.y) * Staging::kCols, thread_idx);
    Staging::publish();
    Mainloop::mma(pipeline, read, accum, k_tile_count, thread_idx, shared_tensors, params);
    if (first) KCC_DECODE_STAMP(kConsumerIssued);
  }
};

// Broadcasts in the (M, N) frame of the CUTLASS problem. `PerRow` varies with M, `PerCol` with N.
template <class Tile, class Element>
using PerRowVector = cutlass::epilogue::fusion::Sm90ColBroadcast<0, Tile, Element, float, Stride<bool, _0, _0>>;
template <class Tile, class Element>
using PerColVector = cutlass::epilogue::fusion::Sm90RowBroadcast<0, Tile, Element, float, Stride<_0, bool, _0>>;

// The vectors and operations both epilogue trees are built from, and their arguments. `Staged`
// (the decode tiles, swap-AB): every vector is a StagedVector, filled by WeightFirstMainloop.
template <class Tile, class ElementD, bool SwapAB, bool Staged>
struct EpilogueParts {
  static_assert(!Staged || SwapAB, "the staged vectors are laid out for the swap-AB decode tiles");
  // With SwapAB the problem's rows are weight channels and its columns are tokens.
  template <class Element>
  using TokenVector = std::conditional_t<SwapAB, PerColVector<Tile, Element>, PerRowVector<Tile, Element>>;
  template <class Element>
  using ChannelVector = std::conditional_t<SwapAB, PerRowVector<Tile, Element>, PerColVector<Tile, Element>>;
  // A vector's node: CUTLASS's broadcast, or its staged slot.
  template <class Broadcast, bool AlongRows, int Slot>
  using VectorNode = std::conditional_t<Staged, StagedVector<Tile, AlongRows, Slot>, Broadcast>;

  using TokenScale = VectorNode<TokenVector<float>, false, kStagedTokenScale>;
  using TokenZpNeg = VectorNode<TokenVector<float>, false, kStagedTokenZpNeg>;
  using ChannelScale = VectorNode<ChannelVector<float>, true, kStagedChannelScale>;
  using ChannelColsum = VectorNode<ChannelVector<float>, true, kStagedChannelColsum>;
  using ChannelBias = VectorNode<ChannelVector<ElementD>, true, kStagedBias>;

  using Acc = cutlass::epilogue::fusion::Sm90AccFetch;
  template <class Element>
  using MulAdd = cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, Element, float,
                                                        cutlass::FloatRoundStyle::round_to_nearest>;
  using Mul = cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float,
                                                     cutlass::FloatRoundStyle::round_to_nearest>;

  // A vector's arguments, along the tokens (`Tokens`) or the channels: one value per element when
  // `per_element`, else its first value for all. With SwapAB the tokens are the problem's columns.
  template <class Node, bool Tokens, class Element>
  static typename Node::Arguments vector(Element const* ptr, bool per_element) {
    if constexpr (Staged) {
      return {};
    } else {
      typename Node::StrideMNL stride{};
      get<(Tokens == SwapAB) ? 1 : 0>(stride) = per_element;
      return {ptr, Element(0), stride};
    }
  }
  // What WeightFirstMainloop stages for the same tree, in the problem's frame.
  static DecodeVectors staged_vectors(ScaledMmArgs const& a, bool zero_point) {
    DecodeVectors v{};
    v.channel_scale = a.channel_scale;
    v.channel_scale_per_row = a.channel_scale_per_col;
    v.bias = a.bias;
    v.token_scale = a.token_scale;
    v.token_scale_per_col = a.token_scale_per_row;
    if (zero_point) {
      v.channel_colsum = a.channel_colsum;
      v.token_zp_neg = a.token_zp_neg;
      v.token_zp_per_col = a.token_zp_per_row;
    }
    v.rows = a.n;
    v.cols = a.m;
    return v;
  }
};

// out = s_tok[tok] * (s_ch[ch] * inner) + bias[ch], around an inner node: the accumulator (FP8)
// or the accumulator with INT8's zero-point term; `wrap` wraps the inner node's arguments.
template <class Tile, class ElementD, bool SwapAB, bool Staged, class Inner>
struct ScaledOutputTree : EpilogueParts<Tile, ElementD, SwapAB, Staged> {
  using P = EpilogueParts<Tile, ElementD, SwapAB, Staged>;
  // channel_scaled = s_ch[ch] * inner
  using ChannelScaled = cutlass::epilogue::fusion::Sm90EVT<typename P::Mul, typename P::ChannelScale, Inner>;
  // out = s_tok[tok] * channel_scaled + bias[ch]
  using Tree = cutlass::epilogue::fusion::Sm90EVT<typename P::template MulAdd<ElementD>,
                                                  typename P::TokenScale, ChannelScaled,
                                                  typename P::ChannelBias>;

  static typename Tree::Arguments wrap(ScaledMmArgs const& a, typename Inner::Arguments inner) {
    return typename Tree::Arguments{
        P::template vector<typename P::TokenScale, true>(a.token_scale, a.token_scale_per_row),
        {P::template vector<typename P::ChannelScale, false>(a.channel_scale, a.channel_scale_per_col), inner, {}},
        P::template vector<typename P::ChannelBias, false>(static_cast<ElementD const*>(a.bias), true),
        {},
    };
  }
};

// INT8's inner node: corrected = zp_neg[tok] * colsum[ch] + acc.
template <class Tile, class ElementD, bool SwapAB, bool Staged,
          class P = EpilogueParts<Tile, ElementD, SwapAB, Staged>>
using ZeroPointCorrected = cutlass::epilogue::fusion::Sm90EVT<typename P::template MulAdd<float>,
                                                              typename P::TokenZpNeg,
                                                              typename P::ChannelColsum,
                                                              typename P::Acc>;

// INT8: out = s_tok[tok] * (s_ch[ch] * (acc + zp_neg[tok] * colsum[ch])) + bias[ch].
template <class Tile, class ElementD, bool SwapAB, bool Staged>
struct ScaledEpilogueTree
    : ScaledOutputTree<Tile, ElementD, SwapAB, Staged, ZeroPointCorrected<Tile, ElementD, SwapAB, Staged>> {
  using Base = ScaledOutputTree<Tile, ElementD, SwapAB, Staged, ZeroPointCorrected<Tile, ElementD, SwapAB, Staged>>;
  static constexpr bool kZeroPoint = true;

  static typename Base::Tree::Arguments arguments(ScaledMmArgs const& a) {
    return Base::wrap(a, {Base::template vector<typename Base::TokenZpNeg, true>(a.token_zp_neg, a.token_zp_per_row),
                          Base::template vector<typename Base::ChannelColsum, false>(a.channel_colsum, true), {}, {}});
  }
};

// FP8 activations carry no zero point: out = s_tok[tok] * (s_ch[ch] * acc) + bias[ch]. The INT8
// tree evaluates its zero-point term (a multiply-add and two broadcasts per element) even when
// the zero point is null; this one does not.
template <class Tile, class ElementD, bool SwapAB, bool Staged>
struct SymmetricScaledEpilogueTree
    : ScaledOutputTree<Tile, ElementD, SwapAB, Staged,
                       typename EpilogueParts<Tile, ElementD, SwapAB, Staged>::Acc> {
  using Base = ScaledOutputTree<Tile, ElementD, SwapAB, Staged,
                                typename EpilogueParts<Tile, ElementD, SwapAB, Staged>::Acc>;
  static constexpr bool kZeroPoint = false;

  static typename Base::Tree::Arguments arguments(ScaledMmArgs const& a) { return Base::wrap(a, {}); }
};

// The caller's tile order as the scheduler's arguments. `swap_ab`: the problem's M is the weight's
// N, so "along M" (tokens) is the problem's along N. The stream-K scheduler runs stream-K proper
// unless split-K is asked for explicitly, never its own split-K heuristic: split-K keeps a
// partial accumulator tile per output tile and split in the workspace (470 MB at M=4096,
// N=28672, two splits), stream-K for at most two waves of tiles (264 x 64 KiB on 132 SMs); the
// shared workspace's size check in launch() refuses a split count that does not fit.
template <class Scheduler, class Arguments>
void set_tile_order(Arguments& args, TileOrder const& order, bool swap_ab) {
  using Options = cutlass::gemm::kernel::detail::RasterOrderOptions;
  Options raster = Options::Heuristic;
  if (order.raster == kRasterAlongM) raster = swap_ab ? Options::AlongN : Options::AlongM;
  if (order.raster == kRasterAlongN) raster = swap_ab ? Options::AlongM : Options::AlongN;
  args.scheduler.raster_order = raster;
  args.scheduler.max_swizzle_size = order.swizzle;
  if constexpr (std::is_same_v<Scheduler, cutlass::gemm::StreamKScheduler>) {
    using Mode = cutlass::gemm::kernel::detail::DecompositionMode;
    if (order.splits >= 2) {
      args.scheduler.decomposition_mode = Mode::SplitK;
      args.scheduler.splits = order.splits;
    } else {
      args.scheduler.decomposition_mode = Mode::StreamK;
    }
  }
}

// `Scheduler` is cutlass::gemm::PersistentScheduler (data-parallel tiles; ignored by the
// non-persistent KernelTmaWarpSpecialized schedules) or StreamKScheduler (cooperative only).
// `WeightFirst`: CUTLASS's mainloop wrapped in WeightFirstMainloop.
template <class ElementAB, class ElementD, class Tile, class Cluster, class MainloopSchedule,
          class EpilogueSchedule, bool SwapAB, class Scheduler = cutlass::gemm::PersistentScheduler,
          bool WeightFirst = false>
struct ScaledMmSm90 {
  using ElementAcc = std::conditional_t<std::is_same_v<ElementAB, int8_t>, int32_t, float>;
  // A is (rows, K) K-major; B is (K, cols) stored as (cols, K) K-major, i.e. column-major.
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = cutlass::layout::ColumnMajor;
  using LayoutD = std::conditional_t<SwapAB, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  static constexpr int kAlignAB = 16 / sizeof(ElementAB);
  static constexpr int kAlignD = 16 / sizeof(ElementD);
  // The decode tiles' staged vectors follow CUTLASS's shared storage (decode_staging.h).
  static constexpr int kStagedBytes =
      WeightFirst ? int(sizeof(StagedBuffers<size<0>(Tile{}), size<1>(Tile{})>)) : 0;

  // The decode tiles' epilogue reads the vectors WeightFirstMainloop staged in shared memory.
  using Tree = std::conditional_t<std::is_same_v<ElementAB, int8_t>,
                                  ScaledEpilogueTree<Tile, ElementD, SwapAB, WeightFirst>,
                                  SymmetricScaledEpilogueTree<Tile, ElementD, SwapAB, WeightFirst>>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, float, void, LayoutD, kAlignD,
      ElementD, LayoutD, kAlignD, EpilogueSchedule, typename Tree::Tree>::CollectiveOp;

  using BuiltMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, LayoutA, kAlignAB, ElementAB,
      LayoutB, kAlignAB, ElementAcc, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage) + kStagedBytes)>,
      MainloopSchedule>::CollectiveOp;
  using Mainloop =
      std::conditional_t<WeightFirst, WeightFirstMainloop<BuiltMainloop, ElementD>, BuiltMainloop>;
  // The mainloop stages, the epilogue nodes read and the kernel sizes the staged block by one
  // tile shape, so all three place it at the same address.
  static_assert(std::is_same_v<typename BuiltMainloop::TileShape, Tile>,
                "the staged vectors are laid out by the kernel's tile shape");
  static_assert(!(WeightFirst && kWaitsOnPredecessor),
                "CUTLASS's own wait would precede the weight loads: build a weight-first kernel in a "
                "unit without CUTLASS_ENABLE_GDC_FOR_SM90");
  // Whether a launch as a programmatic dependent is safe: the kernel waits for its predecessor.
  static constexpr bool kWaits = WeightFirst || kWaitsOnPredecessor;

  // The decode tiles' epilogue is stamped in the timeline probe's build (decode_trace.h).
  using KernelEpilogue = std::conditional_t<WeightFirst, DecodeEpilogue<Epilogue>, Epilogue>;
  using BuiltKernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop,
                                                           KernelEpilogue, Scheduler>;
  using Kernel = std::conditional_t<WeightFirst,
                                    WithStagedVectors<BuiltKernel, size<0>(Tile{}), size<1>(Tile{})>,
                                    BuiltKernel>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static const char* run(ScaledMmArgs const& a) {
    // The CUTLASS problem: rows x cols x K; with SwapAB rows are the weight's N.
    int const rows = SwapAB ? a.n : a.m;
    int const cols = SwapAB ? a.m : a.n;
    auto const* ptr_rows = static_cast<ElementAB const*>(SwapAB ? a.w : a.x);
    auto const* ptr_cols = static_cast<ElementAB const*>(SwapAB ? a.x : a.w);
    using StrideA = typename Gemm::GemmKernel::StrideA;
    using StrideB = typename Gemm::GemmKernel::StrideB;
    using StrideD = typename Gemm::GemmKernel::StrideD;
    StrideA stride_a = cutlass::make_cute_packed_stride(StrideA{}, {rows, a.k, 1});
    StrideB stride_b = cutlass::make_cute_packed_stride(StrideB{}, {cols, a.k, 1});
    StrideD stride_d = cutlass::make_cute_packed_stride(StrideD{}, {rows, cols, 1});

    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {rows, cols, a.k, 1},
        {},
        {Tree::arguments(a), nullptr, stride_d, static_cast<ElementD*>(a.out), stride_d},
    };
    static_cast<typename BuiltMainloop::Arguments&>(args.mainloop) = {ptr_rows, stride_a, ptr_cols, stride_b};
    if constexpr (WeightFirst) {
      args.mainloop.lead_stages = a.weight_lead_stages;
      args.mainloop.vectors = Tree::staged_vectors(a, Tree::kZeroPoint);
    }
    args.hw_info.device_id = a.device;
    args.hw_info.sm_count = a.sm_count;
    if constexpr (size(Cluster{}) > 1) {
      args.hw_info.max_active_clusters = max_active_clusters<Kernel>(a.device);
    }
    set_tile_order<Scheduler>(args, a.order, SwapAB);
    return launch<Gemm>(args, a.workspace, a.workspace_bytes, a.stream, a.pdl && kWaits);
  }
};

}  // namespace kernel_core_cutlass
