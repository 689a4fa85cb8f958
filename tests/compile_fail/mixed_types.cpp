// expect: elementwise: operands have different element types
#include "dl/dl.hpp"
int main() {
  auto a = dl::ones<float>({3});
  auto b = dl::ones<double>({3});
  auto y = (a + b).eval();
}
