// A decode W8A8 FP8 GEMM that quantizes its own activations (a probe, not a plugin kernel).
//
// At M <= 16 the plugin's apply is two launches: a row quantizer (bf16 -> FP8 codes and a scale a
// token) and the weight-streaming GEMM, launched as its programmatic dependent; the GEMM can request
// its first weight stage early but waits for the quantizer's whole grid before it reads a code, and
// on 8192 x 8192 the pair costs ~1.3-1.9 us more than the GEMM alone (NOTES.md v20, v21). Here one
// launch does both: each CTA streams its 64 weight rows through a TMA ring it starts at once, takes
// every token's amax from the bf16 rows (L2-resident after the first CTAs read them), then writes
// each 256-deep slice of the codes into a shared-memory operand of its own (three slots, in the
// 128-byte-swizzled K-major layout the wgmma reads) while the wgmmas of the two slices before run.
// The weight is the wgmma's A operand (64 rows), the tokens its N (16, zero-padded).
//
// out[m, n] = s_tok[m] * s_w[n] * sum_k q[m, k] * w[n, k] + bias[n], with s_tok[m] = max(amax_m /
// 448, 1 / (448 * 512)) and q = fp8(clamp(x * (1 / s_tok), +-448)): the plugin's per-token formula
// with a product for its quotient (see codes2).
//
// Built by probe_fused_decode.py with nvcc into a shared library called through ctypes: CUTLASS
// (CuTe) headers only, no torch.
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>

using namespace cute;

namespace kc_fused_decode {

constexpr int kTileN = 64;    // weight rows a CTA: the wgmma's M
constexpr int kTokens = 16;   // the wgmma's N: tokens, zero-padded past M
constexpr int kTileK = 256;   // K a stage: 256 contiguous bytes of each weight row
constexpr int kThreads = 128; // one warpgroup: it issues the TMA loads, converts and multiplies
// Activation slices held in registers ahead of their conversion: a slice's bf16 values come from
// L2 (~1 us under load), a slice's wgmmas take ~0.45 us, so loading one slice ahead serialized the
// loop on L2 latency (v23's first timing: 3-5x slower than the plugin's apply).
constexpr int kAhead = 4;
constexpr float kFp8Max = 448.0f;
constexpr float kMinScale = 1.0f / (448.0f * 512.0f);

using Element = cutlass::float_e4m3_t;
using Atom = GMMA::Layout_K_SW128_Atom<Element>;
template <int Stages>
using WeightLayout = decltype(tile_to_shape(Atom{}, make_shape(Int<kTileN>{}, Int<kTileK>{}, Int<Stages>{})));
// Three code slots: the slice being converted is two slices ahead of the oldest wgmma batch that
// may still be running, so the conversion overlaps two batches instead of waiting for one.
constexpr int kCodeSlots = 3;
using CodeLayout = decltype(tile_to_shape(Atom{}, make_shape(Int<kTokens>{}, Int<kTileK>{}, Int<kCodeSlots>{})));

template <int Stages>
struct SharedStorage {
  alignas(1024) ArrayEngine<Element, cosize_v<WeightLayout<Stages>>> weight;
  alignas(1024) ArrayEngine<Element, cosize_v<CodeLayout>> codes;
  alignas(8) uint64_t full[Stages];
  float token_scale[kTokens];
  float warp_amax[kThreads / 32][kTokens];
};

// Eight bf16 values of a 16-byte word, as floats.
__device__ inline void unpack8(uint4 word, float (&v)[8]) {
  auto const* pairs = reinterpret_cast<__nv_bfloat162 const*>(&word);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float2 f = __bfloat1622float2(pairs[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}

// Two FP8 E4M3 codes of x * (1 / scale), rounded to nearest even; the conversion's satfinite
// mode clamps to +-448 as the quantizer's clamp does. A product, not the quantizer's quotient:
// an IEEE division is a reciprocal and a branch to a slow-path call per value (v23b's SASS: 32
// CALLs a slice a thread); the product may round one value in a few million to the neighbouring
// code.
__device__ inline uint16_t codes2(float a, float b, float inv_scale) {
  return static_cast<uint16_t>(
      __nv_cvt_float2_to_fp8x2(make_float2(a * inv_scale, b * inv_scale), __NV_SATFINITE, __NV_E4M3));
}

// A 16-byte store to shared memory (the compiler cannot tell a CuTe swizzled element's address
// is shared and would emit four generic 4-byte stores).
__device__ inline void store_shared16(void* generic, uint32_t const (&words)[4]) {
  auto const addr = static_cast<uint32_t>(__cvta_generic_to_shared(generic));
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(words[0]), "r"(words[1]),
               "r"(words[2]), "r"(words[3])
               : "memory");
}

template <int Stages, class TmaWeight>
__global__ void __launch_bounds__(kThreads, 1)
fused_decode_fp8(CUTE_GRID_CONSTANT TmaWeight const tma_weight, int m_tokens, int n, int k,
                 __nv_bfloat16 const* __restrict__ x, float const* __restrict__ weight_scale,
                 __nv_bfloat16 const* __restrict__ bias, __nv_bfloat16* __restrict__ out) {
  extern __shared__ __align__(1024) char shared_memory[];
  auto& smem = *reinterpret_cast<SharedStorage<Stages>*>(shared_memory);
  Tensor s_weight = make_tensor(make_smem_ptr(smem.weight.begin()), WeightLayout<Stages>{});  // (64, 256, Stages)
  Tensor s_codes = make_tensor(make_smem_ptr(smem.codes.begin()), CodeLayout{});  // (16, 256, slots)

  int const tid = threadIdx.x;
  int const warp = tid / 32;
  int const lane = tid % 32;
  bool const issuer = tid == 0;
  int const k_tiles = k / kTileK;

  Tensor m_weight = tma_weight.get_tma_tensor(make_shape(n, k));
  Tensor g_weight = local_tile(m_weight, make_tile(Int<kTileN>{}, Int<kTileK>{}), make_coord(blockIdx.x, _));
  auto [t_gw, t_sw] = tma_partition(tma_weight, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(s_weight),
                                    group_modes<0, 2>(g_weight));  // (TMA, k) and (TMA, stage)
  constexpr int kStageBytes = kTileN * kTileK;
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;

  if (issuer) {
#pragma unroll
    for (int s = 0; s < Stages; ++s) FullBarrier::init(&smem.full[s], 1);
    cutlass::arch::fence_barrier_init();
  }
  // Rows past M multiply as zero codes; the conversion below writes rows < M only.
  for (int i = tid; i < int(sizeof(smem.codes)) / 16; i += kThreads) {
    reinterpret_cast<uint4*>(smem.codes.begin())[i] = make_uint4(0, 0, 0, 0);
  }
  __syncthreads();

  // The weight first: its stages need nothing from the activations.
  int k_loaded = 0;
  if (issuer) {
    for (; k_loaded < Stages && k_loaded < k_tiles; ++k_loaded) {
      FullBarrier::arrive_and_expect_tx(&smem.full[k_loaded], kStageBytes);
      copy(tma_weight.with(smem.full[k_loaded]), t_gw(_, k_loaded), t_sw(_, k_loaded));
    }
  }

  // Every token's amax, all tokens at once: each step loads one 16-byte word of every row (M loads
  // in flight a thread), so the pass costs ~K / 1024 L2 round trips; v23 / v23b walked the tokens
  // one after the other, ~2 round trips each (at M=16 ~20 us of the 78-92 us they took).
  float amax[kTokens];
#pragma unroll
  for (int m = 0; m < kTokens; ++m) amax[m] = 0.0f;
  for (int i = tid; i < k / 8; i += kThreads) {
    uint4 words[kTokens];
#pragma unroll
    for (int m = 0; m < kTokens; ++m) {
      if (m < m_tokens) words[m] = __ldg(reinterpret_cast<uint4 const*>(x + size_t(m) * k) + i);
    }
#pragma unroll
    for (int m = 0; m < kTokens; ++m) {
      if (m < m_tokens) {
        float v[8];
        unpack8(words[m], v);
#pragma unroll
        for (int j = 0; j < 8; ++j) amax[m] = fmaxf(amax[m], fabsf(v[j]));
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kTokens; ++m) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      amax[m] = fmaxf(amax[m], __shfl_xor_sync(0xffffffffu, amax[m], offset));
    }
    if (lane == 0) smem.warp_amax[warp][m] = amax[m];
  }
  __syncthreads();
  if (tid < m_tokens) {
    float amax = smem.warp_amax[0][tid];
#pragma unroll
    for (int w = 1; w < kThreads / 32; ++w) amax = fmaxf(amax, smem.warp_amax[w][tid]);
    smem.token_scale[tid] = fmaxf(amax / kFp8Max, kMinScale);
  }
  __syncthreads();

  // A slice is M x 16 chunks of 16 values (one 16-byte run of codes each); thread t converts
  // chunks t and t + 128: one chunk a thread up to M=8 (v23b: 32 values a thread, all of them in
  // the first ceil(M / 4) warps), every warp busy from M=7.
  constexpr int kChunksPerToken = kTileK / 16;
  constexpr int kChunksPerThread = kTokens * kChunksPerToken / kThreads;  // 2
  int const chunks = m_tokens * kChunksPerToken;
  uint4 const* chunk_src[kChunksPerThread];
  float chunk_inv[kChunksPerThread];
#pragma unroll
  for (int c = 0; c < kChunksPerThread; ++c) {
    int const chunk = tid + c * kThreads;
    int const token = chunk < chunks ? chunk / kChunksPerToken : 0;
    chunk_src[c] = reinterpret_cast<uint4 const*>(x + size_t(token) * k + (chunk % kChunksPerToken) * 16);
    chunk_inv[c] = 1.0f / smem.token_scale[token];
  }
  auto load = [&](int k_tile, uint4 (&r)[kChunksPerThread][2]) {
    if (k_tile >= k_tiles) return;
#pragma unroll
    for (int c = 0; c < kChunksPerThread; ++c) {
      if (tid + c * kThreads < chunks) {
        uint4 const* src = chunk_src[c] + size_t(k_tile) * (kTileK / 8);
        r[c][0] = __ldg(src);
        r[c][1] = __ldg(src + 1);
      }
    }
  };
  auto store_codes = [&](uint4 const (&r)[kChunksPerThread][2], int slot) {
#pragma unroll
    for (int c = 0; c < kChunksPerThread; ++c) {
      int const chunk = tid + c * kThreads;
      if (chunk >= chunks) continue;
      float v[16];
      unpack8(r[c][0], *reinterpret_cast<float(*)[8]>(v));
      unpack8(r[c][1], *reinterpret_cast<float(*)[8]>(v + 8));
      uint32_t words[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        words[j] = uint32_t(codes2(v[4 * j], v[4 * j + 1], chunk_inv[c])) |
                   (uint32_t(codes2(v[4 * j + 2], v[4 * j + 3], chunk_inv[c])) << 16);
      }
      // 16 consecutive K of one row stay contiguous under the 128-byte swizzle (it moves 16-byte units).
      store_shared16(raw_pointer_cast(&s_codes(chunk / kChunksPerToken, (chunk % kChunksPerToken) * 16, slot)),
                     words);
    }
  };

  TiledMMA mma = make_tiled_mma(SM90::GMMA::MMA_64x16x32_F32E4M3E4M3_SS_TN<>{});
  ThrMMA thr_mma = mma.get_thread_slice(tid);
  Tensor t_rw = thr_mma.make_fragment_A(thr_mma.partition_A(s_weight));  // (MMA, MMA_M, MMA_K, stage)
  Tensor t_rc = thr_mma.make_fragment_B(thr_mma.partition_B(s_codes));   // (MMA, MMA_N, MMA_K, slot)
  Tensor accum = partition_fragment_C(mma, Shape<Int<kTileN>, Int<kTokens>>{});
  clear(accum);

  // regs[a] holds the next unconverted slice s with s % kAhead == a.
  uint4 regs[kAhead][kChunksPerThread][2];
#pragma unroll
  for (int a = 0; a < kAhead; ++a) load(a, regs[a]);
  store_codes(regs[0], 0);
  load(kAhead, regs[0]);
  for (int base = 0; base < k_tiles; base += kAhead) {
#pragma unroll
    for (int p = 0; p < kAhead; ++p) {
      int const k_tile = base + p;
      if (k_tile < k_tiles) {
        int const stage = k_tile % Stages;
        int const slot = k_tile % kCodeSlots;
        // The slot's codes, written through the generic proxy, become visible to the wgmma's reads.
        cutlass::arch::fence_view_async_shared();
        __syncthreads();
        // Every thread passed warpgroup_wait<1> of tile k_tile - 1, so the wgmmas of tile
        // k_tile - 2 are done and its stage can take the next weight tile.
        if (issuer && k_tile >= 2 && k_loaded < k_tiles) {
          int const free_stage = (k_tile - 2) % Stages;
          FullBarrier::arrive_and_expect_tx(&smem.full[free_stage], kStageBytes);
          copy(tma_weight.with(smem.full[free_stage]), t_gw(_, k_loaded), t_sw(_, free_stage));
          ++k_loaded;
        }
        FullBarrier::wait(&smem.full[stage], (k_tile / Stages) & 1);
        warpgroup_fence_operand(accum);
        warpgroup_arrive();
        gemm(mma, t_rw(_, _, _, stage), t_rc(_, _, _, slot), accum);
        warpgroup_commit_batch();
        // The next slice's slot was last read by tile k_tile - 2, whose wgmmas the wait below
        // (in the previous slice) saw finish: convert while tiles k_tile - 1 and k_tile run.
        if (k_tile + 1 < k_tiles) store_codes(regs[(p + 1) % kAhead], (k_tile + 1) % kCodeSlots);
        load(k_tile + 1 + kAhead, regs[(p + 1) % kAhead]);
        warpgroup_wait<1>();
        warpgroup_fence_operand(accum);
      }
    }
  }
  warpgroup_wait<0>();
  warpgroup_fence_operand(accum);

  Tensor coords = thr_mma.partition_C(make_identity_tensor(Shape<Int<kTileN>, Int<kTokens>>{}));
#pragma unroll
  for (int i = 0; i < size(accum); ++i) {
    int const row = get<0>(coords(i));
    int const token = get<1>(coords(i));
    int const channel = blockIdx.x * kTileN + row;
    if (token < m_tokens) {
      float v = accum(i) * smem.token_scale[token] * weight_scale[channel];
      if (bias != nullptr) v += __bfloat162float(bias[channel]);
      out[size_t(token) * n + channel] = __float2bfloat16(v);
    }
  }
}

template <int Stages>
int launch(void const* x, void const* weight, float const* weight_scale, void const* bias, void* out,
           int m, int n, int k, cudaStream_t stream) {
  Tensor g_weight = make_tensor(make_gmem_ptr(static_cast<Element const*>(weight)), make_shape(n, k),
                                make_stride(k, Int<1>{}));
  auto tma = make_tma_atom(SM90_TMA_LOAD{}, g_weight, WeightLayout<Stages>{}(_, _, 0),
                           make_shape(Int<kTileN>{}, Int<kTileK>{}));
  auto kernel = fused_decode_fp8<Stages, decltype(tma)>;
  int const smem = int(sizeof(SharedStorage<Stages>));
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess) return 3;
  kernel<<<n / kTileN, kThreads, smem, stream>>>(tma, m, n, k, static_cast<__nv_bfloat16 const*>(x), weight_scale,
                                                  static_cast<__nv_bfloat16 const*>(bias),
                                                  static_cast<__nv_bfloat16*>(out));
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

}  // namespace kc_fused_decode

// 0 on success; 1: shape not served (M in 1..16, N % 64 == 0, K % 256 == 0, stages 4, 8 or 12);
// 3 / 4: the attribute or the launch failed.
extern "C" int kc_fused_decode_fp8(void const* x, void const* weight, float const* weight_scale,
                                   void const* bias, void* out, int m, int n, int k, int stages,
                                   void* stream) {
  using namespace kc_fused_decode;
  if (m < 1 || m > kTokens || n % kTileN != 0 || k % kTileK != 0 || k <= 0) return 1;
  auto const s = static_cast<cudaStream_t>(stream);
  if (stages == 4) return kc_fused_decode::launch<4>(x, weight, weight_scale, bias, out, m, n, k, s);
  if (stages == 8) return kc_fused_decode::launch<8>(x, weight, weight_scale, bias, out, m, n, k, s);
  if (stages == 12) return kc_fused_decode::launch<12>(x, weight, weight_scale, bias, out, m, n, k, s);
  return 1;
}
