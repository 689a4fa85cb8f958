// ProgressBar for training loops. On a terminal it redraws one line in place ('\r'):
//
//   epoch 2/10 [==========>         ] 235/469  ETA 0:04  loss 0.4123  acc 0.8512
//
// When the stream is not a terminal (a log file, a CI job, a pipe) it prints plain lines
// instead, one each time progress crosses another `plain_every_percent` percent or
// `plain_every_seconds` seconds pass, so logs stay readable and small:
//
//   epoch 2/10 235/469 (50%) elapsed 3.1s ETA 3.1s loss 0.4123 acc 0.8512
//
// epoch_summary() formats the one line per epoch that most trainers print at the end.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "dl/core/error.hpp"

namespace dl::util {

using Field = std::pair<std::string, double>;  // {"loss", 0.41}
using Fields = std::vector<Field>;

namespace detail {
inline std::string format_fields(const Fields& fields, const char* sep) {
  std::string s;
  char buf[64];
  for (const auto& [name, value] : fields) {
    std::snprintf(buf, sizeof buf, "%.4f", value);
    s += sep + name + " " + buf;
  }
  return s;
}
// 75 -> "1:15", 3725 -> "1:02:05".
inline std::string format_clock(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto t = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}
inline std::string format_seconds(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, seconds < 100 ? "%.1fs" : "%.0fs", seconds);
  return buf;
}
inline bool stream_is_terminal(const std::ostream& os) {
  if (&os == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  if (&os == &std::cerr || &os == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  return false;  // any other stream (file, string) is not a terminal
}
}  // namespace detail

struct ProgressOptions {
  enum class Mode { auto_detect, terminal, plain };
  std::string desc = "";             // line prefix, e.g. "epoch 2/10"
  Mode mode = Mode::auto_detect;     // auto: terminal iff the stream is std::cout/cerr on a tty
  int width = 30;                    // bar characters (terminal mode)
  double plain_every_percent = 10;   // plain mode: a line per this many percent (0 = off)
  double plain_every_seconds = 30;   // plain mode: and at least this often (0 = off)
  double redraw_seconds = 0.1;       // terminal mode: redraw at most this often
  std::function<double()> clock = nullptr;  // seconds; a steady clock when empty (tests set one)
};

class ProgressBar {
 public:
  explicit ProgressBar(int64_t total, ProgressOptions options = {}, std::ostream& os = std::cout)
      : total_(total), opt_(std::move(options)), os_(os) {
    check<ValueError>(total >= 0, "ProgressBar: total must be non-negative, got ", total);
    check<ValueError>(opt_.width >= 0, "ProgressBar: width must be non-negative, got ", opt_.width);
    check<ValueError>(opt_.plain_every_percent >= 0 && opt_.plain_every_seconds >= 0,
                      "ProgressBar: plain_every_percent and plain_every_seconds must be non-negative");
    if (!opt_.clock) {
      auto t0 = std::chrono::steady_clock::now();
      opt_.clock = [t0] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    }
    terminal_ = opt_.mode == ProgressOptions::Mode::terminal ||
                (opt_.mode == ProgressOptions::Mode::auto_detect && detail::stream_is_terminal(os_));
    start_ = last_print_ = opt_.clock();
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() {
    if (terminal_ && drawn_ && !finished_) os_ << '\n' << std::flush;  // leave the cursor on a fresh line
  }

  bool is_terminal() const { return terminal_; }
  int64_t step() const { return step_; }

  // Sets the number of completed steps (0..total) and the fields to show.
  void update(int64_t step, const Fields& fields = {}) {
    check<ValueError>(step >= 0 && step <= total_, "ProgressBar: step ", step, " is out of range [0, ", total_, "]");
    step_ = step;
    fields_ = fields;
    double now = opt_.clock();
    if (terminal_) {
      if (step == total_ || !drawn_ || now - last_print_ >= opt_.redraw_seconds) draw(now);
      return;
    }
    int64_t bucket = percent_bucket(step);
    bool by_percent = opt_.plain_every_percent > 0 && bucket > last_bucket_;
    bool by_time = opt_.plain_every_seconds > 0 && now - last_print_ >= opt_.plain_every_seconds;
    if (by_percent || by_time) print_plain(now, bucket);
  }
  void advance(int64_t n = 1, const Fields& fields = {}) { update(std::min(total_, step_ + n), fields); }

  // Completes the bar: a last redraw and newline on a terminal, a final line in plain mode
  // unless the last line printed already showed the final step.
  void finish(const Fields& fields = {}) {
    if (finished_) return;
    if (!fields.empty()) fields_ = fields;
    double now = opt_.clock();
    if (terminal_) {
      draw(now);
      os_ << '\n' << std::flush;
    } else if (last_printed_step_ != step_) {
      print_plain(now, percent_bucket(step_));
    }
    finished_ = true;
  }

 private:
  int64_t percent_bucket(int64_t step) const {
    if (total_ == 0 || opt_.plain_every_percent <= 0) return 0;
    return static_cast<int64_t>(std::floor(100.0 * static_cast<double>(step) / static_cast<double>(total_) /
                                           opt_.plain_every_percent + 1e-9));
  }
  double eta(double now) const {
    if (step_ == 0) return -1;
    return (now - start_) / static_cast<double>(step_) * static_cast<double>(total_ - step_);
  }
  void draw(double now) {
    std::string line = opt_.desc.empty() ? "" : opt_.desc + " ";
    int filled = total_ ? static_cast<int>(static_cast<double>(opt_.width) * static_cast<double>(step_) /
                                           static_cast<double>(total_))
                        : opt_.width;
    std::string bar(static_cast<size_t>(opt_.width), ' ');
    for (int i = 0; i < filled; ++i) bar[static_cast<size_t>(i)] = '=';
    if (filled < opt_.width && filled > 0) bar[static_cast<size_t>(filled)] = '>';
    line += "[" + bar + "] " + std::to_string(step_) + "/" + std::to_string(total_);
    line += step_ == total_ ? "  " + detail::format_clock(now - start_) : "  ETA " + detail::format_clock(eta(now));
    line += detail::format_fields(fields_, "  ");
    size_t len = line.size();
    if (len < last_len_) line.append(last_len_ - len, ' ');  // erase the tail of a longer previous line
    last_len_ = len;
    os_ << '\r' << line << std::flush;
    drawn_ = true;
    last_print_ = now;
  }
  void print_plain(double now, int64_t bucket) {
    std::string line = opt_.desc.empty() ? "" : opt_.desc + " ";
    line += std::to_string(step_) + "/" + std::to_string(total_);
    int pct = total_ ? static_cast<int>(100 * step_ / total_) : 100;
    line += " (" + std::to_string(pct) + "%) elapsed " + detail::format_seconds(now - start_);
    if (step_ < total_) line += " ETA " + (step_ ? detail::format_seconds(eta(now)) : std::string("?"));
    line += detail::format_fields(fields_, " ");
    os_ << line << '\n' << std::flush;
    last_print_ = now;
    last_bucket_ = bucket;
    last_printed_step_ = step_;
  }

  int64_t total_;
  ProgressOptions opt_;
  std::ostream& os_;
  bool terminal_ = false, drawn_ = false, finished_ = false;
  int64_t step_ = 0, last_bucket_ = 0, last_printed_step_ = -1;
  double start_ = 0, last_print_ = 0;
  size_t last_len_ = 0;
  Fields fields_;
};

// "epoch 3/10: loss 0.2871  acc 0.8972  (12.3s, 4862 samples/s)"; epochs <= 0 omits "/10",
// samples_per_second <= 0 omits the rate.
inline std::string epoch_summary(int64_t epoch, int64_t epochs, const Fields& fields, double seconds,
                                 double samples_per_second = 0) {
  std::string s = "epoch " + std::to_string(epoch) + (epochs > 0 ? "/" + std::to_string(epochs) : "") + ":";
  std::string f = detail::format_fields(fields, "  ");
  s += f.empty() ? "" : " " + f.substr(2);
  s += "  (" + detail::format_seconds(seconds);
  if (samples_per_second > 0) {
    char buf[48];
    std::snprintf(buf, sizeof buf, ", %.0f samples/s", samples_per_second);
    s += buf;
  }
  return s + ")";
}

}  // namespace dl::util
