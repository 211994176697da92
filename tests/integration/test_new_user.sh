#!/bin/bash
# What a new user trips over: "copy as curl" of a compressed response prints
# what the dashboard shows when it is run (--compressed, no hop-by-hop
# fields), --anticache takes the browser's cache out of the way (no
# conditional request fields reach the origin, responses say no-store), the
# /ca page is styled by a stylesheet that answers both on the dashboard and
# through the proxy at tapwire.invalid, and an unwritable --data-dir is
# named with the permission it lacks (checked as nobody, when the test runs
# as root and can switch users).
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=new-user-test-token-0123456789

# afetch NAME CURL_ARGS...: a dashboard request with the token; prints the
# status, body in $tmp/d-NAME.body, headers in $tmp/d-NAME.head.
afetch() {
    local name=$1
    shift
    : > "$tmp/d-$name.body"
    dcurl -o "$tmp/d-$name.body" -D "$tmp/d-$name.head" -w '%{http_code}' \
        -H "X-Tapwire-Token: $TOKEN" "$@"
}

# jval FILE EXPR: a Python expression over the JSON document d in FILE.
jval() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
print(eval(sys.argv[2]))' "$1" "$2" 2>&1
}

# newest_flow NAME PATH: waits (10 s) until the newest flow has PATH; its
# detail goes to $tmp/d-NAME.body.
newest_flow() {
    local i id
    for ((i = 0; i < 200; i++)); do
        afetch "$1-list" "$D/api/flows?limit=1" > /dev/null
        if [ "$(jval "$tmp/d-$1-list.body" 'd["flows"][0]["path"] if d["flows"] else ""')" = "$2" ]; then
            id=$(jval "$tmp/d-$1-list.body" 'd["flows"][0]["id"]')
            afetch "$1" "$D/api/flows/$id" > /dev/null
            FLOW_ID=$id
            return 0
        fi
        sleep 0.05
    done
    bail "no flow for $2 within 10 s"
}

start_origin ORIGIN_PORT
O=http://127.0.0.1:$ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port

# ---- copy as curl ----

pcurl --compressed -o /dev/null -H 'Connection: X-Hop' -H 'X-Hop: 1' -H 'Keep-Alive: timeout=5' \
    -H 'TE: trailers' -H 'X-Kept: yes' "$O/compressed/gzip" ||
    fail "GET /compressed/gzip through the proxy"
newest_flow gz /compressed/gzip
curl_line=$(jval "$tmp/d-gz.body" 'd["curl"]')
check_contains "curl: --compressed for a request that accepted codings" "--compressed" \
    "$curl_line"
check_not_contains "curl: no Accept-Encoding beside --compressed" "Accept-Encoding" "$curl_line"
for field in Connection X-Hop Keep-Alive TE; do
    check_no_imatch "curl: hop-by-hop $field left out" "-H '$field:" "$curl_line"
done
check_contains "curl: end-to-end field kept" "-H 'X-Kept: yes'" "$curl_line"
afetch gz-decoded "$D/api/flows/$FLOW_ID/response/body?decode=1" > /dev/null
[ -s "$tmp/d-gz-decoded.body" ] || fail "the dashboard shows no decoded body"
# Run the line as a user would, through the proxy (curl reads http_proxy).
http_proxy=http://127.0.0.1:$PROXY_PORT sh -c "$curl_line -sS --max-time $CURL_MAX_TIME" \
    > "$tmp/curl-run.out" 2> "$tmp/curl-run.err" || fail "the curl line failed: $(cat "$tmp/curl-run.err")"
check "curl: running the line prints the decoded body the dashboard shows" \
    cmp "$tmp/d-gz-decoded.body" "$tmp/curl-run.out"

pcurl -o /dev/null -H 'Accept-Encoding: identity, gzip;q=0' "$O/headers?plain=1" ||
    fail "GET /headers through the proxy"
newest_flow plain '/headers?plain=1'
check_not_contains "curl: no --compressed when every coding was refused" "--compressed" \
    "$(jval "$tmp/d-plain.body" 'd["curl"]')"

# ---- the /ca page, styled like the dashboard ----

check_eq "dashboard /ca: 200" 200 "$(afetch ca-page "$D/ca")"
check_contains "dashboard /ca links the dashboard's stylesheet" \
    '<link rel="stylesheet" href="/style.css">' "$(cat "$tmp/d-ca-page.body")"
check_not_contains "dashboard /ca has no inline style (the CSP forbids it)" 'style=' \
    "$(cat "$tmp/d-ca-page.body")"
check_eq "dashboard /style.css: 200" 200 "$(afetch css "$D/style.css")"
check_imatch "dashboard /style.css is text/css" '^Content-Type: text/css' \
    "$(tr -d '\r' < "$tmp/d-css.head")"
check_contains "the stylesheet styles the /ca page" 'body.doc' "$(cat "$tmp/d-css.body")"
code=$(pcurl -o "$tmp/local-page.body" -w '%{http_code}' "http://tapwire.invalid/")
check_eq "proxy http://tapwire.invalid/: 200" 200 "$code"
check_contains "proxy page links the stylesheet" '<link rel="stylesheet" href="/style.css">' \
    "$(cat "$tmp/local-page.body")"
code=$(pcurl -o "$tmp/local-css.body" -D "$tmp/local-css.head" -w '%{http_code}' \
    "http://tapwire.invalid/style.css")
check_eq "proxy http://tapwire.invalid/style.css: 200" 200 "$code"
check_imatch "proxy stylesheet is text/css" '^Content-Type: text/css' \
    "$(tr -d '\r' < "$tmp/local-css.head")"
check "proxy stylesheet is the dashboard's" cmp "$tmp/d-css.body" "$tmp/local-css.body"

# ---- --anticache ----

# Without it the origin's cache validation works as a browser would use it.
code=$(pcurl -o /dev/null -w '%{http_code}' -H 'If-None-Match: "tapwire-v1"' "$O/cached")
check_eq "without --anticache: a conditional request is answered 304" 304 "$code"
stop_proxy
PROXY_DATA_DIR=$tmp/data-anticache start_proxy --dashboard 127.0.0.1:0 \
    --dashboard-token "$TOKEN" --anticache
dashboard_port
code=$(pcurl -o "$tmp/anticache.body" -D "$tmp/anticache.head" -w '%{http_code}' \
    -H 'If-None-Match: "tapwire-v1"' -H 'If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT' \
    -H 'X-Kept: yes' "$O/cached")
check_eq "--anticache: the same request is answered in full" 200 "$code"
sent=$(tr -d '\r' < "$tmp/anticache.body")
check_no_imatch "--anticache: no If-None-Match reached the origin" '^If-None-Match:' "$sent"
check_no_imatch "--anticache: no If-Modified-Since reached the origin" '^If-Modified-Since:' "$sent"
check_imatch "--anticache: other fields still reach the origin" '^X-Kept: yes$' "$sent"
got=$(tr -d '\r' < "$tmp/anticache.head")
check_imatch "--anticache: the response says Cache-Control: no-store" '^Cache-Control: no-store$' \
    "$got"
check_eq "--anticache: one Cache-Control field" 1 "$(grep -ic '^Cache-Control:' <<< "$got")"
for field in ETag Last-Modified Expires; do
    check_no_imatch "--anticache: no $field in the response" "^$field:" "$got"
done
newest_flow anticache /cached
check_contains "--anticache: the flow names the rules that changed it" anticache \
    "$(jval "$tmp/d-anticache.body" 'd["rules"]')"

# ---- an unwritable --data-dir ----
# root passes every access() check, so this runs tapwire as nobody on a
# directory that root owns (0755): nobody may search it but not write it.
if [ "$(id -u)" != 0 ]; then
    note "not root: the unwritable --data-dir check needs to switch users; skipped"
elif command -v setpriv > /dev/null 2>&1; then
    as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
elif command -v runuser > /dev/null 2>&1; then
    as_nobody() { runuser -u nobody -- "$@"; }
else
    note "neither setpriv nor runuser: the unwritable --data-dir check is skipped"
fi
if declare -F as_nobody > /dev/null; then
    chmod o+x "$tmp" # nobody must reach the directory to be told about it
    mkdir -m 0755 "$tmp/root-owned"
    out=$(as_nobody timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard \
        --data-dir "$tmp/root-owned" < /dev/null 2>&1)
    rc=$?
    check_eq "unwritable --data-dir: exit 1" 1 "$rc"
    check_contains "unwritable --data-dir: names the directory" \
        "data directory $tmp/root-owned is not writable by this user (uid 65534)" "$out"
    check_contains "unwritable --data-dir: names the missing permission" "needs write (w)" "$out"
    check_contains "unwritable --data-dir: says what to do" "choose another --data-dir" "$out"
    check_not_contains "unwritable --data-dir: no temporary file named" ".tmp" "$out"
    check_eq "unwritable --data-dir: nothing was created in it" "" "$(ls -A "$tmp/root-owned")"
fi

finish
