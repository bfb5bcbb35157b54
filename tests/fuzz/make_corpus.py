#!/usr/bin/env python3
"""Writes the seed corpus for agent_frames_fuzz: valid and broken frames."""
import os, struct, sys

MAGIC = 0x4145545A
def frame(t, stream, payload=b"", flags=0, version=1, magic=MAGIC, length=None):
    n = len(payload) if length is None else length
    return struct.pack("<IBBHII", magic, version, t, flags, stream, n) + payload

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
seeds = {
    "exec_ok": frame(4, 1, b"hello\n") + frame(5, 1, b"err") + frame(6, 1, b'{"exit_code":0,"signal":0}'),
    "hello": frame(1, 2, b'{"agent":"x","protocol":1}'),
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
