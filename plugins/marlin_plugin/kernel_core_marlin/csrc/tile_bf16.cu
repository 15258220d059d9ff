// Tile kernel instances for bfloat16 activations (one translation unit per type: parallel builds).
#include "tile_launch.cuh"
#include "x_image.cuh"

namespace kcm {

int launch_tile_bfloat16(const GemmParams& p, int fmt, int bmx, int rw, int split, int variant,
                         void* stream) {
  return launch_tile_typed<__nv_bfloat16>(p, fmt, bmx, rw, split, variant, stream);
}

// One definition for both types (the shape table does not depend on it).
bool tile_instance_built(int variant, int bmx, int rw) {
  return tile_shape_built(variant, bmx, rw);
}

int tile_clusters_bfloat16(int fmt, int bmx, int rw, int split, int variant) {
  return tile_clusters_typed<__nv_bfloat16>(fmt, bmx, rw, split, variant);
}

int launch_activation_image_bfloat16(const void* x, void* image, int m, int k, int chunks,
                                     void* stream) {
  return launch_activation_image_typed<__nv_bfloat16>(x, image, m, k, chunks, stream);
}

}  // namespace kcm
