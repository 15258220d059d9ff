// Template dispatch from runtime (format, tile shape, split) to tile kernel instances.
#pragma once

#include <cuda_runtime.h>

#include "tile_api.h"
#include "tile_gemm.cuh"

namespace kcm {

template <typename T, int FMT, int BMX, int RW, bool XP = false>
int launch_tile_instance(const GemmParams& p, int split, cudaStream_t stream) {
  using Layout = TileLayout<FMT, BMX, RW>;
  const auto kernel = tile_gemm_kernel<T, FMT, BMX, RW, XP>;
  const int err = static_cast<int>(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Layout::kSmemBytes)));
  if (err != 0) return err;
  const int n_blocks = (p.N16 * 16 + Layout::kRows - 1) / Layout::kRows;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(n_blocks * split, (p.M + BMX - 1) / BMX);
  config.blockDim = dim3(256);
  config.dynamicSmemBytes = Layout::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = split;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  const int launched = static_cast<int>(cudaLaunchKernelEx(&config, kernel, p));
  return launched != 0 ? launched : static_cast<int>(cudaGetLastError());
}

// How many clusters of `split` blocks of this instance fit on the device at once (the GPCs'
// sizes, not only the SM count, bound it), or a negative cudaError_t value.
template <typename T, int FMT, int BMX, int RW>
int tile_clusters_instance(int split) {
  using Layout = TileLayout<FMT, BMX, RW>;
  const auto kernel = tile_gemm_kernel<T, FMT, BMX, RW>;
  const int err = static_cast<int>(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Layout::kSmemBytes)));
  if (err != 0) return -err;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(split);
  config.blockDim = dim3(256);
  config.dynamicSmemBytes = Layout::kSmemBytes;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = split;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  int clusters = 0;
  const int query = static_cast<int>(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  return query != 0 ? -query : clusters;
}

template <typename T, int FMT>
int launch_tile_shape(const GemmParams& p, int bmx, int rw, int split, cudaStream_t stream) {
  if (split < 1 || split > 8 || split > p.C) return static_cast<int>(cudaErrorInvalidValue);
  if (bmx == 64 && rw == 1) return launch_tile_instance<T, FMT, 64, 1>(p, split, stream);
  if (bmx == 64 && rw == 2) return launch_tile_instance<T, FMT, 64, 2>(p, split, stream);
  if (bmx == 128 && rw == 1) return launch_tile_instance<T, FMT, 128, 1>(p, split, stream);
  if (bmx == 128 && rw == 2) return launch_tile_instance<T, FMT, 128, 2>(p, split, stream);
  if (bmx == 256 && rw == 1) return launch_tile_instance<T, FMT, 256, 1>(p, split, stream);
  return static_cast<int>(cudaErrorInvalidValue);
}

template <typename T>
int tile_clusters_typed(int fmt, int bmx, int rw, int split) {
  if (split < 1 || split > 8) return -static_cast<int>(cudaErrorInvalidValue);
  const bool eight_bit = fmt == kInt8 || fmt == kFp8;
  // Every instance holds one block per SM; the shared memory of the format's own instance decides.
#define KCM_TILE_CLUSTERS(B, R)                                                        \
  if (bmx == B && rw == R) {                                                           \
    return eight_bit ? tile_clusters_instance<T, kInt8, B, R>(split)                   \
                     : tile_clusters_instance<T, kInt4, B, R>(split);                  \
  }
  KCM_TILE_CLUSTERS(64, 1)
  KCM_TILE_CLUSTERS(64, 2)
  KCM_TILE_CLUSTERS(128, 1)
  KCM_TILE_CLUSTERS(128, 2)
  KCM_TILE_CLUSTERS(256, 1)
#undef KCM_TILE_CLUSTERS
  return -static_cast<int>(cudaErrorInvalidValue);
}

template <typename T>
int launch_tile_typed(const GemmParams& p, int fmt, int bmx, int rw, int split, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (fmt) {
    case kInt4: return launch_tile_shape<T, kInt4>(p, bmx, rw, split, s);
    case kInt8: return launch_tile_shape<T, kInt8>(p, bmx, rw, split, s);
    case kFp4: return launch_tile_shape<T, kFp4>(p, bmx, rw, split, s);
    case kFp8: return launch_tile_shape<T, kFp8>(p, bmx, rw, split, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace kcm
