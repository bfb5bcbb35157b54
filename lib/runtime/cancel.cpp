#include "runtime/cancel.hpp"

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

namespace detail {

uint64_t CancelState::add(std::function<void()> hook) {
  std::lock_guard lk(mu);
  uint64_t id = next_id++;
  if (triggered) hook();
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
  for (auto& [id, hook] : hooks) hook();
}

}  // namespace detail
}  // namespace ztee
