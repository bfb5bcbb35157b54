#!/usr/bin/env python3
"""Memory of `ztee serve` sandboxes on this host, for the capacity model.

Starts `ztee serve --pool P` on loopback (own key file and state dir in a
temporary directory), creates N sandboxes through its E2B API, runs one
command in each through envd (python3 summing a million numbers, as an agent
step might), then reads for every sandbox's VMM (the server's QEMU children):
  RSS   resident pages, shared ones (a snapshot template's) counted in full
  PSS   shared pages split between the processes that share them
  USS   pages only this VMM has (private clean + dirty)
and the server's own RSS. (MemAvailable is not used: other work on the host
moves it.) Prints them, ending with one
JSON line per figure; `baseline` is the guest memory each sandbox is given
(--memory). Everything it started is stopped and removed at the end.

usage: deploy/measure-memory.py [--ztee build/bin/ztee] [--sandboxes N] [--pool P] [--memory MIB]
Needs root (the jail) and the guest image.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time


def rollup(pid):
    """RSS, PSS and USS of a process in KiB, from smaps_rollup."""
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                vals[m.group(1)] = int(m.group(2))
    return vals["Rss"], vals["Pss"], vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)


def vmm_children(ppid):
    """{pid: libztee sandbox id (QEMU's -name)} of the QEMU children of ppid."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "qemu-system" in argv[0] and int(stat[stat.rindex(")") + 2:].split()[1]) == ppid and "-name" in argv:
            out[int(pid)] = argv[argv.index("-name") + 1]
    return out


def request(host, port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(host, port, timeout=300)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def run_in(host, port, box, cmd):
    """process.Process/Start over Connect (JSON codec); returns the exit code."""
    msg = json.dumps({"process": {"cmd": "/bin/sh", "args": ["-c", cmd]}}).encode()
    status, data = request(host, port, "POST", "/process.Process/Start", struct.pack(">BI", 0, len(msg)) + msg, {
        "Content-Type": "application/connect+json",
        "E2b-Sandbox-Id": box["sandboxID"],
        "X-Access-Token": box["envdAccessToken"],
    })
    if status != 200:
        raise RuntimeError(f"Start answered {status}: {data[:200]!r}")
    code = None
    i = 0
    while i + 5 <= len(data):
        n = struct.unpack(">I", data[i + 1:i + 5])[0]
        ev = json.loads(data[i + 5:i + 5 + n] or b"{}")
        end = ev.get("event", {}).get("end")
        if end is not None:
            code = end.get("exitCode", 0)
        if "error" in ev:
            raise RuntimeError(f"command failed: {ev['error']}")
        i += 5 + n
    return code


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ztee", default=os.path.join(here, "..", "build", "bin", "ztee"))
    ap.add_argument("--sandboxes", type=int, default=8)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--memory", type=int, default=256)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ztee-measure-memory-")
    server = None
    try:
        key = subprocess.run([a.ztee, "serve", "keygen", "--keys", f"{tmp}/keys"], check=True,
                             capture_output=True, text=True).stdout.strip()
        server = subprocess.Popen([a.ztee, "serve", "--listen", "127.0.0.1:0", "--keys", f"{tmp}/keys",
                                   "--pool", str(a.pool), "--memory", str(a.memory), "--node", "measure",
                                   "--max-sandboxes", str(a.sandboxes + 1), "--state-dir", f"{tmp}/state"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = server.stdout.readline()
        m = re.search(r"listening on http://([0-9.]+):(\d+) \((.*?);", line)
        if not m:
            raise RuntimeError(f"ztee serve did not start: {line!r}")
        host, port, backend = m.group(1), int(m.group(2)), m.group(3)
        print(f"backend: {backend}")
        boxes = []
        for _ in range(a.sandboxes):
            status, body = request(host, port, "POST", "/sandboxes", json.dumps({"templateID": "base", "timeout": 600}),
                                   {"X-API-Key": key, "Content-Type": "application/json"})
            if status != 201:
                raise RuntimeError(f"create answered {status}: {body[:200]!r}")
            boxes.append(json.loads(body))
        for b in boxes:
            code = run_in(host, port, b, "python3 -c 'print(sum(range(10**6)))' >/dev/null")
            if code != 0:
                raise RuntimeError(f"the command exited {code} in {b['sandboxID']}")
        time.sleep(3 + 3 * a.pool)  # the pool refilled
        vmms = vmm_children(server.pid)
        leased = {b["sandboxID"].rsplit("-measure", 1)[0] for b in boxes}
        used = [rollup(p) for p, name in vmms.items() if name in leased]
        idle = [rollup(p) for p, name in vmms.items() if name not in leased]  # the refilled pool
        if len(used) != len(boxes):
            raise RuntimeError(f"found {len(used)} VMMs of {len(boxes)} sandboxes")
        rss = [f[0] / 1024 for f in used]
        pss = [f[1] / 1024 for f in used]
        uss = [f[2] / 1024 for f in used]
        idle_rss = [f[0] / 1024 for f in idle]
        server_rss = rollup(server.pid)[0] / 1024
        print(f"sandboxes measured: {len(used)} (each ran a command), pool {a.pool}, guest memory {a.memory} MiB")
        print(f"VMM RSS MiB:  median {statistics.median(rss):.1f}  max {max(rss):.1f}")
        print(f"VMM PSS MiB:  median {statistics.median(pss):.1f}  max {max(pss):.1f}")
        print(f"VMM USS MiB:  median {statistics.median(uss):.1f}  max {max(uss):.1f}")
        if idle_rss:
            print(f"ready pool sandbox (never leased) RSS MiB: median {statistics.median(idle_rss):.1f}")
        print(f"shared with other processes (RSS - USS: QEMU's code; with a pool, the template's memory): "
              f"{statistics.median(rss) - statistics.median(uss):.1f} MiB")
        print(f"ztee serve process RSS: {server_rss:.1f} MiB")
        for name, value in [("vmm_rss_mib", statistics.median(rss)), ("vmm_pss_mib", statistics.median(pss)),
                            ("vmm_uss_mib", statistics.median(uss))]:
            print(json.dumps({"metric": name, "value": round(value, 1), "unit": "MiB", "baseline": a.memory,
                              "ratio": round(value / a.memory, 3)}))
        print(json.dumps({"metric": "serve_rss_mib", "value": round(server_rss, 1), "unit": "MiB",
                          "baseline": None, "ratio": None}))
        for b in boxes:
            request(host, port, "DELETE", f"/sandboxes/{b['sandboxID']}", headers={"X-API-Key": key})
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                subprocess.run([a.ztee, "gc", "--state-dir", f"{tmp}/state"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
