#!/bin/bash
# Slow clients cannot lock the dashboard out: connections that trickle a
# request one byte at a time (each byte restarts libmicrohttpd's idle
# timeout) are cut when the request is not in whole within
# DASHBOARD_REQUEST_TIMEOUT_MS (10 s), so a normal API request answers
# again within that bound, while a live event stream, whose request came
# whole, is not cut by it.
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=dashboard-test-token-0123456789
REQUEST_TIMEOUT_S=10
SLOW_CLIENTS=70 # more than DASHBOARD_MAX_CONNECTIONS (64)

start_proxy --dashboard-token "$TOKEN"
dashboard_port

code=$(dcurl -o /dev/null -w '%{http_code}' -H "X-Tapwire-Token: $TOKEN" "$D/api/stats")
check_eq "control: /api/stats answers 200" 200 "$code"

# A live event stream opened before the attack, read for longer than the
# request bound: heartbeats come every 5 s.
curl -q -sS -N --noproxy '*' --max-time $((REQUEST_TIMEOUT_S + 4)) \
    -H "X-Tapwire-Token: $TOKEN" "$D/api/events" > "$tmp/events" 2> /dev/null &
events_pid=$!
track_pid "$events_pid"

# The slow clients: each sends a request line and then one header byte per
# second, for at most 30 s; the file says how many the server closed.
python3 - "$DASH_PORT" "$SLOW_CLIENTS" "$tmp/slow" <<'PY' &
import socket, sys, time
port, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for _ in range(count):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    except OSError:
        s.close()
open(out + ".started", "w").write("%d\n" % len(socks))
closed = set()
end = time.monotonic() + 30
while time.monotonic() < end and len(closed) < len(socks):
    time.sleep(1)
    for i, s in enumerate(socks):
        if i in closed:
            continue
        try:
            s.sendall(b"a")
        except OSError:
            closed.add(i)
    open(out, "w").write("%d %d\n" % (len(socks), len(closed)))
PY
slow_pid=$!
track_pid "$slow_pid"
for ((i = 0; i < 100; i++)); do
    [ -s "$tmp/slow.started" ] && break
    sleep 0.05
done
note "slow clients connected: $(cat "$tmp/slow.started" 2> /dev/null)"

# A normal request: retried until it answers, for at most 20 s.
started=$(now_ms)
code=000
while [ $(($(now_ms) - started)) -lt 20000 ]; do
    code=$(curl -q -sS --noproxy '*' --max-time 2 -o /dev/null -w '%{http_code}' \
        -H "X-Tapwire-Token: $TOKEN" "$D/api/stats" 2> /dev/null)
    [ "$code" = 200 ] && break
    sleep 0.2
done
elapsed=$(($(now_ms) - started))
note "/api/stats answered after $elapsed ms"
check_eq "with $SLOW_CLIENTS slow clients: /api/stats still answers 200" 200 "$code"
check_le "with slow clients: answered within the request bound + 4 s (ms)" "$elapsed" \
    $(((REQUEST_TIMEOUT_S + 4) * 1000))

wait_pid "$events_pid" $((REQUEST_TIMEOUT_S + 8))
check_le "live event stream: not cut by the request bound (heartbeats seen)" 3 \
    "$(grep -c '^event: stats' "$tmp/events")"

for ((i = 0; i < 100; i++)); do
    read -r held closed < "$tmp/slow" 2> /dev/null
    [ -n "$held" ] && [ "$held" = "$closed" ] && break
    sleep 0.1
done
check_eq "every slow client was closed by the server" "$held" "$closed"
stop_pid "$slow_pid" 5

check "proxy still running" kill -0 "$PROXY_PID"
stop_proxy
check_eq "proxy stops cleanly" 0 "$?"
finish
