// expect: attach_grad: gradients need a float or double array
#include "dl/dl.hpp"
int main() {
  auto i = dl::ones<int64_t>({3});
  i.attach_grad();
}
