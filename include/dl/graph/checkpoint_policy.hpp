// Checkpoint policies: which block inputs of a deep stack are kept for backward, and which are
// recomputed. A stack of n blocks is cut into segments; each segment runs once without a tape and
// is recomputed (with the tape) during backward, so only segment boundaries stay alive between the
// two passes (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"). graph::repeat
// runs the last segment with the tape instead (its backward comes first: the same peak, one
// segment's recomputation less), so the plan's figures below stay an upper bound.
//
//   none          no checkpointing: every block keeps its activations (one segment, not recomputed)
//   every(k)      segments of k blocks: n/k boundaries kept, k blocks recomputed at a time
//   sqrt          every(round(sqrt n)): O(sqrt n) memory for one extra forward pass
//   budget(bytes) Chen's greedy plan: walk the blocks in order and start a new segment (keep its
//                 input) when adding the next block would take the activation bytes since the
//                 last kept input past the budget; every segment then recomputes at most `bytes`
//                 (a block bigger than the budget gets a segment to itself)
//
// plan() is a pure function of (policy, per-block activation bytes, per-block output bytes): the
// eager graph::repeat calls it with bytes measured on one block, the compiled path with bytes from
// its memory plan.
//
//   auto p = dl::graph::checkpoint::plan(dl::graph::checkpoint::every(4), std::vector<int64_t>(10, 100),
//                                        std::vector<int64_t>(10, 10));
//   // p.starts = {0, 4, 8}; p.kept_bytes = 30 (3 segment outputs); p.segment_bytes = 400
//   auto q = dl::graph::checkpoint::parse("budget=64M");   // budget{67108864}
#pragma once
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "dl/core/error.hpp"

namespace dl::graph::checkpoint {

struct none {};
struct every {
  int64_t k = 1;  // blocks per segment
};
struct sqrt {};
struct budget {
  int64_t bytes = 0;  // the most activation bytes one segment may recompute
};

// One of the four policies; converts implicitly from each, so `repeat(make, n, every(4))` reads.
class Policy {
 public:
  Policy() = default;
  Policy(none p) : v_(p) {}
  Policy(every p) : v_(p) {
    check<ValueError>(p.k > 0, "checkpoint policy: every(k) needs k > 0, got ", p.k);
  }
  Policy(sqrt p) : v_(p) {}
  Policy(budget p) : v_(p) {
    check<ValueError>(p.bytes > 0, "checkpoint policy: budget(bytes) needs bytes > 0, got ", p.bytes);
  }

  bool is_none() const { return std::holds_alternative<none>(v_); }
  template <class P>
  bool holds() const { return std::holds_alternative<P>(v_); }
  template <class P>
  const P& get() const { return std::get<P>(v_); }

  // "none", "sqrt", "every=4", "budget=67108864": the form parse() reads back.
  std::string to_string() const {
    if (auto* e = std::get_if<every>(&v_)) return "every=" + std::to_string(e->k);
    if (auto* b = std::get_if<budget>(&v_)) return "budget=" + std::to_string(b->bytes);
    return holds<sqrt>() ? "sqrt" : "none";
  }
  friend bool operator==(const Policy& a, const Policy& b) { return a.to_string() == b.to_string(); }

 private:
  std::variant<none, every, sqrt, budget> v_;
};

// "4096", "64K", "64M", "1G", "1.5G", "512MiB", "2GB": binary multiples (K = 1024). Whitespace
// around the number is not accepted.
inline int64_t parse_bytes(std::string_view text) {
  auto bad = [&](const char* why) {
    fail<ValueError>("checkpoint policy: bad byte count '", std::string(text), "' (", why,
                     "); expected e.g. 1048576, 64K, 64M, 1G");
  };
  if (text.empty()) bad("empty");
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) bad("no number");
  std::string number(text.substr(0, i));
  char* end = nullptr;
  double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size()) bad("not a number");
  std::string unit;
  for (char c : text.substr(i)) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double scale = 1;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  else bad("unknown unit; use K, M, G or T");
  double bytes = value * scale;
  if (!(bytes >= 1)) bad("must be at least 1 byte");
  if (bytes > static_cast<double>(std::numeric_limits<int64_t>::max() / 2)) bad("too large");
  return static_cast<int64_t>(std::llround(bytes));
}

// "none", "sqrt", "every=K", "budget=BYTES" (BYTES as parse_bytes reads it).
inline Policy parse(std::string_view text) {
  auto usage = [&](const std::string& why) -> Policy {
    fail<ValueError>("checkpoint policy: cannot parse '", std::string(text), "': ", why,
                     "; expected none, sqrt, every=K or budget=BYTES (e.g. budget=64M)");
  };
  if (text == "none") return none{};
  if (text == "sqrt") return sqrt{};
  if (text.starts_with("every=")) {
    std::string k(text.substr(6));
    char* end = nullptr;
    long long v = std::strtoll(k.c_str(), &end, 10);
    if (k.empty() || *end != '\0' || v <= 0) return usage("K must be a positive integer, got '" + k + "'");
    return every{v};
  }
  if (text.starts_with("budget=")) return budget{parse_bytes(text.substr(7))};
  return usage("unknown policy");
}

// "12.3 MiB": bytes for people.
inline std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (std::abs(v) >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// Which blocks start a segment, and what the plan keeps. Bytes are estimates from the figures
// given to plan(): kept_bytes = the segment outputs that stay alive between forward and backward
// (each is the next segment's input; the last is the stack's output), segment_bytes = the most
// activation bytes one segment holds while it is recomputed. Without checkpointing nothing is
// recomputed and every block's activations are kept: kept_bytes is their sum, segment_bytes 0.
struct Plan {
  int64_t blocks = 0;
  bool checkpointed = false;
  std::vector<int64_t> starts;  // first block of each segment, ascending, starts[0] == 0
  int64_t kept_bytes = 0;
  int64_t segment_bytes = 0;

  int64_t num_segments() const { return static_cast<int64_t>(starts.size()); }
  // Segment s covers blocks [begin, end).
  std::pair<int64_t, int64_t> segment(int64_t s) const {
    return {starts[static_cast<size_t>(s)], s + 1 < num_segments() ? starts[static_cast<size_t>(s + 1)] : blocks};
  }
  int64_t planned_bytes() const { return kept_bytes + segment_bytes; }
  // Forward passes over the blocks per training step: 2 with checkpointing (one to keep the
  // boundaries, one to recompute the segments; at most 2, since graph::repeat does not recompute the
  // last segment), 1 without.
  int forward_passes() const { return checkpointed ? 2 : 1; }

  std::string to_string() const {
    std::string s = std::to_string(blocks) + " blocks, ";
    if (!checkpointed) return s + "no checkpointing: keeps " + format_bytes(kept_bytes) + " of activations";
    return s + std::to_string(num_segments()) + " segments: keeps " + format_bytes(kept_bytes) +
           " of segment outputs + recomputes at most " + format_bytes(segment_bytes) + " = " +
           format_bytes(planned_bytes()) + " planned";
  }
};

// The segment starts of `policy` for n blocks with the given activation bytes (only budget reads
// them; the others need only n).
inline std::vector<int64_t> segment_starts(const Policy& policy, std::span<const int64_t> activation_bytes) {
  const auto n = static_cast<int64_t>(activation_bytes.size());
  std::vector<int64_t> starts;
  if (n == 0) return starts;
  int64_t k = n;
  if (policy.holds<every>()) k = policy.get<every>().k;
  else if (policy.holds<sqrt>()) k = std::max<int64_t>(1, std::llround(std::sqrt(static_cast<double>(n))));
  if (policy.holds<budget>()) {
    // Chen et al.'s greedy pass: keep adding blocks to the open segment while it fits the budget.
    const int64_t limit = policy.get<budget>().bytes;
    int64_t running = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = activation_bytes[static_cast<size_t>(i)];
      check<ValueError>(a >= 0, "checkpoint plan: activation bytes of block ", i, " are negative (", a, ")");
      if (i == 0 || running + a > limit) {
        starts.push_back(i);
        running = 0;
      }
      running += a;
    }
    return starts;
  }
  for (int64_t i = 0; i < n; i += k) starts.push_back(i);
  return starts;
}

// The plan of `policy` for blocks with the given activation bytes (what a block keeps alive for
// backward when it is not checkpointed, its output included) and output bytes (what a segment
// ending at that block keeps).
inline Plan plan(const Policy& policy, std::span<const int64_t> activation_bytes, std::span<const int64_t> output_bytes) {
  check<ValueError>(activation_bytes.size() == output_bytes.size(), "checkpoint plan: ", activation_bytes.size(),
                    " activation sizes but ", output_bytes.size(), " output sizes");
  Plan p;
  p.blocks = static_cast<int64_t>(activation_bytes.size());
  p.checkpointed = !policy.is_none();
  p.starts = segment_starts(policy, activation_bytes);
  if (!p.checkpointed) {
    for (int64_t a : activation_bytes) p.kept_bytes += a;
    return p;
  }
  for (int64_t s = 0; s < p.num_segments(); ++s) {
    auto [begin, end] = p.segment(s);
    int64_t seg = 0;
    for (int64_t i = begin; i < end; ++i) seg += activation_bytes[static_cast<size_t>(i)];
    p.segment_bytes = std::max(p.segment_bytes, seg);
    p.kept_bytes += output_bytes[static_cast<size_t>(end - 1)];
  }
  return p;
}

// The same for n identical blocks.
inline Plan plan(const Policy& policy, int64_t n, int64_t activation_bytes, int64_t output_bytes) {
  check<ValueError>(n >= 0, "checkpoint plan: number of blocks must be non-negative, got ", n);
  std::vector<int64_t> act(static_cast<size_t>(n), activation_bytes), out(static_cast<size_t>(n), output_bytes);
  return plan(policy, act, out);
}

// The budget that balances what is kept against what is recomputed for n identical blocks: with
// segments of k blocks the plan holds n/k outputs + k blocks' activations, least at
// k = sqrt(n * output / activation) (Chen et al.'s sqrt(xy) choice); the budget is k blocks.
// With activations of ~4 outputs per block this keeps half as many boundaries as sqrt's k = sqrt n.
inline budget balanced_budget(int64_t n, int64_t activation_bytes, int64_t output_bytes) {
  check<ValueError>(n > 0 && activation_bytes > 0 && output_bytes > 0,
                    "checkpoint policy: balanced_budget needs positive blocks and bytes, got (", n, ", ", activation_bytes,
                    ", ", output_bytes, ")");
  const double k = std::sqrt(static_cast<double>(n) * static_cast<double>(output_bytes) / static_cast<double>(activation_bytes));
  return budget{std::max<int64_t>(1, std::llround(k)) * activation_bytes};
}

}  // namespace dl::graph::checkpoint
