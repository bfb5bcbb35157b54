// Sandbox lifecycle against real microVMs: bad input, guest death, teardown.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include "common.hpp"
#include "../why.hpp"

using ztee::Errc;

namespace {

std::string make_tmpdir() {
  char t[] = "/tmp/ztee-img.XXXXXX";
  REQUIRE(::mkdtemp(t) != nullptr);
  return t;
}

// A copy of the image: the large files hard-linked, initramfs and manifest copied.
std::string copy_image(const std::string& src) {
  std::string dst = make_tmpdir();
  for (const char* f : {"vmlinuz", "vmlinux", "rootfs.ext4"})
    if (::access((src + "/" + f).c_str(), F_OK) == 0)
      REQUIRE(::link((src + "/" + f).c_str(), (dst + "/" + f).c_str()) == 0);
  for (const char* f : {"initramfs.cpio", "manifest.json"}) {
    std::ifstream in(src + "/" + f, std::ios::binary);
    std::ofstream out(dst + "/" + f, std::ios::binary);
    out << in.rdbuf();
  }
  return dst;
}

}  // namespace

TEST_CASE("a missing image names the path and the fix, and leaves nothing behind") {
  int before = test::count_state_entries();
  ztee::SandboxOptions o;
  o.image_dir = "/nonexistent/ztee-image";
  auto r = test::runtime().create_sandbox(o);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kImage);
  CHECK(r.error().message.find("/nonexistent/ztee-image") != std::string::npos);
  CHECK(r.error().message.find("ztee image build") != std::string::npos);
  CHECK(test::count_state_entries() == before);
}

TEST_CASE("a tampered image is refused before boot") {
  std::string img = copy_image(test::image_dir());
  {
    std::fstream f(img + "/initramfs.cpio", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x42');
  }
  int before = test::count_state_entries();
  ztee::SandboxOptions o;
  o.image_dir = img;
  auto r = test::runtime().create_sandbox(o);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kImage);
  CHECK(r.error().message.find(img + "/initramfs.cpio") != std::string::npos);
  CHECK(r.error().message.find("does not match") != std::string::npos);
  CHECK(test::count_state_entries() == before);
  std::system(("rm -rf " + img).c_str());
}

TEST_CASE("a missing QEMU and bad options are clear errors") {
  ztee::RuntimeOptions ro;
  ro.qemu_binary = "/nonexistent/qemu-system-x86_64";
  ro.state_dir = test::state_dir();
  auto rt = ztee::Runtime::create(ro);
  REQUIRE(!rt.ok());
  CHECK(rt.error().code == Errc::kBackendUnavailable);
  CHECK(rt.error().message.find("/nonexistent/qemu-system-x86_64") != std::string::npos);
  CHECK(rt.error().message.find("apt-get install qemu-system-x86") != std::string::npos);

  ztee::RuntimeOptions bad_backend;
  bad_backend.backend = "vmware";
  CHECK(ztee::Runtime::create(bad_backend).error().code == Errc::kInvalidArgument);

  ztee::SandboxOptions o;
  o.vcpus = 0;
  CHECK(test::runtime().create_sandbox(o).error().code == Errc::kInvalidArgument);
  o.vcpus = 1;
  o.memory_mib = 1;
  auto small = test::runtime().create_sandbox(o);
  CHECK(small.error().code == Errc::kInvalidArgument);
  CHECK(small.error().message.find("64..65536") != std::string::npos);
}

TEST_CASE("the guest dying mid-exec fails that sandbox only; destroy leaves nothing") {
  test::shared();  // booted first, so it does not count below
  int fds_before = test::count_fds();
  int entries_before = test::count_state_entries();
  auto sbr = test::runtime().create_sandbox();
  REQUIRE_MESSAGE(sbr.ok(), why(sbr));
  auto sb = std::move(sbr).value();
  int pid = sb.vmm_pid();
  CHECK(test::process_alive(pid));
  CHECK(test::count_state_entries() == entries_before + 1);

  std::promise<ztee::Result<ztee::ExecResult>> long_exec;
  ztee::ExecOptions o;
  o.shell = "sleep 60";
  sb.exec_async(o, [&](ztee::Result<ztee::ExecResult> r) { long_exec.set_value(std::move(r)); });
  // The guest kernel crashes (panic=-1 + -no-reboot: the VMM exits).
  auto crash = sb.run("echo c > /proc/sysrq-trigger");
  REQUIRE(!crash.ok());
  CHECK(crash.error().code == Errc::kSandboxFailed);
  auto pending = long_exec.get_future().get();
  REQUIRE(!pending.ok());
  CHECK(pending.error().code == Errc::kSandboxFailed);
  CHECK(sb.state() == ztee::SandboxState::kFailed);
  CHECK(sb.failure().find("VMM process exited") != std::string::npos);
  auto later = sb.run("true");
  CHECK(later.error().code == Errc::kSandboxFailed);

  // The shared sandbox did not notice.
  auto other = test::shared().run("echo fine");
  REQUIRE(other.ok());
  CHECK(other->stdout_data == "fine\n");

  auto d = sb.destroy();
  CHECK_MESSAGE(d.ok(), why(d));
  auto d2 = sb.destroy();
  REQUIRE(!d2.ok());
  CHECK(d2.error().code == Errc::kClosed);
  CHECK(!test::process_alive(pid));
  CHECK(test::count_state_entries() == entries_before);
  CHECK(test::count_fds() == fds_before);
}

TEST_CASE("a VMM killed from outside fails the sandbox with a reason") {
  auto sbr = test::runtime().create_sandbox();
  REQUIRE_MESSAGE(sbr.ok(), why(sbr));
  auto sb = std::move(sbr).value();
  std::promise<ztee::Result<ztee::ExecResult>> p;
  ztee::ExecOptions o;
  o.shell = "sleep 60";
  sb.exec_async(o, [&](ztee::Result<ztee::ExecResult> r) { p.set_value(std::move(r)); });
  REQUIRE(::kill(sb.vmm_pid(), SIGKILL) == 0);
  auto r = p.get_future().get();
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kSandboxFailed);
  CHECK(r.error().message.find("killed by signal 9") != std::string::npos);
  CHECK(sb.destroy().ok());
}

TEST_CASE("after destroy no process, socket or file of the sandbox remains") {
  test::shared();
  int fds_before = test::count_fds();
  int entries_before = test::count_state_entries();
  auto sbr = test::runtime().create_sandbox();
  REQUIRE_MESSAGE(sbr.ok(), why(sbr));
  auto sb = std::move(sbr).value();
  int pid = sb.vmm_pid();
  std::string dir = test::state_dir() + "/" + sb.id();
  struct stat st{};
  CHECK(::stat(dir.c_str(), &st) == 0);
  CHECK(test::count_fds() > fds_before);
  REQUIRE(sb.run("echo hi > /tmp/x").ok());
  auto d = sb.destroy();
  REQUIRE_MESSAGE(d.ok(), why(d));
  CHECK(sb.state() == ztee::SandboxState::kDestroyed);
  CHECK(sb.vmm_pid() == 0);
  CHECK(!test::process_alive(pid));
  CHECK(::stat(dir.c_str(), &st) != 0);
  CHECK(test::count_state_entries() == entries_before);
  CHECK(test::count_fds() == fds_before);
  auto after = sb.run("true");
  REQUIRE(!after.ok());
  CHECK(after.error().code == Errc::kClosed);
}

TEST_CASE("a sandbox dropped without destroy is still torn down") {
  int entries_before = test::count_state_entries();
  int pid = 0;
  {
    auto sbr = test::runtime().create_sandbox();
    REQUIRE_MESSAGE(sbr.ok(), why(sbr));
    pid = sbr->vmm_pid();
  }
  for (int i = 0; i < 200 && test::process_alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(!test::process_alive(pid));
  for (int i = 0; i < 200 && test::count_state_entries() != entries_before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(test::count_state_entries() == entries_before);
}

TEST_CASE("dropping the last handle with an exec in flight ends it cleanly") {
  std::promise<ztee::Result<ztee::ExecResult>> p;
  int pid = 0;
  {
    auto sbr = test::runtime().create_sandbox();
    REQUIRE_MESSAGE(sbr.ok(), why(sbr));
    pid = sbr->vmm_pid();
    ztee::ExecOptions o;
    o.shell = "sleep 60";
    sbr->exec_async(o, [&](ztee::Result<ztee::ExecResult> r) { p.set_value(std::move(r)); });
  }
  auto f = p.get_future();
  REQUIRE(f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  auto r = f.get();
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::kClosed);
  for (int i = 0; i < 200 && test::process_alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(!test::process_alive(pid));
}
