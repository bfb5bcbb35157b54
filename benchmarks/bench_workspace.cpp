// ztee-bench-workspace: what a read-only workspace mount costs, against the
// other way to get a host tree into a sandbox (copying it in through the
// guest agent), measured in the same run.
//
//   1. set-up: building the read-only ext4 image of a tree of N files
//      (mkfs.ext4 -d), and create_sandbox with the mount against
//      create_sandbox without one (the difference is what the mount adds);
//      baseline: copying the same tree in with write_file, file by file;
//   2. reading every file of the tree inside the guest (find | cat) from the
//      mount, against the copied tree in the guest's own filesystem;
//   3. reading one large file (64 MiB) from the mount, against the same file
//      in the guest's tmpfs;
//   4. diff() after the guest changed M files, and export_changes of them.
//
// Usage: ztee-bench-workspace [--files N] [--rounds R] [--changes M]
// Needs root and the guest image.
#include "bench_common.hpp"

#include <filesystem>
#include <fstream>

#include "workspace/workspace.hpp"

using namespace ztee;
using namespace ztee::bench;
namespace fs = std::filesystem;

namespace {

void make_tree(const std::string& root, long files, std::vector<std::pair<std::string, std::string>>* out) {
  fs::remove_all(root);
  std::string block(1024, 'x');
  for (long i = 0; i < files; ++i) {
    std::string rel = fmt::format("d{:03}/f{:05}.txt", i % 100, i);
    fs::create_directories(fs::path(root + "/" + rel).parent_path());
    std::string data = fmt::format("{:08}", i) + block.substr(8);
    std::ofstream(root + "/" + rel, std::ios::binary) << data;
    if (out) out->emplace_back(rel, data);
  }
}

double run_ms(Sandbox& sb, const std::string& cmd) {
  uint64_t t0 = now_ns();
  auto r = sb.run(cmd);
  if (!r || r->exit_code != 0) die("run " + cmd + ": " + (r ? r->stderr_data : r.error().message));
  return ms_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv, "ztee-bench-workspace [--files N] [--rounds R] [--changes M]");
  long files = args.num("--files", 10000);
  long rounds = args.num("--rounds", 3);
  long changes = args.num("--changes", 100);
  args.finish();
  char tmpl[] = "/tmp/ztee-bench-ws.XXXXXX";
  if (!::mkdtemp(tmpl)) die("mkdtemp");
  std::string base = tmpl, tree = base + "/tree";
  std::vector<std::pair<std::string, std::string>> contents;
  make_tree(tree, files, &contents);
  std::printf("tree: %ld files of 1 KiB in 100 directories\n", files);

  RuntimeOptions ro;
  ro.state_dir = base + "/state";
  auto rt = Runtime::create(ro);
  if (!rt) die("runtime: " + rt.error().message);

  // 1. set-up
  std::vector<double> image_ms, plain_ms, mounted_ms, copy_ms;
  for (long r = 0; r < rounds; ++r) {
    std::string img = fmt::format("{}/img{}.ext4", base, r);
    uint64_t t0 = now_ns();
    auto t = detail::build_mount_image(tree, img);
    if (!t) die("build_mount_image: " + t.error().message);
    image_ms.push_back(ms_since(t0));
    fs::remove(img);

    t0 = now_ns();
    auto plain = rt->create_sandbox();
    if (!plain) die("create: " + plain.error().message);
    plain_ms.push_back(ms_since(t0));
    t0 = now_ns();
    if (auto r = plain->run("mkdir -p /root/tree && cd /root/tree && for i in $(seq -f %03g 0 99); do mkdir d$i; done");
        !r || r->exit_code != 0)
      die("mkdir in the guest failed");
    for (const auto& [rel, data] : contents)
      if (auto w = plain->write_file("/root/tree/" + rel, data); !w) die("write_file: " + w.error().message);
    copy_ms.push_back(ms_since(t0));
    (void)plain->destroy();

    SandboxOptions so;
    so.mounts = {{tree, "/w"}};
    t0 = now_ns();
    auto m = rt->create_sandbox(so);
    if (!m) die("create with a mount: " + m.error().message);
    mounted_ms.push_back(ms_since(t0));
    (void)m->destroy();
  }
  double image = percentile(image_ms, 0.5), plain = percentile(plain_ms, 0.5), mounted = percentile(mounted_ms, 0.5),
         copy = percentile(copy_ms, 0.5);
  std::printf("set-up (p50 of %ld): image build %.0f ms; create %.0f ms without a mount, %.0f ms with it "
              "(+%.0f ms); copying the tree in with write_file: %.0f ms\n",
              rounds, image, plain, mounted, mounted - plain, copy);

  // 2. and 3. reads
  SandboxOptions so;
  so.mounts = {{tree, "/w"}};
  auto m = rt->create_sandbox(so);
  if (!m) die("create with a mount: " + m.error().message);
  run_ms(*m, "cp -a /w /root/copy && sync && echo 3 > /proc/sys/vm/drop_caches");
  std::vector<double> from_mount, from_copy;
  for (long r = 0; r < rounds; ++r) {
    run_ms(*m, "echo 3 > /proc/sys/vm/drop_caches");
    from_mount.push_back(run_ms(*m, "find /w -type f -exec cat {} + > /dev/null"));
    run_ms(*m, "echo 3 > /proc/sys/vm/drop_caches");
    from_copy.push_back(run_ms(*m, "find /root/copy -type f -exec cat {} + > /dev/null"));
  }
  double tm = percentile(from_mount, 0.5), tc = percentile(from_copy, 0.5);
  std::printf("reading every file (p50): %.0f ms from the mount (cold cache), %.0f ms from a copy in the "
              "guest's memory (its tmpfs-backed root)\n",
              tm, tc);
  (void)m->destroy();

  std::string big = base + "/big";
  fs::create_directories(big);
  {
    std::ofstream f(big + "/blob", std::ios::binary);
    std::string chunk(1 << 20, '\0');
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 2654435761u >> 24);
    for (int i = 0; i < 64; ++i) f << chunk;
  }
  so.mounts = {{big, "/big"}};
  auto b = rt->create_sandbox(so);
  if (!b) die("create with the big mount: " + b.error().message);
  run_ms(*b, "cp /big/blob /tmp/blob");
  std::vector<double> big_mount, big_tmp;
  for (long r = 0; r < rounds; ++r) {
    run_ms(*b, "echo 3 > /proc/sys/vm/drop_caches");
    big_mount.push_back(run_ms(*b, "cat /big/blob > /dev/null"));
    big_tmp.push_back(run_ms(*b, "cat /tmp/blob > /dev/null"));
  }
  double bm = percentile(big_mount, 0.5), bt = percentile(big_tmp, 0.5);
  std::printf("reading 64 MiB (p50): %.0f ms from the mount (%.0f MB/s, cold cache), %.0f ms from tmpfs (%.0f MB/s)\n",
              bm, 64 * 1.048576 / (bm / 1000), bt, 64 * 1.048576 / (bt / 1000));
  (void)b->destroy();

  // 4. diff and export of M changed files
  so.mounts = {{tree, "/w"}};
  auto d = rt->create_sandbox(so);
  if (!d) die("create with a mount: " + d.error().message);
  run_ms(*d, fmt::format("for i in $(seq 0 {}); do echo changed >> /w/d$(printf %03d $((i % 100)))/f$(printf %05d $i).txt; "
                         "done",
                         changes - 1));
  std::vector<double> diff_ms;
  size_t n = 0;
  for (long r = 0; r < rounds; ++r) {
    uint64_t t0 = now_ns();
    auto c = d->diff("/w");
    if (!c) die("diff: " + c.error().message);
    diff_ms.push_back(ms_since(t0));
    n = c->size();
  }
  std::string dest = base + "/dest";
  fs::create_directories(dest);
  ExportOptions eo;
  eo.dest_dir = dest;
  uint64_t t0 = now_ns();
  auto e = d->export_changes(eo);
  if (!e) die("export: " + e.error().message);
  double export_ms = ms_since(t0);
  std::printf("diff of %zu changed files (p50): %.1f ms; export_changes of them to a directory: %.0f ms\n", n,
              percentile(diff_ms, 0.5), export_ms);
  (void)d->destroy();

  print_metric("create_with_mount_ms", mounted, "ms", plain);
  print_metric("mount_image_build_ms", image, "ms", copy);
  print_metric("read_tree_from_mount_ms", tm, "ms", tc);
  print_metric("read_64mib_from_mount_ms", bm, "ms", bt);
  print_metric("diff_changed_files_ms", percentile(diff_ms, 0.5), "ms");
  print_metric("export_changed_files_ms", export_ms, "ms");
  fs::remove_all(base);
  return 0;
}
