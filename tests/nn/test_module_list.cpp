// nn::ModuleList: index names, growth (vector reallocation), copies, iteration, bounds, modes.
#include <doctest/doctest.h>

#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/module_list.hpp"

using namespace dl;

TEST_CASE("module_list: names by index survive reallocation and copies") {
  nn::ModuleList<nn::Dense> list;
  CHECK(list.empty());
  for (int i = 0; i < 20; ++i) list.emplace_back(2 + i, 3);  // many reallocations
  CHECK(list.size() == 20);
  auto params = list.named_parameters();
  REQUIRE(params.size() == 40);
  CHECK(params[0].first == "0.weight");
  CHECK(params[39].first == "19.bias");
  CHECK(params[38].second.shape() == Shape{3, 21});
  CHECK(params[38].second.storage() == list[19].weight.storage());

  auto copy = list;
  copy[5].weight = zeros<float>({3, 7});
  CHECK(copy.named_parameters()[10].second.storage() == copy[5].weight.storage());
  CHECK(list.named_parameters()[10].second.storage() == list[5].weight.storage());
  CHECK(list[5].weight.storage() != copy[5].weight.storage());

  auto moved = std::move(copy);
  CHECK(moved.named_parameters()[10].second.storage() == moved[5].weight.storage());

  int count = 0;
  for (auto& d : list) count += d.in_features() > 1;
  CHECK(count == 20);
}

TEST_CASE("module_list: from a vector, train/eval, bounds") {
  std::vector<nn::Dense> v;
  v.emplace_back(1, 1);
  v.emplace_back(1, 2);
  nn::ModuleList<nn::Dense> list(std::move(v));
  CHECK(list.size() == 2);
  list.eval();
  CHECK_FALSE(list[1].is_training());
  list.emplace_back(2, 2);
  CHECK_FALSE(list[2].is_training());  // takes the list's mode
  list.train();
  CHECK(list[2].is_training());
  CHECK_THROWS_WITH_AS(list[3], doctest::Contains("ModuleList: index 3 is out of range for size 3"), ValueError);
  const auto& c = list;
  CHECK(c[0].out_features() == 1);
}
