// why(r): the error of a failed result as text, empty for a successful one
// (libztee's Result, whose error has .message, or the C ABI wrapper's, whose
// error has .to_string()). For assertion messages: doctest evaluates a
// message on success too when it reports successes (`-s`), and r.error() on a
// successful result aborts. C++17: the C ABI wrapper's test builds as C++17.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

template <typename R, typename = void>
struct why_has_message : std::false_type {};
template <typename R>
struct why_has_message<R, std::void_t<decltype(std::declval<const R&>().error().message)>> : std::true_type {};

template <typename R>
std::string why(const R& r) {
  if (r.ok()) return std::string();
  if constexpr (why_has_message<R>::value)
    return std::string(r.error().message);
  else
    return r.error().to_string();
}
