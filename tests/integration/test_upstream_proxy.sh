#!/bin/bash
# --upstream-proxy: tapwire chained through a real tinyproxy started here
# with its own configuration on a loopback port. HTTPS goes through a
# CONNECT and is still intercepted, with the origin verified end to end (an
# untrusted origin certificate still gives the verification page); plain
# HTTP goes in absolute-form; --upstream-proxy-ignore hosts are reached
# directly. With BasicAuth on the proxy, the URL's credentials are sent (and
# never logged or stored), and a wrong password is a readable 502 naming the
# upstream proxy and its answer.
. "$(dirname "$0")/lib.sh"

need_cmd tinyproxy python3 sqlite3

TOKEN=upstream-proxy-test-token-0123456789
PUSER=chain
PPASS=Chain-Secret-9

# free_port: a loopback port nothing listens on now (tinyproxy wants a number).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_tinyproxy VAR [CONFIG LINES...]: tinyproxy in the foreground on a
# free loopback port; VAR gets the port, VAR_LOG its log.
start_tinyproxy() {
    local var=$1 port conf log pid i
    shift
    port=$(free_port)
    conf=$tmp/tinyproxy-$var.conf
    log=$tmp/tinyproxy-$var.log
    {
        printf 'Port %s\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Info\n' "$port"
        printf '%s\n' "$@"
    } > "$conf"
    tinyproxy -d -c "$conf" > "$log" 2>&1 < /dev/null &
    pid=$!
    track_pid "$pid"
    for ((i = 0; i < 100; i++)); do
        grep -q 'Accepting connections' "$log" 2> /dev/null && break
        _alive "$pid" || break
        sleep 0.05
    done
    grep -q 'Accepting connections' "$log" || bail "tinyproxy did not start: $(tail -n 5 "$log")"
    printf -v "$var" '%s' "$port"
    printf -v "${var}_LOG" '%s' "$log"
}

make_pki
start_origin ORIGIN_PORT
start_origin TLS_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"
start_origin BAD_PORT --tls "$PKI/untrusted.pem" "$PKI/untrusted-key.pem"
start_tinyproxy OPEN
start_tinyproxy LOCKED "BasicAuth $PUSER $PPASS"

gcurl() { pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$1" "${@:2}"; }

# ---- an open upstream proxy ----
start_proxy --upstream-proxy "http://127.0.0.1:$OPEN" --upstream-ca "$PKI/ca.pem" \
    --dashboard-token "$TOKEN"
dashboard_port
check_contains "the start-up names the upstream proxy" "upstream proxy 127.0.0.1:$OPEN" \
    "$(cat "$PROXY_OUT")"
out=$(gcurl "$TLS_PORT" -o "$tmp/tls.body" -w '%{http_code} %{ssl_verify_result}' https://good.test/conn)
check_eq "HTTPS through the upstream proxy: 200, intercepted (the tapwire CA verifies)" "200 0" "$out"
check_match "HTTPS through the upstream proxy: the origin's body" '^conn=' "$(cat "$tmp/tls.body")"
check "tinyproxy was asked for a CONNECT to the origin" \
    wait_for_grep "$OPEN_LOG" "Request .*CONNECT 127\.0\.0\.1:$TLS_PORT " 5
body=$(pcurl "http://127.0.0.1:$ORIGIN_PORT/headers")
check_match "plain HTTP through the upstream proxy: the origin answers" '^GET /headers HTTP/1\.' "$body"
check_imatch "plain HTTP: the origin got it by way of tinyproxy (its Via)" '^Via: .*tinyproxy' "$body"
check "plain HTTP: tinyproxy got the request in absolute-form" \
    wait_for_grep "$OPEN_LOG" "Request .*GET http://127\.0\.0\.1:$ORIGIN_PORT/headers HTTP/1\.1" 5
out=$(gcurl "$BAD_PORT" -o "$tmp/bad.body" -w '%{http_code}' https://good.test/conn)
check_eq "an untrusted origin through the upstream proxy: 502" 502 "$out"
check_contains "an untrusted origin: the verification page says why" \
    "unable to get local issuer certificate" "$(cat "$tmp/bad.body")"
check "an untrusted origin: tinyproxy carried the tunnel" \
    wait_for_grep "$OPEN_LOG" "CONNECT 127\.0\.0\.1:$BAD_PORT " 5
stop_proxy

# ---- --upstream-proxy-ignore ----
seen=$(grep -c 'Request ' "$OPEN_LOG")
start_proxy --upstream-proxy "http://127.0.0.1:$OPEN" --upstream-proxy-ignore '127.0.0.*' \
    --upstream-ca "$PKI/ca.pem"
check_eq "--upstream-proxy-ignore: HTTPS served" 200 \
    "$(gcurl "$TLS_PORT" -o /dev/null -w '%{http_code}' https://good.test/conn)"
body=$(pcurl "http://127.0.0.1:$ORIGIN_PORT/headers")
check_no_imatch "--upstream-proxy-ignore: plain HTTP reached directly" '^Via: .*tinyproxy' "$body"
check_eq "--upstream-proxy-ignore: tinyproxy saw nothing" "$seen" "$(grep -c 'Request ' "$OPEN_LOG")"
stop_proxy

# ---- a proxy that wants credentials ----
start_proxy --upstream-proxy "http://$PUSER:$PPASS@127.0.0.1:$LOCKED" --upstream-ca "$PKI/ca.pem" \
    --dashboard-token "$TOKEN"
dashboard_port
check_eq "credentials: HTTPS through the proxy: 200" 200 \
    "$(gcurl "$TLS_PORT" -o /dev/null -w '%{http_code}' https://good.test/conn)"
body=$(pcurl "http://127.0.0.1:$ORIGIN_PORT/headers")
check_imatch "credentials: plain HTTP through the proxy" '^Via: .*tinyproxy' "$body"
check_no_imatch "credentials: the origin gets no Proxy-Authorization" 'Proxy-Authorization' "$body"
check "credentials: both are flows" wait_written 2
b64=$(printf '%s:%s' "$PUSER" "$PPASS" | base64)
for secret in "$PPASS" "$b64"; do
    check "the database does not hold '${secret:0:6}...'" \
        bash -c '! grep -aqF -- "$1" "$2" "$2-wal"' _ "$secret" "$PROXY_DATA/tapwire.db"
    check_not_contains "the log does not hold '${secret:0:6}...'" "$secret" \
        "$(cat "$PROXY_ERR" "$PROXY_OUT")"
done
stop_proxy

start_proxy --upstream-proxy "http://$PUSER:wrong@127.0.0.1:$LOCKED" --upstream-ca "$PKI/ca.pem"
out=$(gcurl "$TLS_PORT" -o "$tmp/refused.body" -w '%{http_code}' https://good.test/conn)
check_eq "a wrong proxy password: 502" 502 "$out"
check_contains "a wrong proxy password: the page names the upstream proxy" \
    "upstream proxy 127.0.0.1:$LOCKED refused CONNECT 127.0.0.1:$TLS_PORT" "$(cat "$tmp/refused.body")"
# tinyproxy answers a CONNECT with wrong credentials 401, a plain request 407.
check_match "a wrong proxy password: and its answer" 'HTTP/1\.[01] 40[17] ' "$(cat "$tmp/refused.body")"
check "a wrong proxy password: logged" wait_for_grep "$PROXY_ERR" 'upstream proxy .* refused CONNECT' 5
stop_proxy
# Plain HTTP without credentials: tinyproxy answers 407 (with wrong ones, a
# 401 that cannot be told from an origin's). Relayed, its 407 would read as
# tapwire's own and ask the client for the proxy's credentials: a 502 names
# the proxy instead.
start_proxy --upstream-proxy "http://127.0.0.1:$LOCKED"
out=$(pcurl -o "$tmp/nocred-plain.body" -D "$tmp/nocred-plain.head" -w '%{http_code}' \
    "http://127.0.0.1:$ORIGIN_PORT/conn")
check_eq "no proxy credentials, plain HTTP: 502, not the proxy's 407" 502 "$out"
check_contains "no proxy credentials, plain HTTP: the page names the upstream proxy and its 407" \
    "upstream proxy 127.0.0.1:$LOCKED: the upstream proxy answered 407" \
    "$(cat "$tmp/nocred-plain.body")"
check_no_imatch "no proxy credentials, plain HTTP: no Proxy-Authenticate reaches the client" \
    '^Proxy-Authenticate' "$(cat "$tmp/nocred-plain.head")"
check "no proxy credentials, plain HTTP: logged" wait_for_grep "$PROXY_ERR" \
    "502 .*upstream proxy 127\.0\.0\.1:$LOCKED: the upstream proxy answered 407" 5
stop_proxy

# ---- an upstream proxy that is not there ----
start_proxy --upstream-proxy "http://127.0.0.1:$(free_port)"
out=$(pcurl -o "$tmp/gone.body" -w '%{http_code}' "http://127.0.0.1:$ORIGIN_PORT/conn")
check_eq "no upstream proxy listening: 502" 502 "$out"
check_contains "no upstream proxy listening: the page names it" "upstream proxy 127.0.0.1:" \
    "$(cat "$tmp/gone.body")"
stop_proxy

out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard --data-dir "$tmp/data" \
    --upstream-proxy "socks5://127.0.0.1:1080" 2>&1 < /dev/null)
check_eq "a URL that is not http://: refused at start" 1 $?
check_contains "a URL that is not http://: says what it wants" "http://[USER:PASS@]HOST:PORT" "$out"

finish
