#!/usr/bin/python3
"""ztee-tcg-footprint: what a warm exec makes QEMU's software emulation (TCG)
run inside the guest, counted rather than timed: guest instructions, runs of
translated blocks, and the distinct blocks an exec runs (its code footprint),
split into kernel, guest agent and the rest of user space. Under TCG an exec's
time follows its footprint more than its instruction count: every switch of
address space empties QEMU's jump cache, and each distinct block is then looked
up again in the translated-block hash table (benchmarks/README.md, "Where a
warm exec goes under TCG"). Counts do not move with the host's speed, unlike
ztee-bench-kernels' times.

Usage: benchmarks/tcg_footprint/tcg_footprint.py BUILD_DIR [IMAGE_DIR ...]
           [--execs N] [--warm N] [--top K] [--system-map IMAGE_DIR=FILE] [-- CMD...]

IMAGE_DIR defaults to the default image and, if built, the Debian-kernel one
(/var/lib/ztee/images/{default,debian}); with two, the first is compared
against the second. Each boots a sandbox WITHOUT the jail (the plugin is
loaded from BUILD_DIR) with QEMU forced to TCG, runs CMD (default: true)
--warm times, then counts --execs runs of it. Kernel functions are named from
the guest's /proc/kallsyms; for a kernel without kallsyms (the minimal one), from
the System.map that tools/kernel-build.sh keeps beside the same vmlinux in the
kernel cache ($ZTEE_KERNEL_CACHE, default /var/cache/ztee/kernels), or from
--system-map. Needs root.

Prints a table per image, then one JSON metric line per count (value: the
first image, baseline: the second, ratio)."""
import argparse
import bisect
import collections
import filecmp
import json
import os
import shutil
import struct
import sys
import tempfile
import time

KERNEL = 0xFFFF800000000000


def fail(msg):
    print(f"tcg_footprint: error: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args():
    argv = sys.argv[1:]
    cmd = ["true"]
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
        if not cmd:
            fail("nothing after --: give the command to count")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("images", nargs="*")
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--system-map", action="append", default=[], metavar="IMAGE_DIR=FILE")
    a = ap.parse_args(argv)
    if not 1 <= a.execs <= 100000 or not 0 <= a.warm <= 100000 or not 0 <= a.top <= 1000:
        ap.error("--execs must be 1..100000, --warm 0..100000, --top 0..1000")
    a.cmd = cmd
    maps = {}
    for m in a.system_map:
        img, sep, path = m.partition("=")
        if not sep or not os.path.isfile(path):
            ap.error(f"--system-map wants IMAGE_DIR=FILE with an existing FILE: {m}")
        maps[os.path.abspath(img)] = path
    a.maps = maps
    if not a.images:
        a.images = [d for d in ("/var/lib/ztee/images/default", "/var/lib/ztee/images/debian")
                    if os.path.isfile(d + "/manifest.json")]
    a.images = [os.path.abspath(i) for i in a.images]
    for i in a.images:
        if not os.path.isfile(i + "/manifest.json"):
            ap.error(f"{i} is not an image directory (no manifest.json): build one with `ztee image build`")
    if not a.images:
        ap.error("no image: build one with `build/bin/ztee image build`")
    return a


def load_ranges(elf):
    """The PT_LOAD address ranges of a non-PIE ELF program (the guest agent)."""
    with open(elf, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            fail(f"{elf} is not a 64-bit ELF program")
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        out = []
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _, _, vaddr, _, _, memsz = struct.unpack("<IIQQQQQ", f.read(48))
            if p_type == 1:
                out.append((vaddr, vaddr + memsz))
        return out


def cached_system_map(image):
    """The System.map kept in the kernel cache beside a copy of the image's vmlinux."""
    mine = image + "/vmlinux"
    if not os.path.isfile(mine):
        return None
    cache = os.environ.get("ZTEE_KERNEL_CACHE") or "/var/cache/ztee/kernels"
    try:
        entries = sorted(os.listdir(cache))
    except OSError:
        return None
    for e in entries:
        d = os.path.join(cache, e)
        v, m = d + "/vmlinux", d + "/System.map"
        if os.path.isfile(m) and os.path.isfile(v) and os.path.getsize(v) == os.path.getsize(mine) \
                and filecmp.cmp(v, mine, shallow=False):
            return m
    return None


def symbols(text):
    syms = []
    for line in text.splitlines():
        p = line.split()
        if len(p) < 3 or p[1] in "aAU":  # weak (W, V) symbols are real definitions
            continue
        try:
            addr = int(p[0], 16)
        except ValueError:
            continue
        if addr >= KERNEL:
            syms.append((addr, p[2]))
    syms.sort()
    return [s[0] for s in syms], [s[1] for s in syms]


class Vmm:
    """The QEMU process of one sandbox, reached through the plugin's files."""

    def __init__(self, pid, outdir):
        self.pid, self.dir, self.seq = pid, outdir, 0

    def counts(self):
        req = f"{self.dir}/dump.{self.pid}"
        out = f"{self.dir}/{self.pid}.{self.seq}"
        open(req, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(out):
            if time.monotonic() > deadline:
                fail(f"the plugin in QEMU {self.pid} did not write {out} within 30 s (did QEMU load it?)")
            time.sleep(0.02)
        self.seq += 1
        blocks = collections.Counter()
        with open(out) as f:
            for line in f:
                a, n, r = line.split()
                blocks[(int(a, 16), int(n))] += int(r)
        os.unlink(out)
        return blocks


def measure(ztee, rt, image, a, outdir):
    before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    with ztee.Sandbox(runtime=rt, image_dir=image) as sb:
        mine = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in before]
        pids = []
        for p in mine:
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        pids.append(p)
            except (OSError, IndexError, ValueError):
                pass
        if len(pids) != 1:
            fail(f"expected one QEMU process started for {image}, found {pids}")
        vmm = Vmm(pids[0], outdir)
        for _ in range(a.warm):
            sb.exec(a.cmd)
        kallsyms = ""
        if image not in a.maps:
            r = sb.exec(["cat", "/proc/kallsyms"])
            if r.exit_code == 0 and any(not line.startswith("0000000000000000") for line in r.stdout.splitlines()):
                kallsyms = r.stdout
        first = vmm.counts()
        t0 = time.monotonic()
        for _ in range(a.execs):
            r = sb.exec(a.cmd)
        dt = time.monotonic() - t0
        if r.exit_code != 0:
            fail(f"{a.cmd} exited {r.exit_code} in {image}: {r.stderr[:200]}")
        last = vmm.counts()
    mapfile = a.maps.get(image) or (None if kallsyms else cached_system_map(image))
    if mapfile:
        with open(mapfile) as f:
            kallsyms = f.read()
    delta = {k: v - first.get(k, 0) for k, v in last.items() if v > first.get(k, 0)}
    if not delta:
        fail(f"no translated block ran during the execs in {image}")
    return delta, dt, symbols(kallsyms)


def tally(delta, execs, key):
    """Per-exec counts of the blocks in delta, grouped by key(vaddr) (None: left out).
    A block counts as distinct when it ran at least once per exec on average."""
    out = collections.defaultdict(collections.Counter)
    for (vaddr, insns), runs in delta.items():
        k = key(vaddr)
        if k is None:
            continue
        c = out[k]
        c["instructions"] += insns * runs / execs
        c["block runs"] += runs / execs
        c["distinct blocks"] += runs >= execs
    return out


def summarize(delta, execs, agent):
    def part(vaddr):
        if vaddr >= KERNEL:
            return "kernel"
        return "agent" if any(lo <= vaddr < hi for lo, hi in agent) else "other user"

    s = tally(delta, execs, part)
    return {p: s[p] for p in ("kernel", "agent", "other user")}


def main():
    a = parse_args()
    build = os.path.abspath(a.build)
    plugin = build + "/lib/ztee-tcg-footprint.so"
    agent_elf = build + "/bin/ztee-agent"
    for f in (plugin, agent_elf):
        if not os.path.isfile(f):
            fail(f"{f} missing: build the tree first (cmake --build {a.build})")
    if os.geteuid() != 0:
        fail("needs root (sandboxes)")
    qemu = os.environ.get("ZTEE_QEMU") or shutil.which("qemu-system-x86_64")
    if not qemu:
        fail("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    sys.path.insert(0, build + "/python")
    import ztee

    agent = load_ranges(agent_elf)
    results = []
    with tempfile.TemporaryDirectory(prefix="ztee-tcg-footprint.") as outdir:
        wrapper = outdir + "/qemu"
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec "{qemu}" "$@" -plugin "{plugin},dir={outdir}"\n')
        os.chmod(wrapper, 0o755)
        os.environ["ZTEE_QEMU"] = wrapper
        # The plugin is loaded from the build tree, which a jail would not show.
        rt = ztee.Runtime(jail=False, accel="tcg")
        for image in a.images:
            try:
                delta, dt, syms = measure(ztee, rt, image, a, outdir)
            except ztee.Error as e:
                fail(f"{image}: {e}")
            results.append((image, summarize(delta, a.execs, agent), delta, dt, syms))

    cols = ("instructions", "block runs", "distinct blocks")
    for image, s, delta, dt, syms in results:
        print(f"{image}: {a.execs} x {' '.join(a.cmd)} ({dt / a.execs * 1000:.2f} ms each, with the plugin)")
        print(f"  {'per exec':12s}" + "".join(f"{c:>17s}" for c in cols))
        for p in ("kernel", "agent", "other user"):
            print(f"  {p:12s}" + "".join(f"{s[p][c]:17.0f}" for c in cols))
        print(f"  {'total':12s}" + "".join(f"{sum(s[p][c] for p in s):17.0f}" for c in cols))
        if a.top:
            addrs, names = syms
            if not addrs:
                print("  (no kernel symbols: the kernel has no kallsyms and no System.map was found beside its vmlinux"
                      " in the kernel cache; rebuild it with tools/kernel-build.sh --force, or pass"
                      " --system-map IMAGE_DIR=FILE)")
                continue
            def function(vaddr):
                if vaddr < KERNEL:
                    return None
                i = bisect.bisect_right(addrs, vaddr) - 1
                return names[i] if i >= 0 else "?"

            per = tally(delta, a.execs, function)
            print(f"  kernel functions by distinct blocks per exec (top {a.top}):")
            for fn, c in sorted(per.items(), key=lambda kv: -kv[1]["distinct blocks"])[:a.top]:
                print(f"    {c['distinct blocks']:6.0f} {c['instructions']:10.0f}  {fn}")
    if len(results) == 2:
        print(f"\nratios: {results[0][0]} / {results[1][0]}")
    for c in cols:
        for p in ("total", "kernel"):
            vals = [sum(s[q][c] for q in s) if p == "total" else s[p][c] for _, s, _, _, _ in results]
            name = f"tcg_exec_{c.replace(' ', '_')}" + ("" if p == "total" else "_kernel")
            line = {"metric": name, "value": round(vals[0]), "unit": "per exec"}
            if len(vals) == 2:
                line.update(baseline=round(vals[1]), ratio=round(vals[0] / vals[1], 3) if vals[1] else None)
            print(json.dumps(line))


if __name__ == "__main__":
    main()
