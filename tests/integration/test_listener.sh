#!/bin/bash
# Flows record the listener they came through (tapwire-db(5) listener):
# the explicit proxy, plain and CONNECT, --socks5 and --reverse each name
# their own in /api/flows and in a flow's detail, a replay is "replay",
# the filter ~listener
# lists only theirs (tapwire-filters(7)), the HAR export carries it as
# _listener, and a misspelt kind is a 400 naming the column.
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=listener-test-token-0123456789

make_pki
make_localhost_leaf
start_origin PLAIN_PORT
start_origin TLS_PORT --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem"

start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" --upstream-ca "$PKI/ca.pem" \
    --socks5 127.0.0.1:0 --reverse "127.0.0.1:0=http://127.0.0.1:$PLAIN_PORT"
dashboard_port

# port_of PATTERN: the port of the first stdout line matching PATTERN (10 s).
port_of() {
    local i line=""
    for ((i = 0; i < 200; i++)); do
        line=$(grep -aEo -m 1 "$1" "$PROXY_OUT")
        [ -n "$line" ] && break
        sleep 0.05
    done
    [ -n "$line" ] || bail "no line matching '$1': $(head -c 800 "$PROXY_OUT")"
    echo "${line##*:}"
}
SOCKS_PORT=$(port_of '^SOCKS5 listening on 127\.0\.0\.1:[0-9]+')
REV_PORT=$(port_of '^reverse proxy listening on http://127\.0\.0\.1:[0-9]+')

scurl() { curl -q -sS --max-time "$CURL_MAX_TIME" --cacert "$PROXY_CA" "$@"; }

check "explicit proxy, plain HTTP" pcurl -o /dev/null "http://127.0.0.1:$PLAIN_PORT/bytes/1?via=proxy-plain"
check "explicit proxy, CONNECT" scurl -o /dev/null -x "http://127.0.0.1:$PROXY_PORT" \
    "https://localhost:$TLS_PORT/bytes/1?via=proxy-tls"
check "SOCKS5, plain HTTP" scurl -o /dev/null --socks5-hostname "127.0.0.1:$SOCKS_PORT" \
    "http://127.0.0.1:$PLAIN_PORT/bytes/1?via=socks-plain"
check "SOCKS5, HTTPS" scurl -o /dev/null --socks5-hostname "127.0.0.1:$SOCKS_PORT" \
    "https://localhost:$TLS_PORT/bytes/1?via=socks-tls"
check "reverse" dcurl -o /dev/null "http://127.0.0.1:$REV_PORT/bytes/1?via=reverse"
check "five flows written" wait_written 5

# listed [FILTER]: "path=listener" of the listed flows, oldest first, one line.
listed() {
    dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" ${1:+--data-urlencode "filter=$1"} |
        python3 -c 'import json, sys
fl = json.load(sys.stdin)["flows"]
print(" ".join("%s=%s" % (f["path"].split("via=")[-1], f["listener"]) for f in reversed(fl)))'
}

check_eq "/api/flows: each flow names its listener" \
    "proxy-plain=proxy proxy-tls=proxy socks-plain=socks5 socks-tls=socks5 reverse=reverse" \
    "$(listed)"
check_eq "~listener socks5 lists only the SOCKS5 flows" "socks-plain=socks5 socks-tls=socks5" \
    "$(listed '~listener socks5')"
check_eq "~listener proxy & ~tls: the CONNECT one" "proxy-tls=proxy" \
    "$(listed '~listener proxy & ~tls')"
check_eq "!~listener socks5 lists the others" "proxy-plain=proxy proxy-tls=proxy reverse=reverse" \
    "$(listed '!~listener socks5')"
check_eq "~listener transparent lists nothing" "" "$(listed '~listener transparent')"

id=$(dash_json '/api/flows?limit=1' 'd["flows"][0]["id"]')
check_eq "the detail names the listener" reverse "$(dash_json "/api/flows/$id" 'd["listener"]')"
check_eq "the detail says the bodies were kept" False \
    "$(dash_json "/api/flows/$id" 'd["bodies_dropped"]')"
check_eq "/api/stats counts no flow without its bodies" 0 \
    "$(dash_json /api/stats 'd["bodies_dropped"]')"

# A replay has no client and no listener of its own: "replay".
socks_id=$(dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" \
    --data-urlencode 'filter=~listener socks5 & !~tls' | python3 -c 'import json, sys
print(json.load(sys.stdin)["flows"][0]["id"])')
out=$(dcurl -o "$tmp/replay.json" -w '%{http_code}' -X POST -H "X-Tapwire-Token: $TOKEN" \
    -H "Origin: $D" "$D/api/flows/$socks_id/replay")
check_eq "replay of the SOCKS5 flow: 200" 200 "$out"
new_id=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["id"])' "$tmp/replay.json" 2>&1)
check_eq "the replay's listener is replay" replay "$(dash_json "/api/flows/$new_id" 'd["listener"]')"
check_eq "~listener replay lists it alone" "socks-plain=replay" "$(listed '~listener replay')"

har=$(dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/har" --data-urlencode 'filter=~listener socks5' |
    python3 -c 'import json, sys
print(" ".join(e["_listener"] for e in json.load(sys.stdin)["log"]["entries"]))')
check_eq "the HAR export carries _listener" "socks5 socks5" "$har"

out=$(dcurl -G -o "$tmp/bad.json" -w '%{http_code}' -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" \
    --data-urlencode 'filter=~listener sock')
check_eq "a kind tapwire has not: 400" 400 "$out"
check_contains "the column is named" "column 11" "$(cat "$tmp/bad.json")"

finish
