#!/usr/bin/env python3
"""Scenario 8's client of tapwire's dashboard API. Called by bench/run.

  dashboard.py stats --port P --token T
      /api/stats as one JSON line.
  dashboard.py wait --port P --token T --sent S [--timeout SEC]
      Polls /api/stats until the flow writer has accounted for every flow
      sent (written + dropped + write_errors >= S), or nothing has changed
      for 3 s, or SEC pass; prints the last stats as one JSON line.
  dashboard.py time --port P --token T [--requests R] [--budget SEC]
      Times GET /api/flows in four shapes, R requests each after 3 warm-ups,
      on one keep-alive connection, each request written to last byte read:
        list    ?limit=100
        filter  ?limit=100&status=2xx&q=bench  (matches every flow)
        page2   ?limit=100&before=NEXT          (NEXT from the first page)
        rare    ?limit=100&q=zzzz-no-such-flow  (matches none: every row read)
      Prints {"list": {"p50_ms", "p99_ms", "n", "flows", "errors"}, ...}.
      A shape stops early when it has used SEC seconds (n says how many ran).

Only 127.0.0.1; every request has a timeout. The token goes in the
X-Tapwire-Token header.
"""
import argparse
import http.client
import json
import sys
import time

HOST = "127.0.0.1"


class Api:
    def __init__(self, port, token, timeout=30):
        self.port, self.token, self.timeout = port, token, timeout
        self.conn = None

    def get(self, path):
        """(status, body bytes) on a kept-alive connection, reconnecting once."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", path, headers={"X-Tapwire-Token": self.token})
                r = self.conn.getresponse()
                body = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, body
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def json(self, path):
        status, body = self.get(path)
        if status != 200:
            raise RuntimeError("GET %s: HTTP %d: %s" % (path, status, body[:200]))
        return json.loads(body)


def percentile(sorted_v, p):
    """Nearest rank, as bench/loadgen.c."""
    if not sorted_v:
        return None
    rank = max(1, min(len(sorted_v), int(p / 100.0 * len(sorted_v) + 0.999999)))
    return sorted_v[rank - 1]


def cmd_stats(a):
    print(json.dumps(Api(a.port, a.token).json("/api/stats")))


def cmd_wait(a):
    api = Api(a.port, a.token, timeout=10)
    deadline = time.monotonic() + a.timeout
    last, last_change = None, time.monotonic()
    st = {}
    while True:
        try:
            st = api.json("/api/stats")
        except Exception as e:  # the proxy is busy or gone: keep the last figures
            print("dashboard.py: %s" % e, file=sys.stderr)
        key = (st.get("stored"), st.get("written"), st.get("dropped"), st.get("write_errors"))
        now = time.monotonic()
        if key != last:
            last, last_change = key, now
        accounted = (st.get("written") or 0) + (st.get("dropped") or 0) + (st.get("write_errors") or 0)
        if accounted >= a.sent:
            break
        if now - last_change >= 3 or now >= deadline:
            break
        time.sleep(0.1)
    print(json.dumps(st))


def time_shape(api, path, requests, budget):
    times, errors, flows = [], 0, None
    for _ in range(3):  # warm-up: the read connection's statements and cache
        try:
            api.get(path)
        except Exception:
            pass
    start = time.monotonic()
    for _ in range(requests):
        t0 = time.perf_counter()
        try:
            status, body = api.get(path)
        except Exception as e:
            errors += 1
            print("dashboard.py: GET %s: %s" % (path, e), file=sys.stderr)
            continue
        t1 = time.perf_counter()
        if status != 200:
            errors += 1
            continue
        times.append((t1 - t0) * 1000.0)
        if flows is None:
            flows = len(json.loads(body).get("flows", []))
        if time.monotonic() - start > budget:
            break
    times.sort()
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
            "n": len(times), "flows": flows, "errors": errors, "path": path}


def cmd_time(a):
    api = Api(a.port, a.token)
    out = {}
    out["list"] = time_shape(api, "/api/flows?limit=100", a.requests, a.budget)
    out["filter"] = time_shape(api, "/api/flows?limit=100&status=2xx&q=bench", a.requests, a.budget)
    first = api.json("/api/flows?limit=100")
    nxt = first.get("next")
    if nxt is not None:
        out["page2"] = time_shape(api, "/api/flows?limit=100&before=%d" % nxt, a.requests, a.budget)
    else:
        out["page2"] = {"p50_ms": None, "p99_ms": None, "n": 0, "flows": 0, "errors": 0,
                        "path": "(no second page)"}
    out["rare"] = time_shape(api, "/api/flows?limit=100&q=zzzz-no-such-flow", a.requests, a.budget)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("stats", "wait", "time"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--token", required=True)
        if name == "wait":
            p.add_argument("--sent", type=int, required=True)
            p.add_argument("--timeout", type=float, default=120)
        if name == "time":
            p.add_argument("--requests", type=int, default=100)
            p.add_argument("--budget", type=float, default=60)
    a = ap.parse_args()
    {"stats": cmd_stats, "wait": cmd_wait, "time": cmd_time}[a.cmd](a)


if __name__ == "__main__":
    main()
