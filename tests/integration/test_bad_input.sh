#!/bin/bash
# Hostile or broken peers on one connection never hurt the others: garbage,
# a truncated ClientHello, a client vanishing mid-upload and an upstream
# vanishing mid-response leave the proxy alive while a 16 MiB download that
# started before them completes intact. A slowloris client is cut off by the
# header timeout, and connections beyond --max-connections get 503.
. "$(dirname "$0")/lib.sh"

make_pki
start_origin ORIGIN_PORT
start_origin TLS_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"
start_proxy --upstream-ca "$PKI/ca.pem" --header-timeout 1000
O=http://127.0.0.1:$ORIGIN_PORT

# Rate-limited so that it spans everything below (16 MiB at 2 MiB/s: ~8 s).
pcurl --limit-rate 2M -o "$tmp/concurrent.bin" -w '%{http_code}' "$O/bytes/$BIG" \
    > "$tmp/concurrent.code" 2> "$tmp/concurrent.err" &
concurrent_pid=$!
track_pid "$concurrent_pid"
sleep 0.3

# ---- garbage ----
head -c 4096 /dev/urandom > "$tmp/garbage"
{ printf '\026\003\001\002\000'; head -c 4091 /dev/urandom; } > "$tmp/garbage-tls"
for g in garbage garbage-tls; do
    raw_send "$PROXY_PORT" "$tmp/$g" "$tmp/$g.resp" 5
    check_eq "$g: proxy closed the connection" 0 $?
    resp=$(status_line "$tmp/$g.resp")
    if [ -n "$resp" ]; then
        check_match "$g: answered 400 if at all" '^HTTP/1\.[01] 400' "$resp"
    fi
    check "$g: proxy still serves" proxy_serves "$ORIGIN_PORT"
done

# ---- a truncated ClientHello inside a tunnel ----
# The first 50 bytes of a ClientHello that announces 256: record header,
# handshake header, version, random, and part of a session id.
{
    printf '\026\003\001\001\000\001\000\000\374\003\003'
    head -c 32 /dev/urandom
    printf '\040'
    head -c 6 /dev/urandom
} > "$tmp/hello50"
out=$(timeout 10 bash -c 'exec 3<> "/dev/tcp/127.0.0.1/$1" || exit 3
    printf "CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n" "$2" "$2" >&3
    IFS= read -r status <&3 || exit 4
    printf "%s\n" "$status"
    cr=$(printf "\r")
    while IFS= read -r line <&3 && [ "$line" != "$cr" ]; do :; done
    cat "$3" >&3
    exec 3>&-' _ "$PROXY_PORT" "$TLS_PORT" "$tmp/hello50")
check_match "truncated ClientHello: CONNECT answered 200 first" '^HTTP/1\.[01] 200' "$(printf '%s' "$out" | tr -d '\r')"
check "truncated ClientHello: proxy still serves" proxy_serves "$ORIGIN_PORT"

# ---- a ClientHello above TLSSERVER_MAX_HELLO_BYTES (16 KiB) ----
# Well-formed headers announcing a 20000-byte hello: logged as too large,
# not as malformed.
{
    printf '\026\003\001\100\000\001\000\116\040\003\003'
    head -c 32 /dev/urandom
} > "$tmp/hello-big"
timeout 10 bash -c 'exec 3<> "/dev/tcp/127.0.0.1/$1" || exit 3
    printf "CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n" "$2" "$2" >&3
    IFS= read -r status <&3 || exit 4
    cr=$(printf "\r")
    while IFS= read -r line <&3 && [ "$line" != "$cr" ]; do :; done
    cat "$3" >&3
    cat <&3 > /dev/null
    exec 3>&-' _ "$PROXY_PORT" "$TLS_PORT" "$tmp/hello-big"
check "ClientHello over 16 KiB: logged as too large" \
    wait_for_grep "$PROXY_ERR" 'TLS ClientHello larger than 16384 bytes; closing' 5
check_no_match "ClientHello over 16 KiB: not logged as malformed" 'malformed TLS ClientHello' \
    "$(cat "$PROXY_ERR")"

# ---- the client vanishes mid-upload ----
head -c $BIG /dev/urandom > "$tmp/upload.bin"
timeout 2 curl -q -s --max-time 30 --noproxy '' -x "http://127.0.0.1:$PROXY_PORT" \
    --limit-rate 1M --data-binary @"$tmp/upload.bin" "$O/sha256" > /dev/null 2>&1
check_eq "client vanishing mid-body: curl was killed mid-upload" 124 $?
check "client vanishing mid-body: proxy still serves" proxy_serves "$ORIGIN_PORT"
# Either the proxy never sent the request on, or it dropped it when the
# client went: the origin must not be left waiting for a body.
upstream_released() {
    grep -q 'POST /sha256' "$ORIGIN_PORT_LOG" || return 0
    wait_for_grep "$ORIGIN_PORT_LOG" 'truncated request body' 10
}
check "client vanishing mid-body: the upstream request was dropped too" upstream_released

# ---- the upstream vanishes mid-response ----
# The failure is a truncated body that looks complete (exit 0, status 200).
# A streaming proxy that already sent the head must cut the client off (a
# short read); one that had sent nothing may answer 502/504 or close.
# upstream_abort NAME CURL_ARGS...
upstream_abort() {
    local name=$1 out rc code size
    shift
    out=$(pcurl -o "$tmp/abort.bin" -w '%{http_code} %{size_download}' "$@" 2> /dev/null)
    rc=$?
    code=${out% *}
    size=${out#* }
    if [ "$code" = 502 ] || [ "$code" = 504 ]; then
        pass "$name: client gets a gateway error ($code)"
    else
        check "$name: client sees an error, not a clean end (curl exit $rc, status $code)" \
            test "$rc" -ne 0
        check_le "$name: client got at most what the origin sent" "${size:-0}" 1000
    fi
}
upstream_abort "upstream vanishing mid-response" "$O/abort"
upstream_abort "upstream vanishing mid-response over TLS" --cacert "$PROXY_CA" \
    --connect-to "good.test:443:127.0.0.1:$TLS_PORT" https://good.test/abort
check "upstream vanishing: proxy still serves" proxy_serves "$ORIGIN_PORT"

# ---- slowloris: a byte every 0.4 s, cut off by --header-timeout 1000 ----
# A gap of 0.4 s never trips a per-read idle timeout; only a deadline on the
# whole head does. Prints "closed MS" (peer closed, MS after connecting) or
# "open MS".
out=$(timeout 20 bash -c 'trap "" PIPE
    exec 3<> "/dev/tcp/127.0.0.1/$1" || { echo connect-failed; exit; }
    start=$(date +%s%N)
    ms() { echo $((($(date +%s%N) - start) / 1000000)); }
    req=$(printf "GET http://127.0.0.1:%s/conn?slowloris HTTP/1.1\r\nHost: x\r\n\r\n" "$2")
    for ((i = 0; i < 25; i++)); do
        printf "%s" "${req:i:1}" >&3 2> /dev/null || { echo "closed $(ms)"; exit; }
        # Anything back (a 408, then EOF) or EOF alone ends it.
        while true; do
            read -r -t 0.4 -N 1 ch <&3
            rc=$?
            [ $rc -gt 128 ] && break                        # quiet: next byte
            [ $rc -ne 0 ] && { echo "closed $(ms)"; exit; } # EOF or reset
        done
    done
    echo "open $(ms)"' _ "$PROXY_PORT" "$ORIGIN_PORT")
check_match "slowloris: proxy closed the connection" '^closed [0-9]+$' "$out"
ms=${out#* }
check_le "slowloris: closed within 5 s (${ms} ms)" "${ms:-99999}" 5000
check_le "slowloris: not before the 1 s header timeout (${ms} ms)" 800 "${ms:-0}"
check_no_match "slowloris: nothing reached the origin" 'slowloris' "$(cat "$ORIGIN_PORT_LOG")"

# ---- the download that ran through all of it ----
wait_pid "$concurrent_pid" 40
rc=$?
check_eq "concurrent 16 MiB download: curl finished cleanly" 0 "$rc"
check_eq "concurrent 16 MiB download: status 200" 200 "$(cat "$tmp/concurrent.code")"
check_eq "concurrent 16 MiB download: body intact" "$(pattern_sha $BIG)" "$(file_sha "$tmp/concurrent.bin")"

t0=$(now_ms)
stop_proxy
rc=$?
check_eq "after the abuse, SIGTERM: exit status 0" 0 "$rc"
check_le "after the abuse, SIGTERM: exits within 6 s" "$(($(now_ms) - t0))" 6000

# ---- --max-connections 4: the fifth gets 503 ----
PROXY_DATA_DIR=$tmp/data-max start_proxy --max-connections 4
fds=()
for i in 1 2 3 4; do
    exec {fd}<> "/dev/tcp/127.0.0.1/$PROXY_PORT" || bail "cannot open idle connection $i"
    fds+=("$fd")
done
sleep 0.5 # let the proxy accept and count all four
out=$(pcurl --max-time 10 -o "$tmp/fifth.body" -w '%{http_code}' "$O/conn" 2> /dev/null)
check_eq "fifth connection beyond --max-connections 4: 503" 503 "$out"
for fd in "${fds[@]}"; do
    exec {fd}>&-
done
served=no
for i in $(seq 1 50); do
    if [ "$(pcurl --max-time 5 -o /dev/null -w '%{http_code}' "$O/conn" 2> /dev/null)" = 200 ]; then
        served=yes
        break
    fi
    sleep 0.1
done
check_eq "after the four close, a new connection is served again" yes "$served"
stop_proxy

# ---- a client that stops reading: the log says it timed out ----
# It went quiet; it did not go away, and the log must not say it did.
PROXY_DATA_DIR=$tmp/data-io start_proxy --io-timeout 500
python3 - "$PROXY_PORT" "$ORIGIN_PORT" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(b"GET http://127.0.0.1:%s/bytes/50000000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
          % sys.argv[2].encode())
time.sleep(3)  # never reads
s.close()
PY
check "client not reading: logged as stopped reading (--io-timeout)" \
    wait_for_grep "$PROXY_ERR" 'client stopped reading the response \(--io-timeout\)' 5
check_no_match "client not reading: not logged as gone" 'client went away' "$(cat "$PROXY_ERR")"
stop_proxy

finish
