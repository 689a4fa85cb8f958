#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "dl/util/metrics_log.hpp"

#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using dl::util::MetricsLog;
using dl::util::read_metrics_log;

namespace {
using dl_test::TempDir;
}  // namespace

TEST_CASE("metrics log: CSV header from the first row, flushed per row") {
  TempDir dir;
  std::string p = dir.file("m.csv");
  MetricsLog log(p);
  CHECK(log.format() == MetricsLog::Format::csv);
  log.write({{"epoch", 1}, {"loss", 0.5}, {"acc", 0.25}, {"note", "warm, up"}});
  CHECK(dl_test::read_bytes(p) == "epoch,loss,acc,note\n1,0.5,0.25,\"warm, up\"\n");  // visible before the log closes
  log.write({{"acc", 0.75}, {"epoch", 2}, {"loss", std::numeric_limits<double>::quiet_NaN()}});
  CHECK(dl_test::read_bytes(p) == "epoch,loss,acc,note\n1,0.5,0.25,\"warm, up\"\n2,nan,0.75,\n");
  CHECK_THROWS_WITH_AS(log.write({{"epoch", 3}, {"lr", 0.1}}),
                       doctest::Contains("field 'lr' is not a column of"), dl::ValueError);
  CHECK_THROWS_WITH_AS(log.write({{"epoch", 3}, {"epoch", 4}}), doctest::Contains("appears twice"), dl::ValueError);

  auto t = read_metrics_log(p);
  CHECK(t.columns == std::vector<std::string>{"epoch", "loss", "acc", "note"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].at("epoch") == dl::util::MetricValue(1));
  CHECK(t.rows[0].at("note").str() == "warm, up");
  CHECK(std::isnan(t.rows[1].at("loss").number()));
  CHECK(t.rows[1].count("note") == 0);  // empty cell = missing
}

TEST_CASE("metrics log: appending continues an existing CSV with its columns") {
  TempDir dir;
  std::string p = dir.file("m.csv");
  { MetricsLog log(p); log.write({{"step", 10}, {"loss", 1.5}}); }
  {
    MetricsLog log(p, /*append=*/true);
    CHECK(log.columns() == std::vector<std::string>{"step", "loss"});
    log.write({{"loss", 1.25}, {"step", 20}});
  }
  CHECK(dl_test::read_bytes(p) == "step,loss\n10,1.5\n20,1.25\n");
  { MetricsLog log(p); log.write({{"x", 1}}); }  // without append the file starts over
  CHECK(dl_test::read_bytes(p) == "x\n1\n");
}

TEST_CASE("metrics log: JSON lines, any fields per row") {
  TempDir dir;
  std::string p = dir.file("m.jsonl");
  MetricsLog log(p);
  CHECK(log.format() == MetricsLog::Format::jsonl);
  log.write({{"epoch", 1}, {"loss", 0.125}, {"split", "tr\"ain"}});
  log.write({{"step", 7}, {"acc", std::numeric_limits<double>::infinity()}});
  CHECK(dl_test::read_bytes(p) == "{\"epoch\": 1, \"loss\": 0.125, \"split\": \"tr\\\"ain\"}\n{\"step\": 7, \"acc\": null}\n");
  auto t = read_metrics_log(p);
  CHECK(t.columns == std::vector<std::string>{"epoch", "loss", "split", "step", "acc"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].at("loss").number() == 0.125);
  CHECK(t.rows[0].at("split").str() == "tr\"ain");
  CHECK(t.rows[1].count("acc") == 0);  // null = missing
  CHECK(t.rows[1].at("step") == dl::util::MetricValue(7));
}

TEST_CASE("metrics log: JSON lines are read with io::json's full grammar") {
  TempDir dir;
  std::ofstream(dir.file("m.jsonl")) << "{\"a\": -1.5e2, \"b\": true, \"c\": \"\\u00e9\\n\", \"d\": 9223372036854775807}\n\n"
                                     << "{\"a\": 0, \"e\": false, \"f\": 99999999999999999999}\n";
  auto t = read_metrics_log(dir.file("m.jsonl"));
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].at("a").number() == -150.0);
  CHECK(t.rows[0].at("b") == dl::util::MetricValue(1));
  CHECK(t.rows[0].at("c").str() == "\xc3\xa9\n");
  CHECK(t.rows[0].at("d") == dl::util::MetricValue(INT64_MAX));
  CHECK(t.rows[1].at("e") == dl::util::MetricValue(0));
  CHECK(t.rows[1].at("f").number() == doctest::Approx(1e20));  // beyond int64: a real number
  // The same parser is strict: each of these lines is rejected with the line number.
  for (const char* bad : {"{\"a\": 01}", "{\"a\": 1.}", "{\"a\": tru}", "{\"a\": 1, \"a\": 2}", "[1]",
                          "{\"a\": \"\\ud800\"}", "{\"a\": 1} x"}) {
    std::ofstream(dir.file("bad.jsonl")) << "{}\n" << bad << "\n";
    CHECK_THROWS_WITH_AS(read_metrics_log(dir.file("bad.jsonl")), doctest::Contains("line 2"), dl::IoError);
  }
  // Headers keep the strict subset: no reals, booleans or null.
  CHECK_THROWS_WITH_AS(dl::io::json::parse("[1.5]", "hdr"), doctest::Contains("malformed JSON header"), dl::IoError);
  CHECK_THROWS_AS(dl::io::json::parse("[true]", "hdr"), dl::IoError);
  CHECK(dl::io::json::parse("[null]", "x", dl::io::json::Grammar::full).items[0].kind == dl::io::json::Value::Kind::null);
}

TEST_CASE("metrics log: errors") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(MetricsLog(dir.file("m.txt")), doctest::Contains("use .csv or .jsonl"), dl::ValueError);
  CHECK_THROWS_WITH_AS(MetricsLog(dir.file("nodir/m.csv")), doctest::Contains("cannot open"), dl::IoError);
  CHECK_THROWS_WITH_AS(read_metrics_log(dir.file("none.csv")), doctest::Contains("does not exist"), dl::IoError);
  std::ofstream(dir.file("bad.jsonl")) << "{\"a\": 1}\n{\"a\": [1, 2]}\n";
  CHECK_THROWS_WITH_AS(read_metrics_log(dir.file("bad.jsonl")), doctest::Contains("line 2: nested objects"),
                       dl::IoError);
  std::ofstream(dir.file("bad.csv")) << "a,b\n1,2,3\n";
  CHECK_THROWS_WITH_AS(read_metrics_log(dir.file("bad.csv")), doctest::Contains("row 1 has 3 cells, the header has 2"),
                       dl::IoError);
  MetricsLog log(dir.file("ok.jsonl"));
  CHECK_THROWS_AS(log.write({}), dl::ValueError);
}
