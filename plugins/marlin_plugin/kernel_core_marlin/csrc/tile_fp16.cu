// Tile kernel instances for float16 activations (one translation unit per type: parallel builds).
#include "tile_launch.cuh"
#include "x_image.cuh"

namespace kcm {

int launch_tile_half(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                     void* stream) {
  return launch_tile_typed<half>(p, fmt, bmx, rw, split, variant, stream);
}

int tile_clusters_half(int fmt, int bmx, int rw, int split, int variant) {
  return tile_clusters_typed<half>(fmt, bmx, rw, split, variant);
}

int launch_activation_image_half(const void* x, void* image, int m, int k, int chunks,
                                 void* stream) {
  return launch_activation_image_typed<half>(x, image, m, k, chunks, stream);
}

}  // namespace kcm
