// expect: repeat: RepeatOptions (compiled blocks) needs a block whose operator() is a template that runs on graph symbols
#include "dl/dl.hpp"
// A block that only takes arrays cannot be compiled: RepeatOptions asks for one that runs on symbols.
struct EagerBlock : dl::nn::Module {
  dl::nn::Dense fc{4, 4};
  EagerBlock() { register_module("fc", &EagerBlock::fc); }
  dl::NDArray<float> operator()(const dl::NDArray<float>& x) { return fc(x); }
};
int main() {
  auto net = dl::graph::repeat([] { return EagerBlock(); }, 2, dl::graph::checkpoint::none{},
                               dl::graph::RepeatOptions{.compiled = true});
  net(dl::ones<float>({2, 4}));
}
