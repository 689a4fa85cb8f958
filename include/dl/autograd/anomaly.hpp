// Anomaly mode: while on, every recorded operation checks its forward output, and every tape node
// checks the gradients it produces during backward, for NaN and Inf. The first offender stops the
// program with an AnomalyError that names the operation, the phase and the shape:
//
//   anomaly: backward of 'log' produced NaN in gradient of shape (3, 4) for input 0 (...)
//
// Turn it on with dl::autograd::detect_anomaly(true), a detect_anomaly_scope, or the environment
// variable DL_CHECK_NUMERICS=1 (read once, at first use). Off, it costs one relaxed atomic load per
// recorded op. On, it costs one pass over every output and gradient: a debugging tool.
// The checks are called from record_op / record_fused (forward) and FunctionNode / FusedNode /
// CastNode::apply (backward), in autograd/record.hpp, expr/assign.hpp and autograd/engine.hpp.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/expr/expr.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::autograd {

// A NaN or Inf found by anomaly mode (an AutogradError, so a dl::Error).
class AnomalyError : public AutogradError {
 public:
  using AutogradError::AutogradError;
};

namespace detail {

inline bool check_numerics_from_env() {
  const char* v = std::getenv("DL_CHECK_NUMERICS");
  return v && *v && std::strcmp(v, "0") != 0 && std::strcmp(v, "false") != 0;
}
// Global, like PyTorch's: a flag set by the main thread must reach the data-loader threads too.
inline std::atomic<bool>& anomaly_mode() {
  static std::atomic<bool> on{check_numerics_from_env()};
  return on;
}

struct NumericsReport {
  int64_t nan = 0, inf = 0, first = -1;
  bool ok() const { return nan == 0 && inf == 0; }
  std::string kind() const { return nan ? "NaN" : "Inf"; }
  std::string detail(int64_t numel) const {
    return std::to_string(nan) + " NaN, " + std::to_string(inf) + " Inf of " + std::to_string(numel) +
           " elements; first at flat index " + std::to_string(first);
  }
};

template <class T>
NumericsReport scan_numerics(const NDArray<T>& a) {
  NumericsReport r;
  if constexpr (std::is_floating_point_v<T>) {
    if (!a.defined() || a.device().is_cuda()) return r;
    int64_t i = 0;
    for_each_element(a, [&](T* p) {
      if (std::isnan(*p)) ++r.nan;
      else if (std::isinf(*p)) ++r.inf;
      else { ++i; return; }
      if (r.first < 0) r.first = i;
      ++i;
    });
  }
  return r;
}

// Forward check of a recorded op: `out` must be finite. If it is not, say whether the op produced
// the NaN/Inf or an input already held one (data, or an op that was not recorded).
template <class T>
void anomaly_check_forward(const std::string& op, const NDArray<T>& out, const std::vector<NDArray<T>>& inputs) {
  NumericsReport r = scan_numerics(out);
  if (r.ok()) return;
  for (size_t i = 0; i < inputs.size(); ++i) {
    NumericsReport in = scan_numerics(inputs[i]);
    if (!in.ok())
      fail<AnomalyError>("anomaly: forward of '", op, "': input ", i, " of shape ", inputs[i].shape(), " already holds ",
                         in.kind(), " (", in.detail(inputs[i].numel()), "); it came from data or an unrecorded op");
  }
  fail<AnomalyError>("anomaly: forward of '", op, "' produced ", r.kind(), " in output of shape ", out.shape(), " (",
                     r.detail(out.numel()), ")");
}

// Backward check: the gradient a node computed for its input `input`.
template <class T>
void anomaly_check_gradient(const std::string& op, const NDArray<T>& grad, size_t input) {
  NumericsReport r = scan_numerics(grad);
  if (r.ok()) return;
  fail<AnomalyError>("anomaly: backward of '", op, "' produced ", r.kind(), " in gradient of shape ", grad.shape(),
                     " for input ", input, " (", r.detail(grad.numel()), ")");
}

// A readable name for a fused elementwise expression: "log" for log(x), else the formula with
// leaves as x and scalars as c, e.g. "relu(add(mul(x, x), c))".
// Declared first: the overloads call each other and ADL would not find them (the types live in dl).
template <class T> std::string expression_formula(const NDArray<T>&);
template <class T> std::string expression_formula(const ScalarExpr<T>&);
template <class Op, class A> std::string expression_formula(const UnaryExpr<Op, A>& e);
template <class Op, class A, class B> std::string expression_formula(const BinaryExpr<Op, A, B>& e);
template <class Op, class A, class B, class C> std::string expression_formula(const TernaryExpr<Op, A, B, C>& e);
template <class T> std::string expression_formula(const NDArray<T>&) { return "x"; }
template <class T> std::string expression_formula(const ScalarExpr<T>&) { return "c"; }
template <class Op, class A> std::string expression_formula(const UnaryExpr<Op, A>& e) {
  return std::string(Op::name) + "(" + expression_formula(e.a) + ")";
}
template <class Op, class A, class B> std::string expression_formula(const BinaryExpr<Op, A, B>& e) {
  return std::string(Op::name) + "(" + expression_formula(e.a) + ", " + expression_formula(e.b) + ")";
}
template <class Op, class A, class B, class C> std::string expression_formula(const TernaryExpr<Op, A, B, C>& e) {
  return std::string(Op::name) + "(" + expression_formula(e.a) + ", " + expression_formula(e.b) + ", " +
         expression_formula(e.c) + ")";
}
template <class E>
std::string fused_name(const E& e) {
  std::string f = expression_formula(e);
  // One primitive on plain operands reads best as its bare name.
  if (f.find('(') == f.rfind('(') && f.size() > 3 && f.compare(f.size() - 3, 3, "(x)") == 0) return f.substr(0, f.size() - 3);
  return f;
}

}  // namespace detail

inline void detect_anomaly(bool on) { detail::anomaly_mode().store(on, std::memory_order_relaxed); }
inline bool is_anomaly_enabled() { return detail::anomaly_mode().load(std::memory_order_relaxed); }

// Anomaly mode on (or off) while in scope; restores the previous setting.
class detect_anomaly_scope {
 public:
  explicit detect_anomaly_scope(bool on = true) : prev_(is_anomaly_enabled()) { detect_anomaly(on); }
  ~detect_anomaly_scope() { detect_anomaly(prev_); }
  detect_anomaly_scope(const detect_anomaly_scope&) = delete;
  detect_anomaly_scope& operator=(const detect_anomaly_scope&) = delete;

 private:
  bool prev_;
};

}  // namespace dl::autograd
