#!/usr/bin/python3
"""Test servers for the network tests, run inside the test's own "internet"
network namespace: TCP listeners that greet each connection with
"ok <addr>:<port>" and UDP listeners that answer any datagram with
"dns-ok <addr>". Writes "ready" to the file named by the first argument once
every socket listens.

usage: inet_server.py READY_FILE tcp:ADDR:PORT... udp:ADDR:PORT...
"""
import selectors
import socket
import sys


def main() -> None:
    ready_file, specs = sys.argv[1], sys.argv[2:]
    sel = selectors.DefaultSelector()
    for spec in specs:
        proto, addr, port = spec.split(":")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        if proto == "tcp":
            s.listen(64)
        sel.register(s, selectors.EVENT_READ, (proto, addr, port))
    with open(ready_file, "w") as f:
        f.write("ready\n")
    while True:
        for key, _ in sel.select():
            proto, addr, port = key.data
            s = key.fileobj
            if proto == "tcp":
                conn, _ = s.accept()
                try:
                    conn.sendall(f"ok {addr}:{port}\n".encode())
                finally:
                    conn.close()
            else:
                _, peer = s.recvfrom(512)
                s.sendto(f"dns-ok {addr}\n".encode(), peer)


if __name__ == "__main__":
    main()
