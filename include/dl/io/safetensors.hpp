// safetensors files (the Hugging Face format): an 8-byte little-endian header length N, N bytes
// of UTF-8 JSON, then one data buffer. The header maps tensor names to
// {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} (offsets relative to the buffer)
// plus an optional "__metadata__" object of string -> string.
//
// load_safetensors() validates the whole header against the file size before allocating any
// tensor: offsets must be two non-negative integers, inside the buffer, exactly numel x element
// size long, and the ranges must tile the buffer (no overlap, no hole, no trailing bytes). Any
// problem is an IoError naming the file, the tensor and the problem. save_safetensors() writes
// atomically (io/file_io.hpp) and keeps the permissions of a file it replaces.
//
//   dl::io::save_safetensors("m.safetensors", net.state_dict(), {{"epoch", "3"}});
//   auto f = dl::io::load_safetensors("m.safetensors");
//   dl::NDArray<float> w = f.get<float>("fc1.weight");  f.metadata["epoch"] == "3"
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dl/core/dtype.hpp"
#include "dl/core/error.hpp"
#include "dl/core/shape.hpp"
#include "dl/io/any_array.hpp"
#include "dl/io/file_io.hpp"
#include "dl/io/json.hpp"

namespace dl::io {

static_assert(std::endian::native == std::endian::little, "safetensors: dl assumes a little-endian host");

// Same cap as the reference implementation: a larger header is treated as hostile.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct Safetensors {
  std::string path;
  std::map<std::string, AnyArray> tensors;
  std::map<std::string, std::string> metadata;

  // The tensor `name` as NDArray<T>; IoError when missing, DTypeError when stored as another dtype.
  template <class T>
  NDArray<T> get(const std::string& name) const {
    auto it = tensors.find(name);
    check<IoError>(it != tensors.end(), "safetensors: file '", path, "': no tensor named '", name, "'");
    check<DTypeError>(it->second.holds<T>(), "safetensors: file '", path, "': tensor '", name, "' is ",
                      dtype_name(it->second.dtype()), ", requested ", dtype_name(dtype_of<T>));
    return it->second.get<T>();
  }
};

namespace detail {

inline const char* safetensors_dtype_code(DType d) {
  switch (d) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
  }
  return "?";
}

inline bool safetensors_dtype_from_code(std::string_view s, DType& out) {
  for (DType d : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8, DType::bf16, DType::f16})
    if (s == safetensors_dtype_code(d)) { out = d; return true; }
  return false;
}

// A tensor entry of the header, validated but not yet read.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

inline uint64_t read_le64(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

inline SafetensorsEntry parse_safetensors_entry(const std::string& file, const std::string& name,
                                                const json::Value& v, uint64_t buffer_bytes) {
  auto bad = [&](const auto&... parts) { fail<IoError>("safetensors: file '", file, "': tensor '", name, "': ", parts...); };
  if (v.kind != json::Value::Kind::object) bad("entry must be an object, found ", v.kind_name());
  for (auto& key : v.keys)
    if (key != "dtype" && key != "shape" && key != "data_offsets") bad("unknown field \"", key, "\"");
  const json::Value* dt = v.find("dtype");
  const json::Value* sh = v.find("shape");
  const json::Value* off = v.find("data_offsets");
  if (!dt) bad("missing field \"dtype\"");
  if (!sh) bad("missing field \"shape\"");
  if (!off) bad("missing field \"data_offsets\"");

  SafetensorsEntry e;
  e.name = name;
  if (dt->kind != json::Value::Kind::string) bad("dtype must be a string, found ", dt->kind_name());
  if (!safetensors_dtype_from_code(dt->string, e.dtype))
    bad("unknown or unsupported dtype '", dt->string, "' (dl reads F32, F64, I32, I64, U8, BF16, F16)");

  if (sh->kind != json::Value::Kind::array) bad("shape must be an array, found ", sh->kind_name());
  if (sh->items.size() > static_cast<size_t>(kMaxRank))
    bad("shape has rank ", sh->items.size(), ", more than the maximum of ", kMaxRank);
  std::vector<int64_t> dims;
  int64_t numel = 1, span = 1;
  for (auto& d : sh->items) {
    if (d.kind != json::Value::Kind::integer) bad("shape entries must be integers, found ", d.kind_name());
    if (d.integer < 0) bad("shape has a negative dimension (", d.integer, ")");
    if (__builtin_mul_overflow(numel, d.integer, &numel)) bad("element count of the shape overflows int64");
    // With a zero dim numel is 0, but the strides still multiply the other dims: bound those too.
    if (__builtin_mul_overflow(span, std::max<int64_t>(d.integer, 1), &span))
      bad("shape dimensions multiply past int64 (the strides would overflow)");
    dims.push_back(d.integer);
  }
  e.shape = Shape(dims);  // safe: rank and product checked above

  if (off->kind != json::Value::Kind::array || off->items.size() != 2 ||
      off->items[0].kind != json::Value::Kind::integer || off->items[1].kind != json::Value::Kind::integer)
    bad("data_offsets must be exactly two integers [begin, end]");
  int64_t b = off->items[0].integer, en = off->items[1].integer;
  if (b < 0 || en < 0) bad("data_offsets [", b, ", ", en, ") must be non-negative");
  if (b > en) bad("data_offsets [", b, ", ", en, "): begin is after end");
  e.begin = static_cast<uint64_t>(b);
  e.end = static_cast<uint64_t>(en);
  if (e.end > buffer_bytes)
    bad("data_offsets [", b, ", ", en, ") end past the data buffer of ", buffer_bytes, " bytes");
  uint64_t need = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel), static_cast<uint64_t>(dtype_size(e.dtype)), &need))
    bad("byte size of shape ", e.shape, " overflows");
  if (need != e.end - e.begin)
    bad("data_offsets [", b, ", ", en, ") hold ", e.end - e.begin, " bytes, but ", dtype_name(e.dtype), " shape ",
        e.shape, " needs ", need);
  return e;
}

}  // namespace detail

// Reads and validates a safetensors file from any ByteSource (file or memory).
inline Safetensors read_safetensors(const ByteSource& src) {
  const std::string& file = src.name();
  auto bad = [&](const auto&... parts) { fail<IoError>("safetensors: file '", file, "': ", parts...); };
  uint64_t size = src.size();
  if (size < 8) bad("is ", size, " bytes, shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  src.read_at(0, len_bytes, 8, "safetensors");
  uint64_t n = detail::read_le64(len_bytes);
  if (n > kSafetensorsMaxHeaderBytes)
    bad("header length ", n, " is larger than the limit of ", kSafetensorsMaxHeaderBytes, " bytes");
  if (n > size - 8) bad("header length ", n, " is past the end of the file (", size - 8, " bytes after the length)");
  std::string header(static_cast<size_t>(n), '\0');  // bounded by the file size and the 100 MB cap
  src.read_at(8, header.data(), n, "safetensors");
  if (size_t at = json::find_invalid_utf8(header); at != std::string::npos)
    bad("header is not valid UTF-8 (byte ", at, ")");
  if (header.empty() || header[0] != '{') bad("header does not start with '{'");
  json::Value root = json::parse(header, "safetensors: file '" + file + "'");
  if (root.kind != json::Value::Kind::object) bad("header must be a JSON object");

  uint64_t buffer_bytes = size - 8 - n;
  Safetensors out;
  out.path = file;
  std::vector<detail::SafetensorsEntry> entries;
  for (size_t m = 0; m < root.keys.size(); ++m) {
    const std::string& key = root.keys[m];
    const json::Value& value = root.items[m];
    if (key == "__metadata__") {
      if (value.kind != json::Value::Kind::object) bad("__metadata__ must be an object, found ", value.kind_name());
      for (size_t k = 0; k < value.keys.size(); ++k) {
        const std::string& mk = value.keys[k];
        const json::Value& mv = value.items[k];
        if (mv.kind != json::Value::Kind::string)
          bad("__metadata__ value of '", mk, "' must be a string, found ", mv.kind_name());
        out.metadata[mk] = mv.string;
      }
      continue;
    }
    entries.push_back(detail::parse_safetensors_entry(file, key, value, buffer_bytes));
  }

  // The ranges must tile [0, buffer_bytes): sorted by start, each starts where the previous ended.
  std::vector<const detail::SafetensorsEntry*> order;
  for (auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  uint64_t expect = 0;
  const detail::SafetensorsEntry* prev = nullptr;
  for (auto* e : order) {
    if (e->begin < expect)
      fail<IoError>("safetensors: file '", file, "': tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end,
                    ") overlap tensor '", prev->name, "' [", prev->begin, ", ", prev->end, ")");
    if (e->begin > expect)
      fail<IoError>("safetensors: file '", file, "': tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end,
                    ") leave a hole of ", e->begin - expect, " bytes at offset ", expect, " of the data buffer");
    expect = e->end;
    prev = e;
  }
  if (expect != buffer_bytes)
    bad("the data buffer has ", buffer_bytes - expect, " bytes after the last tensor (offset ", expect,
        "); tensors must cover the buffer exactly");

  // Everything checked: allocate and read.
  for (auto& e : entries) {
    AnyArray a = AnyArray::empty(e.dtype, e.shape);
    src.read_at(8 + n + e.begin, a.raw_data(), e.end - e.begin, "safetensors");
    out.tensors.emplace(e.name, std::move(a));
  }
  return out;
}

inline Safetensors load_safetensors(const std::string& path) {
  ByteSource src(path, "safetensors");
  return read_safetensors(src);
}

// In-memory entry point (fuzzing, embedded files); `name` stands in for the path in errors.
inline Safetensors parse_safetensors(const void* data, size_t size, const std::string& name = "<memory>") {
  ByteSource src(data, size, name);
  return read_safetensors(src);
}

// Writes tensors of mixed dtypes plus string metadata. Tensors are stored in name order; the
// header is padded with spaces to a multiple of 8 bytes so the buffer starts aligned.
inline void save_safetensors(const std::string& path, const std::map<std::string, AnyArray>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  auto check_text = [&](const std::string& s, const char* what) {
    check<ValueError>(json::find_invalid_utf8(s) == std::string::npos, "save_safetensors: file '", path, "': ", what,
                      " '", s, "' is not valid UTF-8");
  };
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (auto& [k, v] : metadata) {
      check_text(k, "metadata key");
      check_text(v, "metadata value");
      if (!first) header += ',';
      first = false;
      json::write_string(header, k);
      header += ':';
      json::write_string(header, v);
    }
    header += '}';
  }
  std::vector<AnyArray> contiguous;
  uint64_t offset = 0;
  for (auto& [name, a] : tensors) {
    check<ValueError>(!name.empty(), "save_safetensors: file '", path, "': empty tensor name");
    check<ValueError>(name != "__metadata__", "save_safetensors: file '", path,
                      "': '__metadata__' is reserved and cannot name a tensor");
    check_text(name, "tensor name");
    check<ValueError>(a.defined(), "save_safetensors: file '", path, "': tensor '", name, "' is undefined");
    a.visit([&](const auto& t) { require_cpu(t.device(), "save_safetensors"); });
    contiguous.push_back(a.contiguous());
    uint64_t bytes = a.nbytes();
    if (header.size() > 1) header += ',';
    json::write_string(header, name);
    header += ":{\"dtype\":\"";
    header += detail::safetensors_dtype_code(a.dtype());
    header += "\",\"shape\":[";
    Shape s = a.shape();
    for (int i = 0; i < s.rank(); ++i) header += (i ? "," : "") + std::to_string(s[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += '}';
  while (header.size() % 8 != 0) header += ' ';
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));

  write_atomically(path, "save_safetensors", [&](int fd) {
    write_all(fd, len, 8, "save_safetensors", path);
    write_all(fd, header.data(), header.size(), "save_safetensors", path);
    for (auto& a : contiguous) write_all(fd, a.raw_data(), a.nbytes(), "save_safetensors", path);
  });
}

template <class T>
void save_safetensors(const std::string& path, const std::map<std::string, NDArray<T>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}) {
  std::map<std::string, AnyArray> any;
  for (auto& [name, a] : tensors) any.emplace(name, AnyArray(a.detach()));
  save_safetensors(path, any, metadata);
}

}  // namespace dl::io
