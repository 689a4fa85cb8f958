// libFuzzer target: the safetensors reader on arbitrary bytes (in memory). Any input must either
// load or throw dl::Error; a crash, a sanitizer report or a huge allocation is a bug.
#include <cstddef>
#include <cstdint>

#include "dl/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = dl::io::parse_safetensors(data, size, "fuzz");
    for (auto& [name, t] : f.tensors) (void)t.numel();
  } catch (const dl::Error&) {
  }
  return 0;
}
