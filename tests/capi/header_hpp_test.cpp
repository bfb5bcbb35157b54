// capi/ztee.hpp on its own, compiled strictly as C++17 and C++20 (and once
// with -fno-exceptions), with every template and inline function it has
// instantiated: it must need nothing but ztee.h and the standard library.
// Built, not run.
#include "ztee.hpp"

#include <string>
#include <utility>

int ztee_hpp_header_test();
int ztee_hpp_header_test() {
  int n = ztee::has_feature("qemu") ? 1 : 0;
  n += static_cast<int>(std::string(ztee::version()).size());
  auto rt = ztee::Runtime::create(ztee::RuntimeOptions{});
  if (!rt) return rt.error().status + static_cast<int>(rt.error().to_string().size());
  n += static_cast<int>(rt->backend().size());
  ztee::SandboxOptions so;
  so.net_allow = {"198.18.0.10:8080/tcp"};
  so.guest_aslr = ztee::GuestAslr::kOff;
  auto sb = rt->create_sandbox(so);
  if (!sb) return sb.error().status;
  auto cancel = ztee::Cancel::create();
  ztee::ExecOptions eo;
  eo.argv = {"echo", "hi"};
  eo.env = {{"K", "V"}};
  eo.stdin_data = std::string("in");
  eo.on_stdout = [&n](std::string_view d) { n += static_cast<int>(d.size()); };
  eo.on_stderr = [](std::string_view) {};
  eo.cancel = cancel ? &*cancel : nullptr;
  auto r = sb->exec(eo);
  n += r.ok() ? r->exit_code : r.error().status;
  n += r.value_or(ztee::ExecResult{}).signal;
  auto r2 = sb->run("true", 1000);
  n += r2 ? static_cast<int>(r2->stdout_data.size()) : 0;
  n += sb->write_file("/tmp/x", "data", 0600).ok() ? 1 : 0;
  auto data = sb->read_file("/tmp/x", 100);
  n += data ? static_cast<int>(data->size()) : 0;
  auto st = sb->stat("/tmp/x");
  n += st && st->type == ztee::FileType::kFile ? 1 : 0;
  auto list = sb->list_dir("/tmp");
  n += list ? static_cast<int>(list->size()) : 0;
  n += sb->mkdir("/tmp/d", true, 0700).ok() + sb->remove("/tmp/d", true).ok();
  n += sb->ping().ok() + sb->pause().ok() + sb->resume().ok() + sb->snapshot("/tmp/t").ok();
  ztee::PoolOptions po;
  po.sandbox.memory_mib = 256;
  auto pool = rt->create_pool(po);
  if (pool) {
    auto leased = pool->lease(100);
    n += leased ? static_cast<int>(leased->id().size()) : 0;
    auto stats = pool->stats();
    n += stats ? static_cast<int>(stats->lease_wait_hist[0]) : 0;
    auto last = pool->last_error();
    n += last ? static_cast<int>(last->size()) : 0;
    pool->close();
  }
  ztee::Sandbox moved = std::move(sb).value();
  ztee::Result<void> done = moved.destroy();
  done.value();
  return n + (moved ? 1 : 0) + (moved.c_handle() != nullptr);
}
