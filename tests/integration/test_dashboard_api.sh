#!/bin/bash
# The dashboard's HTTP API against a real proxy: the token is required, a
# foreign Host and cross-origin changes are refused, captured flows list
# newest first and page with the cursor, details keep headers as received,
# a gzip body comes back decoded on request, live updates arrive over SSE,
# HAR exports parse, rewrite rules are listed, added, changed, reordered and
# deleted (bad specs get the parser's message) and act on the next request
# through the proxy, with the original kept in the flow, the CA is
# downloadable without the token, and every response carries the CSP and
# nosniff headers.
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=dashboard-test-token-0123456789

# dashboard: lib.sh's dashboard_port, plus the name of this dashboard's
# token cookie (named after its port).
dashboard() {
    dashboard_port
    COOKIE_NAME=tapwire_token_$DASH_PORT
}

# fetch NAME CURL_ARGS...: prints the status; headers in $tmp/d-NAME.head,
# body in $tmp/d-NAME.body. Every dashboard response goes through here, so
# the security headers can be checked on all of them at the end.
fetch() {
    local name=$1
    shift
    : > "$tmp/d-$name.body"
    dcurl -o "$tmp/d-$name.body" -D "$tmp/d-$name.head" -w '%{http_code}' "$@"
}

# The same with the token header.
afetch() {
    local name=$1
    shift
    fetch "$name" -H "X-Tapwire-Token: $TOKEN" "$@"
}

# jval FILE EXPR: a Python expression over the JSON document d in FILE.
jval() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
print(eval(sys.argv[2]))' "$1" "$2" 2>&1
}

# head_of NAME: the response headers, CR removed.
head_of() { tr -d '\r' < "$tmp/d-$1.head"; }

# rule_json FILE SPEC [true|false]: {"spec": SPEC[, "enabled": ...]} in FILE.
rule_json() {
    python3 -c 'import json, sys
d = {"spec": sys.argv[2]}
if len(sys.argv) > 3:
    d["enabled"] = sys.argv[3] == "true"
json.dump(d, open(sys.argv[1], "w"))' "$@"
}

# jsend NAME METHOD URL FILE [CURL_ARGS...]: a same-origin change with a JSON body.
jsend() {
    local name=$1 method=$2 url=$3 file=$4
    shift 4
    afetch "$name" -X "$method" -H "Origin: $D" -H 'Content-Type: application/json' \
        --data-binary @"$file" "$@" "$url"
}

# A --rule that matches nothing here: listed read-only by the rules API.
STATIC_RULE="response header X-Static-Check set path=/never-requested 'on'"

start_origin ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" --rule "$STATIC_RULE"
dashboard
O=http://127.0.0.1:$ORIGIN_PORT
note "dashboard on $D"

# ---- access ----

check_eq "API without the token: 401" 401 "$(fetch no-token "$D/api/flows")"
check_match "API without the token: JSON error" '"error"' "$(cat "$tmp/d-no-token.body")"
check_eq "API with a wrong token: 401" 401 \
    "$(fetch wrong-token -H 'X-Tapwire-Token: not-the-token' "$D/api/flows")"
check_eq "API with a wrong token cookie: 401" 401 \
    "$(fetch wrong-cookie -b "$COOKIE_NAME=not-the-token" "$D/api/flows")"
check_eq "page without the cookie: 401" 401 "$(fetch page-no-cookie "$D/")"
check_contains "page without the cookie says to use the token URL" "?token=" \
    "$(cat "$tmp/d-page-no-cookie.body")"
check_eq "token URL with a wrong token: 401" 401 "$(fetch page-wrong "$D/?token=nope")"
check_eq "token URL: 303" 303 "$(fetch page-token "$D/?token=$TOKEN")"
# HttpOnly: cookies ignore ports, so a page on any other port of this host
# shares the cookie jar and must not read the token from script.
check_imatch "token URL sets the HttpOnly, SameSite=Strict cookie named after the port" \
    "^Set-Cookie: $COOKIE_NAME=$TOKEN; Path=/; HttpOnly; SameSite=Strict\$" "$(head_of page-token)"
check_imatch "token URL redirects to /" '^Location: /$' "$(head_of page-token)"
check_eq "page with the cookie: 200" 200 "$(fetch page-cookie -b "$COOKIE_NAME=$TOKEN" "$D/")"
check_imatch "page with the cookie is HTML" '^Content-Type: text/html' "$(head_of page-cookie)"
check_contains "page with the cookie carries the token for the header" \
    "<meta name=\"tapwire-token\" content=\"$TOKEN\">" "$(cat "$tmp/d-page-cookie.body")"
check_not_contains "page without the cookie does not" "$TOKEN" "$(cat "$tmp/d-page-no-cookie.body")"
check_eq "another port's cookie name is not this dashboard's: 401" 401 \
    "$(fetch page-other-cookie -b "tapwire_token=$TOKEN" "$D/")"
check_eq "API with the cookie (GET): 200" 200 \
    "$(fetch cookie-get -b "$COOKIE_NAME=$TOKEN" "$D/api/flows")"
check_eq "app.js: 200" 200 "$(fetch app-js "$D/app.js")"
check_imatch "app.js is JavaScript" '^Content-Type: text/javascript' "$(head_of app-js)"
check_eq "a path outside the three files: 404" 404 \
    "$(fetch traversal --path-as-is "$D/../../etc/passwd")"

code=$(fetch evil-host -H "X-Tapwire-Token: $TOKEN" -H "Host: evil.example:$DASH_PORT" "$D/api/flows")
check_match "foreign Host refused (DNS rebinding)" '^(421|403)$' "$code"
code=$(fetch evil-host-page -b "$COOKIE_NAME=$TOKEN" -H "Host: evil.example:$DASH_PORT" "$D/")
check_match "foreign Host refused for the page too" '^(421|403)$' "$code"
check_eq "Host localhost:PORT accepted" 200 \
    "$(afetch localhost-host -H "Host: localhost:$DASH_PORT" "$D/api/stats")"

# ---- traffic ----

pcurl -o /dev/null "$O/bytes/100" || fail "GET /bytes/100 through the proxy"
pcurl -o /dev/null -H 'X-First: 1' -H 'x-second: two' -H 'X-THIRD: 3' "$O/headers" ||
    fail "GET /headers through the proxy"
# Quotes, $ and backquotes: the curl line must hand them over untouched.
printf '%s' 'name=tapwire&quote=it'"'"'s "fine" $HOME `id`' > "$tmp/post.txt"
pcurl -o /dev/null --data-binary @"$tmp/post.txt" -H 'Content-Type: text/plain' "$O/echo" ||
    fail "POST /echo through the proxy"
pcurl -o /dev/null "$O/status/404" || fail "GET /status/404 through the proxy"
pcurl -o /dev/null "$O/conn" || fail "GET /conn through the proxy"
check "five flows written" wait_written 5

check_eq "list: 200" 200 "$(afetch list "$D/api/flows")"
check_imatch "list is JSON" '^Content-Type: application/json' "$(head_of list)"
check_imatch "list: Cache-Control no-store" '^Cache-Control: no-store$' "$(head_of list)"
check_eq "list: newest first" "/conn /status/404 /echo /headers /bytes/100" \
    "$(jval "$tmp/d-list.body" '" ".join(f["path"] for f in d["flows"])')"
check_eq "list: ids strictly descending" True \
    "$(jval "$tmp/d-list.body" 'all(a["id"] > b["id"] for a, b in zip(d["flows"], d["flows"][1:]))')"
check_eq "list: next is null on the last page" None "$(jval "$tmp/d-list.body" 'd["next"]')"
check_eq "list: stats.stored" 5 "$(jval "$tmp/d-list.body" 'd["stats"]["stored"]')"
check_eq "summary fields" "GET http 127.0.0.1 $ORIGIN_PORT 200 100 False http False None" \
    "$(jval "$tmp/d-list.body" '" ".join(str(x) for x in [d["flows"][4][k] for k in ("method", "scheme", "host", "port", "status", "size", "tls", "kind", "modified", "error")])')"
all_ids=$(jval "$tmp/d-list.body" '",".join(str(f["id"]) for f in d["flows"])')

# The before cursor: two per page, every id once, in the same order.
paged=""
before=""
for ((page = 0; page < 10; page++)); do
    afetch page "$D/api/flows?limit=2${before:+&before=$before}" > /dev/null
    ids=$(jval "$tmp/d-page.body" '",".join(str(f["id"]) for f in d["flows"])')
    [ -n "$ids" ] && paged=${paged:+$paged,}$ids
    before=$(jval "$tmp/d-page.body" 'd["next"] if d["next"] is not None else ""')
    [ -z "$before" ] && break
done
check_eq "before cursor pages through every id once, newest first" "$all_ids" "$paged"
check_eq "limit out of range: 400" 400 "$(afetch bad-limit "$D/api/flows?limit=501")"

check_eq "filter method=POST" "/echo" \
    "$(afetch f-method "$D/api/flows?method=POST" > /dev/null
    jval "$tmp/d-f-method.body" '" ".join(f["path"] for f in d["flows"])')"
check_eq "filter status=4xx" "/status/404" \
    "$(afetch f-status "$D/api/flows?status=4xx" > /dev/null
    jval "$tmp/d-f-status.body" '" ".join(f["path"] for f in d["flows"])')"
check_eq "filter q (URL text)" "/headers" \
    "$(afetch f-q "$D/api/flows?q=HEADERS" > /dev/null
    jval "$tmp/d-f-q.body" '" ".join(f["path"] for f in d["flows"])')"
all_count=$(afetch f-all "$D/api/flows" > /dev/null; jval "$tmp/d-f-all.body" 'len(d["flows"])')
check_eq "filter host: text in the host matches as a substring" "$all_count" \
    "$(afetch f-host-sub "$D/api/flows?host=27.0.0" > /dev/null
    jval "$tmp/d-f-host-sub.body" 'len(d["flows"])')"
check_eq "filter host: a glob" "$all_count" \
    "$(afetch f-host-glob "$D/api/flows?host=*.0.0.1" > /dev/null
    jval "$tmp/d-f-host-glob.body" 'len(d["flows"])')"
check_eq "filter host: ! hides what matches" 0 \
    "$(afetch f-host-not "$D/api/flows?host=%21127.0" > /dev/null
    jval "$tmp/d-f-host-not.body" 'len(d["flows"])')"
check_eq "filter host: ! with a glob that matches nothing hides nothing" "$all_count" \
    "$(afetch f-host-not-glob "$D/api/flows?host=%21*.googleapis.com" > /dev/null
    jval "$tmp/d-f-host-not-glob.body" 'len(d["flows"])')"
check_eq "filter body (request or response bytes)" "/echo" \
    "$(afetch f-body "$D/api/flows?body=tapwire%26quote" > /dev/null
    jval "$tmp/d-f-body.body" '" ".join(f["path"] for f in d["flows"])')"

# ---- detail ----

id_headers=$(jval "$tmp/d-list.body" '[f["id"] for f in d["flows"] if f["path"] == "/headers"][0]')
id_echo=$(jval "$tmp/d-list.body" '[f["id"] for f in d["flows"] if f["path"] == "/echo"][0]')
check_eq "detail: 200" 200 "$(afetch detail "$D/api/flows/$id_headers")"
check_eq "detail: request headers in original order and case" "X-First,x-second,X-THIRD" \
    "$(jval "$tmp/d-detail.body" '",".join(h[0] for h in d["request"]["headers"] if h[0].lower() in ("x-first", "x-second", "x-third"))')"
check_eq "detail: header value" "two" \
    "$(jval "$tmp/d-detail.body" '[h[1] for h in d["request"]["headers"] if h[0] == "x-second"][0]')"
check_eq "detail: response status and version" "200 HTTP/1.1" \
    "$(jval "$tmp/d-detail.body" 'str(d["response"]["status"]) + " " + d["response"]["version"]')"
check_eq "detail: timings start and done are unix ms" True \
    "$(jval "$tmp/d-detail.body" 'd["timings"]["done"] >= d["timings"]["start"] > 1.5e12')"
check_eq "detail: plain HTTP has no TLS details" None "$(jval "$tmp/d-detail.body" 'd["tls"]')"
check_eq "detail of an unknown flow: 404" 404 "$(afetch detail-404 "$D/api/flows/999999")"

afetch detail-echo "$D/api/flows/$id_echo" > /dev/null
curl_line=$(jval "$tmp/d-detail-echo.body" 'd["curl"]')
check_contains "curl: URL" "'$O/echo'" "$curl_line"
check_contains "curl: header kept" "-H 'Content-Type: text/plain'" "$curl_line"
check_not_contains "curl: no Host header" "Host:" "$curl_line"
check_not_contains "curl: no Content-Length header" "Content-Length:" "$curl_line"
# Run the command line through the shell (with curl replaced by printf) to
# see that the quoting hands curl the exact body, quote included.
printf '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --data-binary ] && printf %%s "$2"; shift; done\n' \
    > "$tmp/curl"
chmod +x "$tmp/curl"
check_eq "curl: --data-binary survives the shell byte for byte" "$(cat "$tmp/post.txt")" \
    "$(PATH="$tmp:$PATH" sh -c "$curl_line")"

# ---- bodies ----

check_eq "request body: 200" 200 "$(afetch req-body "$D/api/flows/$id_echo/request/body")"
check "request body: the bytes sent" cmp "$tmp/post.txt" "$tmp/d-req-body.body"
check_imatch "body download is an attachment" '^Content-Disposition: attachment' \
    "$(head_of req-body)"
check_imatch "body download is application/octet-stream" \
    '^Content-Type: application/octet-stream$' "$(head_of req-body)"
check_imatch "body download has the sandbox CSP" '^Content-Security-Policy: .*; sandbox$' \
    "$(head_of req-body)"
check_eq "body of an unknown flow: 404" 404 "$(afetch body-404 "$D/api/flows/999999/response/body")"

# tests/integration/origin.c has no gzip endpoint: a small Python origin.
cat > "$tmp/gzip_origin.py" << 'EOF'
import gzip, http.server, os, sys
BODY = ("tapwire gzip test " * 64).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        data = gzip.compress(BODY)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
EOF
python3 "$tmp/gzip_origin.py" "$tmp/gzip.port" > "$tmp/gzip.log" 2>&1 &
track_pid $!
wait_port_file GZ_PORT "$tmp/gzip.port" "the gzip origin" "$tmp/gzip.log"
python3 -c 'import sys; sys.stdout.write("tapwire gzip test " * 64)' > "$tmp/gzip.plain"
pcurl -o "$tmp/gzip.raw" "http://127.0.0.1:$GZ_PORT/text" || fail "GET gzip through the proxy"
check "six flows written" wait_written 6
afetch list-gz "$D/api/flows?limit=1" > /dev/null
id_gz=$(jval "$tmp/d-list-gz.body" 'd["flows"][0]["id"]')
afetch detail-gz "$D/api/flows/$id_gz" > /dev/null
check_eq "detail: response content_encoding" gzip \
    "$(jval "$tmp/d-detail-gz.body" 'd["response"]["body"]["content_encoding"]')"
afetch gz-raw "$D/api/flows/$id_gz/response/body" > /dev/null
check "response body without decode: the gzip bytes as captured" cmp "$tmp/gzip.raw" \
    "$tmp/d-gz-raw.body"
check_eq "response body ?decode=1: 200" 200 \
    "$(afetch gz-decoded "$D/api/flows/$id_gz/response/body?decode=1")"
check "response body ?decode=1: the decoded text" cmp "$tmp/gzip.plain" "$tmp/d-gz-decoded.body"
check_imatch "?decode=1 says X-Tapwire-Decoded: 1" '^X-Tapwire-Decoded: 1$' "$(head_of gz-decoded)"
check_no_imatch "?decode=1 reports no decode error" '^X-Tapwire-Decode-Error' \
    "$(head_of gz-decoded)"

# ---- live updates ----
# The stream stays open until the clear near the end of this file: its
# bound must outlast every check in between on a loaded machine.

dcurl -N --max-time 120 -D "$tmp/d-sse.head" -H "X-Tapwire-Token: $TOKEN" "$D/api/events" \
    > "$tmp/sse.out" 2> /dev/null &
SSE_PID=$!
track_pid $SSE_PID
check "SSE: stream open with a first stats event" wait_for_grep "$tmp/sse.out" '^event: stats$' 10
check_imatch "SSE: text/event-stream" '^Content-Type: text/event-stream' "$(head_of sse)"
t0=$(now_ms)
pcurl -o /dev/null "$O/bytes/7?sse=1" || fail "GET for SSE through the proxy"
check "SSE: event: flow within 5 s of the request" wait_for_grep "$tmp/sse.out" \
    '^data: \{.*"path":"/bytes/7\?sse=1"' 5
check_le "SSE: ...and in under 2 s" "$(($(now_ms) - t0))" 2000
check_match "SSE: the flow event precedes its data" '^event: flow$' "$(cat "$tmp/sse.out")"

# ---- HAR ----

check_eq "HAR of all flows: 200" 200 "$(afetch har "$D/api/har")"
check "HAR parses as JSON" python3 -m json.tool "$tmp/d-har.body"
check_eq "HAR log.version" 1.2 "$(jval "$tmp/d-har.body" 'd["log"]["version"]')"
check_eq "HAR has every flow" 7 "$(jval "$tmp/d-har.body" 'len(d["log"]["entries"])')"
check_imatch "HAR is an attachment named tapwire.har" \
    '^Content-Disposition: attachment; filename="tapwire.har"$' "$(head_of har)"
check_eq "HAR of one flow: 200" 200 "$(afetch har-one "$D/api/flows/$id_echo/har")"
check_eq "HAR of one flow: its request" "POST $O/echo $(cat "$tmp/post.txt")" \
    "$(jval "$tmp/d-har-one.body" '" ".join([d["log"]["entries"][0]["request"][k] for k in ("method", "url")] + [d["log"]["entries"][0]["request"]["postData"]["text"]])')"
check_eq "HAR ids=: in the order asked" "/headers /echo" \
    "$(afetch har-ids "$D/api/har?ids=$id_headers,$id_echo" > /dev/null
    jval "$tmp/d-har-ids.body" '" ".join("/" + e["request"]["url"].split("/", 3)[3] for e in d["log"]["entries"])')"
check_eq "HAR ids=garbage: 400" 400 "$(afetch har-bad "$D/api/har?ids=1,x")"
check_eq "HAR decodes gzip content" True \
    "$(jval "$tmp/d-har.body" '[e for e in d["log"]["entries"] if e["_tapwire_id"] == '"$id_gz"'][0]["response"]["content"]["text"] == open("'"$tmp/gzip.plain"'").read()')"

# ---- rewrite rules ----

# Everything after the first check needs the rulebook in the dashboard
# (dashboard_options.rules, set in main.c): without it one clear failure
# stands for the lot.
check_eq "rules: list 200" 200 "$(afetch rules-empty "$D/api/rules")"
rules_available=$(jval "$tmp/d-rules-empty.body" 'd.get("available")')
check_eq "rules: available, i.e. the rulebook reaches the dashboard (main.c passes it in dashboard_options.rules)" \
    True "$rules_available"

rules_api_checks() {
    check_eq "rules: the --rule rules are listed read-only" "[\"$STATIC_RULE\"]" \
        "$(jval "$tmp/d-rules-empty.body" 'json.dumps(d["static"])')"
    check_eq "rules: no dashboard rules yet" "[]" "$(jval "$tmp/d-rules-empty.body" 'json.dumps(d["rules"])')"

    rule_json "$tmp/bad.json" 'request url "marker=one'
    check_eq "rules: a spec that does not parse: 400" 400 \
        "$(jsend rule-bad POST "$D/api/rules" "$tmp/bad.json")"
    check_match "rules: ...with the parser's message naming the column" '^column [0-9]+: ' \
        "$(jval "$tmp/d-rule-bad.body" 'd["error"]')"
    rule_json "$tmp/one.json" 'request url "marker=one" "marker=two"'
    check_eq "rules: cross-origin POST refused" 403 \
        "$(afetch rule-evil -X POST -H 'Origin: http://evil.example' \
            -H 'Content-Type: application/json' --data-binary @"$tmp/one.json" "$D/api/rules")"
    check_eq "rules: cross-site Sec-Fetch-Site refused" 403 \
        "$(jsend rule-site POST "$D/api/rules" "$tmp/one.json" -H 'Sec-Fetch-Site: cross-site')"
    code=$(fetch rule-cookie -X POST -b "$COOKIE_NAME=$TOKEN" -H 'Content-Type: application/json' \
        --data-binary @"$tmp/one.json" "$D/api/rules")
    check_match "rules: POST with only the cookie refused" '^(401|403)$' "$code"
    check_eq "rules: a body that is not JSON by its type: 415" 415 \
        "$(afetch rule-type -X POST -H "Origin: $D" -H 'Content-Type: text/plain' \
            --data-binary @"$tmp/one.json" "$D/api/rules")"
    python3 -c 'import json; print(json.dumps({"spec": "x" * 70000}))' > "$tmp/huge.json"
    check_eq "rules: a body over 64 KiB: 413" 413 \
        "$(jsend rule-huge POST "$D/api/rules" "$tmp/huge.json")"
    printf 'not json' > "$tmp/garbage.json"
    check_eq "rules: a body that does not parse as JSON: 400" 400 \
        "$(jsend rule-garbage POST "$D/api/rules" "$tmp/garbage.json")"
    check_eq "rules: none of those added a rule" 0 \
        "$(afetch rules-still "$D/api/rules" > /dev/null
        jval "$tmp/d-rules-still.body" 'len(d["rules"])')"

    check_eq "rules: add: 201" 201 "$(jsend rule-add POST "$D/api/rules" "$tmp/one.json")"
    rule1=$(jval "$tmp/d-rule-add.body" 'd["id"]')
    afetch rules-one "$D/api/rules" > /dev/null
    check_eq "rules: the list shows it, canonical and enabled" \
        "$rule1 True request url 'marker=one' 'marker=two'" \
        "$(jval "$tmp/d-rules-one.body" '" ".join(str(r[k]) for r in d["rules"] for k in ("id", "enabled", "spec"))')"
    check_eq "rules: created_at is unix ms" True \
        "$(jval "$tmp/d-rules-one.body" 'd["rules"][0]["created_at"] > 1.5e12')"

    # The effect on traffic: origin's /headers echoes the request head it got.
    written_n=8
    body=$(pcurl "$O/headers?marker=one") || fail "GET /headers?marker=one through the proxy"
    check_contains "rules: a rule added through the API rewrites the next request through the proxy" \
        "GET /headers?marker=two HTTP/1.1" "$body"
    check "rules: that flow is written" wait_written $written_n
    afetch rules-flow-list "$D/api/flows?limit=1" > /dev/null
    id_rw=$(jval "$tmp/d-rules-flow-list.body" 'd["flows"][0]["id"]')
    check_eq "rules: the list marks the flow modified" True \
        "$(jval "$tmp/d-rules-flow-list.body" 'd["flows"][0]["modified"]')"
    afetch rules-flow "$D/api/flows/$id_rw" > /dev/null
    check_eq "rules: the flow has the target as sent and as received" \
        "/headers?marker=two /headers?marker=one" \
        "$(jval "$tmp/d-rules-flow.body" 'd["path"] + " " + str((d["original"] or {}).get("target"))')"
    check_contains "rules: the flow names the rule" "#$rule1" \
        "$(jval "$tmp/d-rules-flow.body" 'd["rules"]')"

    rule_json "$tmp/three.json" 'request url "marker=one" "marker=three"' false
    check_eq "rules: update: 200" 200 "$(jsend rule-put PUT "$D/api/rules/$rule1" "$tmp/three.json")"
    check_eq "rules: the list shows the new spec, disabled" "False request url 'marker=one' 'marker=three'" \
        "$(afetch rules-put "$D/api/rules" > /dev/null
        jval "$tmp/d-rules-put.body" '" ".join(str(r[k]) for r in d["rules"] for k in ("enabled", "spec"))')"
    written_n=$((written_n + 1))
    body=$(pcurl "$O/headers?marker=one") || fail "GET /headers?marker=one through the proxy"
    check_contains "rules: a disabled rule leaves the request alone" "GET /headers?marker=one HTTP/1.1" "$body"
    check_eq "rules: update of an unknown rule: 404" 404 \
        "$(jsend rule-put-404 PUT "$D/api/rules/999999" "$tmp/three.json")"
    rule_json "$tmp/bad-put.json" 'request url "marker=one' true
    check_eq "rules: update with a bad spec: 400" 400 \
        "$(jsend rule-put-bad PUT "$D/api/rules/$rule1" "$tmp/bad-put.json")"
    check_match "rules: ...with the parser's message" '^column [0-9]+: ' \
        "$(jval "$tmp/d-rule-put-bad.body" 'd["error"]')"

    rule_json "$tmp/conn.json" 'response body "conn=" "CONN="'
    jsend rule-add2 POST "$D/api/rules" "$tmp/conn.json" > /dev/null
    rule2=$(jval "$tmp/d-rule-add2.body" 'd["id"]')
    printf '{"ids": [%s, %s]}' "$rule2" "$rule1" > "$tmp/order.json"
    check_eq "rules: reorder: 200" 200 "$(jsend rule-order POST "$D/api/rules/reorder" "$tmp/order.json")"
    check_eq "rules: reorder answers with the new order" "$rule2 $rule1" \
        "$(jval "$tmp/d-rule-order.body" '" ".join(str(r["id"]) for r in d["rules"])')"
    check_eq "rules: ...which the list keeps" "$rule2 $rule1" \
        "$(afetch rules-order "$D/api/rules" > /dev/null
        jval "$tmp/d-rules-order.body" '" ".join(str(r["id"]) for r in d["rules"])')"
    printf '{"ids": [%s]}' "$rule1" > "$tmp/order-short.json"
    check_eq "rules: reorder that leaves a rule out: 400" 400 \
        "$(jsend rule-order-short POST "$D/api/rules/reorder" "$tmp/order-short.json")"
    printf '{"ids": [%s, %s]}' "$rule1" "$rule1" > "$tmp/order-twice.json"
    check_eq "rules: reorder that names a rule twice: 400" 400 \
        "$(jsend rule-order-twice POST "$D/api/rules/reorder" "$tmp/order-twice.json")"

    # A response body rule: the original is kept, decoded, beside what was sent.
    written_n=$((written_n + 1))
    body=$(pcurl "$O/conn") || fail "GET /conn through the proxy"
    check_match "rules: a response body rule rewrites the body the client gets" '^CONN=[0-9]+ req=[0-9]+$' \
        "$body"
    check "rules: that flow is written" wait_written $written_n
    afetch rules-conn-list "$D/api/flows?limit=1" > /dev/null
    id_conn=$(jval "$tmp/d-rules-conn-list.body" 'd["flows"][0]["id"]')
    afetch rules-conn "$D/api/flows/$id_conn" > /dev/null
    check_eq "rules: the flow has the original response body's size, no original request body" \
        "${#body} None" \
        "$(jval "$tmp/d-rules-conn.body" 'str(d["original"]["response_body"]["size"]) + " " + str(d["original"]["request_body"])')"
    check_eq "rules: ?original=1: 200" 200 \
        "$(afetch rules-orig "$D/api/flows/$id_conn/response/body?original=1")"
    check_eq "rules: ?original=1 is the body as received" "conn=${body#CONN=}" \
        "$(cat "$tmp/d-rules-orig.body")"
    check_imatch "rules: ?original=1 is an attachment named ...-original" \
        '^Content-Disposition: attachment; filename="flow-[0-9]+-response-original.bin"$' \
        "$(head_of rules-orig)"
    check_eq "rules: ?original=1&decode=1 is the same (originals are stored decoded)" "conn=${body#CONN=}" \
        "$(afetch rules-orig-dec "$D/api/flows/$id_conn/response/body?original=1&decode=1" > /dev/null
        cat "$tmp/d-rules-orig-dec.body")"
    check_eq "rules: without original=1, the body as sent" "$body" \
        "$(afetch rules-sent "$D/api/flows/$id_conn/response/body" > /dev/null
        cat "$tmp/d-rules-sent.body")"
    check_eq "rules: ?original=1 of a body no rule rewrote: 404" 404 \
        "$(afetch rules-orig-404 "$D/api/flows/$id_conn/request/body?original=1")"
    check_eq "rules: a flow no rule changed has original null" "None None" \
        "$(afetch rules-plain "$D/api/flows/$id_headers" > /dev/null
        jval "$tmp/d-rules-plain.body" 'str(d["original"]) + " " + str(d["rules"])')"

    check_eq "rules: delete: 204" 204 \
        "$(afetch rule-del -X DELETE -H "Origin: $D" "$D/api/rules/$rule1")"
    check_eq "rules: delete again: 404" 404 "$(afetch rule-del-again -X DELETE "$D/api/rules/$rule1")"
    check_eq "rules: cross-origin DELETE refused" 403 \
        "$(afetch rule-del-evil -X DELETE -H 'Origin: http://evil.example' "$D/api/rules/$rule2")"
    check_eq "rules: the list after the delete" "$rule2" \
        "$(afetch rules-after "$D/api/rules" > /dev/null
        jval "$tmp/d-rules-after.body" '" ".join(str(r["id"]) for r in d["rules"])')"
    check_eq "rules: DELETE of the collection: 405" 405 "$(afetch rules-405 -X DELETE "$D/api/rules")"

    # The label flows name a rule by: its name= when it has one, else #ID.
    rule_json "$tmp/named.json" 'response header X-Never-Set set path=/never name=howdy "on"' false
    jsend rule-named POST "$D/api/rules" "$tmp/named.json" > /dev/null
    rule3=$(jval "$tmp/d-rule-named.body" 'd["id"]')
    check_eq "rules: each rule has the label its flows name it by" "#$rule2 howdy" \
        "$(afetch rules-labels "$D/api/rules" > /dev/null
        jval "$tmp/d-rules-labels.body" '" ".join(r["label"] for r in d["rules"])')"
    afetch rule-del3 -X DELETE -H "Origin: $D" "$D/api/rules/$rule3" > /dev/null
}
if [ "$rules_available" = True ]; then
    rules_api_checks
else
    note "rules: the other rules checks did not run: the dashboard has no rulebook"
fi

# ---- changes ----

check_eq "cross-origin DELETE refused" 403 \
    "$(afetch del-evil -X DELETE -H 'Origin: http://evil.example' "$D/api/flows/$id_echo")"
check_eq "cross-origin POST refused" 403 \
    "$(afetch post-evil -X POST -H 'Origin: http://evil.example' "$D/api/flows")"
check_eq "cross-site Sec-Fetch-Site refused" 403 \
    "$(afetch del-site -X DELETE -H 'Sec-Fetch-Site: cross-site' "$D/api/flows/$id_echo")"
code=$(fetch del-cookie -X DELETE -b "$COOKIE_NAME=$TOKEN" "$D/api/flows/$id_echo")
check_match "DELETE with only the cookie refused" '^(401|403)$' "$code"
check_eq "DELETE with only the cookie: 403 (the header is what a change needs)" 403 "$code"
code=$(fetch clear-cookie -X DELETE -H "Origin: $D" -b "$COOKIE_NAME=$TOKEN" "$D/api/flows")
check_eq "same-origin clear with only the cookie: 403" 403 "$code"
check_eq "...and the flow is still there" 200 "$(afetch still-there "$D/api/flows/$id_echo")"
check_eq "same-origin DELETE with the header: 204" 204 \
    "$(afetch del-ok -X DELETE -H "Origin: $D" -H 'Sec-Fetch-Site: same-origin' \
        "$D/api/flows/$id_echo")"
check_eq "deleted flow: 404" 404 "$(afetch deleted "$D/api/flows/$id_echo")"
check_eq "DELETE of a deleted flow: 404" 404 \
    "$(afetch del-again -X DELETE "$D/api/flows/$id_echo")"
check_eq "clear: 204" 204 "$(afetch clear -X DELETE "$D/api/flows")"
check_eq "after clear: no flows" 0 \
    "$(afetch after-clear "$D/api/flows" > /dev/null
    jval "$tmp/d-after-clear.body" 'len(d["flows"])')"
check "SSE: event: clear after a clear" wait_for_grep "$tmp/sse.out" '^event: clear$' 5
check_eq "stats fields" "0 True True" \
    "$(afetch stats "$D/api/stats" > /dev/null
    jval "$tmp/d-stats.body" '" ".join(str(x) for x in [d["stored"], d["written"] >= 7, all(k in d for k in ("dropped", "write_errors", "last_error", "version", "ca_path"))])')"

# ---- the CA ----

check_eq "/ca.pem without the token: 200" 200 "$(fetch ca-pem "$D/ca.pem")"
check "/ca.pem parses as a certificate" openssl x509 -in "$tmp/d-ca-pem.body" -noout
check "/ca.pem is the proxy's CA" cmp "$tmp/d-ca-pem.body" "$PROXY_DATA/ca-cert.pem"
check_imatch "/ca.pem is an attachment" '^Content-Disposition: attachment; filename="tapwire-ca.pem"$' \
    "$(head_of ca-pem)"
check_eq "/ca.crt without the token: 200" 200 "$(fetch ca-crt "$D/ca.crt")"
check_eq "/ca.crt is the same certificate as DER" \
    "$(openssl x509 -in "$PROXY_DATA/ca-cert.pem" -noout -fingerprint -sha256)" \
    "$(openssl x509 -inform DER -in "$tmp/d-ca-crt.body" -noout -fingerprint -sha256)"
check_eq "/ca without the token: 200" 200 "$(fetch ca-page "$D/ca")"
check_contains "/ca links the PEM" 'href="/ca.pem"' "$(cat "$tmp/d-ca-page.body")"

# The proxy serves the same to clients that only have the proxy set.
code=$(pcurl -o "$tmp/local-page.body" -D "$tmp/local-page.head" -w '%{http_code}' \
    "http://tapwire.invalid/")
check_eq "http://tapwire.invalid/ through the proxy: 200" 200 "$code"
check_contains "http://tapwire.invalid/ is the CA page, not the flows" 'href="/ca.pem"' \
    "$(cat "$tmp/local-page.body")"
check_imatch "http://tapwire.invalid/ has the CSP" "^Content-Security-Policy: default-src 'none'" \
    "$(tr -d '\r' < "$tmp/local-page.head")"
code=$(pcurl -o "$tmp/local-ca.pem" -w '%{http_code}' "http://tapwire.invalid/ca.pem")
check_eq "http://tapwire.invalid/ca.pem: 200" 200 "$code"
check "http://tapwire.invalid/ca.pem is the proxy's CA" cmp "$tmp/local-ca.pem" \
    "$PROXY_DATA/ca-cert.pem"
check_eq "http://tapwire.invalid/api/flows: 404, never the API" 404 \
    "$(pcurl -o /dev/null -w '%{http_code}' -H "X-Tapwire-Token: $TOKEN" \
        "http://tapwire.invalid/api/flows")"

# ---- every response ----

missing=""
for h in "$tmp"/d-*.head; do
    name=$(basename "$h" .head)
    hdrs=$(tr -d '\r' < "$h")
    grep -Eiq "^Content-Security-Policy: default-src 'none'; .*frame-ancestors 'none'" <<< "$hdrs" ||
        missing="$missing $name(CSP)"
    grep -Eiq '^X-Content-Type-Options: nosniff$' <<< "$hdrs" || missing="$missing $name(nosniff)"
done
check_eq "every dashboard response has the CSP and nosniff headers" "" "$missing"

# ---- --web-root ----

mkdir -p "$tmp/webroot"
printf '<!doctype html><title>dev</title><p>web-root marker one</p>\n' > "$tmp/webroot/index.html"
printf 'console.log("web-root app");\n' > "$tmp/webroot/app.js"
printf 'body { color: black }\n' > "$tmp/webroot/style.css"
printf 'secret\n' > "$tmp/webroot/secret.txt"
PROXY_DATA_DIR=$tmp/data2 start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" \
    --web-root "$tmp/webroot"
dashboard
fetch wr-page -b "$COOKIE_NAME=$TOKEN" "$D/" > /dev/null
check_contains "--web-root: / serves DIR/index.html" "web-root marker one" "$(cat "$tmp/d-wr-page.body")"
printf '<!doctype html><title>dev</title><p>web-root marker two</p>\n' > "$tmp/webroot/index.html"
fetch wr-page2 -b "$COOKIE_NAME=$TOKEN" "$D/" > /dev/null
check_contains "--web-root: read on every request" "web-root marker two" \
    "$(cat "$tmp/d-wr-page2.body")"
fetch wr-app "$D/app.js" > /dev/null
check_contains "--web-root: /app.js from DIR" "web-root app" "$(cat "$tmp/d-wr-app.body")"
check_eq "--web-root: other files in DIR are not served" 404 "$(fetch wr-secret "$D/secret.txt")"
check_eq "--web-root: no traversal" 404 "$(fetch wr-dots --path-as-is "$D/app.js/../secret.txt")"

# A startup error is printed once, also with debug logging on: here the
# dashboard port is the running proxy's.
"$TAPWIRE_BIN" --listen 127.0.0.1:0 --data-dir "$tmp/data3" -v -v \
    --dashboard "127.0.0.1:$DASH_PORT" > "$tmp/busy.out" 2> "$tmp/busy.err" < /dev/null &
busy_pid=$!
track_pid "$busy_pid"
wait_pid "$busy_pid" 10
check_eq "dashboard port in use: exit status 1" 1 "$?"
check_eq "dashboard port in use: the error is printed once" 1 \
    "$(grep -c 'Address already in use' "$tmp/busy.err")"
check_no_match "dashboard port in use: nothing from libmicrohttpd's own logger" \
    'MHD_OPTION_EXTERNAL_LOGGER' "$(cat "$tmp/busy.err")"

finish
