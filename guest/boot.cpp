#include "boot.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent/mount_path.hpp"
#include "util.hpp"

namespace ztee::guest {

void log_line(std::string_view msg) {
  std::string line = "ztee-agent: ";
  line.append(msg);
  line.push_back('\n');
  ssize_t r = ::write(STDERR_FILENO, line.data(), line.size());
  (void)r;
}

std::string errno_text(std::string_view what, int err) {
  std::string s(what);
  s += ": ";
  s += std::strerror(err);
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void power_off() {
  ::sync();
  // PID 1 powering off the VM: the host sees the VMM exit.
  ::reboot(RB_POWER_OFF);
  // microvm without ACPI power-off: a reset with -no-reboot also ends QEMU.
  ::reboot(RB_AUTOBOOT);
  for (;;) ::pause();
}

void die(const std::string& msg) {
  log_line("fatal: " + msg + " (powering off)");
  power_off();
}

namespace {

void sleep_ms(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void mkdir_p(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return;
  if (errno == ENOENT) {
    auto slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      mkdir_p(path.substr(0, slash), 0755);
      if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return;
    }
  }
  die(errno_text("mkdir " + path, errno));
}

void mount_or_die(const char* src, const std::string& target, const char* fstype,
                  unsigned long flags, const char* data) {
  mkdir_p(target, 0755);
  if (::mount(src, target.c_str(), fstype, flags, data) != 0)
    die(errno_text(std::string("mount ") + fstype + " on " + target, errno));
}

std::string normalize_modname(std::string s) {
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

// "mod.param=value" words of the kernel command line for `mod`, joined by spaces.
std::string module_params(const std::string& cmdline, const std::string& mod) {
  std::string out;
  std::istringstream words(cmdline);
  std::string w;
  std::string prefix = normalize_modname(mod) + ".";
  while (words >> w) {
    auto dot = w.find('.');
    auto eq = w.find('=');
    if (dot == std::string::npos || (eq != std::string::npos && eq < dot)) continue;
    if (normalize_modname(w.substr(0, dot + 1)) != prefix) continue;
    if (!out.empty()) out += ' ';
    out += w.substr(dot + 1);
  }
  return out;
}

void load_modules() {
  std::ifstream list("/etc/ztee/modules");
  if (!list) return;  // a kernel with everything built in needs none
  std::string cmdline = read_file("/proc/cmdline");
  std::string name;
  while (std::getline(list, name)) {
    if (name.empty() || name[0] == '#') continue;
    std::string path = "/lib/modules/" + name;
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) die(errno_text("open module " + path, errno));
    std::string mod = name.substr(0, name.find('.'));
    std::string params = module_params(cmdline, mod);
    if (syscall(SYS_finit_module, fd.get(), params.c_str(), 0) != 0 && errno != EEXIST)
      die(errno_text("load module " + name, errno));
  }
}

bool wait_for(const char* path, int timeout_ms) {
  for (int waited = 0;; waited += 5) {
    struct stat st{};
    if (::stat(path, &st) == 0) return true;
    if (waited >= timeout_ms) return false;
    sleep_ms(5);
  }
}

Fd open_dir_or_die(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) die(errno_text("open " + path, errno));
  return fd;
}

// Guest paths of the workspace mounts: "ztee.mounts=/a,/b" on the command line.
std::vector<std::string> mount_paths(const std::string& cmdline) {
  std::vector<std::string> out;
  std::istringstream words(cmdline);
  std::string w;
  const std::string key = "ztee.mounts=";
  while (words >> w) {
    if (w.rfind(key, 0) != 0) continue;
    std::string list = w.substr(key.size());
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      std::string p = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!proto::valid_mount_path(p)) die("bad workspace mount path on the kernel command line: \"" + p + "\"");
      out.push_back(p);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (out.size() > 16) die("more than 16 workspace mounts on the kernel command line");
  return out;
}

// The root disk and then the workspace disks (by serial "ztee-m<i>"), as
// /dev paths. Waits up to 5 s for all of them.
std::vector<std::string> find_disks(size_t workspaces) {
  if (workspaces == 0) {
    if (!wait_for("/dev/vda", 5000))
      die("root disk /dev/vda did not appear within 5 s (virtio-blk device and modules?)");
    return {"/dev/vda"};
  }
  for (int waited = 0;; waited += 5) {
    std::vector<std::string> out(workspaces + 1);
    size_t found = 0;
    if (DIR* d = ::opendir("/sys/block")) {
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name.rfind("vd", 0) != 0) continue;
        std::string serial = read_file("/sys/block/" + name + "/serial");
        while (!serial.empty() && (serial.back() == '\n' || serial.back() == '\0')) serial.pop_back();
        size_t slot = 0;
        if (serial.rfind("ztee-m", 0) == 0) {
          slot = static_cast<size_t>(std::atoi(serial.c_str() + 6)) + 1;
          if (slot > workspaces) continue;
        }
        if (out[slot].empty() && wait_for(("/dev/" + name).c_str(), 0)) {
          out[slot] = "/dev/" + name;
          ++found;
        }
      }
      ::closedir(d);
    }
    if (found == out.size()) return out;
    if (waited >= 5000)
      die("only " + std::to_string(found) + " of " + std::to_string(out.size()) +
          " virtio disks (root and workspaces) appeared within 5 s");
    sleep_ms(5);
  }
}

void move_mount(const std::string& from, const std::string& to) {
  mkdir_p(to, 0755);
  if (::mount(from.c_str(), to.c_str(), nullptr, MS_MOVE, nullptr) != 0)
    die(errno_text("move mount " + from + " to " + to, errno));
}

void loopback_up() {
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) die(errno_text("socket for lo", errno));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) die(errno_text("SIOCGIFFLAGS lo", errno));
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) die(errno_text("SIOCSIFFLAGS lo", errno));
}

// Makes fds 0, 1 and 2 the console when the kernel could not.
void ensure_console() {
  if (::fcntl(STDERR_FILENO, F_GETFD) >= 0) return;
  int fd = ::open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) return;
  for (int i = 0; i < 3; ++i)
    if (fd != i) ::dup2(fd, i);
  if (fd > 2) ::close(fd);
}

}  // namespace

std::vector<Layer> boot_or_die() {
  ::umask(022);
  // Kernel pseudo filesystems: PID 1 in a fresh VM, nothing else is mounted.
  mount_or_die("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  mount_or_die("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  mount_or_die("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  ensure_console();

  load_modules();

  // Workspace disks carry the serial "ztee-m<i>"; the root disk has none.
  std::vector<std::string> mounts = mount_paths(read_file("/proc/cmdline"));
  std::vector<std::string> disks = find_disks(mounts.size());
  const std::string& root = disks[0];
  // Read-only lower layer: "noload" skips journal replay, so the image is never written.
  mount_or_die(root.c_str(), "/lower", "ext4", MS_RDONLY, "noload");
  mount_or_die("tmpfs", "/rw", "tmpfs", 0, "mode=0755");
  mkdir_p("/rw/upper", 0755);
  mkdir_p("/rw/work", 0755);
  mount_or_die("overlay", "/newroot", "overlay", 0,
               "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work");
  std::vector<Layer> layers;
  layers.push_back(Layer{"", open_dir_or_die("/rw/upper"), open_dir_or_die("/lower")});
  // Workspaces: /dev/vdb, /dev/vdc, ... read-only (the VMM also opens them
  // read-only), each under its own overlay whose writes stay in guest memory.
  for (size_t i = 0; i < mounts.size(); ++i) {
    const std::string& dev = disks[i + 1];
    std::string lower = "/mnt/lower" + std::to_string(i), rw = "/rw/m" + std::to_string(i);
    mount_or_die(dev.c_str(), lower, "ext4", MS_RDONLY | MS_NODEV | MS_NOSUID, "noload");
    mkdir_p(rw + "/upper", 0755);
    mkdir_p(rw + "/work", 0755);
    mount_or_die("overlay", "/newroot" + mounts[i], "overlay", MS_NODEV | MS_NOSUID,
                 ("lowerdir=" + lower + ",upperdir=" + rw + "/upper,workdir=" + rw + "/work").c_str());
    layers.push_back(Layer{mounts[i], open_dir_or_die(rw + "/upper"), open_dir_or_die(lower)});
  }

  move_mount("/proc", "/newroot/proc");
  move_mount("/sys", "/newroot/sys");
  move_mount("/dev", "/newroot/dev");
  // switch_root: pivot_root cannot leave the initramfs, so move the new root over "/".
  if (::chdir("/newroot") != 0) die(errno_text("chdir /newroot", errno));
  if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) die(errno_text("move /newroot to /", errno));
  if (::chroot(".") != 0) die(errno_text("chroot", errno));
  if (::chdir("/") != 0) die(errno_text("chdir /", errno));

  mount_or_die("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_or_die("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  mount_or_die("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=0666");
  mount_or_die("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  ::symlink("/proc/self/fd", "/dev/fd");
  ::symlink("/proc/self/fd/0", "/dev/stdin");
  ::symlink("/proc/self/fd/1", "/dev/stdout");
  ::symlink("/proc/self/fd/2", "/dev/stderr");
  ::symlink("pts/ptmx", "/dev/ptmx");
  loopback_up();
  // The image's /etc/hostname until HELLO names the sandbox.
  std::string host = read_file("/etc/hostname");
  while (!host.empty() && (host.back() == '\n' || host.back() == ' ')) host.pop_back();
  if (!host.empty() && host.size() <= 64) ::sethostname(host.data(), host.size());

  ::clearenv();
  ::setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
  ::setenv("HOME", "/root", 1);
  ::setenv("LANG", "C.UTF-8", 1);
  return layers;
}

int open_port(const std::string& name, int timeout_ms) {
  for (int waited = 0;; waited += 5) {
    if (DIR* d = ::opendir("/sys/class/virtio-ports")) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::string dev = e->d_name;
        std::string n = read_file("/sys/class/virtio-ports/" + dev + "/name");
        while (!n.empty() && (n.back() == '\n' || n.back() == '\0')) n.pop_back();
        if (n != name) continue;
        ::closedir(d);
        std::string path = "/dev/" + dev;
        wait_for(path.c_str(), 1000);
        return ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
      }
      ::closedir(d);
    }
    if (waited >= timeout_ms) {
      errno = ENOENT;
      return -1;
    }
    sleep_ms(5);
  }
}

}  // namespace ztee::guest
