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

__device__ __forceinline__ void decode_stamp(int event) {
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)::"memory");
  g_decode_trace[(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)) * kNumDecodeEvents +
                 event] = now;
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
