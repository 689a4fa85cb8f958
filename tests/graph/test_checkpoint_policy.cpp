// graph::checkpoint policies: parsing, segment starts of every policy, Chen's greedy budget plan,
// the kept / recomputed byte figures, and the error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dl/graph/checkpoint_policy.hpp"

#include "support/message_of.hpp"

using namespace dl;
namespace ck = dl::graph::checkpoint;
using dl_test::message_of;

namespace {
std::vector<int64_t> starts(const ck::Policy& p, int64_t n) {
  return ck::segment_starts(p, std::vector<int64_t>(static_cast<size_t>(n), 1));
}
}  // namespace

TEST_CASE("checkpoint policy: parse and print") {
  CHECK(ck::parse("none").is_none());
  CHECK(ck::parse("sqrt").holds<ck::sqrt>());
  CHECK(ck::parse("every=7").get<ck::every>().k == 7);
  CHECK(ck::parse("budget=4096").get<ck::budget>().bytes == 4096);
  CHECK(ck::parse("budget=64K").get<ck::budget>().bytes == 64 * 1024);
  CHECK(ck::parse("budget=64M").get<ck::budget>().bytes == 64LL << 20);
  CHECK(ck::parse("budget=1G").get<ck::budget>().bytes == 1LL << 30);
  CHECK(ck::parse("budget=1.5g").get<ck::budget>().bytes == 3LL << 29);
  CHECK(ck::parse("budget=512MiB").get<ck::budget>().bytes == 512LL << 20);
  for (const char* text : {"none", "sqrt", "every=3", "budget=1000"}) CHECK(ck::parse(text).to_string() == text);
  CHECK(ck::parse("budget=1K") == ck::Policy(ck::budget{1024}));
  CHECK(ck::parse_bytes("2GB") == 2LL << 30);
}

TEST_CASE("checkpoint policy: bad input names the problem") {
  CHECK(message_of<ValueError>([] { ck::parse("sqrt2"); }).find("cannot parse 'sqrt2': unknown policy") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("every=0"); }).find("K must be a positive integer, got '0'") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("every=x"); }).find("got 'x'") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("every="); }).find("positive integer") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("budget=12Q"); }).find("bad byte count '12Q' (unknown unit") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("budget="); }).find("bad byte count '' (empty)") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("budget=M"); }).find("(no number)") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("budget=0"); }).find("at least 1 byte") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::parse("budget=1.2.3M"); }).find("not a number") != std::string::npos);
  CHECK(message_of<ValueError>([] { (void)ck::Policy(ck::every{-2}); }).find("every(k) needs k > 0, got -2") != std::string::npos);
  CHECK(message_of<ValueError>([] { (void)ck::Policy(ck::budget{0}); }).find("budget(bytes) needs bytes > 0") != std::string::npos);
  CHECK(message_of<ValueError>([] { ck::plan(ck::sqrt{}, std::vector<int64_t>(3), std::vector<int64_t>(2)); })
            .find("3 activation sizes but 2 output sizes") != std::string::npos);
}

TEST_CASE("checkpoint policy: segment starts of none, every and sqrt") {
  CHECK(starts(ck::none{}, 5) == std::vector<int64_t>{0});
  CHECK(starts(ck::every{2}, 5) == std::vector<int64_t>{0, 2, 4});
  CHECK(starts(ck::every{1}, 3) == std::vector<int64_t>{0, 1, 2});
  CHECK(starts(ck::every{10}, 4) == std::vector<int64_t>{0});
  CHECK(starts(ck::sqrt{}, 16) == std::vector<int64_t>{0, 4, 8, 12});
  CHECK(starts(ck::sqrt{}, 1) == std::vector<int64_t>{0});
  CHECK(starts(ck::sqrt{}, 0).empty());
  // Property: sqrt segments have round(sqrt n) blocks, all but the last full, for many n.
  for (int64_t n = 1; n <= 2000; n += 37) {
    auto s = starts(ck::sqrt{}, n);
    const int64_t k = std::llround(std::sqrt(static_cast<double>(n)));
    REQUIRE(!s.empty());
    CHECK(s.front() == 0);
    CHECK(static_cast<int64_t>(s.size()) == (n + k - 1) / k);
    for (size_t i = 1; i < s.size(); ++i) CHECK(s[i] - s[i - 1] == k);
  }
  CHECK(starts(ck::sqrt{}, 1000).size() == 32);  // k = 32: 31 full segments and one of 8
}

TEST_CASE("checkpoint policy: budget is Chen's greedy walk") {
  // Segments grow while their activation bytes stay within the budget.
  std::vector<int64_t> act{3, 3, 3, 3, 3, 3, 3};
  CHECK(ck::segment_starts(ck::budget{9}, act) == std::vector<int64_t>{0, 3, 6});
  CHECK(ck::segment_starts(ck::budget{8}, act) == std::vector<int64_t>{0, 2, 4, 6});
  CHECK(ck::segment_starts(ck::budget{100}, act) == std::vector<int64_t>{0});
  // Uneven blocks; a block larger than the budget gets a segment to itself.
  std::vector<int64_t> uneven{1, 2, 10, 1, 1, 4, 4};
  CHECK(ck::segment_starts(ck::budget{5}, uneven) == std::vector<int64_t>{0, 2, 3, 5, 6});
  auto p = ck::plan(ck::budget{5}, uneven, std::vector<int64_t>(7, 1));
  CHECK(p.segment_bytes == 10);
  CHECK(p.kept_bytes == 5);
  // Property: every segment of a budget plan fits the budget unless it is one block, and no two
  // neighbouring segments would have fitted together.
  uint64_t state = 12345;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> a(1 + trial % 50);
    for (auto& v : a) v = static_cast<int64_t>((state = state * 6364136223846793005ULL + 1442695040888963407ULL) >> 58);
    const int64_t limit = 8 + trial % 40;
    auto plan = ck::plan(ck::budget{limit}, a, std::vector<int64_t>(a.size(), 1));
    for (int64_t s = 0; s < plan.num_segments(); ++s) {
      auto [b, e] = plan.segment(s);
      int64_t bytes = 0;
      for (int64_t i = b; i < e; ++i) bytes += a[static_cast<size_t>(i)];
      CHECK((bytes <= limit || e - b == 1));
      if (e < plan.blocks) CHECK(bytes + a[static_cast<size_t>(e)] > limit);  // greedy: the next block did not fit
    }
  }
}

TEST_CASE("checkpoint policy: planned bytes") {
  // 16 identical blocks of 100 activation bytes with 10-byte outputs.
  auto none = ck::plan(ck::none{}, 16, 100, 10);
  CHECK(!none.checkpointed);
  CHECK(none.kept_bytes == 1600);
  CHECK(none.segment_bytes == 0);
  CHECK(none.planned_bytes() == 1600);
  CHECK(none.forward_passes() == 1);
  auto sq = ck::plan(ck::sqrt{}, 16, 100, 10);
  CHECK(sq.checkpointed);
  CHECK(sq.num_segments() == 4);
  CHECK(sq.segment(3) == std::pair<int64_t, int64_t>{12, 16});
  CHECK(sq.kept_bytes == 40);
  CHECK(sq.segment_bytes == 400);
  CHECK(sq.planned_bytes() == 440);
  CHECK(sq.forward_passes() == 2);
  CHECK(sq.to_string() == "16 blocks, 4 segments: keeps 40 B of segment outputs + recomputes at most 400 B = 440 B planned");
  CHECK(none.to_string() == "16 blocks, no checkpointing: keeps 1.6 KiB of activations");
  // sqrt grows like sqrt(n): 64x the blocks cost about 8x the memory.
  double ratio = static_cast<double>(ck::plan(ck::sqrt{}, 1024, 100, 10).planned_bytes()) /
                 static_cast<double>(ck::plan(ck::sqrt{}, 16, 100, 10).planned_bytes());
  CHECK(ratio == doctest::Approx(8.0).epsilon(0.01));
  CHECK(ck::format_bytes(3 * 1024 * 1024 / 2) == "1.5 MiB");
  CHECK(ck::plan(ck::sqrt{}, 0, 100, 10).num_segments() == 0);
}

TEST_CASE("checkpoint policy: balanced budget minimises kept + recomputed bytes") {
  for (int64_t n : {16, 64, 256, 1000, 1024}) {
    for (int64_t act : {10, 40, 45, 100}) {
      CAPTURE(n);
      CAPTURE(act);
      auto best = ck::plan(ck::balanced_budget(n, act, 10), n, act, 10).planned_bytes();
      int64_t best_any = std::numeric_limits<int64_t>::max();
      for (int64_t k = 1; k <= n; ++k) best_any = std::min(best_any, ck::plan(ck::every{k}, n, act, 10).planned_bytes());
      CHECK(static_cast<double>(best) <= 1.1 * static_cast<double>(best_any));
      CHECK(best <= ck::plan(ck::sqrt{}, n, act, 10).planned_bytes());
    }
  }
  CHECK(ck::balanced_budget(1024, 40, 10).bytes == 16 * 40);
  CHECK(message_of<ValueError>([] { ck::balanced_budget(0, 1, 1); }).find("balanced_budget needs positive") != std::string::npos);
}
