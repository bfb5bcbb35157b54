#!/usr/bin/python3
"""Runs examples/approver_webhook against webhooks served on loopback by this
test: one that approves (the example prints 42 and the audit log records who
approved), one that refuses (exit 126 with its reason), one that answers
garbage and one that fails with HTTP 500 (both deny). Usage: SCRIPT BINARY"""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading

binary = sys.argv[1]
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what, file=sys.stderr)


class Hook(http.server.BaseHTTPRequestHandler):
    reply = (200, b"{}")
    requests = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.requests.append((self.path, self.headers.get("Content-Type"), body))
        code, data = Hook.reply
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/approve"

with tempfile.TemporaryDirectory() as tmp:
    log = os.path.join(tmp, "audit.jsonl")
    env = dict(os.environ, ZTEE_APPROVAL_URL=url, ZTEE_AUDIT_LOG=log)

    def run(reply):
        Hook.reply = reply
        Hook.requests.clear()
        return subprocess.run([binary], env=env, capture_output=True, text=True, timeout=300)

    r = run((200, json.dumps({"approve": True, "by": "alice"}).encode()))
    check(r.returncode == 0 and r.stdout == "42\n", f"approved: rc {r.returncode}, out {r.stdout!r}, err {r.stderr!r}")
    check(len(Hook.requests) == 1, f"approved: {len(Hook.requests)} webhook requests")
    if Hook.requests:
        path, ctype, body = Hook.requests[0]
        d = json.loads(body)
        check(path == "/approve" and ctype == "application/json", f"request {path} {ctype}")
        check(d.get("tool") == "python" and d.get("tier") == "L4" and d.get("trace") == "webhook-example",
              f"description {d}")
    with open(log) as f:
        records = [json.loads(line) for line in f]
    check(any(x["event"] == "approval_granted" and x.get("by") == "alice" for x in records),
          "no approval_granted record by alice")

    r = run((200, json.dumps({"approve": False, "by": "bob", "reason": "not on a Friday"}).encode()))
    check(r.returncode == 126 and "denied by bob: not on a Friday" in r.stderr, f"refused: rc {r.returncode}, err {r.stderr!r}")
    r = run((200, b"yes please"))
    check(r.returncode == 126 and "malformed reply" in r.stderr, f"garbage: rc {r.returncode}, err {r.stderr!r}")
    r = run((500, b"{}"))
    check(r.returncode == 126 and "HTTP 500" in r.stderr, f"http 500: rc {r.returncode}, err {r.stderr!r}")
    r = subprocess.run(["ztee", "audit", "verify", log], capture_output=True, text=True,
                       env=dict(os.environ, PATH=os.path.dirname(binary) + ":" + os.environ["PATH"]))
    check(r.returncode == 0 and r.stdout.startswith("OK: "), f"audit verify: {r.stdout} {r.stderr}")

server.shutdown()
if fails:
    sys.exit(f"approver_webhook_test: {len(fails)} failure(s)")
print("approver_webhook_test: approved, refused, malformed and failing webhooks all behaved")
