// Tests for io/npy.hpp: round trips (versions 1.0 and 2.0), the files NumPy writes (every dtype,
// rank 0-3, Fortran order, versions 2.0 and 3.0), files dl writes checked by NumPy, and one test
// per malformed-input rule.
#include <doctest/doctest.h>

#include <cstring>

#include "dl/autograd/engine.hpp"
#include "dl/io/npy.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"
#include "io_test_util.hpp"

using namespace dl_test_io;
using dl::io::AnyArray;
using dl::io::load_npy;
using dl::io::save_npy;

namespace {

// A .npy file with the given header text (no padding added) and data.
std::string npy_bytes(const std::string& dict, const std::string& data = "", int major = 1) {
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  uint64_t n = dict.size();
  int len_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  return out + dict + data;
}

std::string load_error(const std::string& bytes) {
  try {
    dl::io::parse_npy(bytes.data(), bytes.size(), "bad.npy");
  } catch (const dl::IoError& e) {
    return e.what();
  }
  return "no error";
}

#define CHECK_NPY_ERROR(bytes, ...)                                              \
  do {                                                                           \
    std::string msg = load_error(bytes);                                         \
    INFO(msg);                                                                   \
    CHECK(msg.find("npy: file 'bad.npy'") != std::string::npos);                 \
    for (const char* w : {__VA_ARGS__}) CHECK(msg.find(w) != std::string::npos); \
  } while (0)

const std::string f4_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";

}  // namespace

TEST_CASE("npy: round trip of every dtype NumPy has, versions 1.0 and 2.0") {
  TempDir dir("npy_round");
  for (int version : {1, 2}) {
    auto f = dl::arange<float>(24).reshape({2, 3, 4});
    save_npy(dir / "f.npy", f, version);
    std::string bytes = read_bytes(dir / "f.npy");
    CHECK(bytes[6] == static_cast<char>(version));
    size_t header_end = bytes.find('\n') + 1;
    CHECK(header_end % 64 == 0);  // data 64-byte aligned, as NumPy writes it
    CHECK(load_npy<float>(dir / "f.npy").to_vector() == f.to_vector());
  }
  save_npy(dir / "d.npy", dl::full<double>(dl::Shape{}, -2.5));
  auto d = load_npy<double>(dir / "d.npy");
  CHECK(d.rank() == 0);
  CHECK(d.item() == -2.5);
  save_npy(dir / "i.npy", dl::arange<int32_t>(5));
  CHECK(load_npy<int32_t>(dir / "i.npy").to_vector() == std::vector<int32_t>{0, 1, 2, 3, 4});
  save_npy(dir / "l.npy", dl::arange<int64_t>(6).reshape({3, 2}).transpose());  // non-contiguous
  auto l = load_npy<int64_t>(dir / "l.npy");
  CHECK(l.shape() == dl::Shape{2, 3});
  CHECK(l.to_vector() == std::vector<int64_t>{0, 2, 4, 1, 3, 5});
  save_npy(dir / "u.npy", dl::full<uint8_t>(dl::Shape{0, 4}, 1));
  CHECK(load_npy<uint8_t>(dir / "u.npy").shape() == dl::Shape{0, 4});
  dl::NDArray<dl::float16> h(dl::Shape{2});
  h.data()[0] = 1.5f;
  h.data()[1] = -4.0f;
  save_npy(dir / "h.npy", h);
  auto hv = load_npy<dl::float16>(dir / "h.npy").to_vector();
  CHECK(float(hv[0]) == 1.5f);
  CHECK(float(hv[1]) == -4.0f);
  CHECK_THROWS_WITH_AS(load_npy<double>(dir / "i.npy"), doctest::Contains("holds int32, requested float64"),
                       dl::DTypeError);
  CHECK_THROWS_WITH_AS(save_npy(dir / "b.npy", dl::NDArray<dl::bfloat16>(dl::Shape{1})),
                       doctest::Contains("no bfloat16"), dl::DTypeError);
  CHECK_THROWS_WITH_AS(save_npy(dir / "v.npy", dl::arange<float>(2), 3), doctest::Contains("version must be 1 or 2"),
                       dl::ValueError);
}

TEST_CASE("npy: reads the files NumPy writes") {
  auto f = load_npy<float>(fixture("f4_3x4.npy"));
  REQUIRE(f.shape() == dl::Shape{3, 4});
  for (int64_t i = 0; i < 12; ++i) CHECK(f.data()[i] == static_cast<float>(i) - 5.5f);
  auto s = load_npy<double>(fixture("f8_scalar.npy"));
  CHECK(s.rank() == 0);
  CHECK(s.item() == -1.5e300);
  CHECK(load_npy<int32_t>(fixture("i4_vec.npy")).to_vector() ==
        std::vector<int32_t>{INT32_MIN, -1, 0, INT32_MAX});
  auto l = load_npy<int64_t>(fixture("i8_2x3.npy"));
  REQUIRE(l.shape() == dl::Shape{6});
  for (int64_t i = 0; i < 6; ++i) CHECK(l.data()[i] == (i - 3) * 1000000000000LL);
  auto u = load_npy<uint8_t>(fixture("u1_2x2.npy"));
  CHECK(u.shape() == dl::Shape{2, 2});
  CHECK(u.to_vector() == std::vector<uint8_t>{0, 255, 7, 128});
  auto h = load_npy<dl::float16>(fixture("f2_vec.npy")).to_vector();
  REQUIRE(h.size() == 3);
  CHECK(float(h[0]) == 1.0f);
  CHECK(float(h[1]) == -0.5f);
  CHECK(float(h[2]) == 65504.0f);
  // Fortran order: element [i, j, k] = 100 i + 10 j + k, returned in C order.
  auto fo = load_npy<double>(fixture("fortran_2x3x4.npy"));
  REQUIRE(fo.shape() == dl::Shape{2, 3, 4});
  CHECK(fo.is_contiguous());
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(fo.at({i, j, k}) == 100.0 * i + 10.0 * j + k);
  CHECK(load_npy<float>(fixture("v2_f4_2x2.npy")).to_vector() == std::vector<float>{1, 2, 3, 4});
  CHECK(load_npy<int32_t>(fixture("v3_i4_3.npy")).to_vector() == std::vector<int32_t>{7, 8, 9});
  CHECK_THROWS_WITH_AS(load_npy<float>(fixture("object.npy")), doctest::Contains("pickle"), dl::IoError);
  CHECK_THROWS_WITH_AS(load_npy<float>(fixture("big_endian.npy")), doctest::Contains("big-endian dtype '>f4'"),
                       dl::IoError);
}

TEST_CASE("npy: files dl writes load in NumPy") {
  std::string why;
  std::string py = reference_python(why);
  if (py.empty()) {
    MESSAGE("SKIPPED: cannot verify with NumPy: " << why);
    return;
  }
  TempDir dir("npy_py");
  save_npy(dir / "a.npy", dl::arange<float>(12).reshape({3, 4}));
  save_npy(dir / "b.npy", dl::arange<int64_t>(3), 2);
  save_npy(dir / "c.npy", dl::full<double>(dl::Shape{}, 0.25));
  save_npy(dir / "d.npy", dl::arange<uint8_t>(8).reshape({2, 2, 2}));
  save_npy(dir / "e.npy", dl::arange<int32_t>(0));
  int rc = run_python(py, dir.path.string(), R"(
import numpy as np, os, sys
d = os.path.dirname(sys.argv[0])
a = np.load(os.path.join(d, 'a.npy')); assert a.dtype == np.float32 and (a == np.arange(12).reshape(3, 4)).all()
b = np.load(os.path.join(d, 'b.npy')); assert b.dtype == np.int64 and (b == [0, 1, 2]).all()
with open(os.path.join(d, 'b.npy'), 'rb') as f: assert np.lib.format.read_magic(f) == (2, 0)
c = np.load(os.path.join(d, 'c.npy')); assert c.dtype == np.float64 and c.shape == () and c == 0.25
e = np.load(os.path.join(d, 'd.npy')); assert e.dtype == np.uint8 and (e == np.arange(8).reshape(2, 2, 2)).all()
z = np.load(os.path.join(d, 'e.npy')); assert z.dtype == np.int32 and z.shape == (0,)
)");
  CHECK(rc == 0);
}

TEST_CASE("npy: malformed files give an IoError naming the file and the problem") {
  std::string data8(8, '\0');
  CHECK(load_error(npy_bytes(f4_dict, data8)) == "no error");
  CHECK(load_error(npy_bytes(f4_dict, data8, 2)) == "no error");
  SUBCASE("magic, version, lengths") {
    CHECK_NPY_ERROR(std::string("\x93NUM", 4), "too short");
    CHECK_NPY_ERROR(std::string("PK\x03\x04 not npy at all"), "bad magic");
    std::string v = npy_bytes(f4_dict, data8);
    v[6] = 4;
    CHECK_NPY_ERROR(v, "unsupported format version 4.0");
    v[6] = 1;
    v[7] = 1;
    CHECK_NPY_ERROR(v, "unsupported format version 1.1");
    std::string past = npy_bytes(f4_dict, data8);
    past[8] = static_cast<char>(0xff);
    past[9] = static_cast<char>(0xff);
    CHECK_NPY_ERROR(past, "header length 65535 is past the end");
    std::string big = npy_bytes("{}", "", 2);
    big[11] = 0x10;  // 256 MB header
    CHECK_NPY_ERROR(big, "larger than the limit");
    CHECK_NPY_ERROR(npy_bytes(std::string(2, '\0'), "", 2).substr(0, 11), "too short for a version 2.0 header");
  }
  SUBCASE("header dict") {
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False}\n", data8), "missing key 'shape'");
    CHECK_NPY_ERROR(npy_bytes("{'fortran_order': False, 'shape': (2,)}\n", data8), "missing key 'descr'");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'shape': (2,)}\n", data8), "missing key 'fortran_order'");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", data8),
                    "duplicate key 'descr'");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", data8),
                    "unexpected key 'x'");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,)}", data8), "True or False");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", data8), "shape entries must be");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", data8), "non-negative");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", data8), "after the header dict");
    CHECK_NPY_ERROR(npy_bytes("{'descr: '<f4'}", data8), "malformed header");
    CHECK_NPY_ERROR(npy_bytes("['descr']", data8), "expected '{'");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", data8),
                    "more than 8 dimensions");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", data8),
                    "overflows int64");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4)}", ""),
                    "strides would overflow");  // numel 0: found by the fuzzer (UBSan in contiguous_strides)
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", data8),
                    "does not fit in 64 bits");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,)}", data8),
                    "byte size", "overflows");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '\xc3\xa9', 'fortran_order': False, 'shape': (2,)}", data8), "not ASCII");
    CHECK_NPY_ERROR(npy_bytes("{'descr': '\xc3', 'fortran_order': False, 'shape': (2,)}", data8, 3), "not valid UTF-8");
  }
  SUBCASE("dtypes") {
    auto with = [&](const std::string& descr) {
      return npy_bytes("{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,), }", data8);
    };
    CHECK_NPY_ERROR(with("|O"), "object arrays", "pickle");
    CHECK_NPY_ERROR(with("O"), "pickle");
    CHECK_NPY_ERROR(with(">f4"), "big-endian dtype '>f4' is not supported");
    CHECK_NPY_ERROR(with(">i8"), "big-endian");
    CHECK_NPY_ERROR(with("<c8"), "unsupported dtype '<c8'");
    CHECK_NPY_ERROR(with("|b1"), "unsupported dtype '|b1'");
    CHECK_NPY_ERROR(npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data8),
                    "structured dtypes");
  }
  SUBCASE("data size") {
    CHECK_NPY_ERROR(npy_bytes(f4_dict, std::string(7, '\0')), "truncated", "needs 8 data bytes, found 7");
    CHECK_NPY_ERROR(npy_bytes(f4_dict, std::string(9, '\0')), "1 trailing bytes");
  }
  SUBCASE("missing files") {
    TempDir dir("npy_missing");
    CHECK_THROWS_WITH_AS(load_npy<float>(dir / "none.npy"), doctest::Contains("does not exist"), dl::IoError);
  }
}

TEST_CASE("npy: random corruption never crashes") {
  TempDir dir("npy_flip");
  save_npy(dir / "ok.npy", dl::arange<float>(6).reshape({2, 3}));
  std::string good = read_bytes(dir / "ok.npy");
  uint64_t state = 777;
  auto next = [&] { state = state * 6364136223846793005ULL + 1442695040888963407ULL; return state >> 33; };
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bad = good;
    int flips = 1 + static_cast<int>(next() % 3);
    for (int k = 0; k < flips; ++k) bad[next() % bad.size()] = static_cast<char>(next());
    try {
      dl::io::parse_npy(bad.data(), bad.size());
    } catch (const dl::Error&) {
    }
  }
}
