#!/usr/bin/env python3
"""idle_conns.py: the client of scripts/bench.d/connections.

Against one server (host, port, the pids whose VmRSS is summed):

1. RSS before: the server after one warm-up request.
2. N keep-alive connections, each after one GET answered; RSS with them
   idle gives bytes per idle connection.
3. While the N are idle, FRESH requests each on a new connection, one
   after the other: their p99.
4. A second GET on every idle connection, sent together: all answered?
   in how long?
5. The N closed (with RST, so no TIME_WAIT is left to use up ports); RSS
   once the server has let them go, against RSS before.
6. A storm: N connections opened as fast as the client can, each sending
   one GET at once: accepted, answered, p99 of the first answer
   (from connect() to the whole answer), refused (connection refused or
   reset, or a 503 answer).

One thread, epoll, non-blocking sockets; every phase has a time bound.
Prints name=value lines, each name prefixed with PREFIX (e.g. "nginx_").
"""
import errno
import os
import select
import socket
import struct
import sys
import time


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def server_pids(pid):
    """The pid and its children (nginx: the master and its workers)."""
    pids = [pid]
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def response_len(buf):
    """Length of the first whole response in buf, or 0 if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = buf[:end].lower()
    cl = 0
    i = head.find(b"content-length:")
    if i >= 0:
        cl = int(head[i + 15:].split(b"\r\n", 1)[0])
    total = end + 4 + cl
    return total if len(buf) >= total else 0


LINGER0 = struct.pack("ii", 1, 0)


def close_rst(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    except OSError:
        pass
    s.close()


class Conn:
    __slots__ = ("sock", "buf", "t0", "t1", "state", "status")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.t0 = 0.0
        self.t1 = 0.0
        self.state = 0       # 0 connecting, 1 sent, 2 answered, 3 failed
        self.status = 0


def run_batch(addr, conns, req, timeout, fresh):
    """Sends req on every conn (connecting first when fresh) and reads one
    answer each, within timeout seconds. Returns (answered, refused)."""
    ep = select.epoll()
    by_fd = {}
    pending = 0
    for c in conns:
        fd = c.sock.fileno()
        by_fd[fd] = c
        c.buf = b""
        c.t0 = time.monotonic()
        if fresh:
            err = c.sock.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                c.state = 3
                continue
            c.state = 0
            ep.register(fd, select.EPOLLOUT | select.EPOLLIN)
        else:
            try:
                c.sock.send(req)
                c.state = 1
            except OSError:
                c.state = 3
                continue
            ep.register(fd, select.EPOLLIN)
        pending += 1
    deadline = time.monotonic() + timeout
    while pending > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, ev in ep.poll(min(left, 1.0), 4096):
            c = by_fd[fd]
            if c.state == 0:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    c.state = 3
                    pending -= 1
                    ep.unregister(fd)
                    continue
                try:
                    c.sock.send(req)
                except OSError:
                    c.state = 3
                    pending -= 1
                    ep.unregister(fd)
                    continue
                c.state = 1
                ep.modify(fd, select.EPOLLIN)
                continue
            if c.state != 1:
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                c.state = 3
                pending -= 1
                ep.unregister(fd)
                continue
            c.buf += data
            n = response_len(c.buf)
            if n:
                c.t1 = time.monotonic()
                c.status = int(c.buf[9:12])
                c.state = 2
                c.buf = b""
                pending -= 1
                ep.unregister(fd)
    ep.close()
    answered = sum(1 for c in conns if c.state == 2 and c.status == 200)
    refused = sum(1 for c in conns if c.state == 3 or (c.state == 2 and c.status != 200))
    return answered, refused


def p99_ms(vals):
    if not vals:
        return float("nan")
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * 0.99))] * 1000.0


def new_socks(n):
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        out.append(Conn(s))
    return out


def settle(pids, secs):
    """Waits until the RSS has not fallen for 2 s (at most secs: freed
    memory may go back to the kernel a few seconds late); returns it."""
    last = rss_kb(pids)
    end = time.monotonic() + secs
    still = 0
    while time.monotonic() < end and still < 4:
        time.sleep(0.5)
        cur = rss_kb(pids)
        still = still + 1 if cur >= last else 0
        last = min(last, cur)
    return last


def main():
    host, port, pid, n, path, prefix = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                        int(sys.argv[4]), sys.argv[5], sys.argv[6])
    fresh_count = int(os.environ.get("BENCH_FRESH", "200"))
    addr = (host, port)
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    pids = server_pids(pid)
    out = {}

    warm = new_socks(1)
    run_batch(addr, warm, req, 5, True)
    close_rst(warm[0].sock)
    time.sleep(0.5)
    before = settle(pids, 2)

    # Opened in slices of 1,000 so the listen backlog never overflows (the
    # storm below is the test of that).
    idle = []
    for i in range(0, n, 1000):
        part = new_socks(min(1000, n - i))
        run_batch(addr, part, req, 30, True)
        idle += part
    opened = sum(1 for c in idle if c.state == 2)
    time.sleep(1.0)
    with_idle = rss_kb(pids)
    out["idle_conns"] = opened
    out["rss_before_kb"] = before
    out["rss_idle_kb"] = with_idle
    out["bytes_per_idle_conn"] = round((with_idle - before) * 1024 / max(opened, 1))

    lat = []
    for _ in range(fresh_count):
        one = new_socks(1)
        run_batch(addr, one, req, 5, True)
        if one[0].state == 2:
            lat.append(one[0].t1 - one[0].t0)
        close_rst(one[0].sock)
    out["fresh_p99_ms"] = round(p99_ms(lat), 3)

    live = [c for c in idle if c.state == 2]
    t0 = time.monotonic()
    answered, _ = run_batch(addr, live, req, 30, False)
    t1 = max([c.t1 for c in live if c.state == 2] or [t0])
    out["second_request_answered"] = answered
    out["second_request_all_answered"] = 1 if answered == len(live) and answered == n else 0
    out["second_request_ms"] = round((t1 - t0) * 1000.0, 1)
    out["rss_second_kb"] = rss_kb(pids)

    for c in idle:
        close_rst(c.sock)
    idle = live = None
    time.sleep(1.0)
    after = settle(pids, 15)
    out["rss_after_close_kb"] = after
    out["rss_after_close_ratio"] = round(after / before, 3) if before else float("nan")

    storm = new_socks(n)
    t0 = time.monotonic()
    answered, refused = run_batch(addr, storm, req, 60, True)
    out["storm_conns"] = n
    out["storm_accepted"] = sum(1 for c in storm if c.state in (1, 2))
    out["storm_answered"] = answered
    out["storm_refused"] = refused
    out["storm_p99_ms"] = round(p99_ms([c.t1 - c.t0 for c in storm if c.state == 2]), 1)
    out["storm_ms"] = round((max([c.t1 for c in storm if c.state == 2] or [t0]) - t0) * 1000.0, 1)
    out["rss_storm_kb"] = rss_kb(pids)
    for c in storm:
        close_rst(c.sock)
    for k, v in out.items():
        print(f"{prefix}{k}={v}")


if __name__ == "__main__":
    main()
