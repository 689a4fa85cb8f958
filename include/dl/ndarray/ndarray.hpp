// NDArray<T>: the eager array handle. A handle is (shared Storage, shape, strides, offset) plus
// its autograd state; copying a handle shares both, like a Python reference. Views (reshape,
// slice, transpose, permute, broadcast_to, squeeze, unsqueeze) never copy data and are recorded on
// the tape when autograd is on; clone() and contiguous() copy.
//
//   auto a = dl::arange<float>(6).reshape({2, 3});  // [[0, 1, 2], [3, 4, 5]]
//   auto t = a.transpose();                          // (3, 2), strides (1, 3): no copy
//   auto s = a.slice(1, 0, 3, 2);                    // columns 0 and 2: [[0, 2], [3, 5]]
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include "dl/autograd/node.hpp"
#include "dl/core/device.hpp"
#include "dl/core/dtype.hpp"
#include "dl/core/error.hpp"
#include "dl/core/shape.hpp"
#include "dl/core/storage.hpp"
#if defined(DL_CUDA_ENABLED)
#include "dl/backend/cuda/copy.hpp"
#endif

namespace dl {

template <class T> class NDArray;

namespace detail {
// Defined in autograd/record.hpp: records a view/copy of `in` as `out` with the given backward.
template <class T, class Backward>
void record_unary(const NDArray<T>& in, NDArray<T>& out, const char* name, Backward backward);
// Defined in expr/assign.hpp: evaluates an expression into a new array (recorded when needed).
template <class E> auto evaluate(const E& e);
// Defined in expr/assign.hpp: dst (op)= e, elementwise with broadcasting, alias-safe.
template <class T, class E> void assign_into(NDArray<T>& dst, const E& e, int mode);
template <class T> NDArray<T> sum_to(const NDArray<T>& g, const Shape& shape);
}  // namespace detail

// Marks expression node types (expr/expr.hpp); NDArray itself is a leaf, not an expression node.
template <class E> struct is_expr_node : std::false_type {};
template <class E> inline constexpr bool is_expr_node_v = is_expr_node<std::remove_cvref_t<E>>::value;

template <class T = float>
class NDArray {
  static_assert(Element<T>, "NDArray: element type must be float, double, int32_t, int64_t, uint8_t, bfloat16 or float16");

 public:
  using value_type = T;

  NDArray() = default;  // an undefined handle: defined() is false
  // Allocates uninitialised memory of the given shape.
  explicit NDArray(const Shape& shape, Device device = Device::cpu())
      : storage_(Storage::allocate(static_cast<size_t>(shape.numel()) * sizeof(T), device)),
        shape_(shape), strides_(contiguous_strides(shape)) {}
  NDArray(std::shared_ptr<Storage> storage, const Shape& shape, const Strides& strides, int64_t offset)
      : storage_(std::move(storage)), shape_(shape), strides_(strides), offset_(offset) {}

  // Evaluates an elementwise expression in one fused pass (see expr/).
  template <class E>
    requires is_expr_node_v<E>
  NDArray(const E& e) : NDArray(detail::evaluate(e)) {}  // NOLINT(google-explicit-constructor)

  // Assigning an expression to a handle rebinds it to a fresh result (like `y = f(x)` in Python).
  template <class E>
    requires is_expr_node_v<E>
  NDArray& operator=(const E& e) { return *this = NDArray(detail::evaluate(e)); }

  // Compound assignment writes in place into this array's elements, alias-safe.
  template <class E> NDArray& operator+=(const E& e) { detail::assign_into(*this, e, 1); return *this; }
  template <class E> NDArray& operator-=(const E& e) { detail::assign_into(*this, e, 2); return *this; }
  template <class E> NDArray& operator*=(const E& e) { detail::assign_into(*this, e, 3); return *this; }
  template <class E> NDArray& operator/=(const E& e) { detail::assign_into(*this, e, 4); return *this; }
  // Writes e into this array's elements (broadcast to its shape); the handle keeps its storage.
  template <class E> void assign(const E& e) { detail::assign_into(*this, e, 0); }

  // ---- shape and layout ------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t shape(int axis) const { return shape_[normalize_axis(axis, rank(), "shape")]; }
  const Strides& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int rank() const { return shape_.rank(); }
  int64_t numel() const { return shape_.numel(); }
  int64_t size() const { return numel(); }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  DType dtype() const { return dtype_of<T>; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  bool is_contiguous() const {
    int64_t expect = 1;
    for (int i = rank() - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides_[i] != expect) return false;
      expect *= shape_[i];
    }
    return true;
  }

  T* data() const {
    require_defined("data");
    return static_cast<T*>(storage_->data()) + offset_;
  }

  // ---- element access (CPU; index per axis, negative counts from the end) -----------------
  T& at(std::initializer_list<int64_t> index) const { return *element_ptr(index.begin(), static_cast<int>(index.size())); }
  T& at(const std::vector<int64_t>& index) const { return *element_ptr(index.data(), static_cast<int>(index.size())); }
  // The single element of a one-element array.
  T item() const {
    require_defined("item");
    check<ShapeError>(numel() == 1, "item: array of shape ", shape_, " has ", numel(), " elements, expected 1");
    if (device().is_cuda()) return detach().cpu().item();  // a host read: waits for the device
    return *data();
  }
  std::vector<T> to_vector() const;

  // ---- views -------------------------------------------------------------------------------
  NDArray reshape(const Shape& shape) const;
  NDArray reshape(std::initializer_list<int64_t> dims) const { return reshape(std::vector<int64_t>(dims)); }
  NDArray reshape(const std::vector<int64_t>& dims) const;  // one dim may be -1
  NDArray flatten(int start_axis = 1) const;
  NDArray slice(int axis, int64_t start, int64_t stop, int64_t step = 1) const;
  NDArray transpose() const;                   // reverses all axes (a 2-D transpose)
  NDArray transpose(int axis0, int axis1) const;
  NDArray permute(const std::vector<int>& axes) const;
  NDArray broadcast_to(const Shape& shape) const;
  NDArray squeeze() const;
  NDArray squeeze(int axis) const;
  NDArray unsqueeze(int axis) const;
  NDArray expand_dims(int axis) const { return unsqueeze(axis); }

  // ---- copies ------------------------------------------------------------------------------
  NDArray contiguous() const;  // this handle when already contiguous, else a copy
  NDArray clone() const;       // always a copy
  template <class U> NDArray<U> cast() const;
  // A copy on `device` (this handle when already there); recorded, so gradients flow back.
  // Device -> host waits for the device's queued work; host -> device does not.
  NDArray to(Device device) const;
  NDArray cpu() const { return to(Device::cpu()); }
  NDArray cuda(int index = 0) const { return to(Device::cuda(index)); }

  // ---- autograd ----------------------------------------------------------------------------
  // Makes this array a leaf that collects its gradient in grad() (MXNet's attach_grad).
  NDArray& attach_grad(autograd::GradReq req = autograd::GradReq::write);
  NDArray& requires_grad(bool on) {
    if (on) return attach_grad();
    if (meta_) { meta_->requires_grad = false; meta_->grad = NDArray(); }
    return *this;
  }
  // True when operations on this array are recorded: a leaf with attach_grad(), or a result of a
  // recorded operation.
  bool tracks_grad() const { return meta_ && (meta_->requires_grad || meta_->grad_fn); }
  bool is_leaf() const { return !meta_ || !meta_->grad_fn; }
  NDArray& grad() const;
  void set_grad_req(autograd::GradReq req);
  autograd::GradReq grad_req() const { return meta_ ? meta_->req : autograd::GradReq::null; }
  // The same data with no autograd history.
  NDArray detach() const { return NDArray(storage_, shape_, strides_, offset_); }
  // Backpropagates from this array. A non-scalar needs a head gradient of its shape.
  void backward(const NDArray& head = NDArray(), bool retain_graph = false) const;
  const std::shared_ptr<autograd::GradMeta<T>>& grad_meta() const { return meta_; }
  std::shared_ptr<autograd::GradMeta<T>>& grad_meta() { return meta_; }
  std::shared_ptr<autograd::TypedNode<T>> grad_fn() const { return meta_ ? meta_->grad_fn : nullptr; }

  void require_defined(const char* op) const {
    check<ValueError>(defined(), op, ": the array is undefined (default-constructed NDArray)");
  }

 private:
  T* element_ptr(const int64_t* index, int n) const {
    require_defined("at");
    require_cpu(device(), "at");
    check<ShapeError>(n == rank(), "at: got ", n, " indices for an array of rank ", rank());
    int64_t off = offset_;
    for (int i = 0; i < n; ++i) {
      int64_t ix = index[i] < 0 ? index[i] + shape_[i] : index[i];
      check<ValueError>(ix >= 0 && ix < shape_[i], "at: index ", index[i], " is out of range for axis ", i,
                        " of size ", shape_[i]);
      off += ix * strides_[i];
    }
    return static_cast<T*>(storage_->data()) + off;
  }
  NDArray view(const Shape& shape, const Strides& strides, int64_t offset) const {
    return NDArray(storage_, shape, strides, offset);
  }

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Strides strides_{};
  int64_t offset_ = 0;
  std::shared_ptr<autograd::GradMeta<T>> meta_;
};

template <class T> inline constexpr bool is_ndarray_v = false;
template <class T> inline constexpr bool is_ndarray_v<NDArray<T>> = true;

// ---- definitions -------------------------------------------------------------------------------

// Visits every element of `a` in row-major order with its pointer (CPU, serial).
template <class T, class Fn>
void for_each_element(const NDArray<T>& a, Fn fn) {
  require_cpu(a.device(), "for_each_element");
  int r = a.rank();
  int64_t n = a.numel();
  if (n == 0) return;
  T* base = static_cast<T*>(a.storage()->data()) + a.offset();
  if (a.is_contiguous()) {
    for (int64_t i = 0; i < n; ++i) fn(base + i);
    return;
  }
  std::array<int64_t, kMaxRank> idx{};
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    fn(base + off);
    for (int d = r - 1; d >= 0; --d) {
      if (++idx[d] < a.shape()[d]) { off += a.strides()[d]; break; }
      off -= (a.shape()[d] - 1) * a.strides()[d];
      idx[d] = 0;
    }
  }
}

template <class T>
std::vector<T> NDArray<T>::to_vector() const {
  require_defined("to_vector");
  if (device().is_cuda()) return detach().cpu().to_vector();
  std::vector<T> out;
  out.reserve(static_cast<size_t>(numel()));
  for_each_element(*this, [&](T* p) { out.push_back(*p); });
  return out;
}

template <class T>
NDArray<T> NDArray<T>::reshape(const std::vector<int64_t>& dims) const {
  require_defined("reshape");
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      check<ShapeError>(infer < 0, "reshape: more than one -1 in the new shape");
      infer = static_cast<int>(i);
    } else {
      check<ShapeError>(dims[i] >= 0, "reshape: negative dimension ", dims[i]);
      known *= dims[i];
    }
  }
  std::vector<int64_t> d = dims;
  if (infer >= 0) {
    check<ShapeError>(known != 0 && numel() % known == 0, "reshape: cannot infer -1 reshaping ", shape_,
                      " (", numel(), " elements)");
    d[static_cast<size_t>(infer)] = numel() / known;
  }
  return reshape(Shape(d));
}

template <class T>
NDArray<T> NDArray<T>::reshape(const Shape& shape) const {
  require_defined("reshape");
  check<ShapeError>(shape.numel() == numel(), "reshape: cannot reshape ", shape_, " (", numel(),
                    " elements) to ", shape, " (", shape.numel(), " elements)");
  // A non-contiguous array is copied first (like NumPy and PyTorch); a contiguous one is a view.
  NDArray src = contiguous();
  NDArray out = src.view(shape, contiguous_strides(shape), src.offset_);
  Shape in_shape = shape_;
  detail::record_unary(src, out, "reshape", [in_shape](const NDArray& g) { return g.contiguous().reshape(in_shape); });
  return out;
}

template <class T>
NDArray<T> NDArray<T>::flatten(int start_axis) const {
  int a = normalize_axis(start_axis, rank(), "flatten");
  std::vector<int64_t> d(shape_.begin(), shape_.begin() + a);
  d.push_back(-1);
  if (numel() == 0) {
    int64_t rest = 1;
    for (int i = a; i < rank(); ++i) rest *= shape_[i];
    d.back() = rest;
  }
  return reshape(d);
}

template <class T>
NDArray<T> NDArray<T>::slice(int axis, int64_t start, int64_t stop, int64_t step) const {
  require_defined("slice");
  int ax = normalize_axis(axis, rank(), "slice");
  check<ValueError>(step > 0, "slice: step must be positive, got ", step);
  int64_t n = shape_[ax];
  auto clamp_index = [n](int64_t i) { i = i < 0 ? i + n : i; return std::min(std::max<int64_t>(i, 0), n); };
  int64_t b = clamp_index(start), e = clamp_index(stop);
  int64_t len = e > b ? (e - b + step - 1) / step : 0;
  Shape s = shape_;
  s[ax] = len;
  Strides st = strides_;
  st[ax] = strides_[ax] * step;
  NDArray out = view(s, st, offset_ + b * strides_[ax]);
  Shape in_shape = shape_;
  detail::record_unary(*this, out, "slice", [in_shape, ax, b, e, step](const NDArray& g) {
    NDArray z(in_shape, g.device());
    if (z.device().is_cpu()) std::memset(z.data(), 0, static_cast<size_t>(z.numel()) * sizeof(T));
    else z.assign(T(0));
    NDArray region = z.slice(ax, b, e, step);
    region.assign(g);
    return z;
  });
  return out;
}

template <class T>
NDArray<T> NDArray<T>::permute(const std::vector<int>& axes) const {
  require_defined("permute");
  check<ShapeError>(static_cast<int>(axes.size()) == rank(), "permute: got ", axes.size(), " axes for rank ", rank());
  Shape s = shape_;
  Strides st{};
  std::vector<int> inverse(axes.size(), -1);
  for (int i = 0; i < rank(); ++i) {
    int a = normalize_axis(axes[static_cast<size_t>(i)], rank(), "permute");
    check<ValueError>(inverse[static_cast<size_t>(a)] < 0, "permute: axis ", a, " repeated");
    inverse[static_cast<size_t>(a)] = i;
    s[i] = shape_[a];
    st[i] = strides_[a];
  }
  NDArray out = view(s, st, offset_);
  detail::record_unary(*this, out, "permute", [inverse](const NDArray& g) { return g.permute(inverse); });
  return out;
}

template <class T>
NDArray<T> NDArray<T>::transpose() const {
  std::vector<int> axes(static_cast<size_t>(rank()));
  std::iota(axes.rbegin(), axes.rend(), 0);
  return permute(axes);
}

template <class T>
NDArray<T> NDArray<T>::transpose(int axis0, int axis1) const {
  std::vector<int> axes(static_cast<size_t>(rank()));
  std::iota(axes.begin(), axes.end(), 0);
  std::swap(axes[static_cast<size_t>(normalize_axis(axis0, rank(), "transpose"))],
            axes[static_cast<size_t>(normalize_axis(axis1, rank(), "transpose"))]);
  return permute(axes);
}

template <class T>
NDArray<T> NDArray<T>::broadcast_to(const Shape& shape) const {
  require_defined("broadcast_to");
  check<ShapeError>(shape.rank() >= rank(), "broadcast_to: cannot broadcast ", shape_, " to lower rank ", shape);
  Strides st{};
  int lead = shape.rank() - rank();
  for (int i = 0; i < shape.rank(); ++i) {
    int j = i - lead;
    if (j < 0) { st[i] = 0; continue; }
    if (shape_[j] == shape[i]) st[i] = strides_[j];
    else if (shape_[j] == 1) st[i] = 0;
    else fail<ShapeError>("broadcast_to: cannot broadcast ", shape_, " to ", shape);
  }
  NDArray out = view(shape, st, offset_);
  Shape in_shape = shape_;
  detail::record_unary(*this, out, "broadcast_to", [in_shape](const NDArray& g) { return detail::sum_to(g, in_shape); });
  return out;
}

template <class T>
NDArray<T> NDArray<T>::squeeze() const {
  std::vector<int64_t> d;
  for (int i = 0; i < rank(); ++i)
    if (shape_[i] != 1) d.push_back(shape_[i]);
  return reshape(Shape(d));
}

template <class T>
NDArray<T> NDArray<T>::squeeze(int axis) const {
  int a = normalize_axis(axis, rank(), "squeeze");
  check<ShapeError>(shape_[a] == 1, "squeeze: axis ", axis, " has size ", shape_[a], ", not 1");
  std::vector<int64_t> d = shape_.vec();
  d.erase(d.begin() + a);
  return reshape(Shape(d));
}

template <class T>
NDArray<T> NDArray<T>::unsqueeze(int axis) const {
  int a = normalize_axis(axis, rank() + 1, "unsqueeze");
  std::vector<int64_t> d = shape_.vec();
  d.insert(d.begin() + a, 1);
  return reshape(Shape(d));
}

template <class T>
NDArray<T> NDArray<T>::clone() const {
  require_defined("clone");
  NDArray out(shape_, device());
  out.assign(detach());
  detail::record_unary(*this, out, "clone", [](const NDArray& g) { return g; });
  return out;
}

template <class T>
NDArray<T> NDArray<T>::contiguous() const {
  require_defined("contiguous");
  return is_contiguous() ? *this : clone();
}

template <class T>
NDArray<T> NDArray<T>::to(Device device) const {
  require_defined("to");
  if (device == this->device()) return *this;
#if defined(DL_CUDA_ENABLED)
  if (device.is_cuda()) ::dl::cuda::require_device(device, "to");
  NDArray src = detach().contiguous();  // one contiguous block on the source device
  NDArray out(shape_, device);
  ::dl::cuda::copy_bytes(out.data(), device, src.data(), src.device(), static_cast<size_t>(numel()) * sizeof(T));
  Device from = this->device();
  detail::record_unary(*this, out, "to", [from](const NDArray& g) { return g.to(from); });
  return out;
#else
  cuda_unavailable("to", device.is_cuda() ? device : this->device());
#endif
}

}  // namespace dl
