// The guest agent's event loop: one epoll set over the agent port, a signalfd
// for SIGCHLD, and per-exec pipes and timers. Single-threaded; nothing in it
// blocks except short local file I/O.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/protocol.hpp"
#include "boot.hpp"
#include "util.hpp"

namespace ztee::guest {

// One running command (EXEC), keyed by its stream id.
struct Exec {
  uint32_t stream = 0;
  pid_t pid = -1;
  Fd out, err, in, timer, drain;
  std::string in_buf;      // stdin from the host the command has not read yet: in_buf[in_off..]
  size_t in_off = 0;
  uint64_t in_unacked = 0; // stdin bytes gone from in_buf and not yet in a STDIN_ACK
  bool in_eof = false;
  uint64_t cap = 0;
  uint64_t forwarded = 0;
  bool truncated = false;
  bool timed_out = false;
  bool reaped = false;
  bool in_drain = false;  // the drain timer is reading the pipes: do not finish yet
  bool out_grown = false, err_grown = false;  // pipe enlarged (on_exec_output)
  int status = 0;
  uint64_t start_ns = 0;
};

// One FILE_WRITE in progress.
struct FileWrite {
  Fd fd;
  std::string path;
  std::string tmp;  // empty in append mode
  mode_t mode = 0644;
};

// One FILE_READ being pumped out.
struct FileRead {
  Fd fd;
  std::string path;
  uint64_t size = 0;
  uint64_t sent = 0;
};


class Agent {
 public:
  // `port_name`: the virtio-serial port to serve; `port_path` (if not empty)
  // is opened directly instead (for running the agent outside a VM).
  // `start_ms`: CLOCK_BOOTTIME when the agent started (reported in HELLO).
  Agent(std::string port_name, std::string port_path, int64_t start_ms);
  ~Agent();
  int run();  // never returns in a VM
  // The overlays DIFF reports (from boot_or_die; none outside a VM).
  void set_layers(std::vector<Layer> layers) { layers_ = std::move(layers); }

 private:
  using Handler = std::function<void(uint32_t events)>;

  // event registration
  void watch(int fd, uint32_t events, Handler h);
  void rewatch(int fd, uint32_t events);
  void unwatch(int fd);

  // port
  void open_port_or_retry();
  void on_port(uint32_t events);
  void port_lost(const char* why);
  void flush_out();
  void update_port_events();
  void throttle_check();

  // output
  void send(proto::MsgType t, uint32_t stream, std::string_view payload, uint16_t flags = 0);
  void send_json(proto::MsgType t, uint32_t stream, const nlohmann::json& j);
  void send_error(uint32_t stream, int err, const std::string& message);

  // requests
  void on_frame(const proto::FrameHeader& h, std::string_view payload);
  void handle_control(const proto::FrameHeader& h, const nlohmann::json& req);
  void handle_hello(uint32_t stream, const nlohmann::json& req, bool reseed);
  void handle_exec(uint32_t stream, const nlohmann::json& req);
  void handle_stdin(uint32_t stream, std::string_view data, bool eof);
  void handle_signal(uint32_t stream, const nlohmann::json& req);
  void handle_file_write(uint32_t stream, const nlohmann::json& req);
  void handle_data(uint32_t stream, std::string_view data, bool eof);
  void handle_file_read(uint32_t stream, const nlohmann::json& req);
  void handle_file_stat(uint32_t stream, const nlohmann::json& req);
  void handle_file_list(uint32_t stream, const nlohmann::json& req);
  void handle_file_remove(uint32_t stream, const nlohmann::json& req);
  void handle_file_mkdir(uint32_t stream, const nlohmann::json& req);
  void handle_diff(uint32_t stream, const nlohmann::json& req);

  // exec life cycle
  void on_sigchld();
  void on_exec_output(Exec& e, int which);
  void on_exec_stdin_writable(Exec& e);
  // Counts n stdin bytes as gone from the agent and tells the host when
  // enough are (or all are), so it may send more (proto::kStdinWindow).
  void stdin_consumed(Exec& e, uint64_t n);
  void exec_reaped(Exec& e, int status);
  void maybe_finish(Exec& e);
  void arm_pending_drains();
  void finish_exec(uint32_t stream);
  void close_exec_fd(Exec& e, Fd& fd);

  // file reads are pumped while the outgoing queue has room
  void pump_reads();

  std::string port_name_;
  std::string port_path_;
  int64_t start_ms_ = 0;
  Fd epoll_;
  Fd sigfd_;
  Fd port_;
  Fd retry_timer_;
  Fd devnull_;  // stdin of commands run without "stdin": opened once
  proto::FrameDecoder decoder_;
  std::string out_;
  size_t out_off_ = 0;
  bool port_wants_out_ = false;
  bool throttled_ = false;
  struct Watch {
    uint32_t gen;
    uint32_t events;
    Handler handler;
  };
  std::unordered_map<int, Watch> handlers_;
  uint32_t next_gen_ = 0;
  bool port_up_ = false;
  std::map<uint32_t, std::unique_ptr<Exec>> execs_;
  std::map<pid_t, uint32_t> pid_to_stream_;
  std::vector<uint32_t> drain_pending_;  // reaped execs whose pipes were open: see arm_pending_drains
  std::map<uint32_t, std::unique_ptr<FileWrite>> writes_;
  std::map<uint32_t, std::unique_ptr<FileRead>> reads_;
  std::vector<Layer> layers_;
};

}  // namespace ztee::guest
