// CPU kernels for 2-D convolution (NCHW): im2col + GEMM forward, GEMM + col2im for the input
// gradient, im2col + GEMM for the weight gradient. Work is split into one chunk of images per
// thread; each chunk owns a column buffer from the pooled allocator (so repeated calls with the
// same shapes do not reach malloc) and runs single-threaded GEMMs. With one image the GEMM itself
// is threaded instead. A 1x1 convolution with stride 1 and no padding reads the image directly as
// its column matrix. Shapes are checked by ops/conv.hpp; these functions only compute.
//
//   per image n, group g:  y[n, g] (O/G, OH*OW) = w[g] (O/G, C/G*kh*kw) x col (C/G*kh*kw, OH*OW)
//
// Shortcuts, each chosen by shape (detail::use_*):
// - float, AVX-512, a kernel larger than 1x1: a direct kernel on the zero-padded image (split into
//   its stride phases when the stride is 2-4), no column matrix, for the forward and the weight
//   gradient (detail::direct_conv_forward / direct_conv_weight_grad). Two variants put output
//   channels along the vectors instead of positions: the forward when output channels come in
//   64s, or 32s on a wasteful grid (channel_conv_forward), and the weight gradient with >= 8 output channels (stride 1: 3x3
//   or 5x5 kernels; strides 2-4: any kernel but 1x1) (channel_conv_weight_grad);
// - float, AVX-512, 3x3 stride 1 without dilation, >= 32 channels per group on each side in 16s:
//   Winograd F(4x4, 3x3) for the forward, the input gradient and the weight gradient
//   (detail::winograd_conv_forward / winograd_conv_weight_grad; set_conv_winograd(false) or
//   DL_CONV_WINOGRAD=0 turns it off);
// - stride 1, padding <= dilation * (kernel - 1): the input gradient as a forward convolution of
//   the output gradient with the turned kernel (conv2d_input_grad_by_conv), so it too runs on
//   the direct kernel (or im2col + GEMM) instead of GEMM + col2im.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string_view>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "dl/backend/cpu/gemm.hpp"
#include "dl/core/allocator.hpp"
#include "dl/core/parallel.hpp"

namespace dl::cpu {

struct Conv2dGeometry {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t groups = 1, out_h = 0, out_w = 0;

  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
  int64_t col_rows() const { return in_per_group() * kernel_h * kernel_w; }  // GEMM inner size
  int64_t out_plane() const { return out_h * out_w; }
  int64_t in_plane() const { return in_h * in_w; }
  // 1x1, stride 1, no padding: the image already is its column matrix.
  bool is_pointwise() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

// Scratch blocks kept for one sequential stream of kernel calls (one batch slice of a compiled
// step, graph/compile.hpp's SplitPlan): while a ScratchScope names it on a thread, Workspaces
// take their blocks from it and give them back to it. The pool alone cannot promise a repeated
// step no system allocation when slices run concurrently in one step and one after the other in
// another (two live blocks of a size instead of one); a slice's own calls are always sequential,
// so after its first step its cache holds exactly what it needs. Blocks go back to the pool when
// the cache is destroyed.
class ScratchCache {
 public:
  ScratchCache() = default;
  ScratchCache(const ScratchCache&) = delete;
  ScratchCache& operator=(const ScratchCache&) = delete;
  ~ScratchCache() {
    for (auto& [bytes, p] : free_) cpu_allocator().deallocate(p, bytes);
  }
  void* take(size_t bytes) {
    const auto it = free_.find(bytes);
    if (it == free_.end()) return cpu_allocator().allocate(bytes);
    void* p = it->second;
    free_.erase(it);
    return p;
  }
  void give(void* p, size_t bytes) { free_.emplace(bytes, p); }

 private:
  std::multimap<size_t, void*> free_;
};
namespace detail {
inline ScratchCache*& current_scratch() {
  thread_local ScratchCache* cache = nullptr;
  return cache;
}
}  // namespace detail
// Names `cache` as this thread's scratch source until the scope ends (nested kernels of a
// parallel_for inside a chunk run on the same thread, so they see it too).
class ScratchScope {
 public:
  explicit ScratchScope(ScratchCache* cache) : previous_(detail::current_scratch()) { detail::current_scratch() = cache; }
  ~ScratchScope() { detail::current_scratch() = previous_; }
  ScratchScope(const ScratchScope&) = delete;
  ScratchScope& operator=(const ScratchScope&) = delete;

 private:
  ScratchCache* previous_;
};

// A scratch buffer from the pooled CPU allocator (or the thread's ScratchCache), returned on scope exit.
template <class T>
class Workspace {
 public:
  explicit Workspace(int64_t elems)
      : bytes_(static_cast<size_t>(std::max<int64_t>(elems, 1)) * sizeof(T)), cache_(detail::current_scratch()) {
    data_ = static_cast<T*>(cache_ ? cache_->take(bytes_) : cpu_allocator().allocate(bytes_));
  }
  ~Workspace() {
    if (cache_) cache_->give(data_, bytes_);
    else cpu_allocator().deallocate(data_, bytes_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  T* data() const { return data_; }

 private:
  T* data_ = nullptr;
  size_t bytes_;
  ScratchCache* cache_;
};

namespace detail {
// Output columns [lo, hi) read input columns inside [0, W) for offset iw0 = kj*dw - pw:
// iw = ow*sw + iw0.
inline void valid_cols(int64_t iw0, int64_t W, int64_t sw, int64_t OW, int64_t& lo, int64_t& hi) {
  lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
  hi = iw0 <= W - 1 ? (W - 1 - iw0) / sw + 1 : 0;
  lo = std::min(lo, OW);
  hi = std::max(std::min(hi, OW), lo);
}

// Splits `batch` images into at most num_threads() chunks; returns the chunk count.
inline int64_t batch_chunks(int64_t batch) {
  if (batch <= 0) return 0;
  int64_t t = in_parallel_region() ? 1 : num_threads();
  return std::max<int64_t>(1, std::min(t, batch));
}
}  // namespace detail

namespace detail {
// A convolution with stride 1 and as many output as input columns (a "same" convolution, e.g.
// 3x3 with padding 1): every (c, ki, kj) plane of col is the input plane shifted by the constant
// offset (ki*dh - ph) * W + (kj*dw - pw), so one long contiguous run covers all its valid rows.
// The run also covers the entries that wrap around a row edge (they belong to the padding), which
// are handled apart: a few per row instead of short per-row loops with scalar tails.
//   plane (OH*OW):  [zeros | b ........ run ........ e | zeros],  wrap entries: ow < lo, ow >= hi
struct ShiftedPlane {
  int64_t offset, b, e, lo, hi, oh_lo, oh_hi;
  bool empty() const { return b >= e; }
};
inline bool is_shifted(const Conv2dGeometry& g) { return g.stride_h == 1 && g.stride_w == 1 && g.out_w == g.in_w; }
inline ShiftedPlane shifted_plane(const Conv2dGeometry& g, int64_t ki, int64_t kj) {
  ShiftedPlane s{};
  const int64_t ih0 = ki * g.dilation_h - g.pad_h, iw0 = kj * g.dilation_w - g.pad_w;
  valid_cols(iw0, g.in_w, 1, g.out_w, s.lo, s.hi);
  s.oh_lo = std::clamp<int64_t>(-ih0, 0, g.out_h);
  s.oh_hi = std::clamp<int64_t>(g.in_h - ih0, s.oh_lo, g.out_h);
  s.offset = ih0 * g.in_w + iw0;
  if (s.oh_lo < s.oh_hi && s.lo < s.hi) {
    s.b = s.oh_lo * g.out_w + s.lo;
    s.e = (s.oh_hi - 1) * g.out_w + s.hi;
  }
  return s;
}
}  // namespace detail

// col (C/G*kh*kw, OH*OW) from one image's group of channels x (C/G, H, W), zeros where padded.
template <class T>
void im2col(const T* x, const Conv2dGeometry& g, T* col) {
  const int64_t H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w, plane = OH * OW;
  if (detail::is_shifted(g)) {
    for (int64_t c = 0; c < g.in_per_group(); ++c)
      for (int64_t ki = 0; ki < g.kernel_h; ++ki)
        for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
          T* dst = col + ((c * g.kernel_h + ki) * g.kernel_w + kj) * plane;
          const T* src = x + c * H * W;
          const detail::ShiftedPlane sp = detail::shifted_plane(g, ki, kj);
          if (sp.empty()) {
            std::fill(dst, dst + plane, T(0));
            continue;
          }
          std::fill(dst, dst + sp.b, T(0));
          std::memcpy(dst + sp.b, src + (sp.b + sp.offset), static_cast<size_t>(sp.e - sp.b) * sizeof(T));
          std::fill(dst + sp.e, dst + plane, T(0));
          for (int64_t oh = sp.oh_lo; oh < sp.oh_hi; ++oh) {  // wrapped entries: padding
            for (int64_t ow = 0; ow < sp.lo; ++ow) dst[oh * OW + ow] = T(0);
            for (int64_t ow = sp.hi; ow < OW; ++ow) dst[oh * OW + ow] = T(0);
          }
        }
    return;
  }
  for (int64_t c = 0; c < g.in_per_group(); ++c)
    for (int64_t ki = 0; ki < g.kernel_h; ++ki)
      for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
        T* dst = col + ((c * g.kernel_h + ki) * g.kernel_w + kj) * plane;
        int64_t iw0 = kj * g.dilation_w - g.pad_w, lo, hi;
        detail::valid_cols(iw0, W, g.stride_w, OW, lo, hi);
        for (int64_t oh = 0; oh < OH; ++oh) {
          T* d = dst + oh * OW;
          int64_t ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
          if (ih < 0 || ih >= H) {
            std::fill(d, d + OW, T(0));
            continue;
          }
          const T* src = x + (c * H + ih) * W + iw0;
          std::fill(d, d + lo, T(0));
          if (g.stride_w == 1) std::memcpy(d + lo, src + lo, static_cast<size_t>(hi - lo) * sizeof(T));
          else
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * g.stride_w];
          std::fill(d + hi, d + OW, T(0));
        }
      }
}

// The adjoint of im2col: adds every column entry back into dx (C/G, H, W); padding is dropped.
// `col` is scratch: its padding entries may be overwritten (with zeros).
template <class T>
void col2im(T* col, const Conv2dGeometry& g, T* dx) {
  const int64_t H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w, plane = OH * OW;
  if (detail::is_shifted(g)) {
    for (int64_t c = 0; c < g.in_per_group(); ++c)
      for (int64_t ki = 0; ki < g.kernel_h; ++ki)
        for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
          T* src = col + ((c * g.kernel_h + ki) * g.kernel_w + kj) * plane;
          const detail::ShiftedPlane sp = detail::shifted_plane(g, ki, kj);
          if (sp.empty()) continue;
          for (int64_t oh = sp.oh_lo; oh < sp.oh_hi; ++oh) {  // padding entries add nothing: zero them
            for (int64_t ow = 0; ow < sp.lo; ++ow) src[oh * OW + ow] = T(0);
            for (int64_t ow = sp.hi; ow < OW; ++ow) src[oh * OW + ow] = T(0);
          }
          T* d = dx + (c * H * W + sp.b + sp.offset);  // dx's element for col entry b
          const T* s = src + sp.b;
          for (int64_t i = 0; i < sp.e - sp.b; ++i) d[i] += s[i];
        }
    return;
  }
  for (int64_t c = 0; c < g.in_per_group(); ++c)
    for (int64_t ki = 0; ki < g.kernel_h; ++ki)
      for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
        const T* src = col + ((c * g.kernel_h + ki) * g.kernel_w + kj) * plane;
        int64_t iw0 = kj * g.dilation_w - g.pad_w, lo, hi;
        detail::valid_cols(iw0, W, g.stride_w, OW, lo, hi);
        for (int64_t oh = 0; oh < OH; ++oh) {
          int64_t ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
          if (ih < 0 || ih >= H) continue;
          const T* s = src + oh * OW;
          T* d = dx + (c * H + ih) * W + iw0;
          if (g.stride_w == 1)
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] += s[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) d[ow * g.stride_w] += s[ow];
        }
      }
}

// ---- Direct convolution (float, AVX-512) ---------------------------------------------------------
// im2col copies every input element kh*kw times (a 3x3 conv: a column matrix 9x the image) and
// the GEMM then packs that copy once more; at ResNet-20's sizes this traffic cost about as much as
// half the GEMM arithmetic. A stride-1 convolution needs no column matrix: on the zero-padded
// image xp (C/G, Hp, Wp) laid out flat, output q = oh*Wp + ow of every output row reads, for tap
// (c, ki, kj), the element q + c*Hp*Wp + ki*dh*Wp + kj*dw: each tap is one contiguous run of xp.
// The output is computed on that padded grid (Wp - OW columns per row are discarded) by an 8 x 48
// register tile: 8 output channels x 3 vectors of 16 positions, 24 accumulators, one
// broadcast weight and three unaligned loads per tap.
//   flops wasted: Wp/OW per row (3x3 pad 1 on 28 columns: 30/28) plus rounding Q = OH*Wp up to 16
// A stride-s convolution becomes one of stride 1 by splitting xp into its phases: phase (a, b) is
// the plane xp[a::sh, b::sw] of Hph x Wph = ceil(Hp/sh) x ceil(Wp/sw) elements, and tap (ki, kj)
// reads phase ((ki*dh) % sh, (kj*dw) % sw) shifted by ((ki*dh) / sh, (kj*dw) / sw), so output
// q = oh*Wph + ow again reads one contiguous run per tap (only the phases some tap reads are
// stored). Tap offsets are separable: c*chan + row_off[ki] + col_off[kj]; stride 1 is one phase.
namespace detail {
#if defined(__AVX512F__)
inline constexpr bool kDirectConv = true;
#else
inline constexpr bool kDirectConv = false;  // the im2col path serves every shape
#endif

struct DirectConvPlan {
  static constexpr int64_t kMaxStride = 4, kMaxKernel = 32;  // beyond: im2col + GEMM
  int64_t Hp, Wp, Hph, Wph, chan, Q, Qpad, Og8, xp_elems;
  // Phase slots: phase row a (< sh) is stored at slot row_slot[a] (-1: read by no tap), likewise b.
  int64_t row_slots = 0, col_slots = 0, row_slot[kMaxStride], col_slot[kMaxStride];
  int64_t row_off[kMaxKernel], col_off[kMaxKernel];
  bool supported;
  explicit DirectConvPlan(const Conv2dGeometry& g) {
    const int64_t sh = g.stride_h, sw = g.stride_w;
    supported = sh >= 1 && sw >= 1 && sh <= kMaxStride && sw <= kMaxStride && g.kernel_h <= kMaxKernel &&
                g.kernel_w <= kMaxKernel;
    Hp = g.in_h + 2 * g.pad_h;
    Wp = g.in_w + 2 * g.pad_w;
    Hph = (Hp + sh - 1) / sh;
    Wph = (Wp + sw - 1) / sw;
    Q = g.out_h * Wph;
    Qpad = (Q + 15) / 16 * 16;
    Og8 = (g.out_per_group() + 7) / 8 * 8;
    if (!supported) {
      chan = xp_elems = 0;
      return;
    }
    std::fill(row_slot, row_slot + kMaxStride, int64_t{-1});
    std::fill(col_slot, col_slot + kMaxStride, int64_t{-1});
    for (int64_t ki = 0; ki < g.kernel_h; ++ki)
      if (int64_t& s = row_slot[ki * g.dilation_h % sh]; s < 0) s = row_slots++;
    for (int64_t kj = 0; kj < g.kernel_w; ++kj)
      if (int64_t& s = col_slot[kj * g.dilation_w % sw]; s < 0) s = col_slots++;
    const int64_t plane = Hph * Wph;
    chan = row_slots * col_slots * plane;
    int64_t max_off = 0;
    for (int64_t ki = 0; ki < g.kernel_h; ++ki) {
      const int64_t r = ki * g.dilation_h;
      row_off[ki] = row_slot[r % sh] * col_slots * plane + r / sh * Wph;
      max_off = std::max(max_off, row_off[ki]);
    }
    int64_t max_col = 0;
    for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
      const int64_t c = kj * g.dilation_w;
      col_off[kj] = col_slot[c % sw] * plane + c / sw;
      max_col = std::max(max_col, col_off[kj]);
    }
    // The last tap of the last 16-wide block reads up to here; the tail beyond the image is zeros.
    const int64_t reach = (g.in_per_group() - 1) * chan + max_off + max_col + Qpad;
    xp_elems = std::max(reach, g.in_per_group() * chan);
  }
};

// Float, at most stride 4, and the grid at most twice the output: the kernel runs at ~1.6-2x the
// GFLOP/s of im2col + GEMM, so even LeNet's 5x5 unpadded conv on 14x14 (Qpad 144 for 100
// outputs) is 2x faster direct (measured, 1 thread). Stride 2 on the phases (ResNet's 3x3
// downsampling convs, Wph = OW + 1): forward 2.1x (28x28 -> 14x14, 16 -> 32) and 1.5x (14x14 ->
// 7x7, 32 -> 64, Qpad 64 for 49 outputs) im2col + GEMM, measured 1 thread. A 1x1 kernel stays on
// im2col + GEMM (strided: 0.75x direct, every phase copy but one is wasted).
template <class T>
bool use_direct_conv(const Conv2dGeometry& g) {
  if constexpr (!kDirectConv || !std::is_same_v<T, float>) {
    return false;
  } else {
    if (g.kernel_h * g.kernel_w == 1 || g.out_plane() == 0) return false;
    const DirectConvPlan p(g);
    return p.supported && p.Qpad <= 2 * g.out_plane();
  }
}

// The weight gradient's kernel sums over q in vectors and adds them up once per tile and block of
// images: on small planes (ResNet's 7x7, Qpad 64) those sums and the padding cost more than
// im2col + GEMM (measured 0.8x there, 1.1-1.6x from 14x14 up), so it needs Qpad >= 128 (ResNet's
// stride-2 3x3 conv 16 -> 32 on 28x28, Qpad 224: 1.3x im2col + GEMM).
template <class T>
bool use_direct_weight_grad(const Conv2dGeometry& g) {
  return use_direct_conv<T>(g) && DirectConvPlan(g).Qpad >= 128;
}

#if defined(__AVX512F__)
// n floats (short rows: 7-32 here) by masked vectors, without a library call per row.
inline void copy_row(const float* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const auto m = static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, s + i));
  }
}

// One image's group x (C/G, H, W) into the padded buffer xp (xp_elems), split into the phases the
// taps read (stride 1: the one plane (Hp, Wp)). Only the image's own positions are written, the
// same ones for every image: xp is zeroed once (all xp_elems) before its first image and its
// padding stays zero. (Per-image zero fills and row copies by memset/memcpy were 8 % of a
// ResNet-20 step at 2 threads: three library calls per 28-float row.)
inline void direct_pad_image(const float* x, const Conv2dGeometry& g, const DirectConvPlan& p, float* xp) {
  const int64_t H = g.in_h, W = g.in_w, Hp = p.Hp, Wp = p.Wp;
  if (g.stride_h == 1 && g.stride_w == 1) {
    for (int64_t c = 0; c < g.in_per_group(); ++c) {
      float* d = xp + c * Hp * Wp + g.pad_h * Wp + g.pad_w;
      const float* src = x + c * H * W;
      for (int64_t h = 0; h < H; ++h) copy_row(src + h * W, d + h * Wp, W);
    }
  } else {
    // Each image row goes to the phase rows it feeds.
    const int64_t sh = g.stride_h, sw = g.stride_w, plane = p.Hph * p.Wph;
    for (int64_t c = 0; c < g.in_per_group(); ++c)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t a = (h + g.pad_h) % sh, i = (h + g.pad_h) / sh;
        if (p.row_slot[a] < 0) continue;
        const float* src = x + (c * H + h) * W;
        float* drow = xp + c * p.chan + p.row_slot[a] * p.col_slots * plane + i * p.Wph;
        // Image column w goes to phase b = (w + pw) % sw, column (w + pw) / sw.
        if (sw == 2 && p.col_slots == 2) {  // 16 of each phase from 32 columns (masked at the end)
          const int64_t b0 = g.pad_w % 2, j0 = g.pad_w / 2;  // column 0: phase b0, column j0
          float* d0 = drow + p.col_slot[b0] * plane + j0;          // w = 0, 2, 4, ...
          float* d1 = drow + p.col_slot[1 - b0] * plane + j0 + b0;  // w = 1, 3, 5, ...
          const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
          const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
          for (int64_t w = 0; w < W; w += 32) {
            const int64_t m = std::min<int64_t>(32, W - w), ne = (m + 1) / 2, no = m / 2;
            const auto mlo = static_cast<__mmask16>(m >= 16 ? 0xFFFF : (1u << m) - 1);
            const auto mhi = static_cast<__mmask16>(m > 16 ? (1u << (m - 16)) - 1 : 0);
            const __m512 lo = _mm512_maskz_loadu_ps(mlo, src + w);
            const __m512 hi = mhi ? _mm512_maskz_loadu_ps(mhi, src + w + 16) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(d0 + w / 2, static_cast<__mmask16>((1u << ne) - 1), _mm512_permutex2var_ps(lo, even, hi));
            if (no > 0)
              _mm512_mask_storeu_ps(d1 + w / 2, static_cast<__mmask16>((1u << no) - 1), _mm512_permutex2var_ps(lo, odd, hi));
          }
        } else {
          for (int64_t w = 0; w < W; ++w) {
            const int64_t b = (w + g.pad_w) % sw;
            if (p.col_slot[b] >= 0) drow[p.col_slot[b] * plane + (w + g.pad_w) / sw] = src[w];
          }
        }
      }
  }
}

inline float horizontal_sum(__m512 v) {  // AVX-512F only (GCC 12's _mm512_reduce_add_ps warns)
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  __m128 s = _mm512_castps512_ps128(v);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// acc (8 channels x NV vectors) over every tap; w8: this block's packed weights (K, 8). The tile
// covers grid positions q0 + [0, 16 NV) of channels [0, rows) of y (Og, OH, OW) (+ bias): vector
// v's lane l is position q = q0 + 16v + l, i.e. (oh, ow) = (q / Wph, q % Wph), and goes to
// y[oh*OW + ow] = y[q - oh*(Wph - OW)] when ow < OW and q < Q. So each grid row a vector touches is
// one masked store of the whole vector, shifted by that row's oh*(Wph - OW) (lanes outside the
// row are masked off, and masked-off lanes never fault). Storing from the registers saved a pass
// over an (Og8, Qpad) grid buffer that held 7 % of a ResNet-20 step at 2 threads.
template <int NV>
inline void direct_conv_tile(const float* xq, const float* w8, const Conv2dGeometry& g, const DirectConvPlan& p,
                             int64_t q0, int64_t rows, const float* bias, float* y) {
  __m512 acc[8][NV];
  for (int r = 0; r < 8; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < g.in_per_group(); ++c)
    for (int64_t ki = 0; ki < g.kernel_h; ++ki) {
      const float* xr = xq + c * p.chan + p.row_off[ki];
      for (int64_t kj = 0; kj < g.kernel_w; ++kj, w8 += 8) {
        const float* xs = xr + p.col_off[kj];
        __m512 b[NV];
        for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(xs + 16 * v);
        for (int r = 0; r < 8; ++r) {
          const __m512 a = _mm512_set1_ps(w8[r]);
          for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
      }
    }
  if (bias)
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 br = _mm512_set1_ps(bias[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_add_ps(acc[r][v], br);
    }
  const int64_t Wph = p.Wph, OW = g.out_w, Q = p.Q, skip = Wph - OW, plane = g.out_plane();
  for (int v = 0; v < NV; ++v) {
    const int64_t qb = q0 + 16 * v;
    for (int64_t l = 0; l < 16 && qb + l < Q;) {
      const int64_t q = qb + l, oh = q / Wph, ow = q % Wph;
      const int64_t row_end = std::min<int64_t>(16, (oh + 1) * Wph - qb);  // lanes [l, row_end): row oh
      const int64_t valid_end = std::min(row_end, l + std::max<int64_t>(OW - ow, 0));
      if (valid_end > l) {
        const auto m = static_cast<__mmask16>(((1u << valid_end) - 1) & ~((1u << l) - 1));
        float* d = y + qb - oh * skip;
        for (int64_t r = 0; r < rows; ++r) _mm512_mask_storeu_ps(d + r * plane, m, acc[r][v]);
      }
      l = row_end;
    }
  }
}

// One image's group: x (C/G, H, W) -> y (O/G, OH, OW) [+ bias]. wpk: (Og8/8, K, 8) packed weights;
// xp (xp_elems): scratch, its padding zeroed (direct_pad_image).
inline void direct_conv_image(const float* x, const float* wpk, const float* bias, float* y, const Conv2dGeometry& g,
                              const DirectConvPlan& p, float* xp) {
  const int64_t Og = g.out_per_group(), K = g.col_rows(), plane = g.out_plane();
  direct_pad_image(x, g, p, xp);
  for (int64_t q0 = 0; q0 < p.Qpad;) {
    // 3 vectors per tile; a remainder of 4 as 2 + 2 (ResNet's 7x7 plane: 4 vectors), since a
    // 1-vector tile is bound by its 8 broadcasts per load.
    const int64_t left = (p.Qpad - q0) / 16;
    const int nv = left == 4 || left == 2 ? 2 : left >= 3 ? 3 : 1;
    for (int64_t ob = 0; ob < p.Og8; ob += 8) {
      const float* w8 = wpk + ob * K;
      const int64_t rows = std::min<int64_t>(8, Og - ob);
      const float* bo = bias ? bias + ob : nullptr;
      float* yo = y + ob * plane;
      if (nv == 3) direct_conv_tile<3>(xp + q0, w8, g, p, q0, rows, bo, yo);
      else if (nv == 2) direct_conv_tile<2>(xp + q0, w8, g, p, q0, rows, bo, yo);
      else direct_conv_tile<1>(xp + q0, w8, g, p, q0, rows, bo, yo);
    }
    q0 += 16 * nv;
  }
}

// The weight gradient on the same padded grid: dw[o, k] = sum over images and q of
// gyp[o, q] * xp[q + offset(k)], with gy copied onto the grid (zeros in the discarded columns, so
// the wrapped reads there add nothing). Tile: 8 channels x KT taps, vectors over q, summed across
// a block of images before one horizontal add per accumulator.
template <int KT>
inline void direct_dw_tile(const float* xpb, int64_t xstride, const float* gyb, int64_t gstride, int64_t nb,
                           const int64_t* off, int64_t Qpad, float* dwt, int64_t K, int64_t rows) {
  __m512 acc[8][KT];
  for (int r = 0; r < 8; ++r)
    for (int t = 0; t < KT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t n = 0; n < nb; ++n) {
    const float* x = xpb + n * xstride;
    const float* gq = gyb + n * gstride;
    for (int64_t q = 0; q < Qpad; q += 16) {
      __m512 xv[KT];
      for (int t = 0; t < KT; ++t) xv[t] = _mm512_loadu_ps(x + off[t] + q);
      for (int r = 0; r < 8; ++r) {
        const __m512 gv = _mm512_loadu_ps(gq + r * Qpad + q);
        for (int t = 0; t < KT; ++t) acc[r][t] = _mm512_fmadd_ps(gv, xv[t], acc[r][t]);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int t = 0; t < KT; ++t) dwt[r * K + t] += horizontal_sum(acc[r][t]);
}

#endif

// dw (O, C/G, kh, kw) += the weight gradient by the direct kernel (use_direct_weight_grad(g) is true).
// Images are split into one chunk per thread as in conv2d_backward; chunk 0 adds into dw, the
// others into private buffers added afterwards in chunk order (deterministic).
inline void direct_conv_weight_grad(const float* x, const float* gy, float* dw, const Conv2dGeometry& g) {
#if defined(__AVX512F__)
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), K = g.col_rows();
  const int64_t O = g.out_channels, OH = g.out_h, OW = g.out_w, kk = g.kernel_h * g.kernel_w;
  const DirectConvPlan p(g);
  // Images summed in registers before the horizontal adds: at least 8, and ~1024 positions
  // (fewer, to keep the block's copies in L2, measured slower: the sums cost more than the misses).
  const int64_t per_image = p.xp_elems + p.Og8 * p.Qpad;
  const int64_t kBlock = std::max<int64_t>(8, 1024 / p.Qpad);
  const int64_t chunks = batch_chunks(N), per_chunk = kBlock * per_image;
  Workspace<float> ws(chunks * per_chunk);
  Workspace<float> partial((chunks - 1) * O * K);
  if (chunks > 1) std::fill(partial.data(), partial.data() + (chunks - 1) * O * K, 0.0f);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t t = c0; t < c1; ++t) {
      float* xpb = ws.data() + t * per_chunk;
      float* gyb = xpb + kBlock * p.xp_elems;
      float* dw_t = t == 0 ? dw : partial.data() + (t - 1) * O * K;
      const int64_t n_end = (t + 1) * N / chunks;
      // Padding and the grid's discarded columns are written by no image: zero them once.
      std::fill(xpb, xpb + per_chunk, 0.0f);
      for (int64_t n0 = t * N / chunks; n0 < n_end; n0 += kBlock) {
        const int64_t nb = std::min(kBlock, n_end - n0);
        for (int64_t grp = 0; grp < G; ++grp) {
          for (int64_t i = 0; i < nb; ++i) {
            const int64_t n = n0 + i;
            direct_pad_image(x + (n * g.in_channels + grp * Cg) * g.in_plane(), g, p, xpb + i * p.xp_elems);
            float* gp = gyb + i * p.Og8 * p.Qpad;  // gy on the padded grid, (Og8, Qpad)
            for (int64_t o = 0; o < Og; ++o)
              for (int64_t oh = 0; oh < OH; ++oh)
                copy_row(gy + ((n * O + grp * Og + o) * OH + oh) * OW, gp + o * p.Qpad + oh * p.Wph, OW);
          }
          for (int64_t ob = 0; ob < Og; ob += 8)
            for (int64_t k0 = 0; k0 < K; k0 += 3) {
              int64_t off[3];
              const int kt = static_cast<int>(std::min<int64_t>(3, K - k0));
              for (int i = 0; i < kt; ++i) {
                const int64_t k = k0 + i, c = k / kk, ki = k % kk / g.kernel_w, kj = k % g.kernel_w;
                off[i] = c * p.chan + p.row_off[ki] + p.col_off[kj];
              }
              float* dst = dw_t + (grp * Og + ob) * K + k0;
              const float* gb = gyb + ob * p.Qpad;
              const int64_t rows = std::min<int64_t>(8, Og - ob), xs = p.xp_elems, gs = p.Og8 * p.Qpad;
              if (kt == 3) direct_dw_tile<3>(xpb, xs, gb, gs, nb, off, p.Qpad, dst, K, rows);
              else if (kt == 2) direct_dw_tile<2>(xpb, xs, gb, gs, nb, off, p.Qpad, dst, K, rows);
              else direct_dw_tile<1>(xpb, xs, gb, gs, nb, off, p.Qpad, dst, K, rows);
            }
        }
      }
    }
  });
  if (chunks > 1) {
    parallel_for(0, O * K, 4096, [&](int64_t b, int64_t e) {
      for (int64_t t = 1; t < chunks; ++t) {
        const float* pt = partial.data() + (t - 1) * O * K;
        for (int64_t i = b; i < e; ++i) dw[i] += pt[i];
      }
    });
  }
#else
  (void)x, (void)gy, (void)dw, (void)g;
#endif
}

// ---- Weight gradient with output channels along the vectors (stride 1, no dilation) -----------
// dw[o, (c, ki, kj)] = sum over images, oh, ow of gy[o, oh, ow] * xp[c, oh + ki, ow + kj].
// direct_dw_tile vectorises over positions: every 3 taps it streams 8 gy rows from L2, and it ran
// at ~0.6x the forward's GFLOP/s. Here a vector holds 8 output channels at 2 neighbouring columns
// (lane 2o + e: channel o, column ow + e), gy being rearranged so per image into gt; the input
// operand of tap (c, ki, kj) is then the pair x[c, oh + ki, ow + kj + {0, 1}] broadcast to every
// channel (one 64-bit broadcast per 8 channels x 2 columns of FMAs). A tile is V8 vectors (8 V8
// channels) x RT kernel rows (c, ki) x KW taps = 24 accumulators; it reads V8 gt vectors and
// RT*KW pairs per 2 columns (0.42-0.58 loads per FMA). A band of output rows (~128 positions) is
// run through every tile while it is in L1; the partial sums wait in dwt between bands and
// images. Rows of odd width get a zero gy column (its input reads are the padded row's last
// column, or the next row's first: multiplied by zero).
template <class T>
bool use_channel_weight_grad(const Conv2dGeometry& g) {
  if constexpr (!kDirectConv || !std::is_same_v<T, float>) {
    return false;
  } else {
    // Stride 1: kernel rows of width 3 or 5, at least 8 of them; fewer (a 1-channel stem) or
    // fewer than 8 output channels leave too little work per rearranged gy element (measured 0.4x
    // direct_dw_tile on the 1 -> 16 stem). Strides 2-4 (a kernel larger than 1x1): one pointer per
    // tap, at least 8 taps.
    if (g.out_per_group() < 8 || g.out_plane() == 0 || !DirectConvPlan(g).supported) return false;
    if (g.stride_h == 1 && g.stride_w == 1)
      return g.dilation_h == 1 && g.dilation_w == 1 && (g.kernel_w == 3 || g.kernel_w == 5) &&
             g.in_per_group() * g.kernel_h >= 8;
    return g.kernel_h * g.kernel_w > 1 && g.col_rows() >= 8;
  }
}

#if defined(__AVX512F__)
// r (16 x 16) transposed in registers: 4 stages, stage b swaps the elements whose row and column
// differ in bit b (each stage is one bit of the index swap (r, c) -> (c, r)).
inline void transpose16(__m512 (&r)[16]) {
  const __m512i lo[4] = {_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                         _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                         _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                         _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)};
  const __m512i hi[4] = {_mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31),
                         _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31),
                         _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31),
                         _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31)};
  for (int s = 0; s < 4; ++s) {
    const int b = 8 >> s;
    for (int i = 0; i < 16; ++i)
      if (!(i & b)) {
        const __m512 a = r[i], c = r[i + b];
        r[i] = _mm512_permutex2var_ps(a, lo[s], c);
        r[i + b] = _mm512_permutex2var_ps(a, hi[s], c);
      }
  }
}

// gy (rows, OH, OW) into gt, by 16 x 16 transposes; channel o's `plane` positions start at
// gy + o * cstride (cstride = plane for whole planes; one image row: W positions H * W apart). E = 2 (column pairs): pair j of row oh,
// channel o, column parity e at gt[(oh * steps + j) * 2 ld + (o / 8) * 16 + (o % 8) * 2 + e],
// steps = ceil(OW / 2). E = 1: column ow at gt[(oh * OW + ow) * ld + o]. Writes the entries of real
// columns; the rest (channels [rows, ld), an odd width's pair column) stays as zeroed.
template <int E>
inline void channels_of_positions(const float* gy, int64_t rows, int64_t OW, int64_t plane, int64_t cstride, int64_t ld,
                                  float* gt) {
  const int64_t steps = (OW + E - 1) / E;
  const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i dup_hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  for (int64_t o0 = 0; o0 < rows; o0 += 16) {
    const int64_t no = std::min<int64_t>(16, rows - o0);
    const auto even = static_cast<__mmask16>(0x5555), odd = static_cast<__mmask16>(0xAAAA);
    const auto lo_rows = static_cast<__mmask16>(no >= 8 ? 0xFFFF : (1u << (2 * no)) - 1);
    const auto hi_rows = static_cast<__mmask16>(no >= 16 ? 0xFFFF : no > 8 ? (1u << (2 * (no - 8))) - 1 : 0);
    for (int64_t s0 = 0; s0 < plane; s0 += 16) {
      const int64_t ns = std::min<int64_t>(16, plane - s0);
      const auto m = static_cast<__mmask16>(ns >= 16 ? 0xFFFF : (1u << ns) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < no ? _mm512_maskz_loadu_ps(m, gy + (o0 + i) * cstride + s0) : _mm512_setzero_ps();
      transpose16(r);  // r[i]: the 16 channels at position s0 + i (zeros past `rows`)
      for (int64_t i = 0; i < ns; ++i) {
        if constexpr (E == 1) {
          _mm512_storeu_ps(gt + (s0 + i) * ld + o0, r[i]);
        } else {
          const int64_t oh = (s0 + i) / OW, ow = (s0 + i) % OW;
          float* d = gt + (oh * steps + ow / 2) * 2 * ld + o0 * 2;
          const __mmask16 e = ow % 2 ? odd : even;
          _mm512_mask_storeu_ps(d, e & lo_rows, _mm512_permutexvar_ps(dup_lo, r[i]));
          if (hi_rows) _mm512_mask_storeu_ps(d + 16, e & hi_rows, _mm512_permutexvar_ps(dup_hi, r[i]));
        }
      }
    }
  }
}

// dwt[(r*KW + j) * ldp + 16v + lane] += sum over nrows output rows (input rows xrow apart) and
// `steps` steps of E columns of gt[step * ldp + 16v + lane] * the input at x[r] + E*step + j
// (+ lane % 2 when E = 2), for pointers r < rows_valid (the others repeat a valid one; their sums
// are dropped). A pointer is a kernel row (c, ki) with its KW taps side by side (stride 1), or one
// tap (KW = 1: any stride, the offset from the phase plan).
template <int V, int RT, int KW, int E>
inline void channel_dw_tile(const float* gt, int64_t ldp, const float* const* xr, int64_t xrow, int64_t steps,
                            int64_t nrows, float* dwt, int64_t rows_valid) {
  constexpr int NT = RT * KW;
  const int64_t nt = rows_valid * KW;
  __m512 acc[V][NT];
  for (int v = 0; v < V; ++v)
    for (int t = 0; t < NT; ++t) acc[v][t] = t < nt ? _mm512_loadu_ps(dwt + t * ldp + 16 * v) : _mm512_setzero_ps();
  const float* x[RT];
  for (int i = 0; i < RT; ++i) x[i] = xr[i];
  for (int64_t row = 0; row < nrows; ++row) {
    for (int64_t s = 0; s < steps; ++s) {
      __m512 gv[V];
      for (int v = 0; v < V; ++v) gv[v] = _mm512_loadu_ps(gt + s * ldp + 16 * v);
      for (int i = 0; i < RT; ++i)
        for (int j = 0; j < KW; ++j) {
          __m512 b;
          if constexpr (E == 2) {
            double pair;
            std::memcpy(&pair, x[i] + 2 * s + j, sizeof pair);
            b = _mm512_castpd_ps(_mm512_set1_pd(pair));
          } else {
            b = _mm512_set1_ps(x[i][s + j]);
          }
          for (int v = 0; v < V; ++v) acc[v][i * KW + j] = _mm512_fmadd_ps(gv[v], b, acc[v][i * KW + j]);
        }
    }
    gt += steps * ldp;
    for (int i = 0; i < RT; ++i) x[i] += xrow;
  }
  for (int v = 0; v < V; ++v)
    for (int t = 0; t < NT; ++t)
      if (t < nt) _mm512_storeu_ps(dwt + t * ldp + 16 * v, acc[v][t]);
}

// Every pointer's tiles of V vectors (gt/dwt lanes [lane0, lane0 + 16 V)) over one band of output
// rows [oh0, oh0 + nrows). KW > 1: pointers are kernel rows (stride 1, no dilation, kernel width
// KW); KW = 1: pointers are taps.
template <int V, int KW, int E>
inline void channel_dw_band(const float* xp, const float* gt, int64_t ldp, const Conv2dGeometry& g,
                            const DirectConvPlan& p, int64_t oh0, int64_t nrows, int64_t lane0, float* dwt) {
  constexpr int RT = std::max(1, 24 / (V * KW));
  const int64_t kk = g.kernel_h * g.kernel_w, R = KW == 1 ? g.col_rows() : g.in_per_group() * g.kernel_h;
  const int64_t steps = (g.out_w + E - 1) / E;
  for (int64_t r0 = 0; r0 < R; r0 += RT) {
    const float* xr[RT];
    for (int i = 0; i < RT; ++i) {
      const int64_t r = r0 + i < R ? r0 + i : r0;
      if constexpr (KW == 1)
        xr[i] = xp + r / kk * p.chan + p.row_off[r % kk / g.kernel_w] + p.col_off[r % g.kernel_w] + oh0 * p.Wph;
      else
        xr[i] = xp + r / g.kernel_h * p.chan + p.row_off[r % g.kernel_h] + oh0 * p.Wph;
    }
    channel_dw_tile<V, RT, KW, E>(gt + oh0 * steps * ldp + lane0, ldp, xr, p.Wph, steps, nrows,
                                  dwt + r0 * KW * ldp + lane0, std::min<int64_t>(RT, R - r0));
  }
}

// One band through every channel block: E = 2 in blocks of 32 and 16 channels (4 and 2 vectors),
// E = 1 in blocks of 64 and 32 (ld rounded up to 32).
template <int E>
inline void channel_dw_bands(const float* xp, const float* gt, int64_t ld, const Conv2dGeometry& g,
                             const DirectConvPlan& p, int64_t oh0, int64_t nrows, float* dwt) {
  const bool rows = g.stride_h == 1 && g.stride_w == 1;  // (then no dilation: use_channel_weight_grad)
  const int64_t ldp = E * ld;
  for (int64_t lane0 = 0; lane0 < ldp;) {
    const bool wide = ldp - lane0 >= 64;  // 4 vectors, else 2
    if (wide) {
      if (rows && g.kernel_w == 3) channel_dw_band<4, 3, E>(xp, gt, ldp, g, p, oh0, nrows, lane0, dwt);
      else if (E == 2 && rows && g.kernel_w == 5) channel_dw_band<4, 5, 2>(xp, gt, ldp, g, p, oh0, nrows, lane0, dwt);
      else channel_dw_band<4, 1, E>(xp, gt, ldp, g, p, oh0, nrows, lane0, dwt);
    } else {
      if (rows && g.kernel_w == 3) channel_dw_band<2, 3, E>(xp, gt, ldp, g, p, oh0, nrows, lane0, dwt);
      else if (E == 2 && rows && g.kernel_w == 5) channel_dw_band<2, 5, 2>(xp, gt, ldp, g, p, oh0, nrows, lane0, dwt);
      else channel_dw_band<2, 1, E>(xp, gt, ldp, g, p, oh0, nrows, lane0, dwt);
    }
    lane0 += wide ? 64 : 32;
  }
}
#endif

// dw (O, C/G, kh, kw) += the weight gradient (use_channel_weight_grad(g) is true). Images are
// split into one chunk per thread; each chunk sums into its own dwt, and the chunks' sums are
// added into dw afterwards in chunk order (deterministic). With >= 32 output channels a step is
// one column (E = 1: 4 or 2 vectors of 16 channels, no pair column wasted on odd widths; measured
// 3-5 % faster than pairs on 32 and 64 channels), with fewer a column pair (E = 2: 16 channels
// fill 2 vectors).
inline void channel_conv_weight_grad(const float* x, const float* gy, float* dw, const Conv2dGeometry& g) {
#if defined(__AVX512F__)
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), K = g.col_rows();
  const int64_t O = g.out_channels, OH = g.out_h, OW = g.out_w, plane = g.out_plane();
  const DirectConvPlan p(g);
  const int E = Og >= 32 ? 1 : 2;
  const int64_t ld = E == 1 ? (Og + 31) / 32 * 32 : (Og + 15) / 16 * 16, ldp = E * ld;
  const int64_t gt_elems = OH * ((OW + E - 1) / E) * ldp, dwt_elems = G * K * ldp;
  const int64_t chunks = batch_chunks(N), per_chunk = p.xp_elems + gt_elems + dwt_elems;
  const int64_t band = std::max<int64_t>(1, 128 / OW);  // output rows whose gt and input rows stay in L1
  Workspace<float> ws(chunks * per_chunk);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t t = c0; t < c1; ++t) {
      float* xp = ws.data() + t * per_chunk;
      float* gt = xp + p.xp_elems;
      float* dwt = gt + gt_elems;
      std::fill(xp, xp + per_chunk, 0.0f);  // padding, gt's unused entries, the sums
      for (int64_t n = t * N / chunks; n < (t + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp) {
          direct_pad_image(x + (n * g.in_channels + grp * Cg) * g.in_plane(), g, p, xp);
          const float* gyg = gy + (n * O + grp * Og) * plane;
          float* dwg = dwt + grp * K * ldp;
          if (E == 1) channels_of_positions<1>(gyg, Og, OW, plane, plane, ld, gt);
          else channels_of_positions<2>(gyg, Og, OW, plane, plane, ld, gt);
          for (int64_t oh0 = 0; oh0 < OH; oh0 += band) {
            const int64_t nrows = std::min(band, OH - oh0);
            if (E == 1) channel_dw_bands<1>(xp, gt, ld, g, p, oh0, nrows, dwg);
            else channel_dw_bands<2>(xp, gt, ld, g, p, oh0, nrows, dwg);
          }
        }
    }
  });
  // dw[grp*Og + o, k] += the chunks' sums (in chunk order) of o's lanes of dwt (E of them)
  parallel_for(0, O, 8, [&](int64_t o0, int64_t o1) {
    for (int64_t oc = o0; oc < o1; ++oc) {
      const int64_t grp = oc / Og, o = oc % Og, lane = E == 1 ? o : o / 8 * 16 + o % 8 * 2;
      for (int64_t k = 0; k < K; ++k) {
        float s = dw[oc * K + k];
        for (int64_t t = 0; t < chunks; ++t) {
          const float* d = ws.data() + t * per_chunk + p.xp_elems + gt_elems + (grp * K + k) * ldp + lane;
          s += E == 1 ? d[0] : d[0] + d[1];
        }
        dw[oc * K + k] = s;
      }
    }
  });
#else
  (void)x, (void)gy, (void)dw, (void)g;
#endif
}

// ---- Forward with output channels along the vectors ---------------------------------------------
// direct_conv_tile computes the whole padded grid (on ResNet's 7x7 planes 63 positions, Qpad 64, for
// 49 outputs; LeNet's unpadded 5x5 on 14x14: 144 for 100) from 8 broadcast weights and 3 input
// vectors per tap. Here a vector holds 16 output channels of one output position and a tile is OV
// vectors x 24/OV positions (4 x 6 or 2 x 12): per tap OV weight vectors (wt (K, Og) packed per
// call) and one broadcast input per position at the tap's offset, so only real positions are
// computed and a tap costs 10 or 14 loads per 24 FMAs instead of 11. Results go position-major into
// yt (plane, Og) and are transposed into y with the bias. Taken when output channels come in 64s,
// or in 32s where the grid wastes >= 20 % (measured, 1 thread: the 64-channel 3x3 layer on 32x32
// of bench/conv +8 %, ResNet's 7x7 stage +20 %, LeNet's step +6 %; the 2-vector tile on ResNet's
// 32-channel 14x14 convs, 7-14 % waste: -3 % to +2 %, not taken).
template <class T>
bool use_channel_forward(const Conv2dGeometry& g) {
  if constexpr (!kDirectConv || !std::is_same_v<T, float>) {
    return false;
  } else {
    const int64_t Og = g.out_per_group();
    return use_direct_conv<T>(g) && (Og % 64 == 0 || (Og % 32 == 0 && 5 * DirectConvPlan(g).Qpad >= 6 * g.out_plane()));
  }
}

#if defined(__AVX512F__)
// yt[j * ld + 16v + lane] = sum over taps k of wt[k * ld + 16v + lane] * xb[j][toff[k]], positions
// j < np_valid (the others repeat a valid position; not stored); with `accumulate`, added to yt.
template <int OV, int NP>
inline void channel_conv_tile(const float* const* xb_in, const int64_t* toff, int64_t K, const float* wt, int64_t ld,
                              float* yt, int64_t np_valid, bool accumulate = false) {
  __m512 acc[OV][NP];
  for (int v = 0; v < OV; ++v)
    for (int j = 0; j < NP; ++j)
      acc[v][j] = accumulate && j < np_valid ? _mm512_loadu_ps(yt + j * ld + 16 * v) : _mm512_setzero_ps();
  const float* xb[NP];
  for (int j = 0; j < NP; ++j) xb[j] = xb_in[j];
  for (int64_t k = 0; k < K; ++k) {
    const int64_t off = toff[k];
    __m512 wv[OV];
    for (int v = 0; v < OV; ++v) wv[v] = _mm512_loadu_ps(wt + k * ld + 16 * v);
#pragma GCC unroll 24  // all of it: the accumulators must stay in registers (NP = 24 is past GCC's default)
    for (int j = 0; j < NP; ++j) {
      const __m512 b = _mm512_set1_ps(xb[j][off]);
      for (int v = 0; v < OV; ++v) acc[v][j] = _mm512_fmadd_ps(wv[v], b, acc[v][j]);
    }
  }
  for (int j = 0; j < NP; ++j)
    if (j < np_valid)
      for (int v = 0; v < OV; ++v) _mm512_storeu_ps(yt + j * ld + 16 * v, acc[v][j]);
}

// y (O, plane) = yt (plane, O) transposed, plus the bias (may be null), by 16 x 16 blocks; O is a
// multiple of 16.
inline void planes_of_positions(const float* yt, int64_t O, int64_t plane, const float* bias, float* y) {
  for (int64_t o0 = 0; o0 < O; o0 += 16)
    for (int64_t s0 = 0; s0 < plane; s0 += 16) {
      const int64_t ns = std::min<int64_t>(16, plane - s0);
      const auto m = static_cast<__mmask16>(ns >= 16 ? 0xFFFF : (1u << ns) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < ns ? _mm512_loadu_ps(yt + (s0 + i) * O + o0) : _mm512_setzero_ps();
      transpose16(r);  // r[i]: channel o0 + i at positions s0 .. s0 + 15
      for (int i = 0; i < 16; ++i) {
        const __m512 b = _mm512_set1_ps(bias ? bias[o0 + i] : 0.0f);
        _mm512_mask_storeu_ps(y + (o0 + i) * plane + s0, m, _mm512_add_ps(r[i], b));
      }
    }
}

// Channels [ob, ob + 16 OV) of one image's group at every output position, in tiles of 24 / OV
// positions (xp: the padded image; wt, yt: at channel ob, rows ld apart).
template <int OV>
inline void channel_conv_block(const float* xp, const Conv2dGeometry& g, const DirectConvPlan& p, const int64_t* toff,
                               const float* wt, int64_t ld, float* yt) {
  constexpr int NP = 24 / OV;
  const int64_t plane = g.out_plane(), OW = g.out_w, K = g.col_rows();
  for (int64_t p0 = 0; p0 < plane; p0 += NP) {
    const float* xb[NP];
    for (int j = 0; j < NP; ++j) {
      const int64_t pos = std::min(p0 + j, plane - 1);
      xb[j] = xp + pos / OW * p.Wph + pos % OW;
    }
    channel_conv_tile<OV, NP>(xb, toff, K, wt, ld, yt + p0 * ld, std::min<int64_t>(NP, plane - p0));
  }
}
#endif

// conv2d_forward by channel vectors (use_channel_forward(g) is true).
inline void channel_conv_forward(const float* x, const float* w, const float* bias, float* y, const Conv2dGeometry& g) {
#if defined(__AVX512F__)
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), K = g.col_rows();
  const int64_t plane = g.out_plane(), kk = g.kernel_h * g.kernel_w;
  const DirectConvPlan p(g);
  // wt (G, K, Og): the weights of each tap side by side over the output channels.
  Workspace<float> wt(G * K * Og);
  for (int64_t grp = 0; grp < G; ++grp)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t k = 0; k < K; ++k) wt.data()[(grp * K + k) * Og + o] = w[(grp * Og + o) * K + k];
  Workspace<int64_t> toff(K);  // tap k = (c, ki, kj): its input's offset from the position's
  for (int64_t k = 0; k < K; ++k)
    toff.data()[k] = k / kk * p.chan + p.row_off[k % kk / g.kernel_w] + p.col_off[k % g.kernel_w];
  const int64_t chunks = batch_chunks(N), per_chunk = p.xp_elems + plane * Og;
  Workspace<float> ws(chunks * per_chunk);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t t = c0; t < c1; ++t) {
      float* xp = ws.data() + t * per_chunk;
      float* yt = xp + p.xp_elems;
      std::fill(xp, xp + p.xp_elems, 0.0f);  // the padding: direct_pad_image writes only the image
      for (int64_t n = t * N / chunks; n < (t + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp) {
          direct_pad_image(x + (n * g.in_channels + grp * Cg) * g.in_plane(), g, p, xp);
          for (int64_t ob = 0; ob < Og;) {  // 64 channels a tile, the last 32 in a 2-vector tile
            const float* wg = wt.data() + grp * K * Og + ob;
            if (Og - ob >= 64) channel_conv_block<4>(xp, g, p, toff.data(), wg, Og, yt + ob);
            else channel_conv_block<2>(xp, g, p, toff.data(), wg, Og, yt + ob);
            ob += Og - ob >= 64 ? 64 : 32;
          }
          planes_of_positions(yt, Og, plane, bias ? bias + grp * Og : nullptr,
                              y + (n * g.out_channels + grp * Og) * plane);
        }
    }
  });
#else
  (void)x, (void)w, (void)bias, (void)y, (void)g;
#endif
}

// ---- Winograd F(4x4, 3x3) (float, AVX-512, 3x3 kernels, stride 1, no dilation) -----------------
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). A 4x4 output tile of one
// channel pair is A^T [(G w G^T) .* (B^T d B)] A, d the tile's 6x6 input patch: 36 multiplications
// where the direct sum takes 144, and the elementwise products over input channels are 36
// independent products of (tiles x C) by (C x O) matrices. Per image and group:
//   1. the padded image goes channels-last, xc (Hx, Wx, Cg) by 16 x 16 transposes, so a patch
//      entry of 16 channels is one vector;
//   2. input transform, kWinogradTiles tiles at a time: U[e][t][c] = (B^T d_t B)[e], e = 6 i + j;
//   3. 36 products M[e][t][o] = sum over c of U[e][t][c] Wt[e][c][o], each by channel_conv_tile (the
//      forward's microkernel with tiles for positions and input channels for taps);
//   4. output transform A^T M A of each tile into yt (plane, Og), its valid positions only;
//   5. y = yt transposed, plus the bias (planes_of_positions).
// Wt[e][c][o] = (G w[o][c] G^T)[e] is made once per call. Interpolation points 0, +-1, +-2 and
// infinity: in float the outputs differ from the direct sum by rounding of ~1e-6 of their scale
// (bounded in tests/ops/test_conv.cpp); set_conv_winograd(false) or DL_CONV_WINOGRAD=0 in the
// environment keeps these shapes on the direct kernels.
inline std::atomic<bool>& conv_winograd_flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("DL_CONV_WINOGRAD");
    return !(e && std::string_view(e) == "0");
  }()};
  return on;
}
}  // namespace detail

// Whether 3x3 stride-1 float convolutions (forward, and the input gradient: a forward convolution
// of the output gradient) may run as Winograd F(4x4, 3x3) (default: yes).
inline void set_conv_winograd(bool on) { detail::conv_winograd_flag() = on; }
inline bool conv_winograd() { return detail::conv_winograd_flag(); }

namespace detail {
inline constexpr int64_t kWinogradTiles = 24;  // tiles per transform block: 1, 2 or 4 microtiles

// 3x3, stride 1, no dilation, channels per group in 16s (vectors of the transforms) and >= 32 of
// each, at least one whole output tile. Measured against the direct kernels, forward, 1 thread,
// batch 32: 64 -> 64 channels on 32x32 2.07x, 14x14 1.55x, 7x7 1.15x; 32 -> 32 on 28x28 1.60x,
// 14x14 1.22x; 128 -> 128 on 7x7 1.26x. With 16 channels the products (16 taps) are too short for
// the transforms around them: 0.84-0.91x on 28x28 to 56x56, so those stay direct.
template <class T>
bool use_winograd(const Conv2dGeometry& g) {
  if constexpr (!kDirectConv || !std::is_same_v<T, float>) {
    return false;
  } else {
    const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
    return conv_winograd() && g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1 &&
           g.dilation_h == 1 && g.dilation_w == 1 && Cg % 16 == 0 && Og % 16 == 0 && Cg >= 32 && Og >= 32 &&
           g.out_h >= 4 && g.out_w >= 4;
  }
}

// G (6 x 3) applied to 3 values: the weight transform along one axis.
inline void winograd_weight6(const float (&w)[3], float (&u)[6]) {
  constexpr float s6 = 1.0f / 6, s12 = 1.0f / 12, s24 = 1.0f / 24;
  const float a = w[0] * s24 + w[2] * s6, b = w[1] * s12;
  u[0] = w[0] * 0.25f;
  u[1] = -(w[0] + w[1] + w[2]) * s6;
  u[2] = -(w[0] - w[1] + w[2]) * s6;
  u[3] = a + b;
  u[4] = a - b;
  u[5] = w[2];
}

// G^T (3 x 6) applied to 6 values: the weight gradient's last transform along one axis.
inline void winograd_weight_grad3(const float (&u)[6], float (&k)[3]) {
  constexpr float s6 = 1.0f / 6, s12 = 1.0f / 12, s24 = 1.0f / 24;
  const float a = u[1] + u[2], b = u[3] + u[4];
  k[0] = u[0] * 0.25f - a * s6 + b * s24;
  k[1] = (u[2] - u[1]) * s6 + (u[3] - u[4]) * s12;
  k[2] = (b - a) * s6 + u[5];
}

#if defined(__AVX512F__)
// B^T (6 x 6) applied to 6 vectors: the input transform along one axis.
inline void winograd_input6(const __m512 (&d)[6], __m512 (&t)[6]) {
  const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  t[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[2], _mm512_mul_ps(four, d[0])), d[4]);
  t[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
  t[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
  t[3] = _mm512_fmadd_ps(two, _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
  t[4] = _mm512_fnmadd_ps(two, _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
  t[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[3], _mm512_mul_ps(four, d[1])), d[5]);
}

// A^T (4 x 6) applied to 6 vectors: the output transform along one axis.
inline void winograd_output6(const __m512 (&m)[6], __m512 (&y)[4]) {
  const __m512 a = _mm512_add_ps(m[1], m[2]), b = _mm512_sub_ps(m[1], m[2]);
  const __m512 c = _mm512_add_ps(m[3], m[4]), d = _mm512_sub_ps(m[3], m[4]);
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
  y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, b);
  y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), c, a);
  y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d, b), m[5]);
}

// One image's group x (Cg, H, W) into xc (Hx, Wx, Cg) at row h + pad_h, column w + pad_w. Only
// the image's positions are written: xc is zeroed once before its first image.
inline void winograd_channels_last(const float* x, const Conv2dGeometry& g, int64_t Wx, float* xc) {
  const int64_t Cg = g.in_per_group(), H = g.in_h, W = g.in_w;
  // 16 channels at a time down the image (16 read streams; all Cg channels of a row at once would
  // be Cg streams 4 KiB apart on 32x32 planes: 18 % slower), one row per call.
  for (int64_t c0 = 0; c0 < Cg; c0 += 16)
    for (int64_t h = 0; h < H; ++h)
      channels_of_positions<1>(x + c0 * H * W + h * W, 16, W, W, H * W, Cg, xc + ((h + g.pad_h) * Wx + g.pad_w) * Cg + c0);
}

// U[e][t][c] = (B^T d B)[e] for tiles t0 .. t0 + tb - 1 (U's rows t < kWinogradTiles): d is tile
// t0 + t's 6x6 patch of xc (Hx, Wx, Cg), tiles TW to a row.
inline void winograd_input_tiles(const float* xc, int64_t Wx, int64_t Cg, int64_t TW, int64_t t0, int64_t tb, float* U) {
  for (int64_t t = 0; t < tb; ++t) {
    const float* d0 = xc + ((t0 + t) / TW * 4 * Wx + (t0 + t) % TW * 4) * Cg;
    for (int64_t c = 0; c < Cg; c += 16) {
      __m512 tmp[6][6];
      for (int s = 0; s < 6; ++s) {
        __m512 d[6], col[6];
        for (int r = 0; r < 6; ++r) d[r] = _mm512_loadu_ps(d0 + (r * Wx + s) * Cg + c);
        winograd_input6(d, col);
        for (int i = 0; i < 6; ++i) tmp[i][s] = col[i];
      }
      for (int i = 0; i < 6; ++i) {
        __m512 row[6];
        winograd_input6(tmp[i], row);
        for (int j = 0; j < 6; ++j) _mm512_storeu_ps(U + ((6 * i + j) * kWinogradTiles + t) * Cg + c, row[j]);
      }
    }
  }
}

// One Winograd point's product by channel_conv_tile: for rows p < count, row(p)[o] (+)= sum over
// taps k < K of wt[k * Og + o] * at(p)[toff[k]], o < Og (in 16s), in tiles of 16 ov output channels
// x 24 / ov rows (ov = 4, 2, 1).
template <class At, class Row>
inline void winograd_products(int64_t Og, int64_t count, At at, const int64_t* toff, int64_t K, const float* wt, Row row,
                              bool accumulate) {
  for (int64_t ob = 0; ob < Og;) {
    const int ov = Og - ob >= 64 ? 4 : Og - ob >= 32 ? 2 : 1;
    const int64_t np = 24 / ov;
    for (int64_t p0 = 0; p0 < count; p0 += np) {
      const float* xb[24];
      for (int64_t j = 0; j < np; ++j) xb[j] = at(std::min(p0 + j, count - 1));
      const int64_t nv = std::min(np, count - p0);
      if (ov == 4) channel_conv_tile<4, 6>(xb, toff, K, wt + ob, Og, row(p0) + ob, nv, accumulate);
      else if (ov == 2) channel_conv_tile<2, 12>(xb, toff, K, wt + ob, Og, row(p0) + ob, nv, accumulate);
      else channel_conv_tile<1, 24>(xb, toff, K, wt + ob, Og, row(p0) + ob, nv, accumulate);
    }
    ob += 16 * ov;
  }
}

// A (6 x 4) applied to 4 vectors: an output gradient tile's transform along one axis (the weight
// gradient's; A^T's transpose).
inline void winograd_grad6(const __m512 (&q)[4], __m512 (&z)[6]) {
  const __m512 a = _mm512_add_ps(q[0], q[2]), b = _mm512_add_ps(q[1], q[3]);
  const __m512 c = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), q[2], q[0]), d = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), q[3], q[1]);
  z[0] = q[0];
  z[1] = _mm512_add_ps(a, b);
  z[2] = _mm512_sub_ps(a, b);
  z[3] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, c);
  z[4] = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), d, c);
  z[5] = q[3];
}

#endif

// conv2d_forward by Winograd F(4x4, 3x3) (use_winograd(g) is true).
inline void winograd_conv_forward(const float* x, const float* w, const float* bias, float* y, const Conv2dGeometry& g) {
#if defined(__AVX512F__)
  constexpr int64_t Tb = kWinogradTiles;
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t OH = g.out_h, OW = g.out_w, plane = g.out_plane();
  const int64_t TH = (OH + 3) / 4, TW = (OW + 3) / 4, tiles = TH * TW, Hx = 4 * TH + 2, Wx = 4 * TW + 2;
  // Wt (G, 36, Cg, Og).
  Workspace<float> wt(G * 36 * Cg * Og);
  parallel_for(0, G * Cg, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t grp = i / Cg, c = i % Cg;
      // 16 output channels at a time into ub, then 36 whole lines of Wt: the 36 rows are 4 KiB
      // multiples apart, so element-wise stores would keep evicting each other's lines from L1.
      for (int64_t o0 = 0; o0 < Og; o0 += 16) {
        float ub[36][16];
        for (int64_t o = 0; o < 16; ++o) {
          const float* k = w + ((grp * Og + o0 + o) * Cg + c) * 9;
          float cols[3][6], u[6][6];  // cols[v]: G applied to kernel column v; u = G k G^T
          for (int v = 0; v < 3; ++v) winograd_weight6({k[v], k[3 + v], k[6 + v]}, cols[v]);
          for (int r = 0; r < 6; ++r) winograd_weight6({cols[0][r], cols[1][r], cols[2][r]}, u[r]);
          for (int e = 0; e < 36; ++e) ub[e][o] = u[e / 6][e % 6];
        }
        for (int e = 0; e < 36; ++e)
          std::copy(ub[e], ub[e] + 16, wt.data() + ((grp * 36 + e) * Cg + c) * Og + o0);
      }
    }
  });
  Workspace<int64_t> toff(Cg);  // channel c of a tile's row of U: the microkernel's tap offsets
  for (int64_t c = 0; c < Cg; ++c) toff.data()[c] = c;
  const int64_t xc_elems = Hx * Wx * Cg, per_chunk = xc_elems + 36 * Tb * (Cg + Og) + plane * Og;
  const int64_t chunks = batch_chunks(N);
  Workspace<float> ws(chunks * per_chunk);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      float* xc = ws.data() + ch * per_chunk;
      float* U = xc + xc_elems;
      float* M = U + 36 * Tb * Cg;
      float* yt = M + 36 * Tb * Og;
      std::fill(xc, xc + xc_elems, 0.0f);  // the padding: winograd_channels_last writes only the image
      for (int64_t n = ch * N / chunks; n < (ch + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp) {
          winograd_channels_last(x + (n * g.in_channels + grp * Cg) * g.in_plane(), g, Wx, xc);
          for (int64_t t0 = 0; t0 < tiles; t0 += Tb) {
            const int64_t tb = std::min(Tb, tiles - t0);
            winograd_input_tiles(xc, Wx, Cg, TW, t0, tb, U);
            for (int64_t e = 0; e < 36; ++e)  // M[e] (tiles, Og) = U[e] (tiles, Cg) Wt[e] (Cg, Og)
              winograd_products(
                  Og, tb, [&](int64_t t) { return U + (e * Tb + t) * Cg; }, toff.data(), Cg,
                  wt.data() + (grp * 36 + e) * Cg * Og, [&](int64_t t) { return M + (e * Tb + t) * Og; }, false);
            for (int64_t t = 0; t < tb; ++t) {  // output transform
              const int64_t oh0 = (t0 + t) / TW * 4, ow0 = (t0 + t) % TW * 4;
              const int64_t nr = std::min<int64_t>(4, OH - oh0), nc = std::min<int64_t>(4, OW - ow0);
              for (int64_t o = 0; o < Og; o += 16) {
                __m512 tmp[4][6];
                for (int j = 0; j < 6; ++j) {
                  __m512 m[6], col[4];
                  for (int i = 0; i < 6; ++i) m[i] = _mm512_loadu_ps(M + ((6 * i + j) * Tb + t) * Og + o);
                  winograd_output6(m, col);
                  for (int r = 0; r < 4; ++r) tmp[r][j] = col[r];
                }
                for (int64_t r = 0; r < nr; ++r) {
                  __m512 out[4];
                  winograd_output6(tmp[r], out);
                  for (int64_t c = 0; c < nc; ++c) _mm512_storeu_ps(yt + ((oh0 + r) * OW + ow0 + c) * Og + o, out[c]);
                }
              }
            }
          }
          planes_of_positions(yt, Og, plane, bias ? bias + grp * Og : nullptr,
                              y + (n * g.out_channels + grp * Og) * plane);
        }
    }
  });
#else
  (void)x, (void)w, (void)bias, (void)y, (void)g;
#endif
}

// Weight gradient by Winograd F(4x4, 3x3) (use_winograd(g) is true). The forward's tile
// A^T [(G w G^T) .* (B^T d B)] A is bilinear in w and d, so
//   dw = G^T [ sum over images and tiles of (B^T d B) .* (A gy A^T) ] G
// with gy the tile's 4x4 output gradient (zeros past the plane): the forward's input transform, the
// gradient's 4x4 -> 6x6 transform A (.) A^T, and 36 products dW[e] (Cg, Og) += U[e]^T Z[e] over
// the tiles (channel_conv_tile with input channels for positions and tiles for taps), each chunk
// of images into its own dW, summed in chunk order (deterministic); G^T (.) G once at the end.
inline void winograd_conv_weight_grad(const float* x, const float* gy, float* dw, const Conv2dGeometry& g) {
#if defined(__AVX512F__)
  constexpr int64_t Tb = kWinogradTiles;
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t OH = g.out_h, OW = g.out_w, plane = g.out_plane();
  const int64_t TH = (OH + 3) / 4, TW = (OW + 3) / 4, tiles = TH * TW, Hx = 4 * TH + 2, Wx = 4 * TW + 2;
  Workspace<int64_t> toff(Tb);  // tile k of U's rows: the microkernel's tap offsets
  for (int64_t k = 0; k < Tb; ++k) toff.data()[k] = k * Cg;
  const int64_t xc_elems = Hx * Wx * Cg, dw_elems = G * 36 * Cg * Og;
  const int64_t per_chunk = dw_elems + xc_elems + plane * Og + 36 * Tb * (Cg + Og);
  const int64_t chunks = batch_chunks(N);
  Workspace<float> ws(chunks * per_chunk);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      float* dW = ws.data() + ch * per_chunk;  // (G, 36, Cg, Og)
      float* xc = dW + dw_elems;
      float* gt = xc + xc_elems;
      float* U = gt + plane * Og;
      float* Z = U + 36 * Tb * Cg;
      std::fill(dW, dW + dw_elems + xc_elems, 0.0f);  // xc's padding: only the image is written
      for (int64_t n = ch * N / chunks; n < (ch + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp) {
          winograd_channels_last(x + (n * g.in_channels + grp * Cg) * g.in_plane(), g, Wx, xc);
          channels_of_positions<1>(gy + (n * g.out_channels + grp * Og) * plane, Og, OW, plane, plane, Og, gt);
          for (int64_t t0 = 0; t0 < tiles; t0 += Tb) {
            const int64_t tb = std::min(Tb, tiles - t0);
            winograd_input_tiles(xc, Wx, Cg, TW, t0, tb, U);
            for (int64_t t = 0; t < tb; ++t) {  // Z[e][t][o] = (A gy_t A^T)[e]
              const int64_t oh0 = (t0 + t) / TW * 4, ow0 = (t0 + t) % TW * 4;
              const int64_t nr = std::min<int64_t>(4, OH - oh0), nc = std::min<int64_t>(4, OW - ow0);
              for (int64_t o = 0; o < Og; o += 16) {
                __m512 tmp[6][4];
                for (int c = 0; c < 4; ++c) {
                  __m512 q[4], col[6];
                  for (int r = 0; r < 4; ++r)
                    q[r] = r < nr && c < nc ? _mm512_loadu_ps(gt + ((oh0 + r) * OW + ow0 + c) * Og + o) : _mm512_setzero_ps();
                  winograd_grad6(q, col);
                  for (int i = 0; i < 6; ++i) tmp[i][c] = col[i];
                }
                for (int i = 0; i < 6; ++i) {
                  __m512 row[6];
                  winograd_grad6(tmp[i], row);
                  for (int j = 0; j < 6; ++j) _mm512_storeu_ps(Z + ((6 * i + j) * Tb + t) * Og + o, row[j]);
                }
              }
            }
            for (int64_t e = 0; e < 36; ++e)  // dW[e] (Cg, Og) += U[e]^T (Cg, tiles) Z[e] (tiles, Og)
              winograd_products(
                  Og, Cg, [&](int64_t c) { return U + e * Tb * Cg + c; }, toff.data(), tb, Z + e * Tb * Og,
                  [&](int64_t c) { return dW + ((grp * 36 + e) * Cg + c) * Og; }, true);
          }
        }
    }
  });
  // Sum the chunks' dW in order, then dw[o][c] = G^T dW G, 16 output channels at a time.
  float* dW = ws.data();
  for (int64_t ch = 1; ch < chunks; ++ch)
    for (int64_t i = 0; i < dw_elems; ++i) dW[i] += ws.data()[ch * per_chunk + i];
  parallel_for(0, G * Cg, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t grp = i / Cg, c = i % Cg;
      for (int64_t o0 = 0; o0 < Og; o0 += 16) {
        float ub[36][16];
        for (int e = 0; e < 36; ++e) std::copy_n(dW + ((grp * 36 + e) * Cg + c) * Og + o0, 16, ub[e]);
        for (int64_t o = 0; o < 16; ++o) {
          float rows[6][3], k[3][3];  // rows[a]: G^T applied to row a of dW; k = (G^T dW G)^T
          for (int a = 0; a < 6; ++a)
            winograd_weight_grad3({ub[6 * a][o], ub[6 * a + 1][o], ub[6 * a + 2][o], ub[6 * a + 3][o], ub[6 * a + 4][o], ub[6 * a + 5][o]}, rows[a]);
          for (int b = 0; b < 3; ++b)
            winograd_weight_grad3({rows[0][b], rows[1][b], rows[2][b], rows[3][b], rows[4][b], rows[5][b]}, k[b]);
          float* d = dw + ((grp * Og + o0 + o) * Cg + c) * 9;
          for (int ki = 0; ki < 3; ++ki)
            for (int kj = 0; kj < 3; ++kj) d[ki * 3 + kj] += k[kj][ki];
        }
      }
    }
  });
#else
  (void)x, (void)gy, (void)dw, (void)g;
#endif
}

// conv2d_forward by the direct kernel (use_direct_conv(g) is true).
inline void direct_conv_forward(const float* x, const float* w, const float* bias, float* y, const Conv2dGeometry& g) {
#if defined(__AVX512F__)
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), K = g.col_rows();
  const DirectConvPlan p(g);
  // Weights (G, Og8/8, K, 8): the 8 channels of a tile side by side for each tap; zeros pad Og to Og8.
  Workspace<float> wpk(G * p.Og8 * K);
  std::fill(wpk.data(), wpk.data() + G * p.Og8 * K, 0.0f);
  for (int64_t grp = 0; grp < G; ++grp)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t k = 0; k < K; ++k) wpk.data()[(grp * p.Og8 + o / 8 * 8) * K + k * 8 + o % 8] = w[(grp * Og + o) * K + k];
  const int64_t chunks = batch_chunks(N), per_chunk = p.xp_elems;
  Workspace<float> ws(chunks * per_chunk);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t t = c0; t < c1; ++t) {
      float* xp = ws.data() + t * per_chunk;
      std::fill(xp, xp + p.xp_elems, 0.0f);  // the padding: direct_pad_image writes only the image
      for (int64_t n = t * N / chunks; n < (t + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp)
          direct_conv_image(x + (n * g.in_channels + grp * Cg) * g.in_plane(), wpk.data() + grp * p.Og8 * K,
                            bias ? bias + grp * Og : nullptr, y + (n * g.out_channels + grp * Og) * g.out_plane(), g, p,
                            xp);
    }
  });
#else
  (void)x, (void)w, (void)bias, (void)y, (void)g;
#endif
}
}  // namespace detail

// y (N, O, OH, OW) = conv(x (N, C, H, W), w (O, C/G, kh, kw)) + bias (O) [bias may be null].
// All pointers are contiguous.
template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dGeometry& g) {
  if constexpr (std::is_same_v<T, float>) {
    if (g.batch > 0 && g.out_channels > 0 && detail::use_winograd<T>(g)) {
      detail::winograd_conv_forward(x, w, bias, y, g);
      return;
    }
    if (g.batch > 0 && g.out_channels > 0 && detail::use_channel_forward<T>(g)) {
      detail::channel_conv_forward(x, w, bias, y, g);
      return;
    }
    if (g.batch > 0 && g.out_channels > 0 && detail::use_direct_conv<T>(g)) {
      detail::direct_conv_forward(x, w, bias, y, g);
      return;
    }
  }
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.col_rows(), P = g.out_plane(), HW = g.in_plane();
  const int64_t chunks = detail::batch_chunks(N);
  if (chunks == 0 || P == 0 || g.out_channels == 0) return;
  const bool direct = g.is_pointwise();
  Workspace<T> ws(direct ? 0 : chunks * K * P);
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t t = c0; t < c1; ++t) {
      T* col = ws.data() + (direct ? 0 : t * K * P);
      for (int64_t n = t * N / chunks; n < (t + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp) {
          const T* xin = x + (n * g.in_channels + grp * Cg) * HW;
          T* yo = y + (n * g.out_channels + grp * Og) * P;
          if (bias)  // start from the bias and let the GEMM accumulate onto it
            for (int64_t o = 0; o < Og; ++o) std::fill(yo + o * P, yo + (o + 1) * P, bias[grp * Og + o]);
          const T* cols = xin;
          if (!direct) {
            im2col(xin, g, col);
            cols = col;
          }
          gemm(MatrixView<T>{w + grp * Og * K, Og, K, K, 1}, MatrixView<T>{cols, K, P, P, 1}, yo, P, bias != nullptr);
        }
    }
  });
}

namespace detail {
// A stride-1 convolution's input gradient is a stride-1 convolution of gy: with each group's kernel
// turned by 180 degrees and its input and output channels swapped, and padding d*(k-1) - p.
//   dx[n, c] = sum_{o in c's group}  gy[n, o] (*) rot180(w[o, c])
inline bool input_grad_is_conv(const Conv2dGeometry& g) {
  return g.stride_h == 1 && g.stride_w == 1 && g.pad_h <= g.dilation_h * (g.kernel_h - 1) &&
         g.pad_w <= g.dilation_w * (g.kernel_w - 1);
}
// The geometry of that convolution: gy (N, O, OH, OW) in, dx (N, C, H, W) out.
inline Conv2dGeometry input_grad_geometry(const Conv2dGeometry& g) {
  Conv2dGeometry t = g;
  t.in_channels = g.out_channels;
  t.out_channels = g.in_channels;
  t.in_h = g.out_h;
  t.in_w = g.out_w;
  t.out_h = g.in_h;
  t.out_w = g.in_w;
  t.pad_h = g.dilation_h * (g.kernel_h - 1) - g.pad_h;
  t.pad_w = g.dilation_w * (g.kernel_w - 1) - g.pad_w;
  return t;
}
// Which way conv2d_backward computes dx. As a convolution of gy the GEMM's inner size is
// O/G*kh*kw (not O/G) and its output the small dx plane (not a (C/G*kh*kw, OH*OW) column matrix
// that col2im then adds up), but it spans H*W columns instead of OH*OW: taken while that costs at
// most a quarter more arithmetic, which covers every "same" convolution (3x3 pad 1: equal cost),
// or whenever it runs on the direct kernel (LeNet's 5x5 unpadded conv on 14x14: 1.96x the
// arithmetic, still 1.15x faster than GEMM + col2im).
template <class T>
bool use_input_grad_by_conv(const Conv2dGeometry& g) {
  return !g.is_pointwise() && input_grad_is_conv(g) &&
         (4 * g.in_plane() <= 5 * g.out_plane() || use_direct_conv<T>(input_grad_geometry(g)));
}
}  // namespace detail

// dx (N, C, H, W) of a stride-1 convolution with padding <= dilation * (kernel - 1) on both axes
// (detail::input_grad_is_conv), computed as conv2d_forward of gy with the turned kernel; dx is
// overwritten. `w` is the forward's weight (O, C/G, kh, kw).
template <class T>
void conv2d_input_grad_by_conv(const T* w, const T* gy, T* dx, const Conv2dGeometry& g) {
  const int64_t G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), kh = g.kernel_h, kw = g.kernel_w;
  // wt (C, O/G, kh, kw): wt[grp*Cg + c, o, ki, kj] = w[grp*Og + o, c, kh-1-ki, kw-1-kj]
  Workspace<T> wt(g.out_channels * g.col_rows());
  for (int64_t grp = 0; grp < G; ++grp)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c = 0; c < Cg; ++c) {
        const T* src = w + ((grp * Og + o) * Cg + c) * kh * kw;
        T* dst = wt.data() + ((grp * Cg + c) * Og + o) * kh * kw;
        for (int64_t i = 0; i < kh * kw; ++i) dst[i] = src[kh * kw - 1 - i];
      }
  conv2d_forward(gy, wt.data(), static_cast<const T*>(nullptr), dx, detail::input_grad_geometry(g));
}

// Gradients of conv2d_forward for the output gradient gy (N, O, OH, OW). Each of dx (N, C, H, W),
// dw (O, C/G, kh, kw) and db (O) may be null (not wanted); they are overwritten, not accumulated.
template <class T>
void conv2d_backward(const T* x, const T* w, const T* gy, T* dx, T* dw, T* db, const Conv2dGeometry& g) {
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), O = g.out_channels;
  const int64_t K = g.col_rows(), P = g.out_plane(), HW = g.in_plane();
  const int64_t chunks = detail::batch_chunks(N);
  const bool direct = g.is_pointwise();
  // dx as a convolution of gy (it overwrites dx), or in the loop below.
  const bool dx_by_conv = dx && chunks > 0 && P > 0 && O > 0 && detail::use_input_grad_by_conv<T>(g);
  // col2im accumulates into dx; the pointwise path writes it whole with its GEMM.
  if (dx && !dx_by_conv && !(direct && P > 0 && O > 0) && N * g.in_channels * HW > 0)
    std::memset(dx, 0, static_cast<size_t>(N * g.in_channels * HW) * sizeof(T));
  if (dw && O * K > 0) std::memset(dw, 0, static_cast<size_t>(O * K) * sizeof(T));
  if (db)
    parallel_for(0, O, 16, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        double s = 0;  // accumulate in double: N*OH*OW terms
        for (int64_t n = 0; n < N; ++n) {
          const T* p = gy + (n * O + o) * P;
          for (int64_t i = 0; i < P; ++i) s += p[i];
        }
        db[o] = static_cast<T>(s);
      }
    });
  if (dx_by_conv) {
    conv2d_input_grad_by_conv(w, gy, dx, g);
    dx = nullptr;  // done
  }
  if constexpr (std::is_same_v<T, float>) {
    if (dw && chunks > 0 && P > 0 && O > 0 && detail::use_winograd<T>(g)) {
      detail::winograd_conv_weight_grad(x, gy, dw, g);  // adds into the zeroed dw
      dw = nullptr;                                     // done
    } else if (dw && chunks > 0 && P > 0 && O > 0 && detail::use_channel_weight_grad<T>(g)) {
      detail::channel_conv_weight_grad(x, gy, dw, g);  // adds into the zeroed dw
      dw = nullptr;                                    // done
    } else if (dw && chunks > 0 && P > 0 && O > 0 && detail::use_direct_weight_grad<T>(g)) {
      detail::direct_conv_weight_grad(x, gy, dw, g);  // adds into the zeroed dw
      dw = nullptr;                                   // done
    }
  }
  if (chunks == 0 || P == 0 || O == 0 || (!dx && !dw)) return;
  // Chunk 0 accumulates straight into dw; the others into private buffers summed afterwards in
  // chunk order, so the result does not depend on thread timing.
  Workspace<T> cols(direct ? 0 : chunks * K * P);
  Workspace<T> partial(dw ? (chunks - 1) * O * K : 0);
  if (dw && chunks > 1) std::memset(partial.data(), 0, static_cast<size_t>((chunks - 1) * O * K) * sizeof(T));
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t t = c0; t < c1; ++t) {
      T* col = cols.data() + (direct ? 0 : t * K * P);
      T* dw_t = dw ? (t == 0 ? dw : partial.data() + (t - 1) * O * K) : nullptr;
      for (int64_t n = t * N / chunks; n < (t + 1) * N / chunks; ++n)
        for (int64_t grp = 0; grp < G; ++grp) {
          const T* gyo = gy + (n * O + grp * Og) * P;
          const T* wg = w + grp * Og * K;
          MatrixView<T> gy_view{gyo, Og, P, P, 1};
          if (dw_t) {  // dw[g] += gy (Og, P) x col^T (P, K)
            const T* xin = x + (n * g.in_channels + grp * Cg) * HW;
            const T* c = xin;
            if (!direct) {
              im2col(xin, g, col);
              c = col;
            }
            gemm(gy_view, MatrixView<T>{c, P, K, 1, P}, dw_t + grp * Og * K, K, true);
          }
          if (dx) {  // col = w[g]^T (K, Og) x gy (Og, P), then scattered back into the image
            T* dxin = dx + (n * g.in_channels + grp * Cg) * HW;
            MatrixView<T> wt{wg, K, Og, 1, K};
            if (direct) {
              gemm(wt, gy_view, dxin, P, false);
            } else {
              gemm(wt, gy_view, col, P, false);
              col2im(col, g, dxin);
            }
          }
        }
    }
  });
  if (dw && chunks > 1) {
    parallel_for(0, O * K, 4096, [&](int64_t b, int64_t e) {
      for (int64_t t = 1; t < chunks; ++t) {
        const T* p = partial.data() + (t - 1) * O * K;
        for (int64_t i = b; i < e; ++i) dw[i] += p[i];
      }
    });
  }
}

}  // namespace dl::cpu
