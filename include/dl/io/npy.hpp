// NumPy .npy files: the magic "\x93NUMPY", a format version (1.0: 2-byte header length; 2.0 and
// 3.0: 4-byte length; 3.0 allows UTF-8), a Python dict literal header such as
// "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" padded with spaces to a multiple
// of 64 bytes and ended by '\n', then the raw elements.
//
// Supported element types: little-endian '<f4' '<f8' '<i4' '<i8' '<f2' and '|u1'. Object arrays
// ('|O') are refused: they are Python pickles and can run code. A Fortran-order file is loaded
// into the correct C-order array (transposed copy). The header is validated against the file size
// before anything is allocated; exactly numel x element size data bytes must follow it.
//
//   dl::io::save_npy("x.npy", dl::arange<float>(12).reshape({3, 4}));
//   dl::NDArray<float> x = dl::io::load_npy<float>("x.npy");   // or load_npy_any() for any dtype
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "dl/core/dtype.hpp"
#include "dl/core/error.hpp"
#include "dl/core/shape.hpp"
#include "dl/io/any_array.hpp"
#include "dl/io/file_io.hpp"
#include "dl/io/json.hpp"

namespace dl::io {

static_assert(std::endian::native == std::endian::little, "npy: dl assumes a little-endian host");

// NumPy itself refuses headers over 10 kB by default; 1 MB leaves room and still bounds allocation.
inline constexpr uint64_t kNpyMaxHeaderBytes = uint64_t(1) << 20;

namespace detail {

inline const char* npy_descr(DType d) {
  switch (d) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
    case DType::u8: return "|u1";
    case DType::f16: return "<f2";
    case DType::bf16: return nullptr;  // NumPy has no bfloat16
  }
  return nullptr;
}

struct NpyHeader {
  DType dtype = DType::f32;
  bool fortran_order = false;
  std::vector<int64_t> dims;
};

// Parses the Python dict literal of a .npy header: string keys, values that are strings,
// True/False or tuples of integers. Anything else is an IoError naming the file.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view s, const std::string& file) : s_(s), file_(file) {}

  NpyHeader parse() {
    NpyHeader h;
    bool have_descr = false, have_order = false, have_shape = false;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') { ++i_; break; }
      std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (have_descr) error("duplicate key 'descr'");
        have_descr = true;
        if (peek() == '[') error("structured dtypes (a list descr) are not supported");
        h.dtype = dtype_from_descr(parse_string());
      } else if (key == "fortran_order") {
        if (have_order) error("duplicate key 'fortran_order'");
        have_order = true;
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        if (have_shape) error("duplicate key 'shape'");
        have_shape = true;
        h.dims = parse_shape();
      } else {
        error("unexpected key '", key, "' (expected 'descr', 'fortran_order' and 'shape')");
      }
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      skip_ws();
      expect('}');
      break;
    }
    skip_ws();
    if (i_ != s_.size()) error("unexpected text after the header dict");
    if (!have_descr) error("missing key 'descr'");
    if (!have_order) error("missing key 'fortran_order'");
    if (!have_shape) error("missing key 'shape'");
    return h;
  }

 private:
  template <class... Parts>
  [[noreturn]] void error(const Parts&... parts) const {
    fail<IoError>("npy: file '", file_, "': malformed header at byte ", i_, ": ", parts...);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c || i_ >= s_.size()) error("expected '", std::string(1, c), "'");
    ++i_;
  }
  std::string parse_string() {
    char q = peek();
    if (q != '\'' && q != '"') error("expected a quoted string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) {
      if (s_[i_] == '\\') error("escapes are not supported in header strings");
      out += s_[i_++];
    }
    if (i_ >= s_.size()) error("unterminated string");
    ++i_;
    return out;
  }
  bool parse_bool() {
    if (s_.substr(i_, 4) == "True") { i_ += 4; return true; }
    if (s_.substr(i_, 5) == "False") { i_ += 5; return false; }
    error("fortran_order must be True or False");
  }
  std::vector<int64_t> parse_shape() {
    expect('(');
    std::vector<int64_t> dims;
    int64_t numel = 1, span = 1;
    for (;;) {
      skip_ws();
      if (peek() == ')') { ++i_; break; }
      if (!(peek() >= '0' && peek() <= '9')) error("shape entries must be non-negative integers");
      int64_t d = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (__builtin_mul_overflow(d, int64_t(10), &d) || __builtin_add_overflow(d, int64_t(peek() - '0'), &d))
          error("shape dimension does not fit in 64 bits");
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2 long suffix
      if (dims.size() >= static_cast<size_t>(kMaxRank)) error("shape has more than ", kMaxRank, " dimensions");
      if (__builtin_mul_overflow(numel, d, &numel)) error("element count of the shape overflows int64");
      // With a zero dim numel is 0, but the strides still multiply the other dims: bound those too.
      if (__builtin_mul_overflow(span, std::max<int64_t>(d, 1), &span))
        error("shape dimensions multiply past int64 (the strides would overflow)");
      dims.push_back(d);
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      skip_ws();
      expect(')');
      break;
    }
    // "(3)" is the int 3, not a tuple: NumPy writes one-element shapes as "(3,)".
    return dims;
  }
  DType dtype_from_descr(const std::string& d) {
    if (d == "|O" || d == "O" || d == "<O" || d == ">O")
      error("object arrays (dtype '", d, "') are Python pickles; dl does not load them (unsafe and unsupported)");
    if (!d.empty() && d[0] == '>' && d != ">u1" && d != ">i1")
      error("big-endian dtype '", d, "' is not supported; convert with arr.astype(arr.dtype.newbyteorder('<'))");
    if (d == "<f4") return DType::f32;
    if (d == "<f8") return DType::f64;
    if (d == "<i4") return DType::i32;
    if (d == "<i8") return DType::i64;
    if (d == "|u1" || d == "<u1" || d == ">u1" || d == "u1") return DType::u8;
    if (d == "<f2") return DType::f16;
    error("unsupported dtype '", d, "' (dl reads <f4, <f8, <i4, <i8, <f2 and |u1)");
  }

  std::string_view s_;
  const std::string& file_;
  size_t i_ = 0;
};

// Copies `src` (any strides) into a new C-order array.
template <class T>
NDArray<T> npy_packed_copy(const NDArray<T>& src) {
  NDArray<T> out(src.shape());
  T* o = out.numel() ? out.data() : nullptr;
  for_each_element(src, [&](T* p) { *o++ = *p; });
  return out;
}

}  // namespace detail

// Reads a .npy file from any ByteSource (file or memory).
inline AnyArray read_npy(const ByteSource& src) {
  const std::string& file = src.name();
  auto bad = [&](const auto&... parts) { fail<IoError>("npy: file '", file, "': ", parts...); };
  uint64_t size = src.size();
  if (size < 10) bad("is ", size, " bytes, too short for a .npy header");
  unsigned char pre[12] = {};
  src.read_at(0, pre, std::min<uint64_t>(size, 12), "npy");
  if (std::string_view(reinterpret_cast<const char*>(pre), 6) != std::string_view("\x93NUMPY", 6))
    bad("bad magic: not a .npy file (expected \\x93NUMPY)");
  int major = pre[6], minor = pre[7];
  if (!((major == 1 || major == 2 || major == 3) && minor == 0))
    bad("unsupported format version ", major, ".", minor, " (dl reads 1.0, 2.0 and 3.0)");
  uint64_t len_bytes = major == 1 ? 2 : 4;
  if (size < 8 + len_bytes) bad("is ", size, " bytes, too short for a version ", major, ".0 header");
  uint64_t header_len = major == 1 ? (uint64_t(pre[8]) | uint64_t(pre[9]) << 8)
                                   : (uint64_t(pre[8]) | uint64_t(pre[9]) << 8 | uint64_t(pre[10]) << 16 |
                                      uint64_t(pre[11]) << 24);
  uint64_t header_start = 8 + len_bytes;
  if (header_len > kNpyMaxHeaderBytes) bad("header length ", header_len, " is larger than the limit of ", kNpyMaxHeaderBytes);
  if (header_len > size - header_start)
    bad("is truncated: header length ", header_len, " is past the end of the file (", size - header_start,
        " bytes left)");
  std::string header(static_cast<size_t>(header_len), '\0');
  src.read_at(header_start, header.data(), header_len, "npy");
  if (major < 3) {
    for (size_t i = 0; i < header.size(); ++i)
      if (static_cast<unsigned char>(header[i]) >= 0x80) bad("header byte ", i, " is not ASCII (version ", major, ".0)");
  } else if (size_t at = json::find_invalid_utf8(header); at != std::string::npos) {
    bad("header is not valid UTF-8 (byte ", at, ")");
  }
  detail::NpyHeader h = detail::NpyHeaderParser(header, file).parse();

  Shape shape(h.dims);  // rank and product checked by the parser
  uint64_t data_start = header_start + header_len;
  uint64_t have = size - data_start;
  uint64_t need = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(shape.numel()), uint64_t(dtype_size(h.dtype)), &need))
    bad("byte size of shape ", shape, " overflows");
  if (have < need) bad("is truncated: ", dtype_name(h.dtype), " shape ", shape, " needs ", need, " data bytes, found ", have);
  if (have > need) bad("has ", have - need, " trailing bytes after the ", need, " data bytes of shape ", shape);

  // Fortran order stores the reversed shape in C order: read that, then transpose into C order.
  std::vector<int64_t> stored = h.dims;
  if (h.fortran_order) std::reverse(stored.begin(), stored.end());
  AnyArray raw = AnyArray::empty(h.dtype, Shape(stored));
  src.read_at(data_start, raw.raw_data(), need, "npy");
  if (!h.fortran_order || shape.rank() < 2) return raw;
  // A view with column-major strides over the stored data, copied out in row-major order.
  Strides fortran{};
  int64_t step = 1;
  for (int d = 0; d < shape.rank(); ++d) {
    fortran[static_cast<size_t>(d)] = step;
    step *= std::max<int64_t>(shape[d], 1);
  }
  return raw.visit([&](const auto& a) -> AnyArray {
    using T = typename std::remove_cvref_t<decltype(a)>::value_type;
    return detail::npy_packed_copy(NDArray<T>(a.storage(), shape, fortran, a.offset()));
  });
}

inline AnyArray load_npy_any(const std::string& path) {
  ByteSource src(path, "npy");
  return read_npy(src);
}

// Loads a .npy file whose dtype must be T (a DTypeError names both dtypes otherwise).
template <class T>
NDArray<T> load_npy(const std::string& path) {
  AnyArray a = load_npy_any(path);
  check<DTypeError>(a.holds<T>(), "npy: file '", path, "' holds ", dtype_name(a.dtype()), ", requested ",
                    dtype_name(dtype_of<T>));
  return a.get<T>();
}

// In-memory entry point (fuzzing); `name` stands in for the path in errors.
inline AnyArray parse_npy(const void* data, size_t size, const std::string& name = "<memory>") {
  ByteSource src(data, size, name);
  return read_npy(src);
}

// The bytes of a .npy file: header (version 1.0, or 2.0 when asked or when the header needs it)
// followed by the elements in C order.
inline std::string npy_header_bytes(DType dtype, const Shape& shape, int version) {
  const char* descr = detail::npy_descr(dtype);
  check<DTypeError>(descr != nullptr, "save_npy: NumPy has no ", dtype_name(dtype), " dtype; cast to float32 first");
  check<ValueError>(version == 1 || version == 2, "save_npy: format version must be 1 or 2, got ", version);
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < shape.rank(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.rank() == 1) dict += ',';  // "(3,)": a one-element tuple, as NumPy writes it
  dict += "), }";
  if (version == 1 && dict.size() + 11 > 65535) version = 2;
  size_t prefix = version == 1 ? 10 : 12;
  size_t total = prefix + dict.size() + 1;  // + '\n'
  size_t padded = (total + 63) / 64 * 64;   // data starts 64-byte aligned
  dict.append(padded - total, ' ');
  dict += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(version);
  out += '\0';
  uint64_t n = dict.size();
  for (size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  return out + dict;
}

inline void save_npy(const std::string& path, const AnyArray& array, int version = 1) {
  check<ValueError>(array.defined(), "save_npy: file '", path, "': array is undefined");
  array.visit([&](const auto& t) { require_cpu(t.device(), "save_npy"); });
  std::string header = npy_header_bytes(array.dtype(), array.shape(), version);
  AnyArray data = array.contiguous();
  write_atomically(path, "save_npy", [&](int fd) {
    write_all(fd, header.data(), header.size(), "save_npy", path);
    write_all(fd, data.raw_data(), data.nbytes(), "save_npy", path);
  });
}

template <class T>
void save_npy(const std::string& path, const NDArray<T>& array, int version = 1) {
  check<ValueError>(array.defined(), "save_npy: file '", path, "': array is undefined");
  save_npy(path, AnyArray(array.detach()), version);
}

}  // namespace dl::io
