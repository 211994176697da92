#!/bin/bash
# --client-cert: an origin that requires a client certificate (openssl
# s_server -Verify 1, trusting the test CA) is reached only when
# --client-cert names a certificate for it: without one, or with one for
# another host, the handshake fails and the client gets the 502 page; with
# it the origin answers and says which certificate it got. A certificate
# file that holds a key others can read is refused at start, as the CA key.
. "$(dirname "$0")/lib.sh"

need_cmd python3

make_pki
# A client certificate from the test CA, key and certificate in one file.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=tapwire test client" \
    -keyout "$tmp/client-key.pem" -out "$tmp/client.csr" 2> /dev/null || bail "cannot make a client key"
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n' > "$tmp/client.ext"
openssl x509 -req -in "$tmp/client.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca-key.pem" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -days 30 -extfile "$tmp/client.ext" \
    -out "$tmp/client-cert.pem" 2> /dev/null || bail "cannot sign the client certificate"
cat "$tmp/client-cert.pem" "$tmp/client-key.pem" > "$tmp/client.pem"
chmod 600 "$tmp/client.pem"

# s_server wants a port number: one nothing listens on now.
MTLS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
openssl s_server -accept "127.0.0.1:$MTLS_PORT" -cert "$PKI/good.pem" -key "$PKI/good-key.pem" \
    -Verify 1 -verify_return_error -CAfile "$PKI/ca.pem" -www -quiet \
    > "$tmp/s_server.log" 2>&1 < /dev/null &
track_pid $!
for ((i = 0; i < 100; i++)); do
    (exec 3<> "/dev/tcp/127.0.0.1/$MTLS_PORT") 2> /dev/null && break
    sleep 0.05
done

mcurl() {
    pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$MTLS_PORT" "$@" https://good.test/
}

start_proxy --upstream-ca "$PKI/ca.pem"
check_eq "no --client-cert: the origin refuses the handshake, 502" 502 \
    "$(mcurl -o "$tmp/none.body" -w '%{http_code}')"
# With TLS 1.3 the origin refuses after the handshake (an alert where the
# response should be), so the page can only say the origin gave none.
check_match "no --client-cert: the page says the origin gave no response" \
    'tapwire: .*(origin|handshake|certificate)' "$(cat "$tmp/none.body")"
stop_proxy

start_proxy --upstream-ca "$PKI/ca.pem" --client-cert "other.test=$tmp/client.pem"
check_eq "--client-cert for another host: not presented, 502" 502 \
    "$(mcurl -o /dev/null -w '%{http_code}')"
stop_proxy

start_proxy --upstream-ca "$PKI/ca.pem" --client-cert "other.test=$tmp/client.pem" \
    --client-cert "*.test=$tmp/client.pem"
out=$(mcurl -o "$tmp/with.body" -w '%{http_code}')
check_eq "--client-cert *.test: the origin answers" 200 "$out"
check_contains "--client-cert *.test: the origin got the test client's certificate" \
    "tapwire test client" "$(cat "$tmp/with.body")"
stop_proxy

start_proxy --upstream-ca "$PKI/ca.pem" --client-cert "$tmp/client.pem"
check_eq "--client-cert without a glob: every origin that asks" 200 \
    "$(mcurl -o /dev/null -w '%{http_code}')"
stop_proxy

# ---- refused at start ----
cp "$tmp/client.pem" "$tmp/open.pem"
chmod 644 "$tmp/open.pem"
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard --data-dir "$tmp/data" \
    --client-cert "$tmp/open.pem" 2>&1 < /dev/null)
check_eq "a key readable by others: refused at start (status 1)" 1 $?
check_contains "a key readable by others: says how to fix it" "chmod 600" "$out"
cp "$tmp/client-cert.pem" "$tmp/nokey.pem"
chmod 600 "$tmp/nokey.pem"
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard --data-dir "$tmp/data" \
    --client-cert "$tmp/nokey.pem" 2>&1 < /dev/null)
check_eq "a certificate without its key: refused at start" 1 $?
check_contains "a certificate without its key: says so" "private key" "$out"

finish
