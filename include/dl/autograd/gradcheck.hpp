// gradcheck: compares autograd's gradients with central finite differences in float64.
// The function's output is contracted with a fixed random weight (so every output element
// matters); each input element is nudged by +-eps, through its own view, so non-contiguous inputs
// (transposed, sliced, broadcast-from) are checked as they are.
//
//   auto r = dl::autograd::gradcheck([](auto& in) { return NDArray<double>(dl::tanh(in[0]) * in[1]); },
//                                    {dl::randn<double>({3, 4}), dl::randn<double>({4})});
//   REQUIRE(r.ok);  // r.message says which input and element differ otherwise
#pragma once
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"

namespace dl::autograd {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string message;
};

using GradcheckFn = std::function<NDArray<double>(std::vector<NDArray<double>>&)>;

inline GradcheckResult gradcheck(const GradcheckFn& fn, std::vector<NDArray<double>> inputs, double eps = 1e-6,
                                 double atol = 1e-6, double rtol = 1e-4) {
  GradcheckResult res;
  // Analytic: backward with a random head gradient.
  for (auto& x : inputs) x.attach_grad();
  NDArray<double> out;
  {
    record rec;
    out = fn(inputs);
  }
  Generator gen(1234);
  NDArray<double> head = randn<double>(out.shape(), 0.0, 1.0, gen);
  out.backward(head);
  auto weighted = [&](std::vector<NDArray<double>>& in) {
    pause p;
    NDArray<double> o = fn(in);
    auto ov = o.to_vector(), hv = head.to_vector();
    double s = 0;
    for (size_t i = 0; i < ov.size(); ++i) s += ov[i] * hv[i];
    return s;
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    std::vector<double*> elems;
    for_each_element(inputs[k], [&](double* p) { elems.push_back(p); });
    auto analytic = inputs[k].grad().to_vector();
    for (size_t i = 0; i < elems.size(); ++i) {
      double saved = *elems[i];
      *elems[i] = saved + eps;
      double plus = weighted(inputs);
      *elems[i] = saved - eps;
      double minus = weighted(inputs);
      *elems[i] = saved;
      double numeric = (plus - minus) / (2 * eps);
      double err = std::abs(numeric - analytic[i]);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (err > atol + rtol * std::abs(numeric) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "input " << k << " element " << i << ": analytic " << analytic[i] << " vs numeric " << numeric;
        res.message = os.str();
      }
    }
  }
  return res;
}

}  // namespace dl::autograd
