// Tests for io/safetensors.hpp: round trips of every dtype and rank, the files the reference
// Python package writes, files dl writes checked by the reference package, atomic writes that keep
// permissions, and one test per malformed-input rule (IoError naming file, tensor and problem).
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "dl/autograd/engine.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/io/safetensors.hpp"
#include "dl/ndarray/creation.hpp"
#include "io_test_util.hpp"

using namespace dl_test_io;
using dl::io::AnyArray;
using dl::io::load_safetensors;
using dl::io::save_safetensors;

namespace {

// A file with the given header JSON (as is, no padding) and data bytes.
std::string st_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::string load_error(const std::string& bytes) {
  try {
    dl::io::parse_safetensors(bytes.data(), bytes.size(), "bad.st");
  } catch (const dl::IoError& e) {
    return e.what();
  }
  return "no error";
}

#define CHECK_ST_ERROR(bytes, ...)                                     \
  do {                                                                 \
    std::string msg = load_error(bytes);                               \
    INFO(msg);                                                         \
    CHECK(msg.find("safetensors: file 'bad.st'") != std::string::npos); \
    for (const char* w : {__VA_ARGS__}) CHECK(msg.find(w) != std::string::npos); \
  } while (0)

template <class T>
dl::NDArray<T> filled(const dl::Shape& s, double scale) {
  dl::NDArray<T> a(s);
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = T(static_cast<float>((i % 17) * scale - 3));
  return a;
}

template <class T>
void check_same(const AnyArray& got, const dl::NDArray<T>& want) {
  REQUIRE(got.holds<T>());
  const auto& g = got.get<T>();
  REQUIRE(g.shape() == want.shape());
  auto a = g.to_vector();
  auto b = want.to_vector();
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, ranks 0 to 8, metadata") {
  TempDir dir("st_round");
  std::map<std::string, AnyArray> t;
  t["a.f32"] = filled<float>({2, 3}, 0.5);
  t["b.f64"] = filled<double>({}, 1.25);
  t["c.i32"] = filled<int32_t>({7}, 1);
  t["d.i64"] = filled<int64_t>({2, 1, 3}, 1e9);
  t["e.u8"] = filled<uint8_t>({1, 2, 1, 2, 1, 2, 1, 2}, 1);
  t["f.bf16"] = filled<dl::bfloat16>({3, 2}, 0.25);
  t["g.f16"] = filled<dl::float16>({4, 1, 2}, 0.125);
  t["h.empty"] = dl::NDArray<float>(dl::Shape{0, 5});
  t["caf\xc3\xa9 \"q\" \\"] = filled<float>({1}, 1);
  std::map<std::string, std::string> meta{{"epoch", "3"}, {"note", "line\nbreak \"x\" \xe2\x82\xac"}};
  save_safetensors(dir / "m.safetensors", t, meta);
  auto f = load_safetensors(dir / "m.safetensors");
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == t.size());
  check_same(f.tensors["a.f32"], t["a.f32"].get<float>());
  check_same(f.tensors["b.f64"], t["b.f64"].get<double>());
  check_same(f.tensors["c.i32"], t["c.i32"].get<int32_t>());
  check_same(f.tensors["d.i64"], t["d.i64"].get<int64_t>());
  check_same(f.tensors["e.u8"], t["e.u8"].get<uint8_t>());
  check_same(f.tensors["f.bf16"], t["f.bf16"].get<dl::bfloat16>());
  check_same(f.tensors["g.f16"], t["g.f16"].get<dl::float16>());
  CHECK(f.tensors["h.empty"].shape() == dl::Shape{0, 5});
  CHECK(f.get<float>("a.f32").at({1, 2}) == t["a.f32"].get<float>().at({1, 2}));
  CHECK_THROWS_WITH_AS(f.get<double>("a.f32"), doctest::Contains("tensor 'a.f32' is float32, requested float64"),
                       dl::DTypeError);
  CHECK_THROWS_WITH_AS(f.get<float>("nope"), doctest::Contains("no tensor named 'nope'"), dl::IoError);
  // The header is padded so the data buffer starts 8-byte aligned.
  std::string bytes = read_bytes(dir / "m.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
}

TEST_CASE("safetensors: typed map overload, non-contiguous input and empty file") {
  TempDir dir("st_typed");
  auto a = dl::arange<float>(12).reshape({3, 4});
  std::map<std::string, dl::NDArray<float>> m{{"t", a.transpose()}};
  save_safetensors(dir / "t.st", m);
  auto f = load_safetensors(dir / "t.st");
  auto t = f.get<float>("t");
  REQUIRE(t.shape() == dl::Shape{4, 3});
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) CHECK(t.at({i, j}) == a.at({j, i}));
  save_safetensors(dir / "empty.st", std::map<std::string, AnyArray>{});
  auto e = load_safetensors(dir / "empty.st");
  CHECK(e.tensors.empty());
  CHECK(e.metadata.empty());
}

TEST_CASE("safetensors: save refuses bad names") {
  TempDir dir("st_names");
  dl::NDArray<float> x(dl::Shape{1});
  CHECK_THROWS_WITH_AS(save_safetensors(dir / "x", std::map<std::string, AnyArray>{{"__metadata__", x}}),
                       doctest::Contains("reserved"), dl::ValueError);
  CHECK_THROWS_WITH_AS(save_safetensors(dir / "x", std::map<std::string, AnyArray>{{"", x}}),
                       doctest::Contains("empty tensor name"), dl::ValueError);
  CHECK_THROWS_WITH_AS(save_safetensors(dir / "x", std::map<std::string, AnyArray>{{"\xff", x}}),
                       doctest::Contains("not valid UTF-8"), dl::ValueError);
  CHECK_THROWS_WITH_AS(save_safetensors(dir / "x", std::map<std::string, AnyArray>{{"u", AnyArray()}}),
                       doctest::Contains("undefined"), dl::ValueError);
  CHECK_THROWS_WITH_AS(save_safetensors(dir / "no/such/dir/x", std::map<std::string, AnyArray>{}),
                       doctest::Contains("does not exist"), dl::IoError);
  CHECK_FALSE(fs::exists(dir / "x"));
}

TEST_CASE("safetensors: writes are atomic and keep the target's permissions") {
  TempDir dir("st_perm");
  std::string p = dir / "w.st";
  std::map<std::string, AnyArray> t{{"x", filled<float>({4}, 1)}};
  save_safetensors(p, t);
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  mode_t um = ::umask(0);
  ::umask(um);
  CHECK((st.st_mode & 0777) == (0666 & ~um));  // like a file made by fopen, not mkstemp's 0600
  REQUIRE(::chmod(p.c_str(), 0640) == 0);
  save_safetensors(p, t);
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  // No temporary files are left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(dir.path)) { (void)e; ++files; }
  CHECK(files == 1);
}

TEST_CASE("safetensors: reads the files the reference Python package writes") {
  auto f = load_safetensors(fixture("reference.safetensors"));
  CHECK(f.metadata.at("format") == "pt");
  CHECK(f.metadata.at("note") == "caf\xc3\xa9 \"quoted\"");
  auto a = f.get<float>("f32_2x3");
  REQUIRE(a.shape() == dl::Shape{2, 3});
  for (int64_t i = 0; i < 6; ++i) CHECK(a.data()[i] == 0.5f * static_cast<float>(i));
  auto s = f.get<double>("f64_scalar");
  CHECK(s.rank() == 0);
  CHECK(s.item() == 3.25);
  auto v = f.get<int32_t>("i32_vec");
  CHECK(v.to_vector() == std::vector<int32_t>{-2, -1, 0, 1, 2});
  auto l = f.get<int64_t>("i64_2x2x2");
  REQUIRE(l.shape() == dl::Shape{2, 2, 2});
  for (int64_t i = 0; i < 8; ++i) CHECK(l.data()[i] == i * 1000000007LL);
  CHECK(f.get<uint8_t>("u8_vec").to_vector() == std::vector<uint8_t>{0, 1, 127, 128, 255});
  auto h = f.get<dl::float16>("f16_vec").to_vector();
  REQUIRE(h.size() == 4);
  CHECK(float(h[0]) == 0.5f);
  CHECK(float(h[1]) == -2.0f);
  CHECK(float(h[2]) == 65504.0f);
  CHECK(float(h[3]) == doctest::Approx(6.1035156e-05f));
  CHECK(f.tensors.at("empty_f32").shape() == dl::Shape{0, 3});

  auto b = load_safetensors(fixture("bf16.safetensors")).get<dl::bfloat16>("x").to_vector();
  REQUIRE(b.size() == 3);
  CHECK(float(b[0]) == 1.0f);
  CHECK(float(b[1]) == -2.5f);
  CHECK(float(b[2]) == 0.15625f);
}

TEST_CASE("safetensors: files dl writes load in the reference Python package") {
  std::string why;
  std::string py = reference_python(why);
  if (py.empty()) {
    MESSAGE("SKIPPED: cannot verify with the Python safetensors package: " << why);
    return;
  }
  TempDir dir("st_py");
  std::map<std::string, AnyArray> t;
  t["w"] = dl::arange<float>(6).reshape({2, 3});
  t["d"] = dl::full<double>(dl::Shape{}, 2.5);
  t["i"] = dl::arange<int64_t>(4);
  t["k"] = dl::arange<int32_t>(8).reshape({2, 2, 2});
  t["u"] = dl::arange<uint8_t>(3);
  t["h"] = filled<dl::float16>({2}, 0.5);  // -3, -2.5
  save_safetensors(dir / "dl.safetensors", t, {{"epoch", "7"}});
  int rc = run_python(py, dir.path.string(), R"(
import numpy as np, sys
from safetensors.numpy import load_file
from safetensors import safe_open
p = sys.argv[0].replace('check.py', 'dl.safetensors')
t = load_file(p)
assert set(t) == {'w', 'd', 'i', 'k', 'u', 'h'}, t.keys()
assert t['w'].dtype == np.float32 and (t['w'] == np.arange(6, dtype=np.float32).reshape(2, 3)).all()
assert t['d'].dtype == np.float64 and t['d'].shape == () and t['d'] == 2.5
assert t['i'].dtype == np.int64 and (t['i'] == np.arange(4)).all()
assert t['k'].dtype == np.int32 and (t['k'] == np.arange(8).reshape(2, 2, 2)).all()
assert t['u'].dtype == np.uint8 and (t['u'] == [0, 1, 2]).all()
assert t['h'].dtype == np.float16 and (t['h'] == [-3, -2.5]).all()
with safe_open(p, framework='np') as f:
    assert f.metadata() == {'epoch': '7'}, f.metadata()
)");
  CHECK(rc == 0);
}

TEST_CASE("safetensors: malformed files give an IoError naming file, tensor and problem") {
  const std::string ok_entry = R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\0');
  CHECK(load_error(st_bytes("{" + ok_entry + "}", data8)) == "no error");

  SUBCASE("size and header length") {
    CHECK_ST_ERROR(std::string(5, '\0'), "5 bytes, shorter than the 8-byte header length");
    std::string huge(8, '\0');
    huge[4] = 1;  // 2^32 bytes
    CHECK_ST_ERROR(huge + "{}", "header length 4294967296 is larger than the limit");
    std::string past = st_bytes("{}");
    past[0] = 50;
    CHECK_ST_ERROR(past, "header length 50 is past the end of the file");
  }
  SUBCASE("encoding and start") {
    CHECK_ST_ERROR(st_bytes("{\"\xc3\x28\":1}"), "not valid UTF-8");
    CHECK_ST_ERROR(st_bytes("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");  // surrogate
    CHECK_ST_ERROR(st_bytes("{\"\xc0\xaf\":1}"), "not valid UTF-8");      // overlong '/'
    CHECK_ST_ERROR(st_bytes(" {}"), "does not start with '{'");
    CHECK_ST_ERROR(st_bytes("[]"), "does not start with '{'");
    CHECK_ST_ERROR(st_bytes(""), "does not start with '{'");
  }
  SUBCASE("malformed JSON") {
    CHECK_ST_ERROR(st_bytes("{"), "malformed JSON", "unexpected end");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"b\",}"), "malformed JSON", "expected a string key");
    CHECK_ST_ERROR(st_bytes("{\"a\" \"b\"}"), "malformed JSON", "expected ':'");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"unterminated}"), "malformed JSON", "unterminated string");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"\\q\"}"), "malformed JSON", "unknown escape");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"\\u12g4\"}"), "malformed JSON", "bad hex digit");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"\\ud800\"}"), "malformed JSON", "lone high surrogate");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"\\udc00\"}"), "malformed JSON", "lone low surrogate");
    CHECK_ST_ERROR(st_bytes("{\"a\":\"tab\there\"}"), "malformed JSON", "control character");
    CHECK_ST_ERROR(st_bytes("{\"a\":1.5}"), "malformed JSON", "only integers");
    CHECK_ST_ERROR(st_bytes("{\"a\":1e3}"), "malformed JSON", "only integers");
    CHECK_ST_ERROR(st_bytes("{\"a\":01}"), "malformed JSON", "leading zeros");
    CHECK_ST_ERROR(st_bytes("{\"a\":-}"), "malformed JSON", "digit");
    CHECK_ST_ERROR(st_bytes("{\"a\":99999999999999999999}"), "malformed JSON", "does not fit in 64 bits");
    CHECK_ST_ERROR(st_bytes("{\"a\":true}"), "malformed JSON", "only objects, arrays, strings and integers");
    CHECK_ST_ERROR(st_bytes("{\"a\":null}"), "malformed JSON", "only objects");
    CHECK_ST_ERROR(st_bytes("{\"a\":[1,2}"), "malformed JSON", "expected ',' or ']'");
    CHECK_ST_ERROR(st_bytes("{} x"), "malformed JSON", "after the end");
    CHECK_ST_ERROR(st_bytes("{\"a\":" + std::string(100000, '[') + "}"), "malformed JSON", "nesting deeper");
    CHECK_ST_ERROR(st_bytes("{" + ok_entry + "," + ok_entry + "}", data8), "malformed JSON", "duplicate key \"x\"");
  }
  SUBCASE("metadata") {
    CHECK_ST_ERROR(st_bytes("{\"__metadata__\":[]}"), "__metadata__ must be an object");
    CHECK_ST_ERROR(st_bytes("{\"__metadata__\":{\"k\":1}}"), "__metadata__ value of 'k' must be a string");
    CHECK(load_error(st_bytes("{\"__metadata__\":{\"k\":\"\\u00e9\\ud83d\\ude00\"}}")) == "no error");
    std::string b = st_bytes("{\"__metadata__\":{\"k\":\"\\u00e9\\ud83d\\ude00\\n\"}}");
    auto f = dl::io::parse_safetensors(b.data(), b.size());
    CHECK(f.metadata.at("k") == "\xc3\xa9\xf0\x9f\x98\x80\n");
  }
  SUBCASE("entries") {
    CHECK_ST_ERROR(st_bytes("{\"x\":[]}"), "tensor 'x'", "entry must be an object");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":[2]}})"), "tensor 'x'", "missing field \"data_offsets\"");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","data_offsets":[0,0]}})"), "tensor 'x'", "missing field \"shape\"");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"shape":[],"data_offsets":[0,0]}})"), "tensor 'x'", "missing field \"dtype\"");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"y":1}})", data8), "tensor 'x'",
                   "unknown field \"y\"");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"Q8","shape":[2],"data_offsets":[0,8]}})", data8), "tensor 'x'",
                   "unknown or unsupported dtype 'Q8'");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]}})", data8), "tensor 'x'",
                   "unsupported dtype 'BOOL'");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", data8), "tensor 'x'",
                   "dtype must be a string");
  }
  SUBCASE("shapes") {
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), "tensor 'x'",
                   "negative dimension (-2)");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", data8),
                   "tensor 'x'", "rank 9, more than the maximum of 8");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", data8),
                   "tensor 'x'", "overflows int64");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})", data8),
                   "tensor 'x'", "byte size", "overflows");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})"),
                   "tensor 'x'", "strides would overflow");  // numel 0, found by fuzzing npy
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", data8), "tensor 'x'",
                   "shape must be an array");
    CHECK_ST_ERROR(st_bytes(R"({"x":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", data8), "tensor 'x'",
                   "shape entries must be integers");
  }
  SUBCASE("data_offsets") {
    auto entry = [](const std::string& offsets) {
      return st_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":)" + offsets + "}}", std::string(8, '\0'));
    };
    CHECK_ST_ERROR(entry("[0,8,16]"), "tensor 'x'", "exactly two integers");
    CHECK_ST_ERROR(entry("[0]"), "tensor 'x'", "exactly two integers");
    CHECK_ST_ERROR(entry("[\"0\",8]"), "tensor 'x'", "exactly two integers");
    CHECK_ST_ERROR(entry("{}"), "tensor 'x'", "exactly two integers");
    CHECK_ST_ERROR(entry("[-8,0]"), "tensor 'x'", "non-negative");
    CHECK_ST_ERROR(entry("[8,0]"), "tensor 'x'", "begin is after end");
    CHECK_ST_ERROR(entry("[0,16]"), "tensor 'x'", "end past the data buffer of 8 bytes");
    CHECK_ST_ERROR(entry("[0,4]"), "tensor 'x'", "hold 4 bytes, but float32 shape (2,) needs 8");
  }
  SUBCASE("ranges must tile the buffer") {
    std::string two = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":)";
    CHECK_ST_ERROR(st_bytes(two + "[4,12]}}", std::string(12, '\0')), "tensor 'b'", "overlap tensor 'a'");
    CHECK_ST_ERROR(st_bytes(two + "[0,8]}}", std::string(8, '\0')), "overlap");
    CHECK_ST_ERROR(st_bytes(two + "[12,20]}}", std::string(20, '\0')), "tensor 'b'", "hole of 4 bytes at offset 8");
    CHECK_ST_ERROR(st_bytes(two + "[8,16]}}", std::string(20, '\0')), "4 bytes after the last tensor");
    CHECK_ST_ERROR(st_bytes("{}", "xy"), "2 bytes after the last tensor");
    CHECK(load_error(st_bytes(two + "[8,16]}}", std::string(16, '\0'))) == "no error");
  }
  SUBCASE("missing files") {
    TempDir dir("st_missing");
    CHECK_THROWS_WITH_AS(load_safetensors(dir / "none.st"), doctest::Contains("does not exist"), dl::IoError);
    CHECK_THROWS_WITH_AS(load_safetensors(dir.path.string()), doctest::Contains("is a directory"), dl::IoError);
    CHECK_THROWS_WITH_AS(load_safetensors("/dev/null"), doctest::Contains("not a regular file"), dl::IoError);
  }
}

TEST_CASE("safetensors: random corruption never crashes") {
  // Property test: flip bytes of a valid file; every result loads or throws dl::Error.
  std::map<std::string, AnyArray> t{{"a", filled<float>({3, 2}, 1)}, {"b", filled<int64_t>({2}, 1)}};
  TempDir dir("st_flip");
  save_safetensors(dir / "ok.st", t, {{"m", "v"}});
  std::string good = read_bytes(dir / "ok.st");
  uint64_t state = 12345;
  auto next = [&] { state = state * 6364136223846793005ULL + 1442695040888963407ULL; return state >> 33; };
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bad = good;
    int flips = 1 + static_cast<int>(next() % 3);
    for (int k = 0; k < flips; ++k) bad[next() % bad.size()] = static_cast<char>(next());
    if (next() % 4 == 0) bad.resize(next() % bad.size());
    try {
      dl::io::parse_safetensors(bad.data(), bad.size());
    } catch (const dl::Error&) {
      ++errors;
    }
  }
  CHECK(errors > 0);
}
