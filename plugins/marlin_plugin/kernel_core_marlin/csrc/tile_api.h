// Plain C++ view of the tile kernel's launchers (no CUDA headers), for the bindings and probes.
#pragma once

#include "gemm_params.h"

namespace kcm {

// Each returns a cudaError_t value (0 = success). bmx: tokens per block (64, 128, 256); rw: 64-row
// weight blocks per warpgroup (1, 2; a block covers 128 rw weight rows); split: blocks of a
// cluster that share K (1..8, at most the number of 64-channel chunks). SM90 only.
int launch_tile_half(const GemmParams& p, int fmt, int bmx, int rw, int split, void* stream);
int launch_tile_bfloat16(const GemmParams& p, int fmt, int bmx, int rw, int split, void* stream);
// Clusters of `split` blocks of that shape that fit on the current device at once (negative:
// minus a cudaError_t value).
int tile_clusters_half(int fmt, int bmx, int rw, int split);
int tile_clusters_bfloat16(int fmt, int bmx, int rw, int split);

}  // namespace kcm
