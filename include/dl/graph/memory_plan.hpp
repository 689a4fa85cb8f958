// The memory plan of a compiled graph: every intermediate (forward value, gradient, saved
// statistic, scratch) is a *buffer* with a size and the steps that use it (the topologically
// ordered forward steps, then the backward steps). Liveness gives each buffer an interval
// [first use, last use]; buffers whose intervals do not overlap share a *slot* (greedy best fit
// in order of first use). Buffers declared as aliases (an in-place rule: a view, or a gradient
// written over the gradient it is computed from at the same element) share one slot outright.
// Slots are allocated once when the plan is bound; views into them never allocate, so later
// calls with the same shapes allocate nothing. With planning off every buffer gets its own slot.
// A plan bound per call (CompileOptions::keep_memory = false) defers the slots that only backward
// uses (first use at or after `defer_from`): allocate_deferred() takes them when backward starts,
// and gives back after forward the slots that only forward uses (release_forward()), so a tape
// node holds only what backward reads between the two passes (held_bytes()). A buffer that only
// backward uses then shares only deferred slots: in a forward slot it would keep that slot held.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "dl/core/shape.hpp"
#include "dl/core/storage.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::graph {

class MemoryPlan {
 public:
  static constexpr int64_t kAlign = 64;

  // A new buffer of `bytes`; returns its id.
  int add(int64_t bytes) {
    buffers_.push_back({round_up(bytes), INT_MAX, -1, -1});
    parent_.push_back(static_cast<int>(parent_.size()));
    return static_cast<int>(buffers_.size()) - 1;
  }
  // Buffer `id` is read or written at `step` (id -1: not a planned buffer, ignored).
  void use(int id, int step) {
    if (id < 0) return;
    auto& b = buffers_[static_cast<size_t>(id)];
    b.first = std::min(b.first, step);
    b.last = std::max(b.last, step);
  }
  // Buffers a and b are the same memory (in place).
  void alias(int a, int b) {
    if (a < 0 || b < 0) return;
    int ra = root(a), rb = root(b);
    if (ra != rb) parent_[static_cast<size_t>(ra)] = rb;
  }
  int next_step() { return step_++; }
  int steps() const { return step_; }

  // Liveness-based slot assignment, then one allocation per slot (except the slots whose first
  // use is at or after step `defer_from`: allocate_deferred()).
  void assign(bool enabled, int defer_from = INT_MAX) {
    const size_t n = buffers_.size();
    if (!enabled)  // no in-place either: every buffer its own memory
      for (size_t i = 0; i < n; ++i) parent_[i] = static_cast<int>(i);
    // Merge aliased buffers' intervals and sizes into their root.
    std::vector<Buffer> merged(n, Buffer{0, INT_MAX, -1, -1});
    for (size_t i = 0; i < n; ++i) {
      auto& r = merged[static_cast<size_t>(root(static_cast<int>(i)))];
      const auto& b = buffers_[i];
      r.bytes = std::max(r.bytes, b.bytes);
      r.first = std::min(r.first, b.first);
      r.last = std::max(r.last, b.last);
    }
    unplanned_bytes_ = 0;
    for (const auto& b : buffers_) unplanned_bytes_ += b.bytes;
    std::vector<int> roots;
    for (size_t i = 0; i < n; ++i)
      if (root(static_cast<int>(i)) == static_cast<int>(i)) roots.push_back(static_cast<int>(i));
    std::sort(roots.begin(), roots.end(), [&](int a, int b) {
      return merged[static_cast<size_t>(a)].first < merged[static_cast<size_t>(b)].first;
    });
    struct Slot { int64_t bytes; int first, last; };
    std::vector<Slot> slots;
    for (int r : roots) {
      auto& b = merged[static_cast<size_t>(r)];
      if (b.first == INT_MAX) b.first = b.last = 0;  // never used: still gets memory
      int best = -1;
      if (enabled) {
        for (size_t s = 0; s < slots.size(); ++s) {
          if (slots[s].last >= b.first) continue;  // still live
          if (b.first >= defer_from && slots[s].first < defer_from) continue;  // a forward slot: goes after forward
          if (best < 0) { best = static_cast<int>(s); continue; }
          auto& cur = slots[static_cast<size_t>(best)];
          bool fits = slots[s].bytes >= b.bytes, cur_fits = cur.bytes >= b.bytes;
          // Prefer the smallest slot that fits; else the largest one (it grows least).
          if ((fits && (!cur_fits || slots[s].bytes < cur.bytes)) || (!fits && !cur_fits && slots[s].bytes > cur.bytes))
            best = static_cast<int>(s);
        }
      }
      if (best < 0) {
        slots.push_back({b.bytes, b.first, b.last});
        best = static_cast<int>(slots.size()) - 1;
      } else {
        slots[static_cast<size_t>(best)].bytes = std::max(slots[static_cast<size_t>(best)].bytes, b.bytes);
        slots[static_cast<size_t>(best)].last = b.last;
      }
      b.slot = best;
    }
    slot_of_.assign(n, -1);
    for (size_t i = 0; i < n; ++i) slot_of_[i] = merged[static_cast<size_t>(root(static_cast<int>(i)))].slot;
    storage_.clear();
    slot_bytes_.clear();
    forward_only_.clear();
    dropped_.assign(slots.size(), false);
    planned_bytes_ = upfront_bytes_ = held_bytes_ = 0;
    for (const auto& s : slots) {  // roots in order of first use: a slot's first use is its first buffer's
      const bool deferred = s.first >= defer_from;
      storage_.push_back(deferred ? nullptr : Storage::allocate(static_cast<size_t>(s.bytes)));
      slot_bytes_.push_back(s.bytes);
      forward_only_.push_back(defer_from != INT_MAX && !deferred && s.last < defer_from);
      planned_bytes_ += s.bytes;
      if (!deferred) upfront_bytes_ += s.bytes;
      if (!deferred && !forward_only_.back()) held_bytes_ += s.bytes;
    }
  }
  // Gives back the slots whose buffers are all used before `defer_from` (forward only): views
  // bound after this are undefined handles for them. Idempotent.
  void release_forward() {
    for (size_t s = 0; s < storage_.size(); ++s)
      if (forward_only_[s] && !dropped_[s]) {
        storage_[s] = nullptr;
        dropped_[s] = true;
      }
  }
  // Allocates the slots assign() deferred; views bound before this are undefined handles: bind again.
  void allocate_deferred() {
    for (size_t s = 0; s < storage_.size(); ++s)
      if (!storage_[s] && !dropped_[s]) storage_[s] = Storage::allocate(static_cast<size_t>(slot_bytes_[s]));
  }
  // Makes `storage` the memory of buffer `id`'s slot if that slot is not allocated yet (deferred)
  // and fits in it; returns whether it did. Views bound after this see the storage.
  bool adopt(int id, const std::shared_ptr<Storage>& storage) {
    if (id < 0 || !storage) return false;
    const auto s = static_cast<size_t>(slot_of_[static_cast<size_t>(id)]);
    if (storage_[s] || dropped_[s] || static_cast<int64_t>(storage->bytes()) < slot_bytes_[s]) return false;
    storage_[s] = storage;
    return true;
  }
  // Lets go of the slot of buffer `id` (a result handed to the caller that the rest of the pass
  // does not read): views bound after this are undefined handles.
  void drop(int id) {
    if (id < 0) return;
    const auto s = static_cast<size_t>(slot_of_[static_cast<size_t>(id)]);
    storage_[s] = nullptr;
    dropped_[s] = true;
  }

  // A contiguous view of buffer `id` with the given shape (no allocation).
  template <class T>
  NDArray<T> view(int id, const Shape& shape) const {
    return NDArray<T>(storage_[static_cast<size_t>(slot_of_[static_cast<size_t>(id)])], shape, contiguous_strides(shape), 0);
  }

  int num_buffers() const { return static_cast<int>(buffers_.size()); }
  int num_slots() const { return static_cast<int>(storage_.size()); }
  int64_t unplanned_bytes() const { return unplanned_bytes_; }
  int64_t planned_bytes() const { return planned_bytes_; }
  int64_t upfront_bytes() const { return upfront_bytes_; }  // allocated by assign(), before deferred slots
  // Of those, the slots still held after release_forward(): what backward reads of the forward pass.
  int64_t held_bytes() const { return held_bytes_; }
  // The last step that uses buffer `id` so far (-1: none yet).
  int last_use(int id) const { return id < 0 ? -1 : buffers_[static_cast<size_t>(id)].last; }

 private:
  struct Buffer { int64_t bytes; int first, last, slot; };
  static int64_t round_up(int64_t b) { return (std::max<int64_t>(b, 1) + kAlign - 1) / kAlign * kAlign; }
  int root(int i) {
    while (parent_[static_cast<size_t>(i)] != i) i = parent_[static_cast<size_t>(i)] = parent_[static_cast<size_t>(parent_[static_cast<size_t>(i)])];
    return i;
  }
  std::vector<Buffer> buffers_;
  std::vector<int> parent_, slot_of_;
  std::vector<std::shared_ptr<Storage>> storage_;  // null: a deferred slot not allocated yet
  std::vector<int64_t> slot_bytes_;
  std::vector<bool> dropped_, forward_only_;
  int step_ = 0;
  int64_t unplanned_bytes_ = 0, planned_bytes_ = 0, upfront_bytes_ = 0, held_bytes_ = 0;
};

}  // namespace dl::graph
