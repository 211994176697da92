#!/bin/bash
# Clients that open a CONNECT tunnel and send only the first bytes of a
# ClientHello cost the proxy nothing while they stall: 200 of them held for
# about 2 s use well under a core (the proxy waits for more bytes instead of
# re-peeking), a normal request meanwhile is answered promptly, and a client
# that hangs up mid-ClientHello is let go at once, not at the header timeout.
. "$(dirname "$0")/lib.sh"

need_cmd python3

STALLED=200
HOLD_S=2

start_origin ORIGIN_PORT
# A long header timeout: the stalled clients must be waited on, not cut off.
start_proxy --header-timeout 20000 --no-capture

# cpu_ticks PID: utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# The stalled clients: each CONNECTs, waits for the 200, sends the 5-byte TLS
# record header of a ClientHello, and holds. "ready" on stdout once all are
# in place; the sockets close when stdin closes or after 30 s.
python3 - "$PROXY_PORT" "$STALLED" > "$tmp/stalled.out" 2> "$tmp/stalled.err" < /dev/null <<'PY' &
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        print("bad answer", got[:40], flush=True)
        sys.exit(1)
    s.sendall(b"\x16\x03\x01\x02\x00")
    socks.append(s)
print("ready", flush=True)
time.sleep(30)
PY
stalled_pid=$!
track_pid "$stalled_pid"
wait_for_grep "$tmp/stalled.out" '^(ready|bad)' 30 ||
    bail "the stalled clients did not connect in 30 s: $(tail -n 3 "$tmp/stalled.err")"
check_match "all $STALLED stalled clients got their 200" '^ready' "$(cat "$tmp/stalled.out")"

before=$(cpu_ticks "$PROXY_PID")
t0=$(now_ms)
code=$(pcurl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ORIGIN_PORT/bytes/1000")
took=$(($(now_ms) - t0))
check_eq "a normal request among stalled tunnels: 200" 200 "$code"
check_le "a normal request among stalled tunnels: under 1 s (ms)" "$took" 1000
sleep "$HOLD_S"
after=$(cpu_ticks "$PROXY_PID")
cpu_ms=$(((after - before) * 1000 / HZ))
note "proxy CPU over ~${HOLD_S} s with $STALLED stalled ClientHellos: ${cpu_ms} ms"
check_le "stalled ClientHellos: proxy CPU under 500 ms" "$cpu_ms" 500

# All of them hang up: the proxy notices at once (it logs each one), long
# before the 20 s header timeout.
kill -TERM "$stalled_pid" 2> /dev/null
wait "$stalled_pid" 2> /dev/null
t0=$(now_ms)
for ((i = 0; i < 100; i++)); do
    n=$(grep -c 'client closed before its first bytes were complete' "$PROXY_ERR")
    [ "$n" -ge "$STALLED" ] && break
    sleep 0.05
done
check_eq "a client hanging up mid-ClientHello is let go at once (count)" "$STALLED" \
    "$(grep -c 'client closed before its first bytes were complete' "$PROXY_ERR")"
check "proxy still serves" proxy_serves "$ORIGIN_PORT"

finish
