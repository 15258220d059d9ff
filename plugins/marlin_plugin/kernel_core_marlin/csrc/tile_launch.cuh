// Template dispatch from runtime (format, tile shape, split) to tile kernel instances.
#pragma once

#include <cuda_runtime.h>

#include "tile_api.h"
#include "tile_gemm.cuh"

namespace kcm {

// Launch variants: 0 tile_gemm_kernel (every warp copies, a block-wide barrier per chunk),
// 1 tile_gemm_ws_kernel (a producer warpgroup, mbarrier handoff per stage), 2 tile_gemm_bulk_kernel
// (variant 1's consumers, a producer warpgroup of bulk copies; p.x is the activation image),
// 3 tile_gemm_stream_kernel (variant 2 on a stream-K division of the work; p.x the image, p.partials
// and p.arrivals its workspace).
enum TileVariant : int { kTileBarrier = 0, kTileSpecialized = 1, kTileBulk = 2, kTileStream = 3 };

// Whether a variant's producer moves stages with bulk and tensor copies (the bulk and stream-K
// variants): stages of tile_bulk_stage_chunks chunks, the scale tables by TileScaleMaps.
constexpr bool tile_bulk_producer(int variant) {
  return variant == kTileBulk || variant == kTileStream;
}

// Chunks per ring stage of a variant's instance: tile_bulk_stage_chunks for the bulk producers,
// one for the others.
template <int VARIANT, int FMT, int BMX, int RW>
constexpr int kTileStageChunks =
    tile_bulk_producer(VARIANT) ? tile_bulk_stage_chunks(VecCount<FMT>::value, BMX, RW) : 1;

// The kernel of a variant, its threads and its dynamic shared memory (KC: chunks per stage, the
// bulk producers' only; a probe may pick another).
template <typename T, int FMT, int BMX, int RW, bool XP, int VARIANT,
          int KC = kTileStageChunks<VARIANT, FMT, BMX, RW>, int PROBE = kTileProbeOff>
struct TileKernel {
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  static_assert(tile_bulk_producer(VARIANT) || KC == 1,
                "two chunks a stage: bulk and stream-K variants only");
  static_assert(VARIANT == kTileBulk || PROBE == kTileProbeOff ||
                    (VARIANT == kTileStream && PROBE == kTileProbeStreamTrace),
                "probe modes: bulk variant only, the timeline stream-K only");
  static_assert(VARIANT == kTileBarrier || !XP, "pre-permuted activations: barrier variant only");
  // Only the variant's own kernel is instantiated (a conditional expression would instantiate
  // all four).
  static constexpr auto pick() {
    if constexpr (VARIANT == kTileStream) {
      return tile_gemm_stream_kernel<T, FMT, BMX, RW, KC, PROBE == kTileProbeStreamTrace>;
    } else if constexpr (VARIANT == kTileBulk) {
      return tile_gemm_bulk_kernel<T, FMT, BMX, RW, KC, PROBE>;
    } else if constexpr (VARIANT == kTileSpecialized) {
      return tile_gemm_ws_kernel<T, FMT, BMX, RW>;
    } else {
      return tile_gemm_kernel<T, FMT, BMX, RW, XP>;
    }
  }
  static constexpr auto kernel = pick();
  static constexpr int kThreads = VARIANT == kTileBarrier ? 256 : kTileWsThreads;
  static constexpr size_t kSmemBytes = Layout::kSmemBytes;
};

// The bulk producers' TileScaleMaps for a launch of kTiles-tile blocks and kc-chunk stages:
// groups = 0 (cp.async tables) unless tile_scale_box_groups allows tensor copies and both maps
// encode (a driver without cuTensorMapEncodeTiled, or limits it refuses, keep cp.async).
inline void encode_tile_scale_maps(const GemmParams& p, int tiles, int kc, TileScaleMaps& maps) {
  maps = {};
  const int groups = tile_scale_box_groups(p, kc);
  if (groups == 0) return;
  maps.shift = power_of_two_group_shift(p);
  if (encode_words_3d(&maps.scales, p.gscale, 4, p.G, p.N16, groups, tiles) == cudaSuccess &&
      (p.zeros == nullptr ||
       encode_words_3d(&maps.zeros, p.zeros, 4, p.G, p.N16, groups, tiles) == cudaSuccess)) {
    maps.groups = groups;
  }
}

// {magic, shift} with n / d = (umulhi(n, magic) + n) >> shift for 0 <= n < 2^31, 1 <= d < 2^31
// (the round-up reciprocal, less 2^32, so the sum fits 32 bits).
inline void fast_divisor(unsigned d, unsigned (&f)[2]) {
  unsigned shift = 0;
  while ((1ull << shift) < d) ++shift;
  f[0] = static_cast<unsigned>(((1ull << 32) * ((1ull << shift) - d)) / d + 1);
  f[1] = shift;
}

// Blocks of a TileKernel that fit on the current device at once (its SMs x the blocks one SM
// holds), queried once per instance and device (after its shared-memory attribute is set); 0
// where a query fails.
template <typename TK>
int stream_resident_blocks() {
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0) return 0;
  if (device < kMaxDevices && cached[device] > 0) return cached[device];
  int sms = 0;
  int per_sm = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, TK::kernel, TK::kThreads,
                                                    TK::kSmemBytes) != cudaSuccess) {
    return 0;
  }
  if (device < kMaxDevices) cached[device] = sms * per_sm;
  return sms * per_sm;
}

template <typename T, int FMT, int BMX, int RW, bool XP = false, int VARIANT = kTileBarrier,
          int KC = kTileStageChunks<VARIANT, FMT, BMX, RW>, int PROBE = kTileProbeOff>
int launch_tile_instance(const GemmParams& params, int split, cudaStream_t stream) {
  GemmParams p = params;
  using Kernel = TileKernel<T, FMT, BMX, RW, XP, VARIANT, KC, PROBE>;
  using Layout = typename Kernel::Layout;
  const auto kernel = Kernel::kernel;
  const int err = static_cast<int>(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Kernel::kSmemBytes)));
  if (err != 0) return err;
  const int n_blocks = (p.N16 * 16 + Layout::kRows - 1) / Layout::kRows;
  const int m_blocks = (p.M + BMX - 1) / BMX;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(n_blocks * split, m_blocks);
  if constexpr (VARIANT == kTileStream) {
    // One block per SM the workspace serves, fewer when there are fewer chunks than blocks (every
    // block then holds at least one).
    if (split != 1 || p.partials == nullptr || p.arrivals == nullptr || p.stream_blocks < 1) {
      return static_cast<int>(cudaErrorInvalidValue);
    }
    const long long tiles = static_cast<long long>(n_blocks) * m_blocks;
    const long long units = tiles * p.C;
    const long long blocks = units < p.stream_blocks ? units : p.stream_blocks;
    // TileStream's 32-bit arithmetic: (u + 1) G for every unit u must fit an int.
    if (units * blocks > 0x7fffffffLL) return static_cast<int>(cudaErrorInvalidValue);
    // A block summing a tile waits for later blocks' pieces: the whole grid must be resident at
    // once, which one block per SM gives (TileStream). Where the occupancy query itself fails
    // (0), the wait's time limit is what remains.
    const int resident = stream_resident_blocks<Kernel>();
    if (resident > 0 && blocks > resident) {
      return static_cast<int>(cudaErrorCooperativeLaunchTooLarge);
    }
    config.gridDim = dim3(static_cast<unsigned>(blocks));
    p.stream_units = static_cast<int>(units);
    fast_divisor(static_cast<unsigned>(p.C), p.stream_div[kDivChunks]);
    fast_divisor(static_cast<unsigned>(blocks), p.stream_div[kDivBlocks]);
    fast_divisor(static_cast<unsigned>(units), p.stream_div[kDivUnits]);
    fast_divisor(static_cast<unsigned>(m_blocks), p.stream_div[kDivTokenBlocks]);
  }
  config.blockDim = dim3(Kernel::kThreads);
  config.dynamicSmemBytes = Kernel::kSmemBytes;
  config.stream = stream;
  // p.pdl (variants 2 and 3): a programmatic dependent of the kernel before it, the activation
  // image kernel, whose blocks let it launch as they start (x_image.cuh); only the producer's
  // activation copies and the consumers wait for that kernel (griddepcontrol.wait), so a block's
  // setup and its first stages' codes and scales overlap the image's last wave.
  if (p.pdl && !tile_bulk_producer(VARIANT)) return static_cast<int>(cudaErrorInvalidValue);
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = split;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attrs;
  config.numAttrs = p.pdl ? 2 : 1;
  int launched;
  if constexpr (tile_bulk_producer(VARIANT)) {
    TileScaleMaps maps;
    encode_tile_scale_maps(p, Layout::kTiles, KC, maps);
    launched = static_cast<int>(cudaLaunchKernelEx(&config, kernel, p, maps));
  } else {
    launched = static_cast<int>(cudaLaunchKernelEx(&config, kernel, p));
  }
  return launched != 0 ? launched : static_cast<int>(cudaGetLastError());
}

// How many clusters of `split` blocks of this instance fit on the device at once (the GPCs'
// sizes, not only the SM count, bound it), or a negative cudaError_t value.
template <typename T, int FMT, int BMX, int RW, int VARIANT>
int tile_clusters_instance(int split) {
  using Kernel = TileKernel<T, FMT, BMX, RW, false, VARIANT>;
  const auto kernel = Kernel::kernel;
  const int err = static_cast<int>(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Kernel::kSmemBytes)));
  if (err != 0) return -err;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(split);
  config.blockDim = dim3(Kernel::kThreads);
  config.dynamicSmemBytes = Kernel::kSmemBytes;
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

// Whether variant VARIANT has an instance of (bmx, rw): stream-K has none of 128 x 128 tokens x
// 256 rows (ptxas serializes its wgmmas for want of registers there: the 128 accumulators and 64
// A registers per thread leave no room for the segment loop; NOTES.md v20). The 16- and 32-token
// blocks of 256 and 384 rows are stream-K's alone (M <= 32, where whole tiles would leave 20 of
// 132 SMs idle on 28672 rows; NOTES.md v39); 384 rows spread a warp's per-chunk work over three
// tiles (512 would not fit the registers: ptxas serializes the wgmmas).
template <int VARIANT>
constexpr bool tile_instance_exists(int bmx, int rw) {
  if (bmx < 64) return VARIANT == kTileStream && (rw == 2 || rw == 3);
  return !(VARIANT == kTileStream && bmx == 128 && rw == 2);
}

// Whether (bmx, rw) is among the shapes launch_tile_variant dispatches (KCM_TILE_SHAPES) and
// variant `variant` has an instance of it: what the bindings check before a launch.
#define KCM_TILE_SHAPES(X) X(16, 2) X(32, 2) X(16, 3) X(32, 3) X(64, 1) X(64, 2) X(128, 1) \
  X(128, 2) X(256, 1)
inline bool tile_shape_built(int variant, int bmx, int rw) {
  bool listed = false;
#define KCM_TILE_LISTED(B, R) listed = listed || (bmx == B && rw == R);
  KCM_TILE_SHAPES(KCM_TILE_LISTED)
#undef KCM_TILE_LISTED
  if (!listed) return false;
  switch (variant) {
    case kTileBarrier: return tile_instance_exists<kTileBarrier>(bmx, rw);
    case kTileSpecialized: return tile_instance_exists<kTileSpecialized>(bmx, rw);
    case kTileBulk: return tile_instance_exists<kTileBulk>(bmx, rw);
    case kTileStream: return tile_instance_exists<kTileStream>(bmx, rw);
    default: return false;
  }
}

template <typename T, int FMT, int VARIANT>
int launch_tile_variant(const GemmParams& p, int bmx, int rw, int split, cudaStream_t stream) {
#define KCM_TILE_LAUNCH(B, R)                                                           \
  if (bmx == B && rw == R) {                                                            \
    if constexpr (tile_instance_exists<VARIANT>(B, R)) {                                \
      return launch_tile_instance<T, FMT, B, R, false, VARIANT>(p, split, stream);      \
    }                                                                                   \
    return static_cast<int>(cudaErrorInvalidValue);                                     \
  }
  KCM_TILE_SHAPES(KCM_TILE_LAUNCH)
#undef KCM_TILE_LAUNCH
  return static_cast<int>(cudaErrorInvalidValue);
}

template <typename T, int FMT>
int launch_tile_shape(const GemmParams& p, int bmx, int rw, int split, int variant,
                      cudaStream_t stream) {
  if (split < 1 || split > 8 || split > p.C) return static_cast<int>(cudaErrorInvalidValue);
  if (variant == kTileBarrier) {
    return launch_tile_variant<T, FMT, kTileBarrier>(p, bmx, rw, split, stream);
  }
  if (variant == kTileSpecialized) {
    return launch_tile_variant<T, FMT, kTileSpecialized>(p, bmx, rw, split, stream);
  }
  if (variant == kTileBulk) return launch_tile_variant<T, FMT, kTileBulk>(p, bmx, rw, split, stream);
  if (variant == kTileStream) {
    return launch_tile_variant<T, FMT, kTileStream>(p, bmx, rw, split, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

template <typename T, int VARIANT>
int tile_clusters_variant(int fmt, int bmx, int rw, int split) {
  const bool eight_bit = fmt == kInt8 || fmt == kFp8;
  // Every instance holds one block per SM; the shared memory of the format's own instance decides.
#define KCM_TILE_CLUSTERS(B, R)                                                        \
  if (bmx == B && rw == R) {                                                           \
    if constexpr (tile_instance_exists<VARIANT>(B, R)) {                               \
      return eight_bit ? tile_clusters_instance<T, kInt8, B, R, VARIANT>(split)        \
                       : tile_clusters_instance<T, kInt4, B, R, VARIANT>(split);       \
    }                                                                                  \
    return -static_cast<int>(cudaErrorInvalidValue);                                   \
  }
  KCM_TILE_SHAPES(KCM_TILE_CLUSTERS)
#undef KCM_TILE_CLUSTERS
  return -static_cast<int>(cudaErrorInvalidValue);
}

template <typename T>
int tile_clusters_typed(int fmt, int bmx, int rw, int split, int variant) {
  if (split < 1 || split > 8) return -static_cast<int>(cudaErrorInvalidValue);
  if (variant == kTileBarrier) return tile_clusters_variant<T, kTileBarrier>(fmt, bmx, rw, split);
  if (variant == kTileSpecialized) {
    return tile_clusters_variant<T, kTileSpecialized>(fmt, bmx, rw, split);
  }
  if (variant == kTileBulk) return tile_clusters_variant<T, kTileBulk>(fmt, bmx, rw, split);
  if (variant == kTileStream) return tile_clusters_variant<T, kTileStream>(fmt, bmx, rw, split);
  return -static_cast<int>(cudaErrorInvalidValue);
}

template <typename T>
int launch_tile_typed(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                      void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (fmt) {
    case kInt4: return launch_tile_shape<T, kInt4>(p, bmx, rw, split, variant, s);
    case kInt8: return launch_tile_shape<T, kInt8>(p, bmx, rw, split, variant, s);
    case kFp4: return launch_tile_shape<T, kFp4>(p, bmx, rw, split, variant, s);
    case kFp8: return launch_tile_shape<T, kFp8>(p, bmx, rw, split, variant, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace kcm
