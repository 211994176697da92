#!/bin/bash
# WebSocket through tapwire with real peers (Debian's python3-websockets):
# an echo server, plain and over TLS with the test PKI, and a client through
# a CONNECT tunnel, with and without permessage-deflate: text, binary, a
# fragmented text, ping/pong, a large text and a close with 4001 come back
# exactly as sent (the relay is byte-exact), and /api/flows/ID/messages
# returns every message with its direction, type, size and text (decoded
# when compressed). Then hostile clients: an unmasked frame, bad UTF-8 and
# a 2^62-byte length get a Close with 1002, 1007 and 1009 after the good
# message before them went through; each is recorded with the reason, and
# the proxy goes on serving. A replay of a handshake is sent as one and
# gets its 101 again, and is over at once.
. "$(dirname "$0")/lib.sh"

need_cmd sqlite3
PY=/usr/bin/python3
"$PY" -c 'import websockets' 2> /dev/null ||
    bail "python3-websockets is not installed (deps/debian-packages.txt)"
PEER=$LIB_DIR/ws_peer.py
make_pki

# start_ws VAR [CERT KEY]: an echo server; VAR gets its port.
start_ws() {
    local var=$1 pf=$tmp/ws-$1.port i
    shift
    "$PY" "$PEER" serve "$pf" "$@" > "$tmp/ws-$var.log" 2>&1 &
    track_pid $!
    for ((i = 0; i < 200; i++)); do
        [ -s "$pf" ] && break
        sleep 0.05
    done
    [ -s "$pf" ] || bail "ws echo server did not start: $(tail -n 5 "$tmp/ws-$var.log")"
    printf -v "$var" '%s' "$(cat "$pf")"
}
start_ws WS_PLAIN
start_ws WS_TLS "$PKI/good.pem" "$PKI/good-key.pem"

TOKEN=websocket-test-token-0123456789abcdef
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN"
dashboard_port

# client NAME ORIGIN_PORT CA|- deflate|plain: one client run, output in
# $tmp/client-NAME.out.
client() {
    timeout 60 "$PY" "$PEER" client "$PROXY_PORT" "$2" "$3" "$4" > "$tmp/client-$1.out" 2>&1
}
EXPECTED="text ok
binary ok
fragmented ok
ping ok
large ok
close 4001"

# newest_ws: the id of the newest websocket flow.
newest_ws() {
    dash_json /api/flows '[f["id"] for f in d["flows"] if f["kind"] == "websocket"][0]'
}
# messages ID EXPR: a Python expression over the messages m of flow ID.
messages() {
    dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$1/messages" | "$PY" -c 'import json, sys
m = json.load(sys.stdin)["messages"]
print(eval(sys.argv[1]))' "$2" 2>&1
}

# check_conversation NAME ID COMPRESSED: the twelve messages of one client run.
check_conversation() {
    local name=$1 id=$2 z=$3
    check_eq "$name: twelve messages recorded" 12 "$(messages "$id" 'len(m)')"
    check_eq "$name: directions alternate client/server" \
        "client server client server client server client server client server client server" \
        "$(messages "$id" '" ".join(x["direction"] for x in m)')"
    check_eq "$name: types" \
        "text text binary binary text text ping pong text text close close" \
        "$(messages "$id" '" ".join(x["type"] for x in m)')"
    check_eq "$name: opcodes" "1 1 2 2 1 1 9 10 1 1 8 8" \
        "$(messages "$id" '" ".join(str(x["opcode"]) for x in m)')"
    check_eq "$name: text shown" "hello tapwire|hello tapwire" \
        "$(messages "$id" 'm[0]["text"] + "|" + m[1]["text"]')"
    check_eq "$name: binary shown as hex, whole" "2048 000102030405" \
        "$(messages "$id" 'str(len(m[2]["hex"])) + " " + m[2]["hex"][:12]')"
    check_eq "$name: fragments joined" "frag-mented é" "$(messages "$id" 'm[4]["text"]')"
    check_eq "$name: ping and pong payloads" "are you there|are you there" \
        "$(messages "$id" 'm[6]["text"] + "|" + m[7]["text"]')"
    check_eq "$name: large text whole" "160000 True" \
        "$(messages "$id" 'str(len(m[8]["text"])) + " " + str(m[8]["text"] == "tapwire " * 20000)')"
    check_eq "$name: close code and reason both ways" "4001 bye 4001 bye" \
        "$(messages "$id" '" ".join("%d %s" % (x["close_code"], x["text"]) for x in m[10:])')"
    check_eq "$name: compressed flags" "$z" \
        "$(messages "$id" '" ".join(str(x["compressed"] and x["decoded"]) for x in m if x["opcode"] < 8)')"
    if [ "$z" = "False False False False False False False False" ]; then
        check_eq "$name: sizes are the payloads on the wire" "13 13 1024 1024 14 14 13 13 160000" \
            "$(messages "$id" '" ".join(str(x["size"]) for x in m[:9])')"
    else
        check "$name: compressed sizes are smaller on the wire" \
            test "$(messages "$id" 'm[8]["size"] < 2000 and m[2]["size"] < 1024')" = True
    fi
}

# ---- plain ws with permessage-deflate ----
client deflate "$WS_PLAIN" - deflate
check_eq "ws, deflate: negotiated" "extensions deflate" "$(head -n 1 "$tmp/client-deflate.out")"
check_eq "ws, deflate: every echo byte-exact" "$EXPECTED" "$(tail -n +2 "$tmp/client-deflate.out")"
check "ws, deflate: flow written" wait_written 1
id=$(newest_ws)
check_conversation "ws, deflate" "$id" "True True True True True True True True"
check_eq "ws, deflate: flow is websocket, 101" "websocket 101" \
    "$(dash_json "/api/flows/$id" 'd["kind"] + " " + str(d["status"])')"

# ---- a replay of the handshake is one again ----
H=(-H "X-Tapwire-Token: $TOKEN")
started=$SECONDS
check_eq "replay of the ws handshake: 200" 200 "$(dsend POST "/api/flows/$id/replay")"
check "replay of the ws handshake: over within 10 s (no client holds it open)" \
    test $((SECONDS - started)) -le 10
rid=$(answer 'd["id"]')
check_eq "replayed handshake: the origin switched protocols again" \
    "websocket 101 replay of #$id" \
    "$(dash_json "/api/flows/$rid" 'd["kind"] + " " + str(d["status"]) + " " + d["client"]')"
check_eq "replayed handshake: no error" None "$(dash_json "/api/flows/$rid" 'd["error"]')"
check_eq "replayed handshake: no message on it (the echo server only answers)" 0 \
    "$(messages "$rid" 'len(m)')"

# ---- wss without compression ----
client tls "$WS_TLS" "$PROXY_CA" plain
check_eq "wss: no extension" "extensions none" "$(head -n 1 "$tmp/client-tls.out")"
check_eq "wss: every echo byte-exact" "$EXPECTED" "$(tail -n +2 "$tmp/client-tls.out")"
check "wss: flow written" wait_written 2
id=$(newest_ws)
check_conversation "wss" "$id" "False False False False False False False False"
check_eq "wss: recorded as https" https "$(dash_json "/api/flows/$id" 'd["scheme"]')"
# good.test resolves nowhere (the tunnel went to 127.0.0.1): the replay is
# sent to the address, which the certificate names too.
check_eq "wss: a replay of the handshake gets its 101" 200 \
    "$(dsend POST "/api/flows/$id/replay" "{\"url\": \"https://127.0.0.1:$WS_TLS/chat\"}")"
check_eq "wss: the replayed handshake over TLS switched protocols" "websocket 101 None" \
    "$(dash_json "/api/flows/$(answer 'd["id"]')" 'd["kind"] + " " + str(d["status"]) + " " + str(d["error"])')"

# ---- wss with permessage-deflate ----
client tlsz "$WS_TLS" "$PROXY_CA" deflate
check_eq "wss, deflate: every echo byte-exact" "$EXPECTED" "$(tail -n +2 "$tmp/client-tlsz.out")"
check "wss, deflate: flow written" wait_written 3
check_conversation "wss, deflate" "$(newest_ws)" "True True True True True True True True"

# ---- live: the conversation shows while the connection lasts ----
"$PY" "$PEER" live "$PROXY_PORT" "$WS_PLAIN" "$tmp/go" > "$tmp/live.out" 2>&1 &
LIVE_PID=$!
track_pid "$LIVE_PID"
live_id=
for ((i = 0; i < 100; i++)); do
    live_id=$(dash_json /api/flows '[f["id"] for f in d["flows"] if f["kind"] == "websocket"
        and f["path"] == "/live"][0]' 2> /dev/null)
    [[ $live_id =~ ^[0-9]+$ ]] && [ "$(messages "$live_id" 'len(m)')" = 2 ] && break
    sleep 0.1
done
check_eq "live: while open, the flow is listed with its first message and echo" \
    "client live-1|server live-1" \
    "$(messages "$live_id" '"|".join(x["direction"] + " " + x["text"] for x in m)')"
check_eq "live: messages from a given number on" "server live-1" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$live_id/messages?from=1" |
        "$PY" -c 'import json, sys; m = json.load(sys.stdin)["messages"]
print(" ".join(x["direction"] + " " + x["text"] for x in m))')"
check_eq "live: the flow is not done yet" None \
    "$(dash_json "/api/flows/$live_id" 'd.get("duration_ms")')"
touch "$tmp/go"
wait_pid "$LIVE_PID" 30
check_eq "live: the client got both echoes" "echo live-1
echo live-2" "$(cat "$tmp/live.out")"
check "live: flow written" wait_written 4
check_eq "live: all six messages, once each, under the same flow" \
    "client live-1|server live-1|client live-2|server live-2|client close|server close" \
    "$(messages "$live_id" '"|".join(x["direction"] + " " + (x["text"] if x["type"] == "text"
        else x["type"]) for x in m)')"
check "live: now done" test "$(dash_json "/api/flows/$live_id" 'd.get("duration_ms")')" != None
check_eq "live: one row for it" 1 \
    "$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select count(*) from flows where id = $live_id")"

# ---- hostile clients ----
n=4
for kind in unmasked:1002 badutf8:1007 huge:1009; do
    name=${kind%%:*} code=${kind##*:}
    out=$(timeout 30 "$PY" "$PEER" hostile "$PROXY_PORT" "$WS_PLAIN" "$name" 2>&1)
    check_eq "hostile $name: the good message echoed, then a Close $code, then the end" \
        "echoed yes
close $code
ended yes" "$out"
    n=$((n + 1))
    check "hostile $name: flow written" wait_written $n
    id=$(newest_ws)
    check_match "hostile $name: the flow says why" "broke RFC 6455.*closed with $code" \
        "$(dash_json "/api/flows/$id" 'd["error"]')"
    check_eq "hostile $name: the good message is recorded" "client good" \
        "$(messages "$id" 'm[0]["direction"] + " " + m[0]["text"]')"
done
check "the proxy is still running" kill -0 "$PROXY_PID"
client after "$WS_PLAIN" - deflate
check_eq "after the hostile clients: a client still gets its echoes" "$EXPECTED" \
    "$(tail -n +2 "$tmp/client-after.out")"

# ---- the database ----
check "after: flow written" wait_written $((n + 1))
check_eq "the messages are rows of ws_messages, in order" "12 0 11 0 1" \
    "$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select count(*), min(seq), max(seq),
        min(direction), max(direction) from ws_messages where flow_id = $(newest_ws)" |
        tr '|' ' ')"
dcurl -o /dev/null -X DELETE -H "X-Tapwire-Token: $TOKEN" "$D/api/flows"
check_eq "clearing the flows clears their messages" 0 \
    "$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select count(*) from ws_messages")"

# ---- the dashboard in headless Chromium ----
# browser_part: the Messages tab of a connection still open shows its
# messages as text and, without a reload, those that follow. Needs chromium,
# node and playwright-core in tests/integration/browser/node_modules (which
# test_dashboard_browser.sh installs); without them it is noted and skipped.
browser_part() {
    local dir=$TESTS_SRCDIR/integration/browser profile=$tmp/chromium-profile i first
    local results=$tmp/browser-results.tsv
    [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && command -v node > /dev/null 2>&1 &&
        [ -f "$dir/node_modules/playwright-core/package.json" ] || {
        note "browser part skipped: chromium, node or $dir/node_modules is missing"
        return 0
    }
    first='<b>bold</b> & <script>alert(1)</script>'
    "$PY" "$PEER" live "$PROXY_PORT" "$WS_PLAIN" "$tmp/go-browser" "$first" second \
        > "$tmp/live-browser.out" 2>&1 &
    local live_pid=$!
    track_pid "$live_pid"
    local id=
    for ((i = 0; i < 100; i++)); do
        id=$(dash_json /api/flows '[f["id"] for f in d["flows"] if f["kind"] == "websocket"
            and f["path"] == "/live"][0]' 2> /dev/null)
        [ "$id" != "$live_id" ] && [[ $id =~ ^[0-9]+$ ]] &&
            [ "$(messages "$id" 'len(m)')" = 2 ] && break
        sleep 0.1
    done
    CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
    start_chromium "$tmp" "$profile"
    local dash_url
    dash_url=$(grep -aEo -m 1 '^dashboard: http://127\.0\.0\.1:[0-9]+/\?token=[0-9A-Za-z-]+' \
        "$PROXY_OUT")
    CDP_URL=http://127.0.0.1:$CDP_PORT DASHBOARD_URL=${dash_url#dashboard: } FLOW_ID=$id \
        FIRST=$first GO_FILE=$tmp/go-browser RESULTS=$results WAIT_MS=10000 \
        SCREENSHOT=${TEST_ARTIFACTS_DIR:-$tmp}/websocket.png \
        node "$dir/websocket.test.mjs" > "$tmp/driver.out" 2>&1 < /dev/null &
    local driver_pid=$!
    track_pid "$driver_pid"
    wait_pid "$driver_pid" 90
    check_eq "the browser driver finished and exited 0" 0 "$?"
    touch "$tmp/go-browser"
    wait_pid "$live_pid" 30
    stop_pid "$CHROMIUM_PID" 10
    browser_results "$results"
    check_eq "the browser driver ran its four checks" 4 "$browser_ran"
}
mkdir -p "${TEST_ARTIFACTS_DIR:-$tmp}"
browser_part

finish
