// A torch-free C entry point to the stream kernel, for probing launch variants on a GPU machine
// without building the torch extension (build once anywhere with nvcc; see probe_pipelines.py).
#include "probe_params.h"

extern "C" int kcm_probe_gemm(int dtype, const void* x, const void* w, const void* gscale,
                              const void* chan, void* out, int m, int n, int k, int chunks,
                              int n16, int groups, int group_size, int zconst, int fmt, int mt,
                              int rows, int wn, int wk, int pipeline, void* stream) {
  const kcm::GemmParams p = probe_params(x, w, gscale, chan, out, m, n, k, chunks, n16, groups,
                                         group_size, zconst, wn, wk);
  return dtype == kcm::kHalf ? kcm::launch_gemm_half(p, fmt, mt, rows, pipeline, stream)
                             : kcm::launch_gemm_bfloat16(p, fmt, mt, rows, pipeline, stream);
}
