#!/bin/bash
# --max-connections beyond the open-file limit: at start the proxy lowers the
# cap to what fits (saying so, with both numbers), so clients past it get the
# usual 503; and when descriptors run out anyway at run time, a client in the
# backlog is answered 503 too instead of hanging there while accept() fails
# in a loop, and that failure is logged at most about once a second.
. "$(dirname "$0")/lib.sh"

need_cmd python3 prlimit

start_origin ORIGIN_PORT

# The proxy under a soft and hard limit of 64 open files; exec keeps the PID.
cat > "$tmp/limited" << WRAP
#!/bin/sh
exec prlimit --nofile=64:64 -- "$TAPWIRE_BIN" "\$@"
WRAP
chmod +x "$tmp/limited"
TAPWIRE_BIN=$tmp/limited start_proxy --no-dashboard --no-capture --max-connections 1000 \
    --idle-timeout 1000 --header-timeout 1000

# 64 - 32 reserved, 2 per connection: 16.
check_match "startup warns and names both numbers" \
    'max-connections 1000 .*limit of 64 .*at most 16 connections' "$(cat "$PROXY_ERR")"

# hold PORT N SECONDS: opens N connections, sends nothing, and reports for
# each what happened within SECONDS: "503 <body>" (answered), "closed"
# (closed without a 503: the idle timeout of an accepted client) or "open"
# (still waiting: a hang).
hold() {
    timeout $(($3 + 10)) python3 - "$@" << 'PY'
import select, socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    socks.append(s)
    time.sleep(0.01)
got = {s: b"" for s in socks}
done = {}
deadline = time.monotonic() + seconds
while len(done) < len(socks) and time.monotonic() < deadline:
    live = [s for s in socks if s not in done]
    r, _, _ = select.select(live, [], [], max(0.0, deadline - time.monotonic()))
    for s in r:
        try:
            chunk = s.recv(4096)
        except OSError:
            chunk = b""
        if chunk:
            got[s] += chunk
        else:
            done[s] = True
for s in socks:
    data = got[s]
    if s not in done:
        print("open")
    elif data.startswith(b"HTTP/1.1 503"):
        print("503", data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip())
    else:
        print("closed")
PY
}

# ---- the lowered cap: 20 clients, 16 fit, 4 get the usual 503 ----
hold "$PROXY_PORT" 20 5 > "$tmp/cap.out"
check_eq "past the lowered cap: 503 too many connections" 4 \
    "$(grep -c '^503 tapwire: too many connections, try again$' "$tmp/cap.out")"
check_eq "past the lowered cap: no client left hanging" 0 "$(grep -c '^open$' "$tmp/cap.out")"
check "proxy still serves after the cap" proxy_serves "$ORIGIN_PORT"

# ---- descriptors run out at run time ----
# Lower the soft limit under the running proxy to just above its highest
# descriptor below 64 (one inherited from the test harness may sit above),
# so accept() fails with EMFILE after a couple of clients. First the
# connections above must be gone: the listening socket is the only one left.
for ((i = 0; i < 100; i++)); do
    [ "$(find "/proc/$PROXY_PID/fd" -lname 'socket:*' | wc -l)" -le 1 ] && break
    sleep 0.05
done
maxfd=$(ls "/proc/$PROXY_PID/fd" | awk '$1 < 64' | sort -n | tail -n 1)
prlimit --pid "$PROXY_PID" --nofile=$((maxfd + 3)): ||
    bail "prlimit --pid cannot lower the proxy's limit"
t0=$(now_ms)
hold "$PROXY_PORT" 10 6 > "$tmp/emfile.out"
secs=$((($(now_ms) - t0 + 999) / 1000))
answered=$(grep -c '^503 tapwire: out of file descriptors, try again$' "$tmp/emfile.out")
check_le "out of descriptors: clients in the backlog are answered 503 (at least 1)" 1 "$answered"
check_eq "out of descriptors: no client left hanging" 0 "$(grep -c '^open$' "$tmp/emfile.out")"
lines=$(grep -c 'accept: Too many open files' "$PROXY_ERR")
note "$answered client(s) answered 503 in ${secs} s; $lines accept error line(s) logged"
check_le "out of descriptors: at most one log line a second (+1)" "$lines" $((secs + 1))

# Back to the full limit: the proxy recovers.
prlimit --pid "$PROXY_PID" --nofile=64: || bail "prlimit --pid cannot restore the limit"
check "proxy serves again once descriptors are back" proxy_serves "$ORIGIN_PORT"

finish
