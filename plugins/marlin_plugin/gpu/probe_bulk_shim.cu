// A torch-free C entry point to the bulk pipeline with its diagnostic knobs (tiles per pass cap,
// copy pipeline alone), for gpu/probe_bulk.py; int4 and FP4 codes, bf16 activations, M <= 16.
// Build (plugins/marlin_plugin):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -shared -Xcompiler -fPIC \
//       -cudart static -Ikernel_core_marlin/csrc gpu/probe_bulk_shim.cu -o gpu/libkcm_bulk.so
#include "stream_gemm.cuh"

extern "C" int kcm_probe_bulk(const void* x, const void* w, const void* gscale, const void* chan,
                              void* out, int m, int n, int k, int chunks, int n16, int groups,
                              int group_size, int fmt, int mt, int consumers, int tiles_cap,
                              int decode, void* stream) {
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
  p.zconst = 8;
  p.WN = 1;
  p.WK = consumers;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool dec = decode != 0;
  if (fmt == kcm::kInt4 && mt == 1) return kcm::launch_gemm_bulk<__nv_bfloat16, kcm::kInt4, 1>(p, s, tiles_cap, dec);
  if (fmt == kcm::kInt4 && mt == 2) return kcm::launch_gemm_bulk<__nv_bfloat16, kcm::kInt4, 2>(p, s, tiles_cap, dec);
  if (fmt == kcm::kFp4 && mt == 1) return kcm::launch_gemm_bulk<__nv_bfloat16, kcm::kFp4, 1>(p, s, tiles_cap, dec);
  return static_cast<int>(cudaErrorInvalidValue);
}
