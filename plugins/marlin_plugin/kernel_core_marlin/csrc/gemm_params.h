// Plain C++ view of the kernels (no CUDA headers), shared by the CUDA launchers and the bindings.
#pragma once

#include <stdint.h>

namespace kcm {

enum Format : int { kInt4 = 0, kInt8 = 1, kFp4 = 2, kFp8 = 3 };
enum Dtype : int { kHalf = 0, kBfloat16 = 1 };

inline constexpr int vectors_per_lane(int fmt) { return (fmt == kInt8 || fmt == kFp8) ? 2 : 1; }

struct GemmParams {
  const void* x;             // [M, K] activations, row stride K (already permuted for act-order);
                             // tile variant 2: the activation image [C, M rounded up to 8, 64]
  const void* w;             // [N16, C, V, 32, 4] int32 words (see layout.py)
  const uint32_t* gscale;    // [N16, G, 8] pairs (row g, row g + 8) of T: multiplier per group
  const uint32_t* zeros;     // [N16, G, 8] pairs of T zero-point codes, or null (use zconst)
  const int* gtab;           // [C * 4] group of each 16-channel block, or null (k / group_size)
  const float* chan;         // [N] fp32 multiplier of each output row's sum, or null
  const void* bias;          // [N] T, or null
  void* out;                 // [M, N] T (gemm) or [N, C * 64] T (dequantize)
  int M, N, K, C, N16, G, group_size, zconst, WN, WK;
  int pdl;                   // 1: launch as a programmatic dependent of the kernel before it on
                             // the stream (stream kernel: bulk pipelines 2-6; tile kernel:
                             // variants 2 and 3; the launchers refuse others)
  // Tile variant 3 (stream-K) only: the partial sums of tiles shared by several blocks, one
  // slot of 128 RW x BMX floats per block, and one arrival counter per block (zero between
  // launches: the block that sums a tile resets its counter). stream_blocks: the blocks the
  // workspace serves, at most that many are launched.
  float* partials;
  int* arrivals;
  int stream_blocks;
  // Set by the launcher: the unit count T, and {magic, shift} pairs dividing by the chunk count C,
  // the launched block count G, T and the token-block count (tile_launch.cuh, fast_divisor): the
  // kernel's segment arithmetic then needs no division instruction sequence, whose results ptxas
  // keeps per thread, and stays uniform (TileStream).
  int stream_units;
  unsigned stream_div[4][2];
  // Probe builds only (gpu/trace_stream_k.py): the stream-K kernel's per-block timeline, written
  // by its traced instance (TileProbe kTileProbeStreamTrace); null and never read otherwise.
  unsigned long long* trace;
};

// Whether every 64-channel chunk of every row lies in one scale group (no act-order table; one
// group, or groups of a multiple of 64 channels): what pipeline 6, which applies one scale per row
// to a whole chunk's mma sum, needs besides 4-bit integer codes.
inline bool scale_groups_hold_chunks(const GemmParams& p) {
  return p.gtab == nullptr && (p.G == 1 || p.group_size % 64 == 0);
}

// Each returns a cudaError_t value (0 = success). mt: 8-column tiles of M per block (1, 2, 4, 8);
// r: 16-row tiles per warp (1, 2); pipeline: 0 register batches, 1 cp.async ring, 2 bulk
// copies (SM90), 3 bulk copies with the flat consumer (SM90), 4 the flat consumer decoding only a
// pass's own tiles in its last tile group (SM90; 4-bit codes, mt <= 2), 5 pipeline 4 on a plan
// that may take a 2-stage ring, 6 pipeline 5 with the group scales multiplied into each chunk's
// mma sums (4-bit integer codes, scale groups of whole 64-channel chunks). p.pdl with 2-6 only.
int launch_gemm_half(const GemmParams& p, int fmt, int mt, int r, int pipeline, void* stream);
int launch_gemm_bfloat16(const GemmParams& p, int fmt, int mt, int r, int pipeline, void* stream);
int launch_dequantize_half(const GemmParams& p, int fmt, void* stream);
int launch_dequantize_bfloat16(const GemmParams& p, int fmt, void* stream);
const char* error_string(int code);

}  // namespace kcm
