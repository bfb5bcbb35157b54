"""One side of ztee-bench-bindings: run("true") and a 1 MiB read through the
Python binding. Prints {"lang": "python", ...} like ztee-bench-capi.
Usage: PYTHONPATH=build/python /usr/bin/python3 benchmarks/bench_python.py [CALLS]"""
import json
import statistics
import sys
import time

import ztee

USAGE = "usage: bench_python.py [CALLS (1..1000000, default 30)]"
calls = 30
if len(sys.argv) > 1:
    if sys.argv[1] in ("--help", "-h"):
        print(USAGE)
        sys.exit(0)
    if len(sys.argv) > 2 or not sys.argv[1].isdigit() or not 1 <= int(sys.argv[1]) <= 1000000:
        print(f"error: bad arguments {sys.argv[1:]}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    calls = int(sys.argv[1])
with ztee.Sandbox() as sb:
    sb.write_file("/tmp/mib", b"x" * (1 << 20))
    run_us, read_us = [], []
    for i in range(-20, calls):  # 20 warm-up calls
        t0 = time.monotonic()
        sb.exec(["true"])
        t1 = time.monotonic()
        data = sb.read_file("/tmp/mib")
        t2 = time.monotonic()
        assert len(data) == 1 << 20
        if i >= 0:
            run_us.append((t1 - t0) * 1e6)
            read_us.append((t2 - t1) * 1e6)
    ping_us = []
    for i in range(-50, 10 * calls):
        t0 = time.monotonic()
        sb.ping()
        if i >= 0:
            ping_us.append((time.monotonic() - t0) * 1e6)
print(json.dumps({"lang": "python", "run_true_p50_us": round(statistics.median(run_us), 1),
                  "read_1mib_p50_us": round(statistics.median(read_us), 1),
                  "ping_p50_us": round(statistics.median(ping_us), 1), "calls": calls}))
