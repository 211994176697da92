#!/bin/bash
# An HTTP/1.1 client in front of an origin that speaks only HTTP/2 (nghttpd
# selects h2 by ALPN and nothing else): tapwire offers an origin it chose
# (a --reverse listener's, a map-remote's) "http/1.1, h2" and translates
# each request into one stream (h1toh2); an intercepted tunnel's origin is
# offered what the client offered (nothing translated, a 502).
# Through a --reverse listener (TLS and plain), with
# curl --http1.1: GET, POST with content-length and chunked, a response
# with trailers (sent chunked to the client), several requests kept alive
# on one client connection, an Upgrade refused with 502 (and one to an
# origin that prefers h2 but speaks HTTP/1.1 too getting its 101), a map-remote rule
# to the h2-only origin, header and body rules both ways, an intercepted response (resumed, dropped), and the flows' versions
# (HTTP/1.1 from the client, HTTP/2 from the origin), and a kept-alive
# origin connection the origin closed (the request goes again on a new one). nghttpd -v shows the
# origin got HTTP/2 frames. With --no-http2 the origin is not reachable.
. "$(dirname "$0")/lib.sh"

need_cmd nghttpd sqlite3 ss python3
TOKEN=h1toh2-test-token-0123456789abcdef

make_pki
make_localhost_leaf
mkdir -p "$tmp/htdocs"
printf 'hello from an h2-only origin\n' > "$tmp/htdocs/index.html"
head -c 200000 /dev/urandom > "$tmp/htdocs/big.bin"

# start_nghttpd VAR LOG [options...]: nghttpd on 127.0.0.1, an ephemeral
# port (found with ss from its PID; NGHTTPD_PORT=N for that one) into VAR,
# its PID into VAR_PID.
start_nghttpd() {
    local var=$1 log=$2 pid port i
    shift 2
    nghttpd -a 127.0.0.1 -d "$tmp/htdocs" "$@" "${NGHTTPD_PORT:-0}" "$tmp/localhost-key.pem" \
        "$tmp/localhost.pem" > "$log" 2>&1 &
    pid=$!
    track_pid "$pid"
    port=
    for ((i = 0; i < 100; i++)); do
        port=$(ss -ltnpH 2> /dev/null | grep "pid=$pid," | grep -Eo '127\.0\.0\.1:[0-9]+' |
            head -n 1 | sed 's/.*://')
        [ -n "$port" ] && break
        _alive "$pid" || break
        sleep 0.05
    done
    [ -n "$port" ] || bail "nghttpd $* did not start: $(tail -n 5 "$log")"
    printf -v "$var" '%s' "$port"
    printf -v "${var}_PID" '%s' "$pid"
}
start_nghttpd NG_PORT "$tmp/ng.log" -v --echo-upload
start_nghttpd NT_PORT "$tmp/nt.log" --no-content-length --trailer 'x-sum: 42'

out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$NG_PORT" -alpn http/1.1 2>&1)
check_match "the origin selects no http/1.1 (h2 only)" 'No ALPN negotiated' "$out"

printf 'request map-remote name=to-h2 host=mapped.test path=/h2/ https://localhost:%s/\n' \
    "$NG_PORT" > "$tmp/map.rules"
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" \
    --rules "$tmp/map.rules" --rule 'request header User-Agent set ruled-agent' --rule 'response header server set ruled-server' \
    --reverse "127.0.0.1:0=https://localhost:$NG_PORT" \
    --reverse "https://127.0.0.1:0=https://localhost:$NG_PORT" \
    --reverse "https://127.0.0.1:0=https://localhost:$NT_PORT"
dashboard_port
# rev_port SCHEME ORIGIN_PORT: the port of the proxy's --reverse listener of
# that scheme for https://localhost:ORIGIN_PORT (10 s).
rev_port() {
    local i port=
    for ((i = 0; i < 200; i++)); do
        port=$(grep -aE "^reverse proxy listening on $1://127\.0\.0\.1:[0-9]+ for https://localhost:$2\$" \
            "$PROXY_OUT" | head -n 1 | sed -E 's#^reverse proxy listening on [a-z]+://127\.0\.0\.1:([0-9]+).*#\1#')
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || bail "no $1 reverse listener for $2: $(head -c 800 "$PROXY_OUT")"
    echo "$port"
}
REV_PLAIN=$(rev_port http "$NG_PORT")
REV_TLS=$(rev_port https "$NG_PORT")
REV_NT=$(rev_port https "$NT_PORT")
# rcurl: curl --http1.1 at the TLS --reverse listener in front of the
# h2-only origin, as https://localhost:REV_TLS (its leaf minted for that name).
rcurl() { dcurl --http1.1 --cacert "$PROXY_CA" --resolve "localhost:$REV_TLS:127.0.0.1" "$@"; }

U=https://localhost:$REV_TLS
want_index=$(file_sha "$tmp/htdocs/index.html")
want_big=$(file_sha "$tmp/htdocs/big.bin")

# ---- an intercepted tunnel: the origin is offered what the client offered ----
before=$(grep -c 'recv HEADERS frame' "$tmp/ng.log")
out=$(pcurl --http1.1 --cacert "$PROXY_CA" -o /dev/null -w '%{http_version} %{http_code}' \
    "https://localhost:$NG_PORT/index.html?tunnel=1")
check_eq "tunnel: an HTTP/1.1-only client is not translated to an h2-only origin (502)" \
    "1.1 502" "$out"
check_eq "... the origin got no HTTP/2 request" "$before" "$(grep -c 'recv HEADERS frame' "$tmp/ng.log")"

# ---- through the TLS --reverse listener ----
out=$(rcurl -o "$tmp/t1" -w '%{http_version} %{http_code}' "$U/index.html")
check_eq "reverse: curl --http1.1 gets HTTP/1.1 200" "1.1 200" "$out"
check_eq "reverse: the body" "$want_index" "$(file_sha "$tmp/t1")"
check_match "the origin got the request over HTTP/2 (a HEADERS frame with :method)" \
    ':method: GET' "$(cat "$tmp/ng.log")"
check_match "... :authority from the URL" ":authority: localhost:$NG_PORT" "$(cat "$tmp/ng.log")"
check_no_imatch "... no connection-specific field" \
    '^ *(connection|keep-alive|proxy-connection|transfer-encoding|upgrade|host):' \
    "$(cat "$tmp/ng.log")"

check_match "... with the request header rule applied" 'user-agent: ruled-agent' "$(cat "$tmp/ng.log")"

rcurl -D "$tmp/big.h" -o "$tmp/big" "$U/big.bin"
check_eq "reverse: a 200 kB body whole" "$want_big" "$(file_sha "$tmp/big")"
check_imatch "... with the origin's content-length" '^content-length: 200000' "$(tr -d '\r' < "$tmp/big.h")"
check_imatch "... and the response header rule applied" '^server: ruled-server$' \
    "$(tr -d '\r' < "$tmp/big.h")"

head -c 150000 /dev/urandom > "$tmp/up.bin"
want_up=$(file_sha "$tmp/up.bin")
rcurl --data-binary @"$tmp/up.bin" -o "$tmp/echo1" "$U/echo"
check_eq "reverse: POST with content-length echoed whole" "$want_up" "$(file_sha "$tmp/echo1")"
rcurl -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/up.bin" -o "$tmp/echo2" "$U/echo"
check_eq "reverse: POST chunked echoed whole" "$want_up" "$(file_sha "$tmp/echo2")"
rcurl -H 'Expect: 100-continue' --data-binary @"$tmp/up.bin" -o "$tmp/echo3" \
    -w '%{time_total}' "$U/echo" > "$tmp/echo3.t"
check_eq "reverse: POST with Expect: 100-continue" "$want_up" "$(file_sha "$tmp/echo3")"
check_match "... answered at once (curl would wait a second)" '^0\.[0-7]' "$(cat "$tmp/echo3.t")"

# Several requests on one client connection (curl reuses it).
before=$(grep -c 'recv HEADERS frame' "$tmp/ng.log")
out=$(rcurl -w '%{http_code} %{num_connects}\n' \
    -o /dev/null "$U/index.html" -o /dev/null "$U/big.bin" -o /dev/null "$U/index.html" |
    tr '\n' ' ')
check_eq "keep-alive: three requests, one client connection" "200 1 200 0 200 0 " "$out"
after=$(grep -c 'recv HEADERS frame' "$tmp/ng.log")
check_eq "... three streams at the origin" 3 $((after - before))

# ---- trailers: the origin sends no content-length, then HEADERS after DATA ----
dcurl --http1.1 --cacert "$PROXY_CA" --resolve "localhost:$REV_NT:127.0.0.1" --raw \
    -D "$tmp/tr.h" -o "$tmp/tr.body" "https://localhost:$REV_NT/index.html"
check_imatch "trailers: the client gets the body chunked" '^transfer-encoding: chunked' \
    "$(tr -d '\r' < "$tmp/tr.h")"
check_contains "... and the origin's trailer after the last chunk" \
    '|0|x-sum: 42||' "$(tr -d '\r' < "$tmp/tr.body" | tr '\n' '|')"

# ---- an upgrade cannot go to an h2-only origin ----
# After a GET on the same client connection (--next keeps it), so the
# origin is known to have chosen h2 and the 502 can say why.
out=$(rcurl -o /dev/null "$U/index.html" --next --http1.1 --cacert "$PROXY_CA" \
    --resolve "localhost:$REV_TLS:127.0.0.1" -sS --max-time "$CURL_MAX_TIME" --noproxy '*' \
    -o "$tmp/up.page" -w '%{http_code}' \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "$U/ws")
check_eq "upgrade (WebSocket) to an h2-only origin: 502" 502 "$out"
check_match "... saying why" 'only HTTP/2' "$(cat "$tmp/up.page")"

# ---- an origin that prefers h2 but speaks HTTP/1.1 too, through a tunnel ----
# It selects h2 whenever offered (its own order first, as nginx does); a
# tunnel's HTTP/1.1 client has it offered http/1.1 alone: the upgrade gets
# its 101.
python3 "$LIB_DIR/dual_origin.py" "$tmp/dual.port" "$tmp/localhost.pem" "$tmp/localhost-key.pem" \
    upgrade 2> "$tmp/dual.err" &
track_pid $!
wait_port_file DUAL_PORT "$tmp/dual.port" "the dual origin" "$tmp/dual.err"
out=$(pcurl --http1.1 --cacert "$PROXY_CA" --max-time 5 -o /dev/null -w '%{http_code}' \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "https://localhost:$DUAL_PORT/ws" 2> /dev/null)
check_eq "tunnel, upgrade to an origin that prefers h2: its 101 over HTTP/1.1" 101 "$out"

# ---- through --reverse, plain and TLS ----
out=$(dcurl --http1.1 -o "$tmp/r1" -w '%{http_version} %{http_code}' \
    "http://127.0.0.1:$REV_PLAIN/index.html")
check_eq "plain reverse: HTTP/1.1 200" "1.1 200" "$out"
check_eq "plain reverse: the body" "$want_index" "$(file_sha "$tmp/r1")"
dcurl --http1.1 -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/up.bin" -o "$tmp/r2" \
    "http://127.0.0.1:$REV_PLAIN/echo"
check_eq "plain reverse: POST chunked echoed" "$want_up" "$(file_sha "$tmp/r2")"
out=$(dcurl --http1.1 --cacert "$PROXY_CA" --resolve "rev.example:$REV_TLS:127.0.0.1" \
    -o "$tmp/r3" -w '%{http_version} %{http_code}' "https://rev.example:$REV_TLS/index.html")
check_eq "TLS reverse, client offering http/1.1 only: HTTP/1.1 200" "1.1 200" "$out"
check_eq "TLS reverse: the body" "$want_index" "$(file_sha "$tmp/r3")"
out=$(dcurl --http1.1 --data-binary 'short body' -w ' %{http_code}' \
    "http://127.0.0.1:$REV_PLAIN/echo")
check_eq "plain reverse: POST with content-length echoed" "short body 200" "$out"

# ---- a map-remote rule to the h2-only origin ----
out=$(pcurl --http1.1 -o "$tmp/m1" -w '%{http_version} %{http_code}' "http://mapped.test/h2/index.html")
check_eq "map-remote from plain HTTP to the h2-only origin: HTTP/1.1 200" "1.1 200" "$out"
check_eq "map-remote: the origin's body" "$want_index" "$(file_sha "$tmp/m1")"
check_match "map-remote: the origin got :path mapped" ':path: /index.html' "$(cat "$tmp/ng.log")"

# ---- a kept-alive origin connection that the origin closed ----
cat > "$tmp/keep_client.py" << 'EOF_PY'
import socket, subprocess, sys
port, restart = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
def get():
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: h2only.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b"\r\n")[0].decode()
print(get())
subprocess.run(["bash", restart], check=True)
print(get())
EOF_PY
cat > "$tmp/restart.sh" << EOF_SH
kill $NG_PORT_PID
for ((i = 0; i < 100; i++)); do
    ss -ltnH 2> /dev/null | grep -q "127.0.0.1:$NG_PORT " || break
    sleep 0.05
done
nghttpd -a 127.0.0.1 -d "$tmp/htdocs" --echo-upload $NG_PORT "$tmp/localhost-key.pem" \
    "$tmp/localhost.pem" > "$tmp/ng2.log" 2>&1 &
echo \$! > "$tmp/ng2.pid"
for ((i = 0; i < 100; i++)); do
    ss -ltnH 2> /dev/null | grep -q "127.0.0.1:$NG_PORT " && break
    sleep 0.05
done
EOF_SH
out=$(timeout 30 python3 "$tmp/keep_client.py" "$REV_PLAIN" "$tmp/restart.sh" 2>&1 | tr '\n' ' ')
[ -s "$tmp/ng2.pid" ] && track_pid "$(cat "$tmp/ng2.pid")"
check_eq "the origin restarted between two kept-alive requests: the second goes on a new connection" \
    "HTTP/1.1 200 OK HTTP/1.1 200 OK " "$out"

# ---- the flows ----
wait_written 18 > /dev/null || true
check_eq "flows: GET /index.html recorded HTTP/1.1 from the client, HTTP/2 from the origin" 0 \
    "$(flows_where "target = '/index.html' and (req_version <> 'HTTP/1.1' or resp_version <> 'HTTP/2')")"
check_le "... and there are such flows" 5 \
    "$(flows_where "target = '/index.html' and req_version = 'HTTP/1.1' and resp_version = 'HTTP/2' and status = 200")"
check_le "POST flows with their request bodies" 4 \
    "$(flows_where "target = '/echo' and method = 'POST' and req_body_size > 0 and status = 200")"
check_eq "the upgrade's flow: 502" 1 "$(flows_where "target = '/ws' and status = 502")"
stop_proxy

# ---- intercept: a translated response's head held, then resumed or dropped ----
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN" --intercept '~s & ~u big' \
    --intercept-timeout 10 --rule 'response body "hello from" "HOWDY, from"' \
    --rule 'request body "ping" "PONG"' --reverse "https://127.0.0.1:0=https://localhost:$NG_PORT"
dashboard_port
REV_TLS=$(rev_port https "$NG_PORT")
U=https://localhost:$REV_TLS
rcurl -D "$tmp/rb.h" -o "$tmp/rb" "$U/index.html"
check_eq "response body rule on a translated response: rewritten" "HOWDY, from an h2-only origin" \
    "$(cat "$tmp/rb")"
check_imatch "... sent with its new content-length" '^content-length: 30$' "$(tr -d '\r' < "$tmp/rb.h")"
out=$(rcurl --data-binary 'ping, ping' "$U/echo")
check_eq "request body rule on a translated request: the origin got it rewritten" "PONG, PONG" "$out"
out=$(rcurl -H 'Transfer-Encoding: chunked' --data-binary 'ping' "$U/echo")
check_eq "... also a chunked one" "PONG" "$out"
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")
rcurl -o "$tmp/held.got" -w '%{http_code}' "$U/big.bin" \
    > "$tmp/held.code" &
CURL_PID=$!
track_pid "$CURL_PID"
ID=$(held_id)
check_match "intercept: the translated response waits" '^[0-9]+$' "$ID"
check_eq "resume it: 200" 200 "$(dcurl -o /dev/null -w '%{http_code}' -X POST "${H[@]}" \
    "$D/api/flows/$ID/resume")"
wait_pid "$CURL_PID" 15
check_eq "resumed: the client gets 200" 200 "$(cat "$tmp/held.code")"
check_eq "resumed: the body whole" "$want_big" "$(file_sha "$tmp/held.got")"
rcurl -o /dev/null -w '%{http_code}' "$U/big.bin?2" \
    > "$tmp/drop.code" &
CURL_PID=$!
track_pid "$CURL_PID"
ID=$(held_id)
check_eq "drop it: 200" 200 "$(dcurl -o /dev/null -w '%{http_code}' -X POST "${H[@]}" \
    "$D/api/flows/$ID/drop")"
wait_pid "$CURL_PID" 15
check_eq "dropped: the client gets 502" 502 "$(cat "$tmp/drop.code")"
stop_proxy

# ---- --no-http2: the origin is never offered h2 ----
start_proxy --upstream-ca "$PKI/ca.pem" --no-http2 --reverse "https://127.0.0.1:0=https://localhost:$NG_PORT"
REV_TLS=$(rev_port https "$NG_PORT")
U=https://localhost:$REV_TLS
out=$(rcurl -o /dev/null -w '%{http_code}' "$U/index.html")
check_eq "--no-http2: an h2-only origin cannot be reached (502)" 502 "$out"
stop_proxy

finish
