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
  kNumTileConfigs = 7,
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
};

enum BlockTileConfigId : int {
  kBlockPingpong64x128 = 0,
  kBlockCooperative128x128 = 1,
  kNumBlockTileConfigs = 2,
};

const char* fp8_scaled_mm_bf16(int config, ScaledMmArgs const& args);
const char* fp8_scaled_mm_f16(int config, ScaledMmArgs const& args);
const char* int8_scaled_mm_bf16(int config, ScaledMmArgs const& args);
const char* int8_scaled_mm_f16(int config, ScaledMmArgs const& args);
const char* fp8_block_scaled_mm_bf16(int config, BlockScaledMmArgs const& args);
const char* fp8_block_scaled_mm_f16(int config, BlockScaledMmArgs const& args);

}  // namespace kernel_core_cutlass
