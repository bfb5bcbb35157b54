#include "runtime/cancel.hpp"

#include <cerrno>
#include <utility>

#include <fmt/format.h>

namespace ztee {

ExecCancel ExecCancel::create() {
  ExecCancel c;
  c.state_ = std::make_shared<detail::CancelState>();
  return c;
}

void ExecCancel::trigger() const {
  if (state_) state_->trigger();
}

bool ExecCancel::triggered() const {
  if (!state_) return false;
  std::lock_guard lk(state_->mu);
  return state_->triggered;
}

Result<void> ExecCancel::signal(int sig) const {
  if (sig < 1 || sig > 64)
    return make_error(Errc::kInvalidArgument, fmt::format("signal {} is out of range: give 1..64", sig));
  if (!state_)
    return make_error(Errc::kInvalidArgument, "ExecCancel::signal on an empty token: make it with ExecCancel::create()");
  state_->signal(sig);
  return Result<void>();
}

ExecInput ExecInput::create() {
  ExecInput in;
  in.state_ = std::make_shared<detail::InputState>();
  return in;
}

Result<void> ExecInput::write(std::string_view data) const {
  if (!state_) return make_error(Errc::kInvalidArgument, "ExecInput::write on an empty handle: make it with ExecInput::create()");
  std::lock_guard lk(state_->mu);
  if (state_->closed) return make_error(Errc::kInvalidArgument, "ExecInput::write after close(): the command's stdin is closed");
  if (state_->ended) return make_error(Errc::kClosed, "ExecInput::write: the command has ended; its stdin is gone");
  if (data.empty()) return Result<void>();
  if (state_->pending() + data.size() > kMaxBuffered)
    return make_error(Errc::kIo,
                      fmt::format("ExecInput::write: {} bytes still wait to reach the guest and {} more would pass the "
                                  "bound of {}; retry when buffered() is lower",
                                  state_->pending(), data.size(), kMaxBuffered),
                      EAGAIN);
  state_->buf.append(data);
  state_->notify();
  return Result<void>();
}

void ExecInput::close() const {
  if (!state_) return;
  std::lock_guard lk(state_->mu);
  if (state_->closed) return;
  state_->closed = true;
  state_->notify();
}

size_t ExecInput::buffered() const {
  if (!state_) return 0;
  std::lock_guard lk(state_->mu);
  return state_->pending();
}

namespace detail {

uint64_t CancelState::add(std::function<void(int)> hook) {
  std::lock_guard lk(mu);
  uint64_t id = next_id++;
  used = true;
  if (triggered) hook(0);
  for (int sig : std::exchange(early, {})) hook(sig);
  hooks.emplace(id, std::move(hook));
  return id;
}

void CancelState::remove(uint64_t id) {
  std::lock_guard lk(mu);
  hooks.erase(id);
}

void CancelState::trigger() {
  std::lock_guard lk(mu);
  if (triggered) return;
  triggered = true;
  for (auto& [id, hook] : hooks) hook(0);
}

void CancelState::signal(int sig) {
  std::lock_guard lk(mu);
  if (!used) {
    if (early.size() < kMaxEarly) early.push_back(sig);
    return;
  }
  for (auto& [id, hook] : hooks) hook(sig);
}

}  // namespace detail
}  // namespace ztee
