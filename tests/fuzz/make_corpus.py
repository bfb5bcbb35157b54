#!/usr/bin/env python3
"""Writes the seed corpus for agent_frames_fuzz: valid and broken frames."""
import os, struct, sys

MAGIC = 0x4145545A
def frame(t, stream, payload=b"", flags=0, version=2, magic=MAGIC, length=None):
    n = len(payload) if length is None else length
    return struct.pack("<IBBHII", magic, version, t, flags, stream, n) + payload

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
replies = os.path.join(out, "..", "fuzz-corpus-replies")
os.makedirs(replies, exist_ok=True)
reply_seeds = {
    "exit": b"\x00" + b'{"exit_code":0,"signal":0,"timed_out":false,"truncated":false,"duration_us":12}',
    "exit_bad": b"\x00" + b'{"exit_code":300,"signal":-1}',
    "error": b"\x01" + b'{"errno":2,"message":"cwd /nope: No such file or directory"}',
    "error_long": b"\x01" + b'{"errno":99999,"message":"' + b"x" * 5000 + b'"}',
    "hello": b"\x02" + b'{"agent":"ztee-agent","protocol":2}',
    "stdin_ack": b"\x06" + b'{"bytes":262144}',
    "stdin_ack_bad": b"\x06" + b'{"bytes":1048577}',
    "stat": b"\x03" + b'{"type":"file","size":3,"mode":420,"mtime_ns":1}',
    "list": b"\x04" + b'{"entries":[{"name":"a","type":"dir","size":0,"mode":493},{"name":"..","type":"dir","size":0,"mode":1}]}',
    "deep": b"\x04" + b"[" * 2000,
    "diff": b"\x05" + b'[{"kind":"created","type":"file","path":"a/b","mount":"/workspace","mode":420,"size":1,'
            b'"sha256":"' + b"ab" * 32 + b'"},{"kind":"deleted","type":"dir","path":"/etc/x"},'
            b'{"kind":"modified","type":"symlink","path_hex":"2f6c","mode":511,"size":2,"target":".."}]',
    "diff_bad": b"\x05" + b'[{"kind":"created","type":"file","path":"../x","mount":"/workspace","mode":420}]',
}
for name, data in reply_seeds.items():
    with open(os.path.join(replies, name), "wb") as f:
        f.write(data)
net = os.path.join(out, "..", "fuzz-corpus-net-policy")
os.makedirs(net, exist_ok=True)
net_seeds = {
    "cidr_port": b"10.0.0.0/8:443/tcp", "range": b"192.0.2.7:8000-8080", "udp": b"198.18.0.53:53/udp",
    "bare": b"198.18.0.10", "v6": b"::1:80", "hostbits": b"10.0.0.1/8:80", "zero": b"0.0.0.0/0:1",
    "reversed": b"1.2.3.4:90-80", "junk": b"1.2.3.4:80/icmp\x00\xff",
}
for name, data in net_seeds.items():
    with open(os.path.join(net, name), "wb") as f:
        f.write(data)
seeds = {
    "exec_ok": frame(4, 1, b"hello\n") + frame(5, 1, b"err") + frame(21, 1, b'{"bytes":4}') +
               frame(6, 1, b'{"exit_code":0,"signal":0}'),
    "hello": frame(1, 2, b'{"agent":"x","protocol":2}'),
    "old_version": frame(1, 2, b'{"agent":"x","protocol":1}', version=1),
    "data_eof": frame(9, 3, b"abc") + frame(9, 3, b"", flags=1) + frame(15, 3, b'{"size":3}'),
    "bad_magic": frame(4, 1, b"x", magic=0),
    "bad_type": frame(99, 1, b"x"),
    "host_only": frame(2, 1, b"{}"),
    "too_long": frame(4, 1, length=0xFFFFFFFF),
    "partial": frame(4, 1, b"abcdef")[:10],
    "zero_stream": frame(4, 0, b"x"),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
