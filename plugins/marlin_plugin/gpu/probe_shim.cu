// A torch-free C entry point to the stream kernel, for probing launch variants on a GPU machine
// without building the torch extension (build once anywhere with nvcc; see probe_pipelines.py).
#include "../kernel_core_marlin/csrc/gemm_params.h"

extern "C" int kcm_probe_gemm(int dtype, const void* x, const void* w, const void* gscale,
                              const void* chan, void* out, int m, int n, int k, int chunks,
                              int n16, int groups, int group_size, int zconst, int fmt, int mt,
                              int rows, int wn, int wk, int pipeline, void* stream) {
  kcm::GemmParams p{};
  p.x = x;
  p.w = w;
  p.gscale = static_cast<const uint32_t*>(gscale);
  p.chan = static_cast<const float*>(chan);
  p.out = out;
  p.M = m;
  p.N = n;
  p.K = k;
  p.C = chunks;
  p.N16 = n16;
  p.G = groups;
  p.group_size = group_size;
  p.zconst = zconst;
  p.WN = wn;
  p.WK = wk;
  return dtype == kcm::kHalf ? kcm::launch_gemm_half(p, fmt, mt, rows, pipeline, stream)
                             : kcm::launch_gemm_bfloat16(p, fmt, mt, rows, pipeline, stream);
}
