#!/usr/bin/env python3
"""A client that stops reading: for the e2e tests of what yard buffers for it.

Usage: stalled_reader.py PORT REQUEST_FILE, with stdin a pipe from the test.
Connects to 127.0.0.1:PORT with a small receive buffer, set before
connecting so the window it offers stays small, sends the request (the
file's bytes), reads until the first SSE event, prints "first" and stops
reading. It exits when stdin closes (the test is done with it) or the test
kills it.

Node cannot set SO_RCVBUF on a TCP socket; without it the kernel lets a
stalled reader's socket absorb megabytes before yard buffers anything, and
how long that takes depends on how fast the machine is.
"""
import socket
import sys


def main():
    port = int(sys.argv[1])
    with open(sys.argv[2], "rb") as f:
        request = f.read()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(request)
    seen = b""
    while b"data:" not in seen:
        chunk = s.recv(4096)
        if not chunk:
            print("closed", flush=True)
            return 1
        seen += chunk
    print("first", flush=True)
    # Stops reading; waits for the test to close stdin.
    while sys.stdin.buffer.read1(65536):
        pass
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
