// plot_curves(): training curves from a metrics log (.csv or .jsonl, see metrics_log.hpp) to a
// PNG, drawn by gnuplot when it is on PATH. The x axis is the "epoch" column, else "step",
// else the row number; columns whose name contains "loss" go in the left panel, the other
// numeric columns (accuracy, ...) in the right one. gnuplot is optional: without it the
// function prints how to install it and returns false, and training is unaffected.
//
//   dl::util::plot_curves("run/metrics.csv", "run/curves.png");  // apt-get install gnuplot-nox
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/data/atomic_file.hpp"
#include "dl/util/metrics_log.hpp"

namespace dl::util {

namespace detail {
// The first executable `name` on PATH, or "" if there is none.
inline std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::string p = path;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return "";
}
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
inline std::string gnuplot_quote(const std::string& s) {  // gnuplot '...' strings double a quote
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}
}  // namespace detail

// The gnuplot script plot_curves runs (exposed for tests): `data_path` holds whitespace-separated
// columns x, y1, y2, ... ("?" = missing) named by `names` (names[0] is the x label).
inline std::string gnuplot_script(const std::string& data_path, const std::string& png_path,
                                  const std::vector<std::string>& names, const std::vector<bool>& is_loss) {
  std::string s;
  s += "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 1200,450 noenhanced } "
       "else { set terminal png size 1200,450 noenhanced }\n";
  s += "set output " + detail::gnuplot_quote(png_path) + "\n";
  s += "set datafile missing '?'\nset key top right\nset grid\nset xlabel " + detail::gnuplot_quote(names[0]) + "\n";
  bool any_loss = false, any_other = false;
  for (size_t i = 1; i < names.size(); ++i) (is_loss[i] ? any_loss : any_other) = true;
  int panels = (any_loss ? 1 : 0) + (any_other ? 1 : 0);
  if (panels == 2) s += "set multiplot layout 1,2\n";
  for (int pass = 0; pass < 2; ++pass) {
    bool loss_pass = pass == 0;
    if (loss_pass ? !any_loss : !any_other) continue;
    // Losses fall and accuracies rise: put each legend where its curves are not.
    s += std::string("set title '") + (loss_pass ? "loss'\nset key top right" : "metrics'\nset key bottom right") +
         "\nplot ";
    bool first = true;
    for (size_t i = 1; i < names.size(); ++i) {
      if (is_loss[i] != loss_pass) continue;
      s += (first ? "" : ", ") + detail::gnuplot_quote(data_path) + " using 1:" + std::to_string(i + 1) +
           " with linespoints title " + detail::gnuplot_quote(names[i]);
      first = false;
    }
    s += "\n";
  }
  if (panels == 2) s += "unset multiplot\n";
  return s;
}

// Renders `log_path` to `png_path`. Returns false (and says why on `messages`) when gnuplot is
// not installed or fails; throws IoError/ValueError for a missing or malformed log.
inline bool plot_curves(const std::string& log_path, const std::string& png_path, std::ostream& messages = std::cerr) {
  MetricsTable table = read_metrics_log(log_path);
  std::string x_name;
  for (const char* candidate : {"epoch", "step"})
    for (const auto& c : table.columns)
      if (x_name.empty() && c == candidate) x_name = c;
  std::vector<std::string> names{x_name.empty() ? std::string("row") : x_name};
  std::vector<bool> is_loss{false};
  for (const auto& c : table.columns) {
    if (c == x_name) continue;
    bool numeric = false;
    for (const auto& row : table.rows)
      if (auto it = row.find(c); it != row.end()) numeric = numeric || it->second.is_number();
    bool counter = c == "epoch" || c == "step" || c == "time" || c == "seconds";
    if (!numeric || counter) continue;
    names.push_back(c);
    is_loss.push_back(c.find("loss") != std::string::npos);
  }
  check<ValueError>(names.size() > 1, "plot_curves: '", log_path, "' has no numeric columns to plot");
  check<ValueError>(!table.rows.empty(), "plot_curves: '", log_path, "' has no rows");

  std::string gnuplot = detail::find_on_path("gnuplot");
  if (gnuplot.empty()) {
    messages << "plot_curves: gnuplot is not installed, so '" << png_path
             << "' was not written; install it with `apt-get install gnuplot-nox`\n";
    return false;
  }

  data::AtomicFile png_file(png_path, "plot_curves");
  data::AtomicFile data_file(png_path + ".dat", "plot_curves");  // temporaries, never committed:
  data::AtomicFile err_file(png_path + ".err", "plot_curves");   // their destructors delete them
  {
    std::FILE* fp = data_file.open_stdio();
    for (size_t r = 0; r < table.rows.size(); ++r) {
      std::string line;
      for (size_t i = 0; i < names.size(); ++i) {
        std::string cell = "?";
        if (i == 0 && x_name.empty()) {
          cell = std::to_string(r + 1);
        } else if (auto it = table.rows[r].find(names[i]); it != table.rows[r].end() && it->second.is_number()) {
          char buf[40];
          std::snprintf(buf, sizeof buf, "%.9g", it->second.number());
          cell = buf;
        }
        line += (i ? " " : "") + cell;
      }
      line += "\n";
      std::fwrite(line.data(), 1, line.size(), fp);
    }
    check<IoError>(std::fclose(fp) == 0, "plot_curves: cannot write '", data_file.temp_path(), "'");
  }
  std::string script = gnuplot_script(data_file.temp_path(), png_file.temp_path(), names, is_loss);
  std::string command = detail::shell_quote(gnuplot) + " 2> " + detail::shell_quote(err_file.temp_path());
  std::FILE* pipe = ::popen(command.c_str(), "w");
  if (!pipe) {
    messages << "plot_curves: cannot start gnuplot ('" << gnuplot << "')\n";
    return false;
  }
  std::fwrite(script.data(), 1, script.size(), pipe);
  int status = ::pclose(pipe);
  std::error_code ec;
  auto size = std::filesystem::file_size(png_file.temp_path(), ec);
  if (status != 0 || ec || size == 0) {
    std::string err = detail::read_text(err_file.temp_path(), "plot_curves");
    if (err.size() > 2000) err.resize(2000);
    messages << "plot_curves: gnuplot failed (exit status " << status << ") writing '" << png_path << "'"
             << (err.empty() ? "" : ": ") << err << "\n";
    return false;
  }
  png_file.commit();
  return true;
}

}  // namespace dl::util
