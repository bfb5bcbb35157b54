// QMP client: line-delimited JSON over QEMU's control socket (capabilities
// negotiation, commands matched by id, asynchronous events). Loop thread only.
#pragma once

#include <ztee/result.hpp>

#include <simdjson.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "io/stream.hpp"

namespace ztee::detail {

class QmpClient {
 public:
  using Reply = std::function<void(Result<std::string> return_json)>;
  using OnEvent = std::function<void(std::string_view event)>;
  using OnFatal = std::function<void(std::string reason)>;

  static constexpr size_t kMaxLine = 1u << 20;

  QmpClient(std::shared_ptr<Stream> stream, OnEvent on_event, OnFatal on_fatal);
  ~QmpClient();
  void start();
  // Sends {"execute": cmd, "arguments": args_json} once negotiation is done.
  void command(std::string cmd, std::string args_json, Reply reply);
  // The same, with `fd` passed alongside (SCM_RIGHTS), e.g. for "getfd".
  // Only when negotiation is done and no other command is in flight (the
  // fd must travel with this command's bytes); else the reply is an error.
  void command_with_fd(std::string cmd, std::string args_json, int fd, Reply reply);
  bool ready() const { return ready_; }
  void close();

  // Feeds bytes as if received (tests).
  void receive(std::string_view bytes);

 private:
  void handle_line(std::string_view line);
  void send_now(const std::string& cmd, const std::string& args, uint64_t id);
  void fatal(std::string reason);

  std::shared_ptr<Stream> stream_;
  OnEvent on_event_;
  OnFatal on_fatal_;
  simdjson::dom::parser parser_;
  std::string line_;
  bool greeted_ = false;
  bool ready_ = false;
  bool dead_ = false;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Reply> pending_;
  struct Queued {
    std::string cmd, args;
    uint64_t id;
  };
  std::deque<Queued> queued_;
};

}  // namespace ztee::detail
