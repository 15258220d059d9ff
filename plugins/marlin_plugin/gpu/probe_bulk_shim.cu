// A torch-free C entry point to the bulk pipeline with its diagnostic knobs (tiles per pass cap,
// copy pipeline alone, consumers alone), for gpu/probe_bulk.py; int4 and FP4 codes, bf16 activations, M <= 16;
// pipeline 2 (the default consumer) or, int4 only, 6 (the plugin's default at M <= 16); the grid
// by kcm_probe_bulk_set_grid.
// Build (plugins/marlin_plugin):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -shared -Xcompiler -fPIC \
//       -cudart static -Ikernel_core_marlin/csrc gpu/probe_bulk_shim.cu -o gpu/libkcm_bulk.so
// and with -DKCM_BULK_TRACE as gpu/libkcm_bulk_trace.so (the per-block timeline).
#include "probe_params.h"
#include "stream_gemm.cuh"

// Points the bulk kernels' timeline at `buffer` (blocks x kcm_probe_bulk_trace_slots() int64, SM
// clocks), or turns it off (nullptr). Built with -DKCM_BULK_TRACE only (stream_gemm.cuh,
// bulk_trace: the recording costs the consumers ~5%); otherwise there are 0 slots.
extern "C" int kcm_probe_bulk_trace(void* buffer) {
#ifdef KCM_BULK_TRACE
  long long* ptr = static_cast<long long*>(buffer);
  return static_cast<int>(cudaMemcpyToSymbol(kcm::kcm_bulk_trace, &ptr, sizeof(ptr)));
#else
  return buffer == nullptr ? 0 : static_cast<int>(cudaErrorNotSupported);
#endif
}

extern "C" int kcm_probe_bulk_trace_slots() {
#ifdef KCM_BULK_TRACE
  return kcm::kBulkTraceSlots;
#else
  return 0;
#endif
}

// The grid of the launches that follow (kcm::plan_bulk's `grid`: 0 one block per SM, a positive
// count at most that many, -1 kcm::kBulkEvenGrid, as few as keep the widest block's tiles).
static int probe_grid = 0;

extern "C" int kcm_probe_bulk_set_grid(int grid) {
  probe_grid = grid;
  return 0;
}

extern "C" int kcm_probe_bulk(const void* x, const void* w, const void* gscale, const void* chan,
                              void* out, int m, int n, int k, int chunks, int n16, int groups,
                              int group_size, int fmt, int mt, int consumers, int tiles_cap,
                              int decode, int pipeline, void* stream) {
  const kcm::GemmParams p = probe_params(x, w, gscale, chan, out, m, n, k, chunks, n16, groups,
                                         group_size, 8, 1, consumers);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  using bf16 = __nv_bfloat16;
  if (pipeline == 6 && fmt == kcm::kInt4 && mt == 1) {
    return kcm::launch_gemm_bulk<bf16, kcm::kInt4, 1>(p, s, tiles_cap, decode, true, true, 2, true,
                                                      probe_grid);
  }
  if (pipeline == 6 && fmt == kcm::kInt4 && mt == 2) {
    return kcm::launch_gemm_bulk<bf16, kcm::kInt4, 2>(p, s, tiles_cap, decode, true, true, 2, true,
                                                      probe_grid);
  }
  if (pipeline != 2) return static_cast<int>(cudaErrorInvalidValue);
  if (fmt == kcm::kInt4 && mt == 1) {
    return kcm::launch_gemm_bulk<bf16, kcm::kInt4, 1>(
        p, s, tiles_cap, decode, false, false, 3, false, probe_grid);
  }
  if (fmt == kcm::kInt4 && mt == 2) {
    return kcm::launch_gemm_bulk<bf16, kcm::kInt4, 2>(
        p, s, tiles_cap, decode, false, false, 3, false, probe_grid);
  }
  if (fmt == kcm::kFp4 && mt == 1) {
    return kcm::launch_gemm_bulk<bf16, kcm::kFp4, 1>(
        p, s, tiles_cap, decode, false, false, 3, false, probe_grid);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}
