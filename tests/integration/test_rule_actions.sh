#!/bin/bash
# The actions of rules through the real binary: a mock answers without the
# origin seeing the request (inline and from a file, with correct framing,
# keeping the connection), block with a 403 page and with a closed
# connection, map-remote to a second origin over plain HTTP and over TLS
# (verified: an origin with a bad certificate gives the verification error
# page and sees nothing), match= selecting by method and header, a mock
# inside an intercepted TLS tunnel, the same actions on HTTP/2 streams (h2
# kept: mock, block, block close, a mocked POST larger than a stream's
# window, map-remote to plain HTTP, to verified https and to a bad
# certificate), the flows as recorded (the answer as sent, the rule, both URLs of a
# map-remote, a request body past the capture limit), and the dashboard's
# rules API (a mock works, file= and a bad match= are refused with the
# column); replays and composed requests, to which the same actions apply
# (recorded without an origin, or sent to the mapped one, verified).
. "$(dirname "$0")/lib.sh"

need_cmd nghttpd ss
make_pki
make_localhost_leaf
start_origin ORIGIN_PORT
start_origin SECOND_PORT
start_origin TLS_PORT --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem"
start_origin BAD_PORT --tls "$PKI/other.pem" "$PKI/other-key.pem"
start_origin GOOD_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"
O=http://127.0.0.1:$ORIGIN_PORT
# An h2 origin (good.test, alt.test), where the proxy would relay h2 streams.
nghttpd --address=127.0.0.1 --htdocs="$tmp" 0 "$PKI/good-key.pem" "$PKI/good.pem" \
    > "$tmp/nghttpd.log" 2>&1 &
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
TOKEN=rule-actions-test-token-0123456789

mkdir -p "$tmp/conf"
printf '{"from":"a file"}\n' > "$tmp/conf/body.json"
cat > "$tmp/conf/actions.rules" <<RULES
request mock name=mocked host=127.0.0.1 path=/mocked header='Content-Type: application/json' header='X-Mock: 1' 201 '{"ok":1}'
request map-local name=from-file host=127.0.0.1 path=/file file=body.json header='Content-Type: application/json'
request block name=blocked host=127.0.0.1 path=/blocked
request block name=cut host=127.0.0.1 path=/cut close
request mock name=post-mock host=127.0.0.1 match='~m POST & ~hq "X-Mock: yes"' 200 'mocked post'
request map-remote name=second host=127.0.0.1 path=/second/ http://127.0.0.1:$SECOND_PORT/
request map-remote name=tls host=127.0.0.1 path=/tls/ https://localhost:$TLS_PORT/
request map-remote name=bad host=127.0.0.1 path=/bad/ https://localhost:$BAD_PORT/
request mock name=tls-mock host=good.test path=/tlsmock 200 'tls mock'
request map-remote name=tunnel-plain host=good.test path=/to-second/ http://127.0.0.1:$SECOND_PORT/
request map-remote name=tunnel-tls host=good.test path=/to-tls/ https://localhost:$TLS_PORT/
request block name=h2-block host=good.test path=/h2block
request block name=h2-cut host=good.test path=/h2cut close
request mock name=h2-post host=good.test path=/h2post 200 'h2 post'
request map-remote name=h2-bad host=good.test path=/to-bad/ https://localhost:$BAD_PORT/
RULES
start_proxy --rules "$tmp/conf/actions.rules" --upstream-ca "$PKI/ca.pem" \
    --dashboard-token "$TOKEN" --capture-limit 1024
dashboard_port

# origin_saw LOG TARGET: the origin's log has a request line for TARGET.
origin_saw() { grep -c " $2\$" "$1"; }

# ---- mock ----
pcurl -D "$tmp/mock.head" -o "$tmp/mock.body" "$O/mocked"
check_eq "mock: the status of the rule" "HTTP/1.1 201 Created" "$(status_line "$tmp/mock.head")"
check_eq "mock: the body of the rule" '{"ok":1}' "$(cat "$tmp/mock.body")"
hdrs=$(tr -d '\r' < "$tmp/mock.head")
check_imatch "mock: its header= fields" '^content-type: application/json$' "$hdrs"
check_imatch "mock: ...all of them" '^x-mock: 1$' "$hdrs"
check_imatch "mock: framed by tapwire with Content-Length" '^content-length: 8$' "$hdrs"
check_eq "mock: the origin never saw the request" 0 "$(origin_saw "$ORIGIN_PORT_LOG" /mocked)"

pcurl -D "$tmp/file.head" -o "$tmp/file.body" "$O/file"
check_eq "map-local: 200 by default" "HTTP/1.1 200 OK" "$(status_line "$tmp/file.head")"
check_eq "map-local: the file's bytes, read when the rules were" \
    "$(file_sha "$tmp/conf/body.json")" "$(file_sha "$tmp/file.body")"
check_imatch "map-local: Content-Length of the file" '^content-length: 18$' \
    "$(tr -d '\r' < "$tmp/file.head")"
check_eq "map-local: the origin never saw the request" 0 "$(origin_saw "$ORIGIN_PORT_LOG" /file)"

# A POST to a mock: its body is read (and recorded), so the connection
# carries the next request.
head -c 5000 /dev/zero | tr '\0' 'p' > "$tmp/post5000"
out=$(pcurl -H 'X-Mock: yes' --data-binary @"$tmp/post5000" -w ' %{num_connects}' "$O/echo" \
    --next --noproxy '' -x "http://127.0.0.1:$PROXY_PORT" -w ' %{num_connects}' "$O/mocked")
check_eq "match=: a POST with X-Mock: yes is mocked, and the connection is kept for the next" \
    'mocked post 1{"ok":1} 0' "$out"
out=$(pcurl --data-binary 'to the origin' "$O/echo")
check_eq "match=: a POST without the header reaches the origin" 'to the origin' "$out"
out=$(pcurl -H 'X-Mock: yes' "$O/conn")
check_match "match=: a GET with the header reaches the origin" '^conn=' "$out"
check_eq "match=: the origin saw only the unmocked POST" 1 \
    "$(origin_saw "$ORIGIN_PORT_LOG" /echo)"

# ---- block ----
pcurl -D "$tmp/block.head" -o "$tmp/block.body" "$O/blocked"
check_eq "block: 403 by default" "HTTP/1.1 403 Forbidden" "$(status_line "$tmp/block.head")"
check_contains "block: the page names the rule" "blocked by rule blocked" "$(cat "$tmp/block.body")"
check_imatch "block: a text/plain page" '^content-type: text/plain' "$(tr -d '\r' < "$tmp/block.head")"
pcurl -o /dev/null "$O/cut" 2> "$tmp/cut.err"
rc=$?
check_eq "block close: the client gets no answer (curl: empty reply)" 52 "$rc"
check_eq "block: the origin saw neither" 0 \
    "$(($(origin_saw "$ORIGIN_PORT_LOG" /blocked) + $(origin_saw "$ORIGIN_PORT_LOG" /cut)))"

# ---- map-remote ----
out=$(pcurl "$O/second/headers")
check_contains "map-remote: the second origin answered, at the mapped path" \
    "GET /headers HTTP/1.1" "$out"
check_contains "map-remote: ...with its own name as Host" "Host: 127.0.0.1:$SECOND_PORT" "$out"
check_eq "map-remote: the first origin never saw it" 0 "$(origin_saw "$ORIGIN_PORT_LOG" /second/headers)"
check_eq "map-remote: the second did" 1 "$(origin_saw "$SECOND_PORT_LOG" /headers)"

out=$(pcurl "$O/tls/conn")
check_match "map-remote to https: a verified origin answers" '^conn=' "$out"
check_eq "map-remote to https: the TLS origin saw it" 1 "$(origin_saw "$TLS_PORT_LOG" /conn)"
code=$(pcurl -o "$tmp/bad.body" -w '%{http_code}' "$O/bad/conn")
check_eq "map-remote to a bad certificate: the verification error page" 502 "$code"
check_imatch "map-remote to a bad certificate: the page names the reason" \
    'certificate|verif|name' "$(cat "$tmp/bad.body")"
check_no_match "map-remote to a bad certificate: not one request reached it" ' req=' \
    "$(cat "$BAD_PORT_LOG")"

# ---- inside an intercepted TLS tunnel ----
out=$(pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$GOOD_PORT" \
    https://good.test/tlsmock)
check_eq "intercepted TLS: the mock answers" 'tls mock' "$out"
# HTTP/2: the actions run on HTTP/2 streams too, so a client offering h2
# keeps it whatever the rules say (here the tunnel's origin speaks only h2):
# a mock or block is answered on the client's stream, a map-remote goes
# over HTTP/1.1 to its own origin, verified by its name.
h2curl() { pcurl --http2 --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$H2_PORT" "$@"; }
out=$(h2curl -D "$tmp/h2mock.head" -w ' %{http_version}' https://good.test/tlsmock)
check_eq "HTTP/2 client, a host with an action: h2 kept, and the mock answers" 'tls mock 2' "$out"
check_imatch "h2 mock: framed by tapwire with content-length" '^content-length: 8$' \
    "$(tr -d '\r' < "$tmp/h2mock.head")"
h2curl -I -o "$tmp/h2head.head" https://good.test/tlsmock
check_imatch "h2 mock of a HEAD: the fields with the content-length of the body not sent" \
    '^content-length: 8$' "$(tr -d '\r' < "$tmp/h2head.head")"
out=$(h2curl -o "$tmp/h2block.body" -w '%{http_code} %{http_version}' https://good.test/h2block)
check_eq "h2 block: 403 on the stream" '403 2' "$out"
check_contains "h2 block: the page names the rule" "blocked by rule h2-block" \
    "$(cat "$tmp/h2block.body")"
h2curl -o /dev/null https://good.test/h2cut 2> "$tmp/h2cut.err"
rc=$?
check_eq "h2 block close: the stream is reset, no answer (curl: HTTP/2 stream error)" 92 "$rc"
check_contains "h2 block close: ...with CANCEL" "CANCEL" "$(cat "$tmp/h2cut.err")"
# Larger than the stream window tapwire opens (256 KiB): the answered
# stream's body is acknowledged as it comes, or this would stall.
head -c 600000 /dev/zero | tr '\0' 'q' > "$tmp/post600k"
out=$(h2curl --data-binary @"$tmp/post600k" -w ' %{http_version}' https://good.test/h2post)
check_eq "h2 mock of a POST larger than a stream window: answered, h2 kept" 'h2 post 2' "$out"
out=$(h2curl -w ' %{http_version}' https://good.test/to-second/headers)
check_contains "h2 map-remote to plain HTTP: the second origin answered, with its own Host" \
    "Host: 127.0.0.1:$SECOND_PORT" "$out"
check_match "h2 map-remote to plain HTTP: h2 kept with the client" ' 2$' "$out"
out=$(h2curl https://good.test/to-tls/headers)
check_contains "h2 map-remote to https: verified by the new origin's name" \
    "Host: localhost:$TLS_PORT" "$out"
out=$(h2curl -o "$tmp/h2bad.body" -w '%{http_code} %{http_version}' https://good.test/to-bad/conn)
check_eq "h2 map-remote to a bad certificate: 502 on the stream" '502 2' "$out"
check_imatch "h2 map-remote to a bad certificate: the page names the reason" \
    'certificate|verif|name' "$(cat "$tmp/h2bad.body")"
check_no_match "h2 map-remote to a bad certificate: not one request reached it" ' req=' \
    "$(cat "$BAD_PORT_LOG")"
printf h2-page > "$tmp/page.txt"
out=$(pcurl --http2 --cacert "$PROXY_CA" --connect-to "alt.test:443:127.0.0.1:$H2_PORT" \
    -w ' %{http_version}' https://alt.test/page.txt)
check_eq "HTTP/2 client, a host without actions: still h2 end to end" 'h2-page 2' "$out"
out=$(pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$GOOD_PORT" \
    https://good.test/conn)
check_match "intercepted TLS: other paths still reach the origin" '^conn=' "$out"
check_eq "intercepted TLS: the origin never saw the mocked path" 0 \
    "$(origin_saw "$GOOD_PORT_LOG" /tlsmock)"
out=$(pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$GOOD_PORT" \
    https://good.test/to-second/headers)
check_contains "intercepted TLS, map-remote to plain HTTP: the second origin answered" \
    "Host: 127.0.0.1:$SECOND_PORT" "$out"
out=$(pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$GOOD_PORT" \
    https://good.test/to-tls/headers)
check_contains "intercepted TLS, map-remote to https: verified by the new origin's name, not the SNI" \
    "Host: localhost:$TLS_PORT" "$out"
check_eq "intercepted TLS, map-remote: the tunnel's origin saw neither" 0 \
    "$(grep -c ' /to-' "$GOOD_PORT_LOG")"

# ---- the flows ----
sq() {
    python3 - "$PROXY_DATA/tapwire.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=5)
for row in db.execute(sys.argv[2]).fetchall():
    print("|".join("" if v is None else (v.decode() if isinstance(v, bytes) else str(v))
                   for v in row))
PY
}
wait_written 17 || fail "the flows were not written"
check_eq "flow of the mock: the answer as sent, and the rule" \
    "201|{\"ok\":1}|mocked|answered by rule mocked" \
    "$(sq "SELECT status, resp_body, rules, rules_notes FROM flows WHERE target='/mocked' ORDER BY id LIMIT 1")"
check_contains "flow of the mock: the header section as sent" "Content-Length: 8" \
    "$(sq "SELECT resp_headers FROM flows WHERE target='/mocked' ORDER BY id LIMIT 1")"
check_eq "flow of block close: no status, the reason as its error" \
    "0|connection closed by rule cut" \
    "$(sq "SELECT status, error FROM flows WHERE target='/cut'")"
check_eq "flow of the map-remote: the URL used, the one asked for as its note" \
    "127.0.0.1|$SECOND_PORT|/headers|/second/headers|second|map-remote: asked for $O/second/headers, sent to http://127.0.0.1:$SECOND_PORT/headers" \
    "$(sq "SELECT host, port, target, target_original, rules, rules_notes FROM flows WHERE rules='second'")"
check_eq "flow of a mocked POST past the capture limit: the body kept to the limit, marked truncated" \
    "5000|1024|1|post-mock" \
    "$(sq "SELECT req_body_size, req_body_captured, req_truncated, rules FROM flows WHERE rules='post-mock'")"
check_eq "flow of the h2 mock: HTTP/2 both ways, the answer as sent, the rule" \
    "HTTP/2|HTTP/2|200|tls mock|tls-mock|answered by rule tls-mock" \
    "$(sq "SELECT req_version, resp_version, status, resp_body, rules, rules_notes FROM flows WHERE target='/tlsmock' AND req_version='HTTP/2' AND method='GET'")"
check_contains "flow of the h2 mock: the fields as sent" "content-length: 8" \
    "$(sq "SELECT resp_headers FROM flows WHERE target='/tlsmock' AND req_version='HTTP/2' AND method='GET'")"
check_eq "flow of the h2 block close: no status, the reason as its error" \
    "HTTP/2|0|connection closed by rule h2-cut" \
    "$(sq "SELECT req_version, status, error FROM flows WHERE target='/h2cut'")"
check_eq "flow of the h2 mocked POST: its body recorded (to the capture limit)" \
    "600000|1024|200|h2-post" \
    "$(sq "SELECT req_body_size, req_body_captured, status, rules FROM flows WHERE target='/h2post'")"
check_eq "flow of the h2 map-remote: HTTP/2 from the client, HTTP/1.1 from the mapped origin, both URLs" \
    "HTTP/2|HTTP/1.1|200|127.0.0.1|$SECOND_PORT|/headers|/to-second/headers|map-remote: asked for https://good.test/to-second/headers, sent to http://127.0.0.1:$SECOND_PORT/headers" \
    "$(sq "SELECT req_version, resp_version, status, host, port, target, target_original, rules_notes FROM flows WHERE rules='tunnel-plain' AND req_version='HTTP/2'")"

# ---- replays: the same actions, no client ----
# replay_api PATH JSON: POSTs to the dashboard; the status in $CODE, the
# answer in $tmp/replay.json, the new flow's id in $RID.
replay_api() {
    CODE=$(dcurl -o "$tmp/replay.json" -w '%{http_code}' -X POST -H "X-Tapwire-Token: $TOKEN" \
        -H "Origin: $D" -H 'Content-Type: application/json' --data-binary "$2" "$D$1")
    RID=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("id", ""))' \
        "$tmp/replay.json" 2> /dev/null)
}
compose() { replay_api /api/replay "$1"; }
MOCK_ID=$(sq "SELECT id FROM flows WHERE target='/mocked' ORDER BY id LIMIT 1")
replay_api "/api/flows/$MOCK_ID/replay" '{}'
check_eq "replay of a mocked flow: 200" 200 "$CODE"
check_eq "replay of a mocked flow: the rule's answer recorded as the new flow" \
    "201|{\"ok\":1}|mocked|answered by rule mocked|$MOCK_ID|" \
    "$(sq "SELECT status, resp_body, rules, rules_notes, replay_of, ifnull(error, '') FROM flows WHERE id=$RID")"
check_contains "replay of a mocked flow: the fields as the rule gives them, framed by tapwire" \
    "Content-Length: 8" "$(sq "SELECT resp_headers FROM flows WHERE id=$RID")"
compose "{\"method\": \"POST\", \"url\": \"$O/echo?r=replay-mock\", \"headers\": [[\"X-Mock\", \"yes\"]], \"body\": \"replayed post\"}"
check_eq "composed POST to a match= mock: 200" 200 "$CODE"
check_eq "composed POST to a mock: answered, its request body recorded" \
    "200|mocked post|13|replayed post|post-mock" \
    "$(sq "SELECT status, resp_body, req_body_size, req_body, rules FROM flows WHERE id=$RID")"
compose "{\"url\": \"$O/blocked?r=replay\"}"
check_eq "composed block: 200" 200 "$CODE"
check_eq "composed block: the 403 page as the flow, the reason as its error" \
    "403|blocked by rule blocked" "$(sq "SELECT status, error FROM flows WHERE id=$RID")"
check_contains "composed block: the page names the rule" "blocked by rule blocked" \
    "$(sq "SELECT resp_body FROM flows WHERE id=$RID")"
compose "{\"url\": \"$O/cut?r=replay\"}"
check_eq "composed block close: 200" 200 "$CODE"
check_eq "composed block close: no answer, the reason as its error" \
    "0|connection closed by rule cut|" \
    "$(sq "SELECT status, error, ifnull(resp_headers, '') FROM flows WHERE id=$RID")"
check_eq "replayed mock and block: the origin saw none of them" 0 \
    "$(grep -c 'r=replay' "$ORIGIN_PORT_LOG")"
compose "{\"url\": \"$O/second/headers?r=replay\"}"
check_eq "composed map-remote: 200" 200 "$CODE"
check_eq "composed map-remote: sent to the mapped origin, both URLs recorded" \
    "200|http|127.0.0.1|$SECOND_PORT|/headers?r=replay|/second/headers?r=replay|second|map-remote: asked for $O/second/headers?r=replay, sent to http://127.0.0.1:$SECOND_PORT/headers?r=replay" \
    "$(sq "SELECT status, scheme, host, port, target, target_original, rules, rules_notes FROM flows WHERE id=$RID")"
check_contains "composed map-remote: the second origin got it with its own Host" \
    "Host: 127.0.0.1:$SECOND_PORT" "$(sq "SELECT resp_body FROM flows WHERE id=$RID")"
check_eq "composed map-remote: the second origin saw it, the first did not" "1 0" \
    "$(grep -c ' /headers?r=replay$' "$SECOND_PORT_LOG") $(grep -c 'r=replay' "$ORIGIN_PORT_LOG")"
compose "{\"url\": \"$O/tls/conn?r=replay\"}"
check_eq "composed map-remote to https: 200" 200 "$CODE"
check_match "composed map-remote to https: the verified origin answered" \
    '^200\|https\|localhost\|' "$(sq "SELECT status, scheme, host, tls_verification FROM flows WHERE id=$RID")"
check_eq "composed map-remote to https: the TLS origin saw it" 1 \
    "$(grep -c ' /conn?r=replay$' "$TLS_PORT_LOG")"
compose "{\"url\": \"$O/bad/conn?r=replay\"}"
check_eq "composed map-remote to a bad certificate: 200" 200 "$CODE"
check_match "composed map-remote to a bad certificate: 502 with the reason" \
    '^502\|.*(certificate|verif|name)' "$(sq "SELECT status, error FROM flows WHERE id=$RID")"
check_no_match "composed map-remote to a bad certificate: not one request reached it" ' req=' \
    "$(cat "$BAD_PORT_LOG")"

# ---- the dashboard's rules API ----
api_rule() {
    python3 -c 'import json, sys; print(json.dumps({"spec": sys.argv[1], "enabled": True}))' "$1" \
        > "$tmp/rule.json"
    dcurl -o "$tmp/api.body" -w '%{http_code}' -X POST -H "X-Tapwire-Token: $TOKEN" \
        -H "Origin: $D" -H 'Content-Type: application/json' --data-binary @"$tmp/rule.json" \
        "$D/api/rules"
}
check_eq "API: a mock rule is added" 201 "$(api_rule "request mock path=/api-mock 202 'from the dashboard'")"
out=$(pcurl -w ' %{http_code}' "$O/api-mock")
check_eq "API: the dashboard's mock answers from the next request on" 'from the dashboard 202' "$out"
check_eq "API: file= refused (the dashboard reads no files of the proxy's machine)" 400 \
    "$(api_rule "request mock file=$tmp/conf/body.json 200")"
check_contains "API: ...saying why" "file= is for --rules and --rule only" "$(cat "$tmp/api.body")"
check_eq "API: a bad match= refused" 400 "$(api_rule "request block match='~m GET & (' 403")"
check_contains "API: ...with the column in the line" "column 32: match=" "$(cat "$tmp/api.body")"

check "the proxy still serves" proxy_serves "$ORIGIN_PORT"
finish
