// The one torch-facing file. Two kinds of entry:
//  - rnn_fwd / rnn_bwd: one layer and direction on buffers the Python launchers allocated
//    (fused_rnn/ops/cuda/launch.py: the custom ops, regularisation masks);
//  - layer_fwd / layer_bwd: a whole layer (every direction) in one call, the input GEMM and the
//    weight-gradient GEMMs done here with ATen, the buffers allocated here: what a plain
//    LSTM/GRU/RNN call runs (fused_rnn/ops/cuda/stack.py), so the host pays one Python call per
//    layer, not dozens of torch calls.
// It includes no CUDA header (the stream comes in as an integer from
// torch.cuda.current_stream().cuda_stream), so it compiles against any torch build; with
// FRNN_EMULATE it serves the emulated kernels on CPU tensors (tests).
//
// Errors: every check raises ArgumentError (a ValueError and a RuntimeError in Python) whose
// message names the argument. Messages are built with std::string and std::to_string only,
// never through iostreams (TORCH_CHECK formats with an ostringstream, instantiated inside this
// .so): a build that linked libstdc++ statically crashed in the first message it formatted.
#include <torch/extension.h>

#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "launch.h"

namespace {

#ifdef FRNN_EMULATE
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

using OptTensor = std::optional<at::Tensor>;

class ArgumentError : public std::exception {
 public:
  explicit ArgumentError(std::string msg) : msg_(std::move(msg)) {}
  const char* what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
};

[[noreturn]] void fail(const std::string& msg) { throw ArgumentError(msg); }

// The message is built only when the check fails: a layer call runs about 40 checks, and
// building each passing message cost more than the input GEMM (callgrind, 25k of 95k
// instructions per call).
#define FRNN_REQUIRE(ok, name, what)                          \
  do {                                                        \
    if (!(ok)) fail(std::string(name) + ": " + (what));       \
  } while (0)

std::string str(int64_t v) { return std::to_string(v); }

std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + str(s[i]);
  return r + "]";
}

std::string dtype_str(at::ScalarType t) { return c10::toString(t); }

int dtype_code(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return frnn::kF32;
    case at::kDouble: return frnn::kF64;
    case at::kHalf: if (!kEmulated) return frnn::kF16; break;
    case at::kBFloat16: if (!kEmulated) return frnn::kBF16; break;
    default: break;
  }
  fail(std::string(name) + ": expected float32, float64" +
       (kEmulated ? " (emulated kernels)" : ", float16 or bfloat16") + ", got " +
       dtype_str(t.scalar_type()));
}

// Whether fp32 recurrences may take tf32 products: torch's cuDNN TF32 flag for RNNs, read per
// call as nn.LSTM's cuDNN path reads it (torch.backends.cudnn.allow_tf32, or
// torch.backends.cudnn.rnn.fp32_precision where torch has per-operation flags). Torch's API
// for it changed: allowTF32CuDNN(Float32Op::RNN) in 2.10 on, allowTF32CuDNN("rnn") where it
// takes a string, allowTF32CuDNN() before (the overloads below pick the one that compiles).
template <typename C>
auto rnn_tf32_of(const C& ctx, int) -> decltype(ctx.allowTF32CuDNN(std::string("rnn"))) {
  return ctx.allowTF32CuDNN(std::string("rnn"));
}
template <typename C>
bool rnn_tf32_of(const C& ctx, long) { return ctx.allowTF32CuDNN(); }

bool rnn_allows_tf32() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::RNN);
#else
  return rnn_tf32_of(at::globalContext(), 0);
#endif
}

// The tensor every other one is checked against: on a CUDA device (CPU when emulated).
void check_device(const at::Tensor& t, const char* name) {
  FRNN_REQUIRE(kEmulated ? t.device().is_cpu() : t.is_cuda(), name,
          std::string("expected a ") +
              (kEmulated ? "CPU tensor (emulated kernels)" : "CUDA tensor") + ", got one on " +
              t.device().str());
}

// Same device as `like` (CUDA, or CPU when emulated), contiguous, and the element type.
void check(const at::Tensor& t, const char* name, const at::Tensor& like,
           at::ScalarType dtype) {
  FRNN_REQUIRE(t.device() == like.device(), name,
          "expected a tensor on " + like.device().str() + ", got " + t.device().str());
  FRNN_REQUIRE(t.scalar_type() == dtype, name,
          "expected dtype " + dtype_str(dtype) + ", got " + dtype_str(t.scalar_type()));
  FRNN_REQUIRE(t.is_contiguous(), name, "expected a contiguous tensor");
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  FRNN_REQUIRE(t.sizes() == shape, name,
          "expected shape " + shape_str(shape) + ", got " + shape_str(t.sizes()));
}

void check_full(const at::Tensor& t, const char* name, const at::Tensor& like,
                at::ScalarType dtype, at::IntArrayRef shape) {
  check(t, name, like, dtype);
  check_shape(t, name, shape);
}

const void* ptr(const OptTensor& t) { return t.has_value() ? t->data_ptr() : nullptr; }

// An optional state (h0, c0, dh_n, ...): like's device and dtype, contiguous, of `shape`.
const void* state_ptr(const OptTensor& t, const char* name, const at::Tensor& like,
                      at::IntArrayRef shape) {
  if (!t.has_value()) return nullptr;
  check_full(*t, name, like, like.scalar_type(), shape);
  return t->data_ptr();
}

// An optional uint8 tensor (the length mask, a regularisation mask): checked like `like`'s
// device, contiguous, of `shape`; its data, or null where absent. bool_ok: a bool tensor is
// taken as it is (one byte per element, 0 or 1).
const uint8_t* u8_ptr(const OptTensor& t, const char* name, const at::Tensor& like,
                      at::IntArrayRef shape, bool bool_ok = false) {
  if (!t.has_value()) return nullptr;
  const bool is_bool = bool_ok && t->scalar_type() == at::kBool;
  check_full(*t, name, like, is_bool ? at::kBool : at::kByte, shape);
  return static_cast<const uint8_t*>(t->data_ptr());
}

// The regularisation masks of a step (fused_rnn/ops/regularize.py, StepMasks; params.h): each
// uint8, contiguous, on gi's device, or absent. scales: h_scale, g_scale, c_scale, zc_p, zh_p.
frnn::StepMasks step_masks(const OptTensor& m_h, const OptTensor& m_g, const OptTensor& m_c,
                           const OptTensor& m_zc, const OptTensor& m_zh,
                           const std::vector<double>& scales, const at::Tensor& like,
                           int64_t cell, int64_t T, int64_t B, int64_t H, int64_t HK) {
  FRNN_REQUIRE(scales.size() == 5, "scales",
          "expected 5 values (h_scale, g_scale, c_scale, zc_p, zh_p), got " +
              str(int64_t(scales.size())));
  const bool lstm = cell == frnn::kLSTM, gated = cell == frnn::kLSTM || cell == frnn::kGRU;
  FRNN_REQUIRE(gated || !m_g.has_value(), "m_g", "recurrent dropout needs an LSTM or a GRU");
  FRNN_REQUIRE(lstm || !m_c.has_value(), "m_c", "rnndrop needs an LSTM");
  FRNN_REQUIRE(lstm || (!m_zc.has_value() && scales[3] == 0.0), "m_zc, zc_p",
          "zoneout of the cell needs an LSTM");
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
  FRNN_REQUIRE(cell >= frnn::kLSTM && cell <= frnn::kRNNRelu, "cell",
          "expected 0..3, got " + str(cell));
  return cell == frnn::kLSTM ? 4 : cell == frnn::kGRU ? 3 : 1;
}

int saved_values(int64_t cell) { return cell <= frnn::kGRU ? 4 : 1; }

void check_plan(int64_t plan) {
  FRNN_REQUIRE(plan >= 0 && plan < frnn::kPlanCodeEnd, "plan",
               "expected a cluster plan code (plans.h) or 0, got " + str(plan));
}

void check_variant(int64_t variant) {
  FRNN_REQUIRE(variant >= frnn::kStep && variant <= frnn::kCluster, "variant",
          "expected 0 (step), 1 (persistent) or 2 (cluster), got " + str(variant));
}

void check_status(int status, const char* what, int64_t T, int64_t B, int64_t H) {
  if (status != frnn::kOk)
    throw std::runtime_error(std::string("fused_rnn CUDA ") + what + " (T=" + str(T) +
                             ", B=" + str(B) + ", H=" + str(H) + "): " +
                             frnn::error_string(status));
}

void* at_row(const at::Tensor& t, int64_t offset_elems) {
  return static_cast<char*>(t.data_ptr()) + offset_elems * int64_t(t.element_size());
}

// ------------------------------------------------------------------ one layer and direction

// The multi-cluster forward's exchange buffer, zeroed (launch.h, fwd_exchange_bytes), set as
// p.xchg; undefined, and p.xchg null, where no such kernel may run. The caller keeps it until
// the launch is queued (the caching allocator orders its reuse after it on the stream).
at::Tensor exchange_buffer(frnn::FwdParams& p, int64_t variant, const at::Tensor& like) {
  p.xchg = nullptr;
  const size_t bytes = variant == frnn::kCluster ? frnn::fwd_exchange_bytes(p) : 0;
  if (bytes == 0) return at::Tensor();
  at::Tensor x = at::zeros({int64_t(bytes)}, like.options().dtype(at::kByte));
  p.xchg = x.data_ptr();
  return x;
}


// Forward of one layer and direction; fills hs, cs, out, saved (and ms with a projection),
// h_n and c_n. h0, c0: the initial states (absent: zeros). m_h .. scales: the regularisation
// (step_masks). plan: the cluster plan to try (CS.100 + KS; 0 the default). store_saved false:
// no backward follows (FwdParams). Returns the variant that ran (0 per step, 1 persistent,
// 2 cluster) and the cluster plan that ran (0 if none).
std::tuple<int64_t, int64_t> rnn_fwd(
    const at::Tensor& gi, const at::Tensor& w_hh, const OptTensor& b_hh, const OptTensor& w_hr,
    const OptTensor& mask, const OptTensor& m_h, const OptTensor& m_g, const OptTensor& m_c,
    const OptTensor& m_zc, const OptTensor& m_zh, const std::vector<double>& scales,
    const OptTensor& h0, const OptTensor& c0, at::Tensor& h_n, at::Tensor& c_n, at::Tensor& hs,
    at::Tensor& cs, at::Tensor& out, at::Tensor& saved, at::Tensor& ms, int64_t cell,
    bool reverse, int64_t variant, int64_t plan, bool store_saved, int64_t stream) {
  const int G = cell_gates(cell);
  check_variant(variant);
  check_plan(plan);
  FRNN_REQUIRE(gi.dim() == 3, "gi", "expected (T, B, G*H), got " + shape_str(gi.sizes()));
  FRNN_REQUIRE(hs.dim() == 3, "hs", "expected (T+1, B, HK), got " + shape_str(hs.sizes()));
  const int64_t T = gi.size(0), B = gi.size(1), H = w_hh.size(0) / G, HK = hs.size(-1);
  const auto dt = gi.scalar_type(), acc = acc_type(gi);
  check_device(gi, "gi");
  const c10::DeviceGuard guard(gi.device());
  check_full(gi, "gi", gi, dt, {T, B, G * H});
  check_full(w_hh, "w_hh", gi, dt, {G * H, HK});
  if (b_hh) check_full(*b_hh, "b_hh", gi, dt, {G * H});
  FRNN_REQUIRE(!w_hr.has_value() || cell == frnn::kLSTM, "w_hr", "a projection needs an LSTM");
  FRNN_REQUIRE(w_hr.has_value() ? HK < H : HK == H, "hs",
          std::string("expected a state width ") +
              (w_hr.has_value() ? "below H = " : "equal to H = ") + str(H) + " (" +
              (w_hr.has_value() ? "with" : "without") + " a projection), got " + str(HK));
  if (w_hr) {
    check_full(*w_hr, "w_hr", gi, dt, {HK, H});
    check_full(ms, "ms", gi, dt, {T, B, H});
  }
  check_full(hs, "hs", gi, dt, {T + 1, B, HK});
  check_full(out, "out", gi, dt, {T, B, HK});
  check_full(saved, "saved", gi, acc, {T, B, saved_values(cell) * H});
  check_full(h_n, "h_n", gi, dt, {B, HK});
  const bool lstm = cell == frnn::kLSTM;
  if (lstm) {
    check_full(cs, "cs", gi, acc, {T + 1, B, H});
    check_full(c_n, "c_n", gi, dt, {B, H});
  }
  frnn::FwdParams p{};
  p.gi = gi.data_ptr();
  p.w_hh = w_hh.data_ptr();
  p.b_hh = ptr(b_hh);
  p.w_hr = ptr(w_hr);
  p.mask = u8_ptr(mask, "mask", gi, {T, B});
  p.h0 = state_ptr(h0, "h0", gi, {B, HK});
  p.c0 = lstm ? state_ptr(c0, "c0", gi, {B, H}) : nullptr;
  p.h_n = h_n.data_ptr();
  p.c_n = lstm ? c_n.data_ptr() : nullptr;
  p.hs = hs.data_ptr();
  p.cs = lstm ? cs.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.ld_out = HK;
  p.saved = saved.data_ptr();
  p.ms = w_hr ? ms.data_ptr() : nullptr;
  p.reg = step_masks(m_h, m_g, m_c, m_zc, m_zh, scales, gi, cell, T, B, H, HK);
  p.T = T; p.B = B; p.H = H; p.HK = HK;
  p.cell = int(cell);
  p.dtype = dtype_code(gi, "gi");
  p.tf32 = rnn_allows_tf32();
  p.reverse = reverse;
  p.store_saved = store_saved;
  const at::Tensor xchg = exchange_buffer(p, variant, gi);
  int used = -1, used_plan = 0;
  check_status(frnn::rnn_fwd(p, int(variant), int(plan), reinterpret_cast<void*>(stream), &used,
                             &used_plan),
               "forward", T, B, H);
  return {used, used_plan};
}

// The backward recurrence of one direction (p filled but for its weights): the cluster kernel
// where the variant asks for it and it takes the call (it reads W_hh itself), else the
// persistent or per-step kernels on W_hhT, a transposed copy made only then. Returns the
// variant that ran and sets *used_plan to the cluster plan (0 if none).
int64_t run_bwd(frnn::BwdParams& p, const at::Tensor& w_hh, int64_t variant, int64_t plan,
                int64_t stream, int* used_plan) {
  *used_plan = 0;
  p.w_hh = w_hh.data_ptr();
  void* const s = reinterpret_cast<void*>(stream);
  if (variant == frnn::kCluster) {
    // The kind of kernel the plan names first, then the other (each runs the asked plan where
    // H has it, else H's default); the multi-cluster one with its zeroed exchange buffer.
    const size_t bytes = frnn::bwd_exchange_bytes(p);
    const at::Tensor xchg = bytes ? at::zeros({int64_t(bytes)}, w_hh.options().dtype(at::kByte))
                                  : at::Tensor();
    p.xchg = bytes ? xchg.data_ptr() : nullptr;
    const bool multi = frnn::is_multi_plan(int(plan));
    for (int pass = 0; pass < 2 && *used_plan == 0; ++pass) {
      const int status = multi == (pass == 0)
          ? frnn::rnn_bwd_multicluster(p, int(plan), s, used_plan)
          : frnn::rnn_bwd_cluster(p, int(plan), s, used_plan);
      check_status(status, "backward", p.T, p.B, p.H);
    }
    if (*used_plan != 0) return frnn::kCluster;
  }
  const at::Tensor w_t = w_hh.t().contiguous();
  p.w_t = w_t.data_ptr();
  int used = -1;
  check_status(frnn::rnn_bwd(p, int(variant), s, &used), "backward", p.T, p.B, p.H);
  return used;
}

// Backward of rnn_fwd: fills dgh, dgi (GRU), dhs (projection) and leaves the carries in carry_h,
// carry_c (params.h, BwdParams); dh_n, dc_n: the gradients of h_n and c_n (absent: zeros). The
// masks are the forward's; plan: the cluster backward's plan (plans.h; 0 the default). Returns
// the variant and the cluster plan that ran (0 if none).
std::tuple<int64_t, int64_t> rnn_bwd(const at::Tensor& w_hh, const OptTensor& w_hr_t,
                                     const at::Tensor& dout,
                const OptTensor& dh_n, const OptTensor& dc_n, const at::Tensor& saved,
                const at::Tensor& hs, const at::Tensor& cs, const OptTensor& mask,
                const OptTensor& m_h, const OptTensor& m_g, const OptTensor& m_c,
                const OptTensor& m_zc, const OptTensor& m_zh, const std::vector<double>& scales,
                at::Tensor& dgh, at::Tensor& dgi, const OptTensor& dhs, at::Tensor& carry_h,
                at::Tensor& carry_c, int64_t cell, bool reverse, int64_t variant,
                int64_t plan, int64_t stream) {
  const int G = cell_gates(cell);
  check_variant(variant);
  check_plan(plan);
  FRNN_REQUIRE(hs.dim() == 3, "hs", "expected (T+1, B, HK), got " + shape_str(hs.sizes()));
  FRNN_REQUIRE(w_hh.dim() == 2, "w_hh", "expected (G*H, HK), got " + shape_str(w_hh.sizes()));
  const int64_t T = hs.size(0) - 1, B = hs.size(1), HK = hs.size(2), H = w_hh.size(0) / G;
  const auto dt = hs.scalar_type(), acc = acc_type(hs);
  check_device(hs, "hs");
  const c10::DeviceGuard guard(hs.device());
  check(hs, "hs", hs, dt);
  FRNN_REQUIRE(!w_hr_t.has_value() || cell == frnn::kLSTM, "w_hr_t", "a projection needs an LSTM");
  FRNN_REQUIRE(w_hr_t.has_value() ? HK < H : HK == H, "hs",
          std::string("expected a state width ") +
              (w_hr_t.has_value() ? "below H = " : "equal to H = ") + str(H) + " (" +
              (w_hr_t.has_value() ? "with" : "without") + " a projection), got " + str(HK));
  check_full(w_hh, "w_hh", hs, dt, {G * H, HK});
  check_full(dout, "dout", hs, dt, {T, B, HK});
  check_full(saved, "saved", hs, acc, {T, B, saved_values(cell) * H});
  check_full(dgh, "dgh", hs, acc, {T, B, G * H});
  if (cell == frnn::kGRU) check_full(dgi, "dgi", hs, acc, {T, B, G * H});
  check_full(carry_h, "carry_h", hs, acc, {B, HK});
  const bool lstm = cell == frnn::kLSTM;
  if (lstm) {
    check_full(cs, "cs", hs, acc, {T + 1, B, H});
    check_full(carry_c, "carry_c", hs, acc, {B, H});
  }
  if (w_hr_t) {
    FRNN_REQUIRE(dhs.has_value(), "dhs", "a projection needs it");
    check_full(*w_hr_t, "w_hr_t", hs, dt, {H, HK});
    check_full(*dhs, "dhs", hs, acc, {T, B, HK});
  }
  frnn::BwdParams p{};
  p.w_hr_t = ptr(w_hr_t);
  p.dout = dout.data_ptr();
  p.ld_dout = HK;
  p.dh_n = state_ptr(dh_n, "dh_n", hs, {B, HK});
  p.dc_n = lstm ? state_ptr(dc_n, "dc_n", hs, {B, H}) : nullptr;
  p.saved = saved.data_ptr();
  p.hs = hs.data_ptr();
  p.cs = lstm ? cs.data_ptr() : nullptr;
  p.mask = u8_ptr(mask, "mask", hs, {T, B});
  p.reg = step_masks(m_h, m_g, m_c, m_zc, m_zh, scales, hs, cell, T, B, H, HK);
  p.dgh = dgh.data_ptr();
  p.dgi = cell == frnn::kGRU ? dgi.data_ptr() : dgh.data_ptr();
  p.dhs = dhs ? dhs->data_ptr() : nullptr;
  p.carry_h = carry_h.data_ptr();
  p.carry_c = lstm ? carry_c.data_ptr() : nullptr;
  p.T = T; p.B = B; p.H = H; p.HK = HK;
  p.cell = int(cell);
  p.dtype = dtype_code(hs, "hs");
  p.tf32 = rnn_allows_tf32();
  p.reverse = reverse;
  int used_plan = 0;
  const int64_t used = run_bwd(p, w_hh, variant, plan, stream, &used_plan);
  return {used, used_plan};
}

// ------------------------------------------------------------------------- a whole layer

// The shapes of one layer: D directions of `per` weights each (w_ih, w_hh, [b_ih, b_hh],
// [w_hr]), every weight checked against x (device, dtype, contiguous, shape).
struct Layer {
  int64_t T, B, I, H, HK, G, D, per;
  bool bias, proj;
  at::ScalarType dt, acc;
  const at::Tensor& w(const std::vector<at::Tensor>& ws, int64_t d, int which) const {
    return ws[size_t(d * per + which)];
  }
};

Layer check_layer(const at::Tensor& x, const std::vector<at::Tensor>& w, int64_t cell,
                  int64_t D, bool bias, bool proj) {
  Layer L{};
  L.G = cell_gates(cell);
  FRNN_REQUIRE(D == 1 || D == 2, "directions", "expected 1 or 2, got " + str(D));
  FRNN_REQUIRE(!proj || cell == frnn::kLSTM, "w_hr", "a projection needs an LSTM");
  L.D = D;
  L.bias = bias;
  L.proj = proj;
  L.per = 2 + 2 * int64_t(bias) + int64_t(proj);
  check_device(x, "input");
  FRNN_REQUIRE(x.dim() == 3, "input", "expected (T, B, I), got " + shape_str(x.sizes()));
  FRNN_REQUIRE(int64_t(w.size()) == D * L.per, "weights",
          "expected " + str(D * L.per) + " tensors for this layer, got " + str(int64_t(w.size())));
  L.T = x.size(0);
  L.B = x.size(1);
  L.I = x.size(2);
  FRNN_REQUIRE(L.T >= 1 && L.B >= 1, "input",
          "expected T >= 1 and B >= 1, got " + shape_str(x.sizes()));
  L.dt = x.scalar_type();
  L.acc = acc_type(x);
  dtype_code(x, "input");
  const auto& w_ih0 = w[0];
  FRNN_REQUIRE(w_ih0.dim() == 2 && w_ih0.size(0) % L.G == 0, "weight_ih",
          "expected (G*H, I) with G = " + str(L.G) + ", got " + shape_str(w_ih0.sizes()));
  L.H = w_ih0.size(0) / L.G;
  const auto& w_hh0 = w[1];
  FRNN_REQUIRE(w_hh0.dim() == 2, "weight_hh",
          "expected (G*H, HK), got " + shape_str(w_hh0.sizes()));
  L.HK = w_hh0.size(1);
  FRNN_REQUIRE(L.H >= 1 && L.HK >= 1, "weight_hh",
               "expected H >= 1, got shape " + shape_str(w_hh0.sizes()));
  FRNN_REQUIRE(proj ? L.HK < L.H : L.HK == L.H, "weight_hh",
          std::string("expected ") + (proj ? "fewer columns than H = " : "H = ") + str(L.H) +
              " columns" + (proj ? " (the projection's size)" : "") + ", got " + str(L.HK));
  const int64_t GH = L.G * L.H;
  for (int64_t d = 0; d < D; ++d) {
    int k = 0;
    check_full(L.w(w, d, k++), "weight_ih", x, L.dt, {GH, L.I});
    check_full(L.w(w, d, k++), "weight_hh", x, L.dt, {GH, L.HK});
    if (bias) {
      check_full(L.w(w, d, k++), "bias_ih", x, L.dt, {GH});
      check_full(L.w(w, d, k++), "bias_hh", x, L.dt, {GH});
    }
    if (proj) check_full(L.w(w, d, k++), "weight_hr", x, L.dt, {L.HK, L.H});
  }
  return L;
}

at::Tensor nan_filled(at::Tensor t, bool poison) {
  return poison ? t.fill_(std::numeric_limits<double>::quiet_NaN()) : t;
}

// Forward of layer `layer` of a stack, every direction: gi = x.W_ihT + b_ih (one GEMM per
// direction), then the recurrence, which writes its direction's half of the output, reads
// h0[k], c0[k] and writes h_n[k], c_n[k] for k = layer.D + d (h0, c0, h_n, c_n: the stack's
// (L.D, B, .) tensors; h0/c0 absent: zeros). Buffers are allocated here (NaN-filled when
// poison). Returns the layer's output (T, B, D.HK), per direction its saved buffers (saved,
// hs, cs, ms; none when store_saved is false), and the variant and cluster plan that ran
// last.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>, int64_t, int64_t>
layer_fwd(const at::Tensor& x_in, const std::vector<at::Tensor>& w, const OptTensor& h0,
          const OptTensor& c0, const OptTensor& h_n_in, const OptTensor& c_n_in, int64_t LD,
          int64_t layer, const OptTensor& mask, int64_t cell, int64_t D, bool bias, bool proj,
          int64_t variant, int64_t plan, bool store_saved, bool poison, int64_t stream) {
  // The GEMMs here run in the tensors' dtype: a caller's autocast region must not recast them
  // (the kernels read gi as the weights' type). No autograd either: the caller's node
  // (fused_rnn/ops/cuda/stack.py) is the derivative, and skipping autograd's dispatch saves
  // about 1 us per ATen call here.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_variant(variant);
  check_plan(plan);
  const Layer L = check_layer(x_in, w, cell, D, bias, proj);
  const c10::DeviceGuard guard(x_in.device());
  const bool lstm = cell == frnn::kLSTM;
  FRNN_REQUIRE(layer >= 0 && (layer + 1) * D <= LD, "layer",
          "expected 0 <= layer < " + str(LD / D) + ", got " + str(layer));
  const int64_t T = L.T, B = L.B, H = L.H, HK = L.HK;
  const auto opt = x_in.options(), acc_opt = opt.dtype(L.acc);
  // The stack's final states: allocated by its first layer, written by each.
  at::Tensor h_n = h_n_in ? *h_n_in : nan_filled(at::empty({LD, B, HK}, opt), poison);
  at::Tensor c_n = c_n_in ? *c_n_in
                   : lstm ? nan_filled(at::empty({LD, B, H}, opt), poison) : at::Tensor();
  check_full(h_n, "h_n", x_in, L.dt, {LD, B, HK});
  if (lstm) check_full(c_n, "c_n", x_in, L.dt, {LD, B, H});
  if (h0) check_full(*h0, "h0", x_in, L.dt, {LD, B, HK});
  if (lstm && c0) check_full(*c0, "c0", x_in, L.dt, {LD, B, H});
  const uint8_t* mask_p = u8_ptr(mask, "mask", x_in, {T, B}, true);
  const at::Tensor x = x_in.contiguous().view({T * B, L.I});
  at::Tensor out = nan_filled(at::empty({T, B, D * HK}, opt), poison);
  std::vector<at::Tensor> keep;
  int used = -1, used_plan = 0;
  for (int64_t d = 0; d < D; ++d) {
    const int64_t k = layer * D + d;
    const at::Tensor& w_ih = L.w(w, d, 0);
    const at::Tensor& w_hh = L.w(w, d, 1);
    const at::Tensor gi = bias ? at::addmm(L.w(w, d, 2), x, w_ih.t()) : at::mm(x, w_ih.t());
    at::Tensor hs = nan_filled(at::empty({T + 1, B, HK}, opt), poison);
    // Without a backward to come no kernel writes `saved` (FwdParams.store_saved).
    at::Tensor saved = store_saved
        ? nan_filled(at::empty({T, B, saved_values(cell) * H}, acc_opt), poison) : hs;
    // Absent buffers stand in as `saved` in the list kept for layer_bwd (never read there).
    at::Tensor cs = lstm ? nan_filled(at::empty({T + 1, B, H}, acc_opt), poison) : saved;
    at::Tensor ms = proj ? nan_filled(at::empty({T, B, H}, opt), poison) : saved;
    frnn::FwdParams p{};
    p.gi = gi.data_ptr();
    p.w_hh = w_hh.data_ptr();
    p.b_hh = bias ? L.w(w, d, 3).data_ptr() : nullptr;
    p.w_hr = proj ? L.w(w, d, L.per - 1).data_ptr() : nullptr;
    p.mask = mask_p;
    p.h0 = h0 ? at_row(*h0, k * B * HK) : nullptr;
    p.c0 = lstm && c0 ? at_row(*c0, k * B * H) : nullptr;
    p.h_n = at_row(h_n, k * B * HK);
    p.c_n = lstm ? at_row(c_n, k * B * H) : nullptr;
    p.hs = hs.data_ptr();
    p.cs = lstm ? cs.data_ptr() : nullptr;
    p.out = at_row(out, d * HK);
    p.ld_out = D * HK;
    p.saved = store_saved ? saved.data_ptr() : nullptr;
    p.ms = proj ? ms.data_ptr() : nullptr;
    p.T = T; p.B = B; p.H = H; p.HK = HK;
    p.cell = int(cell);
    p.dtype = dtype_code(x, "input");
    p.tf32 = rnn_allows_tf32();
    p.reverse = d == 1;
    p.store_saved = store_saved;
    const at::Tensor xchg = exchange_buffer(p, variant, gi);
    check_status(frnn::rnn_fwd(p, int(variant), int(plan), reinterpret_cast<void*>(stream),
                               &used, &used_plan),
                 "forward", T, B, H);
    if (store_saved) keep.insert(keep.end(), {saved, hs, cs, ms});
  }
  return {out, h_n, c_n, keep, used, used_plan};
}

// One step of a cell without a gradient to come (inference, a decode step): layer_fwd of a
// one-step, one-layer sequence on x (B, I), h0, c0 (B, .) (absent: zeros), without the
// Python-side reshapes (each a torch call of 1-2 us). Returns h' and c' (c': None unless
// LSTM), views of h_n and c_n, and the variant that ran.
std::tuple<at::Tensor, at::Tensor, int64_t> cell_fwd(
    const at::Tensor& x, const std::vector<at::Tensor>& w, const OptTensor& h0,
    const OptTensor& c0, int64_t cell, bool bias, int64_t variant, bool poison,
    int64_t stream) {
  FRNN_REQUIRE(x.dim() == 2, "input", "expected (B, I), got " + shape_str(x.sizes()));
  FRNN_REQUIRE(!h0 || h0->dim() == 2, "h0", "expected (B, H), got " + shape_str(h0->sizes()));
  FRNN_REQUIRE(!c0 || c0->dim() == 2, "c0", "expected (B, H), got " + shape_str(c0->sizes()));
  const auto one = [](const OptTensor& t) { return t ? OptTensor(t->unsqueeze(0)) : OptTensor(); };
  auto r = layer_fwd(x.unsqueeze(0), w, one(h0), one(c0), OptTensor(), OptTensor(), 1, 0,
                     OptTensor(), cell, 1, bias, false, variant, 0, false, poison, stream);
  const at::Tensor& c_n = std::get<2>(r);
  return {std::get<1>(r).select(0, 0), c_n.defined() ? c_n.select(0, 0) : at::Tensor(),
          std::get<4>(r)};
}

// Backward of layer_fwd. dout (T, B, D.HK) and the stack's dh_n, dc_n (L.D, B, .): the
// gradients of the layer's output and final states (absent: zeros). saved: layer_fwd's
// buffers. Fills dh0[k], dc0[k] of the stack's (L.D, B, .) gradients (allocated when absent)
// and returns dx (None unless need_dx), dh0, dc0, the weights' gradients in their order (None
// where need_w, one flag per weight of the layer, says no; empty need_w: all), the variant
// that ran and the cluster backward's plan (0 if none; `plan` asks for one, 0 the default).
// The GEMMs after the recurrence are those of the Python launchers (ops/recurrence.py,
// finish_bwd, and F.linear's backward): the same products in the same dtypes.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>, int64_t, int64_t>
layer_bwd(
    const OptTensor& dout_in, const OptTensor& dh_n_in, const OptTensor& dc_n_in,
    const at::Tensor& x_in, const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& kept,
    const OptTensor& dh0_in, const OptTensor& dc0_in, int64_t LD, int64_t layer,
    const OptTensor& mask, int64_t cell, int64_t D, bool bias, bool proj, int64_t variant,
    int64_t plan, bool need_dx, const std::vector<bool>& need_w, int64_t stream) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // (as layer_fwd)
  check_variant(variant);
  check_plan(plan);
  const Layer L = check_layer(x_in, w, cell, D, bias, proj);
  const c10::DeviceGuard guard(x_in.device());
  const bool lstm = cell == frnn::kLSTM;
  const int64_t T = L.T, B = L.B, H = L.H, HK = L.HK, GH = L.G * L.H;
  FRNN_REQUIRE(int64_t(kept.size()) == 4 * D, "saved",
          "expected " + str(4 * D) + " buffers (layer_fwd's), got " + str(int64_t(kept.size())));
  FRNN_REQUIRE(layer >= 0 && (layer + 1) * D <= LD, "layer",
          "expected 0 <= layer < " + str(LD / D) + ", got " + str(layer));
  FRNN_REQUIRE(need_w.empty() || int64_t(need_w.size()) == D * L.per, "need_w",
               "expected " + str(D * L.per) + " flags (one per weight of the layer) or none, got " +
                   str(int64_t(need_w.size())));
  const auto opt = x_in.options(), acc_opt = opt.dtype(L.acc);
  // The stack's initial-state gradients: allocated by its last layer (the first backward).
  at::Tensor dh0 = dh0_in ? *dh0_in : at::empty({LD, B, HK}, opt);
  at::Tensor dc0 = dc0_in ? *dc0_in : lstm ? at::empty({LD, B, H}, opt) : at::Tensor();
  check_full(dh0, "dh0", x_in, L.dt, {LD, B, HK});
  if (lstm) check_full(dc0, "dc0", x_in, L.dt, {LD, B, H});
  // Gradients as autograd hands them over: any strides (a sum's backward is an expand).
  const OptTensor dh_n = dh_n_in ? OptTensor(dh_n_in->contiguous()) : OptTensor();
  const OptTensor dc_n = lstm && dc_n_in ? OptTensor(dc_n_in->contiguous()) : OptTensor();
  if (dh_n) check_full(*dh_n, "dh_n", x_in, L.dt, {LD, B, HK});
  if (dc_n) check_full(*dc_n, "dc_n", x_in, L.dt, {LD, B, H});
  const uint8_t* mask_p = u8_ptr(mask, "mask", x_in, {T, B}, true);
  const at::Tensor dout = dout_in ? dout_in->contiguous() : at::zeros({T, B, D * HK}, opt);
  check_full(dout, "dout", x_in, L.dt, {T, B, D * HK});
  const at::Tensor x = x_in.contiguous().view({T * B, L.I});
  const bool same = L.dt == L.acc;  // fp32/fp64: the carries can be dh0/dc0 themselves
  at::Tensor dx;
  std::vector<at::Tensor> grads;
  int64_t used = -1;
  int used_plan = 0;
  for (int64_t d = 0; d < D; ++d) {
    const int64_t k = layer * D + d;
    const at::Tensor &saved = kept[size_t(4 * d)], &hs = kept[size_t(4 * d + 1)],
                     &cs = kept[size_t(4 * d + 2)], &ms = kept[size_t(4 * d + 3)];
    check_full(saved, "saved", x_in, L.acc, {T, B, saved_values(cell) * H});
    check_full(hs, "hs", x_in, L.dt, {T + 1, B, HK});
    if (lstm) check_full(cs, "cs", x_in, L.acc, {T + 1, B, H});
    if (proj) check_full(ms, "ms", x_in, L.dt, {T, B, H});
    const at::Tensor& w_ih = L.w(w, d, 0);
    const at::Tensor& w_hh = L.w(w, d, 1);
    const at::Tensor w_hr_t = proj ? L.w(w, d, L.per - 1).t().contiguous() : at::Tensor();
    at::Tensor dgh = at::empty({T, B, GH}, acc_opt);
    at::Tensor dgi = cell == frnn::kGRU ? at::empty({T, B, GH}, acc_opt) : dgh;
    at::Tensor dhs = proj ? at::empty({T, B, HK}, acc_opt) : at::Tensor();
    at::Tensor dh0_k = dh0.select(0, k), dc0_k = lstm ? dc0.select(0, k) : at::Tensor();
    at::Tensor carry_h = same ? dh0_k : at::empty({B, HK}, acc_opt);
    at::Tensor carry_c = !lstm ? carry_h : same ? dc0_k : at::empty({B, H}, acc_opt);
    frnn::BwdParams p{};
    p.w_hr_t = proj ? w_hr_t.data_ptr() : nullptr;
    p.dout = at_row(dout, d * HK);
    p.ld_dout = D * HK;
    p.dh_n = dh_n ? at_row(*dh_n, k * B * HK) : nullptr;
    p.dc_n = lstm && dc_n ? at_row(*dc_n, k * B * H) : nullptr;
    p.saved = saved.data_ptr();
    p.hs = hs.data_ptr();
    p.cs = lstm ? cs.data_ptr() : nullptr;
    p.mask = mask_p;
    p.dgh = dgh.data_ptr();
    p.dgi = dgi.data_ptr();
    p.dhs = proj ? dhs.data_ptr() : nullptr;
    p.carry_h = carry_h.data_ptr();
    p.carry_c = lstm ? carry_c.data_ptr() : nullptr;
    p.T = T; p.B = B; p.H = H; p.HK = HK;
    p.cell = int(cell);
    p.dtype = dtype_code(x, "input");
    p.tf32 = rnn_allows_tf32();
    p.reverse = d == 1;
    used = run_bwd(p, w_hh, variant, plan, stream, &used_plan);
    // dh0 = the carry + the first step's gates through W_hh (zero rows past a sequence's end).
    const at::Tensor dg_first = dgh.select(0, d == 1 ? T - 1 : 0);
    if (same) {
      dh0_k.addmm_(dg_first, w_hh);
    } else {
      dh0_k.copy_(at::addmm(carry_h, dg_first, w_hh.to(L.acc)));
      if (lstm) dc0_k.copy_(carry_c);
    }
    const at::Tensor dg2 = dgh.view({T * B, GH});
    const auto wants = [&](size_t k) {
      const size_t i = size_t(d * L.per) + k;
      return need_w.empty() || need_w[i];
    };
    // The input GEMM's backward, as F.linear's: in the input dtype (a cast only for half
    // types, and only where a product needs it).
    const bool input_side = need_dx || wants(0) || (bias && wants(2));
    const at::Tensor dgi2 = input_side ? dgi.view({T * B, GH}).to(L.dt) : at::Tensor();
    // In the order of the weights: dW_ih, dW_hh, [db_ih, db_hh], [dW_hr]; None for a weight
    // that needs no gradient (a frozen one), whose GEMM is skipped.
    grads.push_back(wants(0) ? dgi2.t().mm(x) : at::Tensor());
    if (wants(1)) {
      // dW_hh = dgatesT.h_prev over all T.B rows; h_prev in time order (hs is in processing
      // order: the reverse direction's is flipped, a copy).
      at::Tensor h_prev = hs.slice(0, 0, T);
      if (d == 1) h_prev = h_prev.flip(0);
      grads.push_back(dg2.t().mm(h_prev.to(L.acc).reshape({T * B, HK})).to(L.dt));
    } else {
      grads.push_back(at::Tensor());
    }
    if (bias) {
      grads.push_back(wants(2) ? dgi2.sum(0) : at::Tensor());
      grads.push_back(wants(3) ? dg2.sum(0).to(L.dt) : at::Tensor());
    }
    if (proj)
      grads.push_back(wants(size_t(L.per - 1))
                          ? dhs.view({T * B, HK}).t().mm(ms.view({T * B, H}).to(L.acc)).to(L.dt)
                          : at::Tensor());
    if (need_dx) dx = d == 0 ? dgi2.mm(w_ih) : dx.addmm_(dgi2, w_ih);
  }
  if (dx.defined()) dx = dx.view({T, B, L.I});
  return {dx, dh0, dc0, grads, used, used_plan};
}

// The layout of a PackedSequence (checked by the caller, fused_rnn/checks.py check_packed):
// for every row of its data, the time step and the batch row in the caller's order, and the
// (T, B) step mask, on like's device. The same indices as fused_rnn/_packing.py's
// layout_index (the reference backend's). batch_sizes is on the CPU, so the steps and the rows
// in sorted order are plain loops here and one copy to the device; only the permutation to
// the caller's order (sorted_indices, on the device) is device work. (As ATen ops the index
// cost about 60 us a call on a 2-core CPU.)
std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_index(const at::Tensor& batch_sizes,
                                                            const OptTensor& sorted_indices,
                                                            const at::Tensor& like) {
  FRNN_REQUIRE(batch_sizes.dim() == 1 && batch_sizes.numel() >= 1 && batch_sizes.is_cpu(),
               "batch_sizes", "expected a non-empty 1-D CPU tensor, got " +
                                  shape_str(batch_sizes.sizes()) + " on " +
                                  batch_sizes.device().str());
  FRNN_REQUIRE(like.dim() >= 1, "data", "expected (rows, ...), got " + shape_str(like.sizes()));
  const c10::DeviceGuard guard(like.device());
  const at::Tensor sizes = batch_sizes.to(at::kLong).contiguous();
  const int64_t* bs = sizes.data_ptr<int64_t>();
  const int64_t T = sizes.size(0), B = bs[0], N = like.size(0);
  FRNN_REQUIRE(B >= 1 && B <= N, "batch_sizes",
               "expected a first size in 1.." + str(N) + " (the data's rows), got " + str(B));
  const OptTensor si = sorted_indices ? OptTensor(sorted_indices->to(at::kLong)) : OptTensor();
  if (si)
    FRNN_REQUIRE(si->dim() == 1 && si->numel() == B && si->device() == like.device(),
                 "sorted_indices", "expected " + str(B) + " indices on " + like.device().str() +
                                       ", got " + shape_str(si->sizes()) + " on " +
                                       si->device().str());
  // Rows 0..N-1: step t, slot j (its place in the sorted batch); then the (T, B) mask of the
  // sorted batch (slot j < batch_sizes[t]). Pinned for a CUDA device, so that the copy does
  // not wait for the stream (a pageable copy synchronises it).
  auto host_opt = at::TensorOptions().dtype(at::kLong);
  if (like.is_cuda()) host_opt = host_opt.pinned_memory(true);
  at::Tensor host = at::empty({2 * N + T * B}, host_opt);
  int64_t* h = host.data_ptr<int64_t>();
  int64_t row = 0;
  for (int64_t t = 0; t < T; ++t) {
    FRNN_REQUIRE(bs[t] >= 1 && bs[t] <= (t ? bs[t - 1] : B) && row + bs[t] <= N, "batch_sizes",
                 "expected positive, non-increasing sizes summing to the data's " + str(N) +
                     " rows, got " + str(bs[t]) + " at step " + str(t));
    for (int64_t j = 0; j < bs[t]; ++j, ++row) {
      h[row] = t;
      h[N + row] = j;
    }
    for (int64_t j = 0; j < B; ++j) h[2 * N + t * B + j] = j < bs[t];
  }
  FRNN_REQUIRE(row == N, "batch_sizes",
               "expected sizes summing to the data's " + str(N) + " rows, got " + str(row));
  const at::Tensor dev = host.to(like.device(), /*non_blocking=*/true);
  const at::Tensor t_idx = dev.narrow(0, 0, N), j_idx = dev.narrow(0, N, N);
  at::Tensor mask = dev.narrow(0, 2 * N, T * B).view({T, B}).to(at::kByte);
  if (!si) return {t_idx, j_idx, mask};
  // mask[t, sorted[j]] = sorted_mask[t, j]; zeros first, so that indices which are no
  // permutation (unchecked on the device) leave zeros, as the reference's mask does.
  return {t_idx, si->index_select(0, j_idx), at::zeros_like(mask).index_copy_(1, *si, mask)};
}

std::map<std::string, int64_t> device_info() {
  int sms = 0, smem = 0, major = 0, minor = 0;
  const int status = frnn::device_summary(&sms, &smem, &major, &minor);
  if (status != frnn::kOk)
    throw std::runtime_error(std::string("fused_rnn CUDA device query: ") +
                             frnn::error_string(status));
  return {{"sms", sms}, {"smem_optin_bytes", smem}, {"cc_major", major}, {"cc_minor", minor},
          {"emulated", kEmulated}};
}

// The cluster plans this build compiled (plans.h), each as (kind, H, code), kind "fwd" or
// "bwd", per H the default first: what `fused-rnn bench --tune` times.
std::vector<std::tuple<std::string, int64_t, int64_t>> cluster_plans() {
  std::vector<std::tuple<std::string, int64_t, int64_t>> plans;
#define FRNN_LIST_FWD(H_, CS_, S_, EX_) plans.emplace_back("fwd", H_, frnn::plan_code(CS_, S_, EX_));
#define FRNN_LIST_BWD(H_, CS_, S_, EX_) plans.emplace_back("bwd", H_, frnn::plan_code(CS_, S_, EX_));
#define FRNN_LIST_MULTI(H_, NC_, CS_, S_, BT_) \
  plans.emplace_back("fwd", H_, frnn::multi_plan_code(NC_, CS_, S_, BT_));
#define FRNN_LIST_MULTI_BWD(H_, NC_, CS_, S_, BT_) \
  plans.emplace_back("bwd", H_, frnn::multi_plan_code(NC_, CS_, S_, BT_));
  FRNN_CLUSTER_PLANS(FRNN_LIST_FWD)
  FRNN_MULTI_PLANS(FRNN_LIST_MULTI)
  FRNN_CLUSTER_BWD_PLANS(FRNN_LIST_BWD)
  FRNN_MULTI_BWD_PLANS(FRNN_LIST_MULTI_BWD)
#undef FRNN_LIST_FWD
#undef FRNN_LIST_BWD
#undef FRNN_LIST_MULTI
#undef FRNN_LIST_MULTI_BWD
  return plans;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fused_rnn CUDA kernels (see csrc/)";
  // ArgumentError is both ValueError and RuntimeError, as fused_rnn.InputError.
  pybind11::register_exception<ArgumentError>(
      m, "ArgumentError", pybind11::make_tuple(pybind11::handle(PyExc_ValueError),
                                               pybind11::handle(PyExc_RuntimeError)));
  m.def("rnn_fwd", &rnn_fwd, "forward of one layer and direction");
  m.def("rnn_bwd", &rnn_bwd, "backward of one layer and direction");
  m.def("layer_fwd", &layer_fwd, "forward of a layer, every direction, input GEMM included");
  m.def("layer_bwd", &layer_bwd, "backward of layer_fwd, weight-gradient GEMMs included");
  m.def("cell_fwd", &cell_fwd, "one cell step without a gradient, input GEMM included");
  m.def("packed_index", &packed_index, "a PackedSequence's row index and step mask");
  m.def("device_info", &device_info, "SMs, shared memory and compute capability");
  m.def("cluster_plans", &cluster_plans, "the cluster plans compiled: (kind, H, code)");
  m.def("rnn_allows_tf32", &rnn_allows_tf32,
        "whether fp32 recurrences take tf32 products now (torch's cuDNN TF32 flag for RNNs)");
  m.attr("emulated") = kEmulated;
#ifdef FRNN_EMULATE
  m.def("launches", &frnn::emulated_launches, "kernels launched so far (emulated device)");
  m.def("set_null_launch", &frnn::set_null_launch,
        "emulated device: count launches without running the kernels (host-overhead benchmark)");
#endif
}
