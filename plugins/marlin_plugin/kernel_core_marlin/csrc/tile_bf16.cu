// Tile kernel instances for bfloat16 activations (one translation unit per type: parallel builds).
#include "tile_launch.cuh"

namespace kcm {

int launch_tile_bfloat16(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                         void* stream) {
  return launch_tile_typed<__nv_bfloat16>(p, fmt, bmx, rw, split, variant, stream);
}

int tile_clusters_bfloat16(int fmt, int bmx, int rw, int split, int variant) {
  return tile_clusters_typed<__nv_bfloat16>(fmt, bmx, rw, split, variant);
}

}  // namespace kcm
