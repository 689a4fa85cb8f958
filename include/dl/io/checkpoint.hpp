// Training checkpoints: everything needed to resume training exactly, in ONE safetensors file
// written atomically (a crash or kill -9 during save leaves the previous checkpoint intact).
//
//   what                         stored as
//   model state_dict             tensors "model/<name>" (F32)
//   optimizer slots              tensors "optim/<param>.<slot>" (F32)
//   optimizer scalars (lr, step) metadata "dl.optim.<key>" (shortest round-trip decimal)
//   schedule step, epoch         metadata "dl.step", "dl.epoch"
//   RNG generators               metadata "dl.rng.<name>" = "<seed>:<offset>" ("default" = default_generator())
//   data-loader position         metadata "dl.loader.epoch", "dl.loader.next_batch"
//   free-form metadata           metadata "user.<key>"
//   format tag                   metadata "dl.checkpoint" = "1"
//
//   auto ck = dl::io::make_checkpoint(net, opt, step, epoch, loader.state());
//   dl::io::save_checkpoint("run/last.ckpt", ck);
//   ...
//   auto ck = dl::io::load_checkpoint("run/last.ckpt");
//   dl::io::restore_checkpoint(ck, net, opt);  loader.load_state(ck.loader);  step = ck.step;
#pragma once
#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <system_error>

#include "dl/core/rng.hpp"
#include "dl/data/dataloader.hpp"
#include "dl/io/safetensors.hpp"
#include "dl/nn/module.hpp"
#include "dl/optim/optimizer.hpp"

namespace dl::io {

inline constexpr const char* kCheckpointVersion = "1";

struct Checkpoint {
  nn::StateDict model;
  optim::OptimizerState optimizer;
  int64_t step = 0;   // the schedule step to resume at
  int64_t epoch = 0;
  std::map<std::string, PhiloxState> rng;  // "default": default_generator(); add others by name
  data::DataLoaderState loader;
  std::map<std::string, std::string> metadata;  // free-form (run name, config, git hash, ...)
};

namespace detail {

inline std::string double_text(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that parses back to v exactly
  return std::string(buf, r.ptr);
}

template <class Int>
Int parse_int(const std::string& path, const std::string& key, const std::string& text) {
  Int v{};
  auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  check<IoError>(r.ec == std::errc() && r.ptr == text.data() + text.size() && !text.empty(), "checkpoint: file '",
                 path, "': metadata '", key, "' is not a valid integer: '", text, "'");
  return v;
}

inline double parse_double(const std::string& path, const std::string& key, const std::string& text) {
  double v = 0;
  auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  check<IoError>(r.ec == std::errc() && r.ptr == text.data() + text.size() && !text.empty(), "checkpoint: file '",
                 path, "': metadata '", key, "' is not a number: '", text, "'");
  return v;
}

inline bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace detail

// A snapshot (cloned tensors) of the model, the optimizer and default_generator().
inline Checkpoint make_checkpoint(const nn::Module& model, const optim::Optimizer& optimizer, int64_t step,
                                  int64_t epoch, data::DataLoaderState loader = {}) {
  autograd::pause no_tape;
  Checkpoint ck;
  for (auto& [name, a] : model.state_dict()) ck.model.emplace(name, a.clone());
  ck.optimizer = optimizer.state_dict();
  for (auto& [name, a] : ck.optimizer.tensors) a = a.clone();
  ck.step = step;
  ck.epoch = epoch;
  ck.rng["default"] = default_generator().state();
  ck.loader = loader;
  return ck;
}

inline void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  check<ValueError>(ck.step >= 0 && ck.epoch >= 0, "save_checkpoint: file '", path,
                    "': step and epoch must be non-negative, got step ", ck.step, ", epoch ", ck.epoch);
  std::map<std::string, AnyArray> tensors;
  for (auto& [name, a] : ck.model) {
    check<ValueError>(a.defined(), "save_checkpoint: file '", path, "': model tensor '", name, "' is undefined");
    tensors.emplace("model/" + name, a.detach());
  }
  for (auto& [name, a] : ck.optimizer.tensors) {
    check<ValueError>(a.defined(), "save_checkpoint: file '", path, "': optimizer tensor '", name, "' is undefined");
    tensors.emplace("optim/" + name, a.detach());
  }
  std::map<std::string, std::string> meta;
  meta["dl.checkpoint"] = kCheckpointVersion;
  meta["dl.step"] = std::to_string(ck.step);
  meta["dl.epoch"] = std::to_string(ck.epoch);
  meta["dl.loader.epoch"] = std::to_string(ck.loader.epoch);
  meta["dl.loader.next_batch"] = std::to_string(ck.loader.next_batch);
  for (auto& [key, v] : ck.optimizer.scalars) meta["dl.optim." + key] = detail::double_text(v);
  for (auto& [name, s] : ck.rng) {
    check<ValueError>(!name.empty(), "save_checkpoint: file '", path, "': empty generator name");
    meta["dl.rng." + name] = std::to_string(s.seed) + ":" + std::to_string(s.offset);
  }
  for (auto& [key, v] : ck.metadata) meta["user." + key] = v;
  save_safetensors(path, tensors, meta);
}

// Loads and validates a checkpoint file: the format tag, every required key, integer and number
// syntax, tensor prefixes and dtypes. Shapes are checked against the model by restore_checkpoint.
inline Checkpoint load_checkpoint(const std::string& path) {
  Safetensors f = load_safetensors(path);
  auto bad = [&](const auto&... parts) { fail<IoError>("checkpoint: file '", path, "': ", parts...); };
  auto it = f.metadata.find("dl.checkpoint");
  if (it == f.metadata.end()) bad("is not a dl checkpoint (no 'dl.checkpoint' metadata)");
  if (it->second != kCheckpointVersion)
    bad("has checkpoint format version '", it->second, "'; this dl reads version ", kCheckpointVersion);
  auto required = [&](const char* key) -> const std::string& {
    auto m = f.metadata.find(key);
    if (m == f.metadata.end()) bad("missing key '", key, "'");
    return m->second;
  };
  Checkpoint ck;
  ck.step = detail::parse_int<int64_t>(path, "dl.step", required("dl.step"));
  ck.epoch = detail::parse_int<int64_t>(path, "dl.epoch", required("dl.epoch"));
  ck.loader.epoch = detail::parse_int<int64_t>(path, "dl.loader.epoch", required("dl.loader.epoch"));
  ck.loader.next_batch = detail::parse_int<int64_t>(path, "dl.loader.next_batch", required("dl.loader.next_batch"));
  if (ck.step < 0 || ck.epoch < 0 || ck.loader.epoch < 0 || ck.loader.next_batch < 0)
    bad("step, epoch and loader position must be non-negative");
  for (auto& [key, v] : f.metadata) {
    if (detail::starts_with(key, "user.")) {
      ck.metadata[key.substr(5)] = v;
    } else if (detail::starts_with(key, "dl.optim.")) {
      ck.optimizer.scalars[key.substr(9)] = detail::parse_double(path, key, v);
    } else if (detail::starts_with(key, "dl.rng.")) {
      size_t colon = v.find(':');
      if (colon == std::string::npos) bad("metadata '", key, "' must be '<seed>:<offset>', got '", v, "'");
      PhiloxState s;
      s.seed = detail::parse_int<uint64_t>(path, key, v.substr(0, colon));
      s.offset = detail::parse_int<uint64_t>(path, key, v.substr(colon + 1));
      ck.rng[key.substr(7)] = s;
    } else if (key != "dl.checkpoint" && key != "dl.step" && key != "dl.epoch" && key != "dl.loader.epoch" &&
               key != "dl.loader.next_batch") {
      bad("unexpected metadata key '", key, "'");
    }
  }
  for (auto& [name, a] : f.tensors) {
    bool model = detail::starts_with(name, "model/"), optim = detail::starts_with(name, "optim/");
    if (!model && !optim) bad("unexpected tensor '", name, "' (expected a 'model/' or 'optim/' prefix)");
    if (a.dtype() != DType::f32)
      bad("tensor '", name, "' is ", dtype_name(a.dtype()), "; model and optimizer state must be float32");
    if (model) ck.model.emplace(name.substr(6), a.get<float>());
    else ck.optimizer.tensors.emplace(name.substr(6), a.get<float>());
  }
  return ck;
}

// Puts a checkpoint back: model parameters and buffers, optimizer state and the "default"
// generator. All or nothing: if the optimizer state does not fit, the model is rolled back.
// Errors (missing keys, wrong shapes) are ValueErrors that name the key and both shapes.
inline void restore_checkpoint(const Checkpoint& ck, nn::Module& model, optim::Optimizer& optimizer) {
  autograd::pause no_tape;
  nn::StateDict before;
  for (auto& [name, a] : model.state_dict()) before.emplace(name, a.clone());
  model.load_state_dict(ck.model, /*strict=*/true);
  try {
    optimizer.load_state_dict(ck.optimizer);
  } catch (...) {
    model.load_state_dict(before, true);
    throw;
  }
  if (auto it = ck.rng.find("default"); it != ck.rng.end()) default_generator().set_state(it->second);
}

}  // namespace dl::io
