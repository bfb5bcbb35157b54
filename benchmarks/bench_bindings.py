#!/usr/bin/python3
"""ztee-bench-bindings: the per-call cost of run("true") and of a 1 MiB file
read through the Python, Go and Node bindings, against the same calls through
the C ABI, measured in the same run: rounds of (C, Python, Go, Node), each a process
that boots its own sandbox and times CALLS calls after 20 warm-up ones (a fresh sandbox's first runs translate code under TCG). The
figure per language is the median over the rounds of its per-round p50.

Usage: benchmarks/bench_bindings.py BUILD_DIR [--rounds N] [--calls N]
Prints a table, then one JSON metric line per language and call (baseline:
the C ABI's figure, ratio = binding / C). Target: ratio <= 1.10 on run("true").
Also timed: the agent round trip (ping, 10 * CALLS after 50 warm-up ones),
where a binding's own per-call cost is not drowned by the guest's.
Needs root (the jail), the guest image, golang-go and node (the Node side runs
from BUILD_DIR/node, where the build stages the ztee package)."""
import argparse
import json
import os
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--calls", type=int, default=30)
a = ap.parse_args()
if a.rounds < 1 or not 1 <= a.calls <= 1000000:
    ap.error("--rounds must be >= 1 and --calls 1..1000000")
build = os.path.abspath(a.build)
lib = os.path.join(build, "lib")
env = dict(os.environ, PYTHONPATH=os.path.join(build, "python"),
           CGO_LDFLAGS=f"-L{lib} -Wl,-rpath,{lib}", GOCACHE=os.path.join(build, "go", "cache"),
           GOPATH=os.path.join(build, "go", "path"), GOPROXY="off", GOFLAGS="-mod=mod")

# The Go side is built once, outside the timed rounds.
gobin = os.path.join(build, "bin", "ztee-bench-go")
subprocess.run(["go", "build", "-o", gobin, "."], cwd=os.path.join(here, "go"), env=env, check=True)
cmds = {
    "c": [os.path.join(build, "bin", "ztee-bench-capi"), str(a.calls)],
    "python": ["/usr/bin/python3", os.path.join(here, "bench_python.py"), str(a.calls)],
    "go": [gobin, str(a.calls)],
    "node": ["node", os.path.join(here, "bench_node.mjs"), str(a.calls)],
}
cwds = {"node": os.path.join(build, "node")}
backend = subprocess.run(["/usr/bin/python3", "-c", "import ztee; print(ztee.Runtime().backend)"], env=env,
                         capture_output=True, text=True).stdout.strip()
print(f"backend: {backend}")
results = {k: [] for k in cmds}
order = list(cmds)
for r in range(a.rounds):
    # Rotated each round, so no language always runs first (or after the same one).
    for lang in order[r % len(order):] + order[:r % len(order)]:
        cmd = cmds[lang]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwds.get(lang))
        if out.returncode != 0:
            sys.exit(f"ztee-bench-bindings: {lang} failed: {out.stderr.strip()}")
        results[lang].append(json.loads(out.stdout.strip().splitlines()[-1]))

def med(lang, key):
    return statistics.median(x[key] for x in results[lang])

print(f"{a.rounds} rounds of C, Python, Go and Node (order rotated), {a.calls} calls each after 20 warm-up calls; "
      "median of per-round p50s:")
print("  " + " " * 8 + " " + 'run("true") us'.rjust(16) + " " + "read 1 MiB us".rjust(14) + " " + "ping us".rjust(9))
for lang in cmds:
    rounds = ", ".join(f"{x['run_true_p50_us']:.0f}" for x in results[lang])
    print(f"  {lang:8} {med(lang, 'run_true_p50_us'):16.1f} {med(lang, 'read_1mib_p50_us'):14.1f}"
          f" {med(lang, 'ping_p50_us'):9.1f}   (run per round: {rounds})")
print()
for lang in ("python", "go", "node"):
    for key, name in (("run_true_p50_us", "run_true_p50_us"), ("read_1mib_p50_us", "read_1mib_p50_us"),
                      ("ping_p50_us", "ping_p50_us")):
        v, b = med(lang, key), med("c", key)
        print(json.dumps({"metric": f"{lang}_{name}", "value": round(v, 1), "unit": "us",
                          "baseline": round(b, 1), "ratio": round(v / b, 3) if b > 0 else None}))
