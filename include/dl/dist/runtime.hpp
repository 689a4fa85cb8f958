// dist::Environment, Communicator and Group: the MPI runtime under dl/dist. Environment is the RAII
// owner of MPI_Init_thread/MPI_Finalize and of the watchdog that bounds every dl collective (a rank
// that dies, throws or stalls makes the others stop with a DistributedError message and a non-zero
// exit within the timeout instead of hanging). Group is the topology the collectives use: the world,
// the node-local communicator (MPI_Comm_split_type SHARED, or fake nodes of k consecutive ranks when
// DL_DIST_RANKS_PER_NODE=k is set), the cross-node peers (ranks with the same local rank) and the
// node leaders (local rank 0).
//
//   int main(int argc, char** argv) {
//     dl::dist::Environment env(argc, argv);           // MPI_Init_thread + watchdog
//     auto& g = dl::dist::world();                      // rank(), size(), local(), peers(), ...
//     dl::dist::allreduce(grad, dl::dist::Op::average);
//   }                                                   // MPI_Finalize (MPI_Abort if unwinding)
//
// Environment variables: DL_DIST_RANKS_PER_NODE=k (simulated nodes), DL_DIST_TIMEOUT=seconds
// (default 60; 0 turns the watchdog off), DL_DIST_SMALL_BYTES=n (automatic algorithm threshold).
#pragma once
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "dl/core/error.hpp"

namespace dl::dist {

enum class ThreadLevel : int { single = 0, funneled = 1, serialized = 2, multiple = 3 };

inline const char* to_string(ThreadLevel t) {
  switch (t) {
    case ThreadLevel::single: return "MPI_THREAD_SINGLE";
    case ThreadLevel::funneled: return "MPI_THREAD_FUNNELED";
    case ThreadLevel::serialized: return "MPI_THREAD_SERIALIZED";
    case ThreadLevel::multiple: return "MPI_THREAD_MULTIPLE";
  }
  return "?";
}

namespace detail {

using dl::detail::concat;

inline ThreadLevel from_mpi_level(int level) {
  if (level == MPI_THREAD_MULTIPLE) return ThreadLevel::multiple;
  if (level == MPI_THREAD_SERIALIZED) return ThreadLevel::serialized;
  if (level == MPI_THREAD_FUNNELED) return ThreadLevel::funneled;
  return ThreadLevel::single;
}
inline int to_mpi_level(ThreadLevel t) {
  switch (t) {
    case ThreadLevel::single: return MPI_THREAD_SINGLE;
    case ThreadLevel::funneled: return MPI_THREAD_FUNNELED;
    case ThreadLevel::serialized: return MPI_THREAD_SERIALIZED;
    case ThreadLevel::multiple: return MPI_THREAD_MULTIPLE;
  }
  return MPI_THREAD_SINGLE;
}

inline std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

inline int world_rank_or_minus_one() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return -1;
  int r = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// Turns an MPI return code into a DistributedError naming the call and the rank. Communicators get
// MPI_ERRORS_RETURN (see Environment), so failures come back here instead of aborting silently.
inline void check_mpi(int code, const char* call, const char* op) {
  if (code == MPI_SUCCESS) [[likely]] return;
  fail<DistributedError>(op, ": ", call, " failed on rank ", world_rank_or_minus_one(), ": ", mpi_error_string(code));
}

// Environment variables that must parse as numbers; a typo is an error, not a silent default.
inline std::optional<double> env_number(const char* name, double min_value) {
  const char* s = std::getenv(name);
  if (!s || !*s) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s, &end);
  check<ValueError>(end && *end == '\0' && v >= min_value, "dist: environment variable ", name, "='", s,
                    "' must be a number >= ", min_value);
  return v;
}

// ---- watchdog ----------------------------------------------------------------------------------
// Every dl collective registers itself for its duration. A background thread wakes every 50 ms and,
// when one has run longer than the timeout, prints what was stuck and aborts the whole job: a
// blocked MPI call cannot be interrupted any other way, and a peer that died mid-collective leaves
// the others blocked forever under launchers that do not kill the job themselves.
class Watchdog {
 public:
  struct Entry {
    std::string what;
    std::chrono::steady_clock::time_point start;
  };

  static Watchdog& instance() {
    static Watchdog w;
    return w;
  }

  void start(double timeout_s, bool can_abort_from_thread) {
    std::lock_guard<std::mutex> lock(mu_);
    timeout_s_ = timeout_s;
    abort_from_thread_ = can_abort_from_thread;
    if (thread_.joinable()) return;
    stop_ = false;
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void set_timeout(double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    timeout_s_ = seconds;
  }
  double timeout() const {
    std::lock_guard<std::mutex> lock(mu_);
    return timeout_s_;
  }

  std::list<Entry>::iterator enter(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    active_.push_front({std::move(what), std::chrono::steady_clock::now()});
    return active_.begin();
  }
  void leave(std::list<Entry>::iterator it) {
    std::lock_guard<std::mutex> lock(mu_);
    active_.erase(it);
  }

  ~Watchdog() { stop(); }

 private:
  Watchdog() = default;

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(50));
      if (stop_ || timeout_s_ <= 0) continue;
      auto now = std::chrono::steady_clock::now();
      for (const auto& e : active_) {
        double waited = std::chrono::duration<double>(now - e.start).count();
        if (waited < timeout_s_) continue;
        int rank = world_rank_or_minus_one();
        std::fprintf(stderr,
                     "dl::DistributedError: %s on rank %d did not finish within %.1f s (timeout %.1f s, "
                     "DL_DIST_TIMEOUT); a peer rank probably died, threw or is stuck. Aborting the job.\n",
                     e.what.c_str(), rank, waited, timeout_s_);
        std::fflush(stderr);
        // MPI_Abort from this thread is only defined with MPI_THREAD_MULTIPLE; otherwise leave
        // without finalizing, which makes mpirun tear the job down just the same.
        if (abort_from_thread_) MPI_Abort(MPI_COMM_WORLD, 124);
        std::_Exit(124);
      }
    }
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<Entry> active_;
  std::thread thread_;
  double timeout_s_ = 60.0;
  bool abort_from_thread_ = false;
  bool stop_ = false;
};

// RAII registration of one collective with the watchdog.
class Deadline {
 public:
  explicit Deadline(std::string what) : it_(Watchdog::instance().enter(std::move(what))) {}
  ~Deadline() { Watchdog::instance().leave(it_); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

 private:
  std::list<Watchdog::Entry>::iterator it_;
};

}  // namespace detail

// Timeout (seconds) after which a stuck collective aborts the job; 0 turns the watchdog off.
inline void set_timeout(double seconds) {
  check<ValueError>(seconds >= 0, "dist::set_timeout: seconds must be >= 0, got ", seconds);
  detail::Watchdog::instance().set_timeout(seconds);
}
inline double timeout() { return detail::Watchdog::instance().timeout(); }

// ---- Communicator -------------------------------------------------------------------------------
// A shared handle to an MPI communicator; the last copy frees a communicator this library created.
// A null communicator (this rank is not a member, e.g. leaders() on a non-leader) has rank -1.
class Communicator {
 public:
  Communicator() = default;
  static Communicator borrow(MPI_Comm c) { return Communicator(c, false); }
  static Communicator own(MPI_Comm c) { return Communicator(c, true); }

  bool valid() const { return handle_ && handle_->comm != MPI_COMM_NULL; }
  MPI_Comm get() const { return handle_ ? handle_->comm : MPI_COMM_NULL; }
  int rank() const { return rank_; }
  int size() const { return size_; }

  // A new communicator with the same members (its own message space: traffic on it never matches
  // traffic on this one, which lets a background thread communicate safely).
  Communicator dup() const {
    check<DistributedError>(valid(), "Communicator::dup: not a member of this communicator");
    MPI_Comm c;
    detail::check_mpi(MPI_Comm_dup(get(), &c), "MPI_Comm_dup", "Communicator::dup");
    return own(c);
  }
  // Members with the same color form a new communicator, ordered by key (MPI_UNDEFINED: none).
  Communicator split(int color, int key) const {
    MPI_Comm c;
    detail::check_mpi(MPI_Comm_split(get(), color, key, &c), "MPI_Comm_split", "Communicator::split");
    return own(c);
  }

 private:
  struct Handle {
    MPI_Comm comm = MPI_COMM_NULL;
    bool owned = false;
    ~Handle() {
      int fin = 0;
      MPI_Finalized(&fin);
      if (owned && comm != MPI_COMM_NULL && !fin) MPI_Comm_free(&comm);
    }
  };
  Communicator(MPI_Comm c, bool owned) : handle_(std::make_shared<Handle>()) {
    handle_->comm = c;
    handle_->owned = owned && c != MPI_COMM_NULL && c != MPI_COMM_WORLD && c != MPI_COMM_SELF;
    if (c != MPI_COMM_NULL) {
      MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
      MPI_Comm_rank(c, &rank_);
      MPI_Comm_size(c, &size_);
    }
  }
  std::shared_ptr<Handle> handle_;
  int rank_ = -1, size_ = 0;
};

// ---- Group: world + two-level topology ---------------------------------------------------------
class Group {
 public:
  // Builds the topology over `base` (collective over base). ranks_per_node > 0 simulates nodes of
  // that many consecutive ranks; 0 reads DL_DIST_RANKS_PER_NODE, else uses shared-memory nodes.
  explicit Group(const Communicator& base, int ranks_per_node = 0) : world_(base.dup()) {
    if (ranks_per_node <= 0) {
      if (auto k = detail::env_number("DL_DIST_RANKS_PER_NODE", 1)) ranks_per_node = static_cast<int>(*k);
    }
    if (ranks_per_node > 0) {
      simulated_ = true;
      local_ = world_.split(world_.rank() / ranks_per_node, world_.rank());
    } else {
      MPI_Comm c;
      detail::check_mpi(MPI_Comm_split_type(world_.get(), MPI_COMM_TYPE_SHARED, world_.rank(), MPI_INFO_NULL, &c),
                        "MPI_Comm_split_type", "dist::Group");
      local_ = Communicator::own(c);
    }
    // Peers: one rank from every node, the ones with the same local rank; ordered by world rank so
    // peer rank == node index when every node has the same number of ranks.
    peers_ = world_.split(local_.rank(), world_.rank());
    leaders_ = world_.split(local_.rank() == 0 ? 0 : MPI_UNDEFINED, world_.rank());
    // Node index = this node's leader's rank among leaders; every node has a local rank 0.
    int node = leaders_.valid() ? leaders_.rank() : 0;
    detail::check_mpi(MPI_Bcast(&node, 1, MPI_INT, 0, local_.get()), "MPI_Bcast", "dist::Group");
    node_index_ = node;
    int info[2] = {local_.size(), -local_.size()};  // max and -min of the node sizes
    detail::check_mpi(MPI_Allreduce(MPI_IN_PLACE, info, 2, MPI_INT, MPI_MAX, world_.get()), "MPI_Allreduce",
                      "dist::Group");
    uniform_ = info[0] == -info[1];
    max_local_size_ = info[0];
    num_nodes_ = peers_rank0_count();
    // Physical machines (shared-memory domains), which simulated nodes do not change: on one machine
    // Algorithm::automatic runs MPI's own allreduce (collectives.hpp says why).
    if (simulated_) {
      MPI_Comm c;
      detail::check_mpi(MPI_Comm_split_type(world_.get(), MPI_COMM_TYPE_SHARED, world_.rank(), MPI_INFO_NULL, &c),
                        "MPI_Comm_split_type", "dist::Group");
      Communicator shared = Communicator::own(c);
      int first = shared.rank() == 0 ? 1 : 0;
      detail::check_mpi(MPI_Allreduce(&first, &num_machines_, 1, MPI_INT, MPI_SUM, world_.get()), "MPI_Allreduce",
                        "dist::Group");
    } else {
      num_machines_ = num_nodes_;
    }
    if (auto b = detail::env_number("DL_DIST_SMALL_BYTES", 0)) small_message_bytes_ = static_cast<size_t>(*b);
  }

  int rank() const { return world_.rank(); }
  int size() const { return world_.size(); }
  const Communicator& comm() const { return world_; }
  const Communicator& local() const { return local_; }
  const Communicator& peers() const { return peers_; }
  const Communicator& leaders() const { return leaders_; }  // invalid on non-leaders
  int local_rank() const { return local_.rank(); }
  int local_size() const { return local_.size(); }
  int node_index() const { return node_index_; }
  int num_nodes() const { return num_nodes_; }
  // Physical shared-memory machines; equals num_nodes() unless nodes are simulated.
  int num_machines() const { return num_machines_; }
  bool simulated_nodes() const { return simulated_; }
  // Every node has the same number of ranks (the hierarchical allreduce needs it; see collectives).
  bool uniform_nodes() const { return uniform_; }
  // The largest node's number of ranks (the same on every rank, unlike local_size()).
  int max_local_size() const { return max_local_size_; }

  // Messages up to this many bytes use the leader algorithm under Algorithm::automatic.
  size_t small_message_bytes() const { return small_message_bytes_; }
  void set_small_message_bytes(size_t b) { small_message_bytes_ = b; }
  // Check that every rank passes the same length/op/root before each collective (one tiny
  // allreduce). On by default: a mismatch then throws on every rank instead of hanging.
  bool check_arguments() const { return check_arguments_; }
  void set_check_arguments(bool on) { check_arguments_ = on; }

  std::string describe() const {
    return detail::concat("rank ", rank(), " of ", size(), " (node ", node_index_, " of ", num_nodes_,
                          simulated_ ? " simulated" : "", ", local rank ", local_rank(), " of ", local_size(), ")");
  }

 private:
  int peers_rank0_count() const {
    int is_leader = local_.rank() == 0 ? 1 : 0, n = 0;
    detail::check_mpi(MPI_Allreduce(&is_leader, &n, 1, MPI_INT, MPI_SUM, world_.get()), "MPI_Allreduce",
                      "dist::Group");
    return n;
  }

  Communicator world_, local_, peers_, leaders_;
  int node_index_ = 0, num_nodes_ = 1, num_machines_ = 1, max_local_size_ = 1;
  bool simulated_ = false, uniform_ = true, check_arguments_ = true;
  size_t small_message_bytes_ = 64 * 1024;
};

namespace detail {
inline std::unique_ptr<Group>& default_group() {
  static std::unique_ptr<Group> g;
  return g;
}
inline bool& environment_alive() {
  static bool alive = false;
  return alive;
}
}  // namespace detail

// The default group over MPI_COMM_WORLD, created by Environment.
inline Group& world() {
  check<DistributedError>(detail::default_group() != nullptr,
                          "dist::world: no dl::dist::Environment is alive; create one at the top of main()");
  return *detail::default_group();
}

// ---- Environment --------------------------------------------------------------------------------
class Environment {
 public:
  // `required`: the lowest thread level this program can work with; MULTIPLE is requested so the
  // watchdog can MPI_Abort from its own thread. DataParallel's communication thread needs SERIALIZED.
  Environment(int& argc, char**& argv, ThreadLevel required = ThreadLevel::serialized) { init(&argc, &argv, required); }
  explicit Environment(ThreadLevel required = ThreadLevel::serialized) { init(nullptr, nullptr, required); }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  ~Environment() {
    if (std::uncaught_exceptions() > uncaught_at_start_) {
      // Unwinding from an error: finalizing would wait for peers that may be waiting for us.
      std::fprintf(stderr, "dl::dist: rank %d is leaving with an exception; aborting the job\n",
                   detail::world_rank_or_minus_one());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    detail::default_group().reset();
    {
      detail::Deadline d("MPI_Finalize");  // finalize synchronises with peers: bounded too
      if (owns_mpi_) MPI_Finalize();
    }
    detail::Watchdog::instance().stop();
    detail::environment_alive() = false;
  }

  ThreadLevel provided() const { return provided_; }
  int rank() const { return world().rank(); }
  int size() const { return world().size(); }

  // Aborts every rank of the job (use after catching an error this rank cannot recover from).
  [[noreturn]] static void abort(int code = 1) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  void init(int* argc, char*** argv, ThreadLevel required) {
    check<DistributedError>(!detail::environment_alive(), "dist::Environment: only one may exist at a time");
    int initialized = 0, finalized = 0, level = MPI_THREAD_SINGLE;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    check<DistributedError>(!finalized, "dist::Environment: MPI was already finalized; it cannot be restarted");
    if (initialized) {
      MPI_Query_thread(&level);
    } else {
      detail::check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &level), "MPI_Init_thread",
                        "dist::Environment");
      owns_mpi_ = true;
    }
    provided_ = detail::from_mpi_level(level);
    if (static_cast<int>(provided_) < static_cast<int>(required)) {
      if (owns_mpi_) MPI_Finalize();
      fail<DistributedError>("dist::Environment: needs ", to_string(required), " but the MPI library provides ",
                             to_string(provided_), "; rebuild Open MPI with thread support");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    double timeout_s = detail::env_number("DL_DIST_TIMEOUT", 0).value_or(60.0);
    detail::Watchdog::instance().start(timeout_s, provided_ == ThreadLevel::multiple);
    detail::environment_alive() = true;
    uncaught_at_start_ = std::uncaught_exceptions();
    detail::default_group() = std::make_unique<Group>(Communicator::borrow(MPI_COMM_WORLD));
  }

  ThreadLevel provided_ = ThreadLevel::single;
  bool owns_mpi_ = false;
  int uncaught_at_start_ = 0;
};

}  // namespace dl::dist
