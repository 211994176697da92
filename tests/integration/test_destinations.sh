#!/bin/bash
# Where the proxy refuses to connect. Its own listeners, whatever the
# spelling: CONNECT or an absolute-form request to the dashboard or the
# proxy port by 0.0.0.0, a decimal or octal IPv4 number or an IPv4-mapped
# IPv6 literal gets 508 and a log line, never a tunnel. Other loopback
# origins are relayed while the proxy listens on loopback, and refused with
# 403 under --block-private.
. "$(dirname "$0")/lib.sh"

TOKEN=destinations-test-token-0123456789

start_origin ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port

# connect_status NAME TARGET: the status line the proxy answers
# "CONNECT TARGET" with (the response in $tmp/NAME.resp).
connect_status() {
    printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$2" "$2" > "$tmp/$1.req"
    raw_send "$PROXY_PORT" "$tmp/$1.req" "$tmp/$1.resp" 5
    status_line "$tmp/$1.resp"
}

# get_status NAME URL: the same for "GET URL" (absolute-form).
get_status() {
    printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$2" > "$tmp/$1.req"
    raw_send "$PROXY_PORT" "$tmp/$1.req" "$tmp/$1.resp" 5
    status_line "$tmp/$1.resp"
}

# ---- tapwire's own listeners, every spelling ----
n=0
for port_name in DASH_PORT PROXY_PORT; do
    port=${!port_name}
    for host in 0.0.0.0 2130706433 0177.0.0.1 '[::ffff:127.0.0.1]' 127.0.0.1 localhost; do
        n=$((n + 1))
        check_match "CONNECT $host:<$port_name> refused with 508" '^HTTP/1\.1 508 ' \
            "$(connect_status self-$n "$host:$port")"
        check_not_contains "CONNECT $host:<$port_name>: no tunnel" "200 Connection established" \
            "$(cat "$tmp/self-$n.resp")"
    done
done
check_match "absolute-form to 2130706433:<dashboard> refused with 508" '^HTTP/1\.1 508 ' \
    "$(get_status abs-dash "http://2130706433:$DASH_PORT/api/flows")"
check_contains "the 508 page says why" "tapwire itself" "$(cat "$tmp/abs-dash.resp")"
check_match "absolute-form to [::ffff:127.0.0.1]:<proxy> refused with 508" '^HTTP/1\.1 508 ' \
    "$(get_status abs-proxy "http://[::ffff:127.0.0.1]:$PROXY_PORT/")"
check "the refusals are logged" wait_for_grep "$PROXY_ERR" \
    "CONNECT 0177\.0\.0\.1:$DASH_PORT 508 .*tapwire itself" 5
check "the absolute-form refusal is logged" wait_for_grep "$PROXY_ERR" \
    "GET http://2130706433:$DASH_PORT/api/flows 508 .*tapwire itself" 5

# The refused absolute-form request is a flow, like any failed exchange.
flow_recorded() {
    local i body
    for ((i = 0; i < 50; i++)); do
        body=$(dcurl -H "X-Tapwire-Token: $TOKEN" "http://127.0.0.1:$DASH_PORT/api/flows")
        [[ $body == *'"status":508'* ]] && return 0
        sleep 0.1
    done
    echo "no flow with status 508 in: $body"
    return 1
}
check "the refused request is recorded as a flow with 508" flow_recorded

# ---- other loopback services: relayed on a loopback listener ----
check "a loopback origin is still proxied" proxy_serves "$ORIGIN_PORT"
body=$(pcurl -p "http://127.0.0.1:$ORIGIN_PORT/conn")
check_match "a loopback origin is still reached through CONNECT" '^conn=' "$body"
check_match "a loopback origin by number is still reached" '^HTTP/1\.1 200 ' \
    "$(get_status origin-number "http://2130706433:$ORIGIN_PORT/conn")"
check "tapwire still serves" proxy_serves "$ORIGIN_PORT"
stop_proxy

# ---- --block-private ----
seen_before=$(grep -c 'origin: conn=' "$ORIGIN_PORT_LOG")
start_proxy --block-private
check_match "--block-private: a loopback origin gets 403" '^HTTP/1\.1 403 ' \
    "$(get_status bp-get "http://127.0.0.1:$ORIGIN_PORT/conn")"
check_contains "--block-private: the page says why" "--block-private" "$(cat "$tmp/bp-get.resp")"
check_match "--block-private: CONNECT to a loopback origin gets 403" '^HTTP/1\.1 403 ' \
    "$(connect_status bp-connect "2130706433:$ORIGIN_PORT")"
check_eq "--block-private: a name is refused once resolved (403 inside the tunnel)" 403 \
    "$(pcurl -p -o /dev/null -w '%{http_code}' "http://localhost:$ORIGIN_PORT/conn")"
check "--block-private: refusals are logged" wait_for_grep "$PROXY_ERR" \
    "GET http://127\.0\.0\.1:$ORIGIN_PORT/conn 403 .*--block-private" 5
check_eq "--block-private: the origin saw none of it" "$seen_before" \
    "$(grep -c 'origin: conn=' "$ORIGIN_PORT_LOG")"
stop_proxy

# ---- --allow-private and --block-private exclude each other ----
"$TAPWIRE_BIN" --block-private --allow-private --version > /dev/null 2> "$tmp/both.err"
check_eq "--block-private with --allow-private: usage error" 2 $?
check_contains "--block-private with --allow-private: says so" "not both" "$(cat "$tmp/both.err")"

finish
