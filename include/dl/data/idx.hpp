// IDX files, the format of MNIST and Fashion-MNIST: two zero bytes, a type code, a dimension
// count, that many big-endian uint32 dims, then the elements in row-major order. read_idx()
// accepts raw files and gzip-compressed ones (told apart by the gzip magic bytes 1f 8b) and
// validates the whole header before it allocates, so a damaged or hostile file gives an IoError
// instead of a crash or a huge allocation. Only unsigned bytes (type 0x08) are read: that is what
// the (Fashion-)MNIST images and labels use.
//
//   auto f = dl::data::read_idx("train-images-idx3-ubyte.gz");  // f.dims == {60000, 28, 28}
//   dl::data::write_idx("out-idx1-ubyte.gz", labels_u8, /*gzip=*/true);
#pragma once
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/data/atomic_file.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::data {

// Larger files than this are rejected before allocation (the biggest real IDX file is ~50 MB).
inline constexpr uint64_t kIdxMaxDataBytes = uint64_t(4) << 30;

struct IdxArray {
  std::vector<int64_t> dims;  // as stored in the header
  NDArray<uint8_t> data;      // shape == dims
};

namespace detail {

inline const char* idx_type_name(uint8_t code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

inline std::string hex_byte(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", b);
  return buf;
}

// A byte source over a raw file or a gzip stream; zlib errors become IoErrors naming the file.
class IdxSource {
 public:
  explicit IdxSource(const std::string& path) : path_(path) {
    std::error_code ec;
    auto status = std::filesystem::status(path, ec);
    check<IoError>(std::filesystem::exists(status), "idx: file '", path, "' does not exist");
    check<IoError>(!std::filesystem::is_directory(status), "idx: '", path, "' is a directory, not an IDX file");
    raw_ = std::fopen(path.c_str(), "rb");
    check<IoError>(raw_ != nullptr, "idx: cannot open file '", path, "': ", std::strerror(errno));
    unsigned char magic[2] = {0, 0};
    size_t got = std::fread(magic, 1, 2, raw_);
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
      std::fclose(raw_);
      raw_ = nullptr;
      gz_ = gzopen(path.c_str(), "rb");
      check<IoError>(gz_ != nullptr, "idx: cannot open gzip file '", path, "': ", std::strerror(errno));
      gzbuffer(gz_, 1 << 18);  // fewer, larger reads: the 60k-image file decompresses ~2x faster
    } else {
      std::rewind(raw_);
      struct stat st {};
      check<IoError>(::fstat(::fileno(raw_), &st) == 0, "idx: cannot stat '", path, "': ", std::strerror(errno));
      raw_size_ = static_cast<uint64_t>(st.st_size);
    }
  }
  IdxSource(const IdxSource&) = delete;
  IdxSource& operator=(const IdxSource&) = delete;
  ~IdxSource() {
    if (raw_) std::fclose(raw_);
    if (gz_) gzclose(gz_);
  }

  bool is_gzip() const { return gz_ != nullptr; }
  uint64_t raw_size() const { return raw_size_; }  // meaningful for raw files only

  // Reads up to n bytes; fewer only at the end of the data.
  uint64_t read(void* buf, uint64_t n) {
    auto* out = static_cast<unsigned char*>(buf);
    uint64_t total = 0;
    while (total < n) {
      uint64_t want = std::min<uint64_t>(n - total, uint64_t(1) << 30);
      uint64_t got = 0;
      if (gz_) {
        int r = gzread(gz_, out + total, static_cast<unsigned>(want));
        check_gzip();
        if (r <= 0) break;
        got = static_cast<uint64_t>(r);
      } else {
        got = std::fread(out + total, 1, want, raw_);
        check<IoError>(!std::ferror(raw_), "idx: error reading '", path_, "': ", std::strerror(errno));
        if (got == 0) break;
      }
      total += got;
    }
    return total;
  }

  // Counts (and discards) the bytes left in the stream.
  uint64_t count_rest() {
    std::vector<unsigned char> buf(1 << 16);
    uint64_t total = 0;
    while (uint64_t got = read(buf.data(), buf.size())) total += got;
    return total;
  }

 private:
  void check_gzip() {
    int errnum = Z_OK;
    const char* msg = gzerror(gz_, &errnum);
    // Z_BUF_ERROR is zlib's "unexpected end of file": the compressed stream was cut short.
    check<IoError>(errnum == Z_OK || errnum == Z_STREAM_END, "idx: file '", path_,
                   "': corrupt gzip stream (zlib: ", msg ? msg : "unknown error", ")");
  }
  std::string path_;
  std::FILE* raw_ = nullptr;
  gzFile gz_ = nullptr;
  uint64_t raw_size_ = 0;
};

}  // namespace detail

inline IdxArray read_idx(const std::string& path, uint64_t max_data_bytes = kIdxMaxDataBytes) {
  detail::IdxSource src(path);
  std::array<uint8_t, 4> head{};
  uint64_t got = src.read(head.data(), 4);
  check<IoError>(got == 4, "idx: file '", path, "' is truncated: the header needs at least 4 bytes, found ", got);
  check<IoError>(head[0] == 0 && head[1] == 0, "idx: file '", path, "' is not an IDX file: the first two bytes are ",
                 detail::hex_byte(head[0]), " ", detail::hex_byte(head[1]), ", expected 0x00 0x00");
  check<IoError>(head[2] == 0x08, "idx: file '", path, "' has element type code ", detail::hex_byte(head[2]), " (",
                 detail::idx_type_name(head[2]), "); only 0x08 (unsigned byte) is supported");
  int ndims = head[3];
  check<IoError>(ndims >= 1 && ndims <= kMaxRank, "idx: file '", path, "' declares ", ndims,
                 " dimensions; expected 1 to ", kMaxRank);

  uint64_t header_bytes = 4 + 4 * static_cast<uint64_t>(ndims);
  std::array<uint8_t, 4 * kMaxRank> raw_dims{};
  got = src.read(raw_dims.data(), 4 * static_cast<uint64_t>(ndims));
  check<IoError>(got == 4 * static_cast<uint64_t>(ndims), "idx: file '", path, "' is truncated: the header needs ",
                 header_bytes, " bytes for ", ndims, " dimensions, found ", 4 + got);

  std::vector<int64_t> dims;
  uint64_t count = 1;
  bool overflow = false;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* b = raw_dims.data() + 4 * i;
    uint32_t d = (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
    dims.push_back(d);
    overflow = overflow || __builtin_mul_overflow(count, uint64_t(d), &count);
  }
  auto dims_text = [&] {
    std::string t = "(";
    for (size_t i = 0; i < dims.size(); ++i) t += (i ? ", " : "") + std::to_string(dims[i]);
    return t + (dims.size() == 1 ? ",)" : ")");
  };
  check<IoError>(!overflow, "idx: file '", path, "' declares dims ", dims_text(), " whose element count overflows");
  check<IoError>(count <= max_data_bytes, "idx: file '", path, "' declares dims ", dims_text(), " = ", count,
                 " bytes of data, more than the limit of ", max_data_bytes, " bytes");
  Shape shape(dims);  // safe now: count fits in 4 GiB

  // Raw files: the size is known up front, so a truncated file is rejected before allocating.
  if (!src.is_gzip()) {
    uint64_t found = src.raw_size() - std::min(src.raw_size(), header_bytes);
    check<IoError>(found >= count, "idx: file '", path, "' is truncated: header says ", count,
                   " bytes of data, found ", found);
    check<IoError>(found == count, "idx: file '", path, "' has ", found - count, " trailing bytes: header says ",
                   count, " bytes of data, found ", found);
  }

  NDArray<uint8_t> data(shape);
  uint64_t read = count ? src.read(data.data(), count) : 0;
  check<IoError>(read == count, "idx: file '", path, "' is truncated: header says ", count, " bytes of data, found ",
                 read);
  uint64_t extra = src.count_rest();
  check<IoError>(extra == 0, "idx: file '", path, "' has ", extra, " trailing bytes: header says ", count,
                 " bytes of data, found ", count + extra);
  return {std::move(dims), std::move(data)};
}

// Writes `array` (rank 1..8, dims < 2^32) as an IDX file of unsigned bytes, gzip-compressed when
// asked. The file appears atomically: a reader never sees a partial file.
inline void write_idx(const std::string& path, const NDArray<uint8_t>& array, bool gzip = false) {
  array.require_defined("write_idx");
  require_cpu(array.device(), "write_idx");
  int r = array.rank();
  check<ValueError>(r >= 1 && r <= kMaxRank, "write_idx: rank must be 1 to ", kMaxRank, ", got ", r);
  std::vector<unsigned char> bytes{0, 0, 0x08, static_cast<unsigned char>(r)};
  for (int i = 0; i < r; ++i) {
    int64_t d = array.shape()[i];
    check<ValueError>(d <= int64_t(UINT32_MAX), "write_idx: dimension ", i, " of ", array.shape(),
                      " does not fit in 32 bits");
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<unsigned char>((uint64_t(d) >> s) & 0xff));
  }
  std::vector<uint8_t> copy;
  const uint8_t* data = nullptr;
  if (array.is_contiguous()) {
    data = array.numel() ? array.data() : nullptr;
  } else {
    copy = array.to_vector();
    data = copy.data();
  }
  uint64_t n = static_cast<uint64_t>(array.numel());

  AtomicFile out(path, "write_idx");
  if (gzip) {
    gzFile gz = gzdopen(out.release_fd(), "wb6");
    check<IoError>(gz != nullptr, "write_idx: cannot start a gzip stream for '", path, "'");
    bool ok = gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size());
    for (uint64_t off = 0; ok && off < n; off += uint64_t(1) << 30) {
      unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n - off, uint64_t(1) << 30));
      ok = gzwrite(gz, data + off, chunk) == static_cast<int>(chunk);
    }
    ok = (gzclose(gz) == Z_OK) && ok;
    check<IoError>(ok, "write_idx: error writing gzip data to '", path, "'");
  } else {
    std::FILE* fp = out.open_stdio();
    bool ok = std::fwrite(bytes.data(), 1, bytes.size(), fp) == bytes.size();
    ok = ok && (n == 0 || std::fwrite(data, 1, n, fp) == n);
    ok = (std::fclose(fp) == 0) && ok;
    check<IoError>(ok, "write_idx: error writing '", path, "': ", std::strerror(errno));
  }
  out.commit();
}

}  // namespace dl::data
