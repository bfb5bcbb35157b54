#include "io/stream.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace ztee::detail {

void Stream::start(OnData on_data, OnClose on_close) {
  on_data_ = std::move(on_data);
  on_close_ = std::move(on_close);
  arm_recv();
}

void Stream::arm_recv() {
  loop_.recv(fd_.get(), buf_.data(), buf_.size(), [self = shared_from_this()](int res) {
    if (self->closed_) return;
    if (res > 0) {
      self->in_callback_ = true;
      self->on_data_(std::string_view(self->buf_.data(), static_cast<size_t>(res)));
      self->in_callback_ = false;
      if (self->closed_) {
        self->on_data_ = nullptr;  // close() ran inside the callback
        self->on_close_ = nullptr;
        return;
      }
      self->arm_recv();
    } else if (res == -EINTR || res == -EAGAIN) {
      self->arm_recv();
    } else {
      self->finish(res == 0 ? 0 : -res);
    }
  });
}

void Stream::send(std::string data) {
  if (closed_ || data.empty()) return;
  queued_ += data.size();
  out_.push_back(std::move(data));
  if (!sending_) arm_send();
}

void Stream::arm_send() {
  sending_ = true;
  const std::string& front = out_.front();
  loop_.send(fd_.get(), front.data() + out_off_, front.size() - out_off_,
             [self = shared_from_this()](int res) {
               self->sending_ = false;
               if (self->closed_) {
                 self->out_.clear();
                 self->queued_ = 0;
                 return;
               }
               if (res < 0) {
                 if (res == -EINTR || res == -EAGAIN) {
                   self->arm_send();
                   return;
                 }
                 self->finish(-res);
                 return;
               }
               self->out_off_ += static_cast<size_t>(res);
               self->queued_ -= static_cast<size_t>(res);
               if (self->out_off_ == self->out_.front().size()) {
                 self->out_.pop_front();
                 self->out_off_ = 0;
               }
               if (!self->out_.empty()) self->arm_send();
             });
}

void Stream::finish(int err) {
  if (closed_) return;
  OnClose cb = std::move(on_close_);
  close();
  if (cb) cb(err);
}

void Stream::close() {
  if (closed_) return;
  closed_ = true;
  if (!in_callback_) {
    on_data_ = nullptr;
    on_close_ = nullptr;
  }
  if (!sending_) {
    out_.clear();  // else the in-flight send still reads it
    queued_ = 0;
  }
  ::shutdown(fd_.get(), SHUT_RDWR);
  loop_.cancel_fd(fd_.get());
}

}  // namespace ztee::detail
