#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dl/data/idx.hpp"

#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using dl::data::read_idx;
using dl::data::write_idx;

namespace {
using dl_test::TempDir;
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(gz) == Z_OK);
}
// A well-formed header for an unsigned-byte IDX file with the given dims.
std::vector<uint8_t> header(std::vector<uint32_t> dims, uint8_t type = 0x08) {
  std::vector<uint8_t> h{0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<uint8_t>(d >> s));
  return h;
}
std::vector<uint8_t> with_data(std::vector<uint8_t> h, size_t n) {
  for (size_t i = 0; i < n; ++i) h.push_back(static_cast<uint8_t>(i * 7));
  return h;
}
dl::NDArray<uint8_t> pattern(const dl::Shape& s) {
  dl::NDArray<uint8_t> a(s);
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = static_cast<uint8_t>((i * 31 + 5) % 251);
  return a;
}
}  // namespace

TEST_CASE("idx: round trip, raw and gzip, several ranks") {
  TempDir dir;
  for (bool gz : {false, true}) {
    for (const dl::Shape& s : {dl::Shape{10}, dl::Shape{7, 28, 28}, dl::Shape{2, 3, 4, 5}, dl::Shape{0, 5}}) {
      CAPTURE(gz);
      CAPTURE(s.to_string());
      auto a = pattern(s);
      std::string path = dir / (gz ? "a.gz" : "a.idx");
      write_idx(path, a, gz);
      auto bytes = read_bytes(path);
      REQUIRE(bytes.size() >= 2);
      CHECK((bytes[0] == 0x1f && bytes[1] == 0x8b) == gz);  // gzip magic only when asked
      auto r = read_idx(path);
      CHECK(r.dims == s.vec());
      CHECK(r.data.shape() == s);
      CHECK(r.data.to_vector() == a.to_vector());
    }
  }
  // Only the file itself is left: the atomic writer's temporary files are gone.
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir.path)) { (void)e; ++entries; }
  CHECK(entries == 2);
}

TEST_CASE("idx: raw layout matches the MNIST format byte for byte") {
  TempDir dir;
  auto a = pattern(dl::Shape{2, 3});
  write_idx(dir / "m", a);
  CHECK(read_bytes(dir / "m") == std::vector<uint8_t>{0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 5, 36, 67, 98, 129, 160});
}

TEST_CASE("idx: write_idx of a strided view writes its logical elements") {
  TempDir dir;
  auto a = pattern(dl::Shape{4, 6});
  dl::NDArray<uint8_t> view(a.storage(), dl::Shape{4, 3}, dl::Strides{6, 2}, 1);  // every other column
  write_idx(dir / "v", view);
  auto r = read_idx(dir / "v");
  REQUIRE(r.data.shape() == dl::Shape{4, 3});
  CHECK(r.data.at({2, 1}) == a.at({2, 3}));
}

TEST_CASE("idx: malformed files are IoErrors that say what is wrong") {
  TempDir dir;
  auto p = [&](const char* name) { return dir / name; };

  CHECK_THROWS_WITH_AS(read_idx(p("missing")), doctest::Contains("does not exist"), dl::IoError);
  CHECK_THROWS_WITH_AS(read_idx(dir.path.string()), doctest::Contains("is a directory"), dl::IoError);

  write_bytes(p("empty"), {});
  CHECK_THROWS_WITH_AS(read_idx(p("empty")), doctest::Contains("is truncated: the header needs at least 4 bytes, found 0"),
                       dl::IoError);
  write_bytes(p("short_header"), {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});
  CHECK_THROWS_WITH_AS(read_idx(p("short_header")),
                       doctest::Contains("is truncated: the header needs 16 bytes for 3 dimensions, found 10"),
                       dl::IoError);

  write_bytes(p("magic"), with_data({0x12, 0x34, 8, 1, 0, 0, 0, 1}, 1));
  CHECK_THROWS_WITH_AS(read_idx(p("magic")), doctest::Contains("not an IDX file: the first two bytes are 0x12 0x34"),
                       dl::IoError);

  write_bytes(p("float"), with_data(header({2}, 0x0D), 8));
  CHECK_THROWS_WITH_AS(read_idx(p("float")), doctest::Contains("element type code 0x0d (float32)"), dl::IoError);

  write_bytes(p("zero_dims"), header({}));
  CHECK_THROWS_WITH_AS(read_idx(p("zero_dims")), doctest::Contains("declares 0 dimensions; expected 1 to 8"),
                       dl::IoError);
  write_bytes(p("nine_dims"), header({1, 1, 1, 1, 1, 1, 1, 1, 1}));
  CHECK_THROWS_WITH_AS(read_idx(p("nine_dims")), doctest::Contains("declares 9 dimensions"), dl::IoError);

  write_bytes(p("huge"), header({65536, 65536, 2}));  // 8 GiB declared: rejected before allocating
  CHECK_THROWS_WITH_AS(read_idx(p("huge")), doctest::Contains("more than the limit of 4294967296 bytes"),
                       dl::IoError);
  write_bytes(p("overflow"), header(std::vector<uint32_t>(8, 0xFFFFFFFFu)));
  CHECK_THROWS_WITH_AS(read_idx(p("overflow")), doctest::Contains("element count overflows"), dl::IoError);

  write_bytes(p("trunc"), with_data(header({2, 3, 4}), 20));
  std::string trunc_msg = "idx: file '" + p("trunc") + "' is truncated: header says 24 bytes of data, found 20";
  CHECK_THROWS_WITH_AS(read_idx(p("trunc")), doctest::Contains(trunc_msg.c_str()), dl::IoError);
  write_bytes(p("trailing"), with_data(header({2, 3}), 9));
  CHECK_THROWS_WITH_AS(read_idx(p("trailing")),
                       doctest::Contains("has 3 trailing bytes: header says 6 bytes of data, found 9"), dl::IoError);
}

TEST_CASE("idx: malformed gzip files") {
  TempDir dir;
  auto p = [&](const char* name) { return dir / name; };

  write_gz(p("trunc.gz"), with_data(header({2, 3, 4}), 20));
  CHECK_THROWS_WITH_AS(read_idx(p("trunc.gz")), doctest::Contains("is truncated: header says 24 bytes of data, found 20"),
                       dl::IoError);
  write_gz(p("trailing.gz"), with_data(header({10}), 15));
  CHECK_THROWS_WITH_AS(read_idx(p("trailing.gz")), doctest::Contains("has 5 trailing bytes"), dl::IoError);
  write_gz(p("short_header.gz"), {0, 0, 8});
  CHECK_THROWS_WITH_AS(read_idx(p("short_header.gz")), doctest::Contains("is truncated: the header needs"), dl::IoError);

  // A valid stream, then damaged three ways: cut short, bad CRC, bad compression method.
  write_gz(p("good.gz"), with_data(header({50, 40}), 2000));
  REQUIRE(read_idx(p("good.gz")).data.numel() == 2000);
  auto good = read_bytes(p("good.gz"));

  auto cut = good;
  cut.resize(cut.size() / 2);
  write_bytes(p("cut.gz"), cut);
  CHECK_THROWS_WITH_AS(read_idx(p("cut.gz")), doctest::Contains("corrupt gzip stream (zlib:"), dl::IoError);

  auto crc = good;
  crc[crc.size() - 8] ^= 0xff;  // first byte of the CRC-32 trailer
  write_bytes(p("crc.gz"), crc);
  CHECK_THROWS_WITH_AS(read_idx(p("crc.gz")), doctest::Contains("corrupt gzip stream"), dl::IoError);

  auto method = good;
  method[2] = 7;  // compression method must be 8 (deflate)
  write_bytes(p("method.gz"), method);
  CHECK_THROWS_WITH_AS(read_idx(p("method.gz")), doctest::Contains("corrupt gzip stream"), dl::IoError);
}

TEST_CASE("idx: write_idx argument and path errors") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(write_idx(dir / "no_such_dir/x.idx", pattern(dl::Shape{3})), doctest::Contains("does not exist"),
                       dl::IoError);
  dl::NDArray<uint8_t> scalar(dl::Shape{});
  CHECK_THROWS_WITH_AS(write_idx(dir / "s.idx", scalar), doctest::Contains("rank must be 1 to 8, got 0"),
                       dl::ValueError);
  CHECK_THROWS_AS(write_idx(dir / "u.idx", dl::NDArray<uint8_t>()), dl::ValueError);
  // A failed write leaves an existing file untouched.
  write_idx(dir / "keep.idx", pattern(dl::Shape{4}));
  CHECK_THROWS_AS(write_idx(dir / "keep.idx", scalar), dl::ValueError);
  CHECK(read_idx(dir / "keep.idx").data.numel() == 4);
}

TEST_CASE("idx: the installed Fashion-MNIST files parse") {
  std::string path = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(path)) {
    MESSAGE("skipped: " << path << " not installed (apt-get install dataset-fashion-mnist)");
    return;
  }
  auto r = read_idx(path);
  CHECK(r.dims == std::vector<int64_t>{10000});
}
