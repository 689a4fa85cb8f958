// A small strict JSON reader and writer, the one JSON parser of the library. Two grammars:
//  - Grammar::header (default), the subset file headers use (safetensors): objects, strings with
//    escapes, integers and arrays. No floats, booleans or null: a header that holds one is
//    malformed for our purposes.
//  - Grammar::full adds real numbers, true/false and null (metrics logs in JSON lines).
// The reader checks UTF-8, rejects duplicate keys, caps nesting depth (no stack overflow on
// "[[[[..."), and reports errors with the byte offset, so hostile input gives an IoError, never a
// crash.
//
//   auto v = dl::io::json::parse(R"({"a": [1, -2], "b": "x\u00e9"})", "safetensors: file 'm.st'");
//   v.find("a")->items[1].integer == -2
//   auto r = dl::io::json::parse(R"({"loss": 0.5, "ok": true})", "log", dl::io::json::Grammar::full);
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dl/core/error.hpp"

namespace dl::io::json {

enum class Grammar : uint8_t { header, full };

struct Value {
  enum class Kind : uint8_t { object, array, string, integer, real, boolean, null };
  Kind kind = Kind::integer;
  int64_t integer = 0;  // also 0/1 for a boolean
  double real = 0;
  std::string string;
  std::vector<Value> items;       // array elements, or object values (in file order)
  std::vector<std::string> keys;  // object keys: keys[i] names items[i]

  const char* kind_name() const {
    switch (kind) {
      case Kind::object: return "object";
      case Kind::array: return "array";
      case Kind::string: return "string";
      case Kind::integer: return "integer";
      case Kind::real: return "real number";
      case Kind::boolean: return "boolean";
      case Kind::null: return "null";
    }
    return "value";
  }
  const Value* find(std::string_view key) const {
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return &items[i];
    return nullptr;
  }
};

// Length of the valid UTF-8 sequence at s[i], or 0 if it is invalid (overlong forms, surrogates
// and code points above U+10FFFF are invalid, as in RFC 3629).
inline size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
  if (n == 0 || c > 0xF4 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  unsigned char c1 = b(i + 1);
  if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
  if (c == 0xED && c1 >= 0xA0) return 0;  // UTF-16 surrogate
  if (c == 0xF0 && c1 < 0x90) return 0;   // overlong
  if (c == 0xF4 && c1 >= 0x90) return 0;  // above U+10FFFF
  return n;
}

// Byte offset of the first invalid UTF-8 sequence, or npos.
inline size_t find_invalid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

namespace detail {

inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  // Real headers nest 3 deep (root, tensor entry, shape array); 32 leaves room and bounds recursion.
  static constexpr int kMaxDepth = 32;

  Parser(std::string_view text, std::string context, Grammar grammar)
      : s_(text), ctx_(std::move(context)), grammar_(grammar) {}

  Value parse_document() {
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (i_ != s_.size()) error("unexpected '", printable(s_[i_]), "' after the end of the JSON value");
    return v;
  }

 private:
  template <class... Parts>
  [[noreturn]] void error(const Parts&... parts) const {
    fail<IoError>(ctx_, grammar_ == Grammar::header ? ": malformed JSON header at byte " : ": malformed JSON at byte ", i_,
                  ": ", parts...);
  }
  static std::string printable(char c) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string(1, c);
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", u);
    return buf;
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void expect(char c, const char* what) {
    if (i_ >= s_.size()) error("unexpected end of header, expected ", what);
    if (s_[i_] != c) error("expected ", what, ", found '", printable(s_[i_]), "'");
    ++i_;
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than ", kMaxDepth, " levels");
    if (i_ >= s_.size()) error("unexpected end of header, expected a value");
    char c = s_[i_];
    Value v;
    if (c == '{') {
      v.kind = Value::Kind::object;
      ++i_;
      skip_ws();
      if (peek() == '}') { ++i_; return v; }
      for (;;) {
        skip_ws();
        if (i_ >= s_.size()) error("unexpected end of header, expected a string key");
        if (peek() != '"') error("expected a string key, found '", printable(peek()), "'");
        size_t key_at = i_;
        std::string key = parse_string();
        for (auto& k : v.keys)
          if (k == key) { i_ = key_at; error("duplicate key \"", key, "\""); }
        skip_ws();
        expect(':', "':'");
        skip_ws();
        Value member = parse_value(depth + 1);
        v.keys.push_back(std::move(key));
        v.items.push_back(std::move(member));
        skip_ws();
        if (peek() == ',') { ++i_; continue; }
        expect('}', "',' or '}'");
        return v;
      }
    }
    if (c == '[') {
      v.kind = Value::Kind::array;
      ++i_;
      skip_ws();
      if (peek() == ']') { ++i_; return v; }
      for (;;) {
        skip_ws();
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (peek() == ',') { ++i_; continue; }
        expect(']', "',' or ']'");
        return v;
      }
    }
    if (c == '"') {
      v.kind = Value::Kind::string;
      v.string = parse_string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      if (grammar_ == Grammar::full) return parse_number();
      v.kind = Value::Kind::integer;
      v.integer = parse_integer();
      return v;
    }
    if (grammar_ == Grammar::full) {
      for (std::string_view word : {"true", "false", "null"}) {
        if (s_.substr(i_, word.size()) == word) {
          i_ += word.size();
          v.kind = word == "null" ? Value::Kind::null : Value::Kind::boolean;
          v.integer = word == "true";
          return v;
        }
      }
      error("unexpected '", printable(c), "', expected a value");
    }
    error("unexpected '", printable(c), "' (only objects, arrays, strings and integers are allowed)");
  }

  // Grammar::full: an integer when it has no fraction or exponent and fits in int64, else a real.
  Value parse_number() {
    size_t start = i_;
    auto digits = [&] {
      size_t from = i_;
      while (peek() >= '0' && peek() <= '9') ++i_;
      return i_ > from;
    };
    if (peek() == '-') ++i_;
    if (peek() == '0' && i_ + 1 < s_.size() && s_[i_ + 1] >= '0' && s_[i_ + 1] <= '9')
      error("leading zeros are not allowed in numbers");
    if (!digits()) error("expected a digit");
    bool integral = true;
    if (peek() == '.') {
      ++i_;
      integral = false;
      if (!digits()) error("expected a digit after '.'");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      integral = false;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!digits()) error("expected a digit in the exponent");
    }
    std::string text(s_.substr(start, i_ - start));
    Value v;
    if (integral) {
      errno = 0;
      long long n = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == 0) {
        v.integer = n;
        return v;
      }
    }
    v.kind = Value::Kind::real;
    v.real = std::strtod(text.c_str(), nullptr);
    return v;
  }

  int64_t parse_integer() {
    size_t start = i_;
    bool neg = peek() == '-';
    if (neg) ++i_;
    if (!(peek() >= '0' && peek() <= '9')) error("expected a digit after '-'");
    if (peek() == '0' && i_ + 1 < s_.size() && s_[i_ + 1] >= '0' && s_[i_ + 1] <= '9')
      error("leading zeros are not allowed in numbers");
    // Accumulate negatively so that INT64_MIN parses; anything beyond int64 is an error.
    int64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      int digit = peek() - '0';
      if (__builtin_mul_overflow(v, int64_t(10), &v) || __builtin_sub_overflow(v, int64_t(digit), &v)) {
        i_ = start;
        error("integer does not fit in 64 bits");
      }
      ++i_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') error("only integers are allowed, found a fraction or exponent");
    if (!neg) {
      if (v == INT64_MIN) { i_ = start; error("integer does not fit in 64 bits"); }
      v = -v;
    }
    return v;
  }

  uint32_t parse_hex4() {
    if (i_ + 4 > s_.size()) error("truncated \\u escape");
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      char h = s_[i_++];
      cp <<= 4;
      if (h >= '0' && h <= '9') cp |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') cp |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') cp |= static_cast<uint32_t>(h - 'A' + 10);
      else { --i_; error("bad hex digit '", printable(h), "' in \\u escape"); }
    }
    return cp;
  }

  std::string parse_string() {
    expect('"', "'\"'");
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) error("unterminated string");
      auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') { ++i_; return out; }
      if (c < 0x20) error("control character ", printable(s_[i_]), " inside a string (escape it)");
      if (c != '\\') {
        size_t n = utf8_sequence_length(s_, i_);
        if (n == 0) error("invalid UTF-8 inside a string");
        out.append(s_.substr(i_, n));
        i_ += n;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) error("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate must be followed by a low one
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') error("lone high surrogate in \\u escape");
            i_ += 2;
            uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: --i_; error("unknown escape '\\", printable(e), "'");
      }
    }
  }

  std::string_view s_;
  std::string ctx_;
  Grammar grammar_;
  size_t i_ = 0;
};

}  // namespace detail

// Parses a whole JSON document; `context` starts every error message ("safetensors: file 'x'").
inline Value parse(std::string_view text, std::string context, Grammar grammar = Grammar::header) {
  return detail::Parser(text, std::move(context), grammar).parse_document();
}

// Appends s as a JSON string literal (quotes, backslashes and control characters escaped).
inline void write_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace dl::io::json
