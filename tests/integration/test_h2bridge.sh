#!/bin/bash
# An HTTP/2 client in front of an HTTP/1.1-only origin: tapwire translates
# each stream (h2bridge). A TLS --reverse listener gives h2 to a client that
# offers it whatever the origin speaks (a plain http:// origin, an https one
# without ALPN), and a CONNECT client that offers only h2 gets it from an
# HTTP/1.1 origin. Checked: the client saw HTTP/2 and the origin HTTP/1.1
# with the right Host and no connection-specific fields; POST bodies with
# and without content-length (sent as Content-Length, or chunked); a
# chunked response with its trailer; concurrent streams over a small pool
# of kept-alive connections, a slow answer stalling no other stream, nor an
# origin slow to take a new connection (its TLS handshake); body
# rules; --reverse-forwarded; intercept of a translated response (resumed,
# dropped); the flows (HTTP/2 to the client, HTTP/1.1 from the origin); and
# smuggling attempts (a content-length that disagrees with DATA, CR LF or
# surrounding whitespace in a value, TE: gzip) refused with RST_STREAM, the
# smuggled request never reaching the origin.
. "$(dirname "$0")/lib.sh"

need_cmd nghttp sqlite3 python3
PY=/usr/bin/python3
PEER=$LIB_DIR/h2_bridge_peer.py
TOKEN=h2bridge-test-token-0123456789abcdef

make_pki
make_localhost_leaf
start_origin PLAIN_PORT
start_origin TLS_PORT --tls "$tmp/localhost.pem" "$tmp/localhost-key.pem"

# Two origins of one script (the accept loop shared):
# raw: keeps each request's bytes as they arrived ($tmp/raw-N.req) and
#   answers 200 "ok": what framing the origin got.
# slow: TLS, and takes 3 s over the handshake of every connection but its
#   first (HTTP/1.1, no ALPN, keep-alive): /drip sends 30 bytes in three
#   pieces 0.4 s apart, anything else "ok".
cat > "$tmp/origins.py" << 'EOF_PY'
import socket, ssl, sys, threading, time
mode, prefix = sys.argv[1], sys.argv[2]
def raw(conn, k):
    conn.settimeout(0.5)
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    open("%s-%d.req" % (prefix, k), "wb").write(data)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    conn.close()
def slow(conn, k):
    if k > 1:
        time.sleep(3)
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
        tls.settimeout(10)
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            if b" /drip " in head.split(b"\r\n")[0]:
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")
                for _ in range(3):
                    time.sleep(0.4)
                    tls.sendall(b"0123456789")
            else:
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except (OSError, ssl.SSLError):
        return
if mode == "slow":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
open(prefix + ".port", "w").write(str(srv.getsockname()[1]))
srv.settimeout(60)
n = 0
while True:
    c, _ = srv.accept()
    n += 1
    threading.Thread(target=raw if mode == "raw" else slow, args=(c, n), daemon=True).start()
EOF_PY
"$PY" "$tmp/origins.py" raw "$tmp/raw" 2> "$tmp/raw.err" &
track_pid $!
wait_port_file RAW_PORT "$tmp/raw.port" "the raw origin" "$tmp/raw.err"
"$PY" "$tmp/origins.py" slow "$tmp/slow" "$tmp/localhost.pem" "$tmp/localhost-key.pem" \
    2> "$tmp/slow.err" &
track_pid $!
wait_port_file SLOW_PORT "$tmp/slow.port" "the slow origin" "$tmp/slow.err"

start_proxy --upstream-ca "$PKI/ca.pem" --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" \
    --reverse "https://127.0.0.1:0=http://127.0.0.1:$PLAIN_PORT" \
    --reverse "https://127.0.0.1:0=https://localhost:$TLS_PORT" \
    --reverse "https://127.0.0.1:0=http://127.0.0.1:$RAW_PORT" \
    --reverse "https://127.0.0.1:0=https://localhost:$SLOW_PORT" \
    --rule 'response body "bridge-marker" "BRIDGED"' --rule 'request body "rule-in" "RULE-OUT"'
dashboard_port
lines=
for ((i = 0; i < 200; i++)); do
    lines=$(grep -aEo '^reverse proxy listening on https://127\.0\.0\.1:[0-9]+' "$PROXY_OUT")
    [ "$(printf '%s\n' "$lines" | grep -c .)" -ge 4 ] && break
    sleep 0.05
done
REV_PLAIN=$(printf '%s\n' "$lines" | sed -n 1p | sed 's/.*://')
REV_TLS=$(printf '%s\n' "$lines" | sed -n 2p | sed 's/.*://')
REV_RAW=$(printf '%s\n' "$lines" | sed -n 3p | sed 's/.*://')
REV_SLOW=$(printf '%s\n' "$lines" | sed -n 4p | sed 's/.*://')
[ -n "$REV_PLAIN" ] && [ -n "$REV_TLS" ] && [ -n "$REV_SLOW" ] || bail "no reverse listener lines: $(head -c 800 "$PROXY_OUT")"

# rcurl PORT ARGS...: curl offering h2 (and http/1.1) to a reverse listener as rev.example.
rcurl() {
    local port=$1
    shift
    dcurl --http2 --cacert "$PROXY_CA" --resolve "rev.example:$port:127.0.0.1" "$@"
}
P=https://rev.example:$REV_PLAIN
T=https://rev.example:$REV_TLS

# ---- the head: HTTP/2 to the client, HTTP/1.1 to the origin ----
out=$(rcurl "$REV_PLAIN" -H 'te: trailers' -H 'x-test: one' -o "$tmp/head.body" \
    -w '%{http_version} %{http_code}' "$P/headers?q=1")
check_eq "plain origin: the client gets HTTP/2 and 200" "2 200" "$out"
head_text=$(tr -d '\r' < "$tmp/head.body")
check_match "the origin gets an HTTP/1.1 request line, pseudo-headers made target" \
    '^GET /headers\?q=1 HTTP/1\.1$' "$head_text"
check_match "the origin gets its own authority as Host" "^Host: 127\.0\.0\.1:$PLAIN_PORT\$" "$head_text"
check_eq "... exactly one Host" 1 "$(grep -ci '^host:' <<< "$head_text")"
check_no_imatch "no pseudo-header field reaches the origin" '^:' "$head_text"
check_no_imatch "no connection-specific field reaches the origin (TE: trailers dropped)" \
    '^(te|connection|keep-alive|transfer-encoding|upgrade|proxy-connection):' "$head_text"
check_match "the client's own fields go on" '^x-test: one$' "$head_text"

out=$(rcurl "$REV_TLS" -o "$tmp/tls.body" -w '%{http_version} %{http_code}' "$T/headers")
check_eq "https origin without ALPN: the client gets HTTP/2 and 200" "2 200" "$out"
check_match "https origin: Host is the origin's" "^Host: localhost:$TLS_PORT"$'\r'?'$' \
    "$(cat "$tmp/tls.body")"

out=$(timeout 30 "$PY" "$PEER" - "127.0.0.1:$REV_PLAIN" localhost "$PROXY_CA" cookies /headers |
    tr -d '\r')
check_match "cookie crumbs in two fields reach HTTP/1.1 as one (RFC 9113 8.2.3)" \
    '^cookie: a=1; b=2$' "$out"
check_eq "... only one" 1 "$(grep -ci '^cookie:' <<< "$out")"

# ---- request bodies ----
head -c 300000 /dev/urandom > "$tmp/up.bin"
want=$(file_sha "$tmp/up.bin")
out=$(rcurl "$REV_PLAIN" --data-binary @"$tmp/up.bin" -w ' %{http_version}' "$P/sha256")
check_eq "POST with content-length: the origin got the body whole" "$want 2" "$out"
out=$(rcurl "$REV_PLAIN" -X POST -T - -w ' %{http_version}' "$P/sha256" < "$tmp/up.bin")
check_eq "POST without content-length (sent chunked): the origin got the body whole" "$want 2" "$out"
out=$(rcurl "$REV_PLAIN" -H 'Expect: 100-continue' --data-binary @"$tmp/up.bin" \
    -w ' %{http_version} %{time_total}' "$P/sha256")
check_match "Expect: 100-continue: tapwire says 100 at once (curl would wait a second)" \
    "^$want 2 0\.[0-7][0-9]*\$" "$out"
out=$(rcurl "$REV_TLS" --data-binary @"$tmp/up.bin" -w ' %{http_version}' "$T/sha256")
check_eq "POST to the https origin: the body whole" "$want 2" "$out"

# What went on the wire to the origin, byte for byte.
# raw_request N: the Nth request the raw origin got, CRs shown as \r.
raw_request() { sed 's/\r/\\r/g' "$tmp/raw-$1.req"; }
out=$(rcurl "$REV_RAW" --data-binary 'hello there' -w ' %{http_version}' "https://rev.example:$REV_RAW/up")
check_eq "raw origin: answered over HTTP/2" "ok 2" "$out"
check_match "with content-length: the origin gets Content-Length and the bytes" \
    'Content-Length: 11\\r$' "$(raw_request 1)"
check_match "... and the body right after the head" '^hello there$' "$(raw_request 1)"
check_no_imatch "... not chunked" 'transfer-encoding' "$(raw_request 1)"
out=$(printf 'streamed body' | rcurl "$REV_RAW" -X POST -T - -w ' %{http_version}' \
    "https://rev.example:$REV_RAW/up")
check_eq "without content-length: answered" "ok 2" "$out"
check_match "without content-length: the origin gets it chunked" \
    'Transfer-Encoding: chunked' "$(raw_request 2)"
check_no_imatch "... without a Content-Length" 'content-length' "$(raw_request 2)"
check_match "... the chunk, then the last chunk" 'tapwire\\r\\rd\\rstreamed body\\r0\\r\\r$' \
    "$(raw_request 2 | tr -d '\n')"
out=$(timeout 30 "$PY" "$PEER" - "127.0.0.1:$REV_RAW" localhost "$PROXY_CA" post-trailers /up |
    tr '\n' ' ')
check_match "request trailers: answered" '^alpn h2 status 200 body 2 ' "$out"
check_match "request trailers: sent as the chunked body's trailer section" \
    'tapwire\\r\\r3\\rabc\\r0\\rx-req-trailer: yes\\r\\r$' "$(raw_request 3 | tr -d '\n')"

# ---- responses: length, chunked with a trailer, until close ----
out=$(rcurl "$REV_PLAIN" -o "$tmp/len.got" -w '%{http_version} %{http_code}' "$P/bytes/1000000")
check_eq "a 1 MB response with Content-Length" "2 200" "$out"
check_eq "... intact" "$(pattern_sha 1000000)" "$(file_sha "$tmp/len.got")"
rcurl "$REV_PLAIN" -o "$tmp/chunked.got" "$P/bytes/200000?chunked=1"
check_eq "a chunked response: the body intact" "$(pattern_sha 200000)" "$(file_sha "$tmp/chunked.got")"
nghttp -nv "https://127.0.0.1:$REV_PLAIN/bytes/300?chunked=1" > "$tmp/nghttp.out" 2>&1
check_match "nghttp (h2 only): its trailer arrives as a trailing HEADERS frame" \
    'recv \(stream_id=[0-9]+\) x-trailer: done' "$(cat "$tmp/nghttp.out")"
check_no_imatch "... without HTTP/1.1's framing fields" \
    'recv \(stream_id=[0-9]+\) (transfer-encoding|connection|trailer|keep-alive):' \
    "$(cat "$tmp/nghttp.out")"
out=$(rcurl "$REV_PLAIN" -o "$tmp/close.got" -w '%{http_version} %{http_code}' "$P/bytes/5000?close=1")
check_eq "a response that ends with the close" "2 200" "$out"
check_eq "... intact" "$(pattern_sha 5000)" "$(file_sha "$tmp/close.got")"

# ---- many streams on one connection, a small pool of kept-alive connections ----
before=$(grep -c 'GET /conn' "$PLAIN_PORT_LOG")
urls=()
for i in $(seq 1 30); do urls+=(-o /dev/null "$P/conn?i=$i"); done
rcurl "$REV_PLAIN" --no-progress-meter --parallel --parallel-max 30 \
    -w '%{http_version}:%{http_code} %{errormsg}\n' "${urls[@]}" > "$tmp/parallel.txt" 2>&1
check_eq "30 concurrent streams on one connection, all 200" 30 "$(grep -c '^2:200 $' "$tmp/parallel.txt")"
grep -v '^2:200 $' "$tmp/parallel.txt" | sort | uniq -c | sed 's/^/# not 200: /'
grep 'conn?i=' "$PROXY_ERR" | grep -v ' 200 ' | sed 's/^/# proxy: /' | head -n 12
conns=$(grep 'GET /conn' "$PLAIN_PORT_LOG" | tail -n +$((before + 1)) | grep -oE 'conn=[0-9]+' |
    sort -u | wc -l)
check_le "... over at most 6 HTTP/1.1 connections" "$conns" 6
check_le "... kept alive: fewer connections than requests" "$conns" 29
out=$(rcurl "$REV_PLAIN" --no-progress-meter --parallel --max-time 4 -o /dev/null -o /dev/null \
    -w '%{url} %{http_code} %{time_total}\n' "$P/hang" "$P/bytes/10" 2> /dev/null | grep 'bytes/10')
check_match "an origin holding one stream stalls no other on the connection" ' 200 0\.[0-9]+$' "$out"
# /drip goes over the connection opened first; /ok needs a second one,
# whose handshake the origin holds for 3 s: meanwhile /drip's pieces go on
# (it ends after about 1.2 s), as a blocked relay loop would not let them.
out=$(rcurl "$REV_SLOW" --no-progress-meter --parallel --max-time 8 -o /dev/null -o /dev/null \
    -w '%{url} %{http_code} %{size_download} %{time_total}\n' \
    "https://rev.example:$REV_SLOW/drip" "https://rev.example:$REV_SLOW/ok" 2> /dev/null)
drip=$(grep '/drip ' <<< "$out")
check_match "an origin slow to take a second connection: the first stream still gets its body" \
    ' 200 30 ' "$drip"
check_match "... as it comes, not after the new connection's handshake (under 2.5 s)" \
    ' (0|1|2\.[0-4])[0-9.]*$' "$drip"
check_match "... and the stream that waited for the new connection gets its answer" \
    '/ok 200 2 ' "$out"

# ---- rules apply to translated streams ----
out=$(rcurl "$REV_PLAIN" --data-binary 'a bridge-marker b' "$P/echo")
check_eq "a response body rule on a translated stream" "a BRIDGED b" "$out"
out=$(rcurl "$REV_PLAIN" --data-binary 'x rule-in y' "$P/echo")
check_eq "a request body rule: the origin got the rewritten body" "x RULE-OUT y" "$out"

# ---- an h2-only client through CONNECT to an HTTP/1.1 origin ----
out=$(timeout 30 "$PY" "$PEER" "$PROXY_PORT" "localhost:$TLS_PORT" localhost "$PROXY_CA" get /bytes/100 |
    tr '\n' ' ')
check_eq "CONNECT, a client offering only h2: it gets h2 and the origin's answer" \
    "alpn h2 status 200 body 100 $(pattern_sha 100) " "$out"
out=$(timeout 30 "$PY" "$PEER" "$PROXY_PORT" "localhost:$TLS_PORT" localhost "$PROXY_CA" show /headers \
    other.test:8443 | tr -d '\r')
check_match "a stream for another authority (coalescing) goes to the tunnel's origin, answered" \
    '^status 200$' "$out"
check_match "... with that authority as its Host" '^Host: other\.test:8443$' "$out"
out=$(timeout 30 "$PY" "$PEER" - "127.0.0.1:$REV_PLAIN" localhost "$PROXY_CA" get /conn | tr '\n' ' ')
check_match "reverse, a client offering only h2: answered" '^alpn h2 status 200 body ' "$out"

# ---- smuggling: refused as stream errors, the second request never sent ----
for mode in cl-mismatch crlf-value space-value te-gzip; do
    out=$(timeout 30 "$PY" "$PEER" - "127.0.0.1:$REV_PLAIN" localhost "$PROXY_CA" "$mode" /conn |
        tr '\n' ' ')
    check_eq "$mode: the stream is reset with PROTOCOL_ERROR" "alpn h2 rst 1 " "$out"
done
out=$(timeout 30 "$PY" "$PEER" "$PROXY_PORT" "localhost:$TLS_PORT" localhost "$PROXY_CA" cl-mismatch \
    /conn | tr '\n' ' ')
check_eq "cl-mismatch through CONNECT: reset too" "alpn h2 rst 1 " "$out"
check_no_match "no smuggled request reached either origin" 'smuggled' \
    "$(cat "$PLAIN_PORT_LOG" "$TLS_PORT_LOG")"
out=$(rcurl "$REV_PLAIN" -o /dev/null -w '%{http_version} %{http_code}' "$P/conn")
check_eq "after the attempts the listener still serves" "2 200" "$out"

# ---- flows ----
check "the flows are written" wait_written 50
check_eq "the translated streams are flows: HTTP/2 from the client, HTTP/1.1 from the origin" 0 \
    "$(flows_where "target like '/headers%' and not (req_version = 'HTTP/2' and resp_version = 'HTTP/1.1')")"
check_le "... all of them" 40 "$(flows_where "req_version = 'HTTP/2' and resp_version = 'HTTP/1.1'")"
check_eq "the plain origin's flows say http and name it" 1 \
    "$(flows_where "scheme = 'http' and host = '127.0.0.1' and port = $PLAIN_PORT
        and target = '/headers?q=1'")"
check_eq "the chunked response's flow holds its size" 1 \
    "$(flows_where "target = '/bytes/200000?chunked=1' and resp_body_size = 200000")"
check_eq "the body rule is noted on its flow" 1 \
    "$(flows_where "target = '/echo' and resp_body_size = 11 and rules is not null")"
stop_proxy

# ---- --reverse-forwarded on translated streams ----
start_proxy --reverse-forwarded --reverse "https://127.0.0.1:0=http://127.0.0.1:$PLAIN_PORT"
for ((i = 0; i < 200; i++)); do
    REV_FW=$(sed -n 's#^reverse proxy listening on https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$PROXY_OUT")
    [ -n "$REV_FW" ] && break
    sleep 0.05
done
out=$(rcurl "$REV_FW" -H 'X-Forwarded-Proto: gopher' -o "$tmp/fw.body" -w '%{http_version}' \
    "https://rev.example:$REV_FW/headers")
check_eq "--reverse-forwarded: the client still gets HTTP/2" 2 "$out"
fw_text=$(tr -d '\r' < "$tmp/fw.body")
check_match "--reverse-forwarded over h2: X-Forwarded-For" '^X-Forwarded-For: 127\.0\.0\.1$' "$fw_text"
check_match "--reverse-forwarded over h2: X-Forwarded-Proto" '^X-Forwarded-Proto: https$' "$fw_text"
check_match "--reverse-forwarded over h2: X-Forwarded-Host is the client's :authority" \
    "^X-Forwarded-Host: rev\.example:$REV_FW\$" "$fw_text"
check_no_match "--reverse-forwarded over h2: the client's own -Proto is gone" 'gopher' "$fw_text"
check_eq "--reverse-forwarded over h2: one Host, the origin's" "Host: 127.0.0.1:$PLAIN_PORT" \
    "$(grep -i '^host:' <<< "$fw_text")"
stop_proxy

# ---- intercept: a translated stream's response held while its body waits ----
start_proxy --dashboard-token "$TOKEN" --intercept '~s & ~u resp' --intercept-timeout 10 \
    --reverse "https://127.0.0.1:0=http://127.0.0.1:$PLAIN_PORT"
dashboard_port
for ((i = 0; i < 200; i++)); do
    REV_IC=$(sed -n 's#^reverse proxy listening on https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$PROXY_OUT")
    [ -n "$REV_IC" ] && break
    sleep 0.05
done
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")
rcurl "$REV_IC" -o "$tmp/held.got" -w '%{http_version} %{http_code}' \
    "https://rev.example:$REV_IC/bytes/2000000?resp=1" > "$tmp/held.code" &
CURL_PID=$!
track_pid "$CURL_PID"
ID=$(held_id)
check_match "a translated response waits in the intercept" '^[0-9]+$' "$ID"
out=$(rcurl "$REV_IC" -w ' %{http_version}' "https://rev.example:$REV_IC/conn")
check_match "meanwhile another stream is served" '^conn=[0-9]+ req=[0-9]+ 2$' "$out"
check_eq "resume it: 200" 200 "$(dcurl -o /dev/null -w '%{http_code}' -X POST "${H[@]}" \
    "$D/api/flows/$ID/resume")"
wait_pid "$CURL_PID" 15
check_eq "resumed: the client gets it over HTTP/2" "2 200" "$(cat "$tmp/held.code")"
check_eq "resumed: the 2 MB body intact (read on once the head went)" "$(pattern_sha 2000000)" \
    "$(file_sha "$tmp/held.got")"
rcurl "$REV_IC" -o /dev/null -w '%{http_version} %{http_code}' \
    "https://rev.example:$REV_IC/bytes/2000000?resp=2" > "$tmp/drop.code" &
CURL_PID=$!
track_pid "$CURL_PID"
ID=$(held_id)
check_eq "drop a held translated response: 200" 200 "$(dcurl -o /dev/null -w '%{http_code}' \
    -X POST "${H[@]}" "$D/api/flows/$ID/drop")"
wait_pid "$CURL_PID" 15
check_eq "dropped: the client gets 502 over HTTP/2" "2 502" "$(cat "$tmp/drop.code")"
out=$(rcurl "$REV_IC" -o /dev/null -w '%{http_version} %{http_code}' "https://rev.example:$REV_IC/conn")
check_eq "after the drop the listener still serves" "2 200" "$out"
stop_proxy

finish
