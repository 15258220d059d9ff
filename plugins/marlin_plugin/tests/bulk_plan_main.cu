// Host harness for test_marlin_launch.py: prints the bulk pipeline's shared-memory plan
// (kcm::plan_bulk) for the launch described on the command line, as one JSON object.
// Usage: bulk_plan fmt mt M N16 C K G group_size zeros gtab consumers sms smem_limit [min_stages]
#include <cstdio>
#include <cstdlib>

#include "stream_gemm.cuh"

namespace {

template <int FMT>
int plan_for(int mt, const kcm::GemmParams& p, int sms, int smem, int min_stages,
             kcm::BulkPlan& plan, int& blocks) {
  switch (mt) {
    case 1: return kcm::plan_bulk<FMT, 1>(p, sms, smem, plan, blocks, 16, min_stages);
    case 2: return kcm::plan_bulk<FMT, 2>(p, sms, smem, plan, blocks, 8, min_stages);
    case 4: return kcm::plan_bulk<FMT, 4>(p, sms, smem, plan, blocks, 4, min_stages);
    default: return -1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 14 && argc != 15) {
    std::fprintf(stderr, "expected 13 or 14 arguments, found %d\n", argc - 1);
    return 2;
  }
  int a[14];
  for (int i = 0; i < 13; ++i) a[i] = std::atoi(argv[i + 1]);
  a[13] = argc == 15 ? std::atoi(argv[14]) : 3;
  static int table[16] __attribute__((aligned(16)));
  kcm::GemmParams p{};
  p.x = p.w = table;
  p.gscale = reinterpret_cast<const uint32_t*>(table);
  p.M = a[2];
  p.N16 = a[3];
  p.N = a[3] * 16;
  p.C = a[4];
  p.K = a[5];
  p.G = a[6];
  p.group_size = a[7];
  p.zeros = a[8] ? reinterpret_cast<const uint32_t*>(table) : nullptr;
  p.gtab = a[9] ? table : nullptr;
  p.WN = 1;
  p.WK = a[10];
  kcm::BulkPlan plan{};
  int blocks = 0;
  int code = -1;
  switch (a[0]) {
    case kcm::kInt4: code = plan_for<kcm::kInt4>(a[1], p, a[11], a[12], a[13], plan, blocks); break;
    case kcm::kInt8: code = plan_for<kcm::kInt8>(a[1], p, a[11], a[12], a[13], plan, blocks); break;
    case kcm::kFp4: code = plan_for<kcm::kFp4>(a[1], p, a[11], a[12], a[13], plan, blocks); break;
    case kcm::kFp8: code = plan_for<kcm::kFp8>(a[1], p, a[11], a[12], a[13], plan, blocks); break;
  }
  std::printf(
      "{\"code\": %d, \"blocks\": %d, \"tiles_per_pass\": %d, \"stages\": %d, \"chunks\": %d, "
      "\"group_shift\": %d, \"group_cap\": %d, "
      "\"wslot\": %d, \"sslot\": %d, \"scale_off\": %d, \"zero_off\": %d, \"x_off\": %d, "
      "\"xstride\": %d, \"stage_bytes\": %d, \"red_off\": %d, \"bar_off\": %d, "
      "\"widest_passes_whole\": %s}\n",
      code, blocks, plan.tiles_per_pass, plan.stages, plan.chunks, plan.group_shift, plan.group_cap, plan.wslot, plan.sslot,
      plan.scale_off, plan.zero_off, plan.x_off, plan.xstride, plan.stage_bytes, plan.red_off,
      plan.bar_off,
      code == 0 && kcm::widest_passes_whole(kcm::widest_block_tiles(p.N16, blocks), plan.tiles_per_pass)
          ? "true"
          : "false");
  return 0;
}
