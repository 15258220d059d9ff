// The plain-C++ interface between the CUTLASS translation units and the torch binding.
//
// It carries raw pointers and sizes only, so the heavy .cu files never include torch and the
// binding never includes CUTLASS. Each entry returns nullptr on success or a static error text.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kernel_core_cutlass {

// Tile configurations (see tiles.py for which M range gets which, and why). The numbers are part
// of the Python <-> C++ contract: keep them in sync with tiles.TileConfig.
enum TileConfigId : int {
  kSwap64x16 = 0,   // SwapAB, pingpong, 64 (N) x 16 (M) x 128
  kSwap64x64 = 1,   // SwapAB, pingpong, 64 (N) x 64 (M) x 128
  kPingpong64x128 = 2,   // pingpong, 64 (M) x 128 (N) x 128
  kCooperative128x128 = 3,  // cooperative, 128 x 128 x 128, cluster 2x1
  kCooperative128x256 = 4,  // cooperative, 128 x 256 x 128, cluster 2x1
  kCooperative256x128 = 5,  // cooperative, 256 x 128 x 128, cluster 1x2
  kPingpong64x256 = 6,  // pingpong, 64 x 256 x 128
  kSwap64x16K256 = 7,  // SwapAB, one consumer warpgroup per tile (not persistent), 64 x 16 x 256
  kSwap64x64K256 = 8,  // SwapAB, one consumer warpgroup per tile (not persistent), 64 x 64 x 256
  kPingpong64x128Cluster2 = 9,  // pingpong, 64 x 128 x 128, cluster 2x1
  kPingpong128x128Cluster2 = 10,  // pingpong, 128 x 128 x 128, cluster 2x1
  kCooperative128x128StreamK = 11,  // cooperative, 128 x 128 x 128, stream-K tile scheduler
  // 128 x 128 x 128 with the cluster along N: each activation tile multicast to the CTAs of
  // neighbouring weight tiles (cuBLAS's nvjet 128x128 tiles at M >= 128; see tiles.py).
  kPingpong128x128ClusterN2 = 12,  // pingpong, cluster 1x2
  kPingpong128x128ClusterN4 = 13,  // pingpong, cluster 1x4
  kCooperative128x128ClusterN2 = 14,  // cooperative, cluster 1x2
  kPingpong128x128Cluster2x4 = 15,  // pingpong, cluster 2x4 (8 CTAs: the portable maximum)
  kSwap64x16K512 = 16,  // kSwap64x16K256 with 512-deep K steps (a swept decode candidate)
  kNumTileConfigs = 17,
};

// The tiles are compiled in four translation units per (operand, output) type pair, so the
// build runs on as many cores as there are units; the binding calls the unit of the tile's group.
enum TileGroup : int { kSmallM = 0, kMidM = 1, kLargeM = 2, kClusterN = 3, kNumTileGroups = 4 };
inline constexpr TileGroup kTileGroup[kNumTileConfigs] = {
    kSmallM, kSmallM, kMidM, kLargeM, kLargeM, kLargeM, kMidM, kSmallM, kSmallM, kMidM, kMidM, kLargeM,
    kClusterN, kClusterN, kClusterN, kClusterN, kSmallM,
};

// The order in which the persistent schedulers hand out output tiles, and how stream-K tiles
// split K: runtime arguments of CUTLASS's SM90 tile schedulers, so one compiled kernel serves
// every choice. The one-tile-per-CTA kernels (kSwap*K256) ignore them.
enum RasterOrder : int {
  kRasterHeuristic = 0,  // CUTLASS's choice: along the problem's longer tile side
  kRasterAlongM = 1,  // consecutive tiles walk down the tokens (M) and share a weight tile column
  kRasterAlongN = 2,  // consecutive tiles walk across the channels (N) and share an activation row
};
struct TileOrder {
  int raster = kRasterHeuristic;  // RasterOrder, in the caller's (M = tokens, N = channels) frame
  int swizzle = 1;  // 1, 2, 4 or 8: tiles visited in groups this wide across the raster direction
  int splits = 0;  // stream-K tiles only: 0 = stream-K, >= 2 = split-K into this many K slices
};

struct ScaledMmArgs {
  void const* x;  // (m, k) activations, K-major
  void const* w;  // (n, k) weight, K-major
  float const* token_scale;  // [m] or [1]
  bool token_scale_per_row;
  float const* channel_scale;  // [n] or [1]
  bool channel_scale_per_col;
  float const* token_zp_neg;  // -zero_point as float, [m] or [1]; nullptr: symmetric
  bool token_zp_per_row;
  float const* channel_colsum;  // sum_k W_q[n, k] as float, [n]; read only with a zero point
  void const* bias;  // [n] in the output dtype, or nullptr
  void* out;  // (m, n) row-major
  int m, n, k;
  int device, sm_count;
  void* workspace;
  size_t workspace_bytes;
  int64_t stream;
  // Launch with programmatic dependent launch: the GEMM's prologue overlaps the end of the kernel
  // before it (the activation quantizer); every access to what that kernel writes waits for it.
  bool pdl;
  // The weight-first decode tiles (kSwap64x16K256, kSwap64x64K256, kSwap64x16K512): weight stages
  // requested before that wait (WeightFirstMainloop; 0 none, -1 all); the other tiles ignore it.
  int weight_lead_stages;
  TileOrder order;
};

// Block-scaled FP8: x_scale is [k/128, m_pad] (M-major, m_pad a multiple of 4 for TMA),
// w_scale is [k/128, n/128] (N-major).
struct BlockScaledMmArgs {
  void const* x;
  void const* w;
  float const* x_scale;
  float const* w_scale;
  void const* bias;
  void* out;
  int m, n, k, m_pad;
  int device, sm_count;
  void* workspace;
  size_t workspace_bytes;
  int64_t stream;
  TileOrder order;
};

enum BlockTileConfigId : int {
  kBlockPingpong64x128 = 0,
  kBlockCooperative128x128 = 1,
  kBlockCooperative128x128StreamK = 2,  // stream-K tile scheduler
  kBlockCooperative128x128Cluster2 = 3,  // cluster 2x1: two M tiles share the weight tile
  kBlockPingpong64x64 = 4,  // pingpong, 64 x 64 x 128, weight scales per 64 rows
  kBlockCooperative128x64 = 5,  // cooperative, 128 x 64 x 128, weight scales per 64 rows
  kNumBlockTileConfigs = 6,
};
// Weight rows per weight-scale value each block tile reads (w_scale is [k/128, ceil(n/rows)]).
inline constexpr int kBlockWeightScaleRows[kNumBlockTileConfigs] = {128, 128, 128, 128, 64, 64};
// The block tiles are compiled in two translation units per output dtype (those reading the
// checkpoint's 128-row weight scales, and the narrower ones), built in parallel like the W8A8 ones.
enum BlockTileGroup : int { kBlockWide = 0, kBlockNarrow = 1, kNumBlockTileGroups = 2 };
inline constexpr BlockTileGroup kBlockTileGroup[kNumBlockTileConfigs] = {
    kBlockWide, kBlockWide, kBlockWide, kBlockWide, kBlockNarrow, kBlockNarrow,
};

// One entry per (operands, output, tile group); each runs the tiles of its group.
using ScaledMmEntry = const char* (*)(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_bf16_small_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_bf16_mid_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_bf16_large_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_bf16_cluster_n(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_f16_small_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_f16_mid_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_f16_large_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_fp8_f16_cluster_n(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_bf16_small_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_bf16_mid_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_bf16_large_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_bf16_cluster_n(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_f16_small_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_f16_mid_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_f16_large_m(int config, ScaledMmArgs const& args);
const char* scaled_mm_int8_f16_cluster_n(int config, ScaledMmArgs const& args);
using BlockScaledMmEntry = const char* (*)(int config, BlockScaledMmArgs const& args);
const char* fp8_block_scaled_mm_bf16_wide(int config, BlockScaledMmArgs const& args);
const char* fp8_block_scaled_mm_bf16_narrow(int config, BlockScaledMmArgs const& args);
const char* fp8_block_scaled_mm_f16_wide(int config, BlockScaledMmArgs const& args);
const char* fp8_block_scaled_mm_f16_narrow(int config, BlockScaledMmArgs const& args);

}  // namespace kernel_core_cutlass
