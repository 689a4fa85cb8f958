// The gradcheck op table for elementwise operators and views.
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {
V two(Shape a, Shape b) { return {randn<double>(a), randn<double>(b)}; }
V one(Shape a) { return {randn<double>(a)}; }
V positive(Shape a) { return {rand<double>(a, 0.5, 2.0)}; }
}  // namespace

TEST_CASE("gradcheck: elementwise op table") {
  std::vector<GradcheckCase> cases = {
      {"add broadcast", [] { return two({3, 4}, {4}); }, [](V& x) { return NDArray<double>(x[0] + x[1]); }},
      {"sub broadcast column", [] { return two({3, 4}, {3, 1}); }, [](V& x) { return NDArray<double>(x[0] - x[1]); }},
      {"mul", [] { return two({3, 4}, {3, 4}); }, [](V& x) { return NDArray<double>(x[0] * x[1]); }},
      {"div", [] { return V{randn<double>({3, 4}), rand<double>({3, 4}, 0.5, 2.0)}; }, [](V& x) { return NDArray<double>(x[0] / x[1]); }},
      {"scalar both sides", [] { return one({5}); }, [](V& x) { return NDArray<double>(2.0 - x[0] * 3.0 + 1.0 / (x[0] * x[0] + 1.0)); }},
      {"neg", [] { return one({4}); }, [](V& x) { return NDArray<double>(-x[0]); }},
      {"abs", [] { return one({6}); }, [](V& x) { return NDArray<double>(abs(x[0])); }},
      {"exp", [] { return one({2, 3}); }, [](V& x) { return NDArray<double>(exp(x[0])); }},
      {"log", [] { return positive({2, 3}); }, [](V& x) { return NDArray<double>(log(x[0])); }},
      {"log1p", [] { return positive({5}); }, [](V& x) { return NDArray<double>(log1p(x[0])); }},
      {"expm1", [] { return one({5}); }, [](V& x) { return NDArray<double>(expm1(x[0])); }},
      {"sqrt", [] { return positive({5}); }, [](V& x) { return NDArray<double>(sqrt(x[0])); }},
      {"rsqrt", [] { return positive({5}); }, [](V& x) { return NDArray<double>(rsqrt(x[0])); }},
      {"square", [] { return one({5}); }, [](V& x) { return NDArray<double>(square(x[0])); }},
      {"tanh", [] { return one({5}); }, [](V& x) { return NDArray<double>(tanh(x[0])); }},
      {"sigmoid", [] { return one({5}); }, [](V& x) { return NDArray<double>(sigmoid(x[0])); }},
      {"relu", [] { return one({7}); }, [](V& x) { return NDArray<double>(relu(x[0])); }},
      {"leaky_relu", [] { return one({7}); }, [](V& x) { return NDArray<double>(leaky_relu(x[0], 0.2)); }},
      {"gelu", [] { return one({7}); }, [](V& x) { return NDArray<double>(gelu(x[0])); }},
      {"softplus", [] { return V{randn<double>({7}, 0.0, 10.0)}; }, [](V& x) { return NDArray<double>(softplus(x[0])); }},
      {"sin", [] { return one({5}); }, [](V& x) { return NDArray<double>(sin(x[0])); }},
      {"cos", [] { return one({5}); }, [](V& x) { return NDArray<double>(cos(x[0])); }},
      {"pow scalar", [] { return positive({5}); }, [](V& x) { return NDArray<double>(pow(x[0], 2.5)); }},
      {"pow array", [] { return V{rand<double>({5}, 0.5, 2.0), randn<double>({5})}; }, [](V& x) { return NDArray<double>(pow(x[0], x[1])); }},
      {"maximum", [] { return two({4, 3}, {3}); }, [](V& x) { return NDArray<double>(maximum(x[0], x[1])); }},
      {"minimum", [] { return two({4, 3}, {4, 1}); }, [](V& x) { return NDArray<double>(minimum(x[0], x[1])); }},
      {"clamp", [] { return one({9}); }, [](V& x) { return NDArray<double>(clamp(x[0], -0.5, 0.5)); }},
      {"where", [] { return V{randn<double>({3, 4}), randn<double>({3, 4})}; },
       [](V& x) { NDArray<double> c = greater(x[0], 0.0); return NDArray<double>(where(c, x[0] * 2.0, x[1])); }},
      {"same leaf twice", [] { return one({6}); }, [](V& x) { return NDArray<double>(x[0] * x[0] + sin(x[0])); }},
      // Leaves whose values no rule reads get a stand-in in backward (expr/assign.hpp's FusedNode):
      // mixed with read leaves, broadcast, used twice, transposed.
      {"unread and read leaves", [] { return V{randn<double>({3, 4}), randn<double>({3, 4}), randn<double>({4}), randn<double>({3, 4})}; },
       [](V& x) { return NDArray<double>(x[0] + x[1] * x[2] - x[3]); }},
      {"unread leaf beside relu", [] { return two({3, 4}, {3, 4}); }, [](V& x) { return NDArray<double>(relu(x[0]) + x[1] * 0.5); }},
      {"unread leaf used twice", [] { return one({6}); }, [](V& x) { return NDArray<double>(x[0] + x[0] * x[0]); }},
      {"unread transposed leaf", [] { return V{randn<double>({4, 3}), randn<double>({3, 4}), randn<double>({3, 4})}; },
       [](V& x) { return NDArray<double>(x[0].transpose() - x[1] * 2.0 + exp(x[2])); }},
      {"deep chain", [] { return two({2, 3}, {3}); },
       [](V& x) { return NDArray<double>(tanh(exp(x[0] * 0.5) - sigmoid(x[1])) * (x[0] + 1.0) / (square(x[1]) + 1.0)); }},
      {"non-contiguous input", [] { return V{dl::testing::non_contiguous(randn<double>({3, 4}))}; },
       [](V& x) { return NDArray<double>(tanh(x[0]) * 2.0); }},
      {"transposed operand", [] { return two({3, 4}, {4, 3}); }, [](V& x) { return NDArray<double>(x[0] * x[1].transpose()); }},
      {"sliced operand", [] { return two({6, 4}, {3, 4}); }, [](V& x) { return NDArray<double>(x[0].slice(0, 0, 6, 2) * x[1]); }},
      {"reshape", [] { return one({3, 4}); }, [](V& x) { return NDArray<double>(exp(x[0].reshape({2, 6}))); }},
      {"permute", [] { return one({2, 3, 4}); }, [](V& x) { return NDArray<double>(x[0].permute({2, 0, 1}) * 3.0); }},
      {"broadcast_to", [] { return one({3, 1}); }, [](V& x) { return NDArray<double>(sin(x[0].broadcast_to({2, 3, 5}))); }},
      {"squeeze/unsqueeze", [] { return one({3, 1, 2}); }, [](V& x) { return NDArray<double>(x[0].squeeze(1).unsqueeze(0) * 2.0); }},
      {"clone", [] { return one({4}); }, [](V& x) { return NDArray<double>(x[0].clone() * x[0]); }},
      {"matmul 2-D", [] { return two({3, 4}, {4, 5}); }, [](V& x) { return matmul(x[0], x[1]); }},
      {"matmul transposed operands", [] { return two({4, 3}, {5, 4}); }, [](V& x) { return matmul(x[0].transpose(), x[1].transpose()); }},
      {"matmul batched broadcast", [] { return two({2, 3, 4}, {4, 2}); }, [](V& x) { return matmul(x[0], x[1]); }},
      {"matmul vector", [] { return two({4}, {4, 3}); }, [](V& x) { return matmul(x[0], x[1]); }},
      {"matmul dot", [] { return two({4}, {4}); }, [](V& x) { return matmul(x[0], x[1]); }},
      {"matmul of expression", [] { return two({3, 4}, {4, 2}); }, [](V& x) { return matmul(relu(x[0]) + 1.0, x[1]); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
