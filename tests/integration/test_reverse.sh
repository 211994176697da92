#!/bin/bash
# --reverse: curl straight at tapwire reaches the configured origin, over a
# plain listener to a plain origin and over a TLS listener (a leaf minted by
# the tapwire CA for the SNI name) to a TLS origin that tapwire verifies.
# The origin gets its own authority as Host and the URL's path prefix in
# front of the target; --reverse-forwarded adds X-Forwarded-For/-Proto/-Host
# (replacing a client's own -Proto/-Host, appending to its -For), without it
# none are added. Every exchange is a flow naming the origin. A plain
# request on a TLS listener gets a 400 saying so, anything else that is not
# TLS is closed; an origin that does not answer gives the 502 page.
. "$(dirname "$0")/lib.sh"

need_cmd python3 sqlite3

TOKEN=reverse-test-token-0123456789

make_pki
make_localhost_leaf

start_origin PLAIN_PORT
start_origin TLS_PORT --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem"
DEAD_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# reverse_ports: REV1, REV2... from the "reverse proxy listening on" lines,
# in the order of the --reverse options.
reverse_ports() {
    local i lines=""
    for ((i = 0; i < 200; i++)); do
        lines=$(grep -aEo '^reverse proxy listening on https?://127\.0\.0\.1:[0-9]+' "$PROXY_OUT")
        [ "$(printf '%s\n' "$lines" | grep -c .)" -ge "$1" ] && break
        sleep 0.05
    done
    [ "$(printf '%s\n' "$lines" | grep -c .)" -ge "$1" ] ||
        bail "fewer than $1 'reverse proxy listening on' lines: $(head -c 800 "$PROXY_OUT")"
    i=0
    while read -r line; do
        i=$((i + 1))
        printf -v "REV$i" '%s' "${line##*:}"
    done <<< "$lines"
}

start_proxy --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN" --header-timeout 1000 \
    --reverse "127.0.0.1:0=http://127.0.0.1:$PLAIN_PORT" \
    --reverse "https://127.0.0.1:0=https://localhost:$TLS_PORT" \
    --reverse "127.0.0.1:0=https://localhost:$TLS_PORT/base/" \
    --reverse "127.0.0.1:0=http://127.0.0.1:$DEAD_PORT"
dashboard_port
reverse_ports 4

# ---- plain to plain ----
out=$(dcurl -o "$tmp/plain.body" -w '%{http_code}' "http://127.0.0.1:$REV1/headers")
check_eq "plain listener: 200 from the origin" 200 "$out"
check_match "plain listener: the origin gets its own authority as Host" \
    "^Host: 127\.0\.0\.1:$PLAIN_PORT"$'\r'?'$' "$(cat "$tmp/plain.body")"
check_no_match "plain listener: not the one the client sent" "^Host: 127\.0\.0\.1:$REV1" \
    "$(cat "$tmp/plain.body")"
check_no_imatch "plain listener: no X-Forwarded-* without --reverse-forwarded" '^X-Forwarded-' \
    "$(cat "$tmp/plain.body")"
check_match "plain listener: the target as the client sent it" '^GET /headers HTTP/1\.1' \
    "$(cat "$tmp/plain.body")"

# ---- TLS to TLS ----
out=$(curl -q -sS --max-time "$CURL_MAX_TIME" --noproxy '*' --cacert "$PROXY_CA" \
    --resolve "rev.example:$REV2:127.0.0.1" -o "$tmp/tls.body" \
    -w '%{http_code} %{ssl_verify_result}' "https://rev.example:$REV2/headers")
check_eq "TLS listener: 200, the leaf verified against the tapwire CA alone" "200 0" "$out"
check_match "TLS listener: the origin gets its own authority as Host" \
    "^Host: localhost:$TLS_PORT"$'\r'?'$' "$(cat "$tmp/tls.body")"
timeout 15 openssl s_client -connect "127.0.0.1:$REV2" -servername rev.example < /dev/null \
    2> /dev/null | openssl x509 -out "$tmp/rev.pem" 2> /dev/null
check_contains "TLS listener: the leaf names the SNI name" "DNS:rev.example" "$(cert_sans "$tmp/rev.pem")"
timeout 15 openssl s_client -connect "127.0.0.1:$REV2" -noservername < /dev/null \
    2> /dev/null | openssl x509 -out "$tmp/rev-nosni.pem" 2> /dev/null
check_contains "TLS listener without SNI: the leaf names the origin's host" "DNS:localhost" \
    "$(cert_sans "$tmp/rev-nosni.pem")"
printf 'GET /headers HTTP/1.1\r\nHost: x\r\n\r\n' > "$tmp/plain-on-tls.req"
raw_send "$REV2" "$tmp/plain-on-tls.req" "$tmp/plain-on-tls.out" 5
check_eq "TLS listener: a plain request gets a 400" "HTTP/1.1 400 Bad Request" \
    "$(status_line "$tmp/plain-on-tls.out")"
check_contains "TLS listener: ... saying to use https://" "speaks TLS: use https://" \
    "$(cat "$tmp/plain-on-tls.out")"
printf '\x16\x03\x01garbage' > "$tmp/junk-on-tls.req"
raw_send "$REV2" "$tmp/junk-on-tls.req" "$tmp/junk-on-tls.out" 5
check_eq "TLS listener: anything else is closed without an answer" "" "$(cat "$tmp/junk-on-tls.out")"

# ---- the path prefix ----
out=$(dcurl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REV3/conn?x=1")
check_eq "prefix: the origin answers (404: it has no /base/conn)" 404 "$out"
check "prefix: the origin got /base/conn" wait_for_grep "$TLS_PORT_LOG" 'GET /base/conn\?x=1' 5

# ---- an origin that does not answer ----
out=$(dcurl -o "$tmp/dead.body" -w '%{http_code}' "http://127.0.0.1:$REV4/conn")
check_eq "a dead origin: 502" 502 "$out"
check_contains "a dead origin: the page says why" "tapwire:" "$(cat "$tmp/dead.body")"

# ---- flows ----
check "the reverse exchanges and the 400 are flows" wait_written 5
check_eq "the flows name the origin, its scheme and the mapped target" \
    "http|127.0.0.1|$PLAIN_PORT|/headers|200
https|localhost|$TLS_PORT|/base/conn?x=1|404
https|localhost|$TLS_PORT|/headers|200" \
    "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" "select scheme, host, port, target, status
        from flows where status in (200, 404) order by scheme, target")"
stop_proxy

# ---- --reverse-forwarded ----
start_proxy --upstream-ca "$PKI/ca.pem" --reverse-forwarded \
    --reverse "https://127.0.0.1:0=http://127.0.0.1:$PLAIN_PORT"
reverse_ports 1
body=$(curl -q -sS --max-time "$CURL_MAX_TIME" --noproxy '*' --cacert "$PROXY_CA" \
    --resolve "rev.example:$REV1:127.0.0.1" -H 'X-Forwarded-For: 203.0.113.9' \
    -H 'X-Forwarded-Proto: gopher' -H 'X-Forwarded-Host: evil.example' \
    "https://rev.example:$REV1/headers")
check_match "--reverse-forwarded: X-Forwarded-For appends the client's address" \
    '^X-Forwarded-For: 203\.0\.113\.9, 127\.0\.0\.1'$'\r'?'$' "$body"
check_match "--reverse-forwarded: X-Forwarded-Proto says how the client spoke to tapwire" \
    '^X-Forwarded-Proto: https'$'\r'?'$' "$body"
check_match "--reverse-forwarded: X-Forwarded-Host is the Host the client sent" \
    "^X-Forwarded-Host: rev\.example:$REV1"$'\r'?'$' "$body"
check_no_match "--reverse-forwarded: the client's own -Proto and -Host are gone" \
    'gopher|evil\.example' "$body"
check_match "--reverse-forwarded: Host is still the origin's" \
    "^Host: 127\.0\.0\.1:$PLAIN_PORT"$'\r'?'$' "$body"
stop_proxy

finish
