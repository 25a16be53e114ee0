// rotq's one error type. Every user-facing failure (bad file, bad shape, bad option) is raised as
// rotq::Error with a message that names the thing and what was expected; the CLI prints it as a
// single line and exits non-zero. Internal invariants use TORCH_CHECK / assert instead.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace rotq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// fail("safetensors ", path, ": tensor ", name, " ends past the file") -> throws rotq::Error.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

// require(cond, "...") -> fail("...") when cond is false.
template <typename... Args>
void require(bool cond, Args&&... args) {
  if (!cond) fail(std::forward<Args>(args)...);
}

}  // namespace rotq
