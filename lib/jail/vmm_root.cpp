#include <elf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include "jail/jail.hpp"

namespace ztee::detail {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLoader = "/lib64/ld-linux-x86-64.so.2";
// Loaded by QEMU at run time (not in its DT_NEEDED closure).
constexpr const char* kTcgModule = "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so";
constexpr const char* kFirmware[] = {"/usr/share/qemu/bios-microvm.bin"};

Error io_error(std::string what, int e) {
  return make_error(Errc::kIo, fmt::format("jail: cannot build the VMM root: {}: {}", what, std::strerror(e)), e);
}

// The jail carries the VMM binary and the libraries the dynamic loader lists
// for it, so the binary must be a dynamically linked x86-64 ELF program. A
// wrapper script or a static binary is refused here with what to do, before
// the loader is asked about it (its answer for a script is an error line, and
// for a static program it may crash).
Result<void> check_vmm_binary(const std::string& file) {
  auto refuse = [&](const std::string& what) -> Result<void> {
    return make_error(Errc::kUnsupported,
                      fmt::format("jail: {} {}; the jail carries only the VMM binary itself and its shared libraries: "
                                  "point the backend (ZTEE_QEMU) at the qemu-system-x86_64 program, or, for development "
                                  "only, run without the jail",
                                  file, what));
  };
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return io_error(file, errno);
  Elf64_Ehdr eh{};
  ssize_t n = ::pread(fd.get(), &eh, sizeof eh, 0);
  if (n >= 2 && eh.e_ident[0] == '#' && eh.e_ident[1] == '!') return refuse("is a script (#!), not an ELF program");
  if (n < static_cast<ssize_t>(sizeof eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return refuse("is not an ELF program");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64)
    return refuse("is not an x86-64 (64-bit) ELF program");
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 512)
    return refuse("has no valid program headers");
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    if (::pread(fd.get(), &ph, sizeof ph, static_cast<off_t>(eh.e_phoff + i * sizeof ph)) != static_cast<ssize_t>(sizeof ph))
      return refuse("has no valid program headers (truncated)");
    if (ph.p_type == PT_INTERP) return {};
  }
  return refuse("is statically linked (no program interpreter)");
}

// The shared libraries `file` needs, as the dynamic loader resolves them.
Result<std::vector<std::string>> library_closure(const std::string& file) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return io_error("socketpair", errno);
  UniqueFd r(sv[0]), w(sv[1]);
  SpawnSpec spec;
  spec.argv = {kLoader, "--list", file};
  spec.env = {"LC_ALL=C"};
  spec.output_fd = w.get();
  auto child = spawn(spec);
  w.reset();
  if (!child) return std::move(child).error();
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  child->kill_and_reap();
  std::vector<std::string> libs;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    auto arrow = line.find("=> ");
    std::string path;
    if (arrow != std::string::npos) {
      path = line.substr(arrow + 3);
    } else {
      auto start = line.find_first_not_of(" \t");
      if (start != std::string::npos) path = line.substr(start);
    }
    path = path.substr(0, path.find(' '));
    if (path == "not") return make_error(Errc::kIo, fmt::format("jail: {} needs a library that is missing: {}", file, line));
    if (path.starts_with('/')) libs.push_back(path);
  }
  if (libs.empty())
    return make_error(Errc::kUnsupported,
                      fmt::format("jail: {} is not a dynamically linked ELF program ({} --list found no libraries); "
                                  "the jail needs the real VMM binary",
                                  file, kLoader));
  return libs;
}

// Host paths outside /usr (merged /usr: /lib, /lib64, /bin, /sbin) map into it.
std::string in_usr(const std::string& p) {
  for (const char* top : {"/lib/", "/lib64/", "/bin/", "/sbin/"})
    if (p.starts_with(top)) return "/usr" + p;
  return p;
}

// Puts host file `p` at tree + p, following (and recreating) symlinks.
Result<void> place(const std::string& tree, const std::string& p0, bool same_fs, std::set<std::string>& done, int depth = 0) {
  std::string p = in_usr(fs::path(p0).lexically_normal().string());
  if (!done.insert(p).second) return {};
  if (depth > 16) return io_error(p + ": too many symlinks", ELOOP);
  if (!p.starts_with("/usr/"))
    return make_error(Errc::kUnsupported, fmt::format("jail: the VMM needs {}, which is outside /usr; the jail only "
                                                      "carries /usr (merged-/usr layout)", p));
  std::string dst = tree + p;
  std::error_code ec;
  fs::create_directories(fs::path(dst).parent_path(), ec);
  if (ec) return io_error("mkdir " + fs::path(dst).parent_path().string(), ec.value());
  struct stat st{};
  if (::lstat(p.c_str(), &st) != 0) return io_error(p, errno);
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlink(p.c_str(), target, sizeof target - 1);
    if (n < 0) return io_error("readlink " + p, errno);
    target[n] = '\0';
    if (::symlink(target, dst.c_str()) != 0) return io_error("symlink " + dst, errno);
    std::string next = target[0] == '/' ? std::string(target) : fs::path(p).parent_path().string() + "/" + target;
    return place(tree, next, same_fs, done, depth + 1);
  }
  if (!S_ISREG(st.st_mode)) return io_error(p + " is not a regular file", EINVAL);
  if (same_fs && ::link(p.c_str(), dst.c_str()) == 0) return {};
  fs::copy_file(p, dst, ec);
  if (ec) return io_error("copy " + p, ec.value());
  return {};
}

}  // namespace

Result<std::string> ensure_vmm_root(const std::string& cache_dir, const std::string& binary, bool kvm) {
  std::error_code ec;
  std::string bin = fs::canonical(binary, ec).string();
  if (ec) return io_error(binary, ec.value());
  struct stat st{};
  if (::stat(bin.c_str(), &st) != 0) return io_error(bin, errno);
  std::string key = fmt::format("{}-{:x}-{:x}-{:x}-{:x}.{:09}", kvm ? "kvm" : "tcg", st.st_dev, st.st_ino, st.st_size,
                                st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  std::string root = cache_dir + "/" + key;
  if (::access((root + "/usr").c_str(), F_OK) == 0) return root;
  if (auto ok = check_vmm_binary(bin); !ok) return ok.error();
  fs::create_directories(cache_dir, ec);
  if (ec) return io_error("mkdir " + cache_dir, ec.value());
  ::chmod(cache_dir.c_str(), 0755);
  unsigned char rnd[4] = {};
  (void)!::getrandom(rnd, sizeof rnd, 0);
  std::string tmp = fmt::format("{}/.tmp-{}-{:02x}{:02x}{:02x}{:02x}", cache_dir, ::getpid(), rnd[0], rnd[1], rnd[2], rnd[3]);
  auto fail = [&](Error e) -> Result<std::string> {
    fs::remove_all(tmp, ec);
    return e;
  };
  if (::mkdir(tmp.c_str(), 0755) != 0) return io_error("mkdir " + tmp, errno);
  struct stat cst{};
  bool same_fs = ::stat(cache_dir.c_str(), &cst) == 0 && cst.st_dev == st.st_dev;
  std::vector<std::string> files = {bin};
  auto libs = library_closure(bin);
  if (!libs) return fail(libs.error());
  files.insert(files.end(), libs->begin(), libs->end());
  if (!kvm) {
    files.push_back(kTcgModule);
    auto mod = library_closure(kTcgModule);
    if (!mod) return fail(mod.error());
    files.insert(files.end(), mod->begin(), mod->end());
  }
  for (const char* f : kFirmware) files.push_back(f);
  std::set<std::string> done;
  for (const auto& f : files)
    if (auto r = place(tmp, f, same_fs, done); !r) return fail(r.error());
  // Directories readable by the sandbox users, nothing writable but by root.
  for (auto it = fs::recursive_directory_iterator(tmp, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_directory() && !it->is_symlink()) ::chmod(it->path().c_str(), 0755);
  if (::rename(tmp.c_str(), root.c_str()) != 0) {
    int e = errno;
    if (e == EEXIST || e == ENOTEMPTY) {  // another runtime built it first
      fs::remove_all(tmp, ec);
      return root;
    }
    return fail(io_error("rename " + tmp, e));
  }
  return root;
}

}  // namespace ztee::detail
