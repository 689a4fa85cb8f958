// The message of the exception of type E that fn throws, or "(no exception)": for error-path
// tests that check several key words of one message.
//
//   CHECK(dl_test::message_of<dl::ValueError>([] { ck::parse("every=0"); }).find("positive") != std::string::npos);
#pragma once
#include <string>

namespace dl_test {

template <class E>
std::string message_of(auto&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace dl_test
