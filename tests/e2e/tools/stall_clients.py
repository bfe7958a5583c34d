#!/usr/bin/env python3
"""Streaming clients that stop reading: for the tests of what yard buffers for them
(stallClients in tests/e2e/lib/router-helpers.mjs: e2e/http-limits, soak/stall).

    stall_clients.py PORT COUNT BODY_FILE

Opens COUNT connections to 127.0.0.1:PORT, each with a 4 KiB receive buffer
and a 1448-byte MSS (set before connecting, so the window stays small and the
server's kernel holds what it would for a remote client: what the server
cannot send then waits in the server), sends one POST
/v1/chat/completions with the JSON in BODY_FILE, reads until the first SSE
"data:" line has arrived, then never reads again. Prints "stalled N" once
every connection has (N of them; the others are counted as "failed F"), then
waits: a line "close" on stdin, or stdin's end, closes every socket and exits.
Node's sockets cannot set SO_RCVBUF, hence Python (standard library only).
"""
import selectors
import socket
import sys
import time


def main():
    port, count, body_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(body_file, "rb") as f:
        body = f.read()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ).encode()
    sel = selectors.DefaultSelector()
    socks, seen = [], {}
    failed = 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # an Ethernet MSS: loopback's 64 KiB one makes the server's kernel size
        # its send buffer at about 2.8 MiB per connection, which a remote client
        # never sees (the initial buffer is twice ten segments)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1448)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(head + body)
        except OSError:
            failed += 1
            s.close()
            continue
        s.setblocking(False)
        socks.append(s)
        seen[s] = b""
        sel.register(s, selectors.EVENT_READ)
    waiting = set(socks)
    deadline = time.monotonic() + 120
    while waiting and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                if not failed:
                    # the first failure says why, on stderr
                    sys.stderr.write("stall_clients.py: closed before an event: %r\n" % seen[s][:300])
                failed += 1
                waiting.discard(s)
                sel.unregister(s)
                continue
            seen[s] += data
            if b"data:" in seen[s]:
                waiting.discard(s)
                sel.unregister(s)  # from now on this client never reads
                seen[s] = b""
    failed += len(waiting)
    print("stalled %d failed %d" % (count - failed, failed), flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            break
    for s in socks:
        s.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
