// Tile kernel instances for float16 activations (one translation unit per type: parallel builds).
#include "tile_launch.cuh"

namespace kcm {

int launch_tile_half(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                     void* stream) {
  return launch_tile_typed<half>(p, fmt, bmx, rw, split, variant, stream);
}

int tile_clusters_half(int fmt, int bmx, int rw, int split, int variant) {
  return tile_clusters_typed<half>(fmt, bmx, rw, split, variant);
}

}  // namespace kcm
