#!/usr/bin/env python3
"""What a service manager's notify socket receives: for tests/e2e/notify.test.mjs.

    notify_sink.py SOCKET_PATH

Binds a unix datagram socket at SOCKET_PATH (as systemd does for NOTIFY_SOCKET),
with SO_PASSCRED so each datagram comes with its sender's pid, prints
{"listening": PATH}, then one JSON line per datagram:
{"pid": SENDER, "at_us": CLOCK_MONOTONIC at receipt, "fields": {NAME: VALUE},
"raw": TEXT}. Ends when stdin ends. Node cannot bind datagram sockets of this
kind, hence Python (standard library only).
"""
import json
import os
import select
import socket
import struct
import sys
import time


def main():
    path = sys.argv[1]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    print(json.dumps({"listening": path}), flush=True)
    creds = struct.calcsize("3i")
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            break
        if sock in ready:
            record(sock, creds)
    # What was sent before stdin ended is still printed.
    sock.setblocking(False)
    try:
        while True:
            record(sock, creds)
    except BlockingIOError:
        pass
    sock.close()
    os.unlink(path)


def record(sock, creds):
    data, anc, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(creds))
    at_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    pid = None
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", value[:creds])[0]
    text = data.decode("utf-8", "replace")
    fields = {}
    for line in text.split("\n"):
        if "=" in line:
            name, value = line.split("=", 1)
            fields[name] = value
    print(json.dumps({"pid": pid, "at_us": at_us, "fields": fields, "raw": text}), flush=True)


if __name__ == "__main__":
    main()
