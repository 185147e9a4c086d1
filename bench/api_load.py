#!/usr/bin/env python3
"""Offer POST /api/jobs/ at a fixed rate and measure the latency a client sees.

    .venv/bin/python bench/api_load.py --url http://127.0.0.1:8000 --rate 100 --duration 30

Registers a user at /api/auth/register/ and signs in at /api/auth/token/ for
a JWT, then submits no-op jobs (`bench_noop`, so the server must load
bench.handlers) in two phases:

  open loop    a request is due every 1/rate seconds, whatever the server does;
               a pool of keep-alive connections sends each as soon as one is
               free, and its latency runs from the time it was due, so a slow
               answer delays the requests behind it and they count it
               (no coordinated omission)
  closed loop  with --max-seconds: a few connections send back to back, for
               the most requests a second the server answers

Prints one JSON line. Runs in its own process, so it does not share the
server's GIL; needs nothing but the standard library and bench.lib.
"""

import argparse
import http.client
import json
import queue
import secrets
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib import percentile

JOBS_PATH = "/api/jobs/"
JOB = json.dumps({"type": "bench_noop", "payload": {}}).encode()


class Client:
    """One keep-alive HTTP connection; a failed request closes it and the next one reconnects."""

    # What a request meets on a keep-alive connection the server closed while it
    # was idle (uvicorn closes one after 5 s): HTTP clients send such a request again.
    STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

    def __init__(self, url: str, token: str | None = None):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Return the status and body; status 0 when the connection failed (twice, if it looked stale)."""
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body, self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                if attempt or not isinstance(exc, self.STALE):
                    return 0, str(exc).encode()


def sign_in(url: str) -> str:
    """Register a new (non-staff) user and return an access token for it."""
    client = Client(url)
    username = f"bench-api-{secrets.token_hex(4)}"
    account = {"username": username, "email": f"{username}@example.com", "password": secrets.token_urlsafe(16)}
    status, body = client.post("/api/auth/register/", json.dumps(account).encode())
    if status != 202:
        sys.exit(f"register answered {status}: {body[:300]!r}")
    credentials = {"username": username, "password": account["password"]}
    status, body = client.post("/api/auth/token/", json.dumps(credentials).encode())
    if status != 200:
        sys.exit(f"token answered {status}: {body[:300]!r}")
    return json.loads(body)["access"]


def open_loop(url: str, token: str, rate: float, duration: float, connections: int) -> dict:
    """Send rate x duration requests on schedule; return latencies from each request's due time."""
    due = queue.SimpleQueue()
    lock = threading.Lock()
    latencies, statuses, finished = [], Counter(), []
    ready = threading.Barrier(connections + 1)

    def send() -> None:
        client = Client(url, token)
        client.post(JOBS_PATH, JOB)  # open the connection and warm the server; not measured
        ready.wait()
        while (when := due.get()) is not None:
            status, _ = client.post(JOBS_PATH, JOB)
            done = time.monotonic()
            with lock:
                latencies.append(done - when)
                statuses[status] += 1
                finished.append(done)

    senders = [threading.Thread(target=send, daemon=True) for _ in range(connections)]
    for sender in senders:
        sender.start()
    ready.wait()
    start = time.monotonic()
    count = round(rate * duration)
    for i in range(count):
        when = start + i / rate
        time.sleep(max(0.0, when - time.monotonic()))
        due.put(when)
    for _ in senders:
        due.put(None)
    for sender in senders:
        sender.join()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    samples = [s * 1000 for s in latencies]
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "connections": connections,
        "requests": count,
        "rps": ok / (max(finished) - start),
        "created": statuses[201],  # jobs the measured requests created (the warm-up made one per connection)
        "errors": count - ok,
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples),
    }


def closed_loop(url: str, token: str, seconds: float, connections: int) -> dict:
    """Send back to back on `connections` connections for `seconds`; return the 2xx answered per second."""
    statuses = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def send() -> None:
        client = Client(url, token)
        mine = Counter()
        while time.monotonic() < deadline:
            mine[client.post(JOBS_PATH, JOB)[0]] += 1
        with lock:
            statuses.update(mine)

    start = time.monotonic()
    senders = [threading.Thread(target=send, daemon=True) for _ in range(connections)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    elapsed = time.monotonic() - start
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "max_rps": ok / elapsed,
        "max_rps_connections": connections,
        "max_rps_seconds": round(elapsed, 2),
        "max_rps_errors": sum(statuses.values()) - ok,
        "max_rps_created": statuses[201],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="The server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=100.0, help="Requests/s offered in the open loop.")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds of open-loop load.")
    parser.add_argument("--connections", type=int, default=16, help="Keep-alive connections in the open loop.")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="Seconds of closed loop afterwards (0: none).")
    parser.add_argument("--max-connections", type=int, default=4, help="Connections in the closed loop.")
    args = parser.parse_args(argv)

    token = sign_in(args.url)
    figures = open_loop(args.url, token, args.rate, args.duration, args.connections)
    if args.max_seconds:
        figures.update(closed_loop(args.url, token, args.max_seconds, args.max_connections))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
