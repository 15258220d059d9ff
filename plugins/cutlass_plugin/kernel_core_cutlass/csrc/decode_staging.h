// The decode tiles' epilogue vectors, staged in shared memory while the weight streams.
//
// At decode sizes a CTA's epilogue writes a few hundred bytes, yet CUTLASS's broadcast nodes load
// their vectors (channel scales and bias from DRAM, token scales from L2) only when the epilogue
// begins, after the last k-tile: the decode timeline had store() at ~0.9 us of a ~18 us CTA on
// 8192^2 at M=1, a latency every CTA pays at its end (NOTES.md v17). Here the consumer warpgroup
// copies its tile's slice of each vector into shared memory before its mainloop instead: the
// channel vectors at once, the token vectors (written by the quantizer) once the first stage has
// landed, whose activation tile the producer loaded after waiting for the quantizer. The epilogue's
// StagedVector nodes then read shared memory only.
//
// Frame: the swap-AB problem's rows are weight channels and its columns are tokens.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/cutlass.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp>

namespace kernel_core_cutlass {

using namespace cute;

// The vectors along the tile's rows (channels) and along its columns (tokens).
enum StagedRowVector : int { kStagedChannelScale = 0, kStagedChannelColsum, kStagedBias, kNumStagedRowVectors };
enum StagedColVector : int { kStagedTokenScale = 0, kStagedTokenZpNeg, kNumStagedColVectors };

// Where the staged vectors come from. A null pointer reads as 0; a vector that is not per element
// gives its first value to every row (column).
struct DecodeVectors {
  float const* channel_scale = nullptr;
  bool channel_scale_per_row = false;
  float const* channel_colsum = nullptr;  // per row; INT8's zero-point term only
  void const* bias = nullptr;  // per row, in the output dtype
  float const* token_scale = nullptr;
  bool token_scale_per_col = false;
  float const* token_zp_neg = nullptr;  // INT8 only
  bool token_zp_per_col = false;
  int rows = 0;
  int cols = 0;
};

// One CTA's staged slices, all as float (the epilogue computes in float).
template <int Rows, int Cols>
struct StagedBuffers {
  float rows[kNumStagedRowVectors][Rows];
  float cols[kNumStagedColVectors][Cols];
};

// The staged slices sit at the end of the kernel's dynamic shared memory, past CUTLASS's own
// storage (WithStagedVectors adds their bytes to the launch): the mainloop writes them and the
// epilogue nodes read them without either knowing where the other keeps its shared storage. Not
// a static __shared__ variable: that would shift the dynamic block, whose swizzled TMA stages
// CUTLASS lays out from a 1024-byte-aligned start.
template <int Rows, int Cols>
CUTLASS_DEVICE StagedBuffers<Rows, Cols>& staged_buffers() {
  extern __shared__ char dynamic_smem[];  // every extern __shared__ array starts the dynamic block
  uint32_t bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
  return *reinterpret_cast<StagedBuffers<Rows, Cols>*>(dynamic_smem + bytes - sizeof(StagedBuffers<Rows, Cols>));
}

// A CUTLASS kernel launched with the staged slices' bytes after its own shared storage.
template <class Kernel, int Rows, int Cols>
struct WithStagedVectors : Kernel {
  static constexpr int SharedStorageSize = Kernel::SharedStorageSize + int(sizeof(StagedBuffers<Rows, Cols>));
};

// Element `index` of a vector of `extent` values as float, read from L2 (ld.global.cg: the
// quantizer wrote the token vectors in the grid before this one, and L1 is not coherent with it).
template <class T>
CUTLASS_DEVICE float vector_element(T const* ptr, bool per_element, int index, int extent) {
  if (ptr == nullptr || index >= extent) return 0.f;
  T const* at = ptr + (per_element ? index : 0);
  if constexpr (sizeof(T) == 2) {
    return float(T::bitcast(__ldcg(reinterpret_cast<unsigned short const*>(at))));
  } else {
    return float(__ldcg(at));
  }
}

// Called by the consumer warpgroup's 128 threads (`thread`: index in the warpgroup) of the CTA at
// rows [row0, row0 + Rows) and columns [col0, col0 + Cols).
template <int Rows, int Cols, class ElementBias>
struct DecodeStaging {
  static_assert(Rows <= 128 && Cols <= 128, "one value per thread of the consumer warpgroup");
  static constexpr int kRows = Rows;
  static constexpr int kCols = Cols;

  // Before the quantizer has finished: channel scales, column sums, bias.
  CUTLASS_DEVICE static void stage_rows(DecodeVectors const& v, int row0, int thread) {
    if (thread >= Rows) return;
    int const row = row0 + thread;
    float const scale = vector_element(v.channel_scale, v.channel_scale_per_row, row, v.rows);
    float const colsum = vector_element(v.channel_colsum, true, row, v.rows);
    float const bias = vector_element(static_cast<ElementBias const*>(v.bias), true, row, v.rows);
    auto& b = staged_buffers<Rows, Cols>();
    b.rows[kStagedChannelScale][thread] = scale;
    b.rows[kStagedChannelColsum][thread] = colsum;
    b.rows[kStagedBias][thread] = bias;
  }

  // Only once the quantizer's writes are visible: token scales, negated zero points.
  CUTLASS_DEVICE static void stage_cols(DecodeVectors const& v, int col0, int thread) {
    if (thread >= Cols) return;
    int const col = col0 + thread;
    float const scale = vector_element(v.token_scale, v.token_scale_per_col, col, v.cols);
    float const zp_neg = vector_element(v.token_zp_neg, v.token_zp_per_col, col, v.cols);
    auto& b = staged_buffers<Rows, Cols>();
    b.cols[kStagedTokenScale][thread] = scale;
    b.cols[kStagedTokenZpNeg][thread] = zp_neg;
  }

  // Makes the warpgroup's shared-memory writes visible to all of it (user named barrier 0).
  CUTLASS_DEVICE static void publish() { cutlass::arch::NamedBarrier::sync(cutlass::NumThreadsPerWarpGroup, 0); }
};

// An epilogue visitor node reading one staged vector: along the CTA tile's rows (`AlongRows`) or
// its columns. No arguments and no global memory access: the mainloop staged the values. Built on
// CUTLASS's argument-less node base, as its accumulator fetch is.
template <class CtaTileShapeMNK, bool AlongRows, int Slot>
struct StagedVector : cutlass::epilogue::fusion::Sm90VisitorImpl<> {
  using cutlass::epilogue::fusion::Sm90VisitorImpl<>::Sm90VisitorImpl;
  static constexpr int kRows = size<0>(CtaTileShapeMNK{});
  static constexpr int kCols = size<1>(CtaTileShapeMNK{});

  template <class SmemTensor>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::EmptyConsumerStoreCallbacks {
    CUTLASS_DEVICE explicit ConsumerStoreCallbacks(SmemTensor t) : tCsVec(t) {}
    SmemTensor tCsVec;  // (CPY,CPY_M,CPY_N,EPI_M,EPI_N)

    template <class ElementAccumulator, int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<float, FragmentSize> visit(cutlass::Array<ElementAccumulator, FragmentSize> const&, int epi_v,
                                                    int epi_m, int epi_n) {
      Tensor sub = tCsVec(_, _, _, epi_m, epi_n);
      cutlass::Array<float, FragmentSize> frg;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < FragmentSize; ++i) frg[i] = sub(epi_v * FragmentSize + i);
      return frg;
    }
  };

  template <bool ReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::ConsumerStoreArgs<Args...> const& args) {
    auto& b = staged_buffers<kRows, kCols>();
    auto shape = make_shape(Int<kRows>{}, Int<kCols>{});
    auto sVec = [&] {
      if constexpr (AlongRows) {
        return make_tensor(make_smem_ptr(b.rows[Slot]), make_layout(shape, make_stride(_1{}, _0{})));
      } else {
        return make_tensor(make_smem_ptr(b.cols[Slot]), make_layout(shape, make_stride(_0{}, _1{})));
      }
    }();
    Tensor tCsVec = cutlass::epilogue::fusion::sm90_partition_for_epilogue<ReferenceSrc>(
        sVec, args.epi_tile, args.tiled_copy, args.thread_idx);
    return ConsumerStoreCallbacks<decltype(tCsVec)>(tCsVec);
  }
};

}  // namespace kernel_core_cutlass
