#include <doctest/doctest.h>

#include "dl/dl.hpp"

using namespace dl;

TEST_CASE("autograd: a fused expression is one tape node") {
  auto x = randn<double>({3}).attach_grad();
  auto w = randn<double>({3}).attach_grad();
  NDArray<double> y;
  {
    autograd::record rec;
    y = tanh(x * w + 1.0) * x;
  }
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->name == "elementwise");
  CHECK(y.grad_fn()->next.empty());  // both leaves: no producer nodes
  y.backward(ones<double>({3}));
  for (int i = 0; i < 3; ++i) {
    double xv = x.at({i}), wv = w.at({i}), t = std::tanh(xv * wv + 1.0);
    CHECK(x.grad().at({i}) == doctest::Approx(t + xv * (1 - t * t) * wv));
    CHECK(w.grad().at({i}) == doctest::Approx(xv * (1 - t * t) * xv));
  }
}

TEST_CASE("autograd: nothing is recorded outside record() or inside pause()") {
  auto x = ones<float>({2}).attach_grad();
  NDArray<float> y = x * 2.0f;
  CHECK_FALSE(y.tracks_grad());
  {
    autograd::record rec;
    CHECK(autograd::is_recording());
    CHECK(autograd::is_training());
    {
      autograd::pause p;
      NDArray<float> z = x * 2.0f;
      CHECK_FALSE(z.tracks_grad());
    }
    NDArray<float> z = x * 2.0f;
    CHECK(z.tracks_grad());
  }
  CHECK_FALSE(autograd::is_recording());
}

TEST_CASE("autograd: grad_req write, add and null") {
  auto x = tensor<double>({1.0, 2.0}).attach_grad();
  auto run = [&] {
    NDArray<double> y;
    {
      autograd::record rec;
      y = matmul(x, x);  // sum of squares
    }
    y.backward();
  };
  run();
  run();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0});  // write: overwritten each backward
  x.set_grad_req(autograd::GradReq::add);
  run();
  CHECK(x.grad().to_vector() == std::vector<double>{4.0, 8.0});  // add: accumulated
  x.set_grad_req(autograd::GradReq::null);
  run();
  CHECK(x.grad().to_vector() == std::vector<double>{4.0, 8.0});  // null: untouched
}

TEST_CASE("autograd: gradients from several paths add up; detach cuts the graph") {
  auto x = tensor<double>({3.0}).attach_grad();
  NDArray<double> y;
  {
    autograd::record rec;
    NDArray<double> a = x * 2.0;
    NDArray<double> b = a * a;       // 4x^2
    NDArray<double> c = a + b;       // 2x + 4x^2
    NDArray<double> d = c * x.detach();  // detached factor contributes no gradient path
    y = d.reshape({});
  }
  y.backward();
  CHECK(x.grad().item() == doctest::Approx((2.0 + 8.0 * 3.0) * 3.0));
}

TEST_CASE("autograd: errors") {
  auto x = ones<double>({2}).attach_grad();
  NDArray<double> y;
  {
    autograd::record rec;
    y = x * 3.0;
  }
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("backward: output of shape (2,) is not a scalar"), AutogradError);
  CHECK_THROWS_WITH_AS(y.backward(ones<double>({3})), doctest::Contains("head gradient shape (3,)"), ShapeError);
  y.backward(ones<double>({2}));
  CHECK_THROWS_WITH_AS(y.backward(ones<double>({2})), doctest::Contains("retain_graph"), AutogradError);
  auto plain = ones<double>({1});
  CHECK_THROWS_WITH_AS(plain.backward(), doctest::Contains("does not require grad"), AutogradError);
  CHECK_THROWS_WITH_AS(plain.grad(), doctest::Contains("attach_grad"), AutogradError);
  {
    autograd::record rec;
    CHECK_THROWS_WITH_AS(x += 1.0, doctest::Contains("in-place update of an array that requires grad"), AutogradError);
  }
}

TEST_CASE("autograd: retain_graph allows a second backward") {
  auto x = tensor<double>({2.0}).attach_grad(autograd::GradReq::add);
  NDArray<double> y;
  {
    autograd::record rec;
    y = (x * x).eval().reshape({});
  }
  y.backward(NDArray<double>(), true);
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(8.0));
}

TEST_CASE("autograd: cast carries gradients between float types") {
  auto x = tensor<float>({1.0f, 2.0f}).attach_grad();
  NDArray<float> y;
  {
    autograd::record rec;
    NDArray<double> d = x.cast<double>();
    NDArray<double> s = d * d * 0.5;
    y = s.cast<float>();
  }
  y.backward(ones<float>({2}));
  CHECK(x.grad().to_vector() == std::vector<float>{1.0f, 2.0f});
}

TEST_CASE("autograd: checkpoint recomputes and gives identical gradients") {
  manual_seed(11);
  auto w1 = randn<double>({4, 4}).attach_grad(), w2 = randn<double>({4, 4}).attach_grad();
  auto x = randn<double>({3, 4}).attach_grad();
  auto block = [&](const NDArray<double>& h) { return NDArray<double>(tanh(matmul(tanh(matmul(h, w1)), w2)) + h); };
  auto loss_of = [&](bool use_checkpoint) {
    NDArray<double> y;
    {
      autograd::record rec;
      NDArray<double> h = use_checkpoint ? autograd::checkpoint(block, x) : block(x);
      y = matmul(matmul(ones<double>({3}), h * h), ones<double>({4}));
    }
    y.backward();
    return std::vector<std::vector<double>>{x.grad().to_vector(), w1.grad().to_vector(), w2.grad().to_vector()};
  };
  auto plain = loss_of(false);
  auto ckpt = loss_of(true);
  CHECK(plain == ckpt);  // bit-identical: same kernels, same order
}

TEST_CASE("autograd: checkpoint replays random draws") {
  auto x = ones<double>({1000}).attach_grad();
  NDArray<double> y;
  NDArray<double> seen_forward;
  auto fn = [&](const NDArray<double>& h) {
    NDArray<double> noise = randn<double>({1000});
    return NDArray<double>(h * noise);
  };
  manual_seed(5);
  NDArray<double> noise_ref = randn<double>({1000});
  manual_seed(5);
  {
    autograd::record rec;
    y = matmul(autograd::checkpoint(fn, x), ones<double>({1000}));
  }
  y.backward();
  CHECK(array_equal(x.grad(), noise_ref));  // d(sum(x * noise))/dx = the same noise as forward
}

TEST_CASE("autograd: on_ready fires once per leaf when its gradient is complete") {
  auto w1 = randn<double>({3, 3}).attach_grad(), w2 = randn<double>({3, 3}).attach_grad();
  auto x = randn<double>({2, 3});
  std::vector<std::string> events;
  std::vector<double> w1_grad_at_ready;
  w1.grad_meta()->on_ready = [&] { events.push_back("w1"); w1_grad_at_ready = w1.grad().to_vector(); };
  w2.grad_meta()->on_ready = [&] { events.push_back("w2"); };
  NDArray<double> y;
  {
    autograd::record rec;
    NDArray<double> h = tanh(matmul(x, w1));
    NDArray<double> z = matmul(h, w2) + matmul(h, w1);  // w1 used twice: ready only after both
    y = matmul(matmul(ones<double>({2}), z), ones<double>({3}));
  }
  y.backward();
  CHECK(events.size() == 2);
  CHECK(events[1] == "w1");  // w2 completes first: its only use is late in the forward
  CHECK(w1_grad_at_ready == w1.grad().to_vector());  // nothing was added after the callback
}
