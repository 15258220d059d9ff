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

#include <cuda.h>  // CUtensorMap (encoded through the runtime's driver entry point)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
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

template <typename T>
__device__ __forceinline__ uint32_t fma2(uint32_t a, uint32_t b, uint32_t c) {
  using T2 = typename Half2Traits<T>::T2;
  T2 r = __hfma2(*reinterpret_cast<T2*>(&a), *reinterpret_cast<T2*>(&b),
                 *reinterpret_cast<T2*>(&c));
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

// d = a * b + c with c in other registers than d, bf16 operands: the first step of a sum that
// starts from a value (mma_chunk's offset correction, bf16 only) needs no copy of it into the
// accumulators.
__device__ __forceinline__ void mma_16816_bf16_from(float d[4], const uint32_t a[4], uint32_t b0,
                                                    uint32_t b1, const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%10, %11, %12, %13};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
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
// kScale = false (4-bit integer codes only): the fragment holds code - zero, exact small integers,
// and the caller multiplies the group scale into the mma's sums instead (mma_chunk).
// kCenter = false as well: the fragment holds magic + code (exact in 16 bits), one instruction per
// pair less, and the caller subtracts (magic + zero) times the activations' sum (mma_chunk).
template <typename T, int FMT, bool kScale = true, bool kCenter = true>
__device__ __forceinline__ void decode_step(uint32_t q0, uint32_t q1, const RowPair& rp,
                                            uint32_t a[4]) {
  using Tr = Half2Traits<T>;
  static_assert(kScale || FMT == kInt4, "unscaled fragments for 4-bit integer codes only");
  static_assert(kCenter || !kScale, "uncentered fragments are unscaled");
  if constexpr (FMT == kInt4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t v = lop_and_or(q0 >> (4 * i), 0x000F000Fu, Tr::kMagic);
      if constexpr (!kCenter) {
        a[i] = v;
        continue;
      }
      const uint32_t centered = sub2<T>(v, (i & 1) ? rp.off_hi : rp.off_lo);
      a[i] = kScale ? mul2<T>(centered, (i & 1) ? rp.scale_hi : rp.scale_lo) : centered;
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

// The B fragment of mma step s (16 channels) from a lane's two 16-byte activation loads.
__device__ __forceinline__ void step_activations(const uint4 (&x)[2], int s, uint32_t& b0,
                                                 uint32_t& b1) {
  const uint4& lo = x[s >> 1];
  b0 = (s & 1) ? lo.z : lo.x;
  b1 = (s & 1) ? lo.w : lo.y;
}

//: Whether a kScaleAfter chunk also leaves the decode's magic in the fragments (kCenter = false):
//: the sums then carry (magic + zero) times the activations' sum, which mma_chunk starts them
//: from, negated. Only for bf16: its magic (128) keeps the fp32 sums within ~2^8 of the centered
//: ones, ~16 bits of the result left against bf16's 8; fp16's magic (1024) would leave ~13,
//: close to fp16's 11.
template <typename T, bool kScaleAfter>
constexpr bool kOffsetAfter = kScaleAfter && std::is_same<T, __nv_bfloat16>::value;

// The activations' sums over a chunk's 64 channels for each M tile, by four mma steps with an A
// fragment of ones: elements 0 and 2 hold column 2 t's, 1 and 3 column 2 t + 1's (the accumulator
// layout of the chunk's sums, whose rows all see the same columns). Shared by every tile of the
// chunk.
template <typename T, int MT>
__device__ __forceinline__ void chunk_activation_sums(const uint4 (&xv)[MT][2],
                                                      float (&xsum)[MT][4]) {
  const uint32_t ones[4] = {0x3F803F80u, 0x3F803F80u, 0x3F803F80u, 0x3F803F80u};  // bf16 1.0
#pragma unroll
  for (int j = 0; j < MT; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) xsum[j][e] = 0.0f;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      uint32_t b0, b1;
      step_activations(xv[j], s, b0, b1);
      mma_16816<T>(xsum[j], ones, b0, b1);
    }
  }
}

// Decode one chunk (the first kUsed of R row tiles) and multiply it with the activations of MT
// column tiles. The mma steps go outermost and the row tiles innermost, so consecutive mma
// instructions write different accumulators and the decode of one tile overlaps the mma of
// another. Tiles from kUsed on are neither decoded nor touched.
// kScaleAfter (4-bit integer codes whose scale groups hold whole 64-channel chunks, so one scale
// per row covers every lane's channels of the chunk): the fragments are decoded without the scale
// and the chunk's four mma steps sum into a fresh accumulator, which is then added to acc times
// the row's scale in fp32: 4 FFMA per tile and M tile instead of 16 HMUL2 per tile, and one
// instruction less on each pair's decode chain. It also skips rounding code * scale to 16 bits.
// With kOffsetAfter (bf16) the fragments keep the magic as well, and the fresh accumulator starts
// at -(magic + zero) * xsum (chunk_activation_sums) instead of zero: 16 HSUB2 per tile and chunk
// fewer, for 4 mma steps per chunk and M tile shared by all of a warp's tiles.
template <typename T, int FMT, int MT, int R, int kUsed = R, bool kScaleAfter = false>
__device__ __forceinline__ void mma_chunk(float (&acc)[MT][R][4],
                                          const uint4 (&wv)[R][VecCount<FMT>::value],
                                          const uint4 (&xv)[MT][2], const uint32_t (&sw)[R],
                                          const uint32_t (&zw)[R],
                                          const float (&xsum)[MT][4]) {
  static_assert(kUsed >= 1 && kUsed <= R, "tiles used of a chunk's R");
  constexpr bool kOffset = kOffsetAfter<T, kScaleAfter>;
  RowPair rp[R];
#pragma unroll
  for (int r = 0; r < kUsed; ++r) rp[r] = make_row_pair<T, FMT>(sw[r], zw[r]);
  float start[kOffset ? MT : 1][kOffset ? R : 1][4];
  if constexpr (kOffset) {
#pragma unroll
    for (int r = 0; r < kUsed; ++r) {
      const float off_lo = low_to_float<T>(rp[r].off_lo);
      const float off_hi = low_to_float<T>(rp[r].off_hi);
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        start[j][r][0] = -off_lo * xsum[j][0];
        start[j][r][1] = -off_lo * xsum[j][1];
        start[j][r][2] = -off_hi * xsum[j][2];
        start[j][r][3] = -off_hi * xsum[j][3];
      }
    }
  }
  float part[kScaleAfter ? MT : 1][kScaleAfter ? R : 1][4] = {};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
#pragma unroll
    for (int r = 0; r < kUsed; ++r) {
      uint32_t a[4];
      decode_step<T, FMT, !kScaleAfter, !kOffset>(step_word<FMT>(wv[r], s, 0),
                                                  step_word<FMT>(wv[r], s, 1), rp[r], a);
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        uint32_t b0, b1;
        step_activations(xv[j], s, b0, b1);
        if constexpr (kOffset) {
          if (s == 0) {
            mma_16816_bf16_from(part[j][r], a, b0, b1, start[j][r]);
          } else {
            mma_16816<T>(part[j][r], a, b0, b1);
          }
        } else if constexpr (kScaleAfter) {
          mma_16816<T>(part[j][r], a, b0, b1);
        } else {
          mma_16816<T>(acc[j][r], a, b0, b1);
        }
      }
    }
  }
  if constexpr (kScaleAfter) {
#pragma unroll
    for (int r = 0; r < kUsed; ++r) {
      // The accumulator fragment: elements 0, 1 are row g (the word's low half), 2, 3 row g + 8.
      const float scale_lo = low_to_float<T>(sw[r]);
      const float scale_hi = low_to_float<T>(sw[r] >> 16);
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        acc[j][r][0] = fmaf(part[j][r][0], scale_lo, acc[j][r][0]);
        acc[j][r][1] = fmaf(part[j][r][1], scale_lo, acc[j][r][1]);
        acc[j][r][2] = fmaf(part[j][r][2], scale_hi, acc[j][r][2]);
        acc[j][r][3] = fmaf(part[j][r][3], scale_hi, acc[j][r][3]);
      }
    }
  }
}

// mma_chunk for the consumers that scale before the mma (no activation sums needed).
template <typename T, int FMT, int MT, int R>
__device__ __forceinline__ void mma_chunk_scaled(float (&acc)[MT][R][4],
                                                 const uint4 (&wv)[R][VecCount<FMT>::value],
                                                 const uint4 (&xv)[MT][2],
                                                 const uint32_t (&sw)[R],
                                                 const uint32_t (&zw)[R]) {
  const float unused[MT][4] = {};
  mma_chunk<T, FMT, MT, R>(acc, wv, xv, sw, zw, unused);
}

// Writes chan[n] * v + bias[n] for one mma accumulator fragment of a lane: rows g and g + 8 of
// 16-row tile `tile`, columns 2 t and 2 t + 1 of the 8 tokens from m0.
template <typename T>
__device__ __forceinline__ void store_tile_fragment(const GemmParams& p, const float (&v)[4],
                                                    int lane, int tile, int m0) {
  const int g = lane >> 2;
  const int t = lane & 3;
  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int half_row = 0; half_row < 2; ++half_row) {
    const int n = tile * 16 + g + 8 * half_row;
    if (n >= p.N) continue;
    const float cs = p.chan != nullptr ? p.chan[n] : 1.0f;
    const float bs = bias != nullptr ? to_float(bias[n]) : 0.0f;
#pragma unroll
    for (int col = 0; col < 2; ++col) {
      const int m = m0 + 2 * t + col;
      if (m < p.M) {
        out[static_cast<size_t>(m) * p.N + n] = from_float<T>(v[2 * half_row + col] * cs + bs);
      }
    }
  }
}

// Write chan[n] * acc + bias[n] for the first `tiles` (<= R) row tiles from tile0 and MT column
// tiles from m0 (the mma accumulator fragment: rows g and g + 8, columns 2 t and 2 t + 1 of each
// 8-column tile).
template <typename T, int MT, int R>
__device__ __forceinline__ void store_fragment(const GemmParams& p, const float (&acc)[MT][R][4],
                                               int lane, int tile0, int m0, int tiles) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= tiles) break;
#pragma unroll
    for (int j = 0; j < MT; ++j) store_tile_fragment<T>(p, acc[j][r], lane, tile0 + r, m0 + 8 * j);
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
  store_fragment<T, MT, R>(p, acc, lane, tile0, m0, R);
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
      mma_chunk_scaled<T, FMT, MT, R>(acc, wv[q], xv[q], sw[q], zw[q]);
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
    mma_chunk_scaled<T, FMT, MT, R>(acc, wv, xv, sw, zw);
  }
  wait_async<0>();
  __syncthreads();  // the ring becomes the reduction buffer
  reduce_and_store<T, MT, R>(p, acc, reinterpret_cast<float*>(ring), wn, wk, lane, tile0, m0);
}

// ---------------------------------------------------------------------------------------------
// Bulk pipeline (pipeline 2, SM90 and newer): persistent blocks that stream whole contiguous
// segments of the weight with the bulk copy engine.
//
// Block b of the grid (one per SM) owns the row tiles [b N16 / grid, (b + 1) N16 / grid) and
// walks them in passes of at most BulkPlan::tiles_per_pass tiles (16 / MT: the accumulators of a
// pass stay in registers). A pass runs over K in stages of SC = W * Q chunks (W consumer warps,
// Q chunks per warp: more when a pass has few tiles, so a stage holds enough work per warp). One
// producer warp fills a ring of shared-memory stages: per stage and tile one `cp.async.bulk` of
// the tile's SC contiguous chunks (SC * 512 bytes of 4-bit codes: the layout stores a tile's
// chunks back to back), one of the scale groups they use (and one of the zero points), and one
// per activation row; each stage completes on an mbarrier that counts the bytes. Consumer warp w
// decodes chunks w, w + W, ... of every tile in the stage, so it reads an activation fragment
// once per chunk and uses it for all tiles of the pass, four tiles at a time with their loads
// issued first and their mma steps interleaved; then it releases the stage on a second mbarrier.
// At the end of a pass the consumer warps sum their partial results in a tree through shared
// memory and warp 0 writes the outputs: no global workspace, nothing to zero between CUDA-graph
// replays.

//: Most stages a ring may have (the mbarrier array is sized for it).
constexpr int kBulkMaxStages = 12;
//: Row tiles a consumer warp decodes together (loads first, mma steps interleaved). 4 measured
//: 6-8% faster than 2 on 3-4-tile blocks (8192 x 8192, 8192 x 28672) and even on 14-tile ones
//: (NOTES.md v4, run 4); passes of tiles not a multiple of 4 decode up to 3 spare tiles.
constexpr int kBulkTileGroup = 4;

//: BulkPlan::decode of the probe that times the consumers without the copy pipeline.
constexpr int kConsumersAlone = 2;

//: plan_bulk's `grid` of every bulk launch of the plugin (its default): as few blocks as keep the
//: widest block's row tiles, ceil(N16 / widest), so that no block holds more than the widest
//: block's tiles and as few as possible hold fewer (the kernel's split [b N16 / G, (b + 1) N16 / G)
//: spreads those through the grid). The four benchmark layers have N16 = 128 k row tiles: 132
//: blocks give 76-116 blocks k tiles and the rest k - 1 (the widest carry 132 / 128 of the mean),
//: 128 blocks give every block k and leave 4 SMs idle. The time is the widest block's, so nothing
//: is lost, and the copies of the 128 share the device's rate: NOTES.md v37 measured pipeline 6 at
//: M=1 0.2-0.7 us faster on the even grid in five of five paired comparisons.
constexpr int kBulkEvenGrid = -1;

// Shared-memory geometry of one launch, computed on the host (plan_bulk) and passed by value.
struct BulkPlan {
  int decode;          // 1; 0 only waits for and releases each stage (gpu/probe_bulk.py measures
                       // the copy pipeline alone with it; the output is then not written);
                       // kConsumersAlone: nothing is copied and no stage is waited for, the
                       // consumers run on whatever the ring holds (the probe's consumer time;
                       // the output is garbage)
  int tiles_per_pass;  // row tiles in one pass (and one stage), at most 16 / MT
  int stages;          // ring depth
  int chunks;          // SC: 64-channel chunks per stage, W * Q
  int group_shift;     // log2(group_size) when it is a power of two (no act-order), else -1
  int group_cap;       // scale groups a stage copies per tile, at most
  int wslot;           // bytes of one tile's codes in a stage: SC * 512 * V
  int sslot;           // bytes of one tile's scale (or zero-point) groups: group_cap * 32
  int scale_off;       // offsets inside a stage: scale groups, zero-point groups, activations
  int zero_off;
  int x_off;
  int xstride;         // bytes between activation rows: SC * 128 + 16 (no bank conflicts)
  int stage_bytes;
  int red_off;         // tree-reduction slices (W / 2 of tiles_per_pass * MT * 512 bytes)
  int bar_off;         // 2 * stages mbarriers: full[stages], then empty[stages]
};

// The tensor maps (TMA descriptors) of one bulk launch, encoded on the host (encode_bulk_maps)
// and passed as a __grid_constant__ parameter. A fill copies its pass's codes with ONE 3-D tensor
// copy (eight-byte words of a chunk x the stage's chunks x the pass's tiles) and each scale table
// with one (four words of a group x group_cap groups x the tiles), landing exactly in the stage's
// slots (tile stride wslot / sslot). One bulk copy per tile and table (29 a fill at M=1 on
// 28672 x 8192) cost the copy engine and the producer ~30-40 ns each (NOTES.md v24). A box's tile
// count is fixed when it is encoded: [0] boxes tiles_per_pass tiles, [1] one fewer, which
// covers every pass (blocks hold span_max or span_max - 1 tiles, so a pass holds tiles_per_pass
// or one fewer); a pass of fewer still would copy box [1] and never read the extra slots.
// Out-of-range boxes (the last stage's chunks past K, groups past G, tiles past N) are
// zero-filled and count in full towards the stage's bytes.
struct BulkMaps {
  CUtensorMap codes[2];
  CUtensorMap scales[2];
  CUtensorMap zeros[2];  // encoded only with zero points (zero bytes, never read, otherwise)
  int box_tiles[2];
};

// Group of input channel k (a multiple of 16) for the bulk pipeline: group_of with a shift for
// power-of-two group sizes.
__device__ __forceinline__ int bulk_group(const GemmParams& p, const BulkPlan& plan, int k) {
  int grp;
  if (p.gtab != nullptr) {
    grp = __ldg(p.gtab + k / 16);
  } else {
    grp = plan.group_shift >= 0 ? k >> plan.group_shift : k / p.group_size;
  }
  return min(max(grp, 0), p.G - 1);
}

// Groups [lo, lo + count) of the scale table that a stage of chunks [cb, ce) copies. Without
// act-order they are every group the chunks touch. With act-order (groups sorted along K except
// for the final padding, which takes group 0) the copy starts at the first block's group and a
// consumer reads any group outside the copied range from global memory.
__device__ __forceinline__ void stage_groups(const GemmParams& p, const BulkPlan& plan, int cb,
                                             int ce, int& lo, int& count) {
  lo = bulk_group(p, plan, cb * 64);
  if (p.gtab != nullptr) {
    count = min(plan.group_cap, p.G - lo);
  } else {
    count = min(plan.group_cap, bulk_group(p, plan, ce * 64 - 16) - lo + 1);
  }
}

__device__ __forceinline__ uint32_t shared_address(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// Timeline of a bulk launch for gpu/probe_bulk.py, compiled only into its shim (KCM_BULK_TRACE):
// per block kBulkTraceSlots SM clock readings: 0 the consumers' start, 1 their end (outputs
// stored), 2 + 2 it / 3 + 2 it consumer warp 0 before / after its wait for ring position it,
// kBulkTraceFills + it the producer issuing fill it (positions past either range unrecorded).
#ifdef KCM_BULK_TRACE
constexpr int kBulkTraceSlots = 256;
constexpr int kBulkTraceFills = 128;
__device__ long long* kcm_bulk_trace = nullptr;
__device__ __forceinline__ void bulk_trace(int slot) {
  if (kcm_bulk_trace != nullptr) {
    kcm_bulk_trace[blockIdx.x * kBulkTraceSlots + slot] = clock64();
  }
}
#define KCM_TRACE(slot, who) \
  do {                           \
    if (who) bulk_trace(slot);   \
  } while (0)
#else
#define KCM_TRACE(slot, who) \
  do {                       \
  } while (0)
#endif

// The SM90 instructions, compiled only for SM90 and newer (the sources also build for SM80,
// where the bulk kernel is an empty stub that the host never launches).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define KCM_BULK_COPY 1

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count)
               : "memory");
}

__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// One arrival that also expects `bytes` of bulk copies to complete on the barrier.
__device__ __forceinline__ void mbarrier_arrive_expect(uint64_t* bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
}

// Wait until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, int parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n .reg .pred ready;\n mbarrier.try_wait.parity.shared::cta.b64 ready, [%1], %2;\n"
        " selp.u32 %0, 1, 0, ready;\n}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// L2 policy for data read once (the weights and their scales): evicted first, so the
// activations and the outputs stay in L2.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

__device__ __forceinline__ void bulk_copy_streamed(void* dst, const void* src, int bytes,
                                                   uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1], %2, [%3], %4;" ::"r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar)), "l"(policy)
      : "memory");
}

// bulk_copy issued by one elected lane for the whole warp, all lanes passing the same operands.
// A copy per lane made ptxas loop over the lanes for every copy (ELECT, three R2UR, UBLKCP,
// BRA.U.ANY); with warp-uniform operands they stay in uniform registers and each copy is one
// UBLKCP (NOTES.md v22).
__device__ __forceinline__ void bulk_copy_elected(void* dst, const void* src, int bytes,
                                                  uint64_t* bar) {
  asm volatile(
      "{\n .reg .pred p;\n elect.sync _|p, 0xffffffff;\n"
      " @p cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
      "\n}" ::"r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

// A 3-D tensor copy of the box at (c0, c1, c2) of `map` (a __grid_constant__ parameter) into
// shared memory (128-byte aligned), issued by one elected lane, evict-first in L2.
__device__ __forceinline__ void tensor_copy_3d_elected(void* dst, const CUtensorMap* map, int c0,
                                                       int c1, int c2, uint64_t* bar,
                                                       uint64_t policy) {
  asm volatile(
      "{\n .reg .pred p;\n elect.sync _|p, 0xffffffff;\n"
      " @p cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".L2::cache_hint [%0], [%1, {%2, %3, %4}], [%5], %6;\n}" ::"r"(shared_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(shared_address(bar)),
      "l"(policy)
      : "memory");
}

__device__ __forceinline__ void bulk_copy(void* dst, const void* src, int bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

// Barrier among the consumer warps only (the producer warp runs ahead).
__device__ __forceinline__ void consumer_sync(int threads) {
  asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory");
}

// Programmatic dependent launch (GemmParams::pdl). A kernel launched as a programmatic dependent
// may start while the kernel before it on the stream still runs; this returns once that kernel
// has completed and its writes are visible to this grid (at once after a plain launch). Every
// thread that reads the activations or writes the output calls it first; the layer's own tensors
// (codes, scales, zero points, group table, bias) are not written by the kernel before a GEMM
// (process_weights_after_loading synchronizes its stream), so they may be requested before it.
__device__ __forceinline__ void grid_dependency_wait() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// Lets a programmatic dependent launched after this kernel start before this grid completes (it
// still waits in grid_dependency_wait before touching anything this grid writes). One thread per
// block is enough: later calls in the block change nothing.
__device__ __forceinline__ void allow_dependent_launch() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
#endif

// Row tiles of the widest of `blocks` blocks sharing the N16 tiles (the kernel gives block b the
// tiles [b N16 / blocks, (b + 1) N16 / blocks)): the blocks that set a launch's time.
__host__ __device__ constexpr int widest_block_tiles(int n16, int blocks) {
  return (n16 + blocks - 1) / blocks;
}

// The tile range of pass `pass` of a block: [tile0, tile0 + ntiles).
__device__ __forceinline__ void pass_tiles(int t_begin, int span, int passes, int pass, int& tile0,
                                           int& ntiles) {
  tile0 = t_begin + span * pass / passes;
  ntiles = t_begin + span * (pass + 1) / passes - tile0;
}

// Whether every pass of the widest block (span_max row tiles in passes of at most
// tiles_per_pass, split as pass_tiles splits them: span / passes rounded down or up) holds whole
// tile groups, so that no pass of the blocks that set the launch's time decodes a spare tile.
__host__ __device__ constexpr bool widest_passes_whole(int span_max, int tiles_per_pass) {
  const int passes = (span_max + tiles_per_pass - 1) / tiles_per_pass;
  return (span_max / passes) % kBulkTileGroup == 0 &&
         ((span_max + passes - 1) / passes) % kBulkTileGroup == 0;
}

// Calls f(q, u, j, slot) for tile q * kBulkTileGroup + u of a pass (the first ntiles) and each
// M tile j, with slot = its (tile, M tile) index: the accumulator fragments of the tree sum.
template <int kGroups, int MT, typename F>
__device__ __forceinline__ void for_each_pass_tile(int ntiles, F&& f) {
#pragma unroll
  for (int q = 0; q < kGroups; ++q)
#pragma unroll
    for (int u = 0; u < kBulkTileGroup; ++u)
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        const int tile = q * kBulkTileGroup + u;
        if (tile < ntiles) f(q, u, j, tile * MT + j);
      }
}

template <int V>
__device__ __forceinline__ void bulk_produce(const GemmParams& p, const BulkPlan& plan,
                                             const BulkMaps& maps, unsigned char* smem,
                                             uint64_t* full, uint64_t* empty, int t_begin,
                                             int span, int passes, int lane) {
#ifdef KCM_BULK_COPY
  if (plan.decode == kConsumersAlone) return;
  const int chunks = plan.chunks;
  const int kstages = (p.C + chunks - 1) / chunks;
  const int fills = passes * kstages;
  const uint64_t policy = evict_first_policy();
  const unsigned char* x = static_cast<const unsigned char*>(p.x);
  const int tables = p.zeros != nullptr ? 2 : 1;
  // Fill `it` of the ring (pass it / kstages, K stage it % kstages): one tensor copy of the
  // pass's codes and one per scale table (`layer_part`; lane 0 first arms the stage's mbarrier
  // with the whole fill's byte count) and one bulk copy per activation row (`activation_part`),
  // all completing on the stage's mbarrier. Every copy is issued by one elected lane with
  // warp-uniform operands.
  auto fill = [&](int it, bool layer_part, bool activation_part) {
    int tile0, ntiles;
    pass_tiles(t_begin, span, passes, it / kstages, tile0, ntiles);
    const int stage = it % plan.stages;
    const int cb = (it % kstages) * chunks;
    const int ce = min(cb + chunks, p.C);
    const int xbytes = (min(ce * 64, p.K) - cb * 64) * 2;
    unsigned char* base = smem + static_cast<size_t>(stage) * plan.stage_bytes;
    if (layer_part) {
      int g_lo, ng;
      stage_groups(p, plan, cb, ce, g_lo, ng);
      const int box = ntiles > maps.box_tiles[1] ? 0 : 1;
      if (lane == 0) {
        mbarrier_arrive_expect(full + stage, maps.box_tiles[box] * (plan.wslot + tables * plan.sslot) +
                                                 p.M * xbytes);
      }
      __syncwarp();
      tensor_copy_3d_elected(base, &maps.codes[box], 0, cb, tile0, full + stage, policy);
      tensor_copy_3d_elected(base + plan.scale_off, &maps.scales[box], 0, g_lo, tile0, full + stage,
                             policy);
      if (tables == 2) {
        tensor_copy_3d_elected(base + plan.zero_off, &maps.zeros[box], 0, g_lo, tile0, full + stage,
                               policy);
      }
    }
    if (activation_part) {
      const unsigned char* x_src = x + static_cast<size_t>(cb) * 64 * 2;
      for (int m = 0; m < p.M; ++m) {
        bulk_copy_elected(base + plan.x_off + m * plan.xstride, x_src, xbytes, full + stage);
        x_src += static_cast<size_t>(p.K) * 2;
      }
    }
  };
  // Launched as a programmatic dependent, the block may run while the kernel before it finishes:
  // the first fill's codes and scales are requested before the grid dependency wait, its
  // activations (which that kernel may write) after it, then every other fill as usual. Only the
  // first fill: requesting the whole first ring ahead of the first activations, into the ring
  // (v13 run 1) or into L2 (run 2), delayed the first stage by 1-4 us (NOTES.md v13).
  KCM_TRACE(kBulkTraceFills, lane == 0);
  fill(0, true, false);
  grid_dependency_wait();
  fill(0, false, true);
  for (int it = 1; it < fills; ++it) {
    const int stage = it % plan.stages;
    if (it >= plan.stages) mbarrier_wait(empty + stage, (it / plan.stages - 1) & 1);
    KCM_TRACE(kBulkTraceFills + it, lane == 0 && kBulkTraceFills + it < kBulkTraceSlots);
    fill(it, true, true);
  }
  // Every copy is requested: what is left is draining the ring, so the next GEMM may launch.
  if (lane == 0) allow_dependent_launch();
#endif
}

// Row tiles of one pass at most: the accumulators (MT x 4 floats per tile) stay in registers.
// Registers are split per SM sub-partition (4 x 16K): with 8 consumer warps and the producer one
// sub-partition holds 3 warps (168 registers each), with 16 consumers 5 (96 registers), so those
// passes hold one 4-tile group and serve one M tile (two spilled 48 bytes in ptxas; the bf16
// pipeline-6 instance on 16 warps spills 4 / 12 bytes, NOTES.md v28).
template <int MT, int kWarps>
__host__ __device__ constexpr int bulk_max_tiles() {
  return kWarps > 8 ? (MT == 1 ? 4 : 0) : 16 / MT;
}

#ifdef KCM_BULK_COPY
// Waits until ring position `it` has landed and returns its stage and base address (the flat
// consumer; the default one keeps these lines inline, as measured: identical PTX).
__device__ __forceinline__ const unsigned char* acquire_stage(const BulkPlan& plan,
                                                              const unsigned char* smem,
                                                              uint64_t* full, int it, int& stage) {
  stage = it % plan.stages;
  KCM_TRACE(2 + 2 * it, threadIdx.x == 0 && 3 + 2 * it < kBulkTraceFills);
  if (plan.decode != kConsumersAlone) mbarrier_wait(full + stage, (it / plan.stages) & 1);
  KCM_TRACE(3 + 2 * it, threadIdx.x == 0 && 3 + 2 * it < kBulkTraceFills);
  return smem + static_cast<size_t>(stage) * plan.stage_bytes;
}

// Shared-memory loads of one tile group (tiles i0 .. i0 + 3 of the pass, clamped to the last
// tile) of chunk coff for the flat consumer. kZeros is a template parameter: as a runtime
// select NVVM turned it into a branch around the zero-point loads, splitting the chunk.
template <int V, bool kZeros>
__device__ __forceinline__ void load_tile_group(const BulkPlan& plan, const unsigned char* base,
                                                int i0, int ntiles, int coff, int soff,
                                                uint32_t zconst_pair, int lane,
                                                uint4 (&wv)[kBulkTileGroup][V],
                                                uint32_t (&sw)[kBulkTileGroup],
                                                uint32_t (&zw)[kBulkTileGroup]) {
#pragma unroll
  for (int u = 0; u < kBulkTileGroup; ++u) {
    const int i = min(i0 + u, ntiles - 1);
    const uint4* wsrc = reinterpret_cast<const uint4*>(base + i * plan.wslot + coff * 512 * V) +
                        lane;
#pragma unroll
    for (int v = 0; v < V; ++v) wv[u][v] = wsrc[v * 32];
    sw[u] = *reinterpret_cast<const uint32_t*>(base + plan.scale_off + i * plan.sslot + soff);
    if constexpr (kZeros) {
      zw[u] = *reinterpret_cast<const uint32_t*>(base + plan.zero_off + i * plan.sslot + soff);
    } else {
      zw[u] = zconst_pair;
    }
  }
}

// The flat consumer of one pass of NG tile groups (pipeline 3; no act-order: every group of a
// stage is staged, see stage_groups). The group count and the zero points are template
// parameters and every other condition inside a chunk is a select, so a chunk's tile groups
// form one basic block (in the PTX of int4 MT = 1, NG = 4: one block of 64 mma and 36 shared
// loads): the loads of group q + 1 are issued before the decode and mma of group q, and the
// scheduler may overlap the decode of one group with the mma chain of the one before (the
// generic consumer puts a branch between groups, so each group's loads wait for the previous
// group's last mma to issue).
// The last tile group of a pass with only `used` (1..4, warp-uniform) tiles in it: decodes
// those alone (the exact-tail flat consumer, pipeline 4); one uniform branch per chunk, after
// the loads and the other groups' mma steps have been issued.
template <typename T, int FMT, int MT, bool kScaleAfter>
__device__ __forceinline__ void mma_tail_group(int used, float (&acc)[MT][kBulkTileGroup][4],
                                               const uint4 (&wv)[kBulkTileGroup][VecCount<FMT>::value],
                                               const uint4 (&xv)[MT][2],
                                               const uint32_t (&sw)[kBulkTileGroup],
                                               const uint32_t (&zw)[kBulkTileGroup],
                                               const float (&xsum)[MT][4]) {
  static_assert(kBulkTileGroup == 4, "one case per tail length");
  if (used == 1) {
    mma_chunk<T, FMT, MT, kBulkTileGroup, 1, kScaleAfter>(acc, wv, xv, sw, zw, xsum);
  } else if (used == 2) {
    mma_chunk<T, FMT, MT, kBulkTileGroup, 2, kScaleAfter>(acc, wv, xv, sw, zw, xsum);
  } else if (used == 3) {
    mma_chunk<T, FMT, MT, kBulkTileGroup, 3, kScaleAfter>(acc, wv, xv, sw, zw, xsum);
  } else {
    mma_chunk<T, FMT, MT, kBulkTileGroup, kBulkTileGroup, kScaleAfter>(acc, wv, xv, sw, zw, xsum);
  }
}

// kExactTail: the last group decodes only the pass's remaining tiles (mma_tail_group) instead of
// repeating the last tile up to a full group. kScaleAfter: mma_chunk's (the launcher checks that
// every chunk lies in one scale group).
template <typename T, int FMT, int MT, int kGroups, int NG, bool kZeros, bool kExactTail,
          bool kScaleAfter>
__device__ __forceinline__ void bulk_consume_flat(const GemmParams& p, const BulkPlan& plan,
                                                  const unsigned char* smem, uint64_t* full,
                                                  uint64_t* empty,
                                                  float (&acc)[kGroups][MT][kBulkTileGroup][4],
                                                  int ntiles, int& it, int w, int lane,
                                                  uint32_t zconst_pair) {
  static_assert(NG >= 1 && NG <= kGroups, "tile groups of a pass");
  constexpr int V = VecCount<FMT>::value;
  const int consumers = p.WK;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int chunks = plan.chunks;
  const int kstages = (p.C + chunks - 1) / chunks;
  for (int ks = 0; ks < kstages; ++ks, ++it) {
    int stage;
    const unsigned char* base = acquire_stage(plan, smem, full, it, stage);
    const int cb = ks * chunks;
    const int ce = min(cb + chunks, p.C);
    const int g_lo = bulk_group(p, plan, cb * 64);
    for (int c = cb + w; c < ce; c += consumers) {
      const int kseg = c * 64 + 16 * t;
      const int coff = c - cb;
      const int soff = (bulk_group(p, plan, kseg) - g_lo) * 32 + g * 4;
      uint4 xv[MT][2];
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        // Rows past M and channels past K hold stale bytes of an earlier stage: read a valid
        // row and zero the fragment.
        const int row = 8 * j + g;
        const bool valid = row < p.M && kseg < p.K;
        const uint4* src = reinterpret_cast<const uint4*>(
            base + plan.x_off + min(row, p.M - 1) * plan.xstride + (coff * 64 + 16 * t) * 2);
        const uint4 lo = src[0];
        const uint4 hi = src[1];
        xv[j][0] = valid ? lo : make_uint4(0, 0, 0, 0);
        xv[j][1] = valid ? hi : make_uint4(0, 0, 0, 0);
      }
      float xsum[MT][4] = {};
      if constexpr (kOffsetAfter<T, kScaleAfter>) chunk_activation_sums<T, MT>(xv, xsum);
      // Two register buffers of group loads where the accumulators leave room (MT = 1, 4-bit
      // codes; ptxas spilled with two for MT = 2 or 8-bit codes).
      constexpr int kBuffers = MT == 1 && V == 1 ? 2 : 1;
      uint4 wv[kBuffers][kBulkTileGroup][V];
      uint32_t sw[kBuffers][kBulkTileGroup], zw[kBuffers][kBulkTileGroup];
      load_tile_group<V, kZeros>(plan, base, 0, ntiles, coff, soff, zconst_pair, lane, wv[0],
                                 sw[0], zw[0]);
#pragma unroll
      for (int q = 0; q < NG; ++q) {
        const int cur = q % kBuffers;
        const int next = (q + 1) % kBuffers;
        if (kBuffers == 2 && q + 1 < NG) {
          load_tile_group<V, kZeros>(plan, base, (q + 1) * kBulkTileGroup, ntiles, coff, soff,
                                     zconst_pair, lane, wv[next], sw[next], zw[next]);
        }
        if (kExactTail && q + 1 == NG) {
          mma_tail_group<T, FMT, MT, kScaleAfter>(ntiles - q * kBulkTileGroup, acc[q], wv[cur],
                                                  xv, sw[cur], zw[cur], xsum);
        } else {
          mma_chunk<T, FMT, MT, kBulkTileGroup, kBulkTileGroup, kScaleAfter>(
              acc[q], wv[cur], xv, sw[cur], zw[cur], xsum);
        }
        if (kBuffers == 1 && q + 1 < NG) {
          load_tile_group<V, kZeros>(plan, base, (q + 1) * kBulkTileGroup, ntiles, coff, soff,
                                     zconst_pair, lane, wv[next], sw[next], zw[next]);
        }
      }
    }
    __syncwarp();
    if (lane == 0) mbarrier_arrive(empty + stage);
  }
}

// Runs bulk_consume_flat<..., ngroups, kZeros, kExactTail, kScaleAfter> for a runtime ngroups
// in [1, NG].
template <typename T, int FMT, int MT, int kGroups, int NG, bool kZeros, bool kExactTail,
          bool kScaleAfter>
__device__ __forceinline__ void bulk_consume_flat_groups(
    int ngroups, const GemmParams& p, const BulkPlan& plan, const unsigned char* smem,
    uint64_t* full, uint64_t* empty, float (&acc)[kGroups][MT][kBulkTileGroup][4], int ntiles,
    int& it, int w, int lane, uint32_t zconst_pair) {
  if constexpr (NG > 1) {
    if (ngroups < NG) {
      bulk_consume_flat_groups<T, FMT, MT, kGroups, NG - 1, kZeros, kExactTail, kScaleAfter>(
          ngroups, p, plan, smem, full, empty, acc, ntiles, it, w, lane, zconst_pair);
      return;
    }
  }
  bulk_consume_flat<T, FMT, MT, kGroups, NG, kZeros, kExactTail, kScaleAfter>(
      p, plan, smem, full, empty, acc, ntiles, it, w, lane, zconst_pair);
}
#endif

// kFlat: the flat consumer (pipeline 3) where the pass allows it (no act-order, decoding);
// kWarps: the most consumer warps a launch may have (8 or 16; sets the launch bounds);
// kExactTail: the flat consumer's last tile group decodes only the pass's tiles (pipeline 4);
// kScaleAfter: its chunks take the group scale after the mma (mma_chunk; pipeline 6).
template <typename T, int FMT, int MT, bool kFlat, int kWarps, bool kExactTail = false,
          bool kScaleAfter = false>
__global__ void __launch_bounds__(32 * (kWarps + 1), 1) stream_gemm_bulk_kernel(
    const GemmParams p, const BulkPlan plan, const __grid_constant__ BulkMaps maps) {
#ifdef KCM_BULK_COPY
  constexpr int V = VecCount<FMT>::value;
  constexpr int kMaxTiles = bulk_max_tiles<MT, kWarps>();
  static_assert(kMaxTiles >= kBulkTileGroup, "a pass holds at least one tile group");
  extern __shared__ __align__(128) unsigned char smem[];
  const int consumers = p.WK;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + plan.bar_off);
  uint64_t* empty = full + plan.stages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < plan.stages; ++s) {
      mbarrier_init(full + s, 1);
      mbarrier_init(empty + s, consumers);
    }
    mbarrier_init_fence();
  }
  __syncthreads();

  const int t_begin = static_cast<int>(static_cast<long long>(blockIdx.x) * p.N16 / gridDim.x);
  const int span =
      static_cast<int>(static_cast<long long>(blockIdx.x + 1) * p.N16 / gridDim.x) - t_begin;
  const int passes = (span + plan.tiles_per_pass - 1) / plan.tiles_per_pass;
  if (warp == consumers) {
    bulk_produce<V>(p, plan, maps, smem, full, empty, t_begin, span, passes, lane);
    return;
  }
  grid_dependency_wait();  // the consumers write the output
  KCM_TRACE(0, threadIdx.x == 0);

  const int w = warp;
  const int g = lane >> 2;
  const int t = lane & 3;
  constexpr int kGroups = kMaxTiles / kBulkTileGroup;
  const int chunks = plan.chunks;
  const int kstages = (p.C + chunks - 1) / chunks;
  const bool has_zeros = p.zeros != nullptr;
  const uint32_t zconst_pair = floats_to_pair<T>(static_cast<float>(p.zconst),
                                                 static_cast<float>(p.zconst));
  float4* slices = reinterpret_cast<float4*>(smem + plan.red_off);
  const int slice_len = plan.tiles_per_pass * MT * 32;  // float4 per lane and (tile, M tile)
  float acc[kGroups][MT][kBulkTileGroup][4];  // tile i0 + u of the pass: acc[i0 / 4][.][u]
  int it = 0;
  for (int pass = 0; pass < passes; ++pass) {
    int tile0, ntiles;
    pass_tiles(t_begin, span, passes, pass, tile0, ntiles);
#pragma unroll
    for (int q = 0; q < kGroups; ++q)
#pragma unroll
      for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int u = 0; u < kBulkTileGroup; ++u)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[q][j][u][e] = 0.0f;

    bool flat = false;
    if constexpr (kFlat) flat = p.gtab == nullptr && plan.decode;
    if (kWarps > 8 || flat) {  // the host launches 16 consumer warps only where flat holds
      const int ngroups = (ntiles + kBulkTileGroup - 1) / kBulkTileGroup;
      if (has_zeros) {
        bulk_consume_flat_groups<T, FMT, MT, kGroups, kGroups, true, kExactTail, kScaleAfter>(
            ngroups, p, plan, smem, full, empty, acc, ntiles, it, w, lane, zconst_pair);
      } else {
        bulk_consume_flat_groups<T, FMT, MT, kGroups, kGroups, false, kExactTail, kScaleAfter>(
            ngroups, p, plan, smem, full, empty, acc, ntiles, it, w, lane, zconst_pair);
      }
    } else if constexpr (kWarps <= 8) {
      // The generic consumer (pipeline 2): each tile group behind its own branch; act-order
      // groups outside the copied range are read from global memory.
      for (int ks = 0; ks < kstages; ++ks, ++it) {
        const int stage = it % plan.stages;
        mbarrier_wait(full + stage, (it / plan.stages) & 1);
        const unsigned char* base = smem + static_cast<size_t>(stage) * plan.stage_bytes;
        const int cb = ks * chunks;
        const int ce = min(cb + chunks, p.C);
        int g_lo, ng;
        stage_groups(p, plan, cb, ce, g_lo, ng);
        for (int c = cb + w; plan.decode && c < ce; c += consumers) {
          const int local = bulk_group(p, plan, c * 64 + 16 * t) - g_lo;
          const bool staged = local >= 0 && local < ng;
          const bool all_staged = __all_sync(0xffffffffu, staged);
          const int soff = (staged ? local : 0) * 32 + g * 4;
          const int kseg = c * 64 + 16 * t;
          const int coff = c - cb;
          uint4 xv[MT][2];
  #pragma unroll
          for (int j = 0; j < MT; ++j) {
            const int row = 8 * j + g;
            if (row < p.M && kseg < p.K) {
              const uint4* src = reinterpret_cast<const uint4*>(
                  base + plan.x_off + row * plan.xstride + (coff * 64 + 16 * t) * 2);
              xv[j][0] = src[0];
              xv[j][1] = src[1];
            } else {
              xv[j][0] = make_uint4(0, 0, 0, 0);
              xv[j][1] = make_uint4(0, 0, 0, 0);
            }
          }
  #pragma unroll
          for (int q = 0; q < kGroups; ++q) {
            const int i0 = q * kBulkTileGroup;
            if (i0 < ntiles) {
              // Tiles past the pass's end decode the last tile again; their sums are never stored.
              uint4 wv[kBulkTileGroup][V];
              uint32_t sw[kBulkTileGroup], zw[kBulkTileGroup];
  #pragma unroll
              for (int u = 0; u < kBulkTileGroup; ++u) {
                const int i = min(i0 + u, ntiles - 1);
                const uint4* wsrc = reinterpret_cast<const uint4*>(
                    base + i * plan.wslot + coff * 512 * V) + lane;
  #pragma unroll
                for (int v = 0; v < V; ++v) wv[u][v] = wsrc[v * 32];
                sw[u] = *reinterpret_cast<const uint32_t*>(base + plan.scale_off + i * plan.sslot +
                                                           soff);
                zw[u] = has_zeros ? *reinterpret_cast<const uint32_t*>(
                                        base + plan.zero_off + i * plan.sslot + soff)
                                  : zconst_pair;
              }
              if (!all_staged) {  // act-order groups outside the copied range
  #pragma unroll
                for (int u = 0; u < kBulkTileGroup; ++u) {
                  const size_t gidx = (static_cast<size_t>(tile0 + min(i0 + u, ntiles - 1)) * p.G +
                                       g_lo + local) * 8 + g;
                  if (!staged) {
                    sw[u] = __ldg(p.gscale + gidx);
                    if (has_zeros) zw[u] = __ldg(p.zeros + gidx);
                  }
                }
              }
              mma_chunk_scaled<T, FMT, MT, kBulkTileGroup>(acc[q], wv, xv, sw, zw);
            }
          }
        }
        __syncwarp();
        if (lane == 0) mbarrier_arrive(empty + stage);
      }
    }

    // The sum over the consumer warps. After a block's last pass the ring is free (every fill
    // has landed and been read): all warps park their sums there at once and each warp adds and
    // stores a share of the (tile, M tile) slots, in warp order (the same bits every launch),
    // with two barriers; the tree below takes six (NOTES.md v23).
    const int slots = ntiles * MT;
    if (pass + 1 == passes &&
        consumers * slice_len * static_cast<int>(sizeof(float4)) <= plan.stages * plan.stage_bytes) {
      float4* parked = reinterpret_cast<float4*>(smem);
      consumer_sync(32 * consumers);  // every warp is done with the ring's stages
      for_each_pass_tile<kGroups, MT>(ntiles, [&](int q, int u, int j, int slot) {
        const float* a = acc[q][j][u];
        parked[(w * slice_len + slot * 32) + lane] = make_float4(a[0], a[1], a[2], a[3]);
      });
      consumer_sync(32 * consumers);
      if (plan.decode) {
        for (int slot = w; slot < slots; slot += consumers) {
          float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          for (int v = 0; v < consumers; ++v) {
            const float4 part = parked[v * slice_len + slot * 32 + lane];
            sum[0] += part.x;
            sum[1] += part.y;
            sum[2] += part.z;
            sum[3] += part.w;
          }
          store_tile_fragment<T>(p, sum, lane, tile0 + slot / MT, 8 * (slot % MT));
        }
      }
      continue;
    }
    // Otherwise (the producer may be filling the ring for the next pass) a tree through the
    // reduction slices: the upper half stores, the lower half adds.
    for (int active = consumers; active > 1; active >>= 1) {
      const int half = active >> 1;
      if (w >= half && w < active) {
        float4* dst = slices + (w - half) * slice_len + lane;
        for_each_pass_tile<kGroups, MT>(ntiles, [&](int q, int u, int j, int slot) {
          const float* a = acc[q][j][u];
          dst[slot * 32] = make_float4(a[0], a[1], a[2], a[3]);
        });
      }
      consumer_sync(32 * consumers);
      if (w < half) {
        const float4* src = slices + w * slice_len + lane;
        for_each_pass_tile<kGroups, MT>(ntiles, [&](int q, int u, int j, int slot) {
          const float4 v = src[slot * 32];
          acc[q][j][u][0] += v.x;
          acc[q][j][u][1] += v.y;
          acc[q][j][u][2] += v.z;
          acc[q][j][u][3] += v.w;
        });
      }
      consumer_sync(32 * consumers);
    }
    if (w == 0 && plan.decode) {
#pragma unroll
      for (int q = 0; q < kGroups; ++q) {
        const int i0 = q * kBulkTileGroup;
        if (i0 < ntiles) {
          store_fragment<T, MT, kBulkTileGroup>(p, acc[q], lane, tile0 + i0, 0, ntiles - i0);
        }
      }
    }
  }
  KCM_TRACE(1, threadIdx.x == 0);
#endif
}

// log2(group_size) where the scale groups are a power of two without an act-order table, else
// -1: where a group index is a shift of the channel (the host's view, for the launchers' plans).
inline int power_of_two_group_shift(const GemmParams& p) {
  if (p.gtab != nullptr || p.group_size <= 0 || (p.group_size & (p.group_size - 1)) != 0) {
    return -1;
  }
  int shift = 0;
  while ((1 << shift) < p.group_size) ++shift;
  return shift;
}

// Shared-memory plan of a bulk launch for this device (sms multiprocessors, smem_limit bytes of
// shared memory per block), or a cudaError_t value when the launch cannot be served.
// min_stages: the fewest stages a plan with more than one tile or chunk per warp may have (3; 2
// lets passes of 4-7 tiles with 16 activation rows keep 2 chunks per warp and stage).
// grid: kBulkEvenGrid (the plugin's launches) as few blocks as keep the widest block's tiles; 0 one
// block per SM (at most N16), a positive count at most that many blocks (gpu/probe_bulk.py).
template <int FMT, int MT>
int plan_bulk(const GemmParams& p, int sms, int smem_limit, BulkPlan& plan, int& blocks,
              int tiles_cap = 16 / MT, int min_stages = 3, int grid = kBulkEvenGrid) {
  constexpr int V = VecCount<FMT>::value;
  const int w = p.WK;
  // Every stage copies at least one activation channel (K ends in the last chunk) and the bulk
  // copies need 16-byte aligned sources.
  const bool aligned = (reinterpret_cast<uintptr_t>(p.w) | reinterpret_cast<uintptr_t>(p.gscale) |
                        reinterpret_cast<uintptr_t>(p.zeros) | reinterpret_cast<uintptr_t>(p.x)) %
                           16 ==
                       0;
  // 16 consumer warps: passes of at most 4 tiles (their register budget), MT = 1.
  const bool wide = w == 16 && MT == 1;
  if ((w != 2 && w != 4 && w != 8 && !wide) || p.WN != 1 || p.M > 8 * MT || p.N16 < 1 || p.C < 1 ||
      (p.C - 1) * 64 >= p.K || p.K % 16 != 0 || !aligned || tiles_cap < 1 ||
      grid < kBulkEvenGrid) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  plan.decode = 1;
  blocks = p.N16 < sms ? p.N16 : sms;
  if (grid == kBulkEvenGrid) {
    const int widest = widest_block_tiles(p.N16, blocks);
    blocks = (p.N16 + widest - 1) / widest;
  } else if (grid > 0 && grid < blocks) {
    blocks = grid;
  }
  const int span_max = widest_block_tiles(p.N16, blocks);
  plan.group_shift = power_of_two_group_shift(p);
  const int tables = p.zeros != nullptr ? 2 : 1;
  const int warp_tiles = wide ? bulk_max_tiles<MT, 16>() : bulk_max_tiles<MT, 8>();
  const int max_tiles = tiles_cap < warp_tiles ? tiles_cap : warp_tiles;
  const int bars = 2 * kBulkMaxStages * 8;
  // Fewest passes first (each re-reads the activations); within a pass count the most chunks per
  // warp and stage up to the wanted number (about 8 tile-chunks of work per warp between
  // barriers); the first plan with at least min_stages stages wins.
  for (int passes = (span_max + max_tiles - 1) / max_tiles;; ++passes) {
    const int tiles = (span_max + passes - 1) / passes;
    for (int per_warp = tiles >= 8 ? 1 : tiles >= 4 ? 2 : 4; per_warp >= 1; per_warp /= 2) {
      const int chunks = w * per_warp;
      // Every 16 channels lie in one group (group sizes are multiples of 16), so a stage of 64 SC
      // channels touches at most 4 SC groups, and without act-order at most
      // (64 SC - 17) / gs + 2.
      int cap = 4 * chunks;
      if (p.gtab == nullptr && p.group_size > 0) {
        const int touched = (64 * chunks - 17) / p.group_size + 2;
        cap = touched < cap ? touched : cap;
      }
      cap = p.G < cap ? p.G : cap;
      const int wslot = chunks * 512 * V;
      const int sslot = cap * 32;
      const int xstride = chunks * 128 + 16;
      // Tensor copies land at 128-byte aligned addresses (the code slots are multiples of 512).
      const int zero_off = (tiles * (wslot + sslot) + 127) / 128 * 128;
      const int x_off = tables == 2 ? (zero_off + tiles * sslot + 127) / 128 * 128 : zero_off;
      const int stage_bytes = (x_off + p.M * xstride + 127) / 128 * 128;
      const int red = (w / 2) * tiles * MT * 512;
      int stages = (smem_limit - red - bars) / stage_bytes;
      stages = stages < kBulkMaxStages ? stages : kBulkMaxStages;
      const bool last_try = tiles == 1 && per_warp == 1;
      if (stages >= min_stages || (last_try && stages >= 2)) {
        plan.tiles_per_pass = tiles;
        plan.stages = stages;
        plan.chunks = chunks;
        plan.group_cap = cap;
        plan.wslot = wslot;
        plan.sslot = sslot;
        plan.xstride = xstride;
        plan.scale_off = tiles * wslot;
        plan.zero_off = zero_off;
        plan.x_off = x_off;
        plan.stage_bytes = stage_bytes;
        plan.red_off = stages * stage_bytes;
        plan.bar_off = plan.red_off + red;
        return 0;
      }
      if (last_try) return static_cast<int>(cudaErrorInvalidValue);
    }
  }
}

// cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// One map over a layer table seen as [outer][middle][inner] eight-byte words (a row tile's codes
// or groups: inner = the words of a chunk or group, middle = chunks or groups, outer = row tiles),
// boxing inner x box_middle x box_outer words.
inline cudaError_t encode_words_3d(CUtensorMap* map, const void* base, int inner, int middle,
                                   int outer, int box_middle, int box_outer) {
  const auto encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(middle),
                              static_cast<cuuint64_t>(outer)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(inner) * 8,
                                 static_cast<cuuint64_t>(inner) * 8 * middle};
  const cuuint32_t box[3] = {static_cast<cuuint32_t>(inner), static_cast<cuuint32_t>(box_middle),
                             static_cast<cuuint32_t>(box_outer)};
  const cuuint32_t unit[3] = {1, 1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT64, 3, const_cast<void*>(base), dims,
                            strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// The launch's BulkMaps: codes boxed chunks x tiles, scale (and zero-point) groups boxed
// group_cap x tiles, for passes of tiles_per_pass and of one tile fewer.
template <int V>
cudaError_t encode_bulk_maps(const GemmParams& p, const BulkPlan& plan, BulkMaps& maps) {
  maps = {};  // the zero-point maps stay zero bytes without zero points
  maps.box_tiles[0] = plan.tiles_per_pass;
  maps.box_tiles[1] = plan.tiles_per_pass > 1 ? plan.tiles_per_pass - 1 : 1;
  for (int b = 0; b < 2; ++b) {
    const int tiles = maps.box_tiles[b];
    cudaError_t e = encode_words_3d(&maps.codes[b], p.w, 64 * V, p.C, p.N16, plan.chunks, tiles);
    if (e == cudaSuccess) {
      e = encode_words_3d(&maps.scales[b], p.gscale, 4, p.G, p.N16, plan.group_cap, tiles);
    }
    if (e == cudaSuccess && p.zeros != nullptr) {
      e = encode_words_3d(&maps.zeros[b], p.zeros, 4, p.G, p.N16, plan.group_cap, tiles);
    }
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// flat: the flat consumer (pipeline 3; also the only one that serves 16 consumer warps);
// exact_tail: the flat consumer whose last tile group decodes only the pass's tiles (pipeline 4:
// 4-bit codes, MT <= 2, at most 8 consumer warps; the instances exist only there). Its instance
// runs only where a pass of the widest block ends in a partial tile group; where they all hold
// whole groups (widest_passes_whole) the flat instance decodes exactly the same tiles on the
// blocks that set the time (narrower blocks decode up to 3 spare tiles and still finish first),
// and the tail's per-chunk branch measured 2-11% slower there (8192 x 28672, 8192 x 8192 at
// M = 1, 4 and 16; NOTES.md v6). min_stages: plan_bulk's. scale_after: the exact-tail consumer
// multiplies the group scales into the mma sums (pipeline 6; 4-bit integer codes where
// scale_groups_hold_chunks). grid: plan_bulk's (the probe passes others).
template <typename T, int FMT, int MT>
int launch_gemm_bulk(const GemmParams& p, cudaStream_t stream, int tiles_cap = 16 / MT,
                     int decode = 1, bool flat = false, bool exact_tail = false,
                     int min_stages = 3, bool scale_after = false, int grid = kBulkEvenGrid) {
  int device = 0, major = 0, sms = 0, smem_limit = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (err != cudaSuccess) return static_cast<int>(err);
  if (major < 9) return static_cast<int>(cudaErrorNotSupported);  // bulk copies need SM90
  // 16 consumer warps: the flat consumer only (no act-order, decoding).
  if (p.WK > 8 && (!flat || p.gtab != nullptr || !decode)) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  // Without the copies only the flat consumer runs on (its waits are skipped; the default one's
  // are not).
  if (decode == kConsumersAlone && (!flat || p.gtab != nullptr)) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  BulkPlan plan;
  int blocks = 0;
  const int planned = plan_bulk<FMT, MT>(p, sms, smem_limit, plan, blocks, tiles_cap,
                                         min_stages, grid);
  plan.decode = decode;
  if (planned != 0) return planned;
  BulkMaps maps;
  err = encode_bulk_maps<VecCount<FMT>::value>(p, plan, maps);
  if (err != cudaSuccess) return static_cast<int>(err);
  const size_t bytes = static_cast<size_t>(plan.bar_off) + 2 * plan.stages * sizeof(uint64_t);
  const int threads = 32 * (p.WK + 1);
  auto run = [&](auto kernel) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes));
    if (e != cudaSuccess) return static_cast<int>(e);
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(blocks);
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = bytes;
    config.stream = stream;
    cudaLaunchAttribute dependent;
    dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    dependent.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &dependent;
    config.numAttrs = p.pdl ? 1 : 0;
    e = cudaLaunchKernelEx(&config, kernel, p, plan, maps);
    return static_cast<int>(e != cudaSuccess ? e : cudaGetLastError());
  };
  if (exact_tail) {
    // 16 consumer warps with the scale after the mma (pipeline 6 on passes of one tile group:
    // twice the warps per sub-partition at 96 registers), only where no block holds more than
    // that one group (one pass; a block of fewer tiles decodes its last tile again for the
    // group's spare places and never stores them).
    if constexpr (FMT == kInt4 && MT == 1) {
      if (flat && p.WK == 16 && scale_after && scale_groups_hold_chunks(p) &&
          widest_block_tiles(p.N16, blocks) <= kBulkTileGroup) {
        return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 16, false, true>);
      }
    }
    if constexpr (VecCount<FMT>::value == 1 && MT <= 2) {
      if (flat && p.WK <= 8) {
        const bool whole = widest_passes_whole(widest_block_tiles(p.N16, blocks),
                                               plan.tiles_per_pass);
        if (!scale_after) {
          if (whole) return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 8>);
          return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 8, true>);
        }
        if constexpr (FMT == kInt4) {
          if (scale_groups_hold_chunks(p)) {
            if (whole) return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 8, false, true>);
            return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 8, true, true>);
          }
        }
      }
    }
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (!flat) return run(stream_gemm_bulk_kernel<T, FMT, MT, false, 8>);
  if (p.WK <= 8) return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 8>);
  if constexpr (bulk_max_tiles<MT, 16>() >= kBulkTileGroup) {
    return run(stream_gemm_bulk_kernel<T, FMT, MT, true, 16>);
  }
  return static_cast<int>(cudaErrorInvalidValue);
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
