// GemmParams of a probe launch from plain pointers and sizes (no zero points, act-order or bias),
// shared by the torch-free probe entry points (probe_shim.cu, probe_bulk_shim.cu).
#pragma once

#include "../kernel_core_marlin/csrc/gemm_params.h"

inline kcm::GemmParams probe_params(const void* x, const void* w, const void* gscale,
                                    const void* chan, void* out, int m, int n, int k, int chunks,
                                    int n16, int groups, int group_size, int zconst, int wn,
                                    int wk) {
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
  return p;
}
