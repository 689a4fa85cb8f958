// expect: compile: the function must return a symbol expression built from its arguments
#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
int main() {
  dl::NDArray<float> w = dl::ones<float>({3});
  // The function ignores its symbol and returns an eager array: nothing to compile.
  auto step = dl::graph::compile([&](auto) { return w; });
  step.forward(dl::ones<float>({3}));
}
