// The gradcheck op table: every differentiable operator lists sample inputs here (through a
// GradcheckCase in its area's test_gradcheck_*.cpp), including broadcast and non-contiguous
// inputs; run_gradcheck_table() checks each case against float64 central differences.
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "dl/autograd/gradcheck.hpp"
#include "dl/dl.hpp"

namespace dl::testing {

struct GradcheckCase {
  std::string name;
  // Builds fresh inputs (seeded), so each case is reproducible.
  std::function<std::vector<NDArray<double>>()> inputs;
  autograd::GradcheckFn fn;
  double atol = 1e-6, rtol = 1e-4;
};

// A transposed (non-contiguous) copy of x with the same logical values as x.transpose()'s input.
inline NDArray<double> non_contiguous(const NDArray<double>& x) {
  return x.transpose().clone().transpose();  // values of x, strides of a transpose
}

inline void run_gradcheck_table(const std::vector<GradcheckCase>& cases) {
  for (const auto& c : cases) {
    SUBCASE(c.name.c_str()) {
      manual_seed(42);
      auto r = autograd::gradcheck(c.fn, c.inputs(), 1e-6, c.atol, c.rtol);
      INFO(c.name, ": ", r.message);
      CHECK(r.ok);
    }
  }
}

}  // namespace dl::testing
