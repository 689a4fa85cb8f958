// CPU kernels for 2-D convolution (NCHW): im2col + GEMM forward, GEMM + col2im for the input
// gradient, im2col + GEMM for the weight gradient. Work is split into one chunk of images per
// thread; each chunk owns a column buffer from the pooled allocator (so repeated calls with the
// same shapes do not reach malloc) and runs single-threaded GEMMs. With one image the GEMM itself
// is threaded instead. A 1x1 convolution with stride 1 and no padding reads the image directly as
// its column matrix. Shapes are checked by ops/conv.hpp; these functions only compute.
//
//   per image n, group g:  y[n, g] (O/G, OH*OW) = w[g] (O/G, C/G*kh*kw) x col (C/G*kh*kw, OH*OW)
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

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

// A scratch buffer from the pooled CPU allocator, returned on scope exit.
template <class T>
class Workspace {
 public:
  explicit Workspace(int64_t elems) : bytes_(static_cast<size_t>(std::max<int64_t>(elems, 1)) * sizeof(T)) {
    data_ = static_cast<T*>(cpu_allocator().allocate(bytes_));
  }
  ~Workspace() { cpu_allocator().deallocate(data_, bytes_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  T* data() const { return data_; }

 private:
  T* data_ = nullptr;
  size_t bytes_;
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

// y (N, O, OH, OW) = conv(x (N, C, H, W), w (O, C/G, kh, kw)) + bias (O) [bias may be null].
// All pointers are contiguous.
template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dGeometry& g) {
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

// Gradients of conv2d_forward for the output gradient gy (N, O, OH, OW). Each of dx (N, C, H, W),
// dw (O, C/G, kh, kw) and db (O) may be null (not wanted); they are overwritten, not accumulated.
template <class T>
void conv2d_backward(const T* x, const T* w, const T* gy, T* dx, T* dw, T* db, const Conv2dGeometry& g) {
  const int64_t N = g.batch, G = g.groups, Cg = g.in_per_group(), Og = g.out_per_group(), O = g.out_channels;
  const int64_t K = g.col_rows(), P = g.out_plane(), HW = g.in_plane();
  const int64_t chunks = detail::batch_chunks(N);
  const bool direct = g.is_pointwise();
  // col2im accumulates into dx; the pointwise path writes it whole with its GEMM.
  if (dx && !(direct && P > 0 && O > 0) && N * g.in_channels * HW > 0)
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
