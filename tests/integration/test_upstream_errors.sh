#!/bin/bash
# Upstream failures become an honest error page: for a bad certificate the
# client still completes its TLS handshake with the proxy and gets a 502 whose
# text/plain body names the reason, while not one request byte reaches the bad
# upstream; DNS failure and refusal give 502, a hung handshake 504 within the
# bound; --insecure serves the content and warns. Each failure is logged.
. "$(dirname "$0")/lib.sh"

make_pki
start_origin EXPIRED_PORT --tls "$PKI/expired.pem" "$PKI/expired-key.pem"
start_origin OTHER_PORT --tls "$PKI/other.pem" "$PKI/other-key.pem"
start_origin UNTRUSTED_PORT --tls "$PKI/untrusted.pem" "$PKI/untrusted-key.pem"
start_origin GOOD_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"
start_origin HANG_PORT --hang-tls
start_origin CLOSED_PORT --refuse # bound, not listening: connecting is refused
start_proxy --upstream-ca "$PKI/ca.pem"

code=$(pcurl --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$GOOD_PORT" \
    -o /dev/null -w '%{http_code}' https://good.test/conn)
check_eq "control: a good upstream answers 200" 200 "$code"

# The status a client got, whether the proxy refused the CONNECT itself
# (http_connect) or answered inside the tunnel (http_code).
status_of() {
    local code=${1% *} connect=${1#* }
    if [ "$code" != 000 ]; then echo "$code"; else echo "$connect"; fi
}

# hex of a file, one line (od -v: never collapse repeated lines)
hex_of() { od -An -v -tx1 "$1" | tr -d ' \n'; }
"$TEST_ORIGIN_BIN" --pattern 32 > "$tmp/pattern32"
pattern_hex=$(hex_of "$tmp/pattern32")

# bad_cert NAME HOST PORT ORIGIN_LOG LOG_ERE NEEDLE...
bad_cert() {
    local name=$1 host=$2 port=$3 origin_log=$4 log_re=$5 out rc n
    shift 5
    out=$(pcurl --cacert "$PROXY_CA" --connect-to "$host:443:127.0.0.1:$port" \
        -D "$tmp/$name.head" -o "$tmp/$name.body" -w '%{http_code} %{http_connect}' \
        "https://$host/bytes/64")
    rc=$?
    check_eq "$name: curl's TLS handshake with the proxy succeeded and a response came (exit 0)" 0 "$rc"
    check_eq "$name: 502 inside the tunnel (CONNECT 200)" "502 200" "$out"
    check_imatch "$name: error page is text/plain" '^Content-Type: text/plain' \
        "$(tr -d '\r' < "$tmp/$name.head")"
    for n in "$@"; do
        check_imatch "$name: body says \"$n\"" "$n" "$(cat -v "$tmp/$name.body")"
    done
    check_no_match "$name: no request reached the bad upstream" ' req=' "$(cat "$origin_log")"
    check_not_contains "$name: no upstream body bytes reached the client" "$pattern_hex" \
        "$(hex_of "$tmp/$name.body")"
    check "$name: logged" wait_for_grep "$PROXY_ERR" "$log_re" 3
}

bad_cert expired expired.test "$EXPIRED_PORT" "$EXPIRED_PORT_LOG" 'certificate expired' \
    "certificate expired on"
bad_cert mismatch good.test "$OTHER_PORT" "$OTHER_PORT_LOG" 'hostname mismatch' \
    "hostname mismatch" "other\.test"
bad_cert untrusted good.test "$UNTRUSTED_PORT" "$UNTRUSTED_PORT_LOG" 'issuer' "issuer"

# Leaves are stored only for verified origins: a name whose origin failed
# is whatever a client sent, and storing it would grow the database.
stored_certs() {
    python3 - "$PROXY_DATA/tapwire.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=5)
print(" ".join(r[0] for r in db.execute("SELECT names_key FROM certs ORDER BY names_key")))
PY
}
stored=$(stored_certs)
check_match "certificates table: the verified good.test leaf is stored" '(^|[ ,])good\.test([ ,]|$)' "$stored"
check_eq "certificates table: nothing stored for the three failed origins" 1 "$(wc -w <<< "$stored")"
check_not_contains "certificates table: no leaf for expired.test" "expired.test" "$stored"

# ---- DNS failure ----
out=$(pcurl -o "$tmp/dns-http.body" -w '%{http_code}' http://nonexistent.invalid/)
check_eq "DNS failure, plain HTTP: 502" 502 "$out"
check_contains "DNS failure, plain HTTP: body names the host" "nonexistent.invalid" "$(cat -v "$tmp/dns-http.body")"
out=$(pcurl --cacert "$PROXY_CA" -o "$tmp/dns-https.body" -w '%{http_code} %{http_connect}' \
    https://nonexistent.invalid/ 2> /dev/null)
check_eq "DNS failure, HTTPS: 502" 502 "$(status_of "$out")"
if [ "${out% *}" != 000 ]; then
    check_contains "DNS failure, HTTPS: body names the host" "nonexistent.invalid" "$(cat -v "$tmp/dns-https.body")"
fi
check "DNS failure: logged with the host" wait_for_grep "$PROXY_ERR" 'nonexistent\.invalid' 3

# ---- connection refused ----
out=$(pcurl -o "$tmp/refused-http.body" -w '%{http_code}' "http://127.0.0.1:$CLOSED_PORT/conn")
check_eq "refused, plain HTTP: 502" 502 "$out"
check_imatch "refused, plain HTTP: body says refused" 'refused' "$(cat -v "$tmp/refused-http.body")"
out=$(pcurl --cacert "$PROXY_CA" -o /dev/null -w '%{http_code} %{http_connect}' \
    "https://127.0.0.1:$CLOSED_PORT/conn" 2> /dev/null)
check_eq "refused, HTTPS: 502" 502 "$(status_of "$out")"
check "refused: logged" wait_for_grep "$PROXY_ERR" "[Rr]efused" 3

# ---- handshake timeout: 504 within the bound ----
PROXY_DATA_DIR=$tmp/data-timeout start_proxy --upstream-ca "$PKI/ca.pem" --upstream-timeout 500
t0=$(now_ms)
out=$(pcurl --max-time 20 --cacert "$PROXY_CA" --connect-to "good.test:443:127.0.0.1:$HANG_PORT" \
    -o "$tmp/timeout.body" -w '%{http_code} %{http_connect}' https://good.test/conn 2> /dev/null)
elapsed=$(($(now_ms) - t0))
check_eq "upstream handshake hangs: 504" 504 "$(status_of "$out")"
check_le "upstream handshake hangs: answered within 5 s with --upstream-timeout 500 (${elapsed} ms)" \
    "$elapsed" 5000
check_le "upstream handshake hangs: the proxy did wait for the timeout (${elapsed} ms)" 400 "$elapsed"
check "timeout: logged" wait_for_grep "$PROXY_ERR" '[Tt]ime(d)? ?out|504' 3

# ---- --insecure ----
PROXY_DATA_DIR=$tmp/data-insecure start_proxy --insecure
out=$(pcurl --cacert "$PROXY_CA" --connect-to "expired.test:443:127.0.0.1:$EXPIRED_PORT" \
    -o "$tmp/insecure.bin" -w '%{http_code}' https://expired.test/bytes/1000)
check_eq "--insecure: the expired origin's content is served (200)" 200 "$out"
check_eq "--insecure: body intact" "$(pattern_sha 1000)" "$(file_sha "$tmp/insecure.bin")"
check "--insecure: warned about on stderr or stdout" \
    wait_for_grep "$PROXY_ERR" '[Ii]nsecure|INSECURE|not verified' 3 "$PROXY_OUT"

finish
