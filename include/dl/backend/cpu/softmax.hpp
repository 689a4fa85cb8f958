// CPU kernels for softmax, log-softmax and the classification losses built on them (cross
// entropy, negative log-likelihood). A softmax runs along one axis of a contiguous array seen as
// (outer, cols, inner): the axis has `cols` elements at stride `inner`, and the outer * inner
// lines are independent. inner == 1 (the last axis) is the row path; otherwise neighbouring lines
// are processed in blocks of up to 64 so every load stays contiguous. Every kernel subtracts the
// line's maximum before exp (logits of 1e4 do not overflow), runs in parallel over lines with
// dl::parallel_for, and never throws (callers check everything first).
//
//   (2, 3, 4) array, softmax over axis 1: outer 2, cols 3, inner 4; element (o, c, i) lives at
//   o * 12 + c * 4 + i.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "dl/core/parallel.hpp"

namespace dl::cpu {

struct SoftmaxLayout {
  int64_t outer = 1, cols = 1, inner = 1;
};

namespace detail {
inline constexpr int64_t kSoftmaxBlock = 64;  // lines per block on the strided path

// Calls row(offset) for every line when inner == 1, else block(offset, width) for blocks of up to
// kSoftmaxBlock neighbouring lines starting at `offset`.
template <class Row, class Block>
void for_each_line(const SoftmaxLayout& l, Row row, Block block) {
  // Aim for ~16k elements of work per chunk: lines are short for classifiers, long for LMs.
  if (l.inner == 1) {
    int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(l.cols, 1));
    parallel_for(0, l.outer, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) row(r * l.cols);
    });
    return;
  }
  const int64_t blocks = (l.inner + kSoftmaxBlock - 1) / kSoftmaxBlock;
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(l.cols * std::min(l.inner, kSoftmaxBlock), 1));
  parallel_for(0, l.outer * blocks, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / blocks, i0 = (t % blocks) * kSoftmaxBlock;
      block(o * l.cols * l.inner + i0, std::min(kSoftmaxBlock, l.inner - i0));
    }
  });
}

// Largest element of a row; NaN-propagation is left to the exp pass (exp(NaN - m) is NaN).
template <class T>
T row_max(const T* x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < n; ++c) m = x[c] > m ? x[c] : m;
  return m;
}
}  // namespace detail

// y = softmax(x) (Log = false) or log_softmax(x) (Log = true) along the layout's axis.
template <bool Log, class T>
void softmax_forward(const T* x, T* y, const SoftmaxLayout& l) {
  const int64_t n = l.cols, st = l.inner;
  detail::for_each_line(
      l,
      [&](int64_t off) {
        const T* xr = x + off;
        T* yr = y + off;
        const T m = detail::row_max(xr, n);
        T s = 0;
        if constexpr (Log) {
          for (int64_t c = 0; c < n; ++c) s += std::exp(xr[c] - m);
          // (x - m) - log s keeps the digits that x - (m + log s) loses for |x| ~ 1e4.
          const T ls = std::log(s);
          for (int64_t c = 0; c < n; ++c) yr[c] = (xr[c] - m) - ls;
        } else {
          for (int64_t c = 0; c < n; ++c) {
            T e = std::exp(xr[c] - m);
            yr[c] = e;
            s += e;
          }
          const T inv = T(1) / s;
          for (int64_t c = 0; c < n; ++c) yr[c] *= inv;
        }
      },
      [&](int64_t off, int64_t w) {
        T m[detail::kSoftmaxBlock], s[detail::kSoftmaxBlock];
        std::fill(m, m + w, -std::numeric_limits<T>::infinity());
        std::fill(s, s + w, T(0));
        for (int64_t c = 0; c < n; ++c) {
          const T* xc = x + off + c * st;
          for (int64_t j = 0; j < w; ++j) m[j] = xc[j] > m[j] ? xc[j] : m[j];
        }
        for (int64_t c = 0; c < n; ++c) {
          const T* xc = x + off + c * st;
          T* yc = y + off + c * st;
          for (int64_t j = 0; j < w; ++j) {
            T e = std::exp(xc[j] - m[j]);
            if constexpr (!Log) yc[j] = e;
            s[j] += e;
          }
        }
        if constexpr (Log) {
          for (int64_t j = 0; j < w; ++j) s[j] = std::log(s[j]);
          for (int64_t c = 0; c < n; ++c) {
            const T* xc = x + off + c * st;
            T* yc = y + off + c * st;
            for (int64_t j = 0; j < w; ++j) yc[j] = (xc[j] - m[j]) - s[j];
          }
        } else {
          for (int64_t j = 0; j < w; ++j) s[j] = T(1) / s[j];
          for (int64_t c = 0; c < n; ++c) {
            T* yc = y + off + c * st;
            for (int64_t j = 0; j < w; ++j) yc[j] *= s[j];
          }
        }
      });
}

// Backward from the saved output y and the output gradient g (both contiguous, same layout):
//   softmax:     dx = y * (g - sum(g * y))
//   log_softmax: dx = g - exp(y) * sum(g)
template <bool Log, class T>
void softmax_backward(const T* y, const T* g, T* dx, const SoftmaxLayout& l) {
  const int64_t n = l.cols, st = l.inner;
  detail::for_each_line(
      l,
      [&](int64_t off) {
        const T *yr = y + off, *gr = g + off;
        T* dr = dx + off;
        T s = 0;
        if constexpr (Log) {
          for (int64_t c = 0; c < n; ++c) s += gr[c];
          for (int64_t c = 0; c < n; ++c) dr[c] = gr[c] - std::exp(yr[c]) * s;
        } else {
          for (int64_t c = 0; c < n; ++c) s += gr[c] * yr[c];
          for (int64_t c = 0; c < n; ++c) dr[c] = yr[c] * (gr[c] - s);
        }
      },
      [&](int64_t off, int64_t w) {
        T s[detail::kSoftmaxBlock];
        std::fill(s, s + w, T(0));
        for (int64_t c = 0; c < n; ++c) {
          const T *yc = y + off + c * st, *gc = g + off + c * st;
          for (int64_t j = 0; j < w; ++j) s[j] += Log ? gc[j] : gc[j] * yc[j];
        }
        for (int64_t c = 0; c < n; ++c) {
          const T *yc = y + off + c * st, *gc = g + off + c * st;
          T* dc = dx + off + c * st;
          for (int64_t j = 0; j < w; ++j) dc[j] = Log ? gc[j] - std::exp(yc[j]) * s[j] : yc[j] * (gc[j] - s[j]);
        }
      });
}

// Cross entropy of `rows` rows of `cols` logits against integer labels (all in [0, cols)), with
// label smoothing s (the target is (1 - s) * onehot + s / cols). One pass per row gives
//   loss = logsumexp(x) - (1 - s) * x[label] - s * mean(x)
//        = (1 - s) * (m - x[label]) - s * mean(x - m) + log(sum(exp(x - m)))
// (the second form subtracts nearby numbers only). row_max and log_sum (m and log(sum exp(x - m)))
// are saved for the backward pass, which needs nothing else but the logits.
template <class T, class Label>
void cross_entropy_forward(const T* x, const Label* labels, int64_t rows, int64_t cols, T smoothing, T* loss,
                           T* row_max, T* log_sum) {
  SoftmaxLayout l{rows, cols, 1};
  const T keep = T(1) - smoothing, spread = smoothing / static_cast<T>(cols);
  detail::for_each_line(
      l,
      [&](int64_t off) {
        const int64_t r = off / cols;
        const T* xr = x + off;
        const T m = detail::row_max(xr, cols);
        T s = 0, shifted = 0;
        for (int64_t c = 0; c < cols; ++c) {
          T d = xr[c] - m;
          s += std::exp(d);
          shifted += d;
        }
        const T ls = std::log(s);
        loss[r] = keep * (m - xr[labels[r]]) - spread * shifted + ls;
        row_max[r] = m;
        log_sum[r] = ls;
      },
      [](int64_t, int64_t) {});
}

// dx[r, c] = g_r * (softmax(x_r)[c] - s / cols - (1 - s) * [c == label_r]), with
// g_r = g[r * g_stride] * scale (g_stride 0: one scalar gradient for every row, as for mean/sum).
template <class T, class Label>
void cross_entropy_backward(const T* x, const Label* labels, const T* row_max, const T* log_sum, const T* g,
                            int64_t g_stride, T scale, int64_t rows, int64_t cols, T smoothing, T* dx) {
  SoftmaxLayout l{rows, cols, 1};
  const T keep = T(1) - smoothing, spread = smoothing / static_cast<T>(cols);
  detail::for_each_line(
      l,
      [&](int64_t off) {
        const int64_t r = off / cols;
        const T *xr = x + off, m = row_max[r], ls = log_sum[r];
        const T gr = g[r * g_stride] * scale;
        T* dr = dx + off;
        for (int64_t c = 0; c < cols; ++c) dr[c] = gr * (std::exp((xr[c] - m) - ls) - spread);
        dr[labels[r]] -= gr * keep;
      },
      [](int64_t, int64_t) {});
}

// loss[r] = -log_probs[r, label_r].
template <class T, class Label>
void nll_forward(const T* log_probs, const Label* labels, int64_t rows, int64_t cols, T* loss) {
  parallel_for(0, rows, 16384, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) loss[r] = -log_probs[r * cols + static_cast<int64_t>(labels[r])];
  });
}

// dx = 0 except dx[r, label_r] = -g_r (g_r as in cross_entropy_backward).
template <class T, class Label>
void nll_backward(const Label* labels, const T* g, int64_t g_stride, T scale, int64_t rows, int64_t cols, T* dx) {
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    std::fill(dx + b * cols, dx + e * cols, T(0));
    for (int64_t r = b; r < e; ++r) dx[r * cols + static_cast<int64_t>(labels[r])] = -g[r * g_stride] * scale;
  });
}

// Sum of n contiguous values, accumulated in double over fixed 4096-element chunks and merged in
// order: the result does not depend on the thread count.
template <class T>
double sum_deterministic(const T* p, int64_t n) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (chunks <= 1) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(p[i]);
    return s;
  }
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  parallel_for(0, chunks, 4, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      double s = 0;
      for (int64_t i = k * kChunk, end = std::min(n, i + kChunk); i < end; ++i) s += static_cast<double>(p[i]);
      partial[static_cast<size_t>(k)] = s;
    }
  });
  double s = 0;
  for (double v : partial) s += v;
  return s;
}

}  // namespace dl::cpu
