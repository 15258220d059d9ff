// Python bindings: tensor checks and raw pointers into the CUDA launchers. Only torch/extension.h
// is included (no ATen/cuda headers), so the stream arrives as an integer from Python.
#include <torch/extension.h>
#include "kernel_core/check.h"

#include "gemm_params.h"
#include "tile_api.h"

namespace {

const void* optional_ptr(const torch::Tensor& t) { return t.numel() > 0 ? t.data_ptr() : nullptr; }

int dtype_code(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kHalf) return kcm::kHalf;
  KC_CHECK(x.scalar_type() == torch::kBFloat16, "kernel_core_marlin: activations must be float16 "
              "or bfloat16, found ", x.scalar_type());
  return kcm::kBfloat16;
}

kcm::GemmParams make_params(const torch::Tensor& qweight, const torch::Tensor& gscale,
                            const torch::Tensor& zeros, const torch::Tensor& gtab,
                            const torch::Tensor& chan, int64_t n, int64_t group_size,
                            int64_t zconst) {
  KC_CHECK(qweight.dim() == 5 && qweight.scalar_type() == torch::kInt32 && qweight.is_contiguous(),
              "kernel_core_marlin: qweight must be a contiguous int32 [N16, C, V, 32, 4] tensor");
  KC_CHECK(gscale.dim() == 4 && gscale.is_contiguous(), "kernel_core_marlin: gscale must be a "
              "contiguous [N16, G, 8, 2] tensor");
  kcm::GemmParams p{};
  p.w = qweight.data_ptr();
  p.gscale = static_cast<const uint32_t*>(gscale.data_ptr());
  p.zeros = static_cast<const uint32_t*>(optional_ptr(zeros));
  p.gtab = static_cast<const int*>(optional_ptr(gtab));
  p.chan = static_cast<const float*>(optional_ptr(chan));
  p.N = static_cast<int>(n);
  p.N16 = static_cast<int>(qweight.size(0));
  p.C = static_cast<int>(qweight.size(1));
  p.G = static_cast<int>(gscale.size(1));
  p.group_size = static_cast<int>(group_size);
  p.zconst = static_cast<int>(zconst);
  KC_CHECK(p.N <= p.N16 * 16, "kernel_core_marlin: n=", n, " exceeds the packed rows ", p.N16 * 16);
  // Without an act-order table the kernels compute a channel's group as k / group_size.
  KC_CHECK(p.gtab != nullptr || group_size > 0, "kernel_core_marlin: group_size must be positive "
           "without an act-order group table, found ", group_size);
  return p;
}

void check_launch(int code) {
  KC_CHECK(code == 0, "kernel_core_marlin: kernel launch failed: ", kcm::error_string(code));
}

}  // namespace

void gemm(const torch::Tensor& x, const torch::Tensor& qweight, const torch::Tensor& gscale,
          const torch::Tensor& zeros, const torch::Tensor& gtab, const torch::Tensor& chan,
          const torch::Tensor& bias, torch::Tensor& out, int64_t fmt, int64_t group_size,
          int64_t zconst, int64_t mt, int64_t rows, int64_t wn, int64_t wk, int64_t pipeline,
          bool pdl, int64_t stream) {
  KC_CHECK(x.dim() == 2 && x.is_contiguous(), "kernel_core_marlin: x must be contiguous 2-D");
  KC_CHECK(x.size(1) % 16 == 0, "kernel_core_marlin: K must be a multiple of 16, found ", x.size(1));
  KC_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0, "kernel_core_marlin: x must be "
              "16-byte aligned");
  KC_CHECK(x.size(1) <= qweight.size(1) * 64, "kernel_core_marlin: K=", x.size(1),
              " exceeds the packed K ", qweight.size(1) * 64);
  // 16 consumer warps: the flat consumer (pipeline 3) and pipeline 6.
  const bool wide_bulk = (pipeline == 3 || pipeline == 6) && wn == 1 && wk == 16;
  KC_CHECK((wn * wk <= 8 || wide_bulk) && wn >= 1 && wk >= 1, "kernel_core_marlin: at most 8 "
              "warps per block (16 consumer warps with pipelines 3 and 6), found wn=", wn,
              " wk=", wk, " pipeline=", pipeline);
  KC_CHECK(!pdl || (pipeline >= 2 && pipeline <= 6), "kernel_core_marlin: a programmatic "
              "dependent launch (pdl) needs a bulk pipeline (2-6), found pipeline=", pipeline);
  kcm::GemmParams p = make_params(qweight, gscale, zeros, gtab, chan, out.size(1), group_size, zconst);
  KC_CHECK(pipeline != 6 || (fmt == kcm::kInt4 && kcm::scale_groups_hold_chunks(p)),
           "kernel_core_marlin: pipeline 6 needs 4-bit integer codes without act-order whose "
           "scale groups hold whole 64-channel chunks (one group or a multiple of 64), found "
           "fmt=", fmt, " group_size=", group_size, " groups=", p.G,
           " act-order=", p.gtab != nullptr ? "yes" : "no");
  p.x = x.data_ptr();
  p.bias = optional_ptr(bias);
  p.out = out.data_ptr();
  p.M = static_cast<int>(x.size(0));
  p.K = static_cast<int>(x.size(1));
  p.WN = static_cast<int>(wn);
  p.WK = static_cast<int>(wk);
  p.pdl = pdl ? 1 : 0;
  if (p.M == 0) return;
  void* s = reinterpret_cast<void*>(stream);
  const int code = dtype_code(x) == kcm::kHalf
                       ? kcm::launch_gemm_half(p, static_cast<int>(fmt), static_cast<int>(mt),
                                               static_cast<int>(rows), static_cast<int>(pipeline), s)
                       : kcm::launch_gemm_bfloat16(p, static_cast<int>(fmt), static_cast<int>(mt),
                                                   static_cast<int>(rows),
                                                   static_cast<int>(pipeline), s);
  check_launch(code);
}

void dequantize(const torch::Tensor& qweight, const torch::Tensor& gscale,
                const torch::Tensor& zeros, const torch::Tensor& gtab, const torch::Tensor& chan,
                torch::Tensor& out, int64_t fmt, int64_t group_size, int64_t zconst,
                int64_t stream) {
  KC_CHECK(out.dim() == 2 && out.is_contiguous() && out.size(1) == qweight.size(1) * 64,
              "kernel_core_marlin: out must be contiguous [N, C * 64]");
  kcm::GemmParams p = make_params(qweight, gscale, zeros, gtab, chan, out.size(0), group_size, zconst);
  p.out = out.data_ptr();
  void* s = reinterpret_cast<void*>(stream);
  const int code = dtype_code(out) == kcm::kHalf
                       ? kcm::launch_dequantize_half(p, static_cast<int>(fmt), s)
                       : kcm::launch_dequantize_bfloat16(p, static_cast<int>(fmt), s);
  check_launch(code);
}

void tile_gemm(const torch::Tensor& x, const torch::Tensor& x_img, const torch::Tensor& qweight,
               const torch::Tensor& gscale, const torch::Tensor& zeros, const torch::Tensor& gtab, const torch::Tensor& chan,
               const torch::Tensor& bias, torch::Tensor& out, torch::Tensor& partials,
               torch::Tensor& arrivals, int64_t fmt, int64_t group_size, int64_t zconst,
               int64_t bmx, int64_t rw, int64_t split, int64_t variant, bool pdl,
               int64_t stream) {
  KC_CHECK(x.dim() == 2 && x.is_contiguous(), "kernel_core_marlin: x must be contiguous 2-D");
  KC_CHECK(x.size(1) % 16 == 0, "kernel_core_marlin: K must be a multiple of 16, found ", x.size(1));
  KC_CHECK(x.size(1) <= qweight.size(1) * 64, "kernel_core_marlin: K=", x.size(1),
              " exceeds the packed K ", qweight.size(1) * 64);
  KC_CHECK(out.dim() == 2 && out.is_contiguous() && out.size(0) == x.size(0) &&
                  out.scalar_type() == x.scalar_type(),
              "kernel_core_marlin: out must be contiguous [M, N] in x's dtype");
  // The epilogue stores 16 bytes a lane (store_slice) where N is a multiple of 8.
  KC_CHECK(reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0,
           "kernel_core_marlin: the tile kernel's out must be 16-byte aligned, found an offset of ",
           reinterpret_cast<uintptr_t>(out.data_ptr()) % 16, " bytes");
  KC_CHECK(split >= 1 && split <= 8 && split <= qweight.size(1), "kernel_core_marlin: split must "
              "lie in [1, min(8, chunks=", qweight.size(1), ")], found ", split);
  KC_CHECK(variant >= 0 && variant <= 3, "kernel_core_marlin: tile variant must be 0 (barrier), "
              "1 (warp-specialized), 2 (bulk producer) or 3 (stream-K), found ", variant);
  KC_CHECK(kcm::tile_instance_built(static_cast<int>(variant), static_cast<int>(bmx),
                                     static_cast<int>(rw)),
           "kernel_core_marlin: tile variant ", variant, " has no instance of bmx=", bmx, ", rw=",
           rw, " (tile.variant_shapes(", variant, "): stream-K alone has 16- and 32-token blocks, "
           "of rw 2 or 3, and no bmx=128, rw=2)");
  // Variants 2 and 3 read the activation image (x_image.py) instead of x: [C, M rounded up to 8,
  // 64].
  const bool image = variant >= 2;
  KC_CHECK(!pdl || image, "kernel_core_marlin: a programmatic dependent launch (pdl) of the tile "
           "kernel needs variant 2 or 3 (the image kernel before it), found variant ", variant);
  if (image) {
    KC_CHECK(x_img.dim() == 3 && x_img.is_contiguous() && x_img.scalar_type() == x.scalar_type() &&
                 x_img.size(0) == qweight.size(1) && x_img.size(1) == (x.size(0) + 7) / 8 * 8 &&
                 x_img.size(2) == 64,
             "kernel_core_marlin: tile variant ", variant, " needs the activation image [C=", qweight.size(1),
             ", ", (x.size(0) + 7) / 8 * 8, ", 64] in x's dtype, contiguous");
    KC_CHECK(reinterpret_cast<uintptr_t>(x_img.data_ptr()) % 16 == 0,
             "kernel_core_marlin: the activation image must be 16-byte aligned (bulk copies)");
  }
  // Variant 3's workspace (tile.stream_workspace): per block one slot of 128 rw x bmx fp32
  // partial sums, and one int32 arrival counter, all zero.
  if (variant == 3) {
    KC_CHECK(split == 1, "kernel_core_marlin: tile variant 3 (stream-K) takes split 1, found ",
             split);
    KC_CHECK(arrivals.dim() == 1 && arrivals.numel() >= 1 &&
                 arrivals.scalar_type() == torch::kInt32 && arrivals.is_contiguous(),
             "kernel_core_marlin: tile variant 3 needs int32 arrival counters [blocks], found ",
             arrivals.sizes(), " ", arrivals.scalar_type());
    const int64_t slot = 128 * rw * bmx;
    KC_CHECK(partials.scalar_type() == torch::kFloat32 && partials.is_contiguous() &&
                 partials.numel() >= arrivals.numel() * slot,
             "kernel_core_marlin: tile variant 3 needs float32 partials of at least ",
             arrivals.numel(), " blocks x ", slot, " elements, found ", partials.numel(), " ",
             partials.scalar_type());
    KC_CHECK(reinterpret_cast<uintptr_t>(partials.data_ptr()) % 16 == 0,
             "kernel_core_marlin: tile variant 3 needs 16-byte aligned partials (16-byte quads)");
  }
  kcm::GemmParams p = make_params(qweight, gscale, zeros, gtab, chan, out.size(1), group_size, zconst);
  p.x = image ? x_img.data_ptr() : x.data_ptr();
  if (variant == 3) {
    p.partials = partials.data_ptr<float>();
    p.arrivals = arrivals.data_ptr<int>();
    p.stream_blocks = static_cast<int>(arrivals.numel());
  }
  p.bias = optional_ptr(bias);
  p.out = out.data_ptr();
  p.M = static_cast<int>(x.size(0));
  p.K = static_cast<int>(x.size(1));
  p.pdl = pdl ? 1 : 0;
  if (p.M == 0) return;
  void* s = reinterpret_cast<void*>(stream);
  const int f = static_cast<int>(fmt);
  const int code =
      dtype_code(x) == kcm::kHalf
          ? kcm::launch_tile_half(p, f, static_cast<int>(bmx), static_cast<int>(rw),
                                  static_cast<int>(split), static_cast<int>(variant), s)
          : kcm::launch_tile_bfloat16(p, f, static_cast<int>(bmx), static_cast<int>(rw),
                                      static_cast<int>(split), static_cast<int>(variant), s);
  // Stream-K's blocks wait for each other: its launcher refuses a grid (one block per arrival
  // counter, fewer with fewer chunks) that cannot be resident at once.
  KC_CHECK(code == 0 || variant != 3, "kernel_core_marlin: tile variant 3 (stream-K) launch "
           "failed with ", arrivals.numel(), " arrival counters (one block each, all resident at "
           "once: at most one per SM): ", kcm::error_string(code));
  check_launch(code);
}

void activation_image(const torch::Tensor& x, torch::Tensor& image, int64_t stream) {
  KC_CHECK(x.dim() == 2 && x.is_contiguous(), "kernel_core_marlin: x must be contiguous 2-D");
  KC_CHECK(x.size(1) % 16 == 0, "kernel_core_marlin: K must be a multiple of 16, found ", x.size(1));
  KC_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0,
           "kernel_core_marlin: x must be 4-byte aligned (the image is built a channel pair at a time)");
  const int dtype = dtype_code(x);
  const int64_t m8 = (x.size(0) + 7) / 8 * 8;
  KC_CHECK(image.dim() == 3 && image.is_contiguous() && image.scalar_type() == x.scalar_type() &&
               image.size(1) == m8 && image.size(2) == 64 && image.size(0) * 64 >= x.size(1),
           "kernel_core_marlin: the activation image must be a contiguous [C >= ",
           (x.size(1) + 63) / 64, ", ", m8, ", 64] ", x.scalar_type(), " tensor, found ",
           image.sizes(), " ", image.scalar_type(), image.is_contiguous() ? "" : " (not contiguous)");
  KC_CHECK(reinterpret_cast<uintptr_t>(image.data_ptr()) % 16 == 0,
           "kernel_core_marlin: the activation image must be 16-byte aligned");
  void* s = reinterpret_cast<void*>(stream);
  const int m = static_cast<int>(x.size(0));
  const int k = static_cast<int>(x.size(1));
  const int chunks = static_cast<int>(image.size(0));
  const int code = dtype == kcm::kHalf
                       ? kcm::launch_activation_image_half(x.data_ptr(), image.data_ptr(), m, k,
                                                           chunks, s)
                       : kcm::launch_activation_image_bfloat16(x.data_ptr(), image.data_ptr(), m,
                                                               k, chunks, s);
  check_launch(code);
}

int64_t tile_clusters(int64_t fmt, int64_t bmx, int64_t rw, int64_t split, int64_t variant) {
  // Shared memory, not the activation type, decides the occupancy: the bfloat16 instances answer.
  return kcm::tile_clusters_bfloat16(static_cast<int>(fmt), static_cast<int>(bmx),
                                     static_cast<int>(rw), static_cast<int>(split),
                                     static_cast<int>(variant));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemm", &gemm, "weight-only GEMM on the repacked layout (writes out)");
  m.def("dequantize", &dequantize, "decode the repacked layout into a 16-bit [N, C*64] matrix");
  m.def("tile_gemm", &tile_gemm, "SM90 wgmma tile GEMM on the repacked layout (writes out)");
  m.def("activation_image", &activation_image, "tile variant 2's activation image of x "
        "(x_image.py's layout; writes image)");
  m.def("tile_clusters", &tile_clusters, "clusters of a tile shape, split and variant that fit "
        "at once (negative: minus a cudaError_t value)");
}
