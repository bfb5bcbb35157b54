// ExecCancel's bookkeeping without a VM: what a token keeps before an exec
// uses it, and what a linked exec receives before its EXEC frame is sent.
#include <doctest/doctest.h>

#include <vector>

#include "runtime/cancel.hpp"

using namespace ztee::detail;

TEST_CASE("a token no exec has used keeps its signals for the first exec, at most 64; a used one drops them") {
  CancelState st;
  for (int i = 0; i < 70; ++i) st.signal(1 + i % 64);
  std::vector<int> got;
  uint64_t id = st.add([&](int sig) { got.push_back(sig); });
  REQUIRE(got.size() == CancelState::kMaxEarly);
  CHECK(got.front() == 1);
  CHECK(got.back() == 64);
  st.remove(id);
  got.clear();
  st.signal(15);  // used and idle: nothing keeps it
  st.add([&](int sig) { got.push_back(sig); });
  CHECK(got.empty());
  st.trigger();
  CHECK(got == std::vector<int>{0});
}

TEST_CASE("a linked exec gets what was fired before its start, in order; a cancel is never dropped") {
  CancelLink link;
  link.state = std::make_shared<CancelState>();
  for (int i = 0; i < 100; ++i) link.fire(10);
  link.fire(0);
  std::vector<int> got;
  link.start([&](int sig) { got.push_back(sig); });
  REQUIRE(got.size() == CancelState::kMaxEarly + 1);
  CHECK(got.back() == 0);
  link.fire(2);
  CHECK(got.back() == 2);
  link.unlink();
  link.fire(3);  // after the end: nothing
  CHECK(got.back() == 2);
}
