// Shared helpers for the dl benchmarks: command-line options (--threads N, --json, --repeats N),
// a timer that warms up, repeats and reports the median with its spread, and a result table that
// prints either for people (aligned columns, ratio against a named baseline row) or, with --json,
// one JSON object per row:
//
//   {"bench": "elementwise", "name": "dl fused", "value": 21.3, "unit": "GB/s",
//    "ratio": 0.93, "baseline": "copy", "median_s": 0.0503, "spread": 0.012, "threads": 2}
//
// Every benchmark compares in one run (see /work/shared/BENCHMARKING.md): the peer or the
// physical limit is measured by the same program, on the same data, with the same thread count.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace dl::bench {

struct Options {
  int threads = 2;       // pinned on every side (dl, Eigen, OpenBLAS, OpenMP)
  bool json = false;     // one JSON object per row instead of the table
  int repeats = 0;       // 0: the benchmark's default
  bool quick = false;    // smaller problem sizes, for a smoke run
  std::vector<std::string> rest;  // arguments this parser does not know
};

inline Options parse_options(int argc, char** argv, const char* usage_extra = "") {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", argv[0], flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") o.threads = std::atoi(value("--threads").c_str());
    else if (a.rfind("--threads=", 0) == 0) o.threads = std::atoi(a.c_str() + 10);
    else if (a == "--repeats") o.repeats = std::atoi(value("--repeats").c_str());
    else if (a == "--json") o.json = true;
    else if (a == "--quick") o.quick = true;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: %s [--threads N] [--repeats N] [--json] [--quick] %s\n", argv[0], usage_extra);
      std::exit(0);
    } else o.rest.push_back(a);
  }
  if (o.threads < 1) {
    std::fprintf(stderr, "%s: --threads must be positive\n", argv[0]);
    std::exit(2);
  }
  return o;
}

struct Timing {
  double median_s = 0, min_s = 0, max_s = 0;
  int repeats = 0;
  // (max - min) / median: how far apart the repeats were.
  double spread() const { return median_s > 0 ? (max_s - min_s) / median_s : 0; }
};

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median, min and max of a set of per-call times.
inline Timing summarise(std::vector<double> t) {
  Timing out;
  if (t.empty()) return out;
  std::sort(t.begin(), t.end());
  out.repeats = static_cast<int>(t.size());
  out.min_s = t.front();
  out.max_s = t.back();
  size_t n = t.size();
  out.median_s = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  return out;
}

// Runs fn `warmup` times, then `repeats` timed times (each timed call may loop `inner` times;
// the reported time is per call of fn). Median and min/max of the per-call times.
inline Timing time_it(const std::function<void()>& fn, int repeats, int warmup = 1, int inner = 1) {
  for (int i = 0; i < warmup; ++i)
    for (int k = 0; k < inner; ++k) fn();
  std::vector<double> t;
  t.reserve(static_cast<size_t>(repeats));
  for (int r = 0; r < repeats; ++r) {
    double t0 = now_s();
    for (int k = 0; k < inner; ++k) fn();
    t.push_back((now_s() - t0) / inner);
  }
  return summarise(std::move(t));
}

// The timing rule of a training-step benchmark, the same on every side (dl, libtorch): `warmup`
// steps, `probe` steps to estimate one step, then `repeats` timed repeats of enough steps to last
// `target_s` (at least `min_steps`). Timing is per step; steps is the steps per repeat.
struct StepTiming {
  Timing timing;
  int steps = 0;
};
inline StepTiming time_steps(const std::function<void()>& step, int repeats, double target_s, int warmup, int probe,
                             int min_steps) {
  for (int i = 0; i < warmup; ++i) step();
  double t0 = now_s();
  for (int i = 0; i < probe; ++i) step();
  const double per_step = (now_s() - t0) / probe;
  StepTiming out;
  out.steps = std::max(min_steps, static_cast<int>(target_s / std::max(per_step, 1e-7)));
  out.timing = time_it(step, repeats, /*warmup=*/0, out.steps);
  return out;
}

// Picks `inner` so that one timed repeat lasts at least `target_s` (for microsecond kernels).
inline int calibrate_inner(const std::function<void()>& fn, double target_s = 0.02) {
  int inner = 1;
  for (;;) {
    double t0 = now_s();
    for (int k = 0; k < inner; ++k) fn();
    double dt = now_s() - t0;
    if (dt >= target_s || inner >= (1 << 24)) return inner;
    inner = dt <= 0 ? inner * 16 : std::max(inner * 2, static_cast<int>(inner * target_s / dt * 1.2));
  }
}

struct Row {
  std::string group;     // a section of the table (a shape, a size); rows compare within a group
  std::string name;      // who ran: "dl fused", "Eigen", "OpenBLAS", "copy"
  double value = 0;      // the figure (GB/s, GFLOP/s, us)
  std::string unit;
  std::string baseline;  // the row (same group) the ratio is taken against; empty: none
  bool higher_is_better = true;
  Timing timing;
  std::string note;
};

// Collects rows, computes ratio = value / baseline value (inverted for lower-is-better units, so
// a ratio > 1 always means "this row is faster than its baseline"), and prints them.
class Table {
 public:
  Table(std::string bench, const Options& opt) : bench_(std::move(bench)), opt_(opt) {}

  Row& add(Row r) {
    rows_.push_back(std::move(r));
    return rows_.back();
  }
  // Adds a row whose value is work / median time (e.g. bytes -> B/s scaled by `scale`).
  Row& add_rate(const std::string& group, const std::string& name, const Timing& t, double work, double scale,
                const std::string& unit, const std::string& baseline = "") {
    Row r;
    r.group = group;
    r.name = name;
    r.timing = t;
    r.value = t.median_s > 0 ? work / t.median_s / scale : 0;
    r.unit = unit;
    r.baseline = baseline;
    return add(std::move(r));
  }
  // Adds a row whose value is the median time in `unit` (lower is better).
  Row& add_time(const std::string& group, const std::string& name, const Timing& t, double scale,
                const std::string& unit, const std::string& baseline = "") {
    Row r;
    r.group = group;
    r.name = name;
    r.timing = t;
    r.value = t.median_s * scale;
    r.unit = unit;
    r.baseline = baseline;
    r.higher_is_better = false;
    return add(std::move(r));
  }

  double ratio(const Row& r) const {
    if (r.baseline.empty()) return std::nan("");
    for (const auto& b : rows_)
      if (b.group == r.group && b.name == r.baseline && b.value > 0 && r.value > 0)
        return r.higher_is_better ? r.value / b.value : b.value / r.value;
    return std::nan("");
  }
  const Row* find(const std::string& group, const std::string& name) const {
    for (const auto& r : rows_)
      if (r.group == group && r.name == name) return &r;
    return nullptr;
  }

  void print(const std::string& header_note = "") const {
    if (opt_.json) {
      for (const auto& r : rows_) {
        double q = ratio(r);
        std::printf("{\"bench\": \"%s\", \"group\": \"%s\", \"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", ",
                    escape(bench_).c_str(), escape(r.group).c_str(), escape(r.name).c_str(), r.value, escape(r.unit).c_str());
        if (std::isnan(q)) std::printf("\"ratio\": null, \"baseline\": null, ");
        else std::printf("\"ratio\": %.4f, \"baseline\": \"%s\", ", q, escape(r.baseline).c_str());
        std::printf("\"median_s\": %.6g, \"spread\": %.4f, \"repeats\": %d, \"threads\": %d%s%s%s}\n", r.timing.median_s,
                    r.timing.spread(), r.timing.repeats, opt_.threads, r.note.empty() ? "" : ", \"note\": \"",
                    escape(r.note).c_str(), r.note.empty() ? "" : "\"");
      }
      std::fflush(stdout);
      return;
    }
    std::printf("== %s  (threads %d, %s)%s%s\n", bench_.c_str(), opt_.threads, date().c_str(),
                header_note.empty() ? "" : "  ", header_note.c_str());
    size_t wg = 5, wn = 4;
    for (const auto& r : rows_) {
      wg = std::max(wg, r.group.size());
      wn = std::max(wn, r.name.size());
    }
    std::printf("%-*s  %-*s  %12s %-8s %8s  %-*s %9s\n", static_cast<int>(wg), "group", static_cast<int>(wn), "name",
                "value", "unit", "spread", static_cast<int>(wn + 3), "ratio vs", "");
    std::string last;
    for (const auto& r : rows_) {
      double q = ratio(r);
      char ratio_s[64] = "";
      if (!std::isnan(q)) std::snprintf(ratio_s, sizeof ratio_s, "%.3fx", q);
      std::printf("%-*s  %-*s  %12.4g %-8s %7.1f%%  %-*s %9s%s%s\n", static_cast<int>(wg),
                  r.group == last ? "" : r.group.c_str(), static_cast<int>(wn), r.name.c_str(), r.value, r.unit.c_str(),
                  100 * r.timing.spread(), static_cast<int>(wn + 3), r.baseline.c_str(), ratio_s,
                  r.note.empty() ? "" : "  ", r.note.c_str());
      last = r.group;
    }
    std::fflush(stdout);
  }

  static std::string date() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", std::localtime(&t));
    return buf;
  }
  // The 1-minute load average, so a table says how busy the machine was.
  static double load_average() {
    std::ifstream f("/proc/loadavg");
    double l = -1;
    f >> l;
    return l;
  }

 private:
  static std::string escape(const std::string& s) {
    std::string o;
    for (char c : s) {
      if (c == '"' || c == '\\') o += '\\';
      o += c;
    }
    return o;
  }
  std::string bench_;
  Options opt_;
  std::deque<Row> rows_;  // a deque: references returned by add() stay valid
};

}  // namespace dl::bench
