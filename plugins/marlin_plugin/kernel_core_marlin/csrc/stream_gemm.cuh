// Weight-only mixed-precision GEMM for SM80+ (W4A16 / W8A16), written for kernel-core-marlin.
//
// out[m, n] = chan[n] * sum_k x[m, k] * (decode(code[n, k]) * gscale[n, group(k)]) + bias[n]
//
// Layout (built once at load by kernel_core_marlin/layout.py): the weight is cut into tiles of
// 16 output rows x 64 input channels ("chunks"). One warp consumes one tile with four
// mma.m16n8k16 steps in which the *weight* is the A operand (16 rows of N) and the activations
// are the B operand (8 columns of M): "swap-AB", so M = 1..8 wastes no weight bandwidth. The K
// order inside a chunk is permuted so that lane (g, t) = (lane / 4, lane % 4) needs exactly the
// codes of rows g and g + 8 for input channels 16 t .. 16 t + 15 of the chunk, and exactly the
// activations x[m, 16 t .. 16 t + 15]: every weight load is one 16-byte load per lane (a warp
// reads 512 contiguous bytes) and every activation load is two 16-byte loads.
//
// Dequantization is bit arithmetic only: integer codes are OR-ed into the mantissa of a 16-bit
// float "magic" constant (bf16 128.0, fp16 1024.0) and the magic plus the zero point is
// subtracted; FP4/FP8 codes are moved into the exponent/mantissa fields of a 16-bit float and the
// exponent-bias difference is a power of two folded into the group scale at load time.
//
// Partition: a thread block holds WN x WK warps; the WK warps of one column split K and reduce
// through shared memory, so every block writes finished outputs (no global workspace, nothing to
// zero between CUDA-graph replays) and the grid has N / 16 / R / WN blocks per 8 * MT rows of M.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "gemm_params.h"

namespace kcm {

template <int FMT>
struct VecCount {
  static constexpr int value = (FMT == kInt8 || FMT == kFp8) ? 2 : 1;
};

template <typename T>
struct Half2Traits;

template <>
struct Half2Traits<half> {
  using T2 = half2;
  static constexpr uint32_t kMagic = 0x64006400u;  // 1024.0 twice: 10 mantissa bits
  static constexpr uint32_t kFp4Shift = 9;         // E2M1 exponent/mantissa bits land at 9..11
  static constexpr uint32_t kFp4Mask = 0x0E000E00u;
  static __device__ __forceinline__ uint32_t fp8_bits(uint32_t h) {
    return (h & 0x80008000u) | ((h >> 1) & 0x3F803F80u);
  }
};

template <>
struct Half2Traits<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static constexpr uint32_t kMagic = 0x43004300u;  // 128.0 twice: 7 mantissa bits
  static constexpr uint32_t kFp4Shift = 6;
  static constexpr uint32_t kFp4Mask = 0x01C001C0u;
  static __device__ __forceinline__ uint32_t fp8_bits(uint32_t h) {
    return (h & 0x80008000u) | ((h >> 4) & 0x07F007F0u);
  }
};

template <typename T>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) {
  using T2 = typename Half2Traits<T>::T2;
  T2 r = __hsub2(*reinterpret_cast<T2*>(&a), *reinterpret_cast<T2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

template <typename T>
__device__ __forceinline__ uint32_t add2(uint32_t a, uint32_t b) {
  using T2 = typename Half2Traits<T>::T2;
  T2 r = __hadd2(*reinterpret_cast<T2*>(&a), *reinterpret_cast<T2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

template <typename T>
__device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
  using T2 = typename Half2Traits<T>::T2;
  T2 r = __hmul2(*reinterpret_cast<T2*>(&a), *reinterpret_cast<T2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

// Explicit conversions: torch builds CUDA code with __CUDA_NO_HALF_CONVERSIONS__ and
// __CUDA_NO_BFLOAT16_CONVERSIONS__, which remove the implicit ones.
__device__ __forceinline__ float to_float(half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);

template <>
__device__ __forceinline__ half from_float<half>(float v) {
  return __float2half_rn(v);
}

template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__device__ __forceinline__ float low_to_float(uint32_t a) {
  return to_float(*reinterpret_cast<T*>(&a));
}

template <typename T>
__device__ __forceinline__ uint32_t floats_to_pair(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t floats_to_pair<half>(float lo, float hi) {
  half2 r = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&r);
}

template <>
__device__ __forceinline__ uint32_t floats_to_pair<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 r = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&r);
}

__device__ __forceinline__ uint32_t lop_and_or(uint32_t a, uint32_t mask, uint32_t bits) {
  // (a & mask) | bits in one LOP3 (0xEA = (A & B) | C).
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(bits));
  return r;
}

__device__ __forceinline__ uint4 load_stream(const int4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

template <typename T>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                          uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<half>(float c[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float c[4], const uint32_t a[4],
                                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Per-(row tile, chunk) decode constants of one lane: rows g (lo) and g + 8 (hi).
struct RowPair {
  uint32_t scale_lo, scale_hi;  // T2 (s, s)
  uint32_t off_lo, off_hi;      // T2 (magic + z, magic + z) for 4-bit and fp16 8-bit
  float zf_lo, zf_hi;           // 2^23 + z for bf16 8-bit (fp32 magic)
};

template <typename T, int FMT>
__device__ __forceinline__ RowPair make_row_pair(uint32_t scale_word, uint32_t zero_word) {
  RowPair rp;
  rp.scale_lo = __byte_perm(scale_word, 0, 0x1010);
  rp.scale_hi = __byte_perm(scale_word, 0, 0x3232);
  if constexpr (FMT == kInt4 || FMT == kInt8) {
    const uint32_t z_lo = __byte_perm(zero_word, 0, 0x1010);
    const uint32_t z_hi = __byte_perm(zero_word, 0, 0x3232);
    rp.off_lo = add2<T>(z_lo, Half2Traits<T>::kMagic);
    rp.off_hi = add2<T>(z_hi, Half2Traits<T>::kMagic);
    rp.zf_lo = 8388608.0f + low_to_float<T>(z_lo);
    rp.zf_hi = 8388608.0f + low_to_float<T>(z_hi);
  } else {
    rp.off_lo = rp.off_hi = 0;
    rp.zf_lo = rp.zf_hi = 0.0f;
  }
  return rp;
}

// Decode one mma step (16 rows x 16 channels) of a lane into the A fragment.
// 4-bit: word q holds pair i (register a[i]) in nibbles i (first channel) and i + 4 (second).
// 8-bit: q0 holds a[0] (bytes 0, 1) and a[1] (bytes 2, 3); q1 holds a[2] and a[3].
template <typename T, int FMT>
__device__ __forceinline__ void decode_step(uint32_t q0, uint32_t q1, const RowPair& rp,
                                            uint32_t a[4]) {
  using Tr = Half2Traits<T>;
  if constexpr (FMT == kInt4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = lop_and_or(q0 >> (4 * i), 0x000F000Fu, Tr::kMagic);
      a[i] = mul2<T>(sub2<T>(v, (i & 1) ? rp.off_hi : rp.off_lo), (i & 1) ? rp.scale_hi
                                                                           : rp.scale_lo);
    }
  } else if constexpr (FMT == kFp4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int shift = static_cast<int>(Tr::kFp4Shift) - 4 * i;
      const uint32_t em = shift >= 0 ? (q0 << shift) : (q0 >> (-shift));
      const uint32_t sign = (q0 << (12 - 4 * i)) & 0x80008000u;
      const uint32_t v = lop_and_or(em, Tr::kFp4Mask, sign);
      a[i] = mul2<T>(v, (i & 1) ? rp.scale_hi : rp.scale_lo);
    }
  } else if constexpr (FMT == kFp8) {
    const uint32_t h[4] = {__byte_perm(q0, 0, 0x1404), __byte_perm(q0, 0, 0x3424),
                           __byte_perm(q1, 0, 0x1404), __byte_perm(q1, 0, 0x3424)};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      a[i] = mul2<T>(Tr::fp8_bits(h[i]), (i & 1) ? rp.scale_hi : rp.scale_lo);
    }
  } else {  // kInt8
    const uint32_t words[2] = {q0, q1};
    if constexpr (std::is_same<T, half>::value) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t v = __byte_perm(words[i >> 1], 0x64646464u, (i & 1) ? 0x4342 : 0x4140);
        a[i] = mul2<T>(sub2<T>(v, (i & 1) ? rp.off_hi : rp.off_lo), (i & 1) ? rp.scale_hi
                                                                             : rp.scale_lo);
      }
    } else {
      // bf16 has 7 mantissa bits: build 2^23 + code in fp32, subtract exactly, round to bf16
      // (exact: |code - zero| < 256 fits 8 significant bits).
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t w = words[i >> 1];
        const int b = (i & 1) ? 2 : 0;
        const float zf = (i & 1) ? rp.zf_hi : rp.zf_lo;
        const float lo = __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7650 + b)) - zf;
        const float hi = __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7651 + b)) - zf;
        a[i] = mul2<T>(floats_to_pair<T>(lo, hi), (i & 1) ? rp.scale_hi : rp.scale_lo);
      }
    }
  }
}

template <int FMT>
__device__ __forceinline__ uint32_t step_word(const uint4* v, int s, int half) {
  // 4-bit: word s of the lane's single vector. 8-bit: word 2 s + half of its two vectors.
  if constexpr (VecCount<FMT>::value == 1) {
    const uint32_t w[4] = {v[0].x, v[0].y, v[0].z, v[0].w};
    return w[s];
  } else {
    const int idx = 2 * s + half;
    const uint4& vv = v[idx >> 2];
    const uint32_t w[4] = {vv.x, vv.y, vv.z, vv.w};
    return w[idx & 3];
  }
}

// Group of the lane's 16 channels; channels in the K padding take the last group (their
// activations are zero, and the read must stay inside the table).
__device__ __forceinline__ int group_of(const GemmParams& p, int chunk, int t) {
  const int grp = p.gtab != nullptr ? p.gtab[chunk * 4 + t] : (chunk * 64 + 16 * t) / p.group_size;
  return grp < p.G ? grp : p.G - 1;
}

// Decode one chunk (R row tiles) and multiply it with the activations of MT column tiles.
template <typename T, int FMT, int MT, int R>
__device__ __forceinline__ void mma_chunk(float (&acc)[MT][R][4],
                                          const uint4 (&wv)[R][VecCount<FMT>::value],
                                          const uint4 (&xv)[MT][2], const uint32_t (&sw)[R],
                                          const uint32_t (&zw)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const RowPair rp = make_row_pair<T, FMT>(sw[r], zw[r]);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      uint32_t a[4];
      decode_step<T, FMT>(step_word<FMT>(wv[r], s, 0), step_word<FMT>(wv[r], s, 1), rp, a);
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        const uint4& lo = xv[j][s >> 1];
        const uint32_t b0 = (s & 1) ? lo.z : lo.x;
        const uint32_t b1 = (s & 1) ? lo.w : lo.y;
        mma_16816<T>(acc[j][r], a, b0, b1);
      }
    }
  }
}

// Sum the WK partial results of each warp column through shared memory (red: at least
// WN * (WK - 1) * MT * R * 128 floats), then the first warp of the column writes
// chan[n] * sum + bias[n].
template <typename T, int MT, int R>
__device__ __forceinline__ void reduce_and_store(const GemmParams& p, float (&acc)[MT][R][4],
                                                 float* red, int wn, int wk, int lane, int tile0,
                                                 int m0) {
  constexpr int kPerLane = MT * R * 4;
  if (p.WK > 1) {
    if (wk > 0) {
      float* dst = red + (static_cast<size_t>(wn) * (p.WK - 1) + (wk - 1)) * kPerLane * 32;
#pragma unroll
      for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int e = 0; e < 4; ++e) dst[((j * R + r) * 4 + e) * 32 + lane] = acc[j][r][e];
    }
    __syncthreads();
    if (wk == 0) {
      for (int other = 0; other < p.WK - 1; ++other) {
        const float* src = red + (static_cast<size_t>(wn) * (p.WK - 1) + other) * kPerLane * 32;
#pragma unroll
        for (int j = 0; j < MT; ++j)
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[j][r][e] += src[((j * R + r) * 4 + e) * 32 + lane];
      }
    }
  }
  if (wk != 0) return;
  const int g = lane >> 2;
  const int t = lane & 3;
  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int half_row = 0; half_row < 2; ++half_row) {
      const int n = (tile0 + r) * 16 + g + 8 * half_row;
      if (n >= p.N) continue;
      const float cs = p.chan != nullptr ? p.chan[n] : 1.0f;
      const float bs = bias != nullptr ? to_float(bias[n]) : 0.0f;
#pragma unroll
      for (int j = 0; j < MT; ++j) {
#pragma unroll
        for (int col = 0; col < 2; ++col) {
          const int m = m0 + 8 * j + 2 * t + col;
          if (m < p.M) {
            out[static_cast<size_t>(m) * p.N + n] =
                from_float<T>(acc[j][r][2 * half_row + col] * cs + bs);
          }
        }
      }
    }
  }
}

// Register pipeline: each warp loads 8 / MT chunks into registers, then computes them.
template <typename T, int FMT, int MT, int R>
__global__ void __launch_bounds__(256) stream_gemm_kernel(const GemmParams p) {
  constexpr int V = VecCount<FMT>::value;
  const int4* weights = static_cast<const int4*>(p.w);
  constexpr int P = 8 / MT;  // chunks in flight per warp between compute phases
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int wn = warp % p.WN;
  const int wk = warp / p.WN;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int tile0 = (blockIdx.x * p.WN + wn) * R;
  const int m0 = blockIdx.y * 8 * MT;

  const T* x = static_cast<const T*>(p.x);
  const T* xrow[MT];
  bool mvalid[MT];
#pragma unroll
  for (int j = 0; j < MT; ++j) {
    const int m = m0 + 8 * j + g;
    mvalid[j] = m < p.M;
    xrow[j] = x + static_cast<size_t>(mvalid[j] ? m : 0) * p.K;
  }
  const uint32_t zconst_pair = floats_to_pair<T>(static_cast<float>(p.zconst),
                                                 static_cast<float>(p.zconst));

  float acc[MT][R][4];
#pragma unroll
  for (int j = 0; j < MT; ++j)
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][r][e] = 0.0f;

  for (int c0 = wk; c0 < p.C; c0 += p.WK * P) {
    uint4 wv[P][R][V];
    uint4 xv[P][MT][2];
    uint32_t sw[P][R];
    uint32_t zw[P][R];
#pragma unroll
    for (int q = 0; q < P; ++q) {
      const int c = c0 + q * p.WK;
      const bool cvalid = c < p.C;
      const int kseg = c * 64 + 16 * t;
      const int grp = cvalid ? group_of(p, c, t) : 0;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int tile = tile0 + r;
        const bool ok = cvalid && tile < p.N16;
#pragma unroll
        for (int v = 0; v < V; ++v) {
          wv[q][r][v] = ok ? load_stream(weights + ((static_cast<size_t>(tile) * p.C + c) * V + v) * 32 +
                                         lane)
                           : make_uint4(0, 0, 0, 0);
        }
        const size_t sidx = (static_cast<size_t>(tile) * p.G + grp) * 8 + g;
        sw[q][r] = ok ? __ldg(p.gscale + sidx) : 0u;
        zw[q][r] = (ok && p.zeros != nullptr) ? __ldg(p.zeros + sidx) : zconst_pair;
      }
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        const bool ok = cvalid && mvalid[j] && kseg < p.K;
        const int4* src = reinterpret_cast<const int4*>(xrow[j] + (ok ? kseg : 0));
        if (ok) {
          const int4 a = __ldg(src);
          const int4 b = __ldg(src + 1);
          xv[q][j][0] = make_uint4(a.x, a.y, a.z, a.w);
          xv[q][j][1] = make_uint4(b.x, b.y, b.z, b.w);
        } else {
          xv[q][j][0] = make_uint4(0, 0, 0, 0);
          xv[q][j][1] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int q = 0; q < P; ++q) {
      if (c0 + q * p.WK >= p.C) break;
      mma_chunk<T, FMT, MT, R>(acc, wv[q], xv[q], sw[q], zw[q]);
    }
  }

  extern __shared__ float red[];
  reduce_and_store<T, MT, R>(p, acc, red, wn, wk, lane, tile0, m0);
}

__device__ __forceinline__ void copy_async16(void* smem, const void* gmem, bool pred) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int size = pred ? 16 : 0;  // 0: nothing is read, the slot is zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(size));
}

// The same through L1: activations are re-read by every block of the SM, weights are not.
__device__ __forceinline__ void copy_async16_cached(void* smem, const void* gmem, bool pred) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int size = pred ? 16 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(size));
}

__device__ __forceinline__ void copy_async4(void* smem, const void* gmem, bool pred) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int size = pred ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem), "r"(size));
}

__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Chunks each warp keeps in flight in the cp.async pipeline.
template <int MT>
struct AsyncStages {
  static constexpr int value = MT == 1 ? 8 : MT == 2 ? 6 : MT == 4 ? 4 : 3;
};

// 16-byte slots per lane and stage: weights, then activations; then 4-byte words: scales, zeros.
template <int FMT, int MT, int R>
struct AsyncSlots {
  static constexpr int kVecs = R * VecCount<FMT>::value + 2 * MT;
  static constexpr int kWords = 2 * R;
  static constexpr int kStageBytes = 32 * (16 * kVecs + 4 * kWords);
};

// cp.async pipeline: a ring of AsyncStages chunks per warp in shared memory. Every lane copies and
// later reads back only its own slots, so the ring needs no barrier; registers no longer bound the
// bytes in flight.
template <typename T, int FMT, int MT, int R>
__global__ void __launch_bounds__(256) stream_gemm_async_kernel(const GemmParams p) {
  constexpr int V = VecCount<FMT>::value;
  constexpr int S = AsyncStages<MT>::value;
  using Slots = AsyncSlots<FMT, MT, R>;
  const int4* weights = static_cast<const int4*>(p.w);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int wn = warp % p.WN;
  const int wk = warp / p.WN;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int tile0 = (blockIdx.x * p.WN + wn) * R;
  const int m0 = blockIdx.y * 8 * MT;
  const T* x = static_cast<const T*>(p.x);
  const T* xrow[MT];
  bool mvalid[MT];
#pragma unroll
  for (int j = 0; j < MT; ++j) {
    const int m = m0 + 8 * j + g;
    mvalid[j] = m < p.M;
    xrow[j] = x + static_cast<size_t>(mvalid[j] ? m : 0) * p.K;
  }
  const uint32_t zconst_pair = floats_to_pair<T>(static_cast<float>(p.zconst),
                                                 static_cast<float>(p.zconst));

  extern __shared__ uint4 ring[];
  unsigned char* mine = reinterpret_cast<unsigned char*>(ring) +
                        static_cast<size_t>(warp) * S * Slots::kStageBytes;
  auto vec_slot = [&](int stage, int item) {
    return reinterpret_cast<uint4*>(mine + stage * Slots::kStageBytes) + item * 32 + lane;
  };
  auto word_slot = [&](int stage, int item) {
    return reinterpret_cast<uint32_t*>(mine + stage * Slots::kStageBytes + 32 * 16 * Slots::kVecs) +
           item * 32 + lane;
  };
  const int count = wk < p.C ? (p.C - wk + p.WK - 1) / p.WK : 0;  // chunks of this warp

  auto issue = [&](int i) {
    const int stage = i % S;
    const int c = wk + i * p.WK;
    const bool cvalid = i < count;
    const int kseg = c * 64 + 16 * t;
    const int grp = cvalid ? group_of(p, c, t) : 0;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int tile = tile0 + r;
      const bool ok = cvalid && tile < p.N16;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const int4* src = ok ? weights + ((static_cast<size_t>(tile) * p.C + c) * V + v) * 32 + lane
                             : weights;
        copy_async16(vec_slot(stage, r * V + v), src, ok);
      }
      const size_t sidx = ok ? (static_cast<size_t>(tile) * p.G + grp) * 8 + g : 0;
      copy_async4(word_slot(stage, r), p.gscale + sidx, ok);
      if (p.zeros != nullptr) copy_async4(word_slot(stage, R + r), p.zeros + sidx, ok);
    }
#pragma unroll
    for (int j = 0; j < MT; ++j) {
      const bool ok = cvalid && mvalid[j] && kseg < p.K;
      const int4* src = reinterpret_cast<const int4*>(ok ? xrow[j] + kseg : x);
      copy_async16_cached(vec_slot(stage, R * V + 2 * j), src, ok);
      copy_async16_cached(vec_slot(stage, R * V + 2 * j + 1), ok ? src + 1 : src, ok);
    }
    commit_async();
  };

  float acc[MT][R][4];
#pragma unroll
  for (int j = 0; j < MT; ++j)
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][r][e] = 0.0f;

#pragma unroll
  for (int i = 0; i < S - 1; ++i) issue(i);
  for (int i = 0; i < count; ++i) {
    wait_async<S - 2>();  // chunk i has landed (groups complete in commit order)
    issue(i + S - 1);     // refills the slot chunk i - 1 was read from
    const int stage = i % S;
    uint4 wv[R][V];
    uint4 xv[MT][2];
    uint32_t sw[R];
    uint32_t zw[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int v = 0; v < V; ++v) wv[r][v] = *vec_slot(stage, r * V + v);
      sw[r] = *word_slot(stage, r);
      zw[r] = p.zeros != nullptr ? *word_slot(stage, R + r) : zconst_pair;
    }
#pragma unroll
    for (int j = 0; j < MT; ++j) {
      xv[j][0] = *vec_slot(stage, R * V + 2 * j);
      xv[j][1] = *vec_slot(stage, R * V + 2 * j + 1);
    }
    mma_chunk<T, FMT, MT, R>(acc, wv, xv, sw, zw);
  }
  wait_async<0>();
  __syncthreads();  // the ring becomes the reduction buffer
  reduce_and_store<T, MT, R>(p, acc, reinterpret_cast<float*>(ring), wn, wk, lane, tile0, m0);
}

// One thread per (row tile, chunk, lane): writes rows g and g + 8, channels 16 t .. 16 t + 15 of
// the chunk as T, times chan[n] when given. out is [N, C * 64] row-major.
template <typename T, int FMT>
__global__ void __launch_bounds__(256) dequantize_kernel(const GemmParams p) {
  constexpr int V = VecCount<FMT>::value;
  const size_t item = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t total = static_cast<size_t>(p.N16) * p.C * 32;
  if (item >= total) return;
  const int lane = static_cast<int>(item & 31);
  const int c = static_cast<int>((item >> 5) % p.C);
  const int tile = static_cast<int>((item >> 5) / p.C);
  const int g = lane >> 2;
  const int t = lane & 3;
  const int4* weights = static_cast<const int4*>(p.w);
  uint4 wv[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    wv[v] = load_stream(weights + ((static_cast<size_t>(tile) * p.C + c) * V + v) * 32 + lane);
  }
  const int grp = group_of(p, c, t);
  const size_t sidx = (static_cast<size_t>(tile) * p.G + grp) * 8 + g;
  const uint32_t zconst_pair = floats_to_pair<T>(static_cast<float>(p.zconst),
                                                 static_cast<float>(p.zconst));
  const RowPair rp = make_row_pair<T, FMT>(p.gscale[sidx], p.zeros != nullptr ? p.zeros[sidx]
                                                                                : zconst_pair);
  uint32_t row_lo[8], row_hi[8];  // 16 values of row g and of row g + 8, as pairs
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    uint32_t a[4];
    decode_step<T, FMT>(step_word<FMT>(wv, s, 0), step_word<FMT>(wv, s, 1), rp, a);
    row_lo[2 * s] = a[0];
    row_lo[2 * s + 1] = a[2];
    row_hi[2 * s] = a[1];
    row_hi[2 * s + 1] = a[3];
  }
  T* out = static_cast<T*>(p.out);
  const size_t ld = static_cast<size_t>(p.C) * 64;
#pragma unroll
  for (int half_row = 0; half_row < 2; ++half_row) {
    const int n = tile * 16 + g + 8 * half_row;
    if (n >= p.N) continue;
    uint32_t* vals = half_row ? row_hi : row_lo;
    if (p.chan != nullptr) {
      const float cs = p.chan[n];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        uint32_t v = vals[i];
        const float lo = low_to_float<T>(v) * cs;
        const float hi = low_to_float<T>(v >> 16) * cs;
        vals[i] = floats_to_pair<T>(lo, hi);
      }
    }
    uint4* dst = reinterpret_cast<uint4*>(out + n * ld + c * 64 + 16 * t);
    dst[0] = make_uint4(vals[0], vals[1], vals[2], vals[3]);
    dst[1] = make_uint4(vals[4], vals[5], vals[6], vals[7]);
  }
}

}  // namespace kcm
