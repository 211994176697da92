#!/bin/bash
# HTTPS through the proxy (CONNECT, then TLS with a minted leaf): bodies intact
# both ways, keep-alive in one tunnel, the minted certificate copies the
# upstream's names (SNI or not, two SNI names on one IP), Upgrade through the
# tunnel, --ignore-host passes the origin's own certificate through,
# SSLKEYLOGFILE logs both sides, and the CA and minted leaves survive a restart.
. "$(dirname "$0")/lib.sh"

make_pki
start_origin ORIGIN_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem" --alpn
start_proxy --upstream-ca "$PKI/ca.pem"

check_eq "stdout names the CA certificate in the data directory" "$tmp/data/ca-cert.pem" \
    "$(realpath -m "$PROXY_CA")"
check "CA certificate file is a certificate" openssl x509 -in "$PROXY_CA" -noout

# good.test resolves nowhere: curl connects to the proxy and sends
# "CONNECT 127.0.0.1:PORT" with SNI good.test (CONNECT by IP, name from SNI).
gcurl() { pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$ORIGIN_PORT" "$@"; }
G=https://good.test

out=$(gcurl -o "$tmp/small.bin" -w '%{http_code} %{ssl_verify_result}' "$G/bytes/100")
check_eq "GET over TLS: 200, proxy leaf verified by curl against the tapwire CA" "200 0" "$out"
check_eq "GET over TLS: body intact" "$(pattern_sha 100)" "$(file_sha "$tmp/small.bin")"

code=$(gcurl -o "$tmp/big.bin" -w '%{http_code}' "$G/bytes/$BIG")
check_eq "GET 16 MiB over TLS: status 200" 200 "$code"
check_eq "GET 16 MiB over TLS: body intact" "$(pattern_sha $BIG)" "$(file_sha "$tmp/big.bin")"

# An HTTP/1.0 request may leave Host out; the HTTP/1.1 head the origin gets
# must have one (RFC 9112 3.2): the tunnel's site (the SNI) names it.
out=$(gcurl --http1.0 -H 'Host:' "$G/headers")
check_imatch "HTTP/1.0 without Host in a tunnel: the origin gets Host from the SNI" \
    "^Host: good\.test:$ORIGIN_PORT" "$out"

head -c $BIG /dev/urandom > "$tmp/upload.bin"
want=$(file_sha "$tmp/upload.bin")
got=$(gcurl --data-binary @"$tmp/upload.bin" "$G/sha256")
check_eq "POST 16 MiB over TLS: origin got every byte" "$want" "$got"
got=$(gcurl -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/upload.bin" "$G/sha256")
check_eq "POST 16 MiB chunked over TLS: origin got every byte" "$want" "$got"

head -c 1000000 /dev/urandom > "$tmp/echo.bin"
code=$(gcurl -o "$tmp/echo.out" -w '%{http_code}' --data-binary @"$tmp/echo.bin" "$G/echo")
check_eq "POST /echo 1 MB over TLS: status 200" 200 "$code"
check "POST /echo 1 MB over TLS: echoed intact" cmp "$tmp/echo.bin" "$tmp/echo.out"

code=$(gcurl -D "$tmp/chunked.head" -o "$tmp/chunked.bin" -w '%{http_code}' "$G/bytes/1000000?chunked=1")
check_eq "chunked download over TLS: status 200" 200 "$code"
check_eq "chunked download over TLS: body intact" "$(pattern_sha 1000000)" "$(file_sha "$tmp/chunked.bin")"
check_imatch "chunked download over TLS: trailer forwarded" '^X-Trailer: done$' \
    "$(tr -d '\r' < "$tmp/chunked.head")"

out=$(gcurl -o "$tmp/c1" -o "$tmp/c2" -w '%{num_connects} ' "$G/conn" "$G/conn")
c1=$(cat "$tmp/c1")
check_match "one tunnel: first request is req=1" '^conn=[0-9]+ req=1$' "$c1"
check_eq "one tunnel: second request on the same upstream connection" "${c1% req=1} req=2" "$(cat "$tmp/c2")"
check_eq "one tunnel: curl connected once" "1 0 " "$out"

# No SNI at all (an IP literal): the leaf must carry IP:127.0.0.1, copied from
# the upstream certificate; and RFC 6066 3 forbids sending an IP as SNI.
out=$(pcurl --cacert "$PROXY_CA" -o "$tmp/ip.bin" -w '%{http_code}' "https://127.0.0.1:$ORIGIN_PORT/conn")
check_eq "https://127.0.0.1 (no SNI): 200 with a leaf valid for the IP" 200 "$out"
check_match "https://127.0.0.1 (no SNI): body from the origin" '^conn=[0-9]+ req=1$' "$(cat "$tmp/ip.bin")"
check "no-SNI client: proxy sent no SNI upstream either" wait_for_grep "$ORIGIN_PORT_LOG" 'TLS .* sni=-$' 2

# ---- the minted leaf ----
leaf_via_proxy good.test "127.0.0.1:$ORIGIN_PORT" "$tmp/leaf-good.pem"
check "s_client through the proxy got a leaf for good.test" test -s "$tmp/leaf-good.pem"
sans=$(cert_sans "$tmp/leaf-good.pem")
for n in DNS:good.test DNS:alt.test 'DNS:*.wild.test' IPAddress:127.0.0.1; do
    check_contains "minted leaf copies SAN $n" ",$n," ",$sans,"
done
check_eq "minted leaf's issuer is the tapwire CA" \
    "$(openssl x509 -in "$PROXY_CA" -noout -subject | sed 's/^subject=//')" \
    "$(openssl x509 -in "$tmp/leaf-good.pem" -noout -issuer | sed 's/^issuer=//')"
check "minted leaf verifies against the tapwire CA for good.test" \
    openssl verify -CAfile "$PROXY_CA" -purpose sslserver -verify_hostname good.test "$tmp/leaf-good.pem"
serial1=$(openssl x509 -in "$tmp/leaf-good.pem" -noout -serial)

# ---- two SNI names on one IP ----
start_origin SNI_PORT --sni a.test "$PKI/a.pem" "$PKI/a-key.pem" --sni b.test "$PKI/b.pem" "$PKI/b-key.pem"
for h in a.test b.test; do
    out=$(pcurl --cacert "$PROXY_CA" --connect-to "$h:443:127.0.0.1:$SNI_PORT" -o "$tmp/$h.body" \
        -w '%{http_code}' "https://$h/conn")
    check_eq "two names on one IP: $h answers 200" 200 "$out"
    leaf_via_proxy "$h" "127.0.0.1:$SNI_PORT" "$tmp/leaf-$h.pem"
done
sans_a=",$(cert_sans "$tmp/leaf-a.test.pem"),"
sans_b=",$(cert_sans "$tmp/leaf-b.test.pem"),"
check_contains "two names on one IP: a.test leaf names a.test" ",DNS:a.test," "$sans_a"
check_not_contains "two names on one IP: a.test leaf does not name b.test" "b.test" "$sans_a"
check_contains "two names on one IP: b.test leaf names b.test" ",DNS:b.test," "$sans_b"
check_not_contains "two names on one IP: b.test leaf does not name a.test" "a.test" "$sans_b"

# ---- Upgrade through the tunnel ----
if command -v python3 > /dev/null 2>&1; then
    out=$(timeout 30 python3 - "$PROXY_PORT" "$ORIGIN_PORT" "$PROXY_CA" 2>&1 <<'EOF'
import os, socket, ssl, sys
proxy_port, origin_port, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("eof before end of head: %r" % data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest

s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
s.sendall(("CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n" % (origin_port, origin_port)).encode())
head, rest = read_head(s)
print("connect:", head.splitlines()[0])
t = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname="good.test")
t.sendall(b"GET /echo-upgrade HTTP/1.1\r\nHost: good.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
head, pending = read_head(t)
print("upgrade:", head.splitlines()[0])
total = 0
for size in (5, 16384, 65536, 16384):
    payload = os.urandom(size)
    t.sendall(payload)
    got = pending
    pending = b""
    while len(got) < size:
        chunk = t.recv(size - len(got))
        if not chunk:
            raise SystemExit("eof after %d of %d echoed bytes" % (len(got), size))
        got += chunk
    if got != payload:
        raise SystemExit("echoed bytes differ")
    total += size
print("echoed: %d" % total)
t.close()
EOF
    )
    check_match "Upgrade in a tunnel: CONNECT 200" '^connect: HTTP/1\.[01] 200' "$out"
    check_match "Upgrade in a tunnel: 101 from the origin" '^upgrade: HTTP/1\.1 101' "$out"
    check_match "Upgrade in a tunnel: 98309 bytes echoed both ways" '^echoed: 98309$' "$out"
else
    note "python3 missing: Upgrade-through-tunnel checks skipped"
fi

# ---- keep-alive across an idle pause ----
# A connection quiet for a moment gives back its buffers and the stack its
# thread touched (conn.c wait_next_request, stacktrim.c); the next request on
# it must work as if nothing happened, on the same upstream connection, and
# a body larger than the released buffers must arrive intact.
if command -v python3 > /dev/null 2>&1; then
    out=$(timeout 30 python3 - "$PROXY_PORT" "$ORIGIN_PORT" "$PROXY_CA" 2>&1 <<'EOF'
import socket, ssl, sys, time
proxy_port, origin_port, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def read_response(sock, pending=b""):
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("eof before end of head: %r" % data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.decode("latin-1")
    length = [int(l.split(":", 1)[1]) for l in head.split("\r\n") if l.lower().startswith("content-length:")]
    if not length:
        raise SystemExit("no Content-Length in %r" % head)
    while len(body) < length[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("eof in body")
        body += chunk
    return head.splitlines()[0], body[:length[0]], body[length[0]:]

s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
s.sendall(("CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n" % (origin_port, origin_port)).encode())
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(4096)
t = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname="good.test")
rest = b""
conns = []
for pause in (0, 0.6, 1.2):
    time.sleep(pause)
    t.sendall(b"GET /conn HTTP/1.1\r\nHost: good.test\r\n\r\n")
    status, body, rest = read_response(t, rest)
    print("after %.1f s: %s" % (pause, status))
    conns.append(body.split()[0])  # "conn=N req=M"
print("origin connections: %d" % len(set(conns)))
time.sleep(0.6)
t.sendall(b"GET /bytes/300000 HTTP/1.1\r\nHost: good.test\r\n\r\n")
status, body, rest = read_response(t, rest)
print("big after pause: %s %d" % (status.split()[1], len(body)))
t.close()
EOF
    )
    check_eq "idle pause: three requests on one tunnel all 200" 3 "$(grep -c '^after .* s: HTTP/1.1 200' <<< "$out")"
    check_match "idle pause: the same origin connection served all three" '^origin connections: 1$' "$out"
    check_match "idle pause: a 300,000-byte body after a pause arrives whole" '^big after pause: 200 300000$' "$out"
else
    note "python3 missing: idle-pause checks skipped"
fi

# ---- certificate figures in the dashboard's /api/stats ----
# good.test, a.test and b.test (at least) were minted; good.test was then
# served from memory many times; the mints took measurable time.
dash=$(grep -aEo -m 1 '^dashboard: http://127\.0\.0\.1:[0-9]+/\?token=[A-Za-z0-9._~-]+' "$PROXY_OUT")
dash=${dash#dashboard: }
stats=$(dcurl -H "X-Tapwire-Token: ${dash##*token=}" "${dash%%/\?token=*}/api/stats")
check_eq "stats: leaves minted (>= 3), reused from memory, mint time counted" "True True True" \
    "$(python3 -c 'import json, sys
c = json.loads(sys.argv[1])["certificates"]
print(c["minted"] >= 3, c["from_memory"] >= 1, c["mint_us_total"] > 0)' "$stats" 2>&1)"

# ---- the data directory ----
check_eq "data directory mode 700" 700 "$(stat -c %a "$tmp/data")"
check_eq "ca-key.pem mode 600" 600 "$(stat -c %a "$tmp/data/ca-key.pem")"
fp1=$(openssl x509 -in "$PROXY_CA" -noout -fingerprint -sha256)

stop_proxy
check_eq "SIGTERM: proxy exits with status 0" 0 $?

# ---- restart on the same data directory, with SSLKEYLOGFILE ----
SSLKEYLOGFILE=$tmp/proxy-keys.log start_proxy --upstream-ca "$PKI/ca.pem"
check_eq "restart: same CA certificate" "$fp1" "$(openssl x509 -in "$PROXY_CA" -noout -fingerprint -sha256)"

code=$(SSLKEYLOGFILE=$tmp/curl-keys.log gcurl -o /dev/null -w '%{http_code}' "$G/bytes/10")
check_eq "keylog: request through the restarted proxy: 200" 200 "$code"
wait_for_grep "$tmp/proxy-keys.log" '^(CLIENT_RANDOM|CLIENT_HANDSHAKE_TRAFFIC_SECRET) ' 3
randoms() { grep -aE '^(CLIENT_RANDOM|CLIENT_HANDSHAKE_TRAFFIC_SECRET) ' "$1" 2> /dev/null | cut -d' ' -f2 | sort -u; }
proxy_randoms=$(randoms "$tmp/proxy-keys.log")
curl_random=$(randoms "$tmp/curl-keys.log" | head -n 1)
check_le "keylog: at least 2 distinct client randoms (client and upstream sides)" 2 \
    "$(printf '%s\n' "$proxy_randoms" | grep -c .)"
check_contains "keylog: the client-facing handshake (curl's random) is logged" "$curl_random" "$proxy_randoms"
check_match "keylog: the upstream handshake (a random that is not curl's) is logged" '.' \
    "$(printf '%s\n' "$proxy_randoms" | grep -v "^${curl_random:-none}\$")"

leaf_via_proxy good.test "127.0.0.1:$ORIGIN_PORT" "$tmp/leaf-good-2.pem"
check_eq "restart: same minted leaf (serial) for good.test, from the cache" "$serial1" \
    "$(openssl x509 -in "$tmp/leaf-good-2.pem" -noout -serial 2> /dev/null)"
stop_proxy

# ---- --ignore-host: the tunnel is passed through untouched ----
# Clients CONNECT by IP here, as they often do: the name to match is the SNI.
PROXY_DATA_DIR=$tmp/data-ignore start_proxy --upstream-ca "$PKI/ca.pem" \
    --ignore-host good.test --ignore-host '*.wild.test'
leaf_via_proxy good.test "127.0.0.1:$ORIGIN_PORT" "$tmp/leaf-ignored.pem"
check_contains "--ignore-host good.test: client sees the origin's own certificate" \
    "CN = tapwire test CA" "$(openssl x509 -in "$tmp/leaf-ignored.pem" -noout -issuer 2> /dev/null)"
check "--ignore-host good.test: it is byte for byte the origin's" \
    cmp <(openssl x509 -in "$PKI/good.pem" -outform DER) <(openssl x509 -in "$tmp/leaf-ignored.pem" -outform DER)
code=$(pcurl --cacert "$PKI/ca.pem" --connect-to "good.test:443:127.0.0.1:$ORIGIN_PORT" \
    -o /dev/null -w '%{http_code}' "$G/conn")
check_eq "--ignore-host good.test: curl trusting only the test CA gets 200" 200 "$code"
leaf_via_proxy x.wild.test "127.0.0.1:$ORIGIN_PORT" "$tmp/leaf-wild.pem"
check "--ignore-host '*.wild.test': x.wild.test gets the origin's own certificate" \
    cmp <(openssl x509 -in "$PKI/good.pem" -outform DER) <(openssl x509 -in "$tmp/leaf-wild.pem" -outform DER)
leaf_via_proxy alt.test "127.0.0.1:$ORIGIN_PORT" "$tmp/leaf-alt.pem"
check_eq "--ignore-host: a name matching no glob (alt.test) is still intercepted" \
    "$(openssl x509 -in "$PROXY_CA" -noout -subject | sed 's/^subject=//')" \
    "$(openssl x509 -in "$tmp/leaf-alt.pem" -noout -issuer 2> /dev/null | sed 's/^issuer=//')"

finish
