// unified_patch: `diff -u` over private copies of both sides.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "image/image.hpp"
#include "workspace/fs.hpp"
#include "workspace/workspace.hpp"

namespace ztee::detail {

namespace {

constexpr size_t kBinaryProbe = 8192;
constexpr size_t kMaxFile = 256u << 20;   // a host file read for the patch
constexpr size_t kMaxPatch = 1024u << 20;  // diff's output for one file

bool is_binary(const std::string& s) { return s.find('\0', 0) < std::min(s.size(), kBinaryProbe); }

// "a/<path>", C-quoted as git does when the path has '"', '\\' or control bytes.
std::string label(const char* side, const std::string& path) {
  std::string raw = std::string(side) + "/" + path;
  bool plain = std::none_of(raw.begin(), raw.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7f || c == '"' || c == '\\';
  });
  if (plain) return raw;
  std::string out = "\"";
  for (unsigned char c : raw) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f)
          out += fmt::format("\\{:03o}", c);
        else
          out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

Result<void> write_file(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return make_error(Errc::kIo, fmt::format("workspace: cannot create {}: {}", path, std::strerror(errno)), errno);
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return make_error(Errc::kIo, fmt::format("workspace: cannot write {}: {}", path, std::strerror(errno)), errno);
    off += static_cast<size_t>(n);
  }
  return {};
}

// The host's version of a file beneath host_dir, never through a symlink.
Result<std::string> read_host(int root, const std::string& host_dir, const std::string& rel) {
  UniqueFd fd(open_beneath(root, rel, O_RDONLY));
  if (!fd.valid()) {
    int e = errno;
    return make_error(e == ENOENT ? Errc::kNotFound : e == ELOOP || e == EXDEV ? Errc::kPermission : Errc::kIo,
                      fmt::format("workspace: cannot read the host's {}/{} for the patch: {}{}", host_dir, rel, std::strerror(e),
                                  e == ELOOP ? " (a symlink on the way: not followed)" : ""),
                      e);
  }
  struct stat st{};
  if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode))
    return make_error(Errc::kInvalidArgument, fmt::format("workspace: the host's {}/{} is not a regular file", host_dir, rel));
  return read_fd(fd.get(), kMaxFile, fmt::format("{}/{}", host_dir, rel));
}

}  // namespace

Result<std::string> unified_patch(const std::string& host_dir, const std::vector<Change>& changes, const FetchFn& fetch) {
  UniqueFd root(::open(host_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid())
    return make_error(errno == ENOENT ? Errc::kNotFound : Errc::kIo,
                      fmt::format("workspace: cannot open {}: {}", host_dir, std::strerror(errno)), errno);
  std::vector<const Change*> files;
  for (const auto& c : changes)
    if (c.type == FileType::kFile) files.push_back(&c);
  std::sort(files.begin(), files.end(), [](const Change* a, const Change* b) { return a->path < b->path; });

  auto tmp = TempDir::create("ztee-patch");
  if (!tmp) return std::move(tmp).error();
  std::string patch;
  int n = 0;
  for (const Change* c : files) {
    const std::string& rel = c->path;
    if (rel.empty() || rel[0] == '/' || rel.find('\0') != std::string::npos ||
        ("/" + rel + "/").find("/../") != std::string::npos)
      return make_error(Errc::kPermission, fmt::format("workspace: refusing the path {:?} in a patch: it must be relative, without '..'", rel));
    std::string old_text, new_text;
    bool has_old = c->kind != Change::Kind::kCreated, has_new = c->kind != Change::Kind::kDeleted;
    if (has_old) {
      auto r = read_host(root.get(), host_dir, rel);
      if (!r) return std::move(r).error();
      old_text = std::move(*r);
    }
    if (has_new) {
      if (!fetch) return make_error(Errc::kInvalidArgument, "workspace: unified_patch needs a fetch function for file contents");
      auto r = fetch(*c);
      if (!r) {
        Error e = std::move(r).error();
        e.message = fmt::format("workspace: cannot fetch the content of {:?}: {}", rel, e.message);
        return e;
      }
      std::string want = c->sha256;
      std::transform(want.begin(), want.end(), want.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      if (sha256_hex(*r) != want)
        return make_error(Errc::kPermission, fmt::format("workspace: the content of {:?} no longer has the sha256 of the diff "
                                                         "(the guest changed it): take the diff again",
                                                         rel));
      new_text = std::move(*r);
    }
    std::string a = has_old ? label("a", rel) : "/dev/null";
    std::string b = has_new ? label("b", rel) : "/dev/null";
    if ((has_old && is_binary(old_text)) || (has_new && is_binary(new_text))) {
      if (!has_old || !has_new || old_text != new_text) patch += fmt::format("Binary files {} and {} differ\n", a, b);
      continue;
    }
    std::string old_path = "/dev/null", new_path = "/dev/null";
    ++n;
    if (has_old) {
      old_path = fmt::format("{}/{}.a", tmp->path(), n);
      if (auto r = write_file(old_path, old_text); !r) return std::move(r).error();
    }
    if (has_new) {
      new_path = fmt::format("{}/{}.b", tmp->path(), n);
      if (auto r = write_file(new_path, new_text); !r) return std::move(r).error();
    }
    auto run = run_tool({"/usr/bin/diff", "-u", "--label", a, "--label", b, "--", old_path, new_path}, kMaxPatch);
    if (!run) return std::move(run).error();
    if (run->exit_code != 0 && run->exit_code != 1)
      return make_error(Errc::kIo, fmt::format("workspace: diff -u for {:?} failed ({}): {}", rel,
                                               run->exit_code < 0 ? "killed" : fmt::format("exit status {}", run->exit_code),
                                               run->output));
    patch += run->output;
    if (has_old) ::unlink(old_path.c_str());
    if (has_new) ::unlink(new_path.c_str());
  }
  return patch;
}

}  // namespace ztee::detail
