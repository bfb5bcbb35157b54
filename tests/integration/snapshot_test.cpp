// Snapshot templates and copy-on-write clones on real microVMs.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "common.hpp"

using ztee::Errc;

namespace {

// One template per test process: a booted snapshottable sandbox, snapshotted.
const std::string& template_dir() {
  static std::string dir = [] {
    std::string d = test::state_dir() + "/template";
    ztee::SandboxOptions o;
    o.snapshottable = true;
    auto sb = test::runtime().create_sandbox(o);
    if (!sb) FAIL("create_sandbox: " << sb.error().message);
    auto w = sb->run("echo from-template > /tmp/marker && echo tpl > /root/tpl-note && rm /etc/issue");
    REQUIRE(w.ok());
    auto s = sb->snapshot(d);
    if (!s) FAIL("snapshot: " << s.error().message);
    CHECK(sb->state() == ztee::SandboxState::kDestroyed);
    CHECK(sb->run("true").error().code == Errc::kClosed);
    return d;
  }();
  return dir;
}

ztee::Sandbox clone(ztee::GuestAslr aslr = ztee::GuestAslr::kAuto) {
  ztee::SandboxOptions o;
  o.template_dir = template_dir();
  o.guest_aslr = aslr;
  auto sb = test::runtime().create_sandbox(o);
  if (!sb) FAIL("clone: " << sb.error().message);
  return std::move(sb).value();
}

struct FileStamp {
  off_t size;
  int64_t mtime_ns;
  bool operator==(const FileStamp&) const = default;
};
FileStamp stamp(const std::string& path) {
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return {st.st_size, st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
}

std::string copy_template() {
  char t[] = "/tmp/ztee-tmpl.XXXXXX";
  REQUIRE(::mkdtemp(t) != nullptr);
  std::string d = t;
  for (const char* f : {"mem", "state", "template.json"}) {
    std::ifstream in(template_dir() + "/" + f, std::ios::binary);
    std::ofstream out(d + "/" + f, std::ios::binary);
    out << in.rdbuf();
  }
  return d;
}

// Copies the template, lets `tamper` change the copy, tries to clone it, and
// returns the (required) error with the copy's path; the copy is removed.
struct Refusal {
  ztee::Error error;
  std::string dir;
};
Refusal refused_clone(const std::function<void(const std::string& dir)>& tamper) {
  std::string d = copy_template();
  tamper(d);
  ztee::SandboxOptions o;
  o.template_dir = d;
  auto r = test::runtime().create_sandbox(o);
  std::system(("rm -rf " + d).c_str());
  REQUIRE(!r.ok());
  return {r.error(), d};
}

void overwrite_byte(const std::string& path, std::streamoff at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(at);
  f.put('\x5a');
}

// Applies `edit` to the text of dir/template.json right after `key`.
void edit_manifest(const std::string& dir, const std::string& key, const std::function<void(std::string&, size_t)>& edit) {
  std::ifstream in(dir + "/template.json");
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto at = json.find(key);
  REQUIRE(at != std::string::npos);
  edit(json, at + key.size());
  std::ofstream(dir + "/template.json") << json;
}

}  // namespace

TEST_CASE("clones are re-identified: different random bytes and hostnames") {
  auto a = clone();
  auto b = clone();
  auto ra = a.run("head -c 16 /dev/urandom | od -An -tx1; hostname");
  auto rb = b.run("head -c 16 /dev/urandom | od -An -tx1; hostname");
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  CHECK(ra->stdout_data != rb->stdout_data);
  CHECK(ra->stdout_data.find(a.id()) != std::string::npos);
  CHECK(rb->stdout_data.find(b.id()) != std::string::npos);
  CHECK(a.destroy().ok());
  CHECK(b.destroy().ok());
}

// Where the dynamic loader put libc in each of `runs` new processes.
std::vector<std::string> libc_addresses(ztee::Sandbox& sb, int runs) {
  std::vector<std::string> out;
  for (int i = 0; i < runs; ++i) {
    auto r = sb.run("cat /proc/self/maps");
    REQUIRE(r.ok());
    auto pos = r->stdout_data.find("libc.so");
    REQUIRE(pos != std::string::npos);
    auto line = r->stdout_data.rfind('\n', pos);
    out.push_back(r->stdout_data.substr(line == std::string::npos ? 0 : line + 1, 12));
  }
  return out;
}

TEST_CASE("guest ASLR follows the clone's option, not its template's") {
  // The template was booted with the default (kAuto).
  auto on = clone(ztee::GuestAslr::kOn);
  const bool emulated = on.backend() == "qemu/tcg";
  auto off = clone(ztee::GuestAslr::kOff);
  auto dflt = clone();
  auto value = [](ztee::Sandbox& sb) { return sb.run("cat /proc/sys/kernel/randomize_va_space").value().stdout_data; };
  CHECK(value(on) == "2\n");
  CHECK(value(off) == "0\n");
  CHECK(value(dflt) == (emulated ? "0\n" : "2\n"));
  // With ASLR, libc lands at a new address in each process (three equal
  // draws by chance: ~2^-56); without it, always at the same one.
  auto a_on = libc_addresses(on, 3);
  CHECK_FALSE((a_on[0] == a_on[1] && a_on[1] == a_on[2]));
  auto a_off = libc_addresses(off, 3);
  CHECK(a_off[0] == a_off[1]);
  CHECK(a_off[1] == a_off[2]);
  for (auto* sb : {&on, &off, &dflt}) CHECK(sb->destroy().ok());
}

TEST_CASE("a GuestAslr value outside the enum is refused before anything starts") {
  ztee::SandboxOptions o;
  o.guest_aslr = static_cast<ztee::GuestAslr>(7);
  int before = test::count_state_entries();
  auto r = test::runtime().create_sandbox(o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::kInvalidArgument);
  CHECK(r.error().message.find("guest_aslr 7") != std::string::npos);
  CHECK(test::count_state_entries() == before);
}

TEST_CASE("a clone's writes are invisible to the template and to other clones") {
  FileStamp mem_before = stamp(template_dir() + "/mem");
  FileStamp state_before = stamp(template_dir() + "/state");
  auto a = clone();
  auto seen = a.run("cat /tmp/marker; echo changed-by-a > /tmp/marker; head -c 50000000 /dev/zero > /dev/shm/fill");
  REQUIRE(seen.ok());
  CHECK(seen->stdout_data == "from-template\n");
  auto b = clone();
  auto rb = b.run("cat /tmp/marker; ls /dev/shm");
  REQUIRE(rb.ok());
  CHECK(rb->stdout_data == "from-template\n");
  CHECK(a.destroy().ok());
  CHECK(b.destroy().ok());
  CHECK(stamp(template_dir() + "/mem") == mem_before);
  CHECK(stamp(template_dir() + "/state") == state_before);
}

TEST_CASE("a clone's diff shows its own changes, not its template's") {
  auto c = clone();
  auto d0 = c.diff();
  REQUIRE_MESSAGE(d0.ok(), (d0 ? "" : d0.error().message));
  auto has = [](const std::vector<ztee::Change>& cs, const std::string& p) -> const ztee::Change* {
    for (const auto& x : cs)
      if (x.path == p) return &x;
    return nullptr;
  };
  CHECK(has(*d0, "/root/tpl-note") == nullptr);  // the template wrote it
  CHECK(has(*d0, "/etc/issue") == nullptr);      // the template deleted it
  REQUIRE(c.run("echo mine > /root/clone-note && rm /root/tpl-note && echo back > /etc/issue").ok());
  auto d = c.diff("/");
  REQUIRE(d.ok());
  const ztee::Change* mine = has(*d, "/root/clone-note");
  REQUIRE(mine != nullptr);
  CHECK(mine->kind == ztee::Change::Kind::kCreated);
  const ztee::Change* gone = has(*d, "/root/tpl-note");
  REQUIRE(gone != nullptr);
  CHECK(gone->kind == ztee::Change::Kind::kDeleted);
  const ztee::Change* back = has(*d, "/etc/issue");
  REQUIRE(back != nullptr);
  CHECK(back->kind == ztee::Change::Kind::kCreated);
  CHECK(c.destroy().ok());
}

TEST_CASE("pause and resume") {
  auto a = clone();
  REQUIRE(a.pause().ok());
  // A call made while paused completes after resume.
  std::promise<ztee::Result<ztee::ExecResult>> p;
  ztee::ExecOptions o;
  o.shell = "echo after-resume";
  a.exec_async(o, [&](ztee::Result<ztee::ExecResult> r) { p.set_value(std::move(r)); });
  auto f = p.get_future();
  CHECK(f.wait_for(std::chrono::milliseconds(500)) == std::future_status::timeout);
  REQUIRE(a.resume().ok());
  auto r = f.get();
  REQUIRE(r.ok());
  CHECK(r->stdout_data == "after-resume\n");
  CHECK(a.destroy().ok());
}

TEST_CASE("a corrupted or mismatched template is refused with a clear error") {
  template_dir();  // made first, so it does not count below
  int before = test::count_state_entries();
  auto state = refused_clone([](const std::string& d) { overwrite_byte(d + "/state", 1000); });
  CHECK(state.error.code == Errc::kImage);
  CHECK(state.error.message.find(state.dir + "/state") != std::string::npos);
  auto mem = refused_clone([](const std::string& d) { overwrite_byte(d + "/mem", 4096 * 100); });
  CHECK(mem.error.code == Errc::kImage);
  CHECK(mem.error.message.find("does not match") != std::string::npos);
  // A template saved by another VMM version is not restored.
  auto version = refused_clone([](const std::string& d) {
    edit_manifest(d, "\"backend_version\":\"", [](std::string& j, size_t at) { j.insert(at, "OTHER "); });
  });
  CHECK(version.error.code == Errc::kImage);
  CHECK(version.error.message.find("OTHER") != std::string::npos);
  // The image changed since the template was made (its kernel digest differs).
  auto image = refused_clone([](const std::string& d) {
    edit_manifest(d, "\"kernel\":\"", [](std::string& j, size_t at) { j.replace(at, 64, std::string(64, '0')); });
  });
  CHECK(image.error.code == Errc::kImage);
  CHECK(image.error.message.find("changed since the template was made") != std::string::npos);
  ztee::SandboxOptions bigger;
  bigger.template_dir = template_dir();
  bigger.memory_mib = 512;
  auto m = test::runtime().create_sandbox(bigger);
  REQUIRE(!m.ok());
  CHECK(m.error().code == Errc::kImage);
  CHECK(m.error().message.find("256 MiB") != std::string::npos);
  ztee::SandboxOptions missing;
  missing.template_dir = "/nonexistent/template";
  auto n = test::runtime().create_sandbox(missing);
  REQUIRE(!n.ok());
  CHECK(n.error().message.find("/nonexistent/template") != std::string::npos);
  // Nothing was left behind by the refused starts (the template itself lives in the state dir).
  CHECK(test::count_state_entries() == before);
}

TEST_CASE("snapshot needs a snapshottable, idle sandbox and a new directory") {
  auto plain = test::shared().snapshot(test::state_dir() + "/not-snapshottable");
  REQUIRE(!plain.ok());
  CHECK(plain.error().code == Errc::kInvalidArgument);
  CHECK(plain.error().message.find("snapshottable") != std::string::npos);
  struct stat st{};
  CHECK(::stat((test::state_dir() + "/not-snapshottable").c_str(), &st) != 0);
  CHECK(test::shared().ping().ok());
  auto exists = test::shared().snapshot(template_dir());
  REQUIRE(!exists.ok());
  CHECK(exists.error().message.find("pick a new directory") != std::string::npos);
}
