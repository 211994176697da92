#!/bin/bash
# --transparent: inside a network namespace of its own (loopback only), the
# test redirects a client's connections to the test origins with iptables
# (nat OUTPUT REDIRECT, an owner match keeping tapwire's own connections
# out, as tapwire(1) shows) to a transparent listener. curl, which knows
# nothing of a proxy and trusts only the tapwire CA, gets intercepted HTTPS
# (the SNI names the site; IPv6 with ip6tables too) and plain HTTP (the Via
# field shows tapwire passed it on), and the exchanges are flows. Redirect
# loops are refused with a log line: a client connecting to the transparent
# port directly, a rule sending connections for tapwire's own proxy port to
# it, and a rule without the owner match that sends tapwire's own
# connections back to it.
#
# Runs itself again inside `unshare -n`; skipped when the kernel or the
# machine forbids a network namespace, or iptables is missing.

if [ "${TAPWIRE_TEST_NETNS:-}" != 1 ]; then
    for c in unshare iptables ip setpriv; do
        if ! command -v "$c" > /dev/null 2>&1; then
            printf 'SKIP: %s is not installed (deps/debian-packages.txt)\n' "$c"
            exit 77
        fi
    done
    if ! unshare -n sh -c 'ip link set lo up && iptables -t nat -L OUTPUT -n' > /dev/null 2>&1; then
        printf 'SKIP: cannot create a network namespace with a nat table here (needs root or CAP_SYS_ADMIN and CAP_NET_ADMIN, and a kernel that allows it)\n'
        exit 77
    fi
    TAPWIRE_TEST_NETNS=1 exec unshare -n bash "$0" "$@"
fi

. "$(dirname "$0")/lib.sh"

need_cmd python3 sqlite3

# tapwire runs with this group: the owner match tells its connections apart.
TAPWIRE_GID=4242
TOKEN=transparent-test-token-0123456789

ip link set lo up || bail "cannot bring up lo in the namespace"

make_pki
make_localhost_leaf

start_origin PLAIN_PORT
start_origin TLS_PORT --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem"
start_origin LOOP_PORT

# tapwire under its own group, as the man page runs it under its own user.
cat > "$tmp/tapwire-as-group" << EOF2
#!/bin/sh
exec setpriv --regid $TAPWIRE_GID --clear-groups "$TAPWIRE_BIN" "\$@"
EOF2
chmod +x "$tmp/tapwire-as-group"
REAL_TAPWIRE_BIN=$TAPWIRE_BIN
TAPWIRE_BIN=$tmp/tapwire-as-group
start_proxy --transparent 127.0.0.1:0 --transparent '[::1]:0' --upstream-ca "$PKI/ca.pem" \
    --dashboard-token "$TOKEN"
TAPWIRE_BIN=$REAL_TAPWIRE_BIN
dashboard_port

# transparent_port ERE VAR: VAR from a "transparent proxy listening on" line.
transparent_port() {
    local i line=""
    for ((i = 0; i < 200; i++)); do
        line=$(grep -aEo -m 1 "^transparent proxy listening on $1:[0-9]+" "$PROXY_OUT")
        [ -n "$line" ] && break
        sleep 0.05
    done
    [ -n "$line" ] || bail "no 'transparent proxy listening on $1:PORT' line: $(head -c 800 "$PROXY_OUT")"
    printf -v "$2" '%s' "${line##*:}"
}
transparent_port '127\.0\.0\.1' TP4
transparent_port '\[::1\]' TP6

# What tapwire(1) shows for a local machine, for the test origins' ports:
# everyone's connections but tapwire's own go to the transparent listener.
iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 -m multiport --dports "$PLAIN_PORT,$TLS_PORT" \
    -m owner ! --gid-owner "$TAPWIRE_GID" -j REDIRECT --to-ports "$TP4" ||
    bail "iptables REDIRECT rule refused"

# curl knowing nothing of a proxy, trusting the tapwire CA alone.
tcurl() { curl -q -sS --max-time "$CURL_MAX_TIME" --noproxy '*' --cacert "$PROXY_CA" "$@"; }

# ---- HTTPS: intercepted, the SNI names the site ----
out=$(tcurl --resolve "localhost:$TLS_PORT:127.0.0.1" -o "$tmp/tls.body" \
    -w '%{http_code} %{ssl_verify_result}' "https://localhost:$TLS_PORT/conn")
check_eq "HTTPS redirected: 200, the leaf verified against the tapwire CA alone (intercepted)" \
    "200 0" "$out"
check_match "HTTPS redirected: the body is the origin's" '^conn=' "$(cat "$tmp/tls.body")"
check "HTTPS redirected: tapwire logged the exchange with the site's name" \
    wait_for_grep "$PROXY_ERR" "GET https://localhost:$TLS_PORT/conn 200" 5

# ---- plain HTTP: the Host field names the site ----
body=$(tcurl -H "Host: plain.test:$PLAIN_PORT" "http://127.0.0.1:$PLAIN_PORT/headers")
check_match "plain HTTP redirected: the origin saw tapwire's Via" '^Via: .*tapwire' "$body"
check_match "plain HTTP redirected: Host as the client sent it" "^Host: plain\.test:$PLAIN_PORT" "$body"
check "plain HTTP redirected: logged under the Host's name" \
    wait_for_grep "$PROXY_ERR" "GET http://plain\.test:$PLAIN_PORT/headers 200" 5

# ---- IPv6 ----
if python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2> /dev/null &&
    command -v ip6tables > /dev/null 2>&1 && ip6tables -t nat -L OUTPUT -n > /dev/null 2>&1; then
    "$TEST_ORIGIN_BIN" --listen '[::1]:0' --port-file "$tmp/v6.port" \
        --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem" > "$tmp/v6.log" 2>&1 &
    track_pid $!
    wait_port_file V6_PORT "$tmp/v6.port" "the IPv6 origin" "$tmp/v6.log"
    ip6tables -t nat -A OUTPUT -p tcp -d ::1 --dport "$V6_PORT" \
        -m owner ! --gid-owner "$TAPWIRE_GID" -j REDIRECT --to-ports "$TP6" ||
        bail "ip6tables REDIRECT rule refused"
    out=$(tcurl --resolve "localhost:$V6_PORT:[::1]" -o "$tmp/v6.body" \
        -w '%{http_code} %{ssl_verify_result}' "https://localhost:$V6_PORT/conn")
    check_eq "HTTPS redirected over IPv6 (IP6T_SO_ORIGINAL_DST): 200, intercepted" "200 0" "$out"
    check "the IPv6 origin was reached" wait_for_grep "$tmp/v6.log" 'origin: conn=.* GET /conn' 5
else
    note "no IPv6 loopback or ip6tables nat here: IPv6 is not checked"
fi

# ---- redirect loops ----
code=$(dcurl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TP4/conn" 2> /dev/null)
check_eq "a client connecting to the transparent port directly gets no answer" 000 "$code"
check "... and the refusal is logged" wait_for_grep "$PROXY_ERR" \
    "(redirect loop refused: the original destination 127\.0\.0\.1:$TP4 is one of tapwire's own listeners|transparent listener: no original destination)" 5

iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport "$PROXY_PORT" \
    -m owner ! --gid-owner "$TAPWIRE_GID" -j REDIRECT --to-ports "$TP4" ||
    bail "iptables REDIRECT rule refused"
code=$(dcurl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/" 2> /dev/null)
check_eq "a connection to tapwire's own proxy port redirected to it: no answer" 000 "$code"
check "... and the redirect loop is logged" wait_for_grep "$PROXY_ERR" \
    "redirect loop refused: the original destination 127\.0\.0\.1:$PROXY_PORT is one of tapwire's own listeners" 5

# A rule without the owner match: tapwire's own connection to the origin
# comes back to it. It must be refused once, not loop to the connection cap.
iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport "$LOOP_PORT" -j REDIRECT --to-ports "$TP4" ||
    bail "iptables REDIRECT rule refused"
code=$(tcurl -o "$tmp/loop.body" -w '%{http_code}' "http://127.0.0.1:$LOOP_PORT/conn")
check_eq "a rule that also redirects tapwire's own traffic: the client gets a 502" 502 "$code"
check "... and tapwire logs its own connection sent back" wait_for_grep "$PROXY_ERR" \
    "redirect loop refused: this is tapwire's own connection to 127\.0\.0\.1:$LOOP_PORT" 5
check_le "... once, not a connection per loop" \
    "$(grep -c "this is tapwire's own connection" "$PROXY_ERR")" 2
check "still serving after all that" tcurl -o /dev/null --resolve "localhost:$TLS_PORT:127.0.0.1" \
    "https://localhost:$TLS_PORT/conn"

# ---- flows ----
check "the transparent exchanges are flows" wait_written 3
check_eq "the HTTPS flows name the site from the SNI and the origin's verification" 2 \
    "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" "select count(*) from flows
        where scheme = 'https' and host = 'localhost' and port = $TLS_PORT and status = 200
        and tls_verification = 'ok' and target = '/conn'" | head -n 1)"
stop_proxy

finish
