#!/bin/bash
# Intercept of HTTP/2 streams (h2intercept.h; tapwire(1) INTERCEPT AND
# REPLAY): a client offering h2 through CONNECT to an h2 origin (nghttpd).
# A matching stream waits while another stream on the same connection is
# answered; resumed with edits (path, header fields named in any case) it
# reaches the origin edited; dropped it never does and the client gets 502;
# --intercept-timeout sends it on unchanged; a client that resets the
# stream ends the wait while its connection goes on; a response head is
# held and edited (status, fields), and a body edit refused (409); shutdown
# releases a waiting stream.
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

TOKEN=intercept-h2-token-0123456789
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN" --intercept 'held' \
    --intercept-timeout 10
dashboard_port
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")
G=https://good.test

h2curl() { pcurl --http2 --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$H2_PORT" "$@"; }
flows_where() { sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select count(*) from flows where $1"; }
origin_saw() { grep -c -- "$1" "$tmp/nghttpd.log"; }

# dsend METHOD PATH [JSON]: prints the status; the answer in $tmp/answer.json.
dsend() {
    local method=$1 path=$2 body=${3-}
    if [ -n "$body" ]; then
        dcurl -o "$tmp/answer.json" -w '%{http_code}' -X "$method" "${H[@]}" \
            -H 'Content-Type: application/json' --data-binary "$body" "$D$path"
    else
        dcurl -o "$tmp/answer.json" -w '%{http_code}' -X "$method" "${H[@]}" "$D$path"
    fi
}

wait_held() {
    local i n=0
    for ((i = 0; i < 100; i++)); do
        n=$(dash_json /api/intercepted 'len(d["flows"])')
        [ "$n" = "$1" ] && return 0
        sleep 0.05
    done
    echo "waiting: $n, expected $1"
    return 1
}

held_id() {
    local i id=""
    for ((i = 0; i < 100; i++)); do
        id=$(dash_json /api/intercepted 'd["flows"][0]["id"]')
        [[ $id =~ ^[0-9]+$ ]] && break
        sleep 0.05
    done
    echo "$id"
}

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
