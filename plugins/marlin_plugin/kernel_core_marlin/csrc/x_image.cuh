// The activation image of tile variant 2 (kernel_core_marlin/x_image.py has the layout and the
// reference implementation): x [M, K] as [C][M8 = M rounded up to 8][64] in x's dtype, chunk c's
// rows one contiguous run, row r of a chunk permuted into the packed K order and swizzled by
// r & 7, so that the tile kernel moves a block's rows of a chunk with one 1-D bulk copy.
//
// One thread writes one 16-byte unit u of image row r of chunk c: its word j (j = 0..3) is the
// channel pair 64 c + 16 j + 2 (u ^ (r & 7)) of x's row r (zero past K or M). A warp covers four
// rows' eight units, so each of its four 4-byte loads reads 32 contiguous bytes of a row and its
// store is 512 contiguous bytes: one pass over x and one over the image, at the copy bandwidth
// (the torch gather + transpose it replaces took 8-48 us on the benchmark shapes, v18).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "stream_gemm.cuh"  // allow_dependent_launch

namespace kcm {

template <typename T>
__global__ void activation_image_kernel(const T* __restrict__ x, T* __restrict__ image, int m,
                                        int k, int m8, size_t units) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The tile kernel after it may launch as soon as every block of this one has started (it
  // waits for this grid's completion before it reads the image: tile_launch.cuh, p.pdl).
  allow_dependent_launch();
#endif
  const size_t unit = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (unit >= units) return;
  const int u = static_cast<int>(unit & 7);
  const size_t chunk_row = unit >> 3;  // c * m8 + r
  const int r = static_cast<int>(chunk_row % m8);
  const int c = static_cast<int>(chunk_row / m8);
  uint32_t words[4] = {0u, 0u, 0u, 0u};
  if (r < m) {
    const uint32_t* row = reinterpret_cast<const uint32_t*>(x + static_cast<size_t>(r) * k);
    const int first = 64 * c + 2 * (u ^ (r & 7));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int channel = first + 16 * j;
      if (channel < k) words[j] = __ldg(row + channel / 2);
    }
  }
  reinterpret_cast<uint4*>(image)[unit] = make_uint4(words[0], words[1], words[2], words[3]);
}

// x [m, k] (k even, rows 4-byte aligned) into image [chunks, m8, 64]; a cudaError_t value.
template <typename T>
int launch_activation_image_typed(const void* x, void* image, int m, int k, int chunks,
                                  void* stream) {
  const int m8 = (m + 7) / 8 * 8;
  const size_t units = static_cast<size_t>(chunks) * m8 * 8;
  if (units == 0) return 0;
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((units + kThreads - 1) / kThreads);
  activation_image_kernel<T><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<T*>(image), m, k, m8, units);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kcm
