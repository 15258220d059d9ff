// Per-CTA timestamps of the decode GEMM's phases, for gpu/probe_decode_timeline.py only.
//
// The probe compiles its own library with KCC_DECODE_TRACE defined: WeightFirstMainloop and the
// epilogue then write %globaltimer (ns) at each DecodeEvent into g_decode_trace[cta][event]. The
// plugin's units leave the macro undefined, so KCC_DECODE_STAMP expands to nothing and the
// epilogue is CUTLASS's own type: their kernels are unchanged.
#pragma once

#include <cstdint>
#include <utility>

namespace kernel_core_cutlass {

// In the order they happen in a CTA (the consumer's events overlap the producer's).
enum DecodeEvent : int {
  kProducerStart = 0,  // the producer warp enters the mainloop's load()
  kLeadIssued,         // the lead weight stages requested, before the grid-dependency wait
  kWaitReturned,       // griddepcontrol.wait returned: the quantizer finished
  kLastCopyIssued,     // the last k-tile's copies issued
  kConsumerStart,      // the consumer warpgroup enters mma()
  kConsumerIssued,     // mma() returned: the last k-tile's wgmmas issued
  kEpilogueStart,      // the epilogue's store() begins (after mma_tail's wait)
  kEpilogueStored,     // store() returned: the output's TMA stores issued
  kEpilogueDone,       // store_tail() returned: the stores complete, the CTA ends
  kNumDecodeEvents,
};

#ifdef KCC_DECODE_TRACE
// [CTA][kNumDecodeEvents] nanoseconds; set by the probe before each launch.
__device__ uint64_t* g_decode_trace = nullptr;

// The timer is read only once the trace pointer has arrived: a CTA's first load of g_decode_trace
// misses to DRAM, and read before it, the first stamp would put that latency between itself and
// the next one (v17's 0.64 us before the first weight request). The predicate exists only to make
// the timer read consume the pointer; the probe always sets a pointer before launching.
__device__ __forceinline__ void decode_stamp(int event) {
  uint64_t* const trace = g_decode_trace;
  uint64_t now;
  asm volatile(
      "{\n\t.reg .pred no_trace;\n\tsetp.eq.u64 no_trace, %1, 0;\n\t@!no_trace mov.u64 %0, %%globaltimer;\n\t}"
      : "=l"(now)
      : "l"(trace)
      : "memory");
  trace[(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)) * kNumDecodeEvents + event] = now;
}
#define KCC_DECODE_STAMP(event) ::kernel_core_cutlass::decode_stamp(event)

// CUTLASS's epilogue collective with the consumer warpgroup's first thread stamping around its
// store() and store_tail().
template <class Epilogue>
struct TracedEpilogue : Epilogue {
  using Epilogue::Epilogue;

  template <class... Args>
  __device__ auto store(Args&&... args) {
    bool const first = threadIdx.x % 128 == 0;
    if (first) decode_stamp(kEpilogueStart);
    auto states = Epilogue::store(std::forward<Args>(args)...);
    if (first) decode_stamp(kEpilogueStored);
    return states;
  }

  template <class... Args>
  __device__ void store_tail(Args&&... args) {
    Epilogue::store_tail(std::forward<Args>(args)...);
    if (threadIdx.x % 128 == 0) decode_stamp(kEpilogueDone);
  }
};
template <class Epilogue>
using DecodeEpilogue = TracedEpilogue<Epilogue>;
#else
#define KCC_DECODE_STAMP(event) ((void)0)
template <class Epilogue>
using DecodeEpilogue = Epilogue;
#endif

}  // namespace kernel_core_cutlass
