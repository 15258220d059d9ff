// Template dispatch from runtime (format, tile shape) to kernel instances, for one activation type.
#pragma once

#include <cuda_runtime.h>

#include "stream_gemm.cuh"

namespace kcm {

template <typename Kernel>
int set_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return 0;
  return static_cast<int>(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes)));
}

// pipeline 0: register batches (stream_gemm_kernel); 1: cp.async ring (stream_gemm_async_kernel);
// 2: bulk copies into a shared ring, persistent blocks (stream_gemm_bulk_kernel: SM90, MT <= 4,
// r = 1, wn = 1; it plans its own grid); 3: the bulk pipeline with the flat consumer (a chunk's
// tile groups in one basic block; 2, 4, 8 or 16 consumer warps, 16 only for MT = 1 without
// act-order); 4: the flat consumer decoding only the pass's tiles in its last tile group
// (4-bit codes, MT <= 2, at most 8 consumer warps; where every pass of the widest block holds
// whole tile groups it runs pipeline 3's instance, see launch_gemm_bulk); 5: pipeline 4 with a plan that
// accepts a ring of 2 stages, so passes of 4-7 tiles at M > 8 keep 2 chunks per warp and stage
// (the 4-bit default at every bulk M where pipeline 6 does not serve, NOTES.md v7-v13); 6:
// pipeline 5 with the group scales multiplied into each chunk's mma sums (4-bit integer codes
// where scale_groups_hold_chunks, gemm_params.h; refused otherwise).
template <typename T, int FMT, int MT, int R>
int launch_gemm_instance(const GemmParams& p, int pipeline, cudaStream_t stream) {
  const int rows_per_block = 16 * R * p.WN;
  const dim3 grid((p.N16 * 16 + rows_per_block - 1) / rows_per_block, (p.M + 8 * MT - 1) / (8 * MT));
  const int threads = 32 * p.WN * p.WK;
  const size_t reduce_bytes = static_cast<size_t>(p.WN) * (p.WK - 1) * MT * R * 4 * 32 * sizeof(float);
  // Only the bulk kernels wait on the grid dependency (stream_gemm.cuh, grid_dependency_wait).
  if (p.pdl && (pipeline < 2 || pipeline > 6)) return static_cast<int>(cudaErrorInvalidValue);
  if (pipeline == 0) {
    const int err = set_shared_memory(stream_gemm_kernel<T, FMT, MT, R>, reduce_bytes);
    if (err != 0) return err;
    stream_gemm_kernel<T, FMT, MT, R><<<grid, threads, reduce_bytes, stream>>>(p);
  } else if (pipeline == 1) {
    const size_t ring_bytes = static_cast<size_t>(p.WN) * p.WK * AsyncStages<MT>::value *
                              AsyncSlots<FMT, MT, R>::kStageBytes;
    const size_t bytes = ring_bytes > reduce_bytes ? ring_bytes : reduce_bytes;
    if (bytes > 227 * 1024) return static_cast<int>(cudaErrorInvalidValue);
    const int err = set_shared_memory(stream_gemm_async_kernel<T, FMT, MT, R>, bytes);
    if (err != 0) return err;
    stream_gemm_async_kernel<T, FMT, MT, R><<<grid, threads, bytes, stream>>>(p);
  } else if (pipeline >= 2 && pipeline <= 6) {
    if constexpr (MT <= 4 && R == 1) {
      return launch_gemm_bulk<T, FMT, MT>(p, stream, 16 / MT, true, pipeline >= 3, pipeline >= 4,
                                          pipeline >= 5 ? 2 : 3, pipeline == 6);
    } else {
      return static_cast<int>(cudaErrorInvalidValue);
    }
  } else {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T, int FMT, int MT>
int launch_gemm_rows(const GemmParams& p, int r, int pipeline, cudaStream_t stream) {
  if (r == 1) return launch_gemm_instance<T, FMT, MT, 1>(p, pipeline, stream);
  if (r == 2) return launch_gemm_instance<T, FMT, MT, 2>(p, pipeline, stream);
  return static_cast<int>(cudaErrorInvalidValue);
}

template <typename T, int FMT>
int launch_gemm_tiles(const GemmParams& p, int mt, int r, int pipeline, cudaStream_t stream) {
  switch (mt) {
    case 1: return launch_gemm_rows<T, FMT, 1>(p, r, pipeline, stream);
    case 2: return launch_gemm_rows<T, FMT, 2>(p, r, pipeline, stream);
    case 4: return launch_gemm_rows<T, FMT, 4>(p, r, pipeline, stream);
    case 8: return launch_gemm_rows<T, FMT, 8>(p, r, pipeline, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

template <typename T>
int launch_gemm_typed(const GemmParams& p, int fmt, int mt, int r, int pipeline, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (fmt) {
    case kInt4: return launch_gemm_tiles<T, kInt4>(p, mt, r, pipeline, s);
    case kInt8: return launch_gemm_tiles<T, kInt8>(p, mt, r, pipeline, s);
    case kFp4: return launch_gemm_tiles<T, kFp4>(p, mt, r, pipeline, s);
    case kFp8: return launch_gemm_tiles<T, kFp8>(p, mt, r, pipeline, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

template <typename T, int FMT>
int launch_dequantize_instance(const GemmParams& p, cudaStream_t stream) {
  const size_t items = static_cast<size_t>(p.N16) * p.C * 32;
  const unsigned blocks = static_cast<unsigned>((items + 255) / 256);
  dequantize_kernel<T, FMT><<<blocks, 256, 0, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_dequantize_typed(const GemmParams& p, int fmt, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (fmt) {
    case kInt4: return launch_dequantize_instance<T, kInt4>(p, s);
    case kInt8: return launch_dequantize_instance<T, kInt8>(p, s);
    case kFp4: return launch_dequantize_instance<T, kFp4>(p, s);
    case kFp8: return launch_dequantize_instance<T, kFp8>(p, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace kcm
