// How fast can a tile kernel block store its outputs? A standalone probe for the H100 / H200.
//
// The tile kernels (csrc/tile_gemm.cuh) hold their sums as wgmma accumulators with the weight as
// the A operand: lane (g, t) of a warp holds weight rows g and g + 8 of the warp's 16 rows for
// tokens 8 q + 2 t and 8 q + 2 t + 1. The output is [M, N] row-major, so a token's outputs are
// contiguous along the weight rows. The stream-K trace (NOTES.md v33) measured a 128 x 256 block's
// store at ~10 us against ~3 us for 128 KB of coalesced fp32 pieces; this probe times the ways a
// block can store one such tile, every block of one wave at once, back to back:
//
//   0 scalar: the current store_block, one 2-byte store per element (a warp's store instruction
//     writes 4 tokens x 16 bytes: four 128-byte lines, 16 bytes each);
//   1 warp: each warp transposes its 16 rows x 16 tokens through 512 bytes of its own shared
//     memory (stmatrix .trans), then one 16-byte store per lane (16 lines, 32 bytes each);
//   2 warpgroup: a warpgroup's 64 rows x 16 tokens through 2 KB (double-buffered, a named
//     barrier a slice), one 16-byte store per thread (a warp writes 4 whole 128-byte lines);
//   3 pieces: the stream-K piece store for reference, 4-byte fp32 stores, coalesced.
//
// Build and run on the device: run_gpu.sh KCM_STORE_PROBE=1 (writes $OUT/store.json); by hand
// (repo root): nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a
//   -I plugins/marlin_plugin/kernel_core_marlin/csrc
//   -o plugins/marlin_plugin/gpu/build/probe_store plugins/marlin_plugin/gpu/probe_store.cu
// Run: probe_store > store.json (one JSON object; every variant's tile checked against variant 0).
// The pairs, shared-memory addresses and stmatrix are the kernel's own (tile_gemm.cuh).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "tile_gemm.cuh"

#define CHECK(call)                                                                    \
  do {                                                                                 \
    cudaError_t err_ = (call);                                                         \
    if (err_ != cudaSuccess) {                                                         \
      fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(err_));     \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

constexpr int kThreads = 256;  // two consumer warpgroups, 128 weight rows (RW = 1)
constexpr int kRows = 128;

// Per-thread sums shaped like the accumulators, from a runtime seed so nothing folds.
template <int BMX>
__device__ __forceinline__ void make_sums(float (&acc)[BMX / 2], float seed, int tid, int rep) {
#pragma unroll
  for (int e = 0; e < BMX / 2; ++e) acc[e] = seed * static_cast<float>(tid * 131 + e * 7 + rep);
}

// Slice s's four matrices as store_slice packs them: pair i holds elements 8 s + 2 i, + 1.
template <int BMX>
__device__ __forceinline__ void slice_pairs(const float (&acc)[BMX / 2], int s,
                                            uint32_t (&pairs)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    pairs[i] = kcm::floats_to_pair<__nv_bfloat16>(acc[8 * s + 2 * i], acc[8 * s + 2 * i + 1]);
  }
}

template <int BMX, int V>
__global__ void __launch_bounds__(kThreads, 1)
    store_tiles(__nv_bfloat16* out, float* pieces, int n, int reps, float seed) {
#ifdef KCM_TILE_SM90  // the kernel's stmatrix wrapper: the sm_90a device pass only
  __shared__ __align__(128) unsigned char stage[2 * 2 * 2048];
  const int tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * kRows;
  for (int rep = 0; rep < reps; ++rep) {
    float acc[BMX / 2];
    make_sums<BMX>(acc, seed, tid, rep);
    __nv_bfloat16* o = out + static_cast<size_t>(rep) * BMX * n;
    if constexpr (V == 0) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = n0 + warp * 16 + g + 8 * half;
#pragma unroll
        for (int q = 0; q < BMX / 8; ++q) {
#pragma unroll
          for (int lo = 0; lo < 2; ++lo) {
            const int m = 8 * q + 2 * t + lo;
            o[static_cast<size_t>(m) * n + row] = __float2bfloat16_rn(acc[4 * q + 2 * half + lo]);
          }
        }
      }
    } else if constexpr (V == 1) {
      // 16 tokens x 16 rows a slice, [token][row] with 32-byte rows; matrix i = 2 (q & 1) + half.
      unsigned char* buf = stage + warp * 512;
      const int i = lane >> 3, j = lane & 7;
      const uint32_t dst = kcm::shared_address(buf + ((i >> 1) * 8 + j) * 32 + (i & 1) * 16);
#pragma unroll
      for (int s = 0; s < BMX / 16; ++s) {
        uint32_t pairs[4];
        slice_pairs<BMX>(acc, s, pairs);
        kcm::stmatrix_trans_x4(dst, pairs);
        __syncwarp();
        const uint4 v = *reinterpret_cast<const uint4*>(buf + lane * 16);
        __syncwarp();
        const int m = 16 * s + (lane >> 1);
        *reinterpret_cast<uint4*>(o + static_cast<size_t>(m) * n + n0 + warp * 16 +
                                  (lane & 1) * 8) = v;
      }
    } else if constexpr (V == 2) {
      // A warpgroup's 64 rows x 16 tokens a slice, [token][row] with 128-byte rows whose 16-byte
      // units are swizzled by the token (unit u of token r at u ^ (r & 7)): conflict-free both ways.
      const int wg = warp >> 2, w4 = warp & 3, wtid = tid & 127;
      const int i = lane >> 3, j = lane & 7;
#pragma unroll
      for (int s = 0; s < BMX / 16; ++s) {
        unsigned char* buf = stage + (wg * 2 + (s & 1)) * 2048;
        const int token = (i >> 1) * 8 + j;
        const int unit = (w4 * 2 + (i & 1)) ^ (token & 7);
        uint32_t pairs[4];
        slice_pairs<BMX>(acc, s, pairs);
        kcm::stmatrix_trans_x4(kcm::shared_address(buf + token * 128 + unit * 16), pairs);
        asm volatile("bar.sync %0, 128;" ::"r"(2 + wg) : "memory");
        const int rt = wtid >> 3, ru = wtid & 7;
        const uint4 v = *reinterpret_cast<const uint4*>(buf + rt * 128 + ((ru ^ (rt & 7)) * 16));
        const int m = 16 * s + rt;
        *reinterpret_cast<uint4*>(o + static_cast<size_t>(m) * n + n0 + wg * 64 + ru * 8) = v;
      }
    } else {
      float* mine = pieces + (static_cast<size_t>(rep) * gridDim.x + blockIdx.x) * (BMX / 2) * 256;
#pragma unroll
      for (int e = 0; e < BMX / 2; ++e) __stcg(mine + e * 256 + tid, acc[e]);
    }
  }
#endif
}

template <int BMX, int V>
float time_us(__nv_bfloat16* out, float* pieces, int blocks, int reps, int launches) {
  const int n = blocks * kRows;
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int w = 0; w < 3; ++w) store_tiles<BMX, V><<<blocks, kThreads>>>(out, pieces, n, reps, 1e-3f);
  CHECK(cudaEventRecord(a));
  for (int l = 0; l < launches; ++l)
    store_tiles<BMX, V><<<blocks, kThreads>>>(out, pieces, n, reps, 1e-3f);
  CHECK(cudaEventRecord(b));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaGetLastError());
  return ms * 1000.0f / launches;
}

// Variant V's first tile against variant 0's, element by element (bits).
template <int BMX, int V>
long mismatches(__nv_bfloat16* out, int blocks) {
  const int n = blocks * kRows;
  const size_t count = static_cast<size_t>(BMX) * n;
  std::vector<uint16_t> want(count), got(count);
  CHECK(cudaMemset(out, 0xFF, count * 2));  // NaN poison
  store_tiles<BMX, 0><<<blocks, kThreads>>>(out, nullptr, n, 1, 1e-3f);
  CHECK(cudaMemcpy(want.data(), out, count * 2, cudaMemcpyDeviceToHost));
  CHECK(cudaMemset(out, 0xFF, count * 2));
  store_tiles<BMX, V><<<blocks, kThreads>>>(out, nullptr, n, 1, 1e-3f);
  CHECK(cudaMemcpy(got.data(), out, count * 2, cudaMemcpyDeviceToHost));
  long bad = 0;
  for (size_t e = 0; e < count; ++e) bad += want[e] != got[e] || want[e] == 0xFFFF;
  return bad;
}

template <int BMX>
void run(int blocks, bool first) {
  const int reps = 16, launches = 20;
  __nv_bfloat16* out;
  float* pieces;
  CHECK(cudaMalloc(&out, static_cast<size_t>(reps) * BMX * blocks * kRows * 2));
  CHECK(cudaMalloc(&pieces, static_cast<size_t>(reps) * blocks * (BMX / 2) * 256 * 4));
  const float base = time_us<BMX, 0>(out, pieces, blocks, 0, launches);  // launch, no stores
  const float v0 = time_us<BMX, 0>(out, pieces, blocks, reps, launches);
  const float v1 = time_us<BMX, 1>(out, pieces, blocks, reps, launches);
  const float v2 = time_us<BMX, 2>(out, pieces, blocks, reps, launches);
  const float v3 = time_us<BMX, 3>(out, pieces, blocks, reps, launches);
  const long bad1 = mismatches<BMX, 1>(out, blocks), bad2 = mismatches<BMX, 2>(out, blocks);
  printf("%s    {\"bmx\": %d, \"blocks\": %d, \"tiles_per_block\": %d, \"us_per_tile\": "
         "{\"scalar\": %.3f, \"warp\": %.3f, \"warpgroup\": %.3f, \"pieces_fp32\": %.3f}, "
         "\"empty_launch_us\": %.2f, \"mismatches\": {\"warp\": %ld, \"warpgroup\": %ld}}",
         first ? "" : ",\n", BMX, blocks, reps, (v0 - base) / reps, (v1 - base) / reps,
         (v2 - base) / reps, (v3 - base) / reps, base, bad1, bad2);
  CHECK(cudaFree(out));
  CHECK(cudaFree(pieces));
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  printf("{\"device\": \"%s\", \"sms\": %d, \"cases\": [\n", prop.name, sms);
  run<64>(sms, true);
  run<128>(sms, false);
  run<256>(sms, false);
  printf("\n]}\n");
  return 0;
}
