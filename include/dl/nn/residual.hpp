// nn::BasicBlock: the ResNet basic block (He et al. 2016, the CIFAR ResNet-20/32/56 family):
//
//   y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
//
// conv1 is 3x3 with the block's stride, conv2 3x3 stride 1, both padding 1 and without bias (the
// batch norm after each has one). The shortcut is the identity when the shape is kept (stride 1 and
// in == out channels), else a projection: a 1x1 convolution with the stride, no bias, then batch
// norm (option B of the paper). Names follow the common PyTorch CIFAR ResNet: conv1.weight,
// bn1.weight, ..., shortcut.0.weight (the 1x1 conv), shortcut.1.running_mean (its batch norm).
//
//   dl::nn::BasicBlock same(16, 16);          // identity shortcut: (N, 16, 28, 28) -> (N, 16, 28, 28)
//   dl::nn::BasicBlock down(16, 32, 2);       // projection: (N, 16, 28, 28) -> (N, 32, 14, 14)
#pragma once
#include <cstdint>
#include <optional>
#include <type_traits>

#include "dl/graph/let.hpp"
#include "dl/graph/sym.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/module.hpp"
#include "dl/nn/sequential.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl::nn {

class BasicBlock : public Module {
 public:
  using Projection = Sequential<Conv2d, BatchNorm2d>;

  Conv2d conv1, conv2;
  BatchNorm2d bn1, bn2;
  std::optional<Projection> shortcut;  // empty: identity

  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride = 1, Generator& gen = default_generator())
      : conv1(in_channels, out_channels, 3, checked_stride(stride), 1, /*bias=*/false, gen),
        conv2(out_channels, out_channels, 3, 1, 1, /*bias=*/false, gen),
        bn1(out_channels),
        bn2(out_channels) {
    register_module("conv1", &BasicBlock::conv1);
    register_module("bn1", &BasicBlock::bn1);
    register_module("conv2", &BasicBlock::conv2);
    register_module("bn2", &BasicBlock::bn2);
    if (stride != 1 || in_channels != out_channels) {
      shortcut.emplace(Conv2d(in_channels, out_channels, 1, stride, 0, /*bias=*/false, gen), BatchNorm2d(out_channels));
      // An accessor, not a pointer: a copied block reaches its own shortcut.
      register_module_accessor("shortcut", [](Module& self) -> Module& { return *static_cast<BasicBlock&>(self).shortcut; });
    }
  }

  bool has_projection() const { return shortcut.has_value(); }

  // x (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "BasicBlock: input must be an NDArray or an elementwise expression");
    static_assert(std::is_same_v<value_type_t<X>, float>, "BasicBlock: input must be float, like the parameters");
    if constexpr (graph::is_symbolic_v<X>) {  // the same formula as nodes of the compiled graph
      // x is named once (graph::let) and both branches read it through a Ref: a stack of blocks
      // then has a graph type linear in its depth, not 3^depth copies of its input.
      return graph::let(x, [this](const auto& in) {
        auto h = bn2(conv2(dl::relu(bn1(conv1(in)))));
        using Projected = decltype((*shortcut)(in));  // unevaluated: only the type of the projection branch
        if (shortcut) return dl::relu(h + graph::choose(true, (*shortcut)(in), in));
        return dl::relu(h + graph::choose(false, Projected{}, in));
      });
    } else {
    NDArray<float> in = dl::eval(x);
    NDArray<float> h = dl::relu(bn1(conv1(in)));  // one fused pass
    h = bn2(conv2(h));
    NDArray<float> skip = shortcut ? (*shortcut)(in) : in;
    return NDArray<float>(dl::relu(h + skip));  // add and relu fused into one pass and one tape node
    }
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  static int64_t checked_stride(int64_t stride) {
    check<ValueError>(stride > 0, "BasicBlock: stride must be positive, got ", stride);
    return stride;
  }
};

}  // namespace dl::nn
