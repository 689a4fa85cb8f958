#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "dl/util/plot.hpp"

#include "support/temp_dir.hpp"

namespace fs = std::filesystem;

namespace {
using dl_test::TempDir;
void write_log(const std::string& path) {
  dl::util::MetricsLog log(path);
  for (int e = 1; e <= 5; ++e)
    log.write({{"epoch", e}, {"loss", 1.0 / e}, {"val_loss", 1.2 / e}, {"acc", 1 - 0.5 / e}, {"split", "train"}});
}
// Sets PATH for one scope (plot_curves looks gnuplot up on PATH).
struct ScopedPath {
  std::string old;
  explicit ScopedPath(const char* value) : old(std::getenv("PATH") ? std::getenv("PATH") : "") { ::setenv("PATH", value, 1); }
  ~ScopedPath() { ::setenv("PATH", old.c_str(), 1); }
};
}  // namespace

TEST_CASE("plot: the script puts losses left and other metrics right") {
  std::string s = dl::util::gnuplot_script("d.dat", "o'ut.png", {"epoch", "loss", "acc", "val_loss"},
                                           {false, true, false, true});
  CHECK(s.find("set output 'o''ut.png'") != std::string::npos);
  CHECK(s.find("set multiplot layout 1,2") != std::string::npos);
  CHECK(s.find("plot 'd.dat' using 1:2 with linespoints title 'loss', 'd.dat' using 1:4 with linespoints title "
               "'val_loss'\n") != std::string::npos);
  CHECK(s.find("plot 'd.dat' using 1:3 with linespoints title 'acc'\n") != std::string::npos);
}

TEST_CASE("plot: without gnuplot, false and a message that says how to install it") {
  TempDir dir;
  write_log(dir.file("m.csv"));
  std::ostringstream msg;
  {
    ScopedPath empty(dir.path.c_str());  // a PATH with no gnuplot on it
    CHECK_FALSE(dl::util::plot_curves(dir.file("m.csv"), dir.file("c.png"), msg));
  }
  CHECK(msg.str().find("gnuplot is not installed") != std::string::npos);
  CHECK(msg.str().find("apt-get install gnuplot-nox") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.file("c.png")));
  CHECK_THROWS_AS(dl::util::plot_curves(dir.file("missing.csv"), dir.file("c.png"), msg), dl::IoError);
}

TEST_CASE("plot: with gnuplot installed, a PNG appears (skipped otherwise)") {
  if (dl::util::detail::find_on_path("gnuplot").empty()) {
    MESSAGE("skipped: gnuplot not on PATH (apt-get install gnuplot-nox)");
    return;
  }
  TempDir dir;
  for (std::string name : {"m.csv", "m.jsonl"}) {
    CAPTURE(name);
    write_log(dir.file(name));
    std::ostringstream msg;
    std::string png = dir.file(name + ".png");
    CHECK(dl::util::plot_curves(dir.file(name), png, msg));
    CHECK(msg.str() == "");
    std::ifstream f(png, std::ios::binary);
    char magic[4] = {};
    f.read(magic, 4);
    CHECK(std::string(magic + 1, 3) == "PNG");
  }
  // Only the logs and the PNGs remain: the data, script-error and temporary files are gone.
  int files = 0;
  for (auto& e : fs::directory_iterator(dir.path)) { (void)e; ++files; }
  CHECK(files == 4);
}
