// Executors of the compiled graph, derived from a symbol expression's type: Exec<E> is the node
// E bound to memory. The tree of Execs is walked in post-order for the forward pass (a
// topological order) and in reverse for the backward pass. Each maximal elementwise region (a
// subtree of UnaryExpr/BinaryExpr/TernaryExpr) is ONE loop forward and ONE loop backward: its
// leaves (inputs, parameters, op outputs) are lowered to NDArray views and the region runs
// through the same executor and rule table as eager code (expr::run_assign / run_backward).
// Op nodes (matmul, conv2d, pooling, batch_norm, cross_entropy) call backend kernels on planned
// buffers; flatten is a view; an op node used twice is computed once (Shared).
//
// Every Exec has the same four passes:
//   plan_forward(ctx)   children first; shapes, buffers, forward step (liveness uses)
//   plan_backward(ctx)  this node's backward step, then the children's (reverse order)
//   bind(ctx)           views into the planned slots
//   forward() / backward()
#pragma once
#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>  // the relu masks' sign bits (EpilogueExec)
#endif

#include "dl/autograd/checkpoint.hpp"  // is_recomputing(): batch norm's running statistics
#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/batch_norm.hpp"
#include "dl/backend/cpu/conv.hpp"
#include "dl/backend/cpu/gemm.hpp"
#include "dl/backend/cpu/pool.hpp"
#include "dl/backend/cpu/reduce.hpp"
#include "dl/backend/cpu/softmax.hpp"
#include "dl/expr/executor.hpp"
#include "dl/expr/leaf_reads.hpp"
#include "dl/graph/let.hpp"
#include "dl/graph/memory_plan.hpp"
#include "dl/graph/sym.hpp"

namespace dl::graph {

// State shared by the planning passes of one plan.
struct PlanContext {
  MemoryPlan memory;
  bool training = false;  // a backward pass is planned
  bool tape = false;      // parameters' gradients go through the eager engine (accumulate)
  int backward_from = INT_MAX;  // the first backward step (set once the forward pass is planned)
  std::set<const void*> grads_seen;  // parameters / inputs that already received a gradient
  std::map<uint64_t, void*> shared;  // op node id -> the Exec that computes it
  std::map<uint64_t, void*> named;   // let / chain value id -> its NamedValue<T>
  // Every parameter's gradient settings when planned: a change (grad_req, attach_grad) re-plans.
  struct ParamState {
    const void* meta;
    bool requires_grad;
    uint8_t req;
    bool (*unchanged)(const void*, bool, uint8_t);
  };
  std::vector<ParamState> params;
  std::vector<std::string> input_shapes;  // for error messages
  // One slice of a batch-parallel training step (graph/compile.hpp's SplitPlan): parameter
  // gradients stay in planned buffers of this plan (slice_grads, in planning order), which the
  // step sums over the slices once every slice's backward has run.
  bool batch_slice = false;
  struct SliceGrad {
    void* grad;  // the ParamGrad<T>
    int temp_id;
    int64_t bytes;
    void (*combine)(void* const* slices, size_t n);  // the same ParamGrad of every slice, in slice order
  };
  std::vector<SliceGrad> slice_grads;
  // Report counters (epilogues: bias adds and activations run inside a GEMM or conv's pass).
  int op_nodes = 0, elementwise_nodes = 0, regions = 0, epilogues = 0, recomputed = 0, views = 0, shared_uses = 0;
};

template <class E> struct Exec;
template <class Node> struct OpExec;  // an op node's kernels; Exec<Node> adds sharing (Shared)

namespace detail {
// Threads a kernel of this plan may use: one inside a parallel chunk (a slice of a batch-parallel
// step), where nested parallel_for runs serially and extra blocks would only cost packing.
inline int plan_threads() { return in_parallel_region() ? 1 : num_threads(); }
// Thrown while planning a slice of a batch-parallel step when shapes show the graph mixes samples
// (caught by the step, which then runs unsplit).
struct NotBatchSeparable {
  const char* why;
};
}  // namespace detail

// ---- parameter gradients ------------------------------------------------------------------------

// Where one use of a parameter sends its gradient: straight into param.grad() when this is the
// first contribution of a step and grad_req is write (no copy, no extra buffer), else into a
// planned buffer that is added to param.grad() (or accumulated through the engine in tape mode).
template <class T>
struct ParamGrad {
  NDArray<T> param;
  bool wanted = false, direct = false, first = false, tape = false;
  int temp_id = -1;
  NDArray<T> temp;

  void init(const NDArray<T>& p, PlanContext& ctx) {
    param = p;
    if constexpr (FloatingPoint<T>) {
      const auto& m = p.grad_meta();
      wanted = ctx.training && p.defined() && m && m->requires_grad && m->req != autograd::GradReq::null;
      if (m)  // the plan is redone when this changes (attach_grad, set_grad_req)
        ctx.params.push_back({m.get(), m->requires_grad, static_cast<uint8_t>(m->req),
                              +[](const void* meta, bool requires_grad, uint8_t req) {
                                const auto* g = static_cast<const autograd::GradMeta<T>*>(meta);
                                return g->requires_grad == requires_grad && static_cast<uint8_t>(g->req) == req;
                              }});
    }
  }
  void plan(PlanContext& ctx, int step) {
    if (!wanted) return;
    tape = ctx.tape;
    first = ctx.grads_seen.insert(param.grad_meta().get()).second;
    const auto& g = param.grad_meta()->grad;
    direct = !tape && !ctx.batch_slice && first && param.grad_meta()->req == autograd::GradReq::write && g.defined() &&
             g.shape() == param.shape() && g.is_contiguous();
    if (!direct) {
      temp_id = ctx.memory.add(param.numel() * static_cast<int64_t>(sizeof(T)));
      ctx.memory.use(temp_id, step);
    }
    in_slice = ctx.batch_slice;
    if (in_slice)
      ctx.slice_grads.push_back({this, temp_id, param.numel() * static_cast<int64_t>(sizeof(T)), &ParamGrad::combine});
  }
  bool in_slice = false;
  // A batch-parallel step: param.grad() from this use's gradient in every slice, as finish()
  // would from one unsplit buffer (written or added following grad_req), summed in slice order.
  static void combine(void* const* slices, size_t n) {
    if constexpr (FloatingPoint<T>) {
      auto temp = [&](size_t k) { return static_cast<const ParamGrad*>(slices[k])->temp; };
      const auto& p = *static_cast<const ParamGrad*>(slices[0]);
      NDArray<T> g = p.param.grad_meta()->grad.detach();
      using Sum = BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>;
      size_t k = 0;  // slices summed into g so far, two per pass
      if (p.first && p.param.grad_meta()->req == autograd::GradReq::write) {
        if (n >= 2) expr::run_assign(g, Sum{{}, temp(0), temp(1)});
        else expr::run_assign(g, temp(0));
        k = std::min<size_t>(n, 2);
      }
      for (; k + 1 < n; k += 2)
        expr::run_assign(g, BinaryExpr<prim::Add, NDArray<T>, Sum>{{}, g, Sum{{}, temp(k), temp(k + 1)}});
      if (k < n) expr::run_assign(g, Sum{{}, g, temp(k)});
    }
  }
  void bind(const PlanContext& ctx) {
    if (wanted && !direct) temp = ctx.memory.template view<T>(temp_id, param.shape());
  }
  // The buffer the gradient is written to (overwritten, not accumulated).
  NDArray<T> target() const { return direct ? param.grad_meta()->grad : temp; }
  void finish() {
    if (!wanted || direct || in_slice) return;  // a slice's gradient is combined by the step
    if constexpr (FloatingPoint<T>) {
      if (tape) { autograd::accumulate(param.grad_meta(), temp); return; }
      NDArray<T> g = param.grad_meta()->grad.detach();
      if (first && param.grad_meta()->req == autograd::GradReq::write) expr::run_assign(g, temp);
      else expr::run_assign(g, BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>{{}, g, temp});
    }
  }
};

// ---- leaves -------------------------------------------------------------------------------------

// A parameter or constant array inside an elementwise region.
template <class T>
struct Exec<NDArray<T>> {
  NDArray<T> value;
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;  // never planned here: the gradient buffer is the ParamGrad's
  NDArray<T> grad;
  ParamGrad<T> pg;

  explicit Exec(const NDArray<T>& a) : value(a) {}
  void plan_forward(PlanContext& ctx) {
    value.require_defined("compile");
    shape = value.shape();
    pg.init(value, ctx);
    needs_grad = pg.wanted;
  }
  int grad_step = -1;  // the step of the region backward that writes this gradient
  void plan_backward(PlanContext& ctx) {
    // Written by the region's backward, added into param.grad() at this leaf's own step.
    pg.plan(ctx, ctx.memory.next_step());
    ctx.memory.use(pg.temp_id, grad_step);
  }
  void bind(PlanContext& ctx) {
    pg.bind(ctx);
    if (needs_grad) grad = pg.target();
  }
  template <class F> void for_each_input(F&&) {}
  void forward() {}
  void backward() { pg.finish(); }
  int value_id() const { return -1; }
};

// Input number I: the array passed to the compiled function at this position.
template <class T, int R, int I>
struct Exec<Input<T, R, I>> {
  static constexpr int index = I;
  using value_type = T;
  NDArray<T> value;
  Shape shape;
  bool needs_grad = false, first = false;
  int grad_id = -1;
  NDArray<T> grad;
  NDArray<T>* accumulator = nullptr;  // the plan's gradient for this input (tape mode)

  explicit Exec(const Input<T, R, I>&) {}
  void plan_forward(PlanContext& ctx) {
    shape = value.shape();
    if constexpr (FloatingPoint<T>) needs_grad = ctx.tape && value.tracks_grad();
    if (needs_grad) grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    ctx.memory.use(grad_id, step);
    first = ctx.grads_seen.insert(reinterpret_cast<const void*>(static_cast<intptr_t>(I + 1))).second;
  }
  void bind(PlanContext& ctx) {
    if (needs_grad) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { f(*this); }
  void forward() {}
  void backward() {
    if (!needs_grad || !accumulator) return;
    NDArray<T> acc = accumulator->detach();
    if (first) expr::run_assign(acc, grad);
    else expr::run_assign(acc, BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>{{}, acc, grad});
  }
  int value_id() const { return -1; }
};

// ---- elementwise regions ------------------------------------------------------------------------

// Activation epilogues (see EpilogueExec below): the primitives whose derivative the epilogue
// takes from its saved output, and the op nodes that run one.
template <class Op> struct derivative_from_output : std::false_type {};
template <> struct derivative_from_output<prim::Relu> : std::true_type {};
template <> struct derivative_from_output<prim::Tanh> : std::true_type {};
template <> struct derivative_from_output<prim::Sigmoid> : std::true_type {};
template <> struct derivative_from_output<prim::Exp> : std::true_type {};

template <class E> struct has_gemm_epilogue : std::false_type {};
template <class A> struct has_gemm_epilogue<MatmulNode<A>> : std::true_type {};
template <class A> struct has_gemm_epilogue<Conv2dNode<A>> : std::true_type {};

// relu(matmul(...)) inside a larger region, as in x + s * relu(x W^T), is a leaf of that region:
// it runs as the GEMM's epilogue, which keeps one bit per element for backward (y > 0) instead of
// the GEMM output the region's backward would otherwise read (Gist's 1-bit "binarize" encoding of
// relu outputs, Jain et al. 2018). Only for derivatives that read the sign alone: for tanh and the
// like the epilogue would keep a full value, so they stay inside the region.
template <class Op, class A>
inline constexpr bool is_epilogue_leaf =
    prim::derivative_from_sign<Op>::value && derivative_from_output<Op>::value && has_gemm_epilogue<A>::value;

}  // namespace dl::graph
namespace dl {
// Regions count, read and replace an epilogue leaf as one leaf (expr/leaf_reads.hpp).
template <class Op, class A>
  requires graph::is_epilogue_leaf<Op, A>
struct unary_is_leaf<Op, A> : std::true_type {};
}  // namespace dl
namespace dl::graph {

// The non-scalar leaves of a region, left to right (the order expr::for_each_leaf follows).
template <class E> struct region_leaves { using type = std::tuple<E>; };
template <class T> struct region_leaves<ScalarExpr<T>> { using type = std::tuple<>; };
template <class Op, class A>
struct region_leaves<UnaryExpr<Op, A>>
    : std::conditional_t<is_epilogue_leaf<Op, A>, std::type_identity<std::tuple<UnaryExpr<Op, A>>>, region_leaves<A>> {};
template <class Op, class A, class B>
struct region_leaves<BinaryExpr<Op, A, B>> {
  using type = decltype(std::tuple_cat(std::declval<typename region_leaves<A>::type>(),
                                       std::declval<typename region_leaves<B>::type>()));
};
template <class Op, class A, class B, class C>
struct region_leaves<TernaryExpr<Op, A, B, C>> {
  using type = decltype(std::tuple_cat(std::declval<typename region_leaves<A>::type>(),
                                       std::declval<typename region_leaves<B>::type>(),
                                       std::declval<typename region_leaves<C>::type>()));
};
template <class E> inline constexpr size_t region_leaf_count = std::tuple_size_v<typename region_leaves<E>::type>;

template <class E> struct primitive_count : std::integral_constant<int, 0> {};
template <class Op, class A>
struct primitive_count<UnaryExpr<Op, A>>
    : std::integral_constant<int, is_epilogue_leaf<Op, A> ? 0 : 1 + primitive_count<A>::value> {};
template <class Op, class A, class B>
struct primitive_count<BinaryExpr<Op, A, B>>
    : std::integral_constant<int, 1 + primitive_count<A>::value + primitive_count<B>::value> {};
template <class Op, class A, class B, class C>
struct primitive_count<TernaryExpr<Op, A, B, C>>
    : std::integral_constant<int, 1 + primitive_count<A>::value + primitive_count<B>::value + primitive_count<C>::value> {};

namespace detail {
// (Declared first: the overloads call each other.)
template <class E> auto leaf_nodes(const E& e);
template <class T> auto leaf_nodes(const ScalarExpr<T>&);
template <class Op, class A> auto leaf_nodes(const UnaryExpr<Op, A>& e);
template <class Op, class A, class B> auto leaf_nodes(const BinaryExpr<Op, A, B>& e);
template <class Op, class A, class B, class C> auto leaf_nodes(const TernaryExpr<Op, A, B, C>& e);

template <class E> auto leaf_nodes(const E& e) { return std::tuple<E>{e}; }
template <class T> auto leaf_nodes(const ScalarExpr<T>&) { return std::tuple<>{}; }
template <class Op, class A> auto leaf_nodes(const UnaryExpr<Op, A>& e) {
  if constexpr (is_epilogue_leaf<Op, A>) return std::tuple<UnaryExpr<Op, A>>{e};
  else return leaf_nodes(e.a);
}
template <class Op, class A, class B> auto leaf_nodes(const BinaryExpr<Op, A, B>& e) {
  return std::tuple_cat(leaf_nodes(e.a), leaf_nodes(e.b));
}
template <class Op, class A, class B, class C> auto leaf_nodes(const TernaryExpr<Op, A, B, C>& e) {
  return std::tuple_cat(leaf_nodes(e.a), leaf_nodes(e.b), leaf_nodes(e.c));
}

template <class Tuple> struct exec_tuple;
template <class... Ls> struct exec_tuple<std::tuple<Ls...>> {
  using type = std::tuple<Exec<Ls>...>;
  static type make(const std::tuple<Ls...>& nodes) {
    return std::apply([](const auto&... n) { return type{Exec<Ls>(n)...}; }, nodes);
  }
};

template <class Tuple, class F> void for_each_in(Tuple& t, F&& f) { std::apply([&](auto&... x) { (f(x), ...); }, t); }
template <class Tuple, class F, size_t... I>
void for_each_in_reverse_impl(Tuple& t, F& f, std::index_sequence<I...>) {
  constexpr size_t n = sizeof...(I);
  (f(std::get<n - 1 - I>(t)), ...);
}
template <class Tuple, class F> void for_each_in_reverse(Tuple& t, F&& f) {
  for_each_in_reverse_impl(t, f, std::make_index_sequence<std::tuple_size_v<Tuple>>{});
}

inline std::array<bool, kMaxRank> reduce_mask(const Shape& full, const Shape& small) {
  std::array<bool, kMaxRank> mask{};
  int lead = full.rank() - small.rank();
  for (int d = 0; d < full.rank(); ++d) {
    int j = d - lead;
    mask[static_cast<size_t>(d)] = j < 0 || (small[j] == 1 && full[d] != 1);
  }
  return mask;
}
}  // namespace detail

template <class E>
struct RegionExec {
  using T = typename E::value_type;
  using Nodes = typename region_leaves<E>::type;
  using Execs = typename detail::exec_tuple<Nodes>::type;
  static constexpr size_t kLeaves = region_leaf_count<E>;
  // Leaves whose values the backward loop reads. The others (x in x + s * relu(m)) are live only
  // until the forward step (their memory goes to other buffers, or back after forward with
  // per-call memory); the backward loop reads a stand-in of theirs (the region's output gradient)
  // whose values no rule uses, so it never touches their memory.
  static constexpr std::array<bool, kLeaves> kValueRead = expr::leaf_values_read<E>();

  E node;
  Execs leaves;
  Shape shape;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;
  std::array<int, kLeaves> temp_id{};
  std::array<NDArray<T>, kLeaves> temp;  // full-shape gradients of broadcast leaves

  explicit RegionExec(const E& e) : node(e), leaves(detail::exec_tuple<Nodes>::make(detail::leaf_nodes(e))) {
    temp_id.fill(-1);
  }

  void plan_forward(PlanContext& ctx) {
    detail::for_each_in(leaves, [&](auto& l) { l.plan_forward(ctx); });
    if (ctx.batch_slice) check_slice();
    shape = Shape{};
    bool first = true;
    detail::for_each_in(leaves, [&](auto& l) {
      shape = first ? l.shape : broadcast_shapes(shape, l.shape, "compile: elementwise");
      first = false;
      needs_grad = needs_grad || l.needs_grad;
    });
    ctx.elementwise_nodes += primitive_count<E>::value;
    ++ctx.regions;
    value_id_ = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    detail::for_each_in(leaves, [&](auto& l) { ctx.memory.use(l.value_id(), step); });
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
      ctx.recomputed += primitive_count<E>::value;
      // In place: the first full-shape leaf gradient overwrites the output gradient element by
      // element (the backward loop reads gout[i] before it writes the leaves' [i]).
      bool aliased = false;
      size_t i = 0;
      detail::for_each_in(leaves, [&](auto& l) {
        temp_id[i] = -1;
        if (l.needs_grad && l.shape != shape) temp_id[i] = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
        else if (l.needs_grad && !aliased && l.grad_id >= 0) {
          ctx.memory.alias(l.grad_id, grad_id);
          aliased = true;
        }
        ++i;
      });
    }
  }
  // A slice keeps the batch on axis 0 only if every per-sample leaf spans the region's rank and no
  // parameter leaf has a batch-sized axis 0 (x (N, C) + p (C) is per-sample; x (N) + p (C, 1) is not).
  void check_slice() const {
    int rank = 0;
    bool sliced = false;
    detail::for_each_in(leaves, [&](const auto& l) { rank = std::max(rank, l.shape.rank()); });
    detail::for_each_in(leaves, [&](const auto& l) {
      const bool param = requires { l.pg; };
      sliced = sliced || !param;
      if (param ? l.shape.rank() == rank && rank > 0 && l.shape[0] != 1 : l.shape.rank() != rank)
        throw detail::NotBatchSeparable{"an elementwise operand is not aligned with the batch axis"};
    });
    if (!sliced) throw detail::NotBatchSeparable{"an elementwise region reads only parameters"};
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    ctx.memory.use(grad_id, step);
    size_t i = 0;
    detail::for_each_in(leaves, [&](auto& l) {
      if (kValueRead[i] || l.shape != shape) ctx.memory.use(l.value_id(), step);  // recomputed in registers
      ctx.memory.use(temp_id[i], step);
      if (l.needs_grad) ctx.memory.use(l.grad_id, step);
      if constexpr (requires { l.grad_step; }) l.grad_step = step;
      ++i;
    });
    detail::for_each_in_reverse(leaves, [&](auto& l) { if (l.needs_grad) l.plan_backward(ctx); });
  }
  void bind(PlanContext& ctx) {
    detail::for_each_in(leaves, [&](auto& l) { l.bind(ctx); });
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
    for (size_t i = 0; i < kLeaves; ++i)
      if (grad_id >= 0 && temp_id[i] >= 0) temp[i] = ctx.memory.template view<T>(temp_id[i], shape);
  }
  template <class F> void for_each_input(F&& f) { detail::for_each_in(leaves, [&](auto& l) { l.for_each_input(f); }); }
  void forward() {
    detail::for_each_in(leaves, [&](auto& l) { l.forward(); });
    auto values = [&](auto i, const auto&) { return std::get<i.value>(leaves).value; };
    expr::run_assign(value, expr::replace_leaves(node, values));
  }
  void backward() {
    std::array<T*, kLeaves> ptrs{};
    size_t i = 0;
    detail::for_each_in(leaves, [&](auto& l) {
      if (l.needs_grad) ptrs[i] = temp_id[i] >= 0 ? temp[i].data() : (l.grad.numel() ? l.grad.data() : nullptr);
      ++i;
    });
    // A broadcast leaf keeps its own array even when unread (a stand-in of the output's shape
    // would be read at other positions than it is written, from other threads).
    auto values = [&](auto k, const auto&) -> NDArray<T> {
      const auto& l = std::get<k.value>(leaves);
      return kValueRead[k.value] || l.shape != shape ? l.value : grad;
    };
    expr::run_backward(expr::replace_leaves(node, values), shape, grad, ptrs);
    i = 0;
    detail::for_each_in(leaves, [&](auto& l) {
      if (l.needs_grad && temp_id[i] >= 0 && l.grad.numel())
        cpu::sum_reduce(temp[i].data(), shape, contiguous_strides(shape), detail::reduce_mask(shape, l.shape),
                        l.grad.data());
      ++i;
    });
    detail::for_each_in_reverse(leaves, [&](auto& l) { if (l.needs_grad) l.backward(); });
  }
  int value_id() const { return value_id_; }
};

template <class Op, class A> struct Exec<UnaryExpr<Op, A>> : RegionExec<UnaryExpr<Op, A>> {
  using RegionExec<UnaryExpr<Op, A>>::RegionExec;
};
template <class Op, class A, class B> struct Exec<BinaryExpr<Op, A, B>> : RegionExec<BinaryExpr<Op, A, B>> {
  using RegionExec<BinaryExpr<Op, A, B>>::RegionExec;
};
template <class Op, class A, class B, class C>
struct Exec<TernaryExpr<Op, A, B, C>> : RegionExec<TernaryExpr<Op, A, B, C>> {
  using RegionExec<TernaryExpr<Op, A, B, C>>::RegionExec;
};

// ---- activation epilogues -----------------------------------------------------------------------

// An activation applied straight to a GEMM or conv output, relu(conv2d(x, w, b)), runs as that
// op's epilogue: forward in the GEMM's own blocks while they are in cache (matmul; conv: in the
// pass right after the kernel), backward as one tight loop that takes the derivative from the
// saved output instead of recomputing the activation. The rule table's d(x, y) is used as
// d(y, y), which is exact for these primitives: relu's x > 0 iff y > 0; tanh, sigmoid and exp
// read only y.
// (derivative_from_output, has_gemm_epilogue: with the elementwise regions above.)

namespace detail {
// y[i] = f(x[i]) over [begin, end): vectorisable (x and y never overlap).
template <class Op, class T>
void activation_forward(const Op& f, const T* __restrict x, T* __restrict y, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
}
// gx[i] = g[i] * f'(y[i]); gx may be g itself (in place, element by element).
template <class Op, class T>
void activation_backward(const Op& f, const T* __restrict y, const T* g, T* gx, int64_t n) {
  parallel_for(0, n, expr::kElementwiseGrain, [=](int64_t b, int64_t e) {
#pragma GCC ivdep
    for (int64_t i = b; i < e; ++i) gx[i] = g[i] * f.d(y[i], y[i]);
  });
}
// Sign bits of one row segment y[c0, c1) (c0 a multiple of 8): bit j % 8 of byte j / 8 of the row
// is y[j] > 0. A GEMM block's columns start at a multiple of 16 (GemmCall::block's units), so two
// blocks never write one byte.
template <class T>
void sign_bits(const T* y, int64_t c0, int64_t c1, uint8_t* row) {
  int64_t c = c0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {  // 16 compares -> 16 bits, two bytes
    for (; c + 16 <= c1; c += 16) {
      const auto bits = static_cast<uint16_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(y + c), _mm512_setzero_ps(), _CMP_GT_OQ));
      std::memcpy(row + c / 8, &bits, 2);
    }
  }
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    for (; c + 8 <= c1; c += 8)
      row[c / 8] = static_cast<uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + c), _mm256_setzero_ps(), _CMP_GT_OQ)));
  }
#endif
  for (; c < c1; c += 8) {
    const int64_t e = std::min(c + 8, c1);
    unsigned bits = 0;
    for (int64_t j = c; j < e; ++j) bits |= static_cast<unsigned>(y[j] > T(0)) << (j - c);
    row[c / 8] = static_cast<uint8_t>(bits);
  }
}
// gx = g * (bit ? d1 : d0) over the row segment [c0, c1) (c0 a multiple of 8); gx may be g
// itself (in place, element by element).
template <class T>
void sign_backward(const uint8_t* row, T d1, T d0, const T* g, T* gx, int64_t c0, int64_t c1) {
  int64_t c = c0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 one = _mm512_set1_ps(d1), zero = _mm512_set1_ps(d0);
    for (; c + 16 <= c1; c += 16) {
      uint16_t bits;
      std::memcpy(&bits, row + c / 8, 2);
      _mm512_storeu_ps(gx + c, _mm512_mul_ps(_mm512_loadu_ps(g + c), _mm512_mask_blend_ps(bits, zero, one)));
    }
  }
#endif
  for (; c < c1; ++c) gx[c] = g[c] * (((row[c >> 3] >> (c & 7)) & 1u) ? d1 : d0);
}
// fn(r, c0, c1) over the rows x cols elements in 16-column words (a mask byte pair each), split
// across the threads by words: short rows (a conv's last axis) still give long contiguous runs.
template <class F>
void for_each_mask_segment(int64_t rows, int64_t cols, F&& fn) {
  const int64_t per_row = (cols + 15) / 16;
  parallel_for(0, rows * per_row, std::max<int64_t>(1, expr::kElementwiseGrain / 16), [&](int64_t w0, int64_t w1) {
    while (w0 < w1) {
      const int64_t r = w0 / per_row, first = w0 % per_row, last = std::min(per_row, first + (w1 - w0));
      fn(r, first * 16, std::min(cols, last * 16));
      w0 += last - first;
    }
  });
}
}  // namespace detail

// When the primitive's derivative reads only the sign (relu: prim::derivative_from_sign) and no
// other node reads the output after forward, the epilogue keeps one bit per element for backward
// (`mask`, 1/32 of a float output) and the output's memory is free after its last forward reader:
// x + s * relu(x W^T) keeps the block output and the mask, not the relu (or GEMM) output.
template <class Op, class A>
struct EpilogueExec {
  using T = typename A::value_type;
  Op f;
  Exec<A> op;
  Shape shape;
  bool needs_grad = false;
  bool in_blocks = false;  // the op calls apply_block from its GEMM blocks
  bool use_mask = false;   // backward reads the sign bits, not the output
  int value_id_ = -1, grad_id = -1, mask_id = -1;
  int op_step = -1, step = -1;  // the op's forward step and this one's
  int64_t cols = 0, rows = 0, row_bytes = 0;  // the mask: rows (a GEMM's M, else 1) of row_bytes bytes
  NDArray<T> value, grad;
  NDArray<uint8_t> mask;

  explicit EpilogueExec(const UnaryExpr<Op, A>& e) : f(e.op), op(e.a) {}
  void plan_forward(PlanContext& ctx) {
    op.plan_forward(ctx);
    // A matmul writes this value from inside its own (the last planned) step: live from there, or
    // the planner could hand the op's input memory to it (an inference plan would, and the GEMM
    // blocks would write over the input the other blocks still read).
    op_step = std::max(ctx.memory.steps() - 1, 0);
    shape = op.shape;
    needs_grad = op.needs_grad;
    ctx.elementwise_nodes += 1;
    ++ctx.regions;
    ++ctx.epilogues;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    ctx.memory.use(value_id_, op_step);
    step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    ctx.memory.use(op.value_id(), step);
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(bytes);
      ctx.memory.alias(op.grad_id, grad_id);  // the op's output gradient overwrites this one in place
    }
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    // Every node that reads the output in backward reads it from this node (downstream): their
    // backward steps are planned by now.
    if constexpr (prim::derivative_from_sign<Op>::value) {
      if (shape.rank() >= 1 && ctx.memory.last_use(value_id_) < ctx.backward_from) {
        use_mask = true;
        // A GEMM writes it in (row, column) blocks: rows of its (M, N) output, each row's bits from
        // a byte boundary; else one row of every element.
        constexpr bool blocks = requires { op.impl.set_epilogue(&EpilogueExec::apply_block, this); };
        cols = blocks ? shape[shape.rank() - 1] : shape.numel();
        rows = cols > 0 ? shape.numel() / cols : 0;
        row_bytes = (cols + 7) / 8;
        mask_id = ctx.memory.add(rows * row_bytes);
        ctx.memory.use(mask_id, op_step);  // written from the GEMM's blocks
        ctx.memory.use(mask_id, step);
      }
    }
    int bstep = ctx.memory.next_step();
    for (int id : std::array<int, 3>{grad_id, use_mask ? mask_id : value_id_, op.grad_id}) ctx.memory.use(id, bstep);
    op.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    op.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
    if (use_mask) mask = ctx.memory.template view<uint8_t>(mask_id, Shape{rows * row_bytes});
    // The computing occurrence of a matmul runs the activation inside its blocks (a later use of a
    // shared node only reads the value: it runs the pass itself).
    if constexpr (requires { op.impl.set_epilogue(&EpilogueExec::apply_block, this); })
      if (!op.original) in_blocks = op.impl.set_epilogue(&EpilogueExec::apply_block, this);
  }
  // value[rows, cols] = f(out[rows, cols]) for a block of the op's (M, N) output with leading dimension ld.
  static void apply_block(void* self, const T* out, int64_t ld, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    auto* e = static_cast<EpilogueExec*>(self);
    T* y = e->value.data();
    for (int64_t r = r0; r < r1; ++r) {
      detail::activation_forward(e->f, out + r * ld, y + r * ld, c0, c1);
      if (e->use_mask) detail::sign_bits(y + r * ld, c0, c1, e->mask.data() + r * e->row_bytes);
    }
  }
  template <class F> void for_each_input(F&& fn) { op.for_each_input(fn); }
  void forward() {
    op.forward();
    if (in_blocks) return;
    check<ValueError>(op.value.is_contiguous(), "compile: an activation epilogue needs a contiguous op output");
    const T* x = op.value.data();
    T* y = value.data();
    if (use_mask) {  // whole 16-column words per chunk: a mask byte is written by one thread
      detail::for_each_mask_segment(rows, cols, [&](int64_t r, int64_t c0, int64_t c1) {
        detail::activation_forward(f, x + r * cols, y + r * cols, c0, c1);
        detail::sign_bits(y + r * cols, c0, c1, mask.data() + r * row_bytes);
      });
      return;
    }
    parallel_for(0, value.numel(), expr::kElementwiseGrain,
                 [&](int64_t b, int64_t e) { detail::activation_forward(f, x, y, b, e); });
  }
  void backward() {
    if (op.needs_grad && op.grad.numel() > 0) {
      if (use_mask) {  // the rule table's d(x, y), taken at a positive and a non-positive point
        const T d1 = f.d(T(1), T(1)), d0 = f.d(T(0), T(0));
        const T* g = grad.data();
        T* gx = op.grad.data();
        detail::for_each_mask_segment(rows, cols, [&](int64_t r, int64_t c0, int64_t c1) {
          detail::sign_backward(mask.data() + r * row_bytes, d1, d0, g + r * cols, gx + r * cols, c0, c1);
        });
      } else {
        detail::activation_backward(f, value.data(), grad.data(), op.grad.data(), value.numel());
      }
    }
    op.backward();
  }
  int value_id() const { return value_id_; }
};

template <class Op, class A>
  requires(derivative_from_output<Op>::value && has_gemm_epilogue<A>::value)
struct Exec<UnaryExpr<Op, A>> : EpilogueExec<Op, A> {
  using EpilogueExec<Op, A>::EpilogueExec;
};

// ---- op nodes with one operand and up to two parameters -----------------------------------------

// What matmul, conv2d and batch_norm share: one operand, one planned output buffer (and its
// gradient), and two parameters whose gradients go through ParamGrad (weight and bias; gamma and
// beta for batch_norm). A derived OpExec sets `shape` in plan_forward, then calls plan_output.
template <class Node, class A>
struct ParamOpExec {
  using T = typename A::value_type;
  Node node;
  Exec<A> a;
  Shape shape;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;
  ParamGrad<T> wg, bg;

  explicit ParamOpExec(const Node& n) : node(n), a(n.a) {}
  // The parameters' gradients, the output buffer and the forward step (after `shape` is known);
  // an undefined parameter (no bias, no gamma) wants no gradient.
  void plan_output(PlanContext& ctx, const NDArray<T>& weight, const NDArray<T>& bias) {
    ++ctx.op_nodes;
    if (weight.defined()) wg.init(weight, ctx);
    if (bias.defined()) bg.init(bias, ctx);
    needs_grad = a.needs_grad || wg.wanted || bg.wanted;
    value_id_ = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    ctx.memory.use(a.value_id(), step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : std::array<int, 3>{grad_id, a.value_id(), a.needs_grad ? a.grad_id : -1}) ctx.memory.use(id, step);
    wg.plan(ctx, step);
    bg.plan(ctx, step);
    if (a.needs_grad) a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
    wg.bind(ctx);
    bg.bind(ctx);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  // The parameters' gradients are complete: hand them over, then the operand's backward.
  void finish_backward() {
    wg.finish();
    bg.finish();
    if (a.needs_grad) a.backward();
  }
  int value_id() const { return value_id_; }
};

// ---- GEMM blocks and tasks ------------------------------------------------------------------------

namespace detail {
// One product C (rows x cols, leading dimension ldc) = A B (+ C when accumulating), run as
// blocks of C on one thread each: columns in whole SIMD units when C is wide enough, else rows.
template <class T>
struct GemmCall {
  cpu::MatrixView<T> a{}, b{};
  T* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;

  struct Block { int64_t r0, r1, c0, c1; };
  double flops() const { return 2.0 * static_cast<double>(a.rows) * static_cast<double>(a.cols) * static_cast<double>(b.cols); }
  Block block(int64_t i, int64_t n) const {
    constexpr int64_t kUnit = 16;
    const int64_t M = a.rows, N = b.cols;
    if (N >= n * kUnit) {
      const int64_t units = (N + kUnit - 1) / kUnit;
      return {0, M, std::min(N, units * i / n * kUnit), std::min(N, units * (i + 1) / n * kUnit)};
    }
    return {M * i / n, M * (i + 1) / n, 0, N};
  }
  void run(const Block& k) const {
    if (k.r0 >= k.r1 || k.c0 >= k.c1) return;
    cpu::MatrixView<T> ai{a.data + k.r0 * a.row_stride, k.r1 - k.r0, a.cols, a.row_stride, a.col_stride};
    cpu::MatrixView<T> bj{b.data + k.c0 * b.col_stride, b.rows, k.c1 - k.c0, b.row_stride, b.col_stride};
    cpu::gemm_serial(ai, bj, c + k.r0 * ldc + k.c0, ldc, accumulate);
  }
};

// Blocks for `flops` of GEMM work: none below ~2 MFLOP (handing work to another thread costs
// more than it saves), else one per thread, up to four per thread for large products (a late
// thread then holds up only a small piece). One block per thread instead of cpu::gemm's fixed
// 16-column units matters at small batches: each block packs its own copy of the left operand
// (32 x 784 for the MLP's first layer), so 8 blocks on 2 threads packed it 8 times.
inline int64_t gemm_blocks(double flops, int threads) {
  if (threads <= 1 || flops < 2e6) return 1;
  return threads * std::clamp<int64_t>(static_cast<int64_t>(flops / 16e6), 1, 4);
}

// Independent GEMMs (a layer's input gradient and weight gradient) and an optional extra task (the
// bias gradient) as ONE set of tasks on the thread pool: each GEMM gets blocks in proportion to
// its work, so two small products run side by side, one per thread, instead of each being split
// across the threads in turn (MXNet's dependency engine schedules backward this way).
template <class T, size_t N, class Extra>
void run_gemm_tasks(const std::array<GemmCall<T>, N>& calls, size_t count, Extra&& extra, bool has_extra) {
  double total = 0;
  for (size_t k = 0; k < count; ++k) total += calls[k].flops();
  const int64_t blocks = gemm_blocks(total, plan_threads());
  std::array<int64_t, N> per{};
  int64_t tasks = has_extra ? 1 : 0;
  for (size_t k = 0; k < count; ++k) {
    per[k] = blocks == 1 ? 1 : std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(blocks) * calls[k].flops() / total + 0.5));
    tasks += per[k];
  }
  auto task = [&](int64_t t) {
    for (size_t k = 0; k < count; ++k) {
      if (t < per[k]) return calls[k].run(calls[k].block(t, per[k]));
      t -= per[k];
    }
    extra();
  };
  if (blocks == 1) {
    for (int64_t t = 0; t < tasks; ++t) task(t);
    return;
  }
  parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) task(t);
  });
}
}  // namespace detail

// ---- matmul (+ bias and activation epilogues) -------------------------------------------------------

template <class A>
struct OpExec<MatmulNode<A>> : ParamOpExec<MatmulNode<A>, A> {
  using Base = ParamOpExec<MatmulNode<A>, A>;
  using typename Base::T;
  using Base::node, Base::a, Base::shape, Base::value, Base::grad, Base::wg, Base::bg;
  int64_t M = 0, K = 0, N = 0;

  explicit OpExec(const MatmulNode<A>& n) : Base(n) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const char* op = node.transposed ? "dense" : "matmul";
    node.weight.require_defined(op);
    const Shape& sa = a.shape;
    const Shape& sw = node.weight.shape();
    check<ShapeError>(sa.rank() == 2 && sw.rank() == 2, op, ": compiled ", op, " needs a rank-2 input and weight, got ",
                      sa, " and ", sw);
    M = sa[0];
    K = sa[1];
    N = node.transposed ? sw[0] : sw[1];
    int64_t kw = node.transposed ? sw[1] : sw[0];
    check<ShapeError>(K == kw, op, ": input of shape ", sa, " does not match weight of shape ", sw,
                      node.transposed ? " (in_features " : " (rows ", kw, ")");
    if (node.bias.defined())
      check<ShapeError>(node.bias.shape() == Shape{N}, op, ": bias of shape ", node.bias.shape(), " must be (", N, ")");
    shape = Shape{M, N};
    if (node.bias.defined()) ++ctx.epilogues;
    this->plan_output(ctx, node.weight, node.bias);
  }
  cpu::MatrixView<T> w_view() const {  // W as (K, N)
    const NDArray<T>& w = node.weight;
    return node.transposed ? cpu::MatrixView<T>{w.data(), K, N, w.strides()[1], w.strides()[0]}
                           : cpu::MatrixView<T>{w.data(), K, N, w.strides()[0], w.strides()[1]};
  }
  cpu::MatrixView<T> a_view() const {
    const NDArray<T>& x = a.value;
    return {x.data(), M, K, x.strides()[0], x.strides()[1]};
  }
  // An activation epilogue (EpilogueExec) asks to run inside the GEMM's blocks.
  using BlockEpilogue = void (*)(void*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t);
  BlockEpilogue epilogue = nullptr;
  void* epilogue_self = nullptr;
  bool set_epilogue(BlockEpilogue fn, void* self) {
    epilogue = fn;
    epilogue_self = self;
    return true;
  }
  void forward() {
    a.forward();
    if (value.numel() == 0) return;
    T* out = value.data();
    const bool bias = node.bias.defined();
    const T* bp = bias ? node.bias.data() : nullptr;
    const int64_t bs = bias ? node.bias.strides()[0] : 0;
    const detail::GemmCall<T> call{a_view(), w_view(), out, N, bias};
    // Each block: the bias (the GEMM accumulates onto it), the product, then the activation
    // epilogue while the block is still in cache.
    auto block = [&](int64_t i, int64_t n) {
      const auto k = call.block(i, n);
      if (k.r0 >= k.r1 || k.c0 >= k.c1) return;
      if (bias)
        for (int64_t r = k.r0; r < k.r1; ++r)
          for (int64_t j = k.c0; j < k.c1; ++j) out[r * N + j] = bp[j * bs];
      call.run(k);
      if (epilogue) epilogue(epilogue_self, out, N, k.r0, k.r1, k.c0, k.c1);
    };
    const int64_t n = detail::gemm_blocks(call.flops(), detail::plan_threads());
    if (n == 1) return block(0, 1);
    parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) block(i, n);
    });
  }
  void backward() {
    if (value.numel() > 0) {
      const T* g = grad.data();
      std::array<detail::GemmCall<T>, 2> calls{};
      size_t count = 0;
      if (a.needs_grad && a.grad.numel()) {  // da (M, K) = g (M, N) x W^T (N, K)
        cpu::MatrixView<T> wv = w_view();
        calls[count++] = {{g, M, N, N, 1}, {wv.data, N, K, wv.col_stride, wv.row_stride}, a.grad.data(), K, false};
      }
      if (wg.wanted) {
        T* dw = wg.target().data();
        cpu::MatrixView<T> av = a_view();
        if (node.transposed)  // dW (N, K) = g^T (N, M) x a (M, K)
          calls[count++] = {{g, N, M, 1, N}, av, dw, K, false};
        else  // dW (K, N) = a^T (K, M) x g (M, N)
          calls[count++] = {{av.data, K, M, av.col_stride, av.row_stride}, {g, M, N, N, 1}, dw, N, false};
      }
      auto bias_grad = [&] {  // db = column sums of g
        std::array<bool, kMaxRank> mask{};
        mask[0] = true;
        cpu::sum_reduce(g, shape, contiguous_strides(shape), mask, bg.target().data());
      };
      detail::run_gemm_tasks(calls, count, bias_grad, bg.wanted);
    }
    this->finish_backward();
  }
};

// ---- conv2d (im2col + GEMM; bias inside the GEMM) ----------------------------------------------

template <class A>
struct OpExec<Conv2dNode<A>> : ParamOpExec<Conv2dNode<A>, A> {
  using Base = ParamOpExec<Conv2dNode<A>, A>;
  using typename Base::T;
  using Base::node, Base::a, Base::shape, Base::value, Base::grad, Base::wg, Base::bg;
  cpu::Conv2dGeometry geo;

  explicit OpExec(const Conv2dNode<A>& n) : Base(n) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& x = a.shape;
    const NDArray<T>& w = node.weight;
    w.require_defined("conv2d");
    check<ShapeError>(x.rank() == 4, "conv2d: expected a 4-D input (N, C, H, W), got ", x);
    check<ShapeError>(w.rank() == 4, "conv2d: expected a 4-D weight (O, C/groups, kh, kw), got ", w.shape());
    check<ValueError>(w.is_contiguous(), "conv2d: a compiled conv2d needs a contiguous weight");
    const int64_t groups = node.options.groups;
    check<ValueError>(groups >= 1, "conv2d: groups must be positive, got ", groups);
    const int64_t C = x[1], O = w.shape(0);
    check<ShapeError>(C % groups == 0 && O % groups == 0 && w.shape(1) == C / groups, "conv2d: weight ", w.shape(),
                      " does not match input ", x, " with groups ", groups);
    if (node.bias.defined())
      check<ShapeError>(node.bias.shape() == Shape{O} && node.bias.is_contiguous(), "conv2d: bias has shape ",
                        node.bias.shape(), ", expected (", O, ",)");
    auto hw = dl::detail::window_output_size("conv2d", x[2], x[3], {w.shape(2), w.shape(3)}, node.options.stride,
                                             node.options.padding, node.options.dilation, true);
    geo = {x[0], C, x[2], x[3], O, w.shape(2), w.shape(3), node.options.stride[0], node.options.stride[1],
           node.options.padding[0], node.options.padding[1], node.options.dilation[0], node.options.dilation[1],
           groups, hw[0], hw[1]};
    shape = Shape{x[0], O, hw[0], hw[1]};
    if (node.bias.defined()) ++ctx.epilogues;
    this->plan_output(ctx, node.weight, node.bias);
  }
  void forward() {
    a.forward();
    check<ValueError>(a.value.is_contiguous(), "conv2d: a compiled conv2d needs a contiguous input");
    if (value.numel() > 0)
      cpu::conv2d_forward(a.value.data(), node.weight.data(), node.bias.defined() ? node.bias.data() : nullptr,
                          value.data(), geo);
  }
  void backward() {
    T* dx = a.needs_grad && a.grad.numel() ? a.grad.data() : nullptr;
    T* dw = wg.wanted && node.weight.numel() ? wg.target().data() : nullptr;
    T* db = bg.wanted ? bg.target().data() : nullptr;
    if (value.numel() > 0) cpu::conv2d_backward(a.value.data(), node.weight.data(), grad.data(), dx, dw, db, geo);
    else {
      if (dx) std::memset(dx, 0, static_cast<size_t>(a.grad.numel()) * sizeof(T));
      if (dw) std::memset(dw, 0, static_cast<size_t>(node.weight.numel()) * sizeof(T));
      if (db) std::memset(db, 0, static_cast<size_t>(node.bias.numel()) * sizeof(T));
    }
    this->finish_backward();
  }
};

// ---- pooling ------------------------------------------------------------------------------------

template <class A, bool Max>
struct OpExec<Pool2dNode<A, Max>> {
  using T = typename A::value_type;
  static constexpr const char* op = Max ? "max_pool2d" : "avg_pool2d";
  Pool2dNode<A, Max> node;
  Exec<A> a;
  Shape shape;
  cpu::Pool2dGeometry geo;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, argmax_id = -1;
  NDArray<T> value, grad;
  NDArray<int64_t> argmax;

  explicit OpExec(const Pool2dNode<A, Max>& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& x = a.shape;
    check<ShapeError>(x.rank() == 4, op, ": expected a 4-D input (N, C, H, W), got ", x);
    auto hw = dl::detail::window_output_size(op, x[2], x[3], node.kernel, node.stride, node.padding, {1, 1}, false);
    check<ValueError>(node.padding[0] <= node.kernel[0] / 2 && node.padding[1] <= node.kernel[1] / 2, op, ": padding ",
                      dl::detail::pair_string(node.padding), " must be at most half the kernel ",
                      dl::detail::pair_string(node.kernel));
    geo = {x[0] * x[1], x[2], x[3], hw[0], hw[1], node.kernel[0], node.kernel[1], node.stride[0], node.stride[1],
           node.padding[0], node.padding[1]};
    shape = Shape{x[0], x[1], hw[0], hw[1]};
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    value_id_ = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
    if (Max) argmax_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(int64_t)));
    int step = ctx.memory.next_step();
    for (int id : std::array<int, 3>{value_id_, argmax_id, a.value_id()}) ctx.memory.use(id, step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : std::array<int, 3>{grad_id, argmax_id, a.grad_id}) ctx.memory.use(id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (Max) argmax = ctx.memory.template view<int64_t>(argmax_id, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  void forward() {
    a.forward();
    check<ValueError>(a.value.is_contiguous(), op, ": a compiled pooling needs a contiguous input");
    if (value.numel() == 0) return;
    if constexpr (Max) cpu::max_pool2d_forward(a.value.data(), value.data(), argmax.data(), geo);
    else cpu::avg_pool2d_forward(a.value.data(), value.data(), geo, node.count_include_pad);
  }
  void backward() {
    if (a.grad.numel() > 0) {
      if constexpr (Max) cpu::max_pool2d_backward(grad.numel() ? grad.data() : nullptr, argmax.data(), a.grad.data(), geo);
      else cpu::avg_pool2d_backward(grad.numel() ? grad.data() : nullptr, a.grad.data(), geo, node.count_include_pad);
    }
    a.backward();
  }
  int value_id() const { return value_id_; }
};

// ---- batch norm ---------------------------------------------------------------------------------

template <class A>
struct OpExec<BatchNormNode<A>> : ParamOpExec<BatchNormNode<A>, A> {  // wg: gamma's gradient, bg: beta's
  using Base = ParamOpExec<BatchNormNode<A>, A>;
  using typename Base::T;
  using Base::node, Base::a, Base::shape, Base::value, Base::grad, Base::wg, Base::bg;
  cpu::BatchNormGeometry geo;
  std::vector<double> mean, var, invstd, gamma_v, scale, shift;  // per channel; sized at plan

  explicit OpExec(const BatchNormNode<A>& n) : Base(n) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& x = a.shape;
    check<ShapeError>(x.rank() >= 2, "batch_norm: expected an (N, C) or (N, C, H, W) input, got ", x);
    const int64_t N = x[0], C = x[1];
    for (const NDArray<T>* v : {&node.gamma, &node.beta, &node.running_mean, &node.running_var})
      if (v->defined())
        check<ShapeError>(v->shape() == Shape{C}, "batch_norm: a channel vector of shape ", v->shape(),
                          " does not match input ", x, " (expected (", C, ",))");
    geo = {N, C, N * C > 0 ? x.numel() / (N * C) : 1};
    check<ValueError>(!node.training || geo.per_channel() > 1,
                      "batch_norm: training needs more than one value per channel, got input ", x);
    shape = x;
    for (auto* v : {&mean, &var, &invstd, &gamma_v, &scale, &shift}) v->assign(static_cast<size_t>(C), 0.0);
    this->plan_output(ctx, node.gamma, node.beta);
  }
  static double channel(const NDArray<T>& v, int64_t c, double otherwise) {
    return v.defined() ? static_cast<double>(v.data()[c * v.strides()[0]]) : otherwise;
  }
  void forward() {
    a.forward();
    check<ValueError>(a.value.is_contiguous(), "batch_norm: a compiled batch_norm needs a contiguous input");
    const int64_t C = geo.channels, M = geo.per_channel();
    if (node.training) {
      if (M > 0) cpu::batch_norm_stats(a.value.data(), geo, mean.data(), var.data());
      for (int64_t c = 0; c < C; ++c) {
        auto i = static_cast<size_t>(c);
        invstd[i] = 1.0 / std::sqrt(var[i] + node.eps);
        if (node.running_mean.defined() && !autograd::is_recomputing()) {  // in place, once per step, as eager
          T& rm = node.running_mean.data()[c * node.running_mean.strides()[0]];
          T& rv = node.running_var.data()[c * node.running_var.strides()[0]];
          double unbiased = var[i] * static_cast<double>(M) / static_cast<double>(M - 1);
          rm = static_cast<T>((1 - node.momentum) * rm + node.momentum * mean[i]);
          rv = static_cast<T>((1 - node.momentum) * rv + node.momentum * unbiased);
        }
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        auto i = static_cast<size_t>(c);
        mean[i] = channel(node.running_mean, c, 0.0);
        double v = channel(node.running_var, c, 1.0);
        check<ValueError>(v + node.eps > 0, "batch_norm: running_var[", c, "] + eps = ", v + node.eps, " is not positive");
        invstd[i] = 1.0 / std::sqrt(v + node.eps);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      auto i = static_cast<size_t>(c);
      gamma_v[i] = channel(node.gamma, c, 1.0);
      scale[i] = gamma_v[i] * invstd[i];
      shift[i] = channel(node.beta, c, 0.0) - mean[i] * scale[i];
    }
    if (value.numel() > 0) cpu::batch_norm_apply(a.value.data(), value.data(), geo, scale.data(), shift.data());
  }
  void backward() {
    T* dx = a.needs_grad && a.grad.numel() ? a.grad.data() : nullptr;
    T* dgamma = wg.wanted ? wg.target().data() : nullptr;
    T* dbeta = bg.wanted ? bg.target().data() : nullptr;
    if (geo.channels > 0)
      cpu::batch_norm_backward(a.value.numel() ? a.value.data() : nullptr, grad.numel() ? grad.data() : nullptr, geo,
                               mean.data(), invstd.data(), gamma_v.data(), node.training, dx, dgamma, dbeta);
    this->finish_backward();
  }
};

// ---- sharing: a node used more than once is computed once ------------------------------------

// The first occurrence of an op node (by id) in forward order computes it; later occurrences are
// references: they read its value and collect their own gradient, which the original adds to its
// gradient before its backward step. Backward runs in exactly the reverse of forward order, so
// every reference's gradient is complete by then.
template <class Impl>
struct Shared {
  using T = typename Impl::T;
  Impl impl;
  Shared* original = nullptr;
  std::vector<Shared*> refs;
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;
  NDArray<T> value, grad;

  template <class Node>
  explicit Shared(const Node& n) : impl(n) {}
  void plan_forward(PlanContext& ctx) {
    auto [it, fresh] = ctx.shared.try_emplace(impl.node.id, this);
    if (!fresh) {
      original = static_cast<Shared*>(it->second);
      shape = original->shape;
      needs_grad = original->needs_grad;
      ++ctx.shared_uses;
      if (ctx.training && needs_grad) {
        grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
        original->refs.push_back(this);
      }
      return;
    }
    impl.plan_forward(ctx);
    shape = impl.shape;
    needs_grad = impl.needs_grad;
    grad_id = impl.grad_id;
  }
  void plan_backward(PlanContext& ctx) {
    if (original) return;
    const int step = ctx.memory.steps();  // impl's backward step (its next_step())
    for (auto* r : refs) ctx.memory.use(r->grad_id, step);
    if (!refs.empty()) ctx.memory.use(grad_id, step);
    impl.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    if (original) {
      if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
      return;
    }
    impl.bind(ctx);
    grad = impl.grad;
    value = impl.value;  // rebound (per-call memory): a slot given back after forward is not held here
  }
  template <class F> void for_each_input(F&& f) {
    if (!original) impl.for_each_input(f);
  }
  void forward() {
    if (original) {
      value = original->value;
      return;
    }
    impl.forward();
    value = impl.value;
  }
  void backward() {
    if (original) return;
    for (auto* r : refs) expr::run_assign(grad, BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>{{}, grad, r->grad});
    impl.backward();
  }
  int value_id() const { return original ? original->value_id() : impl.value_id(); }
};

template <class A> struct Exec<MatmulNode<A>> : Shared<OpExec<MatmulNode<A>>> {
  using Shared<OpExec<MatmulNode<A>>>::Shared;
};
template <class A> struct Exec<Conv2dNode<A>> : Shared<OpExec<Conv2dNode<A>>> {
  using Shared<OpExec<Conv2dNode<A>>>::Shared;
};
template <class A> struct Exec<BatchNormNode<A>> : Shared<OpExec<BatchNormNode<A>>> {
  using Shared<OpExec<BatchNormNode<A>>>::Shared;
};
template <class A, bool Max> struct Exec<Pool2dNode<A, Max>> : Shared<OpExec<Pool2dNode<A, Max>>> {
  using Shared<OpExec<Pool2dNode<A, Max>>>::Shared;
};

// ---- choice (one branch, picked at tracing) ------------------------------------------------------

template <class A, class B>
struct Exec<ChoiceNode<A, B>> {
  using T = typename A::value_type;
  bool use_first;
  Exec<A> a;
  Exec<B> b;
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;
  NDArray<T> value, grad;

  explicit Exec(const ChoiceNode<A, B>& n) : use_first(n.use_first), a(n.first), b(n.second) {}
  template <class F> decltype(auto) chosen(F&& f) { return use_first ? f(a) : f(b); }
  void plan_forward(PlanContext& ctx) {
    chosen([&](auto& e) {
      e.plan_forward(ctx);
      shape = e.shape;
      needs_grad = e.needs_grad;
      grad_id = e.grad_id;
      return 0;
    });
  }
  void plan_backward(PlanContext& ctx) { chosen([&](auto& e) { e.plan_backward(ctx); return 0; }); }
  void bind(PlanContext& ctx) {
    chosen([&](auto& e) {
      e.bind(ctx);
      grad = e.grad;
      return 0;
    });
  }
  template <class F> void for_each_input(F&& f) { chosen([&](auto& e) { e.for_each_input(f); return 0; }); }
  void forward() {
    chosen([&](auto& e) {
      e.forward();
      value = e.value;
      return 0;
    });
  }
  void backward() { chosen([&](auto& e) { e.backward(); return 0; }); }
  int value_id() const { return use_first ? a.value_id() : b.value_id(); }
};

// ---- dropout (mask regenerated in backward; gradient in place) ----------------------------------

// What dropout and dropout2d share: the identity when not training or p = 0 (the operand's value
// and gradient), else one output buffer and a gradient computed in the operand's gradient buffer
// (dx = mask * scale * g, element by element). Derived: `prepare()` after the shape is known (check
// it, size per-call state), `forward()` and `backward()`.
template <class Derived, class Node, class A>
struct MaskedScaleExec {
  using T = typename A::value_type;
  Node node;
  Exec<A> a;
  Shape shape;
  bool needs_grad = false, active = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;

  explicit MaskedScaleExec(const Node& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    shape = a.shape;
    needs_grad = a.needs_grad;
    active = node.training && node.p > 0.0;
    static_cast<Derived*>(this)->prepare();
    if (!active) {  // identity: the operand's value and gradient
      grad_id = a.grad_id;
      value_id_ = a.value_id();
      return;
    }
    ++ctx.op_nodes;
    value_id_ = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    ctx.memory.use(a.value_id(), step);
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
      ctx.memory.alias(a.grad_id, grad_id);  // in place
    }
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    if (active) {
      int step = ctx.memory.next_step();
      ctx.memory.use(grad_id, step);
      ctx.memory.use(a.grad_id, step);
    }
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    if (!active) {
      grad = a.grad;
      return;
    }
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  int value_id() const { return value_id_; }

 protected:
  // Forward when inactive (the operand's value) or on a non-contiguous operand (an error): true if
  // the derived forward has nothing more to do.
  bool forward_identity(const char* message) {
    a.forward();
    if (!active) {
      value = a.value;
      return true;
    }
    check<ValueError>(a.value.is_contiguous(), message);
    return false;
  }
};

template <class A>
struct Exec<DropoutNode<A>> : MaskedScaleExec<Exec<DropoutNode<A>>, DropoutNode<A>, A> {
  using Base = MaskedScaleExec<Exec<DropoutNode<A>>, DropoutNode<A>, A>;
  using T = typename Base::T;
  PhiloxState state{};
  T scale = T(1);

  using Base::Base;
  void prepare() { scale = static_cast<T>(1.0 / (1.0 - this->node.p)); }
  void forward() {
    if (this->forward_identity("dropout: a compiled dropout needs a contiguous input")) return;
    const int64_t n = this->shape.numel();
    state = this->node.generator->reserve(static_cast<uint64_t>(n));  // as eager dropout: n numbers per call
    if (n > 0) dl::detail::dropout_apply(this->a.value.data(), this->value.data(), n, state, this->node.p, scale);
  }
  void backward() {
    auto& a = this->a;
    if (this->active && a.needs_grad && this->grad.numel() > 0)
      dl::detail::dropout_apply(this->grad.data(), a.grad.data(), this->grad.numel(), state, this->node.p, scale);
    if (a.needs_grad) a.backward();
  }
};

// ---- flatten (a view: no pass, gradient in place) -----------------------------------------------

// What flatten and reshape share: the operand's memory (value and gradient) seen in another
// shape. Derived: `Shape view_shape(const Shape& operand)` (checks included) and `static constexpr
// const char* kName`.
template <class Derived, class Node, class A>
struct ViewExec {
  using T = typename A::value_type;
  Node node;
  Exec<A> a;
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;
  NDArray<T> value, grad;

  explicit ViewExec(const Node& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    shape = static_cast<Derived*>(this)->view_shape(a.shape);
    needs_grad = a.needs_grad;
    grad_id = a.grad_id;  // the same memory as the operand's gradient
    ++ctx.views;
  }
  void plan_backward(PlanContext& ctx) {
    if (a.needs_grad) a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    if (a.needs_grad && a.grad.defined()) grad = NDArray<T>(a.grad.storage(), shape, contiguous_strides(shape), a.grad.offset());
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  void forward() {
    a.forward();
    check<ValueError>(a.value.is_contiguous(), Derived::kName, ": a compiled ", Derived::kName,
                      " needs a contiguous input, got shape ", a.value.shape(), " with non-contiguous strides");
    value = NDArray<T>(a.value.storage(), shape, contiguous_strides(shape), a.value.offset());
  }
  void backward() {
    if (a.needs_grad) a.backward();
  }
  int value_id() const { return a.value_id(); }
};

template <class A>
struct Exec<FlattenNode<A>> : ViewExec<Exec<FlattenNode<A>>, FlattenNode<A>, A> {
  static constexpr const char* kName = "flatten";
  using ViewExec<Exec<FlattenNode<A>>, FlattenNode<A>, A>::ViewExec;
  Shape view_shape(const Shape& in) const {
    int start = normalize_axis(this->node.start_axis, in.rank(), "flatten");
    std::vector<int64_t> d(in.begin(), in.begin() + start);
    int64_t rest = 1;
    for (int i = start; i < in.rank(); ++i) rest *= in[i];
    d.push_back(rest);
    return Shape(d);
  }
};

// ---- cross entropy ------------------------------------------------------------------------------

// (N, C) scores against labels (N): the checks cross_entropy and nll (graph/loss_ops.hpp) share.
// `what` names the scores in the message ("logits", "log_probs").
template <class Label>
void check_class_rows(const char* op, const char* what, const Shape& s, const NDArray<Label>& labels) {
  check<ShapeError>(s.rank() == 2, op, ": compiled ", what, " must have shape (N, C), got ", s);
  labels.require_defined(op);
  check<ShapeError>(labels.shape() == Shape{s[0]}, op, ": labels of shape ", labels.shape(), " do not match ", what,
                    " of shape ", s, " (expected labels of shape ", Shape{s[0]}, ")");
}

template <class Labels> struct LabelSource;
template <class Label> struct LabelSource<NDArray<Label>> {
  NDArray<Label> labels;
  explicit LabelSource(const NDArray<Label>& l) : labels(l) {}
  const NDArray<Label>& value() const { return labels; }
  template <class F> void for_each_input(F&&) {}
};
template <class Label, int R, int I> struct LabelSource<Input<Label, R, I>> {
  Exec<Input<Label, R, I>> input;
  explicit LabelSource(const Input<Label, R, I>& s) : input(s) {}
  const NDArray<Label>& value() const { return input.value; }
  template <class F> void for_each_input(F&& f) { f(input); }
};

template <class A, class Labels>
struct Exec<CrossEntropyNode<A, Labels>> {
  using T = typename A::value_type;
  CrossEntropyNode<A, Labels> node;
  Exec<A> a;
  LabelSource<Labels> labels;
  Shape shape;
  int64_t M = 0, C = 0;
  double scale = 1.0;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, losses_id = -1, max_id = -1, sum_id = -1;
  NDArray<T> value, grad, losses, row_max, log_sum;

  explicit Exec(const CrossEntropyNode<A, Labels>& n) : node(n), a(n.logits), labels(n.labels) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& s = a.shape;
    check_class_rows("cross_entropy", "logits", s, labels.value());
    M = s[0];
    C = s[1];
    scale = dl::detail::reduction_scale(node.reduction, M);
    shape = node.reduction == Reduction::none ? Shape{M} : Shape{};
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t row = M * static_cast<int64_t>(sizeof(T));
    losses_id = ctx.memory.add(row);
    max_id = ctx.memory.add(row);
    sum_id = ctx.memory.add(row);
    value_id_ = node.reduction == Reduction::none ? losses_id : ctx.memory.add(static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    for (int id : std::array<int, 4>{losses_id, max_id, sum_id, value_id_}) ctx.memory.use(id, step);
    ctx.memory.use(a.value_id(), step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : std::array<int, 5>{grad_id, max_id, sum_id, a.value_id(), a.grad_id}) ctx.memory.use(id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    losses = ctx.memory.template view<T>(losses_id, Shape{M});
    row_max = ctx.memory.template view<T>(max_id, Shape{M});
    log_sum = ctx.memory.template view<T>(sum_id, Shape{M});
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) {
    a.for_each_input(f);
    labels.for_each_input(f);
  }
  void forward() {
    a.forward();
    const auto& lab = labels.value();
    check<ValueError>(lab.is_contiguous() && a.value.is_contiguous(),
                      "cross_entropy: compiled cross_entropy needs contiguous logits and labels");
    const auto* lp = lab.data();
    for (int64_t r = 0; r < M; ++r) {
      const int64_t v = static_cast<int64_t>(lp[r]);
      if (v < 0 || v >= C) [[unlikely]]
        fail<ValueError>("cross_entropy: label ", v, " at row ", r, " is out of range for ", C, " classes");
    }
    if (M == 0) return;
    cpu::cross_entropy_forward(a.value.data(), lp, M, C, static_cast<T>(node.smoothing), losses.data(), row_max.data(),
                               log_sum.data());
    if (node.reduction != Reduction::none)
      *value.data() = static_cast<T>(cpu::sum_deterministic(losses.data(), M) * scale);
  }
  void backward() {
    if (M > 0 && a.grad.numel())
      cpu::cross_entropy_backward(a.value.data(), labels.value().data(), row_max.data(), log_sum.data(), grad.data(),
                                  node.reduction == Reduction::none ? 1 : 0, static_cast<T>(scale), M, C,
                                  static_cast<T>(node.smoothing), a.grad.data());
    a.backward();
  }
  int value_id() const { return value_id_; }
};

// ---- named values (let, chain): one computation, read by Ref leaves ----------------------------

// A value named by a let or chain, as its Ref leaves see it. Each Ref use gets a gradient buffer
// of its own; the value's gradient is their sum, formed once every reader's backward has run.
template <class T>
struct NamedValue {
  Shape shape;
  bool needs_grad = false;
  int value_id = -1, uses = 0;
  NDArray<T> value;
  std::vector<const NDArray<T>*> grads;  // the Refs' gradients (bound at bind)
  std::vector<int> grad_ids;
};

template <class T, int R>
struct Exec<Ref<T, R>> {
  using value_type = T;
  uint64_t id;
  NamedValue<T>* named = nullptr;
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;
  NDArray<T> value, grad;

  explicit Exec(const Ref<T, R>& r) : id(r.id) {}
  void plan_forward(PlanContext& ctx) {
    auto it = ctx.named.find(id);
    check<ValueError>(it != ctx.named.end(), "compile: a let or chain value is used outside its body");
    named = static_cast<NamedValue<T>*>(it->second);
    shape = named->shape;
    needs_grad = named->needs_grad;
    if (named->uses++ > 0) ++ctx.shared_uses;
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
      named->grads.push_back(&grad);
      named->grad_ids.push_back(grad_id);
    }
  }
  void plan_backward(PlanContext&) {}  // the gradient is summed by the let / chain
  void bind(PlanContext& ctx) {
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&&) {}
  void forward() { value = named->value; }
  void backward() {}
  int value_id() const { return named->value_id; }
};

namespace detail {
// Names `source`'s value `id` for the Refs planned next.
template <class T, class Source>
void name_value(PlanContext& ctx, uint64_t id, NamedValue<T>& named, Source& source) {
  named.shape = source.shape;
  named.needs_grad = source.needs_grad;
  named.value_id = source.value_id();
  ctx.named[id] = &named;
}
// The step that sums the Refs' gradients into the source's gradient.
template <class T, class Source>
void plan_gather(PlanContext& ctx, const NamedValue<T>& named, Source& source) {
  if (!source.needs_grad) return;
  const int step = ctx.memory.next_step();
  ctx.memory.use(source.grad_id, step);
  for (int id : named.grad_ids) ctx.memory.use(id, step);
}
template <class T, class Source>
void gather(const NamedValue<T>& named, Source& source) {
  if (!source.needs_grad || source.grad.numel() == 0) return;
  NDArray<T>& g = source.grad;
  if (named.grads.empty()) {
    std::fill(g.data(), g.data() + g.numel(), T(0));  // no reader needed it: a planned, contiguous buffer
    return;
  }
  expr::run_assign(g, *named.grads[0]);
  for (size_t k = 1; k < named.grads.size(); ++k)
    expr::run_assign(g, BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>{{}, g, *named.grads[k]});
}
}  // namespace detail

template <class X, class Body>
struct Exec<LetNode<X, Body>> {
  using T = typename Body::value_type;
  uint64_t id;
  Exec<X> bound;
  Exec<Body> body;
  NamedValue<typename X::value_type> named;
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;
  NDArray<T> value, grad;

  explicit Exec(const LetNode<X, Body>& n) : id(n.id), bound(n.bound), body(n.body) {}
  void plan_forward(PlanContext& ctx) {
    bound.plan_forward(ctx);
    detail::name_value(ctx, id, named, bound);
    body.plan_forward(ctx);
    shape = body.shape;
    needs_grad = body.needs_grad;
    grad_id = body.grad_id;
  }
  void plan_backward(PlanContext& ctx) {
    body.plan_backward(ctx);
    detail::plan_gather(ctx, named, bound);
    if (bound.needs_grad) bound.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    bound.bind(ctx);
    body.bind(ctx);
    grad = body.grad;
  }
  template <class F> void for_each_input(F&& f) {
    bound.for_each_input(f);
    body.for_each_input(f);
  }
  void forward() {
    bound.forward();
    named.value = bound.value;
    body.forward();
    value = body.value;
  }
  void backward() {
    body.backward();
    if (!bound.needs_grad) return;
    detail::gather(named, bound);
    bound.backward();
  }
  int value_id() const { return body.value_id(); }
};

template <class X, class Body>
struct Exec<ChainNode<X, Body>> {
  using T = typename X::value_type;
  Exec<X> input;
  std::vector<Exec<Body>> bodies;  // never resized after construction: Refs point into `named`
  std::vector<uint64_t> ids;
  std::vector<NamedValue<T>> named;  // named[k]: what bodies[k] reads
  Shape shape;
  bool needs_grad = false;
  int grad_id = -1;
  NDArray<T> value, grad;

  explicit Exec(const ChainNode<X, Body>& n) : input(n.input), ids(n.ids), named(n.bodies.size()) {
    bodies.reserve(n.bodies.size());
    for (const auto& b : n.bodies) bodies.emplace_back(b);
  }
  size_t size() const { return bodies.size(); }
  // What bodies[k] reads (k = 0: the chain's input): f(input) or f(bodies[k - 1]).
  template <class F> void with_source(size_t k, F&& f) {
    if (k == 0) f(input);
    else f(bodies[k - 1]);
  }
  template <class F> decltype(auto) with_output(F&& f) {
    if (bodies.empty()) return f(input);
    return f(bodies.back());
  }
  void plan_forward(PlanContext& ctx) {
    input.plan_forward(ctx);
    for (size_t k = 0; k < size(); ++k) {
      with_source(k, [&](auto& src) { detail::name_value(ctx, ids[k], named[k], src); });
      bodies[k].plan_forward(ctx);
    }
    with_output([&](auto& out) {
      shape = out.shape;
      needs_grad = out.needs_grad;
      grad_id = out.grad_id;
    });
  }
  void plan_backward(PlanContext& ctx) {
    if (bodies.empty()) return input.plan_backward(ctx);
    for (size_t k = size(); k-- > 0;) {
      if (bodies[k].needs_grad) bodies[k].plan_backward(ctx);
      with_source(k, [&](auto& src) { detail::plan_gather(ctx, named[k], src); });
    }
    if (input.needs_grad) input.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    input.bind(ctx);
    for (auto& b : bodies) b.bind(ctx);
    with_output([&](auto& out) { grad = out.grad; });
  }
  template <class F> void for_each_input(F&& f) {
    input.for_each_input(f);
    for (auto& b : bodies) b.for_each_input(f);
  }
  void forward() {
    input.forward();
    for (size_t k = 0; k < size(); ++k) {
      with_source(k, [&](auto& src) { named[k].value = src.value; });
      bodies[k].forward();
    }
    with_output([&](auto& out) { value = out.value; });
  }
  void backward() {
    if (bodies.empty()) return input.backward();
    for (size_t k = size(); k-- > 0;) {
      if (bodies[k].needs_grad) bodies[k].backward();
      with_source(k, [&](auto& src) { detail::gather(named[k], src); });
    }
    if (input.needs_grad) input.backward();
  }
  int value_id() const { return bodies.empty() ? input.value_id() : bodies.back().value_id(); }
};

}  // namespace dl::graph
