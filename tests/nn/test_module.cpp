// nn::Module: registration and dotted names, buffers, state_dict round trips and strict errors,
// train/eval propagation, zero_grad, and copy/move safety (no registration reaches another object).
#include <doctest/doctest.h>

#include <optional>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/module.hpp"

using namespace dl;

namespace {

// A module with a parameter and a buffer, like a tiny batch norm.
struct Stats : nn::Module {
  NDArray<float> scale = ones<float>({3});
  NDArray<float> running_mean = zeros<float>({3});
  Stats() {
    register_parameter("scale", &Stats::scale);
    register_buffer("running_mean", &Stats::running_mean);
  }
};

struct Net : nn::Module {
  nn::Dense fc1, fc2;
  Stats stats;
  explicit Net(uint64_t seed = 0) : fc1(4, 3, true, gen(seed)), fc2(3, 2, false, gen(seed)) {
    register_module("fc1", &Net::fc1);
    register_module("stats", &Net::stats);
    register_module("fc2", &Net::fc2);
  }
  template <class X> auto forward(const X& x) { return fc2(stats.scale * fc1(x)); }
  template <class X> auto operator()(const X& x) { return forward(x); }

  static Generator& gen(uint64_t seed) {
    static Generator g;
    g.manual_seed(seed);
    return g;
  }
};

std::vector<std::string> names(const nn::NamedArrays& v) {
  std::vector<std::string> out;
  for (auto& [n, a] : v) out.push_back(n);
  return out;
}

bool same_values(const NDArray<float>& a, const NDArray<float>& b) { return a.to_vector() == b.to_vector(); }

}  // namespace

TEST_CASE("module: dotted parameter names in registration order, buffers apart") {
  Net net;
  CHECK(names(net.named_parameters()) ==
        std::vector<std::string>{"fc1.weight", "fc1.bias", "stats.scale", "fc2.weight"});
  CHECK(names(net.named_buffers()) == std::vector<std::string>{"stats.running_mean"});
  CHECK(net.parameters().size() == 4);
  CHECK(net.parameters()[0].storage() == net.fc1.weight.storage());
  for (auto& p : net.parameters()) {
    CHECK(p.is_leaf());
    CHECK(p.grad_meta()->requires_grad);
  }
  auto children = net.named_children();
  REQUIRE(children.size() == 3);
  CHECK(children[1].first == "stats");
  CHECK(children[1].second == &net.stats);
}

TEST_CASE("module: registration errors") {
  struct Dup : nn::Module {
    NDArray<float> a = ones<float>({1}), b = ones<float>({1});
    explicit Dup(int mode) {
      register_parameter("a", &Dup::a);
      if (mode == 0) register_parameter("a", &Dup::b);
      if (mode == 1) register_buffer("x.y", &Dup::b);
      if (mode == 2) register_parameter("", &Dup::b);
    }
  };
  CHECK_THROWS_WITH_AS(Dup(0), doctest::Contains("register_parameter: name 'a' is already registered"), ValueError);
  CHECK_THROWS_WITH_AS(Dup(1), doctest::Contains("register_buffer: name 'x.y' must be non-empty and contain no '.'"),
                       ValueError);
  CHECK_THROWS_WITH_AS(Dup(2), doctest::Contains("must be non-empty"), ValueError);
  struct Undefined : nn::Module {
    NDArray<float> w;
    Undefined() { register_parameter("w", &Undefined::w); }
  };
  CHECK_THROWS_WITH_AS(Undefined(), doctest::Contains("register_parameter: 'w' is an undefined array"), ValueError);
  struct Other : nn::Module { NDArray<float> w = ones<float>({2}); };
  struct Wrong : nn::Module {
    NDArray<float> mine = ones<float>({2});  // same layout as Other: keeps the compiler's bounds analysis quiet
    Wrong() { register_parameter("w", &Other::w); }
  };
  CHECK_THROWS_WITH_AS(Wrong(), doctest::Contains("register_parameter: 'w' is a member of a class this module is not"),
                       ValueError);
}

TEST_CASE("module: state_dict round trip copies values into the existing arrays") {
  Net a(1), b(2);
  CHECK_FALSE(same_values(a.fc1.weight, b.fc1.weight));
  a.stats.running_mean.assign(2.5f);
  auto sd = a.state_dict();
  CHECK(sd.size() == 5);
  CHECK(sd.count("stats.running_mean") == 1);
  CHECK(sd.at("fc1.weight").storage() == a.fc1.weight.storage());  // shares storage, like PyTorch
  CHECK_FALSE(sd.at("fc1.weight").tracks_grad());

  float* storage_before = b.fc1.weight.data();
  auto grad_before = b.fc1.weight.grad().storage();
  b.load_state_dict(sd);
  for (auto& [name, arr] : b.state_dict()) CHECK_MESSAGE(same_values(arr, sd.at(name)), name);
  CHECK(b.fc1.weight.data() == storage_before);  // written in place
  CHECK(b.fc1.weight.grad().storage() == grad_before);
  CHECK(b.fc1.weight.storage() != a.fc1.weight.storage());
  // The modules now compute the same function.
  auto x = randn<float>({5, 4});
  CHECK(same_values(a(x), b(x)));
}

TEST_CASE("module: load_state_dict strict errors name the key and shapes, and change nothing") {
  Net a(1), b(2);
  auto before = b.fc1.weight.to_vector();

  auto missing = a.state_dict();
  missing.erase("fc2.weight");
  CHECK_THROWS_WITH_AS(b.load_state_dict(missing), doctest::Contains("load_state_dict: missing key 'fc2.weight' (shape (2, 3))"),
                       ValueError);
  CHECK(b.fc1.weight.to_vector() == before);

  auto extra = a.state_dict();
  extra["fc3.bias"] = zeros<float>({7});
  CHECK_THROWS_WITH_AS(b.load_state_dict(extra), doctest::Contains("load_state_dict: unexpected key 'fc3.bias' (shape (7,))"),
                       ValueError);
  CHECK(b.fc1.weight.to_vector() == before);

  auto wrong = a.state_dict();
  wrong["fc1.bias"] = zeros<float>({4});
  CHECK_THROWS_WITH_AS(b.load_state_dict(wrong),
                       doctest::Contains("shape mismatch for 'fc1.bias': module has (3,), state_dict has (4,)"), ValueError);
  CHECK_THROWS_WITH_AS(b.load_state_dict(wrong, false), doctest::Contains("shape mismatch for 'fc1.bias'"), ValueError);
  CHECK(b.fc1.weight.to_vector() == before);

  // Non-strict: missing and unexpected keys are ignored, the rest is loaded.
  auto partial = a.state_dict();
  partial.erase("fc2.weight");
  partial["other"] = zeros<float>({1});
  auto fc2_before = b.fc2.weight.to_vector();
  b.load_state_dict(partial, false);
  CHECK(same_values(b.fc1.weight, a.fc1.weight));
  CHECK(b.fc2.weight.to_vector() == fc2_before);
}

TEST_CASE("module: load_state_dict works while recording") {
  Net a(1), b(2);
  autograd::record rec;
  b.load_state_dict(a.state_dict());
  CHECK(same_values(a.fc2.weight, b.fc2.weight));
}

TEST_CASE("module: train/eval propagate to every descendant") {
  Net net;
  CHECK(net.is_training());
  CHECK(net.fc1.is_training());
  net.eval();
  CHECK_FALSE(net.is_training());
  CHECK_FALSE(net.fc1.is_training());
  CHECK_FALSE(net.stats.is_training());
  net.train();
  CHECK(net.fc2.is_training());
  net.stats.eval();  // a child alone
  CHECK(net.is_training());
  CHECK_FALSE(net.stats.is_training());
}

TEST_CASE("module: zero_grad clears every gradient buffer") {
  Net net;
  auto x = randn<float>({3, 4});
  NDArray<float> y;
  {
    autograd::record rec;
    y = net(x);
  }
  y.backward(ones<float>({3, 2}));
  double before = 0;
  for (auto& p : net.parameters())
    for (float g : p.grad().to_vector()) before += std::abs(g);
  CHECK(before > 0);
  net.zero_grad();
  for (auto& [name, p] : net.named_parameters())
    for (float g : p.grad().to_vector()) CHECK_MESSAGE(g == 0.0f, name);
}

TEST_CASE("module: a copy resolves its registrations against itself, even after the original is gone") {
  std::optional<Net> original(std::in_place, 3);
  Net copy = *original;
  auto expect = original->fc1.weight.to_vector();
  original.reset();
  // Overwrite the freed memory region's likely reuse with another object.
  std::optional<Net> other(std::in_place, 4);
  auto params = copy.named_parameters();
  REQUIRE(params.size() == 4);
  CHECK(params[0].second.storage() == copy.fc1.weight.storage());
  CHECK(params[0].second.to_vector() == expect);
  CHECK(params[3].second.shape() == Shape{2, 3});

  // Rebinding a member of the copy shows in the copy's registry only.
  Net a(5);
  Net b = a;
  b.fc1.weight = zeros<float>({3, 4});
  CHECK(b.named_parameters()[0].second.storage() == b.fc1.weight.storage());
  CHECK(a.named_parameters()[0].second.storage() == a.fc1.weight.storage());
  CHECK(a.named_parameters()[0].second.storage() != b.fc1.weight.storage());

  // Copy assignment and moves.
  Net c(6);
  c = a;
  CHECK(c.named_parameters()[1].second.storage() == c.fc1.bias.storage());
  Net d = std::move(c);
  CHECK(d.named_parameters()[1].second.storage() == d.fc1.bias.storage());
  CHECK(d.named_parameters()[1].second.storage() == a.fc1.bias.storage());  // a plain copy shares storage
  d.eval();
  CHECK_FALSE(d.fc2.is_training());
  CHECK(a.fc2.is_training());
}

TEST_CASE("module: nn::clone is independent of the original") {
  Net a(7);
  Net b = nn::clone(a);
  for (auto& [name, arr] : a.state_dict()) {
    CHECK_MESSAGE(same_values(arr, b.state_dict().at(name)), name);
    CHECK_MESSAGE(arr.storage() != b.state_dict().at(name).storage(), name);
  }
  for (auto& [name, p] : b.named_parameters()) CHECK_MESSAGE(p.grad_meta()->requires_grad, name);
  CHECK(b.named_buffers()[0].second.storage() == b.stats.running_mean.storage());
  b.fc1.weight.assign(0.0f);
  CHECK_FALSE(same_values(a.fc1.weight, b.fc1.weight));
  // Gradients are separate too.
  auto x = randn<float>({2, 4});
  NDArray<float> y;
  {
    autograd::record rec;
    y = b(x);
  }
  a.zero_grad();
  y.backward(ones<float>({2, 2}));
  for (float g : a.fc2.weight.grad().to_vector()) CHECK(g == 0.0f);
}

TEST_CASE("module: to(cpu) keeps every handle; to(cuda) in a CPU build throws and changes nothing") {
  Net net;
  auto before = net.named_parameters();
  net.to(dl::Device::cpu());
  auto after = net.named_parameters();
  REQUIRE(before.size() == after.size());
  for (size_t i = 0; i < before.size(); ++i) CHECK(before[i].second.data() == after[i].second.data());
  if (!dl::cuda::is_available()) {
    CHECK_THROWS_AS(net.to(dl::Device::cuda(0)), dl::DeviceError);
    for (auto& [name, p] : net.named_parameters()) CHECK(p.device() == dl::Device::cpu());
  }
}
