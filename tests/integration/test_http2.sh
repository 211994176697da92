#!/bin/bash
# HTTP/2 on both sides: a client offering h2 through CONNECT to an h2 origin
# (nghttpd) gets h2, and every stream is its own flow recorded as HTTP/2;
# bodies both ways, many streams on one connection, trailers (a real gRPC
# client and server: unary, a failing status from the trailers, server
# streaming and bidirectional calls); an HTTP/1.1-only origin gives the
# client HTTP/1.1; --no-http2 never selects h2. Then the defences: a hostile
# client's rapid resets, CONTINUATION flood, oversized header list, stream
# flood and SETTINGS/PING floods end its connection or its stream, and the
# proxy keeps serving others.
. "$(dirname "$0")/lib.sh"

need_cmd nghttpd ss sqlite3
PY=/usr/bin/python3
"$PY" -c 'import grpc' 2> /dev/null || bail "python3-grpcio is not installed (deps/debian-packages.txt)"
make_pki

# start_nghttpd: an h2 origin (TLS, good.test) serving $tmp/www, echoing
# uploads, with a trailer on every response; sets H2_PORT.
mkdir -p "$tmp/www"
echo hello-h2 > "$tmp/www/index.html"
head -c 3000000 /dev/urandom > "$tmp/www/big.bin"
nghttpd --address=127.0.0.1 --htdocs="$tmp/www" --echo-upload --trailer="x-trail: yes" \
    0 "$PKI/good-key.pem" "$PKI/good.pem" > "$tmp/nghttpd.log" 2>&1 &
H2_PID=$!
track_pid "$H2_PID"
H2_PORT=
for ((i = 0; i < 100; i++)); do
    H2_PORT=$(ss -Hltnp 2> /dev/null | grep "pid=$H2_PID," | grep -oE '127\.0\.0\.1:[0-9]+' |
        head -n 1 | cut -d: -f2)
    [ -n "$H2_PORT" ] && break
    sleep 0.05
done
[ -n "$H2_PORT" ] || bail "nghttpd did not start: $(tail -n 5 "$tmp/nghttpd.log")"

TOKEN=http2-test-token-0123456789abcdef
start_origin H1_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem" --alpn
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" \
    --reverse "https://127.0.0.1:0=https://127.0.0.1:$H2_PORT"
dashboard_port
REVERSE_PORT=$(sed -n 's#^reverse proxy listening on https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$PROXY_OUT")
[ -n "$REVERSE_PORT" ] || bail "no reverse listener line: $(head -c 500 "$PROXY_OUT")"

# h2curl PORT ARGS...: curl offering h2 through the proxy to good.test at PORT.
h2curl() {
    local port=$1
    shift
    pcurl --http2 --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$port" "$@"
}
G=https://good.test

# flows_where SQL_CONDITION: how many stored flows match (after the writer ran).

# ---- h2 end to end ----
out=$(h2curl "$H2_PORT" -o "$tmp/index.got" -w '%{http_version} %{http_code}' "$G/index.html")
check_eq "h2 origin: the client gets HTTP/2 and 200" "2 200" "$out"
check_eq "h2 origin: body intact" "hello-h2" "$(cat "$tmp/index.got")"

out=$(h2curl "$H2_PORT" -o "$tmp/big.got" -w '%{http_version} %{http_code}' "$G/big.bin")
check_eq "h2: 3 MB download, 200" "2 200" "$out"
check_eq "h2: 3 MB download intact" "$(file_sha "$tmp/www/big.bin")" "$(file_sha "$tmp/big.got")"

head -c 2000000 /dev/urandom > "$tmp/up.bin"
out=$(h2curl "$H2_PORT" --data-binary @"$tmp/up.bin" -o "$tmp/up.got" -w '%{http_version} %{http_code}' \
    "$G/echo")
check_eq "h2: 2 MB upload echoed, 200" "2 200" "$out"
check_eq "h2: upload echoed intact" "$(file_sha "$tmp/up.bin")" "$(file_sha "$tmp/up.got")"

urls=()
for i in $(seq 1 40); do urls+=("$G/index.html?i=$i"); done
out=$(h2curl "$H2_PORT" --no-progress-meter --parallel --parallel-max 40 -o /dev/null -o /dev/null -o /dev/null \
    -w '%{http_version}:%{http_code} ' "${urls[@]}" | tr ' ' '\n' | grep -c '^2:200$')
check_eq "h2: 40 concurrent streams on one connection, all 200" 40 "$out"

check "h2: the 43 flows are written" wait_written 43
check_eq "h2: every stream is a flow recorded as HTTP/2 on both sides" 43 \
    "$(flows_where "req_version = 'HTTP/2' and resp_version = 'HTTP/2' and status = 200")"
check_eq "h2: the upload's flow holds its size" 1 \
    "$(flows_where "method = 'POST' and req_body_size = 2000000 and resp_body_size = 2000000")"

# ---- gRPC: trailers carry the status ----
"$PY" "$LIB_DIR/grpc_peer.py" serve "$tmp/grpc.port" "$PKI/good.pem" "$PKI/good-key.pem" \
    > "$tmp/grpc-server.log" 2>&1 &
track_pid $!
wait_port_file GRPC_PORT "$tmp/grpc.port" "the gRPC server" "$tmp/grpc-server.log"
out=$(timeout 60 "$PY" "$LIB_DIR/grpc_peer.py" client "127.0.0.1:$GRPC_PORT" "$PROXY_CA" \
    "http://127.0.0.1:$PROXY_PORT" 2>&1)
check_contains "gRPC unary call through tapwire" "unary echo:hi" "$out"
check_contains "gRPC status from the trailers (PERMISSION_DENIED)" \
    "fail PERMISSION_DENIED no entry for you" "$out"
check_contains "gRPC server streaming" "stream item-0,item-1,item-2" "$out"
check_contains "gRPC bidirectional streaming" "bidi bidi:a,bidi:b" "$out"
check "gRPC: the 4 flows are written" wait_written 47
check_eq "gRPC: each call is an HTTP/2 flow" 4 \
    "$(flows_where "target like '/test.Echo/%' and req_version = 'HTTP/2'")"
check_eq "gRPC: the failed call is a flow with its status as the error, under HTTP 200" 1 \
    "$(flows_where "status = 200 and error = 'grpc-status 7 (PERMISSION_DENIED): no entry for you'")"
check_eq "gRPC: the calls that succeeded carry no error" 3 \
    "$(flows_where "target like '/test.Echo/%' and error is null")"
unary_id=$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" \
    "select id from flows where target = '/test.Echo/Unary' and error is null")
check_eq "gRPC: the dashboard splits the call's messages" "hi -> echo:hi" \
    "$(dash_json "/api/flows/$unary_id/grpc" 'd["request"][0]["text"] + " -> " + d["response"][0]["text"]')"
stream_id=$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" \
    "select id from flows where target = '/test.Echo/Stream'")
check_eq "gRPC: a server stream's messages one by one" "item-0,item-1,item-2" \
    "$(dash_json "/api/flows/$stream_id/grpc" '",".join(m["text"] for m in d["response"])')"
check_match "gRPC: a flow that is not gRPC has none" "not a gRPC flow" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/1/grpc")"

# ---- a reverse proxy in front of an h2 origin speaks h2 on both sides ----
out=$(dcurl --http2 --cacert "$PROXY_CA" -o "$tmp/rev.got" -w '%{http_version} %{http_code}' \
    "https://127.0.0.1:$REVERSE_PORT/index.html")
check_eq "--reverse to an h2 origin: the client gets HTTP/2 and 200" "2 200" "$out"
check_eq "--reverse over h2: the origin's body" "hello-h2" "$(cat "$tmp/rev.got")"
check "--reverse over h2: the flow names the origin" wait_for_grep "$PROXY_ERR" \
    "GET https://127\.0\.0\.1:$H2_PORT/index\.html 200" 5

# ---- the client gets what the origin chose ----
out=$(h2curl "$H1_PORT" -o /dev/null -w '%{http_version} %{http_code}' "$G/bytes/10")
check_eq "HTTP/1.1-only origin: a client offering h2 gets HTTP/1.1" "1.1 200" "$out"

# ---- the defences ----
hostile() { timeout 60 "$PY" "$LIB_DIR/h2_hostile.py" "$PROXY_PORT" "127.0.0.1:$H2_PORT" good.test \
    "$PROXY_CA" "$1" 2>&1 | tr '\n' ' '; }
out=$(hostile normal)
check_contains "hostile client script: a normal request is answered" "response" "$out"
out=$(hostile rapid-reset)
check_match "rapid reset: GOAWAY and the connection closed" "goaway [0-9]+ .*closed" "$out"
check "rapid reset: a log line says so" grep -q "closed with GOAWAY" "$PROXY_ERR"
out=$(hostile continuation)
check_contains "CONTINUATION flood: the connection is closed" "closed" "$out"
check "CONTINUATION flood: a log line names it" grep -q "CONTINUATION" "$PROXY_ERR"
out=$(hostile big-headers)
check_match "oversized header list: that stream is reset, the next answered" \
    "rst 1 response" "$out"
check "oversized header list: logged" grep -q "request header list too large" "$PROXY_ERR"
out=$(hostile too-many-streams)
check_match "300 open streams: those past the 100 allowed are refused" "rst 200 " "$out"
for flood in settings-flood ping-flood; do
    hostile "$flood" > /dev/null
    check "$flood: tapwire is still running" kill -0 "$PROXY_PID"
done
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$PROXY_PID/status")
check_le "after the floods tapwire holds under 200 MB" "$rss_kb" 204800
out=$(h2curl "$H2_PORT" -o /dev/null -w '%{http_version} %{http_code}' "$G/index.html")
check_eq "after every attack another client is served over h2" "2 200" "$out"
stop_proxy

# ---- body rules on HTTP/2 streams ----
start_proxy --upstream-ca "$PKI/ca.pem" --rule 'response body "hello" "HOWDY"' \
    --rule 'request body "abc" "XYZW"'
out=$(h2curl "$H2_PORT" -o "$tmp/rule.got" -w '%{http_version}' "$G/index.html")
check_eq "h2 response body rule: the body is rewritten" "2 HOWDY-h2" "$out $(cat "$tmp/rule.got")"
out=$(h2curl "$H2_PORT" --data-binary "xxabcxx" -w ' %{http_version}' "$G/echo")
check_eq "h2 request body rule: the origin got the rewritten body" "xxXYZWxx 2" "$out"
stop_proxy
start_proxy --upstream-ca "$PKI/ca.pem" --rule 'response body "hello" "HOWDY"' --rewrite-limit 4
out=$(h2curl "$H2_PORT" -o "$tmp/limit.got" -w '%{http_version}' "$G/index.html")
check_eq "h2 body past --rewrite-limit: passed on unchanged" "2 hello-h2" "$out $(cat "$tmp/limit.got")"
sleep 1
check_eq "h2 body past --rewrite-limit: the flow says why" 1 \
    "$(flows_where "rules_notes like '%larger than --rewrite-limit%'")"
stop_proxy

# ---- --no-http2 ----
start_proxy --upstream-ca "$PKI/ca.pem" --no-http2
out=$(h2curl "$H2_PORT" -o /dev/null -w '%{http_version}' "$G/index.html")
check_eq "--no-http2: the client is never given h2" "1.1" "$out"
out=$(h2curl "$H1_PORT" -o /dev/null -w '%{http_version} %{http_code}' "$G/bytes/10")
check_eq "--no-http2: HTTP/1.1 still works" "1.1 200" "$out"

finish
