// dl::Error and its subclasses: every failure a user, a file or a peer rank can cause is reported
// as one of these, with a message that names the operation and the offending values.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dl {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class ShapeError : public Error { public: using Error::Error; };
class DTypeError : public Error { public: using Error::Error; };
class DeviceError : public Error { public: using Error::Error; };
class IoError : public Error { public: using Error::Error; };
class DistributedError : public Error { public: using Error::Error; };
// A bad argument value (axis out of range, negative size, unknown option, ...).
class ValueError : public Error { public: using Error::Error; };
// Misuse of autograd (backward on a non-scalar without a head gradient, backward twice, ...).
class AutogradError : public Error { public: using Error::Error; };

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

// fail<ShapeError>("matmul: inner dimensions differ: lhs ", a, " vs rhs ", b)
template <class E = Error, class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw E(detail::concat(parts...));
}

// Checks that stay on in release builds.
template <class E = Error, class... Parts>
inline void check(bool ok, const Parts&... parts) {
  if (!ok) [[unlikely]] fail<E>(parts...);
}

}  // namespace dl
