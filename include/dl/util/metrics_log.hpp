// MetricsLog: one row per epoch or step with named fields, written as CSV or JSON lines chosen
// by the file extension (.csv / .jsonl), and flushed after every row so a crashed or killed run
// keeps its history and `tail -f` shows progress. read_metrics_log() parses both formats back
// (plot_curves and tests use it).
//
//   dl::util::MetricsLog log("run/metrics.csv");
//   log.write({{"epoch", 1}, {"loss", 0.41}, {"acc", 0.85}});   // epoch,loss,acc / 1,0.41,0.85
//
// CSV columns are fixed by the first row (or, when appending, by the existing header); a later
// row may leave a column empty but may not add one. JSON lines take any fields per row;
// non-finite numbers are written as null there (JSON has no NaN).
#pragma once
#include <cerrno>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/io/json.hpp"

namespace dl::util {

// An integer, a real number or a string.
class MetricValue {
 public:
  MetricValue() = default;
  template <std::integral T>
  MetricValue(T v) : v_(static_cast<int64_t>(v)) {}  // NOLINT(google-explicit-constructor)
  template <std::floating_point T>
  MetricValue(T v) : v_(static_cast<double>(v)) {}  // NOLINT(google-explicit-constructor)
  MetricValue(std::string s) : v_(std::move(s)) {}  // NOLINT(google-explicit-constructor)
  MetricValue(const char* s) : v_(std::string(s)) {}  // NOLINT(google-explicit-constructor)

  bool is_number() const { return !std::holds_alternative<std::string>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  // The numeric value (integers converted); IoError for a string.
  double number() const {
    if (auto* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
    if (auto* d = std::get_if<double>(&v_)) return *d;
    fail<ValueError>("metrics log: value '", std::get<std::string>(v_), "' is not a number");
  }
  const std::string& str() const {
    check<ValueError>(is_string(), "metrics log: value is a number, not a string");
    return std::get<std::string>(v_);
  }
  const std::variant<int64_t, double, std::string>& variant() const { return v_; }
  friend bool operator==(const MetricValue&, const MetricValue&) = default;

 private:
  std::variant<int64_t, double, std::string> v_ = int64_t(0);
};

using MetricRow = std::vector<std::pair<std::string, MetricValue>>;

namespace detail {
inline std::string format_number(const MetricValue& v, bool json) {
  char buf[40];
  if (auto* i = std::get_if<int64_t>(&v.variant())) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(*i));
    return buf;
  }
  double d = std::get<double>(v.variant());
  if (!std::isfinite(d)) return json ? "null" : (std::isnan(d) ? "nan" : (d > 0 ? "inf" : "-inf"));
  std::snprintf(buf, sizeof buf, "%.9g", d);  // 9 digits: a float round-trips exactly
  return buf;
}
inline std::string csv_cell(const MetricValue& v) {
  if (v.is_number()) return format_number(v, false);
  const std::string& s = v.str();
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
inline std::string json_string(const std::string& s) {
  std::string q;
  io::json::write_string(q, s);
  return q;
}
// Splits CSV text into records of cells (RFC 4180: quoted cells may hold commas, quotes, newlines).
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& path) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> rec;
  std::string cell;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') { cell += '"'; ++i; }
      else if (c == '"') quoted = false;
      else cell += c;
    } else if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      rec.push_back(std::move(cell));
      cell.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !cell.empty()) { rec.push_back(std::move(cell)); records.push_back(std::move(rec)); }
      rec.clear();
      cell.clear();
      any = false;
    } else {
      cell += c;
      any = true;
    }
  }
  check<IoError>(!quoted, "metrics log: '", path, "' ends inside a quoted CSV cell");
  if (any || !cell.empty()) { rec.push_back(std::move(cell)); records.push_back(std::move(rec)); }
  return records;
}
// "12" -> integer, "0.5"/"nan" -> real, anything else -> string.
inline MetricValue parse_cell(const std::string& s) {
  if (s.empty()) return MetricValue(s);
  errno = 0;
  char* end = nullptr;
  long long i = std::strtoll(s.c_str(), &end, 10);
  if (*end == '\0' && errno == 0) return MetricValue(static_cast<int64_t>(i));
  double d = std::strtod(s.c_str(), &end);
  if (*end == '\0') return MetricValue(d);
  return MetricValue(s);
}
inline std::string read_text(const std::string& path, const char* op) {
  std::error_code ec;
  check<IoError>(std::filesystem::is_regular_file(path, ec), op, ": file '", path, "' does not exist");
  std::ifstream f(path, std::ios::binary);
  check<IoError>(f.good(), op, ": cannot open '", path, "': ", std::strerror(errno));
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A flat JSON object per line: {"name": number | string | true | false | null, ...}, read with
// the library's one JSON parser. null (a non-finite number when written) comes back as no value.
inline std::vector<std::pair<std::string, std::optional<MetricValue>>> parse_json_line(const std::string& line,
                                                                                       const std::string& path,
                                                                                       size_t lineno) {
  using Kind = io::json::Value::Kind;
  std::string where = "metrics log: '" + path + "' line " + std::to_string(lineno);
  io::json::Value root = io::json::parse(line, where, io::json::Grammar::full);
  check<IoError>(root.kind == Kind::object, where, ": expected an object, found ", root.kind_name());
  std::vector<std::pair<std::string, std::optional<MetricValue>>> out;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const io::json::Value& v = root.items[i];
    std::optional<MetricValue> value;
    switch (v.kind) {
      case Kind::integer:
      case Kind::boolean: value = MetricValue(v.integer); break;
      case Kind::real: value = MetricValue(v.real); break;
      case Kind::string: value = MetricValue(v.string); break;
      case Kind::null: break;
      case Kind::object:
      case Kind::array: fail<IoError>(where, ": nested objects and arrays are not supported (\"", root.keys[i], "\")");
    }
    out.emplace_back(root.keys[i], std::move(value));
  }
  return out;
}
}  // namespace detail

class MetricsLog {
 public:
  enum class Format { csv, jsonl };

  // Creates (or truncates) the file; with append = true an existing file is continued, e.g. by
  // a resumed run (a CSV keeps its header and columns).
  explicit MetricsLog(const std::string& path, bool append = false) : path_(path) {
    std::string ext = std::filesystem::path(path).extension().string();
    if (ext == ".csv") format_ = Format::csv;
    else if (ext == ".jsonl") format_ = Format::jsonl;
    else fail<ValueError>("metrics log: cannot tell the format of '", path, "' from its extension '", ext,
                          "'; use .csv or .jsonl");
    std::error_code ec;
    if (append && format_ == Format::csv && std::filesystem::file_size(path, ec) > 0 && !ec) {
      auto records = detail::parse_csv(detail::read_text(path, "metrics log"), path);
      if (!records.empty()) columns_ = records.front();
    }
    file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
    check<IoError>(file_ != nullptr, "metrics log: cannot open '", path, "' for writing: ", std::strerror(errno));
  }
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  ~MetricsLog() {
    if (file_) std::fclose(file_);
  }

  Format format() const { return format_; }
  const std::vector<std::string>& columns() const { return columns_; }
  const std::string& path() const { return path_; }

  // Appends one row and flushes it to the file.
  void write(const MetricRow& row) {
    check<ValueError>(!row.empty(), "metrics log: empty row for '", path_, "'");
    for (size_t i = 0; i < row.size(); ++i) {
      check<ValueError>(!row[i].first.empty(), "metrics log: empty field name in a row for '", path_, "'");
      for (size_t j = 0; j < i; ++j)
        check<ValueError>(row[i].first != row[j].first, "metrics log: field '", row[i].first, "' appears twice in a row");
    }
    std::string line;
    if (format_ == Format::jsonl) {
      line = "{";
      for (size_t i = 0; i < row.size(); ++i) {
        const auto& [name, v] = row[i];
        line += (i ? ", " : "") + detail::json_string(name) + ": " +
                (v.is_number() ? detail::format_number(v, true) : detail::json_string(v.str()));
      }
      line += "}\n";
    } else {
      if (columns_.empty()) {
        for (const auto& f : row) columns_.push_back(f.first);
        line = join_cells(columns_);
      }
      std::vector<std::string> cells(columns_.size());
      for (const auto& [name, v] : row) {
        size_t k = 0;
        while (k < columns_.size() && columns_[k] != name) ++k;
        if (k == columns_.size()) {
          std::string cols;
          for (const auto& c : columns_) cols += (cols.empty() ? "" : ", ") + c;
          fail<ValueError>("metrics log: field '", name, "' is not a column of '", path_, "' (columns: ", cols,
                           "); CSV columns are fixed by the first row");
        }
        cells[k] = detail::csv_cell(v);
      }
      line += join_cells(cells);
    }
    bool ok = std::fwrite(line.data(), 1, line.size(), file_) == line.size();
    ok = std::fflush(file_) == 0 && ok;
    check<IoError>(ok, "metrics log: cannot write to '", path_, "': ", std::strerror(errno));
  }

 private:
  static std::string join_cells(const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i) s += (i ? "," : "") + cells[i];
    return s + "\n";
  }
  std::string path_;
  Format format_ = Format::csv;
  std::vector<std::string> columns_;
  std::FILE* file_ = nullptr;
};

// A log read back: column names in order of first appearance, and per row the values present.
struct MetricsTable {
  std::vector<std::string> columns;
  std::vector<std::map<std::string, MetricValue>> rows;
};

inline MetricsTable read_metrics_log(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  check<ValueError>(ext == ".csv" || ext == ".jsonl", "read_metrics_log: '", path,
                    "' is neither .csv nor .jsonl");
  std::string text = detail::read_text(path, "read_metrics_log");
  MetricsTable t;
  if (ext == ".csv") {
    auto records = detail::parse_csv(text, path);
    if (records.empty()) return t;
    t.columns = records.front();
    for (size_t r = 1; r < records.size(); ++r) {
      check<IoError>(records[r].size() == t.columns.size(), "read_metrics_log: '", path, "' row ", r, " has ",
                     records[r].size(), " cells, the header has ", t.columns.size());
      std::map<std::string, MetricValue> row;
      for (size_t c = 0; c < t.columns.size(); ++c)
        if (!records[r][c].empty()) row[t.columns[c]] = detail::parse_cell(records[r][c]);
      t.rows.push_back(std::move(row));
    }
    return t;
  }
  size_t lineno = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::map<std::string, MetricValue> row;
    for (auto& [name, v] : detail::parse_json_line(line, path, lineno)) {
      bool known = false;
      for (const auto& c : t.columns) known = known || c == name;
      if (!known) t.columns.push_back(name);
      if (v) row[name] = std::move(*v);
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

}  // namespace dl::util
