// expect: elementwise: this operation needs a float or double array
#include "dl/dl.hpp"
int main() {
  auto i = dl::ones<int32_t>({3});
  dl::NDArray<int32_t> y = dl::exp(i);
}
