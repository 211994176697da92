#!/bin/bash
# Every answer tapwire makes itself goes through one path: it is sent, gets a
# log line and is recorded as a flow exactly as sent. A failed upstream's 502
# is stored with its HTTP version, reason, headers and body as the client got
# them; a request that is not a proxy request, a request line that does not
# parse, a bad CONNECT target and the CA page at http://tapwire.invalid/ each
# leave a log line and a flow.
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=own-answers-test-token-0123456789

start_origin ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port

api() { dcurl -H "X-Tapwire-Token: $TOKEN" "$@"; }

newest() { dash_json "/api/flows?limit=1" 'd["flows"][0]["id"]'; }

# ---- a 502 for an origin that refuses the connection ----
closed_port=1
code=$(pcurl -D "$tmp/502.head" -o "$tmp/502.body" -w '%{http_code}' \
    "http://127.0.0.1:$closed_port/nothing-here")
check_eq "an origin that refuses: 502" 502 "$code"
check "the 502 is written as a flow" wait_written 1
id=$(newest)
api "$D/api/flows/$id" > "$tmp/502.json"
flow() { python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$tmp/502.json" "$1" 2>&1; }
check_eq "its flow has the HTTP version the client got" "HTTP/1.1" "$(flow 'd["response"]["version"]')"
check_eq "...the status and reason" "502 Bad Gateway" \
    "$(flow 'str(d["response"]["status"]) + " " + d["response"]["reason"]')"
sent_headers=$(tail -n +2 "$tmp/502.head" | tr -d '\r' | sed '/^$/d' | sort)
stored_headers=$(flow '"\n".join(sorted(h[0] + ": " + h[1] for h in d["response"]["headers"]))')
check_eq "...the headers as sent" "$sent_headers" "$stored_headers"
check_eq "...the body size as sent" "$(wc -c < "$tmp/502.body")" \
    "$(flow 'd["response"]["body"]["size"]')"
api -o "$tmp/502.stored" "$D/api/flows/$id/response/body"
check_eq "...the body as sent" "$(file_sha "$tmp/502.body")" "$(file_sha "$tmp/502.stored")"
check_contains "...and the reason as its error" "127.0.0.1" "$(flow 'd["error"]')"

# ---- refusals that used to leave no flow ----
count_before=$(dash_json /api/stats 'd["written"]')
printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' > "$tmp/origin-form.req"
raw_send "$PROXY_PORT" "$tmp/origin-form.req" "$tmp/origin-form.resp" 10
check_match "an origin-form request: 400" '^HTTP/1\.1 400 ' "$(status_line "$tmp/origin-form.resp")"
printf 'NOT A REQUEST\r\n\r\n' > "$tmp/garbage.req"
raw_send "$PROXY_PORT" "$tmp/garbage.req" "$tmp/garbage.resp" 10
check_match "a request line that does not parse: 400" '^HTTP/1\.1 400 ' \
    "$(status_line "$tmp/garbage.resp")"
printf 'CONNECT no-port-here HTTP/1.1\r\nHost: x\r\n\r\n' > "$tmp/connect.req"
raw_send "$PROXY_PORT" "$tmp/connect.req" "$tmp/connect.resp" 10
check_match "a CONNECT without a port: 400" '^HTTP/1\.1 400 ' "$(status_line "$tmp/connect.resp")"
code=$(pcurl -o "$tmp/ca-page.html" -w '%{http_code}' http://tapwire.invalid/)
check_eq "the CA page through the proxy: 200" 200 "$code"
check "four more flows are written" wait_written $((count_before + 4))
api "$D/api/flows?limit=4" > "$tmp/last4.json"
check_eq "each refusal and the CA page is a flow, newest first" "200 400 400 400" \
    "$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join(str(f["status"]) for f in d["flows"]))' "$tmp/last4.json")"
check_eq "the CONNECT refusal names its method" "CONNECT" \
    "$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(d["flows"][1]["method"])' "$tmp/last4.json")"
ca_id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["flows"][0]["id"])' \
    "$tmp/last4.json")
api -o "$tmp/ca-page.stored" "$D/api/flows/$ca_id/response/body"
check_eq "the CA page's flow holds the page as sent" "$(file_sha "$tmp/ca-page.html")" \
    "$(file_sha "$tmp/ca-page.stored")"
check_eq "every refusal left a log line" 3 \
    "$(grep -cE ' (GET|-|CONNECT) [^ ]+ 400 [0-9]+B [0-9.]+ms error: ' "$PROXY_ERR")"

finish
