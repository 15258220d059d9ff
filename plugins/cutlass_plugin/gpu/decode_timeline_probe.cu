// The decode GEMM with per-CTA timestamps (csrc/decode_trace.h), for probe_decode_timeline.py.
//
// A plain shared library (no torch, no Python binding): the probe calls kcc_traced_decode through
// ctypes with the data pointers of its tensors. Only the weight-first decode tiles (fp8 -> bf16)
// are built here, the same ScaledMmSm90 instantiations as the plugin's small-M unit with
// KCC_DECODE_TRACE defined; like that unit it compiles without CUTLASS's grid-dependency waits.
#define KCC_DECODE_TRACE
#include "scaled_mm_sm90.cuh"

namespace kernel_core_cutlass {
namespace {

template <class Tile>
using TracedDecode =
    ScaledMmSm90<cutlass::float_e4m3_t, cutlass::bfloat16_t, Tile, Shape<_1, _1, _1>,
                 cutlass::gemm::KernelTmaWarpSpecializedFP8FastAccum, cutlass::epilogue::TmaWarpSpecialized,
                 true, cutlass::gemm::PersistentScheduler, true>;

}  // namespace
}  // namespace kernel_core_cutlass

// Where the launches that follow write their stamps: trace[cta * kNumDecodeEvents + event]. Set
// outside a CUDA graph (a copy from pageable memory syncs the stream first); a captured launch
// keeps writing there on every replay. Returns nullptr or what failed.
extern "C" const char* kcc_set_decode_trace(uint64_t* trace, void* stream) {
  if (cudaMemcpyToSymbolAsync(kernel_core_cutlass::g_decode_trace, &trace, sizeof(trace), 0,
                              cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)) != cudaSuccess) {
    return "cudaMemcpyToSymbolAsync of the trace pointer failed";
  }
  return cudaStreamSynchronize(static_cast<cudaStream_t>(stream)) == cudaSuccess
             ? nullptr
             : "cudaStreamSynchronize after setting the trace pointer failed";
}

// out = token_scale[m] * channel_scale[n] * (x @ w^T) with decode tile `tile` (kSwap64x16K256 or
// kSwap64x64K256), launched as the plugin launches it (pdl, weight_lead_stages), stamping into the
// buffer of kcc_set_decode_trace. Returns nullptr or the reason it did not run.
extern "C" const char* kcc_traced_decode(int tile, const void* x, const void* w, const float* token_scale,
                                         int token_scale_per_row, const float* channel_scale,
                                         int channel_scale_per_col, void* out, int m, int n, int k,
                                         int device, int sm_count, void* workspace,
                                         size_t workspace_bytes, void* stream, int pdl,
                                         int weight_lead_stages) {
  using namespace kernel_core_cutlass;
  ScaledMmArgs a{};
  a.x = x;
  a.w = w;
  a.token_scale = token_scale;
  a.token_scale_per_row = token_scale_per_row != 0;
  a.channel_scale = channel_scale;
  a.channel_scale_per_col = channel_scale_per_col != 0;
  a.out = out;
  a.m = m;
  a.n = n;
  a.k = k;
  a.device = device;
  a.sm_count = sm_count;
  a.workspace = workspace;
  a.workspace_bytes = workspace_bytes;
  a.stream = reinterpret_cast<int64_t>(stream);
  a.pdl = pdl != 0;
  a.weight_lead_stages = weight_lead_stages;
  switch (tile) {
    case kSwap64x16K256:
      return TracedDecode<Shape<_64, _16, _256>>::run(a);
    case kSwap64x64K256:
      return TracedDecode<Shape<_64, _64, _256>>::run(a);
    default:
      return "the probe builds the decode tiles kSwap64x16K256 and kSwap64x64K256 only";
  }
}
