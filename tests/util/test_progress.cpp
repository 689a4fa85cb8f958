#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <vector>

#include "dl/util/progress.hpp"

using dl::util::ProgressBar;
using dl::util::ProgressOptions;

namespace {
std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);) out.push_back(l);
  return out;
}
}  // namespace

TEST_CASE("progress: plain lines every N percent on a non-terminal stream") {
  std::ostringstream os;
  double now = 0;
  ProgressBar bar(200, {.desc = "epoch 2/10", .plain_every_percent = 25, .plain_every_seconds = 0,
                        .clock = [&] { return now; }}, os);
  CHECK_FALSE(bar.is_terminal());  // a string stream is never a terminal
  for (int s = 1; s <= 200; ++s) {
    now = s * 0.01;
    bar.update(s, {{"loss", 1.0 / s}, {"acc", s / 200.0}});
  }
  bar.finish();
  auto l = lines(os.str());
  REQUIRE(l.size() == 4);  // 25, 50, 75, 100 %; finish adds nothing after the 100% line
  CHECK(l[0] == "epoch 2/10 50/200 (25%) elapsed 0.5s ETA 1.5s loss 0.0200 acc 0.2500");
  CHECK(l[1].rfind("epoch 2/10 100/200 (50%)", 0) == 0);
  CHECK(l[3] == "epoch 2/10 200/200 (100%) elapsed 2.0s loss 0.0050 acc 1.0000");
  CHECK(os.str().find('\r') == std::string::npos);
}

TEST_CASE("progress: plain lines every K seconds, and a final line from finish()") {
  std::ostringstream os;
  double now = 0;
  ProgressBar bar(1000, {.plain_every_percent = 0, .plain_every_seconds = 5, .clock = [&] { return now; }}, os);
  for (int s = 1; s <= 990; ++s) {
    now = s * 0.02;  // 19.8 s in all: lines at 5, 10, 15 s
    bar.update(s);
  }
  bar.finish({{"loss", 0.25}});
  auto l = lines(os.str());
  REQUIRE(l.size() == 4);
  CHECK(l[0] == "250/1000 (25%) elapsed 5.0s ETA 15.0s");
  CHECK(l[3] == "990/1000 (99%) elapsed 19.8s ETA 0.2s loss 0.2500");
}

TEST_CASE("progress: terminal mode redraws one line with bar, count, ETA and fields") {
  std::ostringstream os;
  double now = 0;
  ProgressBar bar(4, {.desc = "train", .mode = ProgressOptions::Mode::terminal, .width = 8, .redraw_seconds = 0,
                      .clock = [&] { return now; }}, os);
  now = 1;
  bar.update(1, {{"loss", 0.5}});
  now = 2;
  bar.update(2);
  now = 4;
  bar.update(4, {{"acc", 0.75}});
  bar.finish();
  std::string out = os.str();
  CHECK(out.find("\rtrain [==>     ] 1/4  ETA 0:03  loss 0.5000") != std::string::npos);
  CHECK(out.find("\rtrain [====>   ] 2/4  ETA 0:02") != std::string::npos);
  CHECK(out.find("\rtrain [========] 4/4  0:04  acc 0.7500") != std::string::npos);
  CHECK(out.back() == '\n');
  CHECK(lines(out).size() == 1);  // everything on one line
  CHECK_THROWS_WITH_AS(bar.update(5), doctest::Contains("step 5 is out of range [0, 4]"), dl::ValueError);
}

TEST_CASE("progress: epoch summary line") {
  CHECK(dl::util::epoch_summary(3, 10, {{"loss", 0.28714}, {"acc", 0.8972}}, 12.34, 4862.4) ==
        "epoch 3/10: loss 0.2871  acc 0.8972  (12.3s, 4862 samples/s)");
  CHECK(dl::util::epoch_summary(1, 0, {}, 125) == "epoch 1:  (125s)");
  CHECK(dl::util::detail::format_clock(3725) == "1:02:05");
  CHECK_THROWS_AS(ProgressBar(-1), dl::ValueError);
}
