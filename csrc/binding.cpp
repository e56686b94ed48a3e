// The one torch-facing file: checks the tensors the Python launchers (fused_rnn/ops/cuda/launch.py)
// allocated, fills the plain params structs and calls the launchers in rnn_fwd.cu/rnn_bwd.cu.
// It includes no CUDA header (the stream comes in as an integer from
// torch.cuda.current_stream().cuda_stream), so it compiles against any torch build; with
// FRNN_EMULATE it serves the emulated kernels on CPU tensors (tests).
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "launch.h"

namespace {

#ifdef FRNN_EMULATE
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

int dtype_code(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return frnn::kF32;
    case at::kDouble: return frnn::kF64;
    case at::kHalf: if (!kEmulated) return frnn::kF16; break;
    case at::kBFloat16: if (!kEmulated) return frnn::kBF16; break;
    default: break;
  }
  TORCH_CHECK(false, name, ": expected float32, float64",
              kEmulated ? " (emulated kernels)" : ", float16 or bfloat16", ", got ",
              t.scalar_type());
  return -1;
}

// Same device (CUDA, or CPU when emulated), contiguous, and the expected element type.
void check(const at::Tensor& t, const char* name, const at::Tensor& like,
           at::ScalarType dtype) {
  TORCH_CHECK(kEmulated ? t.device().is_cpu() : t.device() == like.device(), name,
              ": expected a tensor on ", kEmulated ? at::Device(at::kCPU) : like.device(),
              ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, name, ": expected dtype ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor");
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, name, ": expected shape ", shape, ", got ", t.sizes());
}

// The tensor every other one is checked against: on a CUDA device (CPU when emulated).
void check_device(const at::Tensor& t, const char* name) {
  TORCH_CHECK(kEmulated ? t.device().is_cpu() : t.is_cuda(), name, ": expected a ",
              kEmulated ? "CPU tensor (emulated kernels)" : "CUDA tensor", ", got one on ",
              t.device());
}

const void* ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr() : nullptr;
}

// An optional uint8 tensor (the length mask, a regularisation mask): checked like `like`'s
// device, contiguous, of `shape`; its data, or null where absent.
const uint8_t* u8_ptr(const std::optional<at::Tensor>& t, const char* name,
                      const at::Tensor& like, at::IntArrayRef shape) {
  if (!t.has_value()) return nullptr;
  check(*t, name, like, at::kByte);
  check_shape(*t, name, shape);
  return t->data_ptr<uint8_t>();
}

// The regularisation masks of a step (fused_rnn/ops/regularize.py, StepMasks; params.h): each
// uint8, contiguous, on gi's device, or absent. scales: h_scale, g_scale, c_scale, zc_p, zh_p.
frnn::StepMasks step_masks(const std::optional<at::Tensor>& m_h,
                           const std::optional<at::Tensor>& m_g,
                           const std::optional<at::Tensor>& m_c,
                           const std::optional<at::Tensor>& m_zc,
                           const std::optional<at::Tensor>& m_zh,
                           const std::vector<double>& scales, const at::Tensor& like,
                           int64_t cell, int64_t T, int64_t B, int64_t H, int64_t HK) {
  TORCH_CHECK(scales.size() == 5, "scales: expected 5 values (h_scale, g_scale, c_scale, zc_p, "
              "zh_p), got ", scales.size());
  const bool lstm = cell == frnn::kLSTM, gated = cell == frnn::kLSTM || cell == frnn::kGRU;
  TORCH_CHECK(gated || !m_g.has_value(), "m_g: recurrent dropout needs an LSTM or a GRU");
  TORCH_CHECK(lstm || !m_c.has_value(), "m_c: rnndrop needs an LSTM");
  TORCH_CHECK(lstm || (!m_zc.has_value() && scales[3] == 0.0),
              "m_zc, zc_p: zoneout of the cell needs an LSTM");
  frnn::StepMasks r{};
  r.h = u8_ptr(m_h, "m_h", like, {B, HK});
  r.g = u8_ptr(m_g, "m_g", like, {T, B, H});
  r.c = u8_ptr(m_c, "m_c", like, {B, H});
  r.zc = u8_ptr(m_zc, "m_zc", like, {T, B, H});
  r.zh = u8_ptr(m_zh, "m_zh", like, {T, B, HK});
  r.h_scale = scales[0];
  r.g_scale = scales[1];
  r.c_scale = scales[2];
  r.zc_p = scales[3];
  r.zh_p = scales[4];
  return r;
}

at::ScalarType acc_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

int cell_gates(int64_t cell) {
  TORCH_CHECK(cell >= frnn::kLSTM && cell <= frnn::kRNNRelu, "cell: expected 0..3, got ", cell);
  return cell == frnn::kLSTM ? 4 : cell == frnn::kGRU ? 3 : 1;
}

int saved_values(int64_t cell) { return cell <= frnn::kGRU ? 4 : 1; }

// Forward of one layer and direction; fills hs[1:], cs[1:], out, saved (and ms with a
// projection). m_h .. scales: the regularisation (step_masks). plan: the cluster plan to try
// (CS.100 + KS; 0 the default). store_saved false: no backward follows (FwdParams). Returns the variant that ran (0 per step, 1 persistent,
// 2 cluster) and the cluster plan that ran (0 if none).
std::tuple<int64_t, int64_t> rnn_fwd(const at::Tensor& gi, const at::Tensor& w_hh,
                const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
                const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& m_h,
                const std::optional<at::Tensor>& m_g, const std::optional<at::Tensor>& m_c,
                const std::optional<at::Tensor>& m_zc, const std::optional<at::Tensor>& m_zh,
                const std::vector<double>& scales, at::Tensor& hs, at::Tensor& cs,
                at::Tensor& out, at::Tensor& saved, at::Tensor& ms, int64_t cell, bool reverse,
                int64_t variant, int64_t plan, bool store_saved, int64_t stream) {
  const int G = cell_gates(cell);
  TORCH_CHECK(variant >= frnn::kStep && variant <= frnn::kCluster,
              "variant: expected 0 (step), 1 (persistent) or 2 (cluster), got ", variant);
  TORCH_CHECK(plan >= 0 && plan < frnn::kPlanCodeEnd,
              "plan: expected a cluster plan code (plans.h) or 0, got ", plan);
  TORCH_CHECK(gi.dim() == 3, "gi: expected (T, B, G*H), got ", gi.sizes());
  const int64_t T = gi.size(0), B = gi.size(1), H = w_hh.size(0) / G, HK = hs.size(-1);
  const auto dt = gi.scalar_type(), acc = acc_type(gi);
  check_device(gi, "gi");
  const c10::DeviceGuard guard(gi.device());
  check(gi, "gi", gi, dt);
  check(w_hh, "w_hh", gi, dt);
  check_shape(gi, "gi", {T, B, G * H});
  check_shape(w_hh, "w_hh", {G * H, HK});
  if (b_hh) { check(*b_hh, "b_hh", gi, dt); check_shape(*b_hh, "b_hh", {G * H}); }
  TORCH_CHECK(!w_hr.has_value() || cell == frnn::kLSTM, "w_hr: a projection needs an LSTM");
  TORCH_CHECK(w_hr.has_value() ? HK < H : HK == H, "hs: expected a state width ",
              w_hr.has_value() ? "below H = " : "equal to H = ", H, " (",
              w_hr.has_value() ? "with" : "without", " a projection), got ", HK);
  if (w_hr) {
    check(*w_hr, "w_hr", gi, dt);
    check_shape(*w_hr, "w_hr", {HK, H});
    check(ms, "ms", gi, dt);
    check_shape(ms, "ms", {T, B, H});
  }
  check(hs, "hs", gi, dt);
  check_shape(hs, "hs", {T + 1, B, HK});
  check(out, "out", gi, dt);
  check_shape(out, "out", {T, B, HK});
  check(saved, "saved", gi, acc);
  check_shape(saved, "saved", {T, B, saved_values(cell) * H});
  if (cell == frnn::kLSTM) { check(cs, "cs", gi, acc); check_shape(cs, "cs", {T + 1, B, H}); }
  frnn::FwdParams p{};
  p.gi = gi.data_ptr();
  p.w_hh = w_hh.data_ptr();
  p.b_hh = ptr(b_hh);
  p.w_hr = ptr(w_hr);
  p.mask = u8_ptr(mask, "mask", gi, {T, B});
  p.hs = hs.data_ptr();
  p.cs = cell == frnn::kLSTM ? cs.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.saved = saved.data_ptr();
  p.ms = w_hr ? ms.data_ptr() : nullptr;
  p.reg = step_masks(m_h, m_g, m_c, m_zc, m_zh, scales, gi, cell, T, B, H, HK);
  p.T = T; p.B = B; p.H = H; p.HK = HK;
  p.cell = int(cell);
  p.dtype = dtype_code(gi, "gi");
  p.reverse = reverse;
  p.store_saved = store_saved;
  int used = -1, used_plan = 0;
  const int status = frnn::rnn_fwd(p, int(variant), int(plan), reinterpret_cast<void*>(stream),
                                   &used, &used_plan);
  TORCH_CHECK(status == frnn::kOk, "fused_rnn CUDA forward (T=", T, ", B=", B, ", H=", H,
              "): ", frnn::error_string(status));
  return {used, used_plan};
}

// Backward of rnn_fwd: fills dgh, dgi (GRU), dhs (projection) and updates carry_h, carry_c
// in place. The masks are the forward's. Returns the variant that ran.
int64_t rnn_bwd(const at::Tensor& w_t, const std::optional<at::Tensor>& w_hr_t,
                const at::Tensor& dout, const at::Tensor& saved, const at::Tensor& hs,
                const at::Tensor& cs, const std::optional<at::Tensor>& mask,
                const std::optional<at::Tensor>& m_h, const std::optional<at::Tensor>& m_g,
                const std::optional<at::Tensor>& m_c, const std::optional<at::Tensor>& m_zc,
                const std::optional<at::Tensor>& m_zh, const std::vector<double>& scales,
                at::Tensor& dgh, at::Tensor& dgi,
                const std::optional<at::Tensor>& dhs, at::Tensor& carry_h, at::Tensor& carry_c,
                int64_t cell, bool reverse, int64_t variant, int64_t stream) {
  const int G = cell_gates(cell);
  TORCH_CHECK(hs.dim() == 3, "hs: expected (T+1, B, HK), got ", hs.sizes());
  const int64_t T = hs.size(0) - 1, B = hs.size(1), HK = hs.size(2), H = w_t.size(-1) / G;
  const auto dt = hs.scalar_type(), acc = acc_type(hs);
  check_device(hs, "hs");
  const c10::DeviceGuard guard(hs.device());
  check(hs, "hs", hs, dt);
  TORCH_CHECK(!w_hr_t.has_value() || cell == frnn::kLSTM,
              "w_hr_t: a projection needs an LSTM");
  TORCH_CHECK(w_hr_t.has_value() ? HK < H : HK == H, "hs: expected a state width ",
              w_hr_t.has_value() ? "below H = " : "equal to H = ", H, " (",
              w_hr_t.has_value() ? "with" : "without", " a projection), got ", HK);
  check(w_t, "w_t", hs, dt);
  check_shape(w_t, "w_t", {HK, G * H});
  check(dout, "dout", hs, dt);
  check_shape(dout, "dout", {T, B, HK});
  check(saved, "saved", hs, acc);
  check_shape(saved, "saved", {T, B, saved_values(cell) * H});
  check(dgh, "dgh", hs, acc);
  check_shape(dgh, "dgh", {T, B, G * H});
  if (cell == frnn::kGRU) { check(dgi, "dgi", hs, acc); check_shape(dgi, "dgi", {T, B, G * H}); }
  check(carry_h, "carry_h", hs, acc);
  check_shape(carry_h, "carry_h", {B, HK});
  if (cell == frnn::kLSTM) {
    check(cs, "cs", hs, acc);
    check_shape(cs, "cs", {T + 1, B, H});
    check(carry_c, "carry_c", hs, acc);
    check_shape(carry_c, "carry_c", {B, H});
  }
  if (w_hr_t) {
    TORCH_CHECK(dhs.has_value(), "dhs: a projection needs it");
    check(*w_hr_t, "w_hr_t", hs, dt);
    check_shape(*w_hr_t, "w_hr_t", {H, HK});
    check(*dhs, "dhs", hs, acc);
    check_shape(*dhs, "dhs", {T, B, HK});
  }
  frnn::BwdParams p{};
  p.w_t = w_t.data_ptr();
  p.w_hr_t = ptr(w_hr_t);
  p.dout = dout.data_ptr();
  p.saved = saved.data_ptr();
  p.hs = hs.data_ptr();
  p.cs = cell == frnn::kLSTM ? cs.data_ptr() : nullptr;
  p.mask = u8_ptr(mask, "mask", hs, {T, B});
  p.reg = step_masks(m_h, m_g, m_c, m_zc, m_zh, scales, hs, cell, T, B, H, HK);
  p.dgh = dgh.data_ptr();
  p.dgi = cell == frnn::kGRU ? dgi.data_ptr() : dgh.data_ptr();
  p.dhs = dhs ? dhs->data_ptr() : nullptr;
  p.carry_h = carry_h.data_ptr();
  p.carry_c = cell == frnn::kLSTM ? carry_c.data_ptr() : nullptr;
  p.T = T; p.B = B; p.H = H; p.HK = HK;
  p.cell = int(cell);
  p.dtype = dtype_code(hs, "hs");
  p.reverse = reverse;
  int used = -1;
  const int status = frnn::rnn_bwd(p, int(variant), reinterpret_cast<void*>(stream), &used);
  TORCH_CHECK(status == frnn::kOk, "fused_rnn CUDA backward (T=", T, ", B=", B, ", H=", H,
              "): ", frnn::error_string(status));
  return used;
}

std::map<std::string, int64_t> device_info() {
  int sms = 0, smem = 0, major = 0, minor = 0;
  const int status = frnn::device_summary(&sms, &smem, &major, &minor);
  TORCH_CHECK(status == frnn::kOk, "fused_rnn CUDA device query: ", frnn::error_string(status));
  return {{"sms", sms}, {"smem_optin_bytes", smem}, {"cc_major", major}, {"cc_minor", minor},
          {"emulated", kEmulated}};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fused_rnn CUDA kernels (see csrc/)";
  m.def("rnn_fwd", &rnn_fwd, "forward of one layer and direction");
  m.def("rnn_bwd", &rnn_bwd, "backward of one layer and direction");
  m.def("device_info", &device_info, "SMs, shared memory and compute capability");
  m.attr("emulated") = kEmulated;
}
