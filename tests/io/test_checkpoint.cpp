// Tests for io/checkpoint.hpp: a full round trip that resumes training bit for bit, validation of
// damaged checkpoints, all-or-nothing restore, and crash safety: a child process saving a large
// checkpoint over and over is killed with SIGKILL at random moments, and the file at the path must
// always load and be one complete version, with its permissions kept.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "dl/io/checkpoint.hpp"
#include "dl/nn/dense.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/adam.hpp"
#include "io_test_util.hpp"

using namespace dl_test_io;

namespace {

struct Net : dl::nn::Module {
  dl::nn::Dense fc1{4, 8}, fc2{8, 2};
  Net() {
    register_module("fc1", &Net::fc1);
    register_module("fc2", &Net::fc2);
  }
};

// One Adam step on a fixed batch, drawing random noise from default_generator() (so the RNG
// state matters for the result).
float train_step(Net& net, dl::optim::Adam& opt) {
  auto x = dl::rand<float>({3, 4});
  auto y = dl::full<float>(dl::Shape{3, 2}, 0.5f);
  opt.zero_grad();
  dl::NDArray<float> loss;
  {
    dl::autograd::record r;
    loss = dl::mse(net.fc2(dl::relu(net.fc1(x))), y);
  }
  loss.backward();
  opt.step();
  return loss.item();
}

std::vector<float> flat(const dl::nn::Module& m) {
  std::vector<float> out;
  for (auto& [name, a] : m.state_dict())
    for (float v : a.to_vector()) out.push_back(v);
  return out;
}

}  // namespace

TEST_CASE("checkpoint: save, load and restore resume training exactly") {
  TempDir dir("ckpt_round");
  dl::manual_seed(42);
  Net net;
  dl::optim::Adam opt(net.named_parameters(), 0.01);
  for (int i = 0; i < 3; ++i) train_step(net, opt);
  auto ck = dl::io::make_checkpoint(net, opt, /*step=*/3, /*epoch=*/1, dl::data::DataLoaderState{1, 5});
  ck.rng["augment"] = dl::PhiloxState{7, 99};
  ck.metadata["run"] = "unit \"test\"";
  dl::io::save_checkpoint(dir / "c.ckpt", ck);
  // The reference continuation.
  std::vector<float> losses;
  for (int i = 0; i < 3; ++i) losses.push_back(train_step(net, opt));
  std::vector<float> final_params = flat(net);

  dl::manual_seed(1234);  // scramble everything, then resume
  Net net2;
  dl::optim::Adam opt2(net2.named_parameters(), 0.5);
  auto back = dl::io::load_checkpoint(dir / "c.ckpt");
  CHECK(back.step == 3);
  CHECK(back.epoch == 1);
  CHECK(back.loader == dl::data::DataLoaderState{1, 5});
  CHECK(back.rng.at("augment") == dl::PhiloxState{7, 99});
  CHECK(back.rng.at("default") == ck.rng.at("default"));
  CHECK(back.metadata.at("run") == "unit \"test\"");
  CHECK(back.optimizer.scalars == ck.optimizer.scalars);  // lr and step counts exact (shortest round trip)
  CHECK(back.optimizer.tensors.size() == ck.optimizer.tensors.size());
  dl::io::restore_checkpoint(back, net2, opt2);
  CHECK(opt2.lr() == 0.01);
  for (int i = 0; i < 3; ++i) CHECK(train_step(net2, opt2) == losses[static_cast<size_t>(i)]);
  CHECK(flat(net2) == final_params);
}

TEST_CASE("checkpoint: restore checks shapes and keys, all or nothing") {
  TempDir dir("ckpt_bad");
  Net net;
  dl::optim::Adam opt(net.named_parameters(), 0.01);
  train_step(net, opt);
  auto ck = dl::io::make_checkpoint(net, opt, 1, 0);

  Net other;
  dl::optim::Adam other_opt(other.named_parameters(), 0.01);
  auto before = flat(other);
  auto wrong = ck;
  wrong.model["fc1.weight"] = dl::zeros<float>({3, 3});
  CHECK_THROWS_WITH_AS(dl::io::restore_checkpoint(wrong, other, other_opt),
                       doctest::Contains("shape mismatch for 'fc1.weight'"), dl::ValueError);
  auto missing = ck;
  missing.model.erase("fc2.bias");
  CHECK_THROWS_WITH_AS(dl::io::restore_checkpoint(missing, other, other_opt), doctest::Contains("missing key 'fc2.bias'"),
                       dl::ValueError);
  // Model fits, optimizer does not: the model must be rolled back.
  auto bad_opt = ck;
  bad_opt.optimizer.tensors.begin()->second = dl::zeros<float>({1});
  CHECK_THROWS_WITH_AS(dl::io::restore_checkpoint(bad_opt, other, other_opt), doctest::Contains("shape mismatch"),
                       dl::ValueError);
  CHECK(flat(other) == before);
}

TEST_CASE("checkpoint: damaged files give IoErrors naming the file and the problem") {
  TempDir dir("ckpt_damaged");
  Net net;
  dl::optim::Adam opt(net.named_parameters(), 0.01);
  auto ck = dl::io::make_checkpoint(net, opt, 0, 0);
  std::string p = dir / "c.ckpt";
  dl::io::save_checkpoint(p, ck);
  auto base = dl::io::load_safetensors(p);
  auto rewrite = [&](auto edit) {
    auto t = base.tensors;
    auto m = base.metadata;
    edit(t, m);
    dl::io::save_safetensors(p, t, m);
  };
  using T = std::map<std::string, dl::io::AnyArray>;
  using M = std::map<std::string, std::string>;
  rewrite([](T&, M& m) { m.erase("dl.checkpoint"); });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("is not a dl checkpoint"), dl::IoError);
  rewrite([](T&, M& m) { m["dl.checkpoint"] = "99"; });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("format version '99'"), dl::IoError);
  rewrite([](T&, M& m) { m.erase("dl.step"); });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("missing key 'dl.step'"), dl::IoError);
  rewrite([](T&, M& m) { m["dl.epoch"] = "12abc"; });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("'dl.epoch' is not a valid integer: '12abc'"),
                       dl::IoError);
  rewrite([](T&, M& m) { m["dl.step"] = "-3"; });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("non-negative"), dl::IoError);
  rewrite([](T&, M& m) { m["dl.rng.default"] = "12"; });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("'<seed>:<offset>'"), dl::IoError);
  rewrite([](T&, M& m) { m["dl.optim.lr"] = "fast"; });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("'dl.optim.lr' is not a number"), dl::IoError);
  rewrite([](T&, M& m) { m["dl.whatever"] = "1"; });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("unexpected metadata key 'dl.whatever'"),
                       dl::IoError);
  rewrite([](T& t, M&) { t["stray"] = dl::zeros<float>({1}); });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("unexpected tensor 'stray'"), dl::IoError);
  rewrite([](T& t, M&) { t["model/fc1.weight"] = dl::zeros<double>({4, 8}); });
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(p), doctest::Contains("tensor 'model/fc1.weight' is float64"),
                       dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_checkpoint(dir / "none"), doctest::Contains("does not exist"), dl::IoError);
}

TEST_CASE("checkpoint: kill -9 during save never leaves a broken file, permissions kept") {
  TempDir dir("ckpt_kill");
  std::string p = dir / "big.ckpt";
  const int64_t n = int64_t(1) << 21;  // 8 MB per tensor, two tensors: saves take a while
  // Version v: every element of both tensors is v, and the metadata says v.
  auto save_version = [&](int v) {
    dl::io::Checkpoint ck;
    for (const char* name : {"a", "b"}) {
      dl::NDArray<float> t(dl::Shape{n});
      for (int64_t i = 0; i < n; ++i) t.data()[i] = static_cast<float>(v);
      ck.model.emplace(name, t);
    }
    ck.step = v;
    ck.metadata["version"] = std::to_string(v);
    dl::io::save_checkpoint(p, ck);
  };
  save_version(0);
  REQUIRE(::chmod(p.c_str(), 0640) == 0);

  uint64_t state = 2024;
  auto next = [&] { state = state * 6364136223846793005ULL + 1442695040888963407ULL; return state >> 33; };
  int last_seen = 0, kills = 0, new_versions = 0, mid_write = 0, mid_write_temps = 0;
  for (int round = 0; round < 8; ++round) {
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Child: no doctest, no exceptions escaping; save versions forever until killed.
      try {
        for (int v = 1000 * (round + 1);; ++v) {
          save_version(v);
          if (std::getenv("DL_TEST_VERBOSE")) std::fprintf(stderr, "saved %d\n", v);
        }
      } catch (...) {
        ::_exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + static_cast<int>(next() % 280)));
    REQUIRE(::kill(child, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
    ++kills;

    auto ck = dl::io::load_checkpoint(p);  // must never throw
    int v = std::stoi(ck.metadata.at("version"));
    CHECK(ck.step == v);
    for (const char* name : {"a", "b"}) {
      const auto& t = ck.model.at(name);
      REQUIRE(t.numel() == n);
      bool all = true;
      for (int64_t i = 0; i < n; ++i) all = all && t.data()[i] == static_cast<float>(v);
      CHECK(all);
    }
    CHECK(v >= last_seen);
    new_versions += v != last_seen;
    last_seen = v;
    // A temporary file left behind means the kill landed in the middle of a save.
    int temps = 0;
    for (auto& e : fs::directory_iterator(dir.path)) temps += e.path().filename().string() != "big.ckpt";
    mid_write += temps > mid_write_temps;
    mid_write_temps = temps;
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
  }
  CHECK(kills == 8);
  MESSAGE("kill -9 test: " << kills << " kills, " << mid_write << " of them during a write, " << new_versions
                            << " new complete versions seen, last " << last_seen);
  // A killed writer leaves its temporary file behind (it cannot clean up after SIGKILL); only the
  // target is ever read, and the temporaries are hidden dot files next to it.
  for (auto& e : fs::directory_iterator(dir.path)) {
    std::string name = e.path().filename().string();
    CHECK((name == "big.ckpt" || name.rfind(".big.ckpt.tmp.", 0) == 0));
  }
}
