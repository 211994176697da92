#!/bin/bash
# --proxy-auth: the explicit proxy answers 407 with a Basic challenge to a
# client without credentials or with wrong ones (plain requests and CONNECT),
# serves one with the right ones, and the credentials reach neither the
# origin, nor the stored flows, nor the log. --proxy-auth-file reads the
# pairs from a private file and refuses one others can read. A listener
# beyond loopback without --proxy-auth gets a loud warning at start.
. "$(dirname "$0")/lib.sh"

need_cmd sqlite3 python3

TOKEN=proxy-auth-test-token-0123456789
USER=alice
PASS=Open-Sesame-42
B64=$(printf '%s:%s' "$USER" "$PASS" | base64)

make_pki
start_origin ORIGIN_PORT
start_origin TLS_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"
start_proxy --proxy-auth "$USER:$PASS" --upstream-ca "$PKI/ca.pem" --dashboard-token "$TOKEN"
dashboard_port
O=http://127.0.0.1:$ORIGIN_PORT

# ---- refused: no credentials, wrong ones ----
code=$(pcurl -D "$tmp/none.head" -o "$tmp/none.body" -w '%{http_code}' "$O/conn")
check_eq "no credentials: 407" 407 "$code"
check_imatch "no credentials: a Basic challenge" '^Proxy-Authenticate: Basic realm="tapwire"' \
    "$(tr -d '\r' < "$tmp/none.head")"
check_contains "no credentials: the page says why" "--proxy-auth" "$(cat "$tmp/none.body")"
check_eq "wrong password: 407" 407 \
    "$(pcurl -o /dev/null -w '%{http_code}' -U "$USER:wrong-$PASS" "$O/conn")"
check_eq "wrong user: 407" 407 \
    "$(pcurl -o /dev/null -w '%{http_code}' -U "bob:$PASS" "$O/conn")"
printf 'CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: x\r\n\r\n' "$TLS_PORT" > "$tmp/connect.req"
raw_send "$PROXY_PORT" "$tmp/connect.req" "$tmp/connect.resp" 5
check_match "CONNECT without credentials: 407" '^HTTP/1\.1 407 ' "$(status_line "$tmp/connect.resp")"
printf 'CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic %s\r\n\r\n' \
    "$TLS_PORT" "$(printf '%s:x' "$USER" | base64)" > "$tmp/connect-bad.req"
raw_send "$PROXY_PORT" "$tmp/connect-bad.req" "$tmp/connect-bad.resp" 5
check_match "CONNECT with a wrong password: 407" '^HTTP/1\.1 407 ' \
    "$(status_line "$tmp/connect-bad.resp")"
check_eq "the origin saw none of the refused requests" 0 "$(grep -c 'origin: conn=' "$ORIGIN_PORT_LOG")"

# ---- served with the right ones ----
body=$(pcurl -U "$USER:$PASS" "$O/headers")
check_match "right credentials: the origin answers" '^GET /headers HTTP/1\.1' "$body"
check_no_imatch "right credentials: the origin gets no Proxy-Authorization" 'Proxy-Authorization' "$body"
code=$(pcurl -U "$USER:$PASS" --cacert "$PROXY_CA" -o "$tmp/tls.body" -w '%{http_code}' \
    --connect-to "good.test:443:127.0.0.1:$TLS_PORT" "https://good.test/conn")
check_eq "right credentials: CONNECT and intercepted HTTPS" 200 "$code"
check_match "right credentials: HTTPS body from the origin" '^conn=' "$(cat "$tmp/tls.body")"

# ---- the refusals are recorded, the credentials are not ----
check "every request is a flow" wait_written 7
DB=$PROXY_DATA/tapwire.db
check_eq "five 407 flows" 5 "$(sqlite3 -readonly "$DB" 'select count(*) from flows where status = 407')"
check_eq "the served plain request is a flow" 1 \
    "$(sqlite3 -readonly "$DB" "select count(*) from flows where status = 200 and target = '/headers'")"
check_eq "no stored header names Proxy-Authorization" 0 \
    "$(sqlite3 -readonly "$DB" "select count(*) from flows where req_headers like '%proxy-authorization%'
        or resp_headers like '%proxy-authorization%'")"
for secret in "$PASS" "$B64"; do
    check "the database file does not hold '${secret:0:6}...'" \
        bash -c '! grep -aqF -- "$1" "$2" "$2-wal"' _ "$secret" "$DB"
    check_not_contains "the log does not hold '${secret:0:6}...'" "$secret" "$(cat "$PROXY_ERR")"
done
check "the refusal is logged" wait_for_grep "$PROXY_ERR" \
    "GET http://127\.0\.0\.1:$ORIGIN_PORT/conn 407 .*proxy authentication required" 5
check_not_contains "a loopback listener: no open-relay warning" "WARNING" "$(cat "$PROXY_ERR")"
stop_proxy

# ---- --proxy-auth-file ----
printf '# users\nbob:builder\n%s:%s\n' "$USER" "$PASS" > "$tmp/users"
chmod 600 "$tmp/users"
start_proxy --proxy-auth-file "$tmp/users"
check_eq "--proxy-auth-file: the second user is served" 200 \
    "$(pcurl -o /dev/null -w '%{http_code}' -U "$USER:$PASS" "$O/conn")"
check_eq "--proxy-auth-file: the first user is served" 200 \
    "$(pcurl -o /dev/null -w '%{http_code}' -U "bob:builder" "$O/conn")"
check_eq "--proxy-auth-file: a mixed pair is refused" 407 \
    "$(pcurl -o /dev/null -w '%{http_code}' -U "bob:$PASS" "$O/conn")"
stop_proxy
chmod 644 "$tmp/users"
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard --data-dir "$tmp/data" \
    --proxy-auth-file "$tmp/users" 2>&1 < /dev/null)
check_eq "--proxy-auth-file readable by others: refused at start (status 1)" 1 $?
check_contains "--proxy-auth-file readable by others: says how to fix it" "chmod 600" "$out"

# ---- beyond loopback without --proxy-auth: a loud warning ----
# In a network namespace of its own the wildcard listener is reachable from
# nowhere, so the test never opens a port beyond this host's loopback.
if timeout 5 unshare -n true 2> /dev/null; then
    timeout 20 unshare -n "$TAPWIRE_BIN" --listen 0.0.0.0:0 --no-dashboard \
        --data-dir "$tmp/data" > "$tmp/open.out" 2> "$tmp/open.err" < /dev/null &
    open_pid=$!
    track_pid "$open_pid"
    check "0.0.0.0 without --proxy-auth: a warning at start" \
        wait_for_grep "$tmp/open.err" 'WARNING: --listen listens beyond loopback without --proxy-auth' 15
    stop_pid "$open_pid"
    timeout 20 unshare -n "$TAPWIRE_BIN" --listen 0.0.0.0:0 --no-dashboard --proxy-auth "$USER:$PASS" \
        --data-dir "$tmp/data" > "$tmp/closed.out" 2> "$tmp/closed.err" < /dev/null &
    closed_pid=$!
    track_pid "$closed_pid"
    wait_for_grep "$tmp/closed.out" '^proxy listening' 15
    check_not_contains "0.0.0.0 with --proxy-auth: no warning" "WARNING" "$(cat "$tmp/closed.err")"
    stop_pid "$closed_pid"
else
    note "unshare -n is not allowed here: the beyond-loopback warning is not checked"
fi

finish
