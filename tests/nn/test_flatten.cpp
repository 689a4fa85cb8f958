// nn::Flatten: shapes for each start axis, view vs copy, gradient, bad axis.
#include <doctest/doctest.h>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/flatten.hpp"

using namespace dl;

TEST_CASE("flatten: shapes and values") {
  auto x = arange<float>(24).reshape({2, 3, 4});
  CHECK(nn::Flatten()(x).shape() == Shape{2, 12});
  CHECK(nn::Flatten(0)(x).shape() == Shape{24});
  CHECK(nn::Flatten(2)(x).shape() == Shape{2, 3, 4});
  CHECK(nn::Flatten(-2)(x).shape() == Shape{2, 12});
  auto y = nn::Flatten()(x);
  CHECK(y.storage() == x.storage());  // contiguous input: a view
  CHECK(y.to_vector() == x.to_vector());
  auto t = x.permute({2, 0, 1});  // (4, 2, 3), non-contiguous
  auto yt = nn::Flatten()(t);
  CHECK(yt.shape() == Shape{4, 6});
  CHECK(yt.at({1, 4}) == t.at({1, 1, 1}));
  CHECK(nn::Flatten()(x + 1.0f).at({1, 11}) == 24.0f);
  CHECK(nn::Flatten(3).start_axis() == 3);
}

TEST_CASE("flatten: gradient reshapes back") {
  auto x = randn<float>({2, 3, 2});
  x.attach_grad();
  NDArray<float> y;
  {
    autograd::record rec;
    y = nn::Flatten()(x);
  }
  auto h = arange<float>(12).reshape({2, 6});
  y.backward(h);
  CHECK(x.grad().shape() == Shape{2, 3, 2});
  CHECK(x.grad().to_vector() == h.to_vector());
}

TEST_CASE("flatten: bad axis") {
  auto x = ones<float>({2, 3});
  CHECK_THROWS_WITH_AS(nn::Flatten(2)(x), doctest::Contains("flatten: axis 2 is out of range for rank 2"), ValueError);
  CHECK_THROWS_WITH_AS(nn::Flatten()(NDArray<float>()), doctest::Contains("flatten: the array is undefined"), ValueError);
}
