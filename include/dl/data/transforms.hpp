// Per-sample transforms that the DataLoader applies in its prefetch thread: Normalize (per
// channel), RandomCrop (zero padding, then a random window), RandomHorizontalFlip, Lambda (any
// in-place function) and Compose (a chain). A sample is a contiguous float array whose shape is
// the dataset's sample shape, e.g. (C, H, W) = (1, 28, 28).
//
// Randomness is counter-based (Philox) and keyed by (seed, epoch, sample index, stage): the same
// sample in the same epoch gets the same crop and flip whatever the batch size, shard, thread or
// resume point, and a different one in the next epoch.
//
//   auto t = dl::data::make_transform(dl::data::RandomCrop(28, 2), dl::data::RandomHorizontalFlip(0.5),
//                                     dl::data::Normalize({0.2860f}, {0.3530f}));
//   options.transform = t;  // DataLoaderOptions
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/core/rng.hpp"
#include "dl/core/shape.hpp"

namespace dl::data {

// Identifies one sample's draw: which run (seed), epoch, dataset index, and position in a Compose.
struct SampleContext {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t index = 0;
  uint32_t stage = 0;
};

// 128 random bits for (context, salt); the salt separates transforms of different kinds.
inline std::array<uint32_t, 4> sample_random_bits(const SampleContext& ctx, uint64_t salt) {
  uint64_t key = ctx.seed ^ (salt * 0x9E3779B97F4A7C15ull);
  uint64_t hi = (static_cast<uint64_t>(ctx.epoch) << 16) ^ ctx.stage;
  return philox4x32(key, static_cast<uint64_t>(ctx.index), hi);
}

// Uniform integer in [0, n) from 32 random bits (bias < n / 2^32, far below sampling noise).
inline int64_t bits_below(uint32_t bits, int64_t n) {
  return static_cast<int64_t>((static_cast<uint64_t>(bits) * static_cast<uint64_t>(n)) >> 32);
}

class Transform {
 public:
  virtual ~Transform() = default;
  // The output sample shape for an input sample shape; ShapeError if the transform cannot take it.
  // The DataLoader calls this once at construction, so bad shapes fail before the first epoch.
  virtual Shape output_shape(const Shape& in) const = 0;
  // Reads one contiguous sample of `in_shape` and writes output_shape(in_shape) to `out`
  // (a different buffer). Must be thread-safe: it runs in the prefetch thread.
  virtual void apply(const float* in, const Shape& in_shape, float* out, const SampleContext& ctx) const = 0;
};

// (x - mean[c]) / std[c] over axis 0 of the sample (the channel); one value applies to all channels.
class Normalize : public Transform {
 public:
  Normalize(std::vector<float> mean, std::vector<float> std) : mean_(std::move(mean)), std_(std::move(std)) {
    check<ValueError>(!mean_.empty() && mean_.size() == std_.size(), "Normalize: mean and std need the same, "
                      "non-zero number of values, got ", mean_.size(), " and ", std_.size());
    for (size_t c = 0; c < std_.size(); ++c)
      check<ValueError>(std_[c] > 0, "Normalize: std must be positive, got ", std_[c], " for channel ", c);
  }
  Shape output_shape(const Shape& in) const override {
    check<ShapeError>(in.rank() >= 1, "Normalize: sample shape ", in, " has no channel axis");
    check<ShapeError>(mean_.size() == 1 || static_cast<int64_t>(mean_.size()) == in[0], "Normalize: ",
                      mean_.size(), " mean/std values for a sample of shape ", in, " with ", in[0], " channels");
    return in;
  }
  void apply(const float* in, const Shape& in_shape, float* out, const SampleContext&) const override {
    int64_t channels = in_shape.rank() ? in_shape[0] : 1;
    int64_t plane = channels ? in_shape.numel() / channels : 0;
    for (int64_t c = 0; c < channels; ++c) {
      size_t k = mean_.size() == 1 ? 0 : static_cast<size_t>(c);
      float m = mean_[k], inv = 1.0f / std_[k];
      for (int64_t i = c * plane; i < (c + 1) * plane; ++i) out[i] = (in[i] - m) * inv;
    }
  }

 private:
  std::vector<float> mean_, std_;
};

// Pads (C, H, W) with `padding` zeros on every side and cuts a random (height, width) window.
class RandomCrop : public Transform {
 public:
  RandomCrop(int64_t size, int64_t padding = 0) : RandomCrop(size, size, padding) {}
  RandomCrop(int64_t height, int64_t width, int64_t padding) : h_(height), w_(width), pad_(padding) {
    check<ValueError>(h_ > 0 && w_ > 0, "RandomCrop: size must be positive, got (", h_, ", ", w_, ")");
    check<ValueError>(pad_ >= 0, "RandomCrop: padding must be non-negative, got ", pad_);
  }
  Shape output_shape(const Shape& in) const override {
    check<ShapeError>(in.rank() == 3, "RandomCrop: expected a (C, H, W) sample, got shape ", in);
    check<ShapeError>(in[1] + 2 * pad_ >= h_ && in[2] + 2 * pad_ >= w_, "RandomCrop: crop (", h_, ", ", w_,
                      ") is larger than the padded sample ", in, " with padding ", pad_);
    return Shape{in[0], h_, w_};
  }
  void apply(const float* in, const Shape& s, float* out, const SampleContext& ctx) const override {
    int64_t c_n = s[0], H = s[1], W = s[2];
    auto r = sample_random_bits(ctx, 0xC409);
    int64_t top = bits_below(r[0], H + 2 * pad_ - h_ + 1) - pad_;  // in unpadded coordinates
    int64_t left = bits_below(r[1], W + 2 * pad_ - w_ + 1) - pad_;
    for (int64_t c = 0; c < c_n; ++c)
      for (int64_t y = 0; y < h_; ++y) {
        float* row = out + (c * h_ + y) * w_;
        int64_t iy = top + y;
        if (iy < 0 || iy >= H) { std::fill(row, row + w_, 0.0f); continue; }
        const float* src = in + (c * H + iy) * W;
        for (int64_t x = 0; x < w_; ++x) {
          int64_t ix = left + x;
          row[x] = (ix >= 0 && ix < W) ? src[ix] : 0.0f;
        }
      }
  }

 private:
  int64_t h_, w_, pad_;
};

// Mirrors the last axis with probability p.
class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5) : p_(p) {
    check<ValueError>(p >= 0.0 && p <= 1.0, "RandomHorizontalFlip: p must be in [0, 1], got ", p);
  }
  Shape output_shape(const Shape& in) const override {
    check<ShapeError>(in.rank() >= 1, "RandomHorizontalFlip: sample shape ", in, " has no axis to flip");
    return in;
  }
  void apply(const float* in, const Shape& s, float* out, const SampleContext& ctx) const override {
    int64_t n = s.numel(), w = s[s.rank() - 1];
    bool flip = uint_to_unit_float(sample_random_bits(ctx, 0xF11F)[0]) < p_;
    if (!flip || w == 0) { std::memcpy(out, in, static_cast<size_t>(n) * sizeof(float)); return; }
    for (int64_t row = 0; row < n; row += w)
      for (int64_t x = 0; x < w; ++x) out[row + x] = in[row + w - 1 - x];
  }

 private:
  double p_;
};

// Any shape-preserving function, applied in place to a copy of the sample.
class Lambda : public Transform {
 public:
  using Fn = std::function<void(float* sample, const Shape& shape, const SampleContext& ctx)>;
  explicit Lambda(Fn fn) : fn_(std::move(fn)) {
    check<ValueError>(static_cast<bool>(fn_), "Lambda: empty function");
  }
  Shape output_shape(const Shape& in) const override { return in; }
  void apply(const float* in, const Shape& s, float* out, const SampleContext& ctx) const override {
    std::memcpy(out, in, static_cast<size_t>(s.numel()) * sizeof(float));
    fn_(out, s, ctx);
  }

 private:
  Fn fn_;
};

// Runs transforms in order; stage i draws its randomness with ctx.stage = i.
class Compose : public Transform {
 public:
  explicit Compose(std::vector<std::shared_ptr<const Transform>> stages) : stages_(std::move(stages)) {
    for (const auto& t : stages_) check<ValueError>(t != nullptr, "Compose: null transform");
  }
  Shape output_shape(const Shape& in) const override {
    Shape s = in;
    for (const auto& t : stages_) s = t->output_shape(s);
    return s;
  }
  void apply(const float* in, const Shape& in_shape, float* out, const SampleContext& ctx) const override {
    if (stages_.empty()) { std::memcpy(out, in, static_cast<size_t>(in_shape.numel()) * sizeof(float)); return; }
    // Ping-pong between two buffers; the last stage writes `out` directly. (Local, not
    // thread_local: a nested Compose must not reuse its parent's buffers.)
    std::vector<float> buffers[2];
    const float* src = in;
    Shape shape = in_shape;
    for (size_t i = 0; i < stages_.size(); ++i) {
      Shape next = stages_[i]->output_shape(shape);
      float* dst = out;
      if (i + 1 < stages_.size()) {
        auto& buf = buffers[i % 2];
        buf.resize(static_cast<size_t>(next.numel()));
        dst = buf.data();
      }
      SampleContext c = ctx;
      c.stage = ctx.stage * 64 + static_cast<uint32_t>(i);  // nested Composes stay distinct
      stages_[i]->apply(src, shape, dst, c);
      src = dst;
      shape = next;
    }
  }
  size_t size() const { return stages_.size(); }

 private:
  std::vector<std::shared_ptr<const Transform>> stages_;
};

// make_transform(RandomCrop(28, 2), Normalize({0.5f}, {0.5f})) -> shared Compose of copies.
template <class... Ts>
  requires(std::is_base_of_v<Transform, Ts> && ...)
std::shared_ptr<const Transform> make_transform(Ts... transforms) {
  return std::make_shared<const Compose>(
      std::vector<std::shared_ptr<const Transform>>{std::make_shared<const Ts>(std::move(transforms))...});
}

}  // namespace dl::data
