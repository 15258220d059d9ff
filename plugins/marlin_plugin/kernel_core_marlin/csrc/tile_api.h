// Plain C++ view of the tile kernel's launchers (no CUDA headers), for the bindings and probes.
#pragma once

#include "gemm_params.h"

namespace kcm {

// Each returns a cudaError_t value (0 = success). bmx: tokens per block (16, 32, 64, 128, 256); rw:
// 64-row weight blocks per warpgroup (1-3; a block covers 128 rw weight rows; the shapes each
// variant has: tile_instance_built); split: blocks of a cluster that share K (1..8, at most the
// number of 64-channel chunks); variant: 0 every warp copies and a block-wide barrier per chunk,
// 1 warp-specialized (a producer warpgroup, mbarrier handoff; tile_gemm.cuh), 2 bulk producer
// (variant 1's consumers, a producer warpgroup of bulk copies; p.x is then the activation image,
// launch_activation_image), 3 stream-K (variant 2's warps on an even division of the chunks over
// min(p.stream_blocks, chunks) blocks; p.x the image, split 1, p.partials / p.arrivals its
// workspace). SM90 only.
int launch_tile_half(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                     void* stream);
int launch_tile_bfloat16(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                         void* stream);
// The activation image variant 2 reads (x_image.cuh): x [m, k] (k even) into image
// [chunks, m rounded up to 8, 64], both contiguous in the same 16-bit type.
int launch_activation_image_half(const void* x, void* image, int m, int k, int chunks,
                                 void* stream);
int launch_activation_image_bfloat16(const void* x, void* image, int m, int k, int chunks,
                                     void* stream);
// Whether variant `variant` has an instance of blocks of bmx tokens x 128 rw rows (the shapes the
// launchers dispatch; stream-K alone has 16 and 32 tokens, the others 128 x 256 rows).
bool tile_instance_built(int variant, int bmx, int rw);
// Clusters of `split` blocks of that shape and variant that fit on the current device at once
// (negative: minus a cudaError_t value).
int tile_clusters_half(int fmt, int bmx, int rw, int split, int variant);
int tile_clusters_bfloat16(int fmt, int bmx, int rw, int split, int variant);

}  // namespace kcm
