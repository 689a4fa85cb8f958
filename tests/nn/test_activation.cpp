// Activation modules: values against the scalar formulas, gradients through them, expression input.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/activation.hpp"

using namespace dl;

namespace {
template <class M>
void check_module(M module, std::function<double(double)> f, std::function<double(double)> df, const char* name) {
  INFO(name);
  Generator gen(4);
  auto x = randn<float>({5, 7}, 0.0, 2.0, gen);
  x.attach_grad();
  NDArray<float> y;
  {
    autograd::record rec;
    y = module(x);
  }
  CHECK(y.shape() == x.shape());
  y.backward(ones<float>({5, 7}));
  auto xv = x.to_vector(), yv = y.to_vector(), gv = x.grad().to_vector();
  int bad_value = 0, bad_grad = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    bad_value += std::abs(yv[i] - f(xv[i])) > 1e-5 * (1 + std::abs(f(xv[i])));
    bad_grad += std::abs(gv[i] - df(xv[i])) > 1e-4 * (1 + std::abs(df(xv[i])));
  }
  CHECK(bad_value == 0);
  CHECK(bad_grad == 0);
}
double gelu_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
}  // namespace

TEST_CASE("activation modules: values and gradients") {
  check_module(nn::ReLU(), [](double x) { return x > 0 ? x : 0; }, [](double x) { return x > 0 ? 1.0 : 0.0; }, "ReLU");
  check_module(nn::Tanh(), [](double x) { return std::tanh(x); },
               [](double x) { return 1 - std::tanh(x) * std::tanh(x); }, "Tanh");
  check_module(nn::Sigmoid(), [](double x) { return 1 / (1 + std::exp(-x)); },
               [](double x) { double s = 1 / (1 + std::exp(-x)); return s * (1 - s); }, "Sigmoid");
  check_module(nn::GELU(), gelu_ref, [](double x) { return (gelu_ref(x + 1e-4) - gelu_ref(x - 1e-4)) / 2e-4; }, "GELU");
  check_module(nn::LeakyReLU(0.2), [](double x) { return x > 0 ? x : 0.2 * x; },
               [](double x) { return x > 0 ? 1.0 : 0.2; }, "LeakyReLU(0.2)");
  check_module(nn::LeakyReLU(), [](double x) { return x > 0 ? x : 0.01 * x; },
               [](double x) { return x > 0 ? 1.0 : 0.01; }, "LeakyReLU()");
}

TEST_CASE("activation modules: no parameters, expression input, double arrays") {
  nn::ReLU relu;
  CHECK(relu.named_parameters().empty());
  auto x = tensor<float>({-1.0f, 2.0f});
  NDArray<float> y = relu(x * 3.0f);
  CHECK(y.to_vector() == std::vector<float>{0.0f, 6.0f});
  nn::Tanh t;
  auto yd = t(tensor<double>({0.5}));
  CHECK(yd.item() == doctest::Approx(std::tanh(0.5)));
  CHECK(nn::LeakyReLU(0.3).negative_slope() == 0.3);
  CHECK_THROWS_WITH_AS(nn::LeakyReLU(NAN), doctest::Contains("leaky_relu: negative_slope must be finite"), ValueError);
}
