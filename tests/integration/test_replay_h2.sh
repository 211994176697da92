#!/bin/bash
# A replay to an origin that speaks only HTTP/2: a real gRPC server
# (python3-grpcio offers h2 alone by ALPN and refuses HTTP/1.1). A gRPC
# call goes through tapwire, POST /api/flows/ID/replay sends it again: the
# replay offers the origin "http/1.1, h2", the origin picks h2 and the
# request goes as one HTTP/2 stream (h1toh2). The replayed flow has the
# same status, response message bytes and gRPC status (0, from the
# trailers; a status that fails in trailers after a message is the flow's
# error), and records HTTP/2 from the origin. A replay to a TLS origin that
# picks http/1.1, or no ALPN at all, is HTTP/1.1 as before; a request that
# asks for an upgrade offers http/1.1 alone (an origin that prefers h2
# sees http/1.1); with --no-http2 h2 is never offered.
. "$(dirname "$0")/lib.sh"

need_cmd sqlite3
PY=/usr/bin/python3
"$PY" -c 'import grpc' 2> /dev/null || bail "python3-grpcio is not installed (deps/debian-packages.txt)"
TOKEN=replay-h2-test-token-0123456789abcdef

make_pki
"$PY" "$LIB_DIR/grpc_peer.py" serve "$tmp/grpc.port" "$PKI/good.pem" "$PKI/good-key.pem" \
    > "$tmp/grpc-server.log" 2>&1 &
track_pid $!
wait_port_file GRPC_PORT "$tmp/grpc.port" "the gRPC server" "$tmp/grpc-server.log"
out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$GRPC_PORT" -alpn http/1.1 2>&1)
check_no_match "the gRPC origin selects no http/1.1 (h2 only)" 'ALPN protocol: http/1.1' "$out"

# An origin that speaks both and prefers h2 (its own order first): it
# writes down the protocol each connection chose, answers HTTP/1.1 with
# 200, and closes an h2 one (it speaks no HTTP/2 frames).
"$PY" "$LIB_DIR/dual_origin.py" "$tmp/dual.port" "$PKI/good.pem" "$PKI/good-key.pem" ok \
    "$tmp/dual.log" 2> "$tmp/dual.err" &
track_pid $!
wait_port_file DUAL_PORT "$tmp/dual.port" "the dual origin" "$tmp/dual.err"

start_origin H1_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem" --alpn
start_origin NA_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"

start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN"
dashboard_port
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")

# flow_id SQL_CONDITION: the id of the newest stored flow that matches.
flow_id() { sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select max(id) from flows where $1"; }
# body_sha ID: SHA-256 of flow ID's captured response body.
body_sha() { dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$1/response/body" | sha256sum | cut -c1-64; }
# replay ID: POST /api/flows/ID/replay; the status in CODE, the new id in NEW.
replay() {
    CODE=$(dsend POST "/api/flows/$1/replay")
    NEW=$(answer 'd["id"]')
}
# row ID COLUMNS: those columns of flow ID, '|' between them ("" for NULL).
row() { sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select $2 from flows where id = $1"; }

# ---- a gRPC call through tapwire, then replayed ----
# grpc_call METHOD ARG: one call through tapwire (trusting its CA).
grpc_call() {
    timeout 60 "$PY" "$LIB_DIR/grpc_peer.py" call "127.0.0.1:$GRPC_PORT" "$PROXY_CA" \
        "http://127.0.0.1:$PROXY_PORT" "$@" 2>&1
}
check_eq "gRPC unary call through tapwire" "Unary echo:hi OK" "$(grpc_call Unary hi)"
check_eq "gRPC call whose status fails in trailers after a message" \
    "Late late:x FAILED_PRECONDITION late failure" "$(grpc_call Late x)"
check "the two calls written" wait_written 2
UNARY=$(flow_id "target = '/test.Echo/Unary'")
LATE=$(flow_id "target = '/test.Echo/Late'")
check_eq "the call's flow: HTTP/2 both sides, 200, no error" "HTTP/2|HTTP/2|200|" \
    "$(row "$UNARY" "req_version, resp_version, status, error")"

replay "$UNARY"
check_eq "replay the gRPC call: 200" 200 "$CODE"
check_match "... a new flow" '^[0-9]+$' "$NEW"
check_eq "... linked to its source" "$UNARY" "$(dash_json "/api/flows/$NEW" 'd["replay_of"]')"
check_eq "replayed gRPC flow: 200, gRPC status 0 (no error), HTTP/1.1 asked, HTTP/2 from the origin" \
    "200||HTTP/1.1|HTTP/2" "$(row "$NEW" "status, error, req_version, resp_version")"
check_eq "... the same response message" "echo:hi" \
    "$(dash_json "/api/flows/$NEW/grpc" '",".join(m["text"] for m in d["response"])')"
check_eq "... the same response bytes" "$(body_sha "$UNARY")" "$(body_sha "$NEW")"
check_eq "... the origin's TLS recorded" "TLSv1.3" \
    "$(dash_json "/api/flows/$NEW" 'd["tls"]["upstream_version"]')"

replay "$LATE"
check_eq "replay the call that fails late: 200" 200 "$CODE"
check_eq "... its gRPC status read from the trailers, as the source's" \
    "200|grpc-status 9 (FAILED_PRECONDITION): late failure" "$(row "$NEW" "status, error")"
check_eq "... the source recorded the same" "$(row "$LATE" "status, error")" \
    "$(row "$NEW" "status, error")"
check_eq "... the message before the status" "late:x" \
    "$(dash_json "/api/flows/$NEW/grpc" '",".join(m["text"] for m in d["response"])')"

# ---- TLS origins that choose http/1.1, or nothing: as before ----
for port in "$H1_PORT" "$NA_PORT"; do
    pcurl --cacert "$PROXY_CA" -o /dev/null "https://127.0.0.1:$port/headers?r=$port" ||
        fail "GET to the HTTP/1.1 origin on $port through the proxy"
done
check "the two GETs written" wait_written 6
for port in "$H1_PORT" "$NA_PORT"; do
    what=$([ "$port" = "$H1_PORT" ] && echo "choosing http/1.1" || echo "choosing no ALPN")
    id=$(flow_id "target = '/headers?r=$port'")
    replay "$id"
    check_eq "replay to a TLS origin $what: 200" 200 "$CODE"
    check_eq "... HTTP/1.1 both sides, 200" "200|HTTP/1.1|HTTP/1.1" \
        "$(row "$NEW" "status, req_version, resp_version")"
    check_contains "... the origin got it over HTTP/1.1" "GET /headers?r=$port HTTP/1.1" \
        "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$NEW/response/body")"
done

# ---- an upgrade is offered http/1.1 alone; anything else h2 after it ----
check_eq "compose an upgrade to an origin that prefers h2: 200" 200 \
    "$(dsend POST /api/replay "{\"url\": \"https://127.0.0.1:$DUAL_PORT/ws\", \"headers\": [[\"Connection\", \"Upgrade\"], [\"Upgrade\", \"websocket\"]]}")"
check_eq "... the origin chose http/1.1, the only one offered" "alpn http/1.1" "$(tail -n 1 "$tmp/dual.log")"
check_eq "... its answer recorded" 200 "$(row "$(answer 'd["id"]')" status)"
check_eq "compose a plain GET to the same origin: 200" 200 \
    "$(dsend POST /api/replay "{\"url\": \"https://127.0.0.1:$DUAL_PORT/plain\"}")"
check_eq "... h2 was offered (the origin, preferring it, chose it)" "alpn h2" \
    "$(tail -n 1 "$tmp/dual.log")"
stop_proxy

# ---- --no-http2: a replay never offers h2 ----
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN" --no-http2
dashboard_port
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")
check_eq "--no-http2: compose a GET to the origin that prefers h2: 200" 200 \
    "$(dsend POST /api/replay "{\"url\": \"https://127.0.0.1:$DUAL_PORT/nohttp2\"}")"
check_eq "... it chose http/1.1" "alpn http/1.1" "$(tail -n 1 "$tmp/dual.log")"
check_eq "... and answered" 200 "$(row "$(answer 'd["id"]')" status)"

finish
