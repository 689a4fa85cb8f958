// dist::KVStore: MXNet's key-value store facade over dl's collectives. Keys are parameter names;
// values are NDArray<float>. "local" aggregates inside this process; "dist_sync" also sums every
// push over all ranks (one allreduce per push, so every rank must push the same keys in the same
// order, like MXNet's synchronous mode) and makes init() take rank 0's value.
//
//   auto kv = dl::dist::KVStore::create("dist_sync");
//   kv->init("fc1.weight", w);                       // every rank now stores rank 0's w
//   kv->push("fc1.weight", grad);                    // summed over ranks
//   kv->pull("fc1.weight", out);                     // out = the stored value
//   kv->set_optimizer([lr](const std::string&, NDArray<float>& g, NDArray<float>& w) { w -= lr * g; });
//   kv->pushpull("fc1.weight", grad, w);             // update on the store, then read it back
//
// Semantics (written down because MXNet's differ in one place): without an updater, the first
// push after an init() or pull() replaces the stored value and further pushes before the next pull
// add to it ("sum over pushes": gradient accumulation); MXNet replaces on every push. With an
// updater, every push calls updater(key, merged, stored) at once; the stored value is the weight.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/dist/collectives.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::dist {

class KVStore {
 public:
  using Updater = std::function<void(const std::string& key, NDArray<float>& merged, NDArray<float>& stored)>;

  // type: "local" or "dist_sync" (needs a live dist::Environment).
  static std::unique_ptr<KVStore> create(const std::string& type) {
    if (type == "local") return std::unique_ptr<KVStore>(new KVStore(type, nullptr));
    if (type == "dist_sync") return std::unique_ptr<KVStore>(new KVStore(type, &world()));
    fail<ValueError>("KVStore::create: unknown type '", type, "' (supported: local, dist_sync)");
  }

  const std::string& type() const { return type_; }
  int rank() const { return group_ ? group_->rank() : 0; }
  int num_workers() const { return group_ ? group_->size() : 1; }

  // Stores a copy of value under key (dist_sync: rank 0's value, on every rank).
  void init(const std::string& key, const NDArray<float>& value) {
    value.require_defined("KVStore::init");
    check<ValueError>(!key.empty(), "KVStore::init: the key must not be empty");
    check<ValueError>(!store_.count(key), "KVStore::init: key '", key, "' is already initialised");
    autograd::pause no_tape;
    Entry e;
    e.value = value.detach().clone();
    if (group_) {
      agree(key, "KVStore::init", e.value);
      broadcast(e.value, 0, *group_);
    }
    store_.emplace(key, std::move(e));
  }

  // Aggregates value (or the sum of values, e.g. one per device) into key.
  void push(const std::string& key, const NDArray<float>& value) { push(key, std::vector<NDArray<float>>{value}); }
  void push(const std::string& key, const std::vector<NDArray<float>>& values) {
    Entry& e = entry(key, "KVStore::push");
    check<ValueError>(!values.empty(), "KVStore::push: no values for key '", key, "'");
    autograd::pause no_tape;
    NDArray<float> merged;
    for (size_t i = 0; i < values.size(); ++i) {
      values[i].require_defined("KVStore::push");
      check<ShapeError>(values[i].shape() == e.value.shape(), "KVStore::push: key '", key, "' stores shape ",
                        e.value.shape(), ", value ", i, " has shape ", values[i].shape());
      if (i == 0) merged = values[0].detach().clone();
      else merged += values[i].detach();
    }
    if (group_) {
      agree(key, "KVStore::push", merged);
      allreduce(merged, Op::sum, Algorithm::automatic, *group_);
    }
    if (updater_) {
      updater_(key, merged, e.value);
    } else if (e.fresh) {
      e.value.assign(merged);
      e.fresh = false;
    } else {
      e.value += merged;
    }
  }

  // Copies the stored value into out (same shape).
  void pull(const std::string& key, NDArray<float>& out) {
    Entry& e = entry(key, "KVStore::pull");
    out.require_defined("KVStore::pull");
    check<ShapeError>(out.shape() == e.value.shape(), "KVStore::pull: key '", key, "' stores shape ", e.value.shape(),
                      ", output has shape ", out.shape());
    autograd::pause no_tape;
    NDArray<float> dst = out.detach();
    dst.assign(e.value);
    e.fresh = true;
  }
  void pull(const std::string& key, NDArray<float>&& out) { pull(key, out); }

  void pushpull(const std::string& key, const NDArray<float>& in, NDArray<float>& out) {
    push(key, in);
    pull(key, out);
  }
  void pushpull(const std::string& key, const NDArray<float>& in, NDArray<float>&& out) { pushpull(key, in, out); }

  // Update on the store: every push runs updater(key, merged gradient, stored weight).
  void set_updater(Updater updater) { updater_ = std::move(updater); }
  void set_optimizer(Updater updater) { set_updater(std::move(updater)); }

  bool contains(const std::string& key) const { return store_.count(key) > 0; }

 private:
  struct Entry {
    NDArray<float> value;
    bool fresh = true;  // the next push replaces instead of adding
  };

  KVStore(std::string type, Group* group) : type_(std::move(type)), group_(group) {}

  Entry& entry(const std::string& key, const char* op) {
    auto it = store_.find(key);
    check<ValueError>(it != store_.end(), op, ": key '", key, "' is not initialised; call init(key, value) first");
    return it->second;
  }

  // dist_sync: all ranks must be at the same key with the same size, else the sums mix parameters.
  void agree(const std::string& key, const char* op, const NDArray<float>& v) const {
    int64_t h = static_cast<int64_t>(std::hash<std::string>{}(key) & 0x3fffffffffffffffULL);
    detail::check_agreement(group_->comm(), op, {{"key hash", h}, {"length", v.numel()}},
                            "this rank's key '" + key + "' shape " + v.shape().to_string());
  }

  std::string type_;
  Group* group_;
  std::map<std::string, Entry> store_;
  Updater updater_;
};

}  // namespace dl::dist
