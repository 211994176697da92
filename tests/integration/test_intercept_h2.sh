#!/bin/bash
# Intercept of HTTP/2 streams (h2intercept.h; tapwire(1) INTERCEPT AND
# REPLAY): a client offering h2 through CONNECT to an h2 origin (nghttpd).
# A matching stream waits while another stream on the same connection is
# answered; resumed with edits (path, header fields named in any case) it
# reaches the origin edited; dropped it never does and the client gets 502;
# --intercept-timeout sends it on unchanged; a client that resets the
# stream ends the wait while its connection goes on; a response head is
# held and edited (status, fields), and a body edit of a GET refused
# (409); bodies, through a TLS --reverse listener to the HTTP/1.1 test
# origin (h2bridge): a POST held with its body while the other stream of
# the connection goes on, edited, the origin's /echo gets the edited body
# (and an h2 origin, nghttpd, the edited body with its content-length);
# ~bq matches a POST's body; ~bs a response's (decoded), whose edited body
# reaches the client with a content-length and no content-encoding; a body
# over the limit parks its head alone, as do bodies past the connection's
# budget and one that does not end within 3 s; shutdown releases a
# waiting stream.
. "$(dirname "$0")/lib.sh"

need_cmd nghttpd ss sqlite3 python3
make_pki

mkdir -p "$tmp/www"
echo hello-h2 > "$tmp/www/index.html"
echo free-content > "$tmp/www/free.html"
echo edited-content > "$tmp/www/edited.html"
# -v: the log shows every request's header fields as nghttpd got them.
nghttpd -v --address=127.0.0.1 --htdocs="$tmp/www" 0 "$PKI/good-key.pem" "$PKI/good.pem" \
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

start_origin ORIGIN_PORT

TOKEN=intercept-h2-token-0123456789
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN" --intercept 'held' \
    --intercept-timeout 10 --reverse "https://127.0.0.1:0=http://127.0.0.1:$ORIGIN_PORT"
dashboard_port
REV=
for ((i = 0; i < 100; i++)); do
    REV=$(grep -aEo '^reverse proxy listening on https://127\.0\.0\.1:[0-9]+' "$PROXY_OUT" |
        sed 's/.*://')
    [ -n "$REV" ] && break
    sleep 0.05
done
[ -n "$REV" ] || bail "no reverse listener line: $(head -c 800 "$PROXY_OUT")"
R=https://rev.example:$REV
# rcurl ARGS...: curl over HTTP/2 to the reverse listener (HTTP/1.1 origin behind).
rcurl() { dcurl --http2 --cacert "$PROXY_CA" --resolve "rev.example:$REV:127.0.0.1" "$@"; }
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")
G=https://good.test

h2curl() { pcurl --http2 --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$H2_PORT" "$@"; }
origin_saw() { grep -c -- "$1" "$tmp/nghttpd.log"; }

# until_flow SQL_CONDITION: until a stored flow matches (5 s).
until_flow() {
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(flows_where "$1")" -ge 1 ] 2> /dev/null && return 0
        sleep 0.05
    done
    echo "no flow where $1"
    return 1
}

# ---- one stream waits, the other on the same connection goes on ----
h2curl --no-progress-meter --parallel --parallel-max 2 -o "$tmp/held.out" -o "$tmp/free.out" \
    -w '%{url} %{http_version} %{http_code} %{num_connects}\n' \
    "$G/index.html?held=1" "$G/free.html" > "$tmp/parallel.txt" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the matching stream waits" wait_held 1
check_eq "waiting: a request" "request" "$(dash_json /api/intercepted 'd["flows"][0]["side"]')"
check_eq "waiting: its URL" "$G/index.html?held=1" "$(dash_json /api/intercepted 'd["flows"][0]["url"]')"
check "the other stream was answered meanwhile" until_flow "target = '/free.html' and status = 200"
check_eq "the first one still waits" 1 "$(dash_json /api/intercepted 'len(d["flows"])')"
check_eq "the origin has not seen the waiting one" 0 "$(origin_saw 'held=1')"
ID=$(held_id)
check_eq "a body edit of an HTTP/2 request: 409" 409 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "x"}')"
check_eq "resume with edits: 200" 200 "$(dsend POST "/api/flows/$ID/resume" \
    "{\"url\": \"$G/edited.html?held=1\", \"headers\": [[\"User-Agent\", \"curl-edited\"], [\"X-Edited\", \"yes\"]]}")"
wait_pid "$CURL_PID" 10
check_eq "the client got both answers" 0 "$?"
check_eq "the edited stream got the edited path's page" "edited-content" "$(cat "$tmp/held.out")"
check_eq "the other stream's page" "free-content" "$(cat "$tmp/free.out")"
check_eq "both over HTTP/2, 200, on one connection" "2 200 2 200 1" \
    "$(sort "$tmp/parallel.txt" | awk '{v = v $2 " " $3 " "; c += $4} END {print v c}')"
check_eq "the origin got the edited path" 1 "$(origin_saw ':path: /edited.html?held=1')"
check_eq "the origin got the added field, lowercased" 1 "$(origin_saw 'x-edited: yes')"
check_eq "the origin got the edited user-agent" 1 "$(origin_saw 'user-agent: curl-edited')"
check "edited flow recorded" until_flow "target = '/edited.html?held=1'"
check_eq "flow: marked as changed by the intercept, the original target kept" 1 \
    "$(flows_where "target = '/edited.html?held=1' and rules like '%intercept%'
        and target_original = '/index.html?held=1' and rules_notes like '%resumed edited%'
        and req_version = 'HTTP/2'")"

# ---- dropped: never reaches the origin, the client gets 502 ----
h2curl -o /dev/null -w '%{http_version} %{http_code}' "$G/index.html?held=drop" > "$tmp/drop.code" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the stream to drop waits" wait_held 1
check_eq "drop: 200" 200 "$(dsend POST "/api/flows/$(held_id)/drop")"
wait_pid "$CURL_PID" 5
check_eq "dropped: HTTP/2 502" "2 502" "$(cat "$tmp/drop.code")"
check_eq "dropped: never reached the origin" 0 "$(origin_saw 'held=drop')"
check "dropped flow recorded" until_flow "target = '/index.html?held=drop' and status = 502
    and rules_notes like '%dropped%'"

# ---- nobody answers: --intercept-timeout (10 s: held flows are edited meanwhile, and on a loaded machine that takes seconds) sends it on unchanged ----
start=$(now_ms)
out=$(h2curl -o /dev/null -w '%{http_version} %{http_code}' --max-time 25 "$G/index.html?held=timeout")
elapsed=$(($(now_ms) - start))
check_eq "timed out: answered by the origin over HTTP/2" "2 200" "$out"
check_le "timed out: not before the timeout" 9900 "$elapsed"
check_le "timed out: soon after it" "$elapsed" 16000
check "timed-out flow recorded" until_flow "target = '/index.html?held=timeout'
    and rules_notes like '%intercept-timeout%'"

# ---- the client resets the waiting stream; its connection goes on ----
python3 "$LIB_DIR/h2_reset_peer.py" "$PROXY_PORT" "127.0.0.1:$H2_PORT" good.test "$PROXY_CA" \
    "/index.html?held=reset" "$tmp/go-reset" > "$tmp/reset.out" 2>&1 &
PEER_PID=$!
track_pid "$PEER_PID"
check "the stream to reset waits" wait_held 1
touch "$tmp/go-reset"
start=$(now_ms)
check "the reset ended the wait" wait_held 0
check_le "at once, not at the timeout" "$(($(now_ms) - start))" 3000
wait_pid "$PEER_PID" 15
check_eq "the reset stream was never answered; the next one on the connection was" \
    "response 3" "$(cat "$tmp/reset.out")"
check_eq "the reset stream never reached the origin" 0 "$(origin_saw 'held=reset')"
check "reset flow recorded" until_flow "target = '/index.html?held=reset'
    and error like '%client reset the stream%' and rules_notes like '%intercept%'"

# ---- a response head held and edited ----
check_eq "PUT a response filter: 200" 200 "$(dsend PUT /api/intercept '{"filter": "~s & ~u resp"}')"
h2curl -i -o "$tmp/resp.out" "$G/index.html?resp=1" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the response waits" wait_held 1
check_eq "waiting: a response" "response" "$(dash_json /api/intercepted 'd["flows"][0]["side"]')"
check_eq "waiting: its status" 200 "$(dash_json /api/intercepted 'd["flows"][0]["status"]')"
check_eq "the origin answered already" 1 "$(origin_saw 'resp=1')"
check_eq "waiting: the h2 origin's body held with it" "hello-h2" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body"].strip()')"
ID=$(held_id)
check_eq "resume the response edited: 200" 200 "$(dsend POST "/api/flows/$ID/resume" \
    '{"status": 203, "headers": [["Content-Type", "text/plain"], ["X-Response-Edited", "1"]]}')"
wait_pid "$CURL_PID" 5
check_eq "the response's client got it" 0 "$?"
check_contains "the client got the edited status" "HTTP/2 203" "$(cat "$tmp/resp.out")"
check_contains "the client got the edited field" "x-response-edited: 1" "$(cat "$tmp/resp.out")"
check_contains "and the body" "hello-h2" "$(cat "$tmp/resp.out")"
check "edited response flow recorded" until_flow "target = '/index.html?resp=1' and status = 203
    and resp_headers_original is not null and rules_notes like '%the status was 200%'"

# ---- a request body held (~bq), edited; the other stream goes on ----
check_eq "PUT a request body filter: 200" 200 \
    "$(dsend PUT /api/intercept '{"filter": "~bq secret-word & ~u bq="}')"
check_eq "~bq: a POST whose body does not match goes on" "plain body" \
    "$(rcurl --max-time 5 --data-binary 'plain body' "$R/echo?bq=no")"
rcurl --no-progress-meter --parallel --parallel-max 2 --data-binary 'the secret-word body' \
    -o "$tmp/post.out" -o "$tmp/post-free.out" -w '%{url} %{http_version} %{http_code} %{num_connects}\n' \
    "$R/echo?bq=1" "$R/echo?free=1" > "$tmp/post-parallel.txt" &
CURL_PID=$!
track_pid "$CURL_PID"
check "~bq: the POST waits" wait_held 1
check "~bq: the other stream was answered meanwhile" until_flow "target = '/echo?free=1' and status = 200"
check_eq "~bq: waiting: a request" "request" "$(dash_json /api/intercepted 'd["flows"][0]["side"]')"
check_eq "~bq: waiting: its body held" "True" "$(dash_json /api/intercepted 'd["flows"][0]["body_held"]')"
check_eq "~bq: waiting: the body" "the secret-word body" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body"]')"
check_eq "~bq: the origin has not seen it" 0 "$(grep -c 'bq=1' "$ORIGIN_PORT_LOG")"
ID=$(held_id)
check_eq "~bq: resume with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "an edited request body, longer than it was"}')"
wait_pid "$CURL_PID" 10
check_eq "~bq: the client got both answers" 0 "$?"
check_eq "~bq: the origin echoed the edited body" "an edited request body, longer than it was" \
    "$(cat "$tmp/post.out")"
check_eq "~bq: the other stream's echo" "the secret-word body" "$(cat "$tmp/post-free.out")"
check_eq "~bq: both over HTTP/2, 200, on one connection" "2 200 2 200 1" \
    "$(sort "$tmp/post-parallel.txt" | awk '{v = v $2 " " $3 " "; c += $4} END {print v c}')"
check "~bq: edited flow recorded" until_flow "target = '/echo?bq=1' and rules_notes like '%resumed edited%'"
FID=$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select id from flows where target = '/echo?bq=1'")
check_eq "~bq: flow: the body sent" "an edited request body, longer than it was" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$FID/request/body")"
check_eq "~bq: flow: the body as the client sent it" "the secret-word body" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$FID/request/body?original=1")"

# ---- the same to the h2 origin (nghttpd: its log shows what arrived) ----
check_eq "PUT a filter for the h2 origin: 200" 200 \
    "$(dsend PUT /api/intercept '{"filter": "~bq nghttpd-word"}')"
h2curl -o /dev/null -w '%{http_version} %{http_code}' --data-binary 'to nghttpd-word' \
    "$G/index.html?h2post=1" > "$tmp/h2post.code" &
CURL_PID=$!
track_pid "$CURL_PID"
check "h2 origin: the POST waits" wait_held 1
check_eq "h2 origin: its body held" "to nghttpd-word" "$(dash_json /api/intercepted 'd["flows"][0]["body"]')"
check_eq "h2 origin: resume with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$(held_id)/resume" '{"body": "0123456789abcdefghijklmnopq"}')"
wait_pid "$CURL_PID" 10
check_eq "h2 origin: the client got its answer" 0 "$?"
check_eq "h2 origin: the origin got the new length" 1 "$(origin_saw 'content-length: 27')"
check "h2 origin: and 27 bytes of DATA" grep -q 'recv DATA frame <length=27' "$tmp/nghttpd.log"

# ---- a request body over the limit: its head parks alone ----
head -c 1200000 /dev/zero | tr '\0' a > "$tmp/big.txt"
echo secret-word >> "$tmp/big.txt"
check_eq "PUT a head filter: 200" 200 "$(dsend PUT /api/intercept '{"filter": "~u big="}')"
rcurl -o "$tmp/big.out" --data-binary @"$tmp/big.txt" "$R/echo?big=1" &
CURL_PID=$!
track_pid "$CURL_PID"
check "big: the POST waits" wait_held 1
check_eq "big: its body not held" "False" "$(dash_json /api/intercepted 'd["flows"][0]["body_held"]')"
ID=$(held_id)
check_eq "big: a body edit: 409" 409 "$(dsend POST "/api/flows/$ID/resume" '{"body": "x"}')"
check_eq "big: resume: 200" 200 "$(dsend POST "/api/flows/$ID/resume")"
wait_pid "$CURL_PID" 10
check_eq "big: the client got its answer" 0 "$?"
check_eq "big: the origin echoed the whole body" "$(stat -c %s "$tmp/big.txt")" "$(stat -c %s "$tmp/big.out")"

# ---- a body that does not end (a streaming upload): after 3 s its head
# waits without it ----
check_eq "PUT a filter for a slow body: 200" 200 "$(dsend PUT /api/intercept '{"filter": "~u slow="}')"
start=$(now_ms)
(echo slow-start; sleep 7; echo slow-end) | rcurl -o "$tmp/slow.out" -X POST -T - "$R/echo?slow=1" &
CURL_PID=$!
track_pid "$CURL_PID"
check "slow: the head waits" wait_held 1
check_le "slow: before the body ended" "$(($(now_ms) - start))" 6500
check_eq "slow: its body not held" "False" "$(dash_json /api/intercepted 'd["flows"][0]["body_held"]')"
check_eq "slow: resume: 200" 200 "$(dsend POST "/api/flows/$(held_id)/resume")"
wait_pid "$CURL_PID" 15
check_eq "slow: the client got its answer" 0 "$?"
check_eq "slow: the origin echoed all of it" "slow-start slow-end" "$(tr '\n' ' ' < "$tmp/slow.out" | sed 's/ $//')"

# ---- the connection's budget of collected bodies: 9 bodies of 1 MB at
# once, past 8 MiB a head waits without its body ----
head -c 1000000 /dev/zero | tr '\0' m > "$tmp/mb.txt"
check_eq "PUT a filter for many: 200" 200 "$(dsend PUT /api/intercept '{"filter": "~u many="}')"
urls=()
for k in 1 2 3 4 5 6 7 8 9; do urls+=(-o /dev/null "$R/echo?many=$k"); done
rcurl --no-progress-meter --parallel --parallel-max 9 --data-binary @"$tmp/mb.txt" \
    -w '%{http_version} %{http_code} %{size_download}\n' "${urls[@]}" > "$tmp/many.txt" &
CURL_PID=$!
track_pid "$CURL_PID"
check "many: all nine wait" wait_held 9
# As the bodies come interleaved, the budget may cut several short.
check_eq "many: at most 8 held with their bodies, the others without" "True" \
    "$(dash_json /api/intercepted '0 < sum(not f["body_held"] for f in d["flows"]) and sum(f["body_held"] for f in d["flows"]) <= 8')"
check_eq "many: resume-all: 200" 200 "$(dsend POST /api/intercepted/resume-all)"
wait_pid "$CURL_PID" 20
check_eq "many: the client got every answer" 0 "$?"
check_eq "many: each echoed whole over HTTP/2" 9 "$(grep -c '^2 200 1000000$' "$tmp/many.txt")"

# ---- a response body held (~bs, decoded), edited ----
check_eq "PUT a response body filter: 200" 200 \
    "$(dsend PUT /api/intercept '{"filter": "~bs served.compressed & ~u bs="}')"
check_eq "~bs: a body that does not match goes on" 200 \
    "$(rcurl -o /dev/null -w '%{http_code}' --max-time 5 "$R/headers?bs=no")"
rcurl -i -o "$tmp/bs.out" "$R/compressed/gzip?n=2&chunked=1&bs=1" &
CURL_PID=$!
track_pid "$CURL_PID"
check "~bs: the response waits" wait_held 1
check_eq "~bs: waiting: a response" "response" "$(dash_json /api/intercepted 'd["flows"][0]["side"]')"
check_contains "~bs: waiting: its body decoded" "Example Domain: this page is served compressed" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body"]')"
ID=$(held_id)
check_eq "~bs: resume with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "the edited h2 response body\n"}')"
wait_pid "$CURL_PID" 10
check_eq "~bs: the client got it" 0 "$?"
check_contains "~bs: over HTTP/2" "HTTP/2 200" "$(cat "$tmp/bs.out")"
check_contains "~bs: the new body" "the edited h2 response body" "$(cat "$tmp/bs.out")"
check_contains "~bs: its length" "content-length: 28" "$(tr -d '\r' < "$tmp/bs.out")"
check_not_contains "~bs: not gzip any more" "content-encoding" "$(cat "$tmp/bs.out")"
check "~bs: edited flow recorded" until_flow "target like '/compressed/gzip%bs=1' and rules_notes like '%resumed edited%'"
FID=$(sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select id from flows where target like '/compressed/gzip%bs=1'")
check_eq "~bs: flow: the body sent" "the edited h2 response body" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$FID/response/body")"
check_contains "~bs: flow: the body as the origin sent it (decoded)" "Example Domain" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$FID/response/body?original=1")"

# ---- shutdown releases a waiting stream rather than waiting it out ----
check_eq "PUT the filter again" 200 "$(dsend PUT /api/intercept '{"filter": "held"}')"
h2curl -o /dev/null "$G/index.html?held=shutdown" 2> /dev/null &
CURL_PID=$!
track_pid "$CURL_PID"
check "the last stream waits" wait_held 1
start=$(now_ms)
stop_proxy
check_eq "the proxy stops cleanly" 0 "$?"
check_le "it stopped before the intercept timeout" "$(($(now_ms) - start))" 3500
wait_pid "$CURL_PID" 5
check_eq "the released stream was answered" 0 "$?"
check_contains "the log says it was released" "held=shutdown 200" "$(cat "$PROXY_ERR")"

finish
