// libFuzzer target: the .npy reader on arbitrary bytes (in memory). Any input must either load or
// throw dl::Error; a crash, a sanitizer report or a huge allocation is a bug.
#include <cstddef>
#include <cstdint>

#include "dl/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto a = dl::io::parse_npy(data, size, "fuzz");
    (void)a.numel();
  } catch (const dl::Error&) {
  }
  return 0;
}
