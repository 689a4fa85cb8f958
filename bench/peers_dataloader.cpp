// peers_dataloader: is the DataLoader fast enough to feed the trainer? Compares, on Fashion-MNIST
// (Debian dataset-fashion-mnist) at batch 128:
//   loader alone         batches/s of one epoch of DataLoader (shuffle, prefetch 2), nothing else
//   loader, no thread    the same with prefetch 0 (gathering in the caller's thread: its raw cost)
//   train, fixed batch   steps/s of the MLP 784-256-128-10 (bench/peers_mlp.cpp's step) on one
//                        batch held in memory: the consumption rate with no loader at all
//   train + loader       steps/s of the same step fed by the loader (prefetch 2), a full epoch
//   train + loader, no thread   the same with prefetch 0: gathering on the training thread
// The loader is not the bottleneck when "loader alone" is well above "train, fixed batch" and
// "train + loader" is within the noise of "train, fixed batch". Ratios are against the fixed-batch
// training row.
//
//   build/bench/bench_peers_dataloader --threads 2 [--data-dir DIR] [--repeats N] [--json]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_train.hpp"
#include "bench_util.hpp"
#include "dl/dl.hpp"
#include "dl/optim/sgd.hpp"

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--data-dir DIR] [--batch N]");
  std::string dir = dl::data::kFashionMnistDir;
  int64_t batch = 128;
  for (size_t i = 0; i < opt.rest.size(); ++i) {
    if (opt.rest[i] == "--data-dir" && i + 1 < opt.rest.size()) dir = opt.rest[++i];
    else if (opt.rest[i] == "--batch" && i + 1 < opt.rest.size()) batch = std::atoll(opt.rest[++i].c_str());
    else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], opt.rest[i].c_str());
      return 2;
    }
  }
  const int repeats = opt.repeats > 0 ? opt.repeats : 3;
  dl::set_num_threads(opt.threads);

  auto train = dl::data::load_mnist(dir, dl::data::Split::train);
  int64_t n = train.images.shape(0);
  if (opt.quick) n = std::min<int64_t>(n, 8192);
  dl::data::TensorDataset set(train.images.slice(0, 0, n), train.labels.slice(0, 0, n));
  const double batches_per_epoch = static_cast<double>((n + batch - 1) / batch);

  dl::bench::Table table("peers_dataloader", opt);
  const std::string group = "batch " + std::to_string(batch);
  const std::string base = "train, fixed batch";

  // Loader alone: one epoch per timed call; the checksum keeps the batches from being unused.
  volatile float sink = 0;
  for (int prefetch : {2, 0}) {
    dl::data::DataLoader loader(set, {.batch_size = batch, .shuffle = true, .seed = 0, .prefetch = prefetch});
    auto epoch = [&] {
      for (const auto& b : loader) sink = sink + b.x.data()[0] + static_cast<float>(b.y.data()[0]);
    };
    auto t = dl::bench::time_it(epoch, repeats, /*warmup=*/1);
    table.add_rate(group, prefetch ? "loader alone" : "loader, no thread", t, batches_per_epoch, 1.0, "batches/s", base);
  }

  dl::manual_seed(0);
  dl::bench::Mlp net;
  dl::optim::SGD sgd(net.named_parameters(), /*lr=*/0.01, /*momentum=*/0.9);
  auto step = [&](const dl::data::Batch& b) {
    dl::NDArray<float> loss;
    {
      dl::autograd::record rec;
      loss = dl::cross_entropy(net(b.x.reshape({b.x.shape(0), -1})), b.y);  // images as rows
    }
    loss.backward();
    sgd.step();
  };

  // Training on one fixed batch: the consumption rate without any loader. As many steps as an epoch.
  dl::data::DataLoader first(set, {.batch_size = batch, .shuffle = true, .seed = 1, .prefetch = 0});
  const dl::data::Batch fixed = *first.begin();
  auto fixed_epoch = [&] {
    for (int64_t i = 0; i < static_cast<int64_t>(batches_per_epoch); ++i) step(fixed);
  };
  // Training fed by the loader (its default prefetch), one epoch per timed call. The two training
  // rows alternate repeat by repeat, so a change in the machine's load hits both alike.
  dl::data::DataLoader loader(set, {.batch_size = batch, .shuffle = true, .seed = 0});
  auto loader_epoch = [&] {
    for (const auto& b : loader) step(b);
  };
  // The same without the prefetch thread: separates the thread's cost from fresh (uncached) batches.
  dl::data::DataLoader inline_loader(set, {.batch_size = batch, .shuffle = true, .seed = 0, .prefetch = 0});
  auto inline_epoch = [&] {
    for (const auto& b : inline_loader) step(b);
  };
  fixed_epoch();
  loader_epoch();
  inline_epoch();
  std::vector<double> fixed_s, loader_s, inline_s;
  for (int r = 0; r < repeats; ++r) {
    double t0 = dl::bench::now_s();
    fixed_epoch();
    double t1 = dl::bench::now_s();
    loader_epoch();
    double t2 = dl::bench::now_s();
    inline_epoch();
    fixed_s.push_back(t1 - t0);
    loader_s.push_back(t2 - t1);
    inline_s.push_back(dl::bench::now_s() - t2);
  }
  table.add_rate(group, base, dl::bench::summarise(fixed_s), batches_per_epoch, 1.0, "steps/s", base);
  table.add_rate(group, "train + loader", dl::bench::summarise(loader_s), batches_per_epoch, 1.0, "steps/s", base);
  table.add_rate(group, "train + loader, no thread", dl::bench::summarise(inline_s), batches_per_epoch, 1.0, "steps/s",
                 base);

  char note[96];
  std::snprintf(note, sizeof note, "%lld samples, load %.2f", static_cast<long long>(n),
                dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
