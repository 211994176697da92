#!/bin/bash
# Plain HTTP through the proxy (absolute-form requests): bodies of every
# framing arrive intact in both directions, hop-by-hop fields are removed,
# keep-alive and pipelining work, and every ambiguous or oversized request is
# refused with 400/414/431 and a close before anything reaches the origin.
. "$(dirname "$0")/lib.sh"

start_origin ORIGIN_PORT
start_proxy
O=http://127.0.0.1:$ORIGIN_PORT
H=127.0.0.1:$ORIGIN_PORT

# ---- bodies ----

code=$(pcurl -o "$tmp/small.bin" -w '%{http_code}' "$O/bytes/100")
check_eq "GET /bytes/100: status 200" 200 "$code"
check_eq "GET /bytes/100: body intact" "$(pattern_sha 100)" "$(file_sha "$tmp/small.bin")"

code=$(pcurl -o "$tmp/big.bin" -w '%{http_code}' "$O/bytes/$BIG")
check_eq "GET 16 MiB: status 200" 200 "$code"
check_eq "GET 16 MiB: body intact" "$(pattern_sha $BIG)" "$(file_sha "$tmp/big.bin")"

head -c $BIG /dev/urandom > "$tmp/upload.bin"
want=$(file_sha "$tmp/upload.bin")
got=$(pcurl -D "$tmp/post.head" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$tmp/upload.bin" "$O/sha256")
check_eq "POST 16 MiB (Content-Length): origin got every byte" "$want" "$got"
check_imatch "POST 16 MiB: origin counted 16 MiB" "^X-Body-Length: $BIG\$" \
    "$(tr -d '\r' < "$tmp/post.head")"

got=$(pcurl -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/upload.bin" "$O/sha256")
check_eq "POST 16 MiB chunked upload: origin got every byte" "$want" "$got"

code=$(pcurl -D "$tmp/chunked.head" -o "$tmp/chunked.bin" -w '%{http_code}' \
    "$O/bytes/1000000?chunked=1")
check_eq "chunked download: status 200" 200 "$code"
check_eq "chunked download: body intact" "$(pattern_sha 1000000)" "$(file_sha "$tmp/chunked.bin")"
check_imatch "chunked download: trailer X-Trailer forwarded" '^X-Trailer: done$' \
    "$(tr -d '\r' < "$tmp/chunked.head")"

code=$(pcurl -o "$tmp/close.bin" -w '%{http_code}' "$O/bytes/100000?close=1")
check_eq "until-close response: status 200" 200 "$code"
check_eq "until-close response: body intact" "$(pattern_sha 100000)" "$(file_sha "$tmp/close.bin")"

head -c 100000 /dev/urandom > "$tmp/echo.bin"
code=$(pcurl -o "$tmp/echo.out" -D "$tmp/echo.head" -w '%{http_code}' \
    -H 'Content-Type: application/x-tapwire-test' --data-binary @"$tmp/echo.bin" "$O/echo")
check_eq "POST /echo: status 200" 200 "$code"
check "POST /echo: body echoed intact" cmp "$tmp/echo.bin" "$tmp/echo.out"
check_imatch "POST /echo: Content-Type passes both ways" '^Content-Type: application/x-tapwire-test$' \
    "$(tr -d '\r' < "$tmp/echo.head")"

# ---- responses without a body ----

# curl reuses the connection for the second HEAD: a stray body after the first
# would corrupt the second response.
out=$(pcurl -I -w 'W=%{http_code}:%{num_connects};' "$O/bytes/100" "$O/bytes/100")
check_eq "HEAD twice on one connection: both 200, one connect" "W=200:1;W=200:0;" \
    "$(printf '%s' "$out" | grep -ao 'W=[0-9]*:[0-9]*;' | tr -d '\n')"
check_imatch "HEAD /bytes/100: Content-Length 100" '^Content-Length: 100$' "$(printf '%s' "$out" | tr -d '\r')"
printf 'HEAD %s/bytes/100 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$O" "$H" > "$tmp/head.req"
raw_send "$PROXY_PORT" "$tmp/head.req" "$tmp/head.resp"
check_eq "HEAD raw: proxy closed after Connection: close" 0 $?
check_eq "HEAD raw: response ends at the head (no body bytes)" '\r\n\r\n' \
    "$(tail -c 4 "$tmp/head.resp" | od -An -c | tr -d ' \n')"
check_imatch "HEAD raw: Content-Length 100 kept" '^Content-Length: 100$' "$(tr -d '\r' < "$tmp/head.resp")"

for s in 204 304; do
    out=$(pcurl -o "$tmp/s$s" -o "$tmp/s$s.conn" -w '%{http_code}:%{size_download}:%{num_connects} ' \
        "$O/status/$s" "$O/conn")
    check_eq "/status/$s: no body, connection reused for the next request" \
        "$s:0:1 200:$(wc -c < "$tmp/s$s.conn" | tr -d ' '):0 " "$out"
    check_match "/status/$s: next response on that connection is intact" '^conn=[0-9]+ req=2$' \
        "$(cat "$tmp/s$s.conn")"
done

# ---- Expect: 100-continue ----
# curl waits --expect100-timeout for the 100 before sending the body anyway; a
# proxy that neither forwards the expectation nor answers it costs 10 s here.
head -c 200000 /dev/urandom > "$tmp/expect.bin"
t0=$(now_ms)
got=$(pcurl -D "$tmp/expect.head" -H 'Expect: 100-continue' --expect100-timeout 10 \
    --data-binary @"$tmp/expect.bin" "$O/sha256")
elapsed=$(($(now_ms) - t0))
check_eq "Expect: 100-continue: origin got the body" "$(file_sha "$tmp/expect.bin")" "$got"
check_le "Expect: 100-continue: body sent without waiting out curl's 10 s (${elapsed} ms)" \
    "$elapsed" 5000
check_match "Expect: 100-continue: client saw 100 Continue" '^HTTP/1\.1 100' \
    "$(tr -d '\r' < "$tmp/expect.head")"

# ---- keep-alive ----
out=$(pcurl -o "$tmp/c1" -o "$tmp/c2" -w '%{num_connects} ' "$O/conn" "$O/conn")
c1=$(cat "$tmp/c1")
c2=$(cat "$tmp/c2")
check_match "keep-alive: first request is req=1" '^conn=[0-9]+ req=1$' "$c1"
check_eq "keep-alive: second request on the same upstream connection" "${c1% req=1} req=2" "$c2"
check_eq "keep-alive: curl opened one connection to the proxy" "1 0 " "$out"

# ---- the head the origin receives ----
pcurl -o "$tmp/headers.txt" -H 'Connection: X-Secret' -H 'X-Secret: 1' \
    -H 'Keep-Alive: timeout=5' -H 'Proxy-Connection: keep-alive' -H 'X-End-To-End: kept' \
    "$O/headers?q=1&r=2"
head_seen=$(tr -d '\r' < "$tmp/headers.txt")
check_eq "origin-form target with query forwarded" "GET /headers?q=1&r=2 HTTP/1.1" \
    "$(printf '%s\n' "$head_seen" | head -n 1)"
check_imatch "Host names the origin" "^Host: 127\.0\.0\.1:$ORIGIN_PORT\$" "$head_seen"
check_imatch "Via added" '^Via: .+' "$head_seen"
check_no_imatch "Proxy-Connection removed" '^Proxy-Connection:' "$head_seen"
check_no_imatch "Keep-Alive removed" '^Keep-Alive:' "$head_seen"
check_no_imatch "field named in Connection (X-Secret) removed" '^X-Secret:' "$head_seen"
check_imatch "end-to-end field kept" '^X-End-To-End: kept$' "$head_seen"

# ---- pipelining: two requests in one write, two responses in order ----
printf 'GET %s/conn HTTP/1.1\r\nHost: %s\r\n\r\nGET %s/status/202 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' \
    "$O" "$H" "$O" "$H" > "$tmp/pipe.req"
raw_send "$PROXY_PORT" "$tmp/pipe.req" "$tmp/pipe.resp"
check_eq "pipelining: proxy closed after the second (Connection: close)" 0 $?
check_eq "pipelining: two responses in order" "200 202" \
    "$(grep -aoE 'HTTP/1\.[01] [0-9]{3} ' "$tmp/pipe.resp" | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
check_match "pipelining: first body is /conn" 'conn=[0-9]+ req=[0-9]+' "$(cat -v "$tmp/pipe.resp")"

# ---- request smuggling and malformed framing: 400, close, origin never sees ----
# Every target carries "smuggle" so the origin's request log can prove it.
smuggle() {
    local name=$1 req=$2 rc
    printf '%b' "$req" > "$tmp/smuggle.req"
    raw_send "$PROXY_PORT" "$tmp/smuggle.req" "$tmp/smuggle.resp"
    rc=$?
    check_match "$name: 400" '^HTTP/1\.[01] 400' "$(status_line "$tmp/smuggle.resp")"
    check_eq "$name: connection closed" 0 "$rc"
}
inner="GET /conn?smuggled HTTP/1.1\r\nHost: $H\r\n\r\n"
smuggle "Content-Length with Transfer-Encoding" \
    "POST $O/sha256?smuggle=cl-te HTTP/1.1\r\nHost: $H\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n$inner"
smuggle "two different Content-Length" \
    "POST $O/sha256?smuggle=cl-cl HTTP/1.1\r\nHost: $H\r\nContent-Length: 5\r\nContent-Length: 45\r\n\r\nhello$inner"
smuggle "Transfer-Encoding not ending in chunked" \
    "POST $O/sha256?smuggle=te-last HTTP/1.1\r\nHost: $H\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n$inner"
smuggle "obs-fold" \
    "GET $O/conn?smuggle=fold HTTP/1.1\r\nHost: $H\r\nX-Folded: a\r\n b\r\n\r\n"
smuggle "whitespace before colon" \
    "POST $O/sha256?smuggle=ws HTTP/1.1\r\nHost: $H\r\nContent-Length : 5\r\n\r\nhello$inner"

long=$(head -c 9000 /dev/zero | tr '\0' a)
printf 'GET %s/conn?toolong=%s HTTP/1.1\r\nHost: %s\r\n\r\n' "$O" "$long" "$H" > "$tmp/long.req"
raw_send "$PROXY_PORT" "$tmp/long.req" "$tmp/long.resp"
rc=$?
check_match "request line over 8 KiB: 414" '^HTTP/1\.[01] 414' "$(status_line "$tmp/long.resp")"
check_eq "request line over 8 KiB: connection closed" 0 "$rc"

{
    printf 'GET %s/conn?toomany HTTP/1.1\r\nHost: %s\r\n' "$O" "$H"
    for i in $(seq 1 200); do printf 'X-Field-%d: %d\r\n' "$i" "$i"; done
    printf '\r\n'
} > "$tmp/many.req"
raw_send "$PROXY_PORT" "$tmp/many.req" "$tmp/many.resp"
rc=$?
check_match "200 header fields: 431" '^HTTP/1\.[01] 431' "$(status_line "$tmp/many.resp")"
check_eq "200 header fields: connection closed" 0 "$rc"

check_no_match "no refused request reached the origin" 'smuggle|toolong|toomany' "$(cat "$ORIGIN_PORT_LOG")"

# ---- a request for the proxy itself ----
printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$PROXY_PORT" > "$tmp/self.req"
raw_send "$PROXY_PORT" "$tmp/self.req" "$tmp/self.resp"
check_match "origin-form request to the proxy: 4xx" '^HTTP/1\.[01] 4[0-9][0-9]' "$(status_line "$tmp/self.resp")"
printf 'GET http://127.0.0.1:%s/loop HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
    "$PROXY_PORT" "$PROXY_PORT" > "$tmp/loop.req"
raw_send "$PROXY_PORT" "$tmp/loop.req" "$tmp/loop.resp" 10
check_eq "absolute-form request to the proxy's own address: answered and closed" 0 $?
check_match "absolute-form request to the proxy's own address: refused, not looped" \
    '^HTTP/1\.[01] [45][0-9][0-9]' "$(status_line "$tmp/loop.resp")"
check "proxy still serves after all of the above" proxy_serves "$ORIGIN_PORT"

# ---- the log and shutdown ----
check "proxy logged the exchanges (a line naming /bytes/100)" wait_for_grep "$PROXY_ERR" '/bytes/100' 3
t0=$(now_ms)
stop_proxy
rc=$?
check_eq "SIGTERM: proxy exits with status 0" 0 "$rc"
check_le "SIGTERM: proxy exits within 6 s" "$(($(now_ms) - t0))" 6000

finish
