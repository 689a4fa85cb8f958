// Collectives on NDArray<float> and NDArray<double> over a dist::Group: allreduce (in place; flat,
// hierarchical or leader algorithm), broadcast (in place), allgather and reduce_scatter (new
// arrays), barrier. They sit on top of runtime.hpp and under KVStore and DataParallel, which use
// the raw-buffer form allreduce_buffer().
//
//   dl::dist::allreduce(g, dl::dist::Op::average);                       // algorithm by size
//   dl::dist::allreduce(g, dl::dist::Op::sum, dl::dist::Algorithm::hierarchical);
//   auto all = dl::dist::allgather(x);                                  // (world size, *x.shape)
//
// Algorithms (p ranks = N nodes x L local ranks, n elements):
//   flat          MPI_Allreduce on the world.
//   hierarchical  node-local ring reduce-scatter (rank r of the node owns chunk r, n/L elements, the
//                 first n % L chunks one more) -> allreduce of each chunk among the N peers with the
//                 same local rank -> node-local ring allgather (both rings: MPI_Sendrecv, in
//                 place). Inter-node traffic per rank: ~2 n/L elements.
//                 Needs every node to have L ranks; on uneven nodes it runs the leader algorithm.
//   leader        reduce to local rank 0 -> allreduce among the N leaders -> broadcast in the node.
//                 Fewest messages: best for small messages.
//   automatic     all ranks on one machine (simulated nodes included), one node, or one rank per
//                 node: flat (on one machine MPI's shared-memory allreduce is never slower than the
//                 two-level algorithms in bench/allreduce, and they cannot gain there: same bytes,
//                 more steps); else leader up to small_message_bytes() (64 KiB,
//                 DL_DIST_SMALL_BYTES), hierarchical above.
// Before each collective the ranks compare their arguments (length, op, algorithm, root) with one
// 2-element-per-field MPI_MAX allreduce, so a mismatch throws DistributedError on every rank
// instead of hanging or corrupting data (Group::set_check_arguments(false) skips it).
#pragma once
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/core/device.hpp"
#include "dl/dist/runtime.hpp"
#include "dl/expr/assign.hpp"
#include "dl/ndarray/ndarray.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl::dist {

enum class Op { sum, average };
enum class Algorithm { automatic, flat, hierarchical, leader };

inline const char* to_string(Op op) { return op == Op::sum ? "sum" : "average"; }
inline const char* to_string(Algorithm a) {
  switch (a) {
    case Algorithm::automatic: return "automatic";
    case Algorithm::flat: return "flat";
    case Algorithm::hierarchical: return "hierarchical";
    case Algorithm::leader: return "leader";
  }
  return "?";
}

namespace detail {

template <class T>
MPI_Datatype mpi_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "dist: collectives need NDArray<float> or NDArray<double>");
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else return MPI_DOUBLE;
}

struct Field {
  const char* name;
  int64_t value;
};

// Every rank passes its fields; all learn min and max of each (one MPI_MAX over [v, -v] pairs) and
// all throw the same error when any field differs, so nobody is left waiting in the collective.
inline void check_agreement(const Communicator& comm, const char* op, std::initializer_list<Field> fields,
                            const std::string& context = "") {
  std::vector<int64_t> buf;
  buf.reserve(fields.size() * 2);
  for (const auto& f : fields) {
    buf.push_back(f.value);
    buf.push_back(-f.value);
  }
  {
    Deadline d(concat(op, ": argument check"));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()), MPI_INT64_T, MPI_MAX, comm.get()),
              "MPI_Allreduce", op);
  }
  size_t i = 0;
  for (const auto& f : fields) {
    int64_t hi = buf[2 * i], lo = -buf[2 * i + 1];
    ++i;
    if (hi != lo)
      fail<DistributedError>(op, ": ", f.name, " differs across ranks: min ", lo, ", max ", hi, " (rank ", comm.rank(),
                             " of ", comm.size(), " has ", f.value, context.empty() ? "" : ", ", context, ")");
  }
}

// Node-local chunk of rank c when n elements are split over L ranks (the first n % L get one more).
inline std::pair<int64_t, int64_t> chunk_of(int64_t n, int parts, int c) {
  int64_t base = n / parts, rem = n % parts;
  int64_t count = base + (c < rem ? 1 : 0);
  int64_t displ = c * base + std::min<int64_t>(c, rem);
  return {displ, count};
}

template <class T>
void divide(T* x, int64_t n, int by) {
  const T d = static_cast<T>(by);
  for (int64_t i = 0; i < n; ++i) x[i] /= d;
}

template <class T>
void flat_allreduce(T* x, int n, Op op, const Group& g) {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, x, n, mpi_type<T>(), MPI_SUM, g.comm().get()), "MPI_Allreduce", "allreduce");
  if (op == Op::average) divide(x, n, g.size());
}

template <class T>
void leader_allreduce(T* x, int n, Op op, const Group& g) {
  const Communicator& local = g.local();
  MPI_Datatype t = mpi_type<T>();
  if (local.size() > 1) {
    void* send = local.rank() == 0 ? MPI_IN_PLACE : static_cast<void*>(x);
    check_mpi(MPI_Reduce(send, x, n, t, MPI_SUM, 0, local.get()), "MPI_Reduce (node-local)", "allreduce[leader]");
  }
  if (local.rank() == 0) {
    if (g.leaders().size() > 1)
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, x, n, t, MPI_SUM, g.leaders().get()), "MPI_Allreduce (leaders)",
                "allreduce[leader]");
    if (op == Op::average) divide(x, n, g.size());
  }
  if (local.size() > 1)
    check_mpi(MPI_Bcast(x, n, t, 0, local.get()), "MPI_Bcast (node-local)", "allreduce[leader]");
}

// This thread's scratch buffer of at least n elements (grows, never shrinks): a collective per
// gradient bucket must not allocate each time.
template <class T>
T* scratch(int64_t n) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

template <class T>
void hierarchical_allreduce(T* x, int n, Op op, const Group& g) {
  const Communicator& local = g.local();
  MPI_Datatype t = mpi_type<T>();
  const int L = local.size(), r = local.rank();
  if (L == 1) {  // one rank per node: the peers are the whole world
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, x, n, t, MPI_SUM, g.peers().get()), "MPI_Allreduce (peers)",
              "allreduce[hierarchical]");
    if (op == Op::average) divide(x, n, g.size());
    return;
  }
  std::vector<int> counts(L), displs(L);
  for (int c = 0; c < L; ++c) {
    auto [d, k] = chunk_of(n, L, c);
    displs[c] = static_cast<int>(d);
    counts[c] = static_cast<int>(k);
  }
  const int mine = counts[r];
  // Node-local ring reduce-scatter and allgather with MPI_Sendrecv, in place in x (only a chunk-sized
  // receive buffer): L - 1 steps each, every step moving one chunk per rank, which is the minimum
  // (2 (L-1)/L n elements per rank in all). Open MPI 4.1's MPI_Reduce_scatter/_block and
  // MPI_Allgather[v] pick worse algorithms on shared memory (with 2 ranks, 16 MB: 10x MPI_Allreduce;
  // bench/allreduce, 2026-11-27), and MPI_IN_PLACE reduce-scatter copies all n elements first.
  const int next = (r + 1) % L, prev = (r + L - 1) % L;
  auto chunk = [&](int c) { return ((c % L) + L) % L; };
  T* incoming = scratch<T>(std::max(counts[0], 1));  // chunk 0 is the largest
  // Reduce-scatter: at step s send chunk r-s-1, receive chunk r-s-2 and add it; after L-1 steps
  // chunk r holds the node's sum.
  for (int s = 0; s < L - 1; ++s) {
    int out = chunk(r - s - 1), in = chunk(r - s - 2);
    check_mpi(MPI_Sendrecv(x + displs[out], counts[out], t, next, 0, incoming, counts[in], t, prev, 0, local.get(),
                           MPI_STATUS_IGNORE),
              "MPI_Sendrecv (node-local reduce-scatter)", "allreduce[hierarchical]");
    T* dst = x + displs[in];
    for (int i = 0; i < counts[in]; ++i) dst[i] += incoming[i];
  }
  T* part = x + displs[r];
  if (g.peers().size() > 1 && mine > 0)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, part, mine, t, MPI_SUM, g.peers().get()), "MPI_Allreduce (peers)",
              "allreduce[hierarchical]");
  if (op == Op::average) divide(part, mine, g.size());  // n/L divisions here instead of n after the gather
  // Allgather: at step s send chunk r-s, receive chunk r-s-1 straight into place.
  for (int s = 0; s < L - 1; ++s) {
    int out = chunk(r - s), in = chunk(r - s - 1);
    check_mpi(MPI_Sendrecv(x + displs[out], counts[out], t, next, 1, x + displs[in], counts[in], t, prev, 1,
                           local.get(), MPI_STATUS_IGNORE),
              "MPI_Sendrecv (node-local allgather)", "allreduce[hierarchical]");
  }
}

// The algorithm that `requested` means for n bytes on this group. Only group-wide facts decide, so
// every rank gets the same answer (a per-rank choice would pair different collectives).
inline Algorithm resolve(Algorithm requested, size_t bytes, const Group& g) {
  Algorithm a = requested;
  if (a == Algorithm::automatic) {
    if (g.num_nodes() == 1 || g.max_local_size() == 1 || g.num_machines() == 1) a = Algorithm::flat;
    else a = bytes <= g.small_message_bytes() ? Algorithm::leader : Algorithm::hierarchical;
  }
  if (a == Algorithm::hierarchical && !g.uniform_nodes()) a = Algorithm::leader;  // chunks need equal L
  return a;
}

}  // namespace detail

// The algorithm allreduce_buffer() runs for `requested` on n bytes over g (the same on every rank).
inline Algorithm choose_algorithm(Algorithm requested, size_t bytes, const Group& g = world()) {
  return detail::resolve(requested, bytes, g);
}

// Allreduce of n contiguous elements in place. Every rank must call it with the same n, op and
// algorithm (checked unless the group's check_arguments is off).
template <class T>
void allreduce_buffer(T* x, int64_t n, Op op = Op::sum, Algorithm algorithm = Algorithm::automatic,
                      const Group& g = world()) {
  const char* name = "allreduce";
  if (g.check_arguments())
    detail::check_agreement(g.comm(), name,
                            {{"length", n}, {"op", static_cast<int64_t>(op)},
                             {"algorithm", static_cast<int64_t>(algorithm)},
                             {"element size", static_cast<int64_t>(sizeof(T))}});
  check<ValueError>(n >= 0, "allreduce: length must be >= 0, got ", n);
  if (n == 0 || g.size() == 1) return;  // nothing to exchange; averaging over one rank is identity
  Algorithm a = detail::resolve(algorithm, static_cast<size_t>(n) * sizeof(T), g);
  detail::Deadline deadline(detail::concat("allreduce[", to_string(a), "] of ", n, " elements"));
  // MPI counts are int: run huge arrays in segments (every rank cuts at the same places).
  constexpr int64_t segment = int64_t{1} << 30;
  for (int64_t off = 0; off < n; off += segment) {
    int m = static_cast<int>(std::min(segment, n - off));
    switch (a) {
      case Algorithm::hierarchical: detail::hierarchical_allreduce(x + off, m, op, g); break;
      case Algorithm::leader: detail::leader_allreduce(x + off, m, op, g); break;
      default: detail::flat_allreduce(x + off, m, op, g); break;
    }
  }
}

namespace detail {
// Runs fn(pointer) on x's elements in place: directly when contiguous, else on a contiguous copy that
// is written back. Collectives are not recorded by autograd.
template <class T, class Fn>
void with_contiguous(NDArray<T>& x, const char* op, Fn&& fn) {
  x.require_defined(op);
  require_cpu(x.device(), op);
  if (x.is_contiguous()) {
    fn(x.numel() ? x.data() : nullptr);
    return;
  }
  autograd::pause no_tape;
  NDArray<T> tmp = x.detach().contiguous();
  fn(tmp.numel() ? tmp.data() : nullptr);
  NDArray<T> dst = x.detach();
  dst.assign(tmp);
}
}  // namespace detail

template <class T>
void allreduce(NDArray<T>& x, Op op = Op::sum, Algorithm algorithm = Algorithm::automatic, const Group& g = world()) {
  detail::with_contiguous(x, "allreduce", [&](T* p) { allreduce_buffer(p, x.numel(), op, algorithm, g); });
}
template <class T>
void allreduce(NDArray<T>&& x, Op op = Op::sum, Algorithm algorithm = Algorithm::automatic, const Group& g = world()) {
  allreduce(x, op, algorithm, g);  // x is a handle: the caller's storage is updated
}

// Copies root's elements into every rank's x (same length everywhere).
template <class T>
void broadcast(NDArray<T>& x, int root = 0, const Group& g = world()) {
  check<ValueError>(root >= 0 && root < g.size(), "broadcast: root ", root, " is out of range for ", g.size(),
                    " ranks");
  detail::with_contiguous(x, "broadcast", [&](T* p) {
    int64_t n = x.numel();
    if (g.check_arguments())
      detail::check_agreement(g.comm(), "broadcast",
                              {{"length", n}, {"root", root}, {"element size", static_cast<int64_t>(sizeof(T))}});
    detail::Deadline deadline(detail::concat("broadcast of ", n, " elements from root ", root));
    constexpr int64_t segment = int64_t{1} << 30;
    for (int64_t off = 0; off < n; off += segment)
      detail::check_mpi(MPI_Bcast(p + off, static_cast<int>(std::min(segment, n - off)), detail::mpi_type<T>(), root,
                                  g.comm().get()),
                        "MPI_Bcast", "broadcast");
  });
}
template <class T>
void broadcast(NDArray<T>&& x, int root = 0, const Group& g = world()) { broadcast(x, root, g); }

// Every rank's x stacked along a new first axis: shape (world size, *x.shape), in rank order.
template <class T>
NDArray<T> allgather(const NDArray<T>& x, const Group& g = world()) {
  x.require_defined("allgather");
  require_cpu(x.device(), "allgather");
  NDArray<T> in = x.detach().contiguous();
  const Shape& s = in.shape();
  if (g.check_arguments()) {
    int64_t d[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < s.rank(); ++i) d[i] = s[i];
    detail::check_agreement(g.comm(), "allgather",
                            {{"rank (number of axes)", s.rank()}, {"dim 0", d[0]}, {"dim 1", d[1]}, {"dim 2", d[2]},
                             {"dim 3", d[3]}, {"dim 4", d[4]}, {"dim 5", d[5]}, {"dim 6", d[6]}, {"dim 7", d[7]},
                             {"element size", static_cast<int64_t>(sizeof(T))}},
                            "shape " + s.to_string());
  }
  std::vector<int64_t> dims{g.size()};
  for (int i = 0; i < s.rank(); ++i) dims.push_back(s[i]);
  NDArray<T> out{Shape(dims)};
  int64_t n = in.numel();
  check<ValueError>(n * g.size() <= INT_MAX, "allgather: ", n, " elements x ", g.size(),
                    " ranks exceed MPI's int count");
  if (n == 0) return out;
  detail::Deadline deadline(detail::concat("allgather of ", n, " elements"));
  detail::check_mpi(MPI_Allgather(in.data(), static_cast<int>(n), detail::mpi_type<T>(), out.data(), static_cast<int>(n),
                                  detail::mpi_type<T>(), g.comm().get()),
                    "MPI_Allgather", "allgather");
  return out;
}

// Sum (or average) over ranks of x, split along axis 0: rank i gets rows [start_i, start_i + rows_i)
// where the first (rows % size) ranks get one row more. x has at least one axis.
template <class T>
NDArray<T> reduce_scatter(const NDArray<T>& x, Op op = Op::sum, const Group& g = world()) {
  x.require_defined("reduce_scatter");
  require_cpu(x.device(), "reduce_scatter");
  check<ShapeError>(x.rank() >= 1, "reduce_scatter: needs an array with at least one axis, got shape ", x.shape());
  NDArray<T> in = x.detach().contiguous();
  const int64_t rows = in.shape(0), row = rows ? in.numel() / rows : 0;
  if (g.check_arguments())
    detail::check_agreement(g.comm(), "reduce_scatter",
                            {{"rows", rows}, {"row length", row}, {"op", static_cast<int64_t>(op)},
                             {"element size", static_cast<int64_t>(sizeof(T))}});
  check<ValueError>(in.numel() <= INT_MAX, "reduce_scatter: ", in.numel(), " elements exceed MPI's int count");
  const int p = g.size();
  std::vector<int> counts(p);
  for (int c = 0; c < p; ++c) counts[c] = static_cast<int>(detail::chunk_of(rows, p, c).second * row);
  std::vector<int64_t> dims{detail::chunk_of(rows, p, g.rank()).second};
  for (int i = 1; i < in.rank(); ++i) dims.push_back(in.shape(i));
  NDArray<T> out{Shape(dims)};
  if (in.numel() == 0) return out;
  detail::Deadline deadline(detail::concat("reduce_scatter of ", in.numel(), " elements"));
  T none{};  // a valid address for ranks that receive no rows
  detail::check_mpi(MPI_Reduce_scatter(in.data(), out.numel() ? out.data() : &none, counts.data(),
                                       detail::mpi_type<T>(), MPI_SUM, g.comm().get()),
                    "MPI_Reduce_scatter", "reduce_scatter");
  if (op == Op::average && out.numel()) detail::divide(out.data(), out.numel(), p);
  return out;
}

inline void barrier(const Group& g = world()) {
  detail::Deadline deadline("barrier");
  detail::check_mpi(MPI_Barrier(g.comm().get()), "MPI_Barrier", "barrier");
}

}  // namespace dl::dist
