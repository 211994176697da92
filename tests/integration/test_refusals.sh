#!/bin/bash
# tapwire's own refusals as RFC 9112 asks: a request whose final transfer
# coding is not chunked gets 400 and a close (6.3, a MUST), not 501; a
# refusal sent before the request was read in full (a 200 KB header section
# answered 431, an oversized chunk answered 400) is readable by the client
# because the proxy half-closes and drains before it closes (9.6), instead of
# a reset that can destroy the answer; a request to the proxy itself is
# "508 Loop Detected", and one to the dashboard's address says so.
. "$(dirname "$0")/lib.sh"

need_cmd python3

start_origin ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0
dash_port=$(grep -aEo -m 1 '^dashboard: http://127\.0\.0\.1:[0-9]+' "$PROXY_OUT" | grep -Eo '[0-9]+$')
O=http://127.0.0.1:$ORIGIN_PORT

# ---- Transfer-Encoding whose final coding is not chunked ----
for te in 'chunked, identity' 'identity' 'chunked, xfoo'; do
    printf 'POST %s/echo HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nTransfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n' \
        "$O" "$ORIGIN_PORT" "$te" > "$tmp/te.req"
    raw_send "$PROXY_PORT" "$tmp/te.req" "$tmp/te.resp" 10
    check_eq "TE '$te': the proxy closes the connection" 0 $?
    check_match "TE '$te': 400, not 501" '^HTTP/1\.1 400 Bad Request$' "$(status_line "$tmp/te.resp")"
done
check_eq "TE refusals: nothing reached the origin" 0 "$(grep -c 'req=' "$ORIGIN_PORT_LOG")"

# ---- refusals before the request was read in full ----

# big_refusal NAME REQUEST_FILE: sends the whole file as a client would (all
# of it, then read), and prints the status line it read, or the error.
big_refusal() {
    python3 - "$PROXY_PORT" "$2" << 'EOF'
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
data = open(path, "rb").read()
s = socket.create_connection(("127.0.0.1", port), timeout=10)
try:
    s.sendall(data)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print(got.split(b"\r\n", 1)[0].decode("latin-1"))
except OSError as e:
    print("error: %s" % e)
EOF
}

for i in 1 2 3; do
    {
        printf 'GET %s/bytes/1 HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n' "$O" "$ORIGIN_PORT"
        python3 -c 'import sys; sys.stdout.write("X-Big: " + "a" * 200000 + "\r\n\r\n")'
    } > "$tmp/big-head.req"
    check_eq "200 KB header section (try $i): the client reads the 431" \
        'HTTP/1.1 431 Request Header Fields Too Large' "$(big_refusal big-head "$tmp/big-head.req")"
done

{
    printf 'POST %s/echo HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nTransfer-Encoding: chunked\r\n\r\n' \
        "$O" "$ORIGIN_PORT"
    printf 'zz\r\n'
    python3 -c 'import sys; sys.stdout.write("b" * 300000)'
} > "$tmp/bad-chunk.req"
status=$(big_refusal bad-chunk "$tmp/bad-chunk.req")
check_match "a bad chunk followed by 300 KB: the client reads an answer, not a reset" \
    '^HTTP/1\.1 (400|502) ' "$status"
check "after the refusals the proxy still serves" proxy_serves "$ORIGIN_PORT"

# ---- a loop ----
printf 'GET http://127.0.0.1:%s/ HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n' "$PROXY_PORT" \
    "$PROXY_PORT" > "$tmp/loop.req"
raw_send "$PROXY_PORT" "$tmp/loop.req" "$tmp/loop.resp" 10
check_match "a request to the proxy itself: 508 Loop Detected" '^HTTP/1\.1 508 Loop Detected$' \
    "$(status_line "$tmp/loop.resp")"

printf 'GET http://127.0.0.1:%s/ HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n' "$dash_port" \
    "$dash_port" > "$tmp/dash.req"
raw_send "$PROXY_PORT" "$tmp/dash.req" "$tmp/dash.resp" 10
check_match "a request to the dashboard through the proxy: 508" '^HTTP/1\.1 508 ' \
    "$(status_line "$tmp/dash.resp")"
check_contains "that refusal says it is the dashboard" "dashboard" "$(cat "$tmp/dash.resp")"
check_not_contains "and not that it is the proxy itself" "proxy itself" "$(cat "$tmp/dash.resp")"

finish
