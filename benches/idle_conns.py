#!/usr/bin/env python3
"""Hold many idle TLS HTTP/2 connections open against a server (python3 stdlib only).

Each connection: TCP connect, TLS handshake with ALPN "h2" (certificate not verified), the
HTTP/2 client preface and an empty SETTINGS frame; then it waits for the server's SETTINGS,
acknowledges it, and sends nothing more (PINGs from the server are answered). No request is
made, so the server holds only the state of an idle HTTP/2 connection.

When all are open it prints one line

    READY opened=K failed=F alive=A seconds=S

and holds them until SIGTERM/SIGINT/SIGUSR1, until stdin reaches end of file (with --stdin),
or until --hold seconds have passed. Before closing it checks each connection once more and
prints

    FINAL opened=K alive=A closed=X goaway=G

(alive: still open and no GOAWAY received). benches/compare.sh reads these two lines and
measures the server's RSS in between.

    python3 benches/idle_conns.py --port 8443 -n 5000 --hold 600
"""

import argparse
import os
import resource
import select
import signal
import socket
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7
ACK = 0x1


def frame(ftype, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", (n >> 16) & 0xFF, n & 0xFFFF, ftype, flags, stream & 0x7FFFFFFF) + payload


class Conn:
    __slots__ = ("sock", "buf", "goaway", "closed")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.goaway = False
        self.closed = False

    def frames(self):
        """Yield the complete frames in the buffer as (type, flags, payload)."""
        while len(self.buf) >= 9:
            hi, lo, ftype, flags, _stream = struct.unpack(">BHBBI", self.buf[:9])
            n = (hi << 16) | lo
            if len(self.buf) < 9 + n:
                return
            payload = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            yield ftype, flags, payload

    def handle(self, ftype, flags, payload):
        if ftype == GOAWAY:
            self.goaway = True
        elif ftype == PING and not flags & ACK:
            self.sock.sendall(frame(PING, ACK, 0, payload))


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            need = hard
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def open_one(ctx, host, port, sni, timeout):
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise
    try:
        if s.selected_alpn_protocol() != "h2":
            raise ConnectionError(f"ALPN selected {s.selected_alpn_protocol()!r}, not h2")
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        c = Conn(s)
        deadline = time.monotonic() + timeout
        got_settings = False
        while not got_settings:
            if time.monotonic() > deadline:
                raise TimeoutError("no SETTINGS from the server")
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed before SETTINGS")
            c.buf += data
            for ftype, flags, payload in c.frames():
                if ftype == SETTINGS and not flags & ACK:
                    s.sendall(frame(SETTINGS, ACK, 0))
                    got_settings = True
                else:
                    c.handle(ftype, flags, payload)
        s.setblocking(False)
        return c
    except BaseException:
        s.close()
        raise


def poll(conns):
    """Read whatever the server sent; update closed/goaway. Never blocks."""
    by_fd = {c.sock.fileno(): c for c in conns if not c.closed}
    fds = list(by_fd)
    for i in range(0, len(fds), 512):
        p = select.poll()
        for fd in fds[i:i + 512]:
            p.register(fd, select.POLLIN)
        for fd, _ev in p.poll(0):
            c = by_fd[fd]
            while True:
                try:
                    data = c.sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                except (OSError, ssl.SSLError):
                    c.closed = True
                    break
                if not data:
                    c.closed = True
                    break
                c.buf += data
                try:
                    for ftype, flags, payload in c.frames():
                        c.handle(ftype, flags, payload)
                except OSError:
                    c.closed = True
                    break
    return sum(1 for c in conns if not c.closed and not c.goaway)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", "--connections", type=int, default=5000)
    ap.add_argument("--sni", default="localhost")
    ap.add_argument("--hold", type=float, default=600.0, help="seconds to hold them at most")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-connection set-up timeout")
    ap.add_argument("--stdin", action="store_true", help="also stop when stdin reaches EOF")
    ap.add_argument("--max-failures", type=int, default=100)
    a = ap.parse_args()

    raise_nofile(a.connections + 256)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])

    stop = {"flag": False}

    def on_signal(_sig, _frm):
        stop["flag"] = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, on_signal)

    conns, failed, last_err = [], 0, None
    t0 = time.monotonic()
    while len(conns) < a.connections and not stop["flag"]:
        try:
            conns.append(open_one(ctx, a.host, a.port, a.sni, a.timeout))
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
            failed += 1
            last_err = e
            if failed >= a.max_failures:
                print(f"giving up after {failed} failures; last: {e!r}", file=sys.stderr)
                break
        if len(conns) % 1000 == 0 and conns:
            print(f"opened {len(conns)}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - t0
    if last_err is not None:
        print(f"{failed} connections failed; last error: {last_err!r}", file=sys.stderr)
    alive = poll(conns)
    print(f"READY opened={len(conns)} failed={failed} alive={alive} seconds={elapsed:.1f}", flush=True)

    deadline = time.monotonic() + a.hold
    while not stop["flag"] and time.monotonic() < deadline:
        if a.stdin:
            r, _, _ = select.select([sys.stdin], [], [], 1.0)
            if r and not os.read(sys.stdin.fileno(), 4096):
                break
        else:
            time.sleep(0.5)
        poll(conns)  # answer PINGs, notice closes

    alive = poll(conns)
    closed = sum(1 for c in conns if c.closed)
    goaway = sum(1 for c in conns if c.goaway)
    print(f"FINAL opened={len(conns)} alive={alive} closed={closed} goaway={goaway}", flush=True)
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass
    return 0 if conns and alive == len(conns) else 1


if __name__ == "__main__":
    sys.exit(main())
