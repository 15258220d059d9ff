// torch-facing entry points: check tensors, pick the typed CUTLASS entry, pass raw pointers.
//
// Only torch/extension.h is included (no ATen/cuda headers, which the CPU wheel lacks), so the
// caller passes the CUDA stream as an integer: torch.cuda.current_stream().cuda_stream.
#include <limits>

#include <torch/extension.h>
#include "kernel_core/check.h"

#include "scaled_mm_api.h"

namespace kernel_core_cutlass {
namespace {

void check_cuda_contiguous(const torch::Tensor& t, const char* name) {
  KC_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  KC_CHECK(t.is_contiguous(), name, " must be contiguous");
}

const float* optional_float_ptr(const std::optional<torch::Tensor>& t, const char* name) {
  if (!t.has_value()) return nullptr;
  check_cuda_contiguous(*t, name);
  KC_CHECK(t->scalar_type() == torch::kFloat32, name, " must be float32");
  return t->data_ptr<float>();
}

// The scheduler arguments, checked: CUTLASS would round a bad swizzle down silently.
TileOrder tile_order(int64_t raster, int64_t swizzle, int64_t splits) {
  KC_CHECK(raster == kRasterHeuristic || raster == kRasterAlongM || raster == kRasterAlongN,
              "raster must be 0 (heuristic), 1 (along M) or 2 (along N), found ", raster);
  KC_CHECK(swizzle == 1 || swizzle == 2 || swizzle == 4 || swizzle == 8,
              "swizzle must be 1, 2, 4 or 8, found ", swizzle);
  KC_CHECK(splits == 0 || (splits >= 2 && splits <= 32),
              "splits must be 0 (stream-K) or 2..32 (split-K), found ", splits);
  return TileOrder{static_cast<int>(raster), static_cast<int>(swizzle), static_cast<int>(splits)};
}

// [fp8 / int8][bf16 / f16][tile group]: the translation unit that runs a tile.
constexpr ScaledMmEntry kScaledMmEntries[2][2][kNumTileGroups] = {
    {{scaled_mm_fp8_bf16_small_m, scaled_mm_fp8_bf16_mid_m, scaled_mm_fp8_bf16_large_m,
      scaled_mm_fp8_bf16_cluster_n},
     {scaled_mm_fp8_f16_small_m, scaled_mm_fp8_f16_mid_m, scaled_mm_fp8_f16_large_m,
      scaled_mm_fp8_f16_cluster_n}},
    {{scaled_mm_int8_bf16_small_m, scaled_mm_int8_bf16_mid_m, scaled_mm_int8_bf16_large_m,
      scaled_mm_int8_bf16_cluster_n},
     {scaled_mm_int8_f16_small_m, scaled_mm_int8_f16_mid_m, scaled_mm_int8_f16_large_m,
      scaled_mm_int8_f16_cluster_n}},
};

// [bf16 / f16][block tile group]: the translation unit that runs a block tile.
constexpr BlockScaledMmEntry kBlockScaledMmEntries[2][kNumBlockTileGroups] = {
    {fp8_block_scaled_mm_bf16_wide, fp8_block_scaled_mm_bf16_narrow},
    {fp8_block_scaled_mm_f16_wide, fp8_block_scaled_mm_f16_narrow},
};

void scaled_mm(torch::Tensor out, torch::Tensor x, torch::Tensor w, torch::Tensor token_scale,
               torch::Tensor channel_scale, std::optional<torch::Tensor> token_zp_neg,
               std::optional<torch::Tensor> channel_colsum, std::optional<torch::Tensor> bias,
               torch::Tensor workspace, int64_t config, int64_t sm_count, int64_t stream, bool pdl,
               int64_t weight_lead_stages, int64_t raster, int64_t swizzle, int64_t splits) {
  for (auto [t, name] : {std::pair{&out, "out"}, {&x, "x"}, {&w, "w"}, {&token_scale, "token_scale"},
                         {&channel_scale, "channel_scale"}, {&workspace, "workspace"}}) {
    check_cuda_contiguous(*t, name);
  }
  KC_CHECK(x.dim() == 2 && w.dim() == 2 && out.dim() == 2, "x, w and out must be 2-D");
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  KC_CHECK(w.size(1) == k, "w must be (n, k) with the k of x");
  KC_CHECK(out.size(0) == m && out.size(1) == n, "out must be (m, n)");
  KC_CHECK(x.scalar_type() == w.scalar_type(), "x and w must have one dtype");
  KC_CHECK(token_scale.numel() == 1 || token_scale.numel() == m, "token_scale must have 1 or m elements");
  KC_CHECK(channel_scale.numel() == 1 || channel_scale.numel() == n, "channel_scale must have 1 or n elements");
  KC_CHECK(token_scale.scalar_type() == torch::kFloat32 && channel_scale.scalar_type() == torch::kFloat32,
              "scales must be float32");
  if (token_zp_neg.has_value()) {
    KC_CHECK(x.scalar_type() == torch::kInt8, "a zero point (token_zp_neg) is for int8 "
             "activations; the fp8 epilogue has no zero-point term, found x of ", x.scalar_type());
    KC_CHECK(channel_colsum.has_value() && channel_colsum->numel() == n,
                "a zero point needs channel_colsum with n elements");
    KC_CHECK(token_zp_neg->numel() == 1 || token_zp_neg->numel() == m, "token_zp_neg must have 1 or m elements");
  }
  if (bias.has_value()) {
    check_cuda_contiguous(*bias, "bias");
    KC_CHECK(bias->numel() == n && bias->scalar_type() == out.scalar_type(),
                "bias must have n elements of the output dtype");
  }
  ScaledMmArgs args{};
  args.x = x.data_ptr();
  args.w = w.data_ptr();
  args.token_scale = token_scale.data_ptr<float>();
  args.token_scale_per_row = token_scale.numel() != 1;
  args.channel_scale = channel_scale.data_ptr<float>();
  args.channel_scale_per_col = channel_scale.numel() != 1;
  args.token_zp_neg = optional_float_ptr(token_zp_neg, "token_zp_neg");
  args.token_zp_per_row = token_zp_neg.has_value() && token_zp_neg->numel() != 1;
  args.channel_colsum = optional_float_ptr(channel_colsum, "channel_colsum");
  args.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  args.out = out.data_ptr();
  args.m = static_cast<int>(m);
  args.n = static_cast<int>(n);
  args.k = static_cast<int>(k);
  args.device = x.get_device();
  args.sm_count = static_cast<int>(sm_count);
  args.workspace = workspace.data_ptr();
  args.workspace_bytes = static_cast<size_t>(workspace.nbytes());
  args.stream = stream;
  args.pdl = pdl;
  KC_CHECK(weight_lead_stages >= -1 && weight_lead_stages <= std::numeric_limits<int>::max(),
           "weight_lead_stages must be -1 (all) or a stage count >= 0, found ", weight_lead_stages);
  args.weight_lead_stages = static_cast<int>(weight_lead_stages);
  args.order = tile_order(raster, swizzle, splits);

  const bool bf16 = out.scalar_type() == torch::kBFloat16;
  KC_CHECK(bf16 || out.scalar_type() == torch::kFloat16, "out must be bfloat16 or float16");
  const bool fp8 = x.scalar_type() == torch::kFloat8_e4m3fn;
  KC_CHECK(fp8 || x.scalar_type() == torch::kInt8, "x must be float8_e4m3fn or int8");
  KC_CHECK(config >= 0 && config < kNumTileConfigs, "tile configuration must be in [0, ",
              static_cast<int>(kNumTileConfigs), "), found ", config);
  const ScaledMmEntry entry = kScaledMmEntries[fp8 ? 0 : 1][bf16 ? 0 : 1][kTileGroup[config]];
  const char* error = entry(static_cast<int>(config), args);
  KC_CHECK(error == nullptr, "kernel_core_cutlass scaled_mm: ", error);
}

void block_scaled_mm(torch::Tensor out, torch::Tensor x, torch::Tensor w, torch::Tensor x_scale,
                     torch::Tensor w_scale, std::optional<torch::Tensor> bias, torch::Tensor workspace,
                     int64_t config, int64_t sm_count, int64_t stream, int64_t raster, int64_t swizzle,
                     int64_t splits) {
  for (auto [t, name] : {std::pair{&out, "out"}, {&x, "x"}, {&w, "w"}, {&x_scale, "x_scale"},
                         {&w_scale, "w_scale"}, {&workspace, "workspace"}}) {
    check_cuda_contiguous(*t, name);
  }
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  KC_CHECK(x.scalar_type() == torch::kFloat8_e4m3fn && w.scalar_type() == torch::kFloat8_e4m3fn,
              "x and w must be float8_e4m3fn");
  KC_CHECK(w.size(1) == k && k % 128 == 0, "w must be (n, k) with the k of x, k a multiple of 128");
  KC_CHECK(x_scale.dim() == 2 && x_scale.size(0) == k / 128 && x_scale.size(1) >= m &&
                  x_scale.size(1) % 4 == 0,
              "x_scale must be (k/128, m_pad) with m_pad >= m a multiple of 4");
  KC_CHECK(config >= 0 && config < kNumBlockTileConfigs, "block tile configuration must be in [0, ",
              static_cast<int>(kNumBlockTileConfigs), "), found ", config);
  const int64_t scale_rows = kBlockWeightScaleRows[config];
  KC_CHECK(w_scale.dim() == 2 && w_scale.size(0) == k / 128 &&
                  w_scale.size(1) == (n + scale_rows - 1) / scale_rows,
              "w_scale must be (k/128, ceil(n/", scale_rows, ")) for this tile, found ", w_scale.sizes());
  if (bias.has_value()) {
    check_cuda_contiguous(*bias, "bias");
    KC_CHECK(bias->numel() == n && bias->scalar_type() == out.scalar_type(),
                "bias must have n elements of the output dtype");
  }
  BlockScaledMmArgs args{};
  args.x = x.data_ptr();
  args.w = w.data_ptr();
  args.x_scale = x_scale.data_ptr<float>();
  args.w_scale = w_scale.data_ptr<float>();
  args.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  args.out = out.data_ptr();
  args.m = static_cast<int>(m);
  args.n = static_cast<int>(n);
  args.k = static_cast<int>(k);
  args.m_pad = static_cast<int>(x_scale.size(1));
  args.device = x.get_device();
  args.sm_count = static_cast<int>(sm_count);
  args.workspace = workspace.data_ptr();
  args.workspace_bytes = static_cast<size_t>(workspace.nbytes());
  args.stream = stream;
  args.order = tile_order(raster, swizzle, splits);
  const bool bf16 = out.scalar_type() == torch::kBFloat16;
  KC_CHECK(bf16 || out.scalar_type() == torch::kFloat16, "out must be bfloat16 or float16");
  const BlockScaledMmEntry entry = kBlockScaledMmEntries[bf16 ? 0 : 1][kBlockTileGroup[config]];
  const char* error = entry(static_cast<int>(config), args);
  KC_CHECK(error == nullptr, "kernel_core_cutlass block_scaled_mm: ", error);
}

}  // namespace
}  // namespace kernel_core_cutlass

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scaled_mm", &kernel_core_cutlass::scaled_mm, "W8A8 FP8/int8 scaled GEMM (SM90)");
  m.def("block_scaled_mm", &kernel_core_cutlass::block_scaled_mm, "1x128 / 128x128 block-scaled FP8 GEMM (SM90)");
}
