// Tensor-core tile GEMM for M >= 9 on SM90 (wgmma), on the stream kernel's packed layout.
//
// out[m, n] = chan[n] * sum_k x[m, k] * (decode(code[n, k]) * gscale[n, group(k)]) + bias[n]
//
// Swap-AB as in the stream kernel: the weight is the wgmma A operand (64 rows of N per warpgroup,
// from registers) and the activations the B operand (BMX rows of M, from shared memory), so one
// m64nBMXk16 instruction covers 64 output features x BMX tokens x 16 channels. A lane's 16 bytes of
// a 16 x 64 tile (layout.py) are exactly its A fragments for the tile's four k16 steps, and a
// warpgroup's four warps own four consecutive 16-row tiles, which is the A layout of one m64
// instruction: the codes go global -> shared (cp.async, a ring of stages) -> registers, are
// decoded there with the stream kernel's bit tricks (decode_step) and feed wgmma directly.
//
// The packed K order inside a 64-channel chunk gives step s, fragment column 2t + 8 jhi + jlo the
// channel 16 t + 4 s + 2 jhi + jlo. The activations are therefore stored permuted: word w = 8 t +
// 2 s + jhi of a row's 64 channels (one 4-byte cp.async per lane, lane = w) goes to 16-byte unit
// 2 s + jhi = w & 7, word t = w >> 3, so step s reads bytes 32 s .. 32 s + 31 of the row, which is
// what a K-major, 128-byte-swizzled wgmma B operand advanced by 32 bytes per k16 step reads. The
// 128-byte swizzle (unit u of row r stored at u ^ (r & 7)) is applied by the same copy.
//
// Block: two warpgroups, RW 64-row blocks each (128 RW weight rows) x BMX tokens; K chunks run
// through a ring of kStages stages loaded kStages - 2 chunks ahead, so the stage being refilled
// was read by wgmmas that wgmma.wait_group(1) has already retired. Split-K runs as a thread-block
// cluster along x: each block of the cluster takes a share of the chunks, and the partial sums
// are added through distributed shared memory. No global workspace, nothing to zero between
// CUDA-graph replays.
//
// Three launch variants share the layout, the decode, the wgmmas and the epilogue:
// tile_gemm_kernel (0: every warp copies for itself, one block-wide barrier per chunk; measured,
// the dispatch's), tile_gemm_ws_kernel (1: a producer warpgroup copies, per-stage full/empty
// mbarriers hand stages over, so the consumer warpgroups run decoupled; see its comment) and
// tile_gemm_bulk_kernel (2: variant 1's consumers, a producer warpgroup moving each chunk with
// bulk copies from a host-built activation image, its copies split over four warps; see
// TileBulkCopies).
#pragma once

#include <cooperative_groups.h>

#include "stream_gemm.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KCM_TILE_SM90 1
#endif

namespace kcm {

// wgmma.mma_async m64nNk16, A (4 registers) from registers, B through a shared-memory descriptor,
// fp32 accumulators (N / 2 per thread); scale-d 1 (accumulate), no negation, B K-major.
// N = 16 and 32: the stream-K instances of 16- and 32-token blocks (M <= 32), where a 64-token
// block would spend three quarters (M=16) or half (M=32) of its tensor work on padding.
#define KCM_WGMMA_RS_N16(TY, d, a, desc)                                                  \
  asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32." TY "." TY " {"              \
               "%0, %1, %2, %3, %4, %5, %6, %7"   \
               "}, {%8, %9, %10, %11}, %12, 1, 1, 1, 0;\n"   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))

#define KCM_WGMMA_RS_N32(TY, d, a, desc)                                                  \
  asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " {"              \
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"   \
               "}, {%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n"   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),   \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))

#define KCM_WGMMA_RS_N64(TY, d, a, desc)                                                  \
  asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {"              \
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "   \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"   \
               "}, {%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),   \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),   \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),   \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))

#define KCM_WGMMA_RS_N128(TY, d, a, desc)                                                  \
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {"              \
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "   \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "   \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "   \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"   \
               "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n"   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),   \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),   \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),   \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),   \
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),   \
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),   \
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),   \
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))

#define KCM_WGMMA_RS_N256(TY, d, a, desc)                                                  \
  asm volatile("wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " {"              \
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "   \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "   \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "   \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "   \
               "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "   \
               "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "   \
               "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "   \
               "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"   \
               "}, {%128, %129, %130, %131}, %132, 1, 1, 1, 0;\n"   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),   \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),   \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),   \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),   \
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),   \
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),   \
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),   \
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),   \
                 "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),   \
                 "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),   \
                 "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),   \
                 "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),   \
                 "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),   \
                 "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),   \
                 "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),   \
                 "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))

template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc) {
#ifdef KCM_TILE_SM90
  constexpr bool kHalf = std::is_same<T, half>::value;
  if constexpr (N == 16) {
    if constexpr (kHalf) KCM_WGMMA_RS_N16("f16", d, a, desc); else KCM_WGMMA_RS_N16("bf16", d, a, desc);
  } else if constexpr (N == 32) {
    if constexpr (kHalf) KCM_WGMMA_RS_N32("f16", d, a, desc); else KCM_WGMMA_RS_N32("bf16", d, a, desc);
  } else if constexpr (N == 64) {
    if constexpr (kHalf) KCM_WGMMA_RS_N64("f16", d, a, desc); else KCM_WGMMA_RS_N64("bf16", d, a, desc);
  } else if constexpr (N == 128) {
    if constexpr (kHalf) KCM_WGMMA_RS_N128("f16", d, a, desc); else KCM_WGMMA_RS_N128("bf16", d, a, desc);
  } else {
    static_assert(N == 256, "wgmma N must be 16, 32, 64, 128 or 256");
    if constexpr (kHalf) KCM_WGMMA_RS_N256("f16", d, a, desc); else KCM_WGMMA_RS_N256("bf16", d, a, desc);
  }
#endif
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Empty volatile asm "defining" registers: keeps the compiler from moving the instructions that
// compute wgmma inputs (fragments, descriptors) past wgmma.fence, and accumulator reads or writes
// across a fence or wait (either serializes the wgmmas, or reads unfinished results).
template <int N>
__device__ __forceinline__ void pin_registers(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

template <int N>
__device__ __forceinline__ void pin_registers(uint32_t (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

__device__ __forceinline__ void pin_registers(uint64_t& d) { asm volatile("" : "+l"(d)::"memory"); }

// p + step, computed as one 64-bit add: the empty asm hides the chain from the compiler, which
// otherwise rebuilds every pointer of an unrolled loop as base + j * step (three multiplies).
template <typename T>
__device__ __forceinline__ const T* step_pointer(const T* p, size_t step) {
  const T* q = p + step;
  asm volatile("" : "+l"(q));
  return q;
}

// Shared-memory descriptor of a K-major operand with the 128-byte swizzle: 8-row atoms of
// 128-byte rows, 1024 bytes apart (stride byte offset); the leading byte offset is unused.
__device__ __forceinline__ uint64_t sw128_desc(const void* smem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// Bytes of one ring stage holding KC chunks (see TileLayout), rounded up to 1024.
constexpr int tile_stage_bytes(int v, int bmx, int rw, int kc) {
  return (kc * (bmx * 128 + 8 * rw * (v * 512 + 2 * 128)) + 1023) / 1024 * 1024;
}

//: The shared memory a tile ring may take (of the SM's 227 KB: the barriers and the 1024-byte
//: alignment slack come on top).
constexpr int kTileRingBytes = 220 * 1024;
//: The epilogue's staging: 16 tokens x 16 weight rows of 16-bit outputs for each of the 8
//: consumer warps (store_slice).
constexpr int kTileStoreStagingBytes = 8 * 512;

// Byte offsets inside one stage of the ring (all multiples of 1024 where wgmma reads). A stage
// holds KC consecutive chunks of the block: KC activation blocks, then per tile its codes of the
// KC chunks back to back (they lie back to back in the packed layout too, so the bulk variant
// moves them with one copy per tile and stage), then per tile its scale words of the KC chunks
// (128 bytes a chunk: a word per lane; or a tensor copy's 4 KC groups of 8 words, TileScaleMaps),
// then the zero-point words alike.
template <int FMT, int BMX, int RW, int KC = 1>
struct TileLayout {
  static constexpr int V = VecCount<FMT>::value;
  static constexpr int kRows = 128 * RW;  // weight rows per block: 2 warpgroups x RW x 64
  static constexpr int kTiles = kRows / 16;
  static constexpr int kX = 0;                                 // KC x BMX rows x 128 bytes
  static constexpr int kW = KC * BMX * 128;                    // kTiles x KC x V x 512 bytes
  static constexpr int kScales = kW + kTiles * KC * V * 512;   // kTiles x KC x 128 bytes
  static constexpr int kZeros = kScales + KC * kTiles * 128;
  static constexpr int kScalePitch = KC * 128;                 // bytes of a tile's table
  static constexpr int kStageBytes = tile_stage_bytes(V, BMX, RW, KC);
  static constexpr int kStages =
      (kTileRingBytes / kStageBytes) < 8 ? kTileRingBytes / kStageBytes : 8;
  static constexpr int kAhead = kStages - 2;  // chunks in flight ahead of the one computed
  static constexpr int kReduceBytes = kRows * BMX * 4;
  // The warp-specialized kernels' mbarriers (full[kStages], empty[kStages]) follow the ring, then
  // the epilogue's staging (store_slice: 512 bytes a consumer warp, never part of the ring, so a
  // stream-K block can store a tile while its producer fills the ring for the next segment).
  static constexpr int kBarriers = kStages * kStageBytes;
  static constexpr int kStoreStaging = kBarriers + 2 * 8 * kStages;
  static constexpr size_t kSmemBytes = kStoreStaging + kTileStoreStagingBytes + 1024;
  static_assert(KC == 1 || KC == 2, "one or two chunks a stage");
  static_assert(kZeros + KC * kTiles * 128 <= kStageBytes, "tile_stage_bytes disagrees");
  static_assert(kStages >= 3, "a stage must leave room for three in the ring");
  static_assert(kReduceBytes <= kStages * kStageBytes, "split-K partials must fit in the ring");
  static_assert(kSmemBytes <= 227 * 1024, "the SM's shared memory a block may take");

  // Chunk j of a stage: its activations, tile `local`'s codes (vector v), scale and zero words.
  __device__ __forceinline__ static constexpr int x_offset(int j) { return kX + j * BMX * 128; }
  __device__ __forceinline__ static constexpr int w_offset(int local, int j, int v) {
    return kW + ((local * KC + j) * V + v) * 512;
  }
  __device__ __forceinline__ static constexpr int s_offset(int local, int j) {
    return kScales + local * kScalePitch + j * 128;
  }
  __device__ __forceinline__ static constexpr int z_offset(int local, int j) {
    return kZeros + local * kScalePitch + j * 128;
  }
};

// Chunks per stage of the bulk variant: two where a ring of three such stages fits (half the
// codes copies per chunk: 0-10% faster on the H200, NOTES.md v29), else one.
constexpr int tile_bulk_stage_chunks(int fmt_v, int bmx, int rw) {
  return 3 * tile_stage_bytes(fmt_v, bmx, rw, 2) <= kTileRingBytes ? 2 : 1;
}

// The cp.async copies of one thread, chunk after chunk of its block: activation rows and weight
// tiles (codes, scale and zero-point words). With kCopyWarps = 8 (tile_gemm_kernel) warp w copies
// activation rows w + 8 j and its own tiles ((w / 4) RW + r) 4 + w % 4; with kCopyWarps = 4 (the
// producer warpgroup of tile_gemm_ws_kernel) warp w copies rows w + 4 j and the tiles of consumer
// warps w and w + 4. A lane copies word `lane` of a row to its permuted, swizzled place (see the
// top of the file); rows at or past M are not copied at all (their columns of the product are
// never stored), channels at or past K are zero-filled (they meet padding codes). Addresses
// advance one chunk per copy_chunk (no division or modulo in the loop).
// XP: the activations arrive already in the kernel's channel order (x_permuted_view), so each
// thread copies whole 16-byte units (probe variant; four times fewer copies).
template <typename T, int FMT, int BMX, int RW, bool XP, int kCopyWarps>
struct TileCopies {
  using Layout = TileLayout<FMT, BMX, RW>;
  static constexpr int V = VecCount<FMT>::value;
  static constexpr int kSets = 8 / kCopyWarps * RW;  // weight tiles per copying warp
  static constexpr int kXRowsPerCopy = XP ? 32 : kCopyWarps;  // rows between one thread's copies
  static_assert(kCopyWarps == 8 || (kCopyWarps == 4 && !XP), "8 copy warps, or 4 without XP");

  const GemmParams& p;
  const int lane;
  int q0;     // the first tile set of this warp: tile (q0 + i) 4 + warp % 4 of the block
  int wlane;  // warp % 4
  int x_dst;
  int x_flip;  // with 4 copy warps, odd copies land in rows with the other swizzle (unit ^ 4)
  int x_rows;
  size_t x_row_step;
  const T* x_next;
  int x_k;
  const int4* w_next[kSets];
  bool w_ok[kSets];
  size_t s_row[kSets];  // this lane's scale-table word of group 0
  int group_shift;
  int group_k;

  __device__ __forceinline__ TileCopies(const GemmParams& params, int n_block, int m0,
                                        int c_begin, int warp, int lane_, int tid)
      : p(params), lane(lane_) {
    const int g = lane >> 2;
    const int t = lane & 3;
    q0 = kCopyWarps == 8 ? (warp >> 2) * RW : 0;
    wlane = warp & 3;
    const int x_row0 = XP ? tid >> 3 : warp;
    x_dst = XP ? Layout::kX + x_row0 * 128 + (((tid & 7) ^ (x_row0 & 7)) * 16)
               : Layout::kX + warp * 128 + ((lane & 7) ^ warp) * 16 + (lane >> 3) * 4;
    x_flip = (x_dst ^ 64) - x_dst;
    x_rows = min(max((p.M - m0 - x_row0 + kXRowsPerCopy - 1) / kXRowsPerCopy, 0),
                 BMX / kXRowsPerCopy);
    x_row_step = static_cast<size_t>(kXRowsPerCopy) * p.K;
    const int x_col = XP ? (tid & 7) * 8 : 2 * lane;
    x_next = static_cast<const T*>(p.x) + static_cast<size_t>(m0 + x_row0) * p.K + c_begin * 64 +
             x_col;
    x_k = c_begin * 64 + x_col;
#pragma unroll
    for (int i = 0; i < kSets; ++i) {
      const int tile = n_block * Layout::kTiles + (q0 + i) * 4 + wlane;
      w_ok[i] = tile < p.N16;
      w_next[i] = static_cast<const int4*>(p.w) +
                  (static_cast<size_t>(w_ok[i] ? tile : 0) * p.C + c_begin) * V * 32 + lane;
      s_row[i] = static_cast<size_t>(w_ok[i] ? tile : 0) * p.G * 8 + g;
    }
    // The group of this lane's 16 channels: a table (act-order), a shift (power-of-two groups) or
    // a division.
    group_shift = (p.group_size & (p.group_size - 1)) == 0 ? __ffs(p.group_size) - 1 : -1;
    group_k = c_begin * 64 + 16 * t;
  }

  // Issues the copies of the next chunk into `stage` (no commit) and advances.
  __device__ __forceinline__ void copy_chunk(unsigned char* stage) {
    const bool k_ok = x_k < p.K;
    const T* src = x_next;
    unsigned char* dst = stage + x_dst;
    constexpr int kCopies = BMX / kXRowsPerCopy;
    auto copy_x = [&](int j) {
      unsigned char* d = dst + j * kXRowsPerCopy * 128;
      if constexpr (kCopyWarps == 4) d += (j & 1) ? x_flip : 0;
      if constexpr (XP) {
        copy_async16(d, src, k_ok);
      } else {
        copy_async4(d, src, k_ok);
      }
    };
    if (x_rows == kCopies) {  // a full block of tokens: no row predicates
#pragma unroll
      for (int j = 0; j < kCopies; ++j) {
        copy_x(j);
        src = step_pointer(src, x_row_step);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kCopies; ++j) {
        if (j < x_rows) copy_x(j);
        src = step_pointer(src, x_row_step);
      }
    }
    int grp = p.gtab != nullptr ? __ldg(p.gtab + (group_k >> 4))
              : group_shift >= 0 ? group_k >> group_shift
                                 : group_k / p.group_size;
    grp = min(grp, p.G - 1);
#pragma unroll
    for (int i = 0; i < kSets; ++i) {
      const int local = (q0 + i) * 4 + wlane;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        copy_async16(stage + Layout::kW + (local * V + v) * 512 + lane * 16, w_next[i] + v * 32,
                     w_ok[i]);
      }
      const size_t sidx = s_row[i] + static_cast<size_t>(grp) * 8;
      copy_async4(stage + Layout::kScales + local * 128 + lane * 4, p.gscale + sidx, w_ok[i]);
      if (p.zeros != nullptr) {
        copy_async4(stage + Layout::kZeros + local * 128 + lane * 4, p.zeros + sidx, w_ok[i]);
      }
      w_next[i] += V * 32;
    }
    x_next += 64;
    x_k += 64;
    group_k += 64;
  }
};

// The cp.async layout's place of a consumer lane's scale word of chunk j (copy_scale_words and
// TileCopies write word `lane` of each tile's 128 bytes for the chunk): bytes from the stage.
template <typename Layout>
__device__ __forceinline__ int lane_scale_word(int j, int lane) {
  return Layout::s_offset(0, j) + lane * 4;
}

// Consumer warp `warp` (0..7) of a block decodes its RW tiles of chunk j of a stage into A
// fragments.
// kWord: `word` gives the bytes from the stage to this lane's scale word of the chunk in the
// table of the block's tile 0 (the tiles Layout::kScalePitch apart, the zero points at the same
// place of theirs); else the word is the cp.async layout's (lane_scale_word), with no register
// held for it (the stream-K instances have none to spare).
template <typename T, int FMT, int BMX, int RW, int KC = 1, bool kWord = false>
__device__ __forceinline__ void decode_chunk(const GemmParams& p, const unsigned char* stage,
                                             int j, int word, int warp, int lane,
                                             uint32_t zconst_pair, uint32_t (&a)[RW][4][4]) {
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  constexpr int V = VecCount<FMT>::value;
#pragma unroll
  for (int r = 0; r < RW; ++r) {
    const int local = ((warp >> 2) * RW + r) * 4 + (warp & 3);
    uint4 wv[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      // Outside the bulk variant, the pre-v29 association ((stage + kW) + tile offset + lane):
      // folding kW into the tile offset's immediate spilled 104 bytes in the 8-bit stream-K
      // instance of 256 tokens (NOTES.md v30, after the last device call).
      wv[v] = *reinterpret_cast<const uint4*>(
          kWord ? stage + Layout::w_offset(local, j, v) + lane * 16
                : stage + Layout::kW + ((local * KC + j) * V + v) * 512 + lane * 16);
    }
    // Without kWord the address keeps the form stage + constant + lane * 4, which ptxas folds
    // without a register held across the loop (one more spilled the stream-K instances).
    const unsigned char* sp = kWord ? stage + word + local * Layout::kScalePitch
                                    : stage + Layout::s_offset(local, j) + lane * 4;
    const uint32_t sw = *reinterpret_cast<const uint32_t*>(sp);
    const uint32_t zw = p.zeros != nullptr
                            ? *reinterpret_cast<const uint32_t*>(sp + (Layout::kZeros -
                                                                       Layout::kScales))
                            : zconst_pair;
    const RowPair rp = make_row_pair<T, FMT>(sw, zw);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      decode_step<T, FMT>(step_word<FMT>(wv, s, 0), step_word<FMT>(wv, s, 1), rp, a[r][s]);
    }
  }
}

// Issues and commits the wgmmas of one chunk: the decoded A fragments times the activations of
// the stage at `stage_offset` (bytes from the first stage, whose descriptor is desc0).
template <typename T, int BMX, int RW>
__device__ __forceinline__ void mma_chunk_async(float (&acc)[RW][BMX / 2],
                                                uint32_t (&a)[RW][4][4], uint64_t desc0,
                                                int stage_offset) {
  uint64_t desc[4];  // step s reads bytes 32 s .. 32 s + 31 of every activation row
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    desc[s] = desc0 + ((stage_offset + 32 * s) >> 4);
    pin_registers(desc[s]);
  }
#pragma unroll
  for (int r = 0; r < RW; ++r) {
#pragma unroll
    for (int s = 0; s < 4; ++s) pin_registers(a[r][s]);
    pin_registers(acc[r]);
  }
  wgmma_fence();
#pragma unroll
  for (int r = 0; r < RW; ++r) {
#pragma unroll
    for (int s = 0; s < 4; ++s) wgmma_rs<T, BMX>(acc[r], a[r][s], desc[s]);
  }
  wgmma_commit();
#pragma unroll
  for (int r = 0; r < RW; ++r) pin_registers(acc[r]);
}

// Zeroes the accumulators, runs compute(a) over the block's `count` chunks with the two A
// register sets alternating statically (a chunk's decode overwrites the set whose wgmmas the
// previous chunk's wgmma.wait_group 1 retired), then retires the last wgmmas.
template <int RW, int kAcc, typename Compute>
__device__ __forceinline__ void run_chunks(int count, float (&acc)[RW][kAcc], Compute&& compute) {
#pragma unroll
  for (int r = 0; r < RW; ++r) {
#pragma unroll
    for (int e = 0; e < kAcc; ++e) acc[r][e] = 0.0f;
  }
  uint32_t a0[RW][4][4];
  uint32_t a1[RW][4][4];
  int i = 0;
  for (; i + 1 < count; i += 2) {
    compute(a0);
    compute(a1);
  }
  if (i < count) compute(a0);
  wgmma_wait<0>();
#pragma unroll
  for (int r = 0; r < RW; ++r) pin_registers(acc[r]);
}

// The weight row of half `half` (row g or g + 8) of consumer thread `tid`'s tile r in the block
// of 128 RW weight rows n_block: warp w owns the 16-row tiles ((w / 4) RW + r) 4 + w % 4.
template <int FMT, int BMX, int RW>
__device__ __forceinline__ int tile_output_row(int n_block, int tid, int r, int half) {
  using Layout = TileLayout<FMT, BMX, RW>;
  const int warp = tid >> 5;
  return (n_block * Layout::kTiles + ((warp >> 2) * RW + r) * 4 + (warp & 3)) * 16 +
         ((tid & 31) >> 2) + 8 * half;
}

// Where a thread's stores of outputs past M or N go: every store of a block's outputs is then
// unconditional, its address selected. A branch or predicate around the stores, inside the stream-K
// kernel's segment loop, made ptxas treat the ring's stage and the wgmma descriptors as
// per-thread values (see TileStream).
static __device__ uint4 tile_discard[256];  // one per translation unit

// stmatrix and thread-block clusters: SM90 only (the sm_80 build keeps trap stubs).
#ifdef KCM_TILE_SM90
// chan[n] and bias[n] of consumer thread `tid`'s two weight rows (g, g + 8) in its tile r, the
// affine map its sums take on the way out; rows past N read row N - 1 (their stores are
// discarded).
struct TileRowAffine {
  float scale[2];
  float shift[2];
};

template <typename T, int FMT, int BMX, int RW>
__device__ __forceinline__ TileRowAffine tile_row_affine(const GemmParams& p, int n_block,
                                                         int tid, int r) {
  const T* bias = static_cast<const T*>(p.bias);
  TileRowAffine a;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int n = tile_output_row<FMT, BMX, RW>(n_block, tid, r, half);
    const int row = n < p.N ? n : p.N - 1;
    a.scale[half] = p.chan != nullptr ? p.chan[row] : 1.0f;
    a.shift[half] = bias != nullptr ? to_float(bias[row]) : 0.0f;
  }
  return a;
}

// Four 8 x 8 matrices of 16-bit values to shared memory, transposed: register i of every lane is
// its fragment of matrix i (row lane / 4, columns 2 (lane % 4) and + 1), and lane 8 i + j gives
// the address of memory row j of matrix i, which receives the matrix's column j.
__device__ __forceinline__ void stmatrix_trans_x4(uint32_t address, const uint32_t (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(
                   address),
               "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
}

// Writes chan[n] * v + bias[n] as T for slice s of a consumer warp's tile r: its 16 weight rows
// x tokens m0 + 16 s .. + 15, from v = the thread's accumulator elements 8 s .. 8 s + 7 of that
// tile (element 4 h + 2 half + lo: row g + 8 half, token 16 s + 8 h + 2 t + lo).
// A token's outputs are contiguous along the weight rows, but a lane holds two rows of four
// tokens: stored as they lie, each 2-byte store of a warp touched four 128-byte lines for 16
// bytes each, and a 128 x 256 block's outputs took ~12 us on the H200 (gpu/probe_store.cu,
// NOTES.md v33). So the warp transposes the slice through its 512 bytes of `staging` (stmatrix
// .trans: [token][row], 32 bytes a token) and each lane stores 16 bytes, 8 rows of one token
// (~2.4 us for that block). That needs rows 16-byte aligned, N a multiple of 8; other layers keep
// one store per element (a uniform branch on N).
template <typename T, int FMT, int BMX, int RW>
__device__ __forceinline__ void store_slice(const GemmParams& p, int n_block, int m0, int tid,
                                            int r, int s, const float (&v)[8],
                                            const TileRowAffine& a, unsigned char* staging) {
  T* out = static_cast<T*>(p.out);
  const int lane = tid & 31;
  uint32_t pairs[4];  // pair i: tokens 8 (i >> 1) + 2 t, + 1 of row g + 8 (i & 1): matrix i
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int half = i & 1;
    pairs[i] = floats_to_pair<T>(v[2 * i] * a.scale[half] + a.shift[half],
                                 v[2 * i + 1] * a.scale[half] + a.shift[half]);
  }
  // The warp's tile starts at row n_tile; lane (g, t) holds rows n_tile + g, + 8.
  const int n_tile = tile_output_row<FMT, BMX, RW>(n_block, tid, r, 0) - (lane >> 2);
  const int m_slice = m0 + 16 * s;
  if ((p.N & 7) == 0) {
    const int i = lane >> 3;  // this lane addresses row j = lane % 8 of matrix i
    stmatrix_trans_x4(shared_address(staging + ((i >> 1) * 8 + (lane & 7)) * 32 + (i & 1) * 16),
                      pairs);
    __syncwarp();
    const uint4 rows8 = *reinterpret_cast<const uint4*>(staging + lane * 16);
    __syncwarp();  // read before the next slice's stmatrix
    const int m = m_slice + (lane >> 1);
    const int n = n_tile + 8 * (lane & 1);
    uint4* dst = n < p.N && m < p.M
                     ? reinterpret_cast<uint4*>(out + static_cast<size_t>(m) * p.N + n)
                     : tile_discard + tid;
    *dst = rows8;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int n = n_tile + (lane >> 2) + 8 * ((e >> 1) & 1);
      const int m = m_slice + 8 * (e >> 2) + 2 * (lane & 3) + (e & 1);
      T* dst = n < p.N && m < p.M ? out + static_cast<size_t>(m) * p.N + n
                                  : reinterpret_cast<T*>(tile_discard + tid);
      const uint32_t pair = pairs[e >> 1];
      *dst = *reinterpret_cast<const T*>(reinterpret_cast<const uint16_t*>(&pair) + (e & 1));
    }
  }
}

// Writes a block's outputs from per-thread values laid out as the wgmma accumulators (element e
// of vals[r]: weight row g + 8 ((e >> 1) & 1) of the warp's tile r, token 8 (e >> 2) + 2 t +
// (e & 1)), slice by slice through the warp's `staging` (store_slice). Tile R, then the next by
// recursion: a compile-time r, which `#pragma unroll` did not guarantee inside the stream
// kernel's segment loop (vals went to local memory there).
template <typename T, int FMT, int BMX, int RW, int R = 0>
__device__ __forceinline__ void store_block(const GemmParams& p, int n_block, int m0, int tid,
                                            const float (&vals)[RW][BMX / 2],
                                            unsigned char* staging) {
  if constexpr (R < RW) {
    const TileRowAffine a = tile_row_affine<T, FMT, BMX, RW>(p, n_block, tid, R);
#pragma unroll
    for (int s = 0; s < BMX / 16; ++s) {
      store_slice<T, FMT, BMX, RW>(p, n_block, m0, tid, R, s,
                                   *reinterpret_cast<const float(*)[8]>(&vals[R][8 * s]), a,
                                   staging);
    }
    store_block<T, FMT, BMX, RW, R + 1>(p, n_block, m0, tid, vals, staging);
  }
}

// The epilogue staging of consumer thread `tid`'s warp in a block's shared memory `smem` (the
// ring's base).
template <int FMT, int BMX, int RW, int KC = 1>
__device__ __forceinline__ unsigned char* tile_store_staging(unsigned char* smem, int tid) {
  return smem + TileLayout<FMT, BMX, RW, KC>::kStoreStaging + (tid >> 5) * 512;
}

// Where a block sits: its cluster (split-K), its 128 RW weight rows (n_block), its BMX tokens
// (from m0) and its share of the chunks [c_begin, c_begin + count).
struct TileBlock {
  cooperative_groups::cluster_group cluster;
  int split, rank, n_block, m0, c_begin, count;

  __device__ __forceinline__ TileBlock(const GemmParams& p, int bmx)
      : cluster(cooperative_groups::this_cluster()) {
    split = static_cast<int>(cluster.num_blocks());
    rank = static_cast<int>(cluster.block_rank());
    n_block = blockIdx.x / split;
    m0 = blockIdx.y * bmx;
    c_begin = rank * p.C / split;
    count = (rank + 1) * p.C / split - c_begin;
  }
};

// Writes chan[n] * acc + bias[n] of consumer thread `tid` (0..255), or with split-K first adds
// the partial sums of the cluster: every block parks its sums in its own ring (thread-major,
// conflict-free), then block `rank` adds the rank-th share of the 16-token slices (store_slice)
// over the whole cluster. `staging`: the thread's warp's (tile_store_staging). Threads that hold
// no sums (a producer warpgroup) call tile_epilogue_barriers instead.
template <typename T, int FMT, int BMX, int RW>
__device__ __forceinline__ void tile_epilogue(const GemmParams& p, float (&acc)[RW][BMX / 2],
                                              unsigned char* smem, unsigned char* staging,
                                              const TileBlock& blk, int tid) {
  const int split = blk.split;
  const int rank = blk.rank;
  const int n_block = blk.n_block;
  const int m0 = blk.m0;
  constexpr int kAcc = BMX / 2;
  if (split == 1) {
    store_block<T, FMT, BMX, RW>(p, n_block, m0, tid, acc, staging);
    return;
  }
  __syncthreads();
  float* partial = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int r = 0; r < RW; ++r) {
#pragma unroll
    for (int e = 0; e < kAcc; ++e) partial[(r * kAcc + e) * 256 + tid] = acc[r][e];
  }
  blk.cluster.sync();
  // Slice `slice` of the block: tile slice / (BMX / 16), its elements 8 (slice % (BMX / 16)) ..
  // + 7 (partial words 8 slice .. 8 slice + 7).
  constexpr int kSlices = RW * BMX / 16;
  const int lo = rank * kSlices / split;
  const int hi = (rank + 1) * kSlices / split;
  for (int slice = lo; slice < hi; ++slice) {
    float sum[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) sum[u] = 0.0f;
    for (int q = 0; q < split; ++q) {
      const float* peer = blk.cluster.map_shared_rank(partial, q);
#pragma unroll
      for (int u = 0; u < 8; ++u) sum[u] += peer[(8 * slice + u) * 256 + tid];
    }
    const int r = slice / (BMX / 16);
    store_slice<T, FMT, BMX, RW>(p, n_block, m0, tid, r, slice - r * (BMX / 16), sum,
                                 tile_row_affine<T, FMT, BMX, RW>(p, n_block, tid, r), staging);
  }
  blk.cluster.sync();  // no block leaves while a peer may still read its partial sums
}

// tile_epilogue's block and cluster barriers, for the threads of a block that hold no sums.
__device__ __forceinline__ void tile_epilogue_barriers(const TileBlock& blk) {
  if (blk.split == 1) return;
  __syncthreads();
  blk.cluster.sync();
  blk.cluster.sync();
}
#endif  // KCM_TILE_SM90

// The block's 64-byte-aligned dynamic shared memory, aligned to 1024 bytes by offsetting the
// shared array itself, so the compiler keeps shared-memory loads.
__device__ __forceinline__ unsigned char* tile_smem(unsigned char* raw) {
  return raw + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(raw)) & 1023)) & 1023);
}

// One block: 256 threads = 2 warpgroups; warp w owns the 16-row tiles ((w / 4) RW + r) 4 + w % 4,
// and every warp copies for itself; one block-wide barrier per chunk.
template <typename T, int FMT, int BMX, int RW, bool XP = false>
__global__ void __launch_bounds__(256, 1) tile_gemm_kernel(const GemmParams p) {
#ifdef KCM_TILE_SM90
  using Layout = TileLayout<FMT, BMX, RW>;
  constexpr int kAcc = BMX / 2;
  constexpr int kStages = Layout::kStages;
  constexpr int kAhead = Layout::kAhead;
  extern __shared__ unsigned char tile_smem_raw[];
  unsigned char* smem = tile_smem(tile_smem_raw);

  const TileBlock blk(p, BMX);

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const uint32_t zconst_pair = floats_to_pair<T>(static_cast<float>(p.zconst),
                                                 static_cast<float>(p.zconst));
  TileCopies<T, FMT, BMX, RW, XP, 8> copies(p, blk.n_block, blk.m0, blk.c_begin, warp, lane,
                                            tid);
  int issued = 0;
  int issue_stage = 0;

  auto issue = [&]() {
    if (issued < blk.count) {  // past the block's chunks: an empty group keeps the wait counts even
      copies.copy_chunk(smem + issue_stage * Layout::kStageBytes);
    }
    commit_async();
    ++issued;
    issue_stage = issue_stage + 1 == kStages ? 0 : issue_stage + 1;
  };

  float acc[RW][kAcc];
  const uint64_t desc0 = sw128_desc(smem + Layout::kX);
  int read_stage = 0;

  // One chunk: wait for its stage, refill the stage of the chunk two back, decode, issue its
  // wgmmas, and retire those of the previous chunk (whose A registers the next decode
  // overwrites). cp.async writes need no proxy fence before wgmma reads them (CUTLASS's
  // cp.async + GMMA mainloops have none either); a fence here costs a MEMBAR that waits for
  // every copy still in flight.
  auto compute = [&](uint32_t (&a)[RW][4][4]) {
    wait_async<kAhead - 1>();
    __syncthreads();
    issue();
    decode_chunk<T, FMT, BMX, RW>(p, smem + read_stage * Layout::kStageBytes, 0, 0, warp, lane,
                                  zconst_pair, a);
    mma_chunk_async<T, BMX, RW>(acc, a, desc0, read_stage * Layout::kStageBytes);
    wgmma_wait<1>();
    read_stage = read_stage + 1 == kStages ? 0 : read_stage + 1;
  };

#pragma unroll
  for (int i = 0; i < kAhead; ++i) issue();
  run_chunks(blk.count, acc, compute);
  wait_async<0>();
  tile_epilogue<T, FMT, BMX, RW>(p, acc, smem, tile_store_staging<FMT, BMX, RW>(smem, tid), blk,
                                 tid);
#else
  __trap();  // built for another architecture: the host dispatch sends only SM90 here
#endif
}

#ifdef KCM_TILE_SM90
// One arrival on `bar` once every cp.async this thread has issued so far has landed (the
// barrier's expected count includes it: .noinc).
__device__ __forceinline__ void copy_async_arrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(shared_address(bar))
               : "memory");
}

// Orders this thread's generic-proxy view of shared memory (cp.async writes it has observed
// through an mbarrier) before its async-proxy accesses (the wgmmas reading the stage).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
#endif

#ifdef KCM_TILE_SM90
// The warp-specialized variants' (1-3) shared memory: the ring's stages, then the full[kStages]
// and empty[kStages] mbarriers, initialized by thread 0 (full expecting `full_arrivals` per
// phase, empty one arrival per consumer warp) before a block-wide barrier.
template <int FMT, int BMX, int RW, int KC = 1>
struct TileRingMemory {
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  unsigned char* smem;
  uint64_t* full;
  uint64_t* empty;

  __device__ __forceinline__ TileRingMemory(unsigned char* raw, int full_arrivals)
      : smem(tile_smem(raw)) {
    full = reinterpret_cast<uint64_t*>(smem + Layout::kBarriers);
    empty = full + Layout::kStages;
    if (threadIdx.x == 0) {
      for (int s = 0; s < Layout::kStages; ++s) {
        mbarrier_init(full + s, full_arrivals);
        mbarrier_init(empty + s, 8);
      }
      mbarrier_init_fence();
    }
    __syncthreads();
  }
};
#endif

//: Threads of the warp-specialized tile kernel: two consumer warpgroups and one producer.
constexpr int kTileWsThreads = 384;
//: Registers per thread after setmaxnreg: consumers take what the producer warpgroup gives up
//: (2 x 128 x 232 + 128 x 40 = 384 x 168, the launch allocation at one block per SM).
constexpr int kTileWsConsumerRegs = 232;
constexpr int kTileWsProducerRegs = 40;

//: The bulk kernel's PROBE modes (gpu/probe_tile.py --bulk-modes; the output is then not the
//: product): the consumers alone on whatever the ring holds (no copies, no waits), the same
//: without the decode (the wgmmas on fixed fragments), the copy pipeline alone (every stage
//: waited for and released, nothing decoded or multiplied), the whole kernel without one
//: class of copies (activations, scale and zero words, codes: the stage holds stale bytes there),
//: and the consumers' decode alone (no copies, no waits, no wgmmas; ptxas drops fragments nothing
//: reads, so each tile's four fragments of a k16 step are folded into one of four running values
//: by two HFMA2, stored only where M < 0, i.e. never: TileRing::sink): with the consumers alone
//: and the wgmmas alone, whether the decode and the wgmmas overlap.
enum TileProbe : int {
  kTileProbeOff = 0,
  kTileProbeConsumersAlone = 1,
  kTileProbeWgmmaAlone = 2,
  kTileProbeCopiesAlone = 3,
  kTileProbeNoActivationCopies = 4,
  kTileProbeNoScaleCopies = 5,
  kTileProbeNoCodeCopies = 6,
  kTileProbeDecodeAlone = 7,
  kTileProbeStreamTrace = 8,  // stream-K (variant 3) only: TileStreamTimeline
};

//: Probe modes without copies (the consumers run on whatever the ring holds, without waits).
constexpr bool tile_probe_without_copies(int probe) {
  return probe == kTileProbeConsumersAlone || probe == kTileProbeWgmmaAlone ||
         probe == kTileProbeDecodeAlone;
}

// The bulk variant's scale and zero-point tables as TMA tensor maps, encoded per launch
// (encode_tile_scale_maps) and passed as a __grid_constant__ parameter. With group sizes of a
// power of two and no act-order table, a stage's groups of every tile of the block are one box
// (4 eight-byte words, i.e. a group's 8 words of a tile, x 4 KC groups from the stage's first x
// the block's tiles), one tensor copy per table and stage landing as [tile][group][8 words]: a
// tile's table is KC x 128 bytes as in the cp.async layout, so the consumers' offsets stay
// compile-time. 4 KC groups cover a stage at every such group size (16 channels: exactly; more:
// the rest is read ahead from L2 or zero-filled past G). The scale warp's 4-byte cp.async of
// every lane's word cost more than the consumers' own work at 64-token blocks: the kernel without
// them ran 26% faster (NOTES.md v30). groups = 0: the tables go by cp.async (act-order, group
// sizes not a power of two).
struct TileScaleMaps {
  CUtensorMap scales;
  CUtensorMap zeros;  // encoded only with zero points (zero bytes, never read, otherwise)
  int groups;         // groups a stage's box holds (4 KC), 0 for the cp.async path
  int shift;          // log2(group_size)
};

// TileScaleMaps::groups for stages of kc chunks: 0 (cp.async) unless the groups are a power of
// two without act-order, the table holds a group for every channel (the cp.async path clamps to
// the last group where a malformed table holds fewer; a box would zero-fill real channels), and
// the tables are 16-byte aligned as a tensor map needs.
inline int tile_scale_box_groups(const GemmParams& p, int kc) {
  const int shift = power_of_two_group_shift(p);
  const bool aligned = (reinterpret_cast<uintptr_t>(p.gscale) & 15) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.zeros) & 15) == 0;
  return shift >= 4 && (static_cast<long long>(p.G) << shift) >= p.K && aligned ? 4 * kc : 0;
}

// A consumer lane's place in tensor-copied scale tables (TileRing::scale_word): whether this
// launch's tables came so, log2(group_size), the next chunk's first channel, the current
// stage's, the lane's channel offset 16 (lane % 4). Empty for the cp.async layout.
template <bool kTensorScales>
struct TileScaleCursor {};

template <>
struct TileScaleCursor<true> {
  bool tensor = false;
  int shift = 0, k_next = 0, k_stage = 0, lane_k = 0;
};

#ifdef KCM_TILE_SM90
// A consumer warp's place in the ring of the warp-specialized variants (1-3; threads 0..255).
// chunk(): at a stage's first chunk wait on full[s], decode, issue the chunk's wgmmas, retire the
// previous chunk's (wgmma.wait_group 1) and, at a stage's first chunk, release the previous
// stage on empty[s'] (one arrival per warp: its last chunk's wgmmas have just retired). The stage
// of a run's last chunk is released by the next run's first chunk (variant 3: the next segment),
// a block's very last one never (nothing waits for it).
// kTensorScales (variants 2 and 3): the stage's scale tables may have come by tensor copies
// (TileScaleMaps, [tile][group][8 words]); a lane's word then follows the chunks' channels
// (scale_word). Variant 1 keeps the cp.async layout and none of those registers.
template <typename T, int FMT, int BMX, int RW, int KC = 1, int PROBE = kTileProbeOff,
          bool kTensorScales = false>
struct TileRing {
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  unsigned char* smem;
  uint64_t* full;
  uint64_t* empty;
  uint64_t desc0;
  uint32_t zconst_pair;
  int warp, lane;
  int chunks = 0;  // consumed so far: the next one's stage, place and phase parity derive from it
                   // (one register: the stream-K instances of 128 x 128 tokens have none to spare)
  TileScaleCursor<kTensorScales> cursor;  // kTensorScales: where the chunk's scale words lie
  uint32_t sink[4] = {};  // kTileProbeDecodeAlone: the fragments folded per k16 step (TileProbe)

  __device__ __forceinline__ TileRing(const GemmParams& p, unsigned char* smem_, uint64_t* full_,
                                      uint64_t* empty_, int tid)
      : smem(smem_), full(full_), empty(empty_), warp(tid >> 5), lane(tid & 31) {
    desc0 = sw128_desc(smem + Layout::kX);
    zconst_pair = floats_to_pair<T>(static_cast<float>(p.zconst), static_cast<float>(p.zconst));
  }

  // The tensor-copied tables' layout for this launch (maps.groups > 0), the block's first chunk.
  __device__ __forceinline__ void tensor_scales(const TileScaleMaps& maps, int c_begin) {
    static_assert(kTensorScales, "the cp.async layout's ring keeps no cursor");
    cursor.tensor = maps.groups > 0;
    cursor.shift = maps.shift;
    cursor.k_next = c_begin * 64;
    cursor.lane_k = 16 * (lane & 3);
  }

  // Starts a run of chunks at chunk c_begin of its tile (stream-K: a segment; its first chunk
  // is a stage's first, as the producer starts each run on a fresh stage), with the tables'
  // cursor there. The previous run's last stage, however few of its KC chunks it held, is
  // released by this run's first chunk.
  __device__ __forceinline__ void begin_run(const TileScaleMaps& maps, int c_begin) {
    chunks = (chunks + KC - 1) / KC * KC;
    tensor_scales(maps, c_begin);
  }

  // This lane's scale word of chunk j (bytes from the stage, in tile 0's table): in a
  // tensor-copied table, row pair lane / 4 of the group of its 16 channels counted from the
  // stage's first group; advances to the next chunk.
  __device__ __forceinline__ int scale_word(int j) {
    if constexpr (kTensorScales) {
      TileScaleCursor<true>& c = cursor;
      if (j == 0) c.k_stage = c.k_next;
      const int slot = ((c.k_next + c.lane_k) >> c.shift) - (c.k_stage >> c.shift);
      c.k_next += 64;
      if (c.tensor) return Layout::kScales + slot * 32 + (lane >> 2) * 4;
    }
    return lane_scale_word<Layout>(j, lane);
  }

  __device__ __forceinline__ void chunk(const GemmParams& p, float (&acc)[RW][BMX / 2],
                                        uint32_t (&a)[RW][4][4]) {
    constexpr bool kWaits = !tile_probe_without_copies(PROBE);
    const int j = chunks % KC;  // KC is 1 or 2: no division
    const int slot = chunks / KC;
    const int stage = slot % Layout::kStages;
    if (kWaits && j == 0) {
      mbarrier_wait(full + stage, (slot / Layout::kStages) & 1);
      fence_proxy_async_shared();
    }
    if constexpr (PROBE == kTileProbeWgmmaAlone) {
#pragma unroll
      for (int r = 0; r < RW; ++r) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[r][q][e] = zconst_pair ^ (lane + r + q + e);
        }
      }
    } else if constexpr (PROBE != kTileProbeCopiesAlone) {
      decode_chunk<T, FMT, BMX, RW, KC, kTensorScales>(p, smem + stage * Layout::kStageBytes, j,
                                                       scale_word(j), warp, lane, zconst_pair, a);
    }
    if constexpr (PROBE == kTileProbeDecodeAlone) {
#pragma unroll
      for (int r = 0; r < RW; ++r) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {  // four chains of 2 RW a chunk, not one of 8 RW
          sink[q] = fma2<T>(a[r][q][0], a[r][q][1], sink[q]);
          sink[q] = fma2<T>(a[r][q][2], a[r][q][3], sink[q]);
        }
      }
    } else if constexpr (PROBE != kTileProbeCopiesAlone) {
      mma_chunk_async<T, BMX, RW>(acc, a, desc0,
                                  stage * Layout::kStageBytes + Layout::x_offset(j));
      wgmma_wait<1>();
    }
    if (kWaits && j == 0 && chunks > 0 && lane == 0) {
      mbarrier_arrive(empty + (stage == 0 ? Layout::kStages - 1 : stage - 1));
    }
    ++chunks;
  }
};

// The consumer warpgroups of variants 1 and 2: the block's chunks through the ring, then the
// epilogue.
template <typename T, int FMT, int BMX, int RW, int KC = 1, int PROBE = kTileProbeOff,
          bool kTensorScales = false>
__device__ __forceinline__ void tile_ws_consume(const GemmParams& p, unsigned char* smem,
                                                uint64_t* full, uint64_t* empty,
                                                const TileBlock& blk, int tid,
                                                const TileScaleMaps* maps = nullptr) {
  setmaxnreg_inc<kTileWsConsumerRegs>();
  grid_dependency_wait();  // a programmatic dependent writes the output only after the image
  float acc[RW][BMX / 2];
  TileRing<T, FMT, BMX, RW, KC, PROBE, kTensorScales> ring(p, smem, full, empty, tid);
  if constexpr (kTensorScales) ring.tensor_scales(*maps, blk.c_begin);
  run_chunks(blk.count, acc, [&](uint32_t (&a)[RW][4][4]) { ring.chunk(p, acc, a); });
  if constexpr (PROBE == kTileProbeDecodeAlone) {
    if (p.M < 0) {  // never: keeps the decode
      static_cast<uint32_t*>(p.out)[tid] =
          ring.sink[0] ^ ring.sink[1] ^ ring.sink[2] ^ ring.sink[3];
    }
  }
  tile_epilogue<T, FMT, BMX, RW>(p, acc, smem, tile_store_staging<FMT, BMX, RW, KC>(smem, tid),
                                 blk, tid);
}
#endif

// Warp-specialized variant (launch variant 1): warps 0-7 are the same two consumer warpgroups
// (same tiles, same decode and wgmmas), warps 8-11 a producer warpgroup that issues every copy
// of the ring. Stages are handed over by mbarriers instead of a block-wide barrier per chunk:
// full[s] completes when the 128 producer threads' copies into stage s have landed
// (cp.async.mbarrier.arrive.noinc), empty[s] when the 8 consumer warps have retired the wgmmas
// that read it (one arrival per warp after wgmma.wait_group 1 of the next chunk). So each
// consumer warpgroup runs at its own pace: while one decodes chunk i + 1, the other's (and its
// own) wgmmas of chunk i run, and no warp waits for the slowest of eight every chunk; the
// consumers issue no copies. The producer keeps all kStages stages in flight.
template <typename T, int FMT, int BMX, int RW>
__global__ void __launch_bounds__(kTileWsThreads, 1) tile_gemm_ws_kernel(const GemmParams p) {
#ifdef KCM_TILE_SM90
  using Layout = TileLayout<FMT, BMX, RW>;
  constexpr int kStages = Layout::kStages;
  extern __shared__ unsigned char tile_smem_raw[];
  const TileBlock blk(p, BMX);
  const TileRingMemory<FMT, BMX, RW> mem(tile_smem_raw, 128);
  unsigned char* smem = mem.smem;
  uint64_t* full = mem.full;
  uint64_t* empty = mem.empty;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;

  if (warp >= 8) {  // producer warpgroup
    setmaxnreg_dec<kTileWsProducerRegs>();
    TileCopies<T, FMT, BMX, RW, false, 4> copies(p, blk.n_block, blk.m0, blk.c_begin, warp - 8,
                                                 lane, tid);
    int stage = 0;
    int round = 0;  // parity of the ring's pass: stage s's empty barrier completes once per pass
    for (int i = 0; i < blk.count; ++i) {
      if (i >= kStages) mbarrier_wait(empty + stage, round ^ 1);
      copies.copy_chunk(smem + stage * Layout::kStageBytes);
      copy_async_arrive(full + stage);
      if (++stage == kStages) {
        stage = 0;
        round ^= 1;
      }
    }
    commit_async();  // no thread leaves with copies in flight
    wait_async<0>();
    tile_epilogue_barriers(blk);
  } else {  // consumer warpgroups
    tile_ws_consume<T, FMT, BMX, RW>(p, smem, full, empty, blk, tid);
  }
#else
  __trap();  // built for another architecture: the host dispatch sends only SM90 here
#endif
}

#ifdef KCM_TILE_SM90
// Launch variant 2's producer warpgroup moves a chunk with a handful of bulk copies instead of
// thousands of cp.async. p.x is then the activation image (x_image.py): chunk c's rows m of the
// block are bytes ((c M8 + m) 128 ..) of a [C][M8 = M rounded up to 8][128 bytes] array, already
// in the permuted, 128-byte-swizzled order the wgmma B operand reads (rows of a block start at
// multiples of 8, so the swizzle of a row is its global row & 7), channels past K zero.
// The chunk's copies are split over the warpgroup's four warps, each waiting on empty[s] for
// itself: one warp issuing all of them set the pace (v12/v18 Nsight Compute: the consumers spent
// 62-67% of their samples waiting on full[s] while that warp issued without a pause; per-lane
// bulk copies with per-lane addresses are issued one lane at a time, ~16 dependent instructions
// each). Roles, by warp of the producer warpgroup:
// - kCopyActivations: lane 0 arms full[s] with the stage's bulk bytes (expect_tx, one of the
//   barrier's arrivals) and copies the block's min(BMX, M - m0) rows of each chunk of the stage
//   in one bulk copy (rows past M are neither copied nor stored);
// - kCopyWeightsLow / High: lane j copies tile j of its half of the block's tiles, V x 512 code
//   bytes per chunk of the stage in one bulk copy (evict-first: read once); tiles past N16 are
//   not copied (their rows are never stored). A copy may complete before the stage is armed:
//   full[s] cannot complete its phase before the arming arrival. Stages of two chunks, where
//   they fit, halve the codes copies (0-10% faster than one chunk a stage; NOTES.md v29);
// - kCopyScales: the scale and zero-point tables: with power-of-two groups and no act-order one
//   3-D tensor copy per table and stage (TileScaleMaps: the stage's groups of all the block's
//   tiles), else 4-byte cp.async from the 32 lanes (a lane's word of a 16 x 64 tile is the group
//   of its own 16 channels, i.e. words of up to four groups interleaved lane-major); either way
//   the 32 lanes then arrive by cp.async.mbarrier.arrive.noinc: full[s] expects 1 + 32 arrivals
//   and the stage's bulk and tensor bytes.
enum TileBulkRole : int {
  kCopyActivations = 0,
  kCopyWeightsLow = 1,
  kCopyWeightsHigh = 2,
  kCopyScales = 3,
};

// kTensorScales (variants 2 and 3): the scale tables may go by tensor copies (TileScaleMaps).
template <typename T, int FMT, int BMX, int RW, int KC = 1, int PROBE = kTileProbeOff,
          bool kTensorScales = false>
struct TileBulkCopies {
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  static constexpr int V = VecCount<FMT>::value;
  static constexpr int kTiles = Layout::kTiles;  // 8, 16 or 24: a half is at most one copy per lane
  static constexpr int kHalf = kTiles / 2;  // at most 8: one weight tile per producer lane

  const GemmParams& p;
  const int role;
  const int lane;
  int present;           // tiles of the block below N16
  int x_bytes;           // min(BMX, M - m0) rows x 128 bytes
  size_t x_chunk_step;   // M8 x 128 bytes
  const unsigned char* x_next;
  int w_tile;                   // the block-local tile this lane copies (weight roles)
  bool w_copies;                // whether it copies one
  const unsigned char* w_next;  // that tile's codes, chunk by chunk
  const uint32_t* s_tile0;      // scale word g of the block's tile 0, group 0
  const uint32_t* z_tile0;
  size_t s_tile_step;           // G x 8 words
  int group_shift;
  int group_k;
  const TileScaleMaps* maps;    // the tables' tensor maps (maps->groups > 0), or null: cp.async
  int tile0;                    // the block's first tile
  int chunk;                    // the next stage's first chunk

  __device__ __forceinline__ TileBulkCopies(const GemmParams& params, int n_block, int m0,
                                            int c_begin, int role_, int lane_,
                                            const TileScaleMaps* maps_ = nullptr)
      : p(params), role(role_), lane(lane_), maps(maps_), chunk(c_begin) {
    tile0 = n_block * kTiles;
    present = min(kTiles, p.N16 - tile0);
    x_bytes = min(BMX, p.M - m0) * 128;
    const size_t m8 = static_cast<size_t>((p.M + 7) & ~7);
    x_chunk_step = m8 * 128;
    x_next = static_cast<const unsigned char*>(p.x) + (c_begin * m8 + m0) * 128;
    w_tile = (role == kCopyWeightsHigh ? kHalf : 0) + lane;
    w_copies = (role == kCopyWeightsLow || role == kCopyWeightsHigh) && lane < kHalf &&
               w_tile < present;
    w_next = static_cast<const unsigned char*>(p.w) +
             (static_cast<size_t>(tile0 + (w_copies ? w_tile : 0)) * p.C + c_begin) * V * 512;
    const size_t s0 = static_cast<size_t>(tile0) * p.G * 8 + (lane >> 2);
    s_tile0 = p.gscale + s0;
    z_tile0 = p.zeros != nullptr ? p.zeros + s0 : nullptr;
    s_tile_step = static_cast<size_t>(p.G) * 8;
    group_shift = (p.group_size & (p.group_size - 1)) == 0 ? __ffs(p.group_size) - 1 : -1;
    group_k = c_begin * 64 + 16 * (lane & 3);
  }

  // Whether any lane of this warp copies anything: a weight warp of a block whose present tiles
  // all fall in the other half has none, and skips the chunk loop rather than follow the ring
  // through parity waits alone (a waiter that never signals could fall a whole ring pass behind
  // and misread a phase's parity).
  __device__ __forceinline__ bool warp_copies() const {
    return __any_sync(0xffffffffu,
                      role == kCopyActivations || role == kCopyScales || w_copies) != 0;
  }

  // Whether the scale (and zero-point) tables go by tensor copies.
  __device__ __forceinline__ bool tensor_scales() const {
    if constexpr (kTensorScales) return maps->groups > 0;
    return false;
  }

  // Bytes the bulk and tensor copies of a stage of kc chunks bring (its expect_tx count): a
  // tensor copy counts its whole box, tiles past N16 included (zero-filled).
  __device__ __forceinline__ int stage_bytes(int kc) const {
    const int tables = tensor_scales() && PROBE != kTileProbeNoScaleCopies
                           ? kTiles * maps->groups * 32 * (p.zeros != nullptr ? 2 : 1)
                           : 0;
    return kc * ((PROBE == kTileProbeNoActivationCopies ? 0 : x_bytes) +
                 (PROBE == kTileProbeNoCodeCopies ? 0 : present * V * 512)) +
           tables;
  }

  // Issues this warp's share of the copies of the next kc (<= KC) chunks into `stage`,
  // completing on `full`, and advances. A weight lane moves its tile's kc chunks of codes in one
  // copy: they are contiguous in the packed layout and in the stage.
  __device__ __forceinline__ void copy_stage(unsigned char* stage, uint64_t* full,
                                             uint64_t policy, int kc) {
    if (role == kCopyActivations) {
      if (lane == 0) {
        mbarrier_arrive_expect(full, stage_bytes(kc));
        for (int j = 0; j < kc && PROBE != kTileProbeNoActivationCopies; ++j) {
          bulk_copy(stage + Layout::x_offset(j), x_next + j * x_chunk_step, x_bytes, full);
        }
      }
      x_next += kc * x_chunk_step;
    } else if (role == kCopyScales) {
      if (tensor_scales()) {
        if (PROBE != kTileProbeNoScaleCopies) {
          const int first = (chunk * 64) >> maps->shift;  // chunk * 64 < K: below G
          tensor_copy_3d_elected(stage + Layout::kScales, &maps->scales, 0, first, tile0, full,
                                 policy);
          if (p.zeros != nullptr) {
            tensor_copy_3d_elected(stage + Layout::kZeros, &maps->zeros, 0, first, tile0, full,
                                   policy);
          }
        }
      } else {
        for (int j = 0; j < kc && PROBE != kTileProbeNoScaleCopies; ++j) {
          copy_scale_words(stage, j);
          group_k += 64;
        }
      }
      copy_async_arrive(full);  // the barrier's 32 arrivals, whichever path copied
      if constexpr (kTensorScales) chunk += kc;
    } else {
      if (w_copies && PROBE != kTileProbeNoCodeCopies) {
        bulk_copy_streamed(stage + Layout::w_offset(w_tile, 0, 0), w_next, kc * V * 512, full,
                           policy);
      }
      w_next += kc * V * 512;
    }
  }

  // The scale (and zero-point) word of every present tile for this lane's group of chunk j of
  // the stage (group_k: that chunk's).
  __device__ __forceinline__ void copy_scale_words(unsigned char* stage, int j) {
    int grp = p.gtab != nullptr ? __ldg(p.gtab + (group_k >> 4))
              : group_shift >= 0 ? group_k >> group_shift
                                 : group_k / p.group_size;
    grp = min(grp, p.G - 1);
    const uint32_t* src = s_tile0 + static_cast<size_t>(grp) * 8;
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      if (i < present) {
        copy_async4(stage + Layout::s_offset(i, j) + lane * 4, src, true);
      }
      src = step_pointer(src, s_tile_step);
    }
    if (z_tile0 != nullptr) {
      const uint32_t* zsrc = z_tile0 + static_cast<size_t>(grp) * 8;
#pragma unroll
      for (int i = 0; i < kTiles; ++i) {
        if (i < present) {
          copy_async4(stage + Layout::z_offset(i, j) + lane * 4, zsrc, true);
        }
        zsrc = step_pointer(zsrc, s_tile_step);
      }
    }
  }
};
#endif  // KCM_TILE_SM90

// Bulk-producer variant (launch variant 2): the consumers of variant 1 unchanged
// (tile_ws_consume), and a producer warpgroup whose four warps split every stage's copies
// (TileBulkCopies: one activation bulk copy per chunk, one per weight tile and stage, the scale
// and zero-point tables by tensor copies or 4-byte cp.async). A stage holds KC chunks
// (tile_bulk_stage_chunks), the block's last stage fewer where KC does not divide its count.
template <typename T, int FMT, int BMX, int RW, int KC = 1, int PROBE = kTileProbeOff>
__global__ void __launch_bounds__(kTileWsThreads, 1)
    tile_gemm_bulk_kernel(const GemmParams p, const __grid_constant__ TileScaleMaps maps) {
#ifdef KCM_TILE_SM90
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  constexpr int kStages = Layout::kStages;
  extern __shared__ unsigned char tile_smem_raw[];
  const TileBlock blk(p, BMX);
  // full[s]: the arming arrival (expect_tx) and 32 cp.async arrivals.
  const TileRingMemory<FMT, BMX, RW, KC> mem(tile_smem_raw, 1 + 32);
  unsigned char* smem = mem.smem;
  uint64_t* full = mem.full;
  uint64_t* empty = mem.empty;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;

  if (warp >= 8) {  // producer warpgroup: one copy role per warp
    setmaxnreg_dec<kTileWsProducerRegs>();
    TileBulkCopies<T, FMT, BMX, RW, KC, PROBE, true> copies(p, blk.n_block, blk.m0, blk.c_begin,
                                                            warp - 8, lane, &maps);
    const uint64_t policy = evict_first_policy();
    constexpr bool kCopies = !tile_probe_without_copies(PROBE);
    const int count = kCopies && copies.warp_copies() ? blk.count : 0;
    // Launched as a programmatic dependent (p.pdl), only the activation copies wait for the
    // image kernel: the layer's codes and scales of the first stages go out at once.
    if (warp - 8 == kCopyActivations) grid_dependency_wait();
    int stage = 0;
    int round = 0;
    for (int i = 0, c = 0; c < count; ++i, c += KC) {
      if (i >= kStages) mbarrier_wait(empty + stage, round ^ 1);
      copies.copy_stage(smem + stage * Layout::kStageBytes, full + stage, policy,
                        count - c < KC ? count - c : KC);
      if (++stage == kStages) {
        stage = 0;
        round ^= 1;
      }
    }
    commit_async();  // no thread leaves with cp.async copies in flight
    wait_async<0>();
    tile_epilogue_barriers(blk);
  } else {  // consumer warpgroups
    tile_ws_consume<T, FMT, BMX, RW, KC, PROBE, true>(p, smem, full, empty, blk, tid, &maps);
  }
#else
  __trap();  // built for another architecture: the host dispatch sends only SM90 here
#endif
}

// Launch variant 3 (stream-K) divides the work, not the tiles, among the SMs. A tile is one
// block's output (128 RW weight rows x BMX tokens) and a unit one 64-channel chunk of a tile:
// T = tiles x C units in tile-major order (tile t = n_block x m_blocks + m_block; unit t C + c),
// and block b of the G launched takes units [b T / G, (b + 1) T / G). Every SM then gets the same
// number of chunks whatever the tile count, where whole tiles per block leave SMs idle in the last
// wave (10240 x 8192 at 128 tokens: 80 tiles of 128 rows on 132 SMs; split-K clusters cannot
// even it out, clusters of 3 fit 39 at once). (Weighing each tile's sum in this division, so the
// summing block takes fewer chunks, read no faster: NOTES.md v35-v36.) A block walks its range as
// segments, one per tile it touches; the ring and its producer run on across segments.
// A segment that holds a whole tile stores it. A tile shared by several blocks is summed by the
// block holding its first unit (its head: that block's last segment, kept in registers): every
// other piece is stored to its block's slot in a global workspace and arrives on the tile's
// counter; the head's block waits for them, adds them in block order (the same bits every
// launch) and stores the tile (tile_stream_epilogue, tile_stream_settle). A block waits only for
// blocks after it (a tile's other pieces lie in later blocks' ranges), so the waits form no
// cycle; they need every block of the grid running at once, which one block per SM, at most as
// many as SMs (the workspace's counters), gives on a device the launch has to itself: stream-K
// launches must not run concurrently with other work on the device (tile.stream_workspace). Why
// a fixed summing block: whichever block completed a tile summed it before (no waits), and the
// blocks that did ended 8-10 us after the others (NOTES.md v36).
// The division, computed from the launch parameters where it is needed rather than kept in a
// struct (the consumers' registers hold the wgmma accumulators). Everything here must stay
// warp-uniform in ptxas's eyes, so that the segment loop's trip counts, the ring's stage and the
// wgmma descriptors live in uniform registers: with per-thread values (a division instruction
// sequence, an empty volatile asm on blockIdx) the descriptors were rebuilt with R2UR between the
// wgmmas and a chunk took 28% longer on the H200 (NOTES.md v20). So every division is a
// multiply-high by a magic number the launcher computed (p.stream_div), and T x G fits an int.
enum TileStreamDivisor : int { kDivChunks = 0, kDivBlocks = 1, kDivUnits = 2, kDivTokenBlocks = 3 };

__device__ __forceinline__ int stream_div(const GemmParams& p, int n, TileStreamDivisor d) {
  return static_cast<int>((__umulhi(static_cast<unsigned>(n), p.stream_div[d][0]) +
                           static_cast<unsigned>(n)) >> p.stream_div[d][1]);
}

template <int BMX, int RW>
struct TileStream {
  // The first unit of block b's range, b T / G.
  __device__ __forceinline__ static int first_unit(const GemmParams& p, int b) {
    return stream_div(p, b * p.stream_units, kDivBlocks);
  }

  // The block whose range holds unit u: the largest b with b T / G <= u.
  __device__ __forceinline__ static int holder(const GemmParams& p, int u) {
    return stream_div(p, (u + 1) * static_cast<int>(gridDim.x) - 1, kDivUnits);
  }

  // Tile t's first token, given its weight-row block n_block = stream_div(p, t,
  // kDivTokenBlocks) (tile t = n_block x token blocks + token block).
  __device__ __forceinline__ static int first_token(const GemmParams& p, int tile, int n_block) {
    return (tile - n_block * ((p.M + BMX - 1) / BMX)) * BMX;
  }

  // Block b's stored piece in the workspace: its slot's 128 RW x BMX floats. A block stores at
  // most one, its first segment's (a tile's tail or middle; a head stays in registers).
  __device__ __forceinline__ static float* piece(const GemmParams& p, int b) {
    return p.partials + static_cast<size_t>(b) * (RW * (BMX / 2) * 256);
  }

  // A piece holds the consumer threads' accumulators thread-major in 16-byte quads: elements
  // 4 q .. 4 q + 3 of thread tid's acc (flattened over r) at float4 q * 256 + tid, so each
  // thread reads back exactly what it wrote and a warp's quad moves 512 contiguous bytes (four
  // times fewer instructions than a float each: NOTES.md v33).
  __device__ __forceinline__ static void put(float* piece, const float (&acc)[RW][BMX / 2],
                                             int tid) {
    float4* quads = reinterpret_cast<float4*>(piece) + tid;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
#pragma unroll
      for (int e = 0; e < BMX / 2; e += 4) {
        __stcg(quads + (r * (BMX / 2) + e) / 4 * 256,
               make_float4(acc[r][e], acc[r][e + 1], acc[r][e + 2], acc[r][e + 3]));
      }
    }
  }

  // acc = the piece (kAdd false) or acc += the piece.
  template <bool kAdd>
  __device__ __forceinline__ static void get(float (&acc)[RW][BMX / 2], const float* piece,
                                             int tid) {
    const float4* quads = reinterpret_cast<const float4*>(piece) + tid;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
#pragma unroll
      for (int e = 0; e < BMX / 2; e += 4) {
        const float4 v = __ldcg(quads + (r * (BMX / 2) + e) / 4 * 256);
        acc[r][e] = kAdd ? acc[r][e] + v.x : v.x;
        acc[r][e + 1] = kAdd ? acc[r][e + 1] + v.y : v.y;
        acc[r][e + 2] = kAdd ? acc[r][e + 2] + v.z : v.z;
        acc[r][e + 3] = kAdd ? acc[r][e + 3] + v.w : v.w;
      }
    }
  }
};

// A block's current segment: `count` chunks of one tile from unit `unit` (count 0 before the
// first).
struct TileSegment {
  int unit = 0;
  int count = 0;

  // Moves to the block's next segment; false past the end of its range.
  template <int BMX, int RW>
  __device__ __forceinline__ bool advance(const GemmParams& p) {
    using Stream = TileStream<BMX, RW>;
    const int next = count == 0 ? Stream::first_unit(p, blockIdx.x) : unit + count;
    const int end = Stream::first_unit(p, blockIdx.x + 1);
    if (next >= end) return false;
    const int left_in_tile = p.C - (next - stream_div(p, next, kDivChunks) * p.C);
    unit = next;
    count = end - next < left_in_tile ? end - next : left_in_tile;
    return true;
  }

  __device__ __forceinline__ int tile(const GemmParams& p) const {
    return stream_div(p, unit, kDivChunks);
  }
};

#ifdef KCM_TILE_SM90
// Barrier over the 256 consumer threads only (named barrier 1; the producer warps never join).
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, 256;" ::: "memory");
}

// Stores stream-K tile t's outputs from per-thread accumulators (store_block).
template <typename T, int FMT, int BMX, int RW>
__device__ __forceinline__ void tile_stream_store(const GemmParams& p, int tile, int tid,
                                                  const float (&acc)[RW][BMX / 2],
                                                  unsigned char* staging) {
  const int n_block = stream_div(p, tile, kDivTokenBlocks);
  store_block<T, FMT, BMX, RW>(p, n_block, TileStream<BMX, RW>::first_token(p, tile, n_block),
                               tid, acc, staging);
}

// A segment's epilogue, inside the segment loop: a whole tile is stored; the head of a shared
// tile stays in registers for tile_stream_settle; any other piece goes to its slot
// (thread-major: the head's block reads it back thread for thread, coalesced) and arrives on the
// tile's counter at once, so a block's first segment (the tail of a tile another block's last
// segment starts) arrives early in the launch. Only thread 0 waits for that: after a barrier over
// the consumers its fence releases every thread's stores (a release is cumulative over the
// barrier, the pattern of CUTLASS's stream-K barrier), then it increments the counter; the other
// 255 threads go on with the next segment. Returns, in thread 0, whether its arrival filled the
// counter: the head's units never arrive, so that would be a counter left nonzero by an earlier
// launch, and tile_stream_consume traps rather than sum a tile too early. (Kept as a value the
// loop carries: with the arrival's answer unused, ptxas built the wgmma descriptors in per-thread
// registers, R2UR between the wgmmas, which made every chunk 10-28% slower before: NOTES.md v20,
// v32, v36.) The stores are unconditional (see tile_discard).
template <typename T, int FMT, int BMX, int RW, typename Timeline>
__device__ __forceinline__ int tile_stream_epilogue(const GemmParams& p,
                                                    const float (&acc)[RW][BMX / 2],
                                                    const TileSegment& seg, int tid,
                                                    unsigned char* staging, Timeline& timeline) {
  using Stream = TileStream<BMX, RW>;
  const int tile = seg.tile(p);
  if (seg.count == p.C) {
    tile_stream_store<T, FMT, BMX, RW>(p, tile, tid, acc, staging);
    return 0;
  }
  const int start = tile * p.C;
  if (seg.unit == start) return 0;  // the head: this block sums the tile after the loop
  Stream::put(Stream::piece(p, blockIdx.x), acc, tid);
  consumers_sync();  // every thread's part of the piece is issued
  timeline.piece_issued(p, tid);
  if (tid != 0) return 0;
  __threadfence();  // the whole piece is visible before the counter says it arrived
  return atomicAdd(p.arrivals + Stream::holder(p, start), seg.count) + seg.count >= p.C;
}

// The global timer (ns, one clock for every SM).
__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

//: How long a summing block waits for the other pieces before it traps (ns): the waits take
//: microseconds; a grid whose blocks cannot all run at once (the launcher refuses those it can
//: see) would otherwise hang rather than fail.
constexpr unsigned long long kTileStreamWaitLimitNs = 1000000000ull;

// Thread 0's wait for a tile's other pieces: its counter's acquire load until every unit
// outside the head has arrived. More than that (a counter an earlier launch left nonzero) or
// none within the limit traps: an error, not a wrong sum or a hang. (The checks after the loop:
// a trap inside it cost the 256-token instances 48-60 bytes of spills and serialized wgmmas.)
__device__ __forceinline__ void wait_for_arrivals(const int* counter, int units) {
  const unsigned long long since = global_timer_ns();
  int arrived;
  while (true) {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(arrived) : "l"(counter) : "memory");
    if (arrived >= units || global_timer_ns() - since > kTileStreamWaitLimitNs) break;
    __nanosleep(64);
  }
  if (arrived != units) __trap();
}

// After the segment loop: the shared tile whose head is this block's last segment (still in
// acc), if any, summed here. Thread 0 waits until the tile's other units have arrived on the
// counter, its fence then makes them an acquire for the other threads' reads behind the barrier;
// the pieces of the later blocks are added to acc in block order, the tile stored and the
// counter reset for the next launch.
template <typename T, int FMT, int BMX, int RW, typename Timeline>
__device__ __forceinline__ void tile_stream_settle(const GemmParams& p, float (&acc)[RW][BMX / 2],
                                                   const TileSegment& last_seg, int tid,
                                                   unsigned char* staging, Timeline& timeline) {
  using Stream = TileStream<BMX, RW>;
  const int tile = last_seg.tile(p);
  const int start = tile * p.C;
  if (last_seg.count == p.C || last_seg.unit != start) return;  // no head of a shared tile
  if (tid == 0) {
    wait_for_arrivals(p.arrivals + blockIdx.x, p.C - last_seg.count);
    __threadfence();
  }
  consumers_sync();
  timeline.settle_fenced(p, tid);
  const int last = Stream::holder(p, start + p.C - 1);
  for (int b = static_cast<int>(blockIdx.x) + 1; b <= last; ++b) {
    Stream::template get<true>(acc, Stream::piece(p, b), tid);
  }
  tile_stream_store<T, FMT, BMX, RW>(p, tile, tid, acc, staging);
  if (tid == 0) p.arrivals[blockIdx.x] = 0;  // every piece of this launch is in
}

// The stream-K kernel's per-block timeline for gpu/trace_stream_k.py (kTileProbeStreamTrace; the
// production instances hold the empty one): consumer thread 0 writes kTileStreamTraceSlots words
// a block to p.trace: [0] / [1] %globaltimer (ns, one clock for all SMs) at the consumers' start
// and end, [2] clock64 at the start, then per segment s < kTileStreamTraceSegments clock64 at its
// start (3 + 3 s), after its last chunk's wgmmas (4 + 3 s) and after its epilogue (5 + 3 s), then
// the settle's start and end ([15], [16]), the settle's clock once the other pieces have arrived
// and the consumers passed the barrier after thread 0's fence ([17]; 0 where it sums no tile)
// and, for a segment s whose piece is stored, the clock once the consumers have issued the
// piece's stores, before thread 0's fence and arrival (18 + s).
constexpr int kTileStreamTraceSlots = 22;
constexpr int kTileStreamTraceSegments = 4;

template <bool kTrace>
struct TileStreamTimeline {
  __device__ __forceinline__ void start(const GemmParams&, int) {}
  __device__ __forceinline__ void segment(const GemmParams&, int, int) {}
  __device__ __forceinline__ void piece_issued(const GemmParams&, int) {}
  __device__ __forceinline__ void settle(const GemmParams&, int, int) {}
  __device__ __forceinline__ void settle_fenced(const GemmParams&, int) {}
  __device__ __forceinline__ void end(const GemmParams&, int) {}
};

template <>
struct TileStreamTimeline<true> {
  int segments = 0;

  __device__ __forceinline__ static void put(const GemmParams& p, int slot,
                                             unsigned long long value) {
    p.trace[blockIdx.x * kTileStreamTraceSlots + slot] = value;
  }
  __device__ __forceinline__ void start(const GemmParams& p, int tid) {
    if (tid == 0) {
      put(p, 0, global_timer_ns());
      put(p, 2, clock64());
    }
  }
  // which: 0 the segment's start, 1 its chunks done, 2 its epilogue done (then the next one).
  __device__ __forceinline__ void segment(const GemmParams& p, int which, int tid) {
    if (tid == 0 && segments < kTileStreamTraceSegments) {
      put(p, 3 + 3 * segments + which, clock64());
    }
    if (which == 2) ++segments;
  }
  __device__ __forceinline__ void piece_issued(const GemmParams& p, int tid) {
    if (tid == 0 && segments < kTileStreamTraceSegments) put(p, 18 + segments, clock64());
  }
  __device__ __forceinline__ void settle(const GemmParams& p, int which, int tid) {
    if (tid == 0) put(p, 15 + which, clock64());
  }
  __device__ __forceinline__ void settle_fenced(const GemmParams& p, int tid) {
    if (tid == 0) put(p, 17, clock64());
  }
  __device__ __forceinline__ void end(const GemmParams& p, int tid) {
    if (tid == 0) put(p, 1, global_timer_ns());
  }
};

// Variant 3's consumer warpgroups: variant 2's consumers (stages of KC chunks, the tables
// possibly by tensor copies), segment after segment; then the shared tile whose head they hold.
template <typename T, int FMT, int BMX, int RW, int KC, bool kTrace>
__device__ __forceinline__ void tile_stream_consume(const GemmParams& p, unsigned char* smem,
                                                    uint64_t* full, uint64_t* empty, int tid,
                                                    const TileScaleMaps& maps) {
  setmaxnreg_inc<kTileWsConsumerRegs>();
  // A programmatic dependent (p.pdl) touches the output, the pieces and the counters only after
  // the kernel before it (the image kernel, itself after the previous launch's settles).
  grid_dependency_wait();
  TileStreamTimeline<kTrace> timeline;
  timeline.start(p, tid);
  TileRing<T, FMT, BMX, RW, KC, kTileProbeOff, true> ring(p, smem, full, empty, tid);
  unsigned char* staging = tile_store_staging<FMT, BMX, RW, KC>(smem, tid);
  TileSegment seg;
  TileSegment last_seg;
  float acc[RW][BMX / 2];  // zeroed per segment (run_chunks): nothing flows between segments
  int overfull = 0;  // thread 0: an arrival filled a counter (tile_stream_epilogue)
  while (seg.advance<BMX, RW>(p)) {
    ring.begin_run(maps, seg.unit - seg.tile(p) * p.C);
    timeline.segment(p, 0, tid);
    run_chunks(seg.count, acc, [&](uint32_t (&a)[RW][4][4]) { ring.chunk(p, acc, a); });
    timeline.segment(p, 1, tid);
    overfull |= tile_stream_epilogue<T, FMT, BMX, RW>(p, acc, seg, tid, staging, timeline);
    timeline.segment(p, 2, tid);
    last_seg = seg;
  }
  if (overfull) __trap();
  timeline.settle(p, 0, tid);
  tile_stream_settle<T, FMT, BMX, RW>(p, acc, last_seg, tid, staging, timeline);
  timeline.settle(p, 1, tid);
  timeline.end(p, tid);
}

// Variant 3's producer warpgroup: variant 2's copy roles, segment after segment, in lockstep
// through the ring. A segment starts on a fresh stage (a stage's chunks are one tile's: its
// codes one copy per tile, its tables one box), so its last stage may hold fewer than KC. Every
// warp arrives on full[s] for every stage (the weight warps once per stage by lane 0, even when
// the segment's tiles give them nothing to copy), so no warp can run a whole ring pass ahead of
// or behind the consumers, where an mbarrier parity would alias.
template <typename T, int FMT, int BMX, int RW, int KC>
__device__ __forceinline__ void tile_stream_produce(const GemmParams& p, unsigned char* smem,
                                                    uint64_t* full, uint64_t* empty, int role,
                                                    int lane, const TileScaleMaps& maps) {
  using Layout = TileLayout<FMT, BMX, RW, KC>;
  setmaxnreg_dec<kTileWsProducerRegs>();
  const uint64_t policy = evict_first_policy();
  const bool weights = role == kCopyWeightsLow || role == kCopyWeightsHigh;
  if (role == kCopyActivations) grid_dependency_wait();  // as in tile_gemm_bulk_kernel
  TileSegment seg;
  int stage = 0;
  int round = 0;
  int i = 0;
  while (seg.advance<BMX, RW>(p)) {
    const int tile = seg.tile(p);
    const int n_block = stream_div(p, tile, kDivTokenBlocks);
    TileBulkCopies<T, FMT, BMX, RW, KC, kTileProbeOff, true> copies(
        p, n_block, TileStream<BMX, RW>::first_token(p, tile, n_block), seg.unit - tile * p.C,
        role, lane, &maps);
    for (int c = 0; c < seg.count; c += KC, ++i) {
      if (i >= Layout::kStages) mbarrier_wait(empty + stage, round ^ 1);
      copies.copy_stage(smem + stage * Layout::kStageBytes, full + stage, policy,
                        seg.count - c < KC ? seg.count - c : KC);
      if (weights) {
        __syncwarp();
        if (lane == 0) mbarrier_arrive(full + stage);
      }
      if (++stage == Layout::kStages) {
        stage = 0;
        round ^= 1;
      }
    }
  }
  commit_async();  // no thread leaves with cp.async copies in flight
  wait_async<0>();
}
#endif  // KCM_TILE_SM90

//: full[s] arrivals per stage in variant 3: the arming one, the scale warp's 32 (its cp.async
//: words' or, after tensor copies, plain ones) and one from each weight warp.
constexpr int kTileStreamFullArrivals = 1 + 32 + 2;

// Stream-K variant (launch variant 3): variant 2's warp roles and stages (KC chunks, the tables
// by tensor copies where `maps` says so) on a stream-K division of the work (see TileStream);
// launched with at most p.stream_blocks blocks, no clusters. kTrace: the probe's instance that
// records TileStreamTimeline to p.trace.
template <typename T, int FMT, int BMX, int RW, int KC, bool kTrace = false>
__global__ void __launch_bounds__(kTileWsThreads, 1)
    tile_gemm_stream_kernel(const GemmParams p, const __grid_constant__ TileScaleMaps maps) {
#ifdef KCM_TILE_SM90
  extern __shared__ unsigned char tile_smem_raw[];
  const TileRingMemory<FMT, BMX, RW, KC> mem(tile_smem_raw, kTileStreamFullArrivals);
  unsigned char* smem = mem.smem;
  uint64_t* full = mem.full;
  uint64_t* empty = mem.empty;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  if (warp >= 8) {
    tile_stream_produce<T, FMT, BMX, RW, KC>(p, smem, full, empty, warp - 8, tid & 31, maps);
  } else {
    tile_stream_consume<T, FMT, BMX, RW, KC, kTrace>(p, smem, full, empty, tid, maps);
  }
#else
  __trap();  // built for another architecture: the host dispatch sends only SM90 here
#endif
}

}  // namespace kcm
