// A torch-free C entry point to the tile kernel (and the decoder, for the decode + cuBLAS
// baseline), for probing tile shapes on a GPU machine without building the torch extension.
// Build (plugins/marlin_plugin): see probe_tile.py.
#include <type_traits>

#include "probe_params.h"
#include "../kernel_core_marlin/csrc/tile_api.h"
#include "../kernel_core_marlin/csrc/tile_launch.cuh"

namespace {

// probe_params plus what the tile probe also passes (zero points, act-order table, bias).
kcm::GemmParams make(const void* x, const void* w, const void* gscale, const void* zeros,
                     const void* gtab, const void* chan, const void* bias, void* out, int m, int n,
                     int k, int chunks, int n16, int groups, int group_size, int zconst) {
  kcm::GemmParams p = probe_params(x, w, gscale, chan, out, m, n, k, chunks, n16, groups,
                                   group_size, zconst, 1, 1);
  p.zeros = static_cast<const uint32_t*>(zeros);
  p.gtab = static_cast<const int*>(gtab);
  p.bias = bias;
  return p;
}

}  // namespace

extern "C" int kcm_probe_tile(int dtype, int fmt, int bmx, int rw, int split, int variant,
                              const void* x,
                              const void* w, const void* gscale, const void* zeros,
                              const void* gtab, const void* chan, const void* bias, void* out,
                              int m, int n, int k, int chunks, int n16, int groups, int group_size,
                              int zconst, void* stream) {
  const kcm::GemmParams p = make(x, w, gscale, zeros, gtab, chan, bias, out, m, n, k, chunks, n16,
                                 groups, group_size, zconst);
  return dtype == kcm::kHalf ? kcm::launch_tile_half(p, fmt, bmx, rw, split, variant, stream)
                             : kcm::launch_tile_bfloat16(p, fmt, bmx, rw, split, variant, stream);
}

extern "C" int kcm_probe_activation_image(int dtype, const void* x, void* image, int m, int k,
                                          int chunks, void* stream) {
  return dtype == kcm::kHalf
             ? kcm::launch_activation_image_half(x, image, m, k, chunks, stream)
             : kcm::launch_activation_image_bfloat16(x, image, m, k, chunks, stream);
}

extern "C" int kcm_probe_dequantize(int dtype, int fmt, const void* w, const void* gscale,
                                    const void* zeros, const void* gtab, const void* chan,
                                    void* out, int n, int chunks, int n16, int groups,
                                    int group_size, int zconst, void* stream) {
  const kcm::GemmParams p = make(nullptr, w, gscale, zeros, gtab, chan, nullptr, out, 0, n, 0,
                                 chunks, n16, groups, group_size, zconst);
  return dtype == kcm::kHalf ? kcm::launch_dequantize_half(p, fmt, stream)
                             : kcm::launch_dequantize_bfloat16(p, fmt, stream);
}

extern "C" int kcm_probe_tile_clusters(int dtype, int fmt, int bmx, int rw, int split,
                                       int variant) {
  return dtype == kcm::kHalf ? kcm::tile_clusters_half(fmt, bmx, rw, split, variant)
                             : kcm::tile_clusters_bfloat16(fmt, bmx, rw, split, variant);
}

// Probe variant: activations pre-permuted into the kernel's channel order (16-byte copies).
extern "C" int kcm_probe_tile_permuted_x(int fmt, int bmx, int rw, int split, const void* x,
                                         const void* w, const void* gscale, const void* chan,
                                         void* out, int m, int n, int k, int chunks, int n16,
                                         int groups, int group_size, int zconst, void* stream) {
  const kcm::GemmParams p = make(x, w, gscale, nullptr, nullptr, chan, nullptr, out, m, n, k,
                                 chunks, n16, groups, group_size, zconst);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (fmt != kcm::kInt4 && fmt != kcm::kFp4) return static_cast<int>(cudaErrorInvalidValue);
  if (bmx == 64 && rw == 2) {
    return fmt == kcm::kInt4
               ? kcm::launch_tile_instance<__nv_bfloat16, kcm::kInt4, 64, 2, true>(p, split, s)
               : kcm::launch_tile_instance<__nv_bfloat16, kcm::kFp4, 64, 2, true>(p, split, s);
  }
  if (bmx == 128 && rw == 2) {
    return fmt == kcm::kInt4
               ? kcm::launch_tile_instance<__nv_bfloat16, kcm::kInt4, 128, 2, true>(p, split, s)
               : kcm::launch_tile_instance<__nv_bfloat16, kcm::kFp4, 128, 2, true>(p, split, s);
  }
  if (bmx == 256 && rw == 1) {
    return fmt == kcm::kInt4
               ? kcm::launch_tile_instance<__nv_bfloat16, kcm::kInt4, 256, 1, true>(p, split, s)
               : kcm::launch_tile_instance<__nv_bfloat16, kcm::kFp4, 256, 1, true>(p, split, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

// Probe variant: the bulk kernel (variant 2, bf16, int4 or fp4) with kc chunks per ring stage
// whatever tile_bulk_stage_chunks would pick, so that one run times one and two side by side.
namespace {
template <int FMT, int BMX, int RW>
int launch_bulk_stage(int kc, const kcm::GemmParams& p, int split, cudaStream_t s) {
  if (kc == 1) {
    return kcm::launch_tile_instance<__nv_bfloat16, FMT, BMX, RW, false, kcm::kTileBulk, 1>(
        p, split, s);
  }
  if constexpr (kcm::tile_bulk_stage_chunks(kcm::VecCount<FMT>::value, BMX, RW) == 2) {
    if (kc == 2) {
      return kcm::launch_tile_instance<__nv_bfloat16, FMT, BMX, RW, false, kcm::kTileBulk, 2>(
          p, split, s);
    }
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

// launch(BMX, RW) with the tile shape as compile-time constants (std::integral_constant), for
// the bulk probe entries' shapes of fewer than 256 tokens.
template <typename Launch>
int with_bulk_shape(int bmx, int rw, Launch&& launch) {
  using std::integral_constant;
  if (bmx == 64 && rw == 1) return launch(integral_constant<int, 64>{}, integral_constant<int, 1>{});
  if (bmx == 64 && rw == 2) return launch(integral_constant<int, 64>{}, integral_constant<int, 2>{});
  if (bmx == 128 && rw == 1) {
    return launch(integral_constant<int, 128>{}, integral_constant<int, 1>{});
  }
  if (bmx == 128 && rw == 2) {
    return launch(integral_constant<int, 128>{}, integral_constant<int, 2>{});
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

template <int FMT>
int launch_bulk_stage_shape(int kc, int bmx, int rw, const kcm::GemmParams& p, int split,
                            cudaStream_t s) {
  return with_bulk_shape(bmx, rw, [&](auto b, auto r) {
    return launch_bulk_stage<FMT, decltype(b)::value, decltype(r)::value>(kc, p, split, s);
  });
}
}  // namespace

extern "C" int kcm_probe_tile_bulk_stage(int kc, int fmt, int bmx, int rw, int split,
                                         const void* x_image, const void* w, const void* gscale,
                                         const void* zeros, const void* gtab, const void* chan,
                                         const void* bias, void* out, int m, int n, int k,
                                         int chunks, int n16, int groups, int group_size,
                                         int zconst, void* stream) {
  const kcm::GemmParams p = make(x_image, w, gscale, zeros, gtab, chan, bias, out, m, n, k,
                                 chunks, n16, groups, group_size, zconst);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (split < 1 || split > 8 || split > chunks) return static_cast<int>(cudaErrorInvalidValue);
  if (fmt == kcm::kInt4) return launch_bulk_stage_shape<kcm::kInt4>(kc, bmx, rw, p, split, s);
  if (fmt == kcm::kFp4) return launch_bulk_stage_shape<kcm::kFp4>(kc, bmx, rw, p, split, s);
  return static_cast<int>(cudaErrorInvalidValue);
}

// Probe variant: the bulk kernel (bf16 int4, the default chunks a stage) in one of its probe
// modes (kcm::TileProbe); the output is not the product.
namespace {
// Mode `mode` if it is MODE or a later one of the probe modes, by recursion over them.
template <int BMX, int RW, int MODE = kcm::kTileProbeConsumersAlone>
int launch_bulk_mode(int mode, const kcm::GemmParams& p, int split, cudaStream_t s) {
  if constexpr (MODE > kcm::kTileProbeDecodeAlone) {
    return static_cast<int>(cudaErrorInvalidValue);
  } else {
    if (mode != MODE) return launch_bulk_mode<BMX, RW, MODE + 1>(mode, p, split, s);
    return kcm::launch_tile_instance<__nv_bfloat16, kcm::kInt4, BMX, RW, false, kcm::kTileBulk,
                                     kcm::kTileStageChunks<kcm::kTileBulk, kcm::kInt4, BMX, RW>,
                                     MODE>(p, split, s);
  }
}
}  // namespace

extern "C" int kcm_probe_tile_bulk_mode(int mode, int bmx, int rw, int split, const void* x_image,
                                        const void* w, const void* gscale, const void* chan,
                                        void* out, int m, int n, int k, int chunks, int n16,
                                        int groups, int group_size, int zconst, void* stream) {
  const kcm::GemmParams p = make(x_image, w, gscale, nullptr, nullptr, chan, nullptr, out, m, n, k,
                                 chunks, n16, groups, group_size, zconst);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (split < 1 || split > 8 || split > chunks) return static_cast<int>(cudaErrorInvalidValue);
  return with_bulk_shape(bmx, rw, [&](auto b, auto r) {
    return launch_bulk_mode<decltype(b)::value, decltype(r)::value>(mode, p, split, s);
  });
}

// Probe variant: the stream-K kernel (bf16 int4) recording its per-block timeline
// (kcm::TileStreamTimeline, kcm::kTileStreamTraceSlots words a block) into `trace`, on a grid of
// at most `blocks` blocks over the given workspace (partials: 2 x blocks slots of 128 rw x bmx
// floats; arrivals: `blocks` counters, zero).
namespace {
template <int BMX, int RW>
int launch_stream_trace(const kcm::GemmParams& p, cudaStream_t s) {
  return kcm::launch_tile_instance<__nv_bfloat16, kcm::kInt4, BMX, RW, false, kcm::kTileStream,
                                   kcm::kTileStageChunks<kcm::kTileStream, kcm::kInt4, BMX, RW>,
                                   kcm::kTileProbeStreamTrace>(p, 1, s);
}
}  // namespace

extern "C" int kcm_probe_tile_stream_trace(int bmx, int rw, const void* x_image, const void* w,
                                           const void* gscale, void* out, void* partials,
                                           void* arrivals, void* trace, int blocks, int m, int n,
                                           int k, int chunks, int n16, int groups,
                                           int group_size, int zconst, void* stream) {
  kcm::GemmParams p = make(x_image, w, gscale, nullptr, nullptr, nullptr, nullptr, out, m, n, k,
                           chunks, n16, groups, group_size, zconst);
  p.partials = static_cast<float*>(partials);
  p.arrivals = static_cast<int*>(arrivals);
  p.stream_blocks = blocks;
  p.trace = static_cast<unsigned long long*>(trace);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (bmx == 64 && rw == 1) return launch_stream_trace<64, 1>(p, s);
  if (bmx == 64 && rw == 2) return launch_stream_trace<64, 2>(p, s);
  if (bmx == 128 && rw == 1) return launch_stream_trace<128, 1>(p, s);
  if (bmx == 256 && rw == 1) return launch_stream_trace<256, 1>(p, s);
  return static_cast<int>(cudaErrorInvalidValue);
}
