// libFuzzer target: data::read_idx on arbitrary bytes. read_idx reads from a path (raw or gzip),
// so each input is written to a file in a private temp folder (tmpfs when available) first.
// Any input must either load or throw dl::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "dl/data/idx.hpp"

namespace {
std::string input_path() {
  static const std::string path = [] {
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(base) + "/dl_fuzz_idx_" + std::to_string(getpid()) + ".bin";
  }();
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = input_path();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  try {
    // A 64 MiB cap keeps a header that promises a huge (gzip-inflated) payload cheap to reject.
    auto a = dl::data::read_idx(path, uint64_t(64) << 20);
    (void)a.data.numel();
  } catch (const dl::Error&) {
  }
  return 0;
}
