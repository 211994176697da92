#!/bin/bash
# --socks5: curl through a SOCKS5 listener reaches the test origins with the
# name resolved by tapwire (--socks5-hostname) or by curl (--socks5, IPv4
# and IPv6 destinations), and HTTPS is intercepted exactly as after a
# CONNECT: the leaf curl verifies is minted by the tapwire CA. Plain HTTP
# goes through too, and every exchange is a flow. With --proxy-auth the
# listener wants RFC 1929 username/password and refuses a wrong password.
# BIND and UDP ASSOCIATE get reply 7, garbage and a stalled handshake are
# closed within the header timeout, and the proxy goes on serving.
. "$(dirname "$0")/lib.sh"

need_cmd python3 sqlite3

TOKEN=socks5-test-token-0123456789
USER=carol
PASS=socks-Pass-77

make_pki
make_localhost_leaf

start_origin PLAIN_PORT
start_origin TLS_PORT --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem"

# socks5_port: SOCKS_PORT from the current proxy's "SOCKS5 listening on" line.
socks5_port() {
    local i line=""
    for ((i = 0; i < 200; i++)); do
        line=$(grep -aEo -m 1 '^SOCKS5 listening on 127\.0\.0\.1:[0-9]+' "$PROXY_OUT")
        [ -n "$line" ] && break
        sleep 0.05
    done
    [ -n "$line" ] || bail "no 'SOCKS5 listening on 127.0.0.1:PORT' line: $(head -c 500 "$PROXY_OUT")"
    SOCKS_PORT=${line##*:}
}

# scurl ARGS...: curl with the tapwire CA as its only trust anchor.
scurl() { curl -q -sS --max-time "$CURL_MAX_TIME" --cacert "$PROXY_CA" "$@"; }

# socks_raw HEX [SECONDS]: sends the bytes HEX to the SOCKS5 port, prints
# what came back as hex and "closed" once the proxy closed (or "open").
socks_raw() {
    python3 - "$SOCKS_PORT" "$1" "${2:-5}" << 'PY'
import socket, sys, time
port, data, bound = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=bound)
s.sendall(data)
got, state, end = b"", "open", time.monotonic() + bound
try:
    while time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        b = s.recv(4096)
        if not b:
            state = "closed"
            break
        got += b
except socket.timeout:
    pass
except ConnectionResetError:
    state = "closed"
print(got.hex(), state)
PY
}

start_proxy --socks5 127.0.0.1:0 --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN" \
    --header-timeout 1000
dashboard_port
socks5_port

# ---- names resolved by tapwire, and by curl ----
out=$(scurl --socks5-hostname "127.0.0.1:$SOCKS_PORT" -o "$tmp/h.body" \
    -w '%{http_code} %{ssl_verify_result}' "https://localhost:$TLS_PORT/conn")
check_eq "--socks5-hostname https://localhost: 200, the leaf verified against the tapwire CA alone (intercepted)" "200 0" "$out"
check_match "--socks5-hostname https://localhost: body from the origin" '^conn=' "$(cat "$tmp/h.body")"
out=$(scurl --socks5 "127.0.0.1:$SOCKS_PORT" --resolve "localhost:$TLS_PORT:127.0.0.1" \
    -o "$tmp/v4.body" -w '%{http_code}' "https://localhost:$TLS_PORT/conn")
check_eq "--socks5 (IPv4 destination) https://localhost: 200" 200 "$out"
code=$(curl -q -sS --max-time 10 --socks5-hostname "127.0.0.1:$SOCKS_PORT" -o /dev/null \
    -w '%{http_code}' "http://localhost:$PLAIN_PORT/conn")
check_eq "--socks5-hostname plain http://localhost: 200" 200 "$code"
code=$(curl -q -sS --max-time 10 --socks5 "127.0.0.1:$SOCKS_PORT" -o /dev/null \
    -w '%{http_code}' "http://127.0.0.1:$PLAIN_PORT/conn")
check_eq "--socks5 plain http://127.0.0.1: 200" 200 "$code"

if python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2> /dev/null; then
    "$TEST_ORIGIN_BIN" --listen '[::1]:0' --port-file "$tmp/v6.port" \
        --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem" > "$tmp/v6.log" 2>&1 &
    track_pid $!
    wait_port_file V6_PORT "$tmp/v6.port" "the IPv6 origin" "$tmp/v6.log"
    out=$(scurl --socks5 "127.0.0.1:$SOCKS_PORT" --resolve "localhost:$V6_PORT:[::1]" \
        -o "$tmp/v6.body" -w '%{http_code}' "https://localhost:$V6_PORT/conn")
    check_eq "--socks5 (IPv6 destination [::1]) https://localhost: 200" 200 "$out"
    check "the IPv6 origin was reached" wait_for_grep "$tmp/v6.log" 'origin: conn=.* GET /conn' 5
else
    note "no IPv6 loopback here: the IPv6 destination is not checked"
fi

# ---- what the RFC refuses, and what is not SOCKS5 ----
# greeting 05 01 00, then BIND 127.0.0.1:80 / UDP ASSOCIATE
out=$(socks_raw 050100050200017f0000010050)
check_eq "BIND: reply 7 (command not supported), then closed" "050005070001000000000000 closed" "$out"
out=$(socks_raw 050100050300017f0000010050)
check_eq "UDP ASSOCIATE: reply 7, then closed" "050005070001000000000000 closed" "$out"
out=$(socks_raw 05010005010005aabbccdd0050)
check_eq "an unknown address type: reply 8, then closed" "050005080001000000000000 closed" "$out"
out=$(socks_raw 474554202f20485454502f312e310d0a0d0a)
check_eq "an HTTP request on the SOCKS5 port: closed, nothing sent" " closed" "$out"
start=$(now_ms)
out=$(socks_raw 05 5)
check_eq "a stalled greeting: closed" " closed" "$out"
check_le "a stalled greeting: closed within the header timeout (1 s) and a bound" \
    "$(($(now_ms) - start))" 4500
out=$(socks_raw 050102)
check_eq "no acceptable method: 05 ff, then closed" "05ff closed" "$out"
check "the refusals are logged" wait_for_grep "$PROXY_ERR" 'SOCKS5 request refused \(reply 7' 5
code=$(curl -q -sS --max-time 10 --socks5-hostname "127.0.0.1:$SOCKS_PORT" -o /dev/null \
    -w '%{http_code}' "http://localhost:$PLAIN_PORT/conn")
check_eq "still serving after all that" 200 "$code"

# ---- flows ----
check "the SOCKS5 exchanges are flows" wait_written 6
check_eq "both https flows name the host the client asked for (its name, or the SNI)" 2 \
    "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" "select count(*) from flows
        where scheme = 'https' and host = 'localhost' and port = $TLS_PORT and status = 200
        and tls_verification = 'ok'")"
check "the handshake refusals are flows too" wait_written 11
check_eq "... with a status each: 400 not SOCKS5 or a bad address, 407 no method, 501 BIND and UDP" \
    "400|2
407|1
501|2" "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" "select status, count(*) from flows
        where scheme = 'tcp' and method = 'CONNECT' and error like '%SOCKS5%'
        group by status order by status")"
stop_proxy

# ---- with --proxy-auth: RFC 1929 ----
start_proxy --socks5 127.0.0.1:0 --upstream-ca "$PKI/ca.pem" --proxy-auth "$USER:$PASS"
socks5_port
out=$(scurl --socks5-hostname "$USER:$PASS@127.0.0.1:$SOCKS_PORT" -o /dev/null -w '%{http_code}' \
    "https://localhost:$TLS_PORT/conn")
check_eq "--proxy-auth: the right password: 200" 200 "$out"
scurl --socks5-hostname "$USER:wrong@127.0.0.1:$SOCKS_PORT" -o /dev/null \
    "https://localhost:$TLS_PORT/conn" 2> /dev/null
check_eq "--proxy-auth: a wrong password is refused (curl: proxy handshake error)" 97 $?
scurl --socks5-hostname "127.0.0.1:$SOCKS_PORT" -o /dev/null \
    "https://localhost:$TLS_PORT/conn" 2> /dev/null
check_eq "--proxy-auth: no credentials are refused" 97 $?
out=$(socks_raw 050100)
check_eq "--proxy-auth: a client offering only 'no authentication' gets 05 ff" "05ff closed" "$out"
out=$(socks_raw 0501020105636172306c0178)
check_eq "--proxy-auth: a wrong RFC 1929 pair gets status 1, then closed" "05020101 closed" "$out"
check "--proxy-auth: the failure is logged" wait_for_grep "$PROXY_ERR" 'SOCKS5 authentication failed' 5
check_not_contains "--proxy-auth: the password is not logged" "$PASS" "$(cat "$PROXY_ERR")"
stop_proxy
check_eq "--proxy-auth: each refusal is a 407 flow" 5 \
    "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" "select count(*) from flows
        where status = 407 and error like 'SOCKS5%'")"
check_eq "--proxy-auth: no flow holds the password" 0 \
    "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" "select count(*) from flows
        where coalesce(error, '') || coalesce(req_headers, '') || host like '%$PASS%'")"

finish
