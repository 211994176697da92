#!/bin/bash
# Rewrite rules through the real binary: the textbook URL rule, header rules,
# a request-body rule on a POST, response-body rules on gzip-, brotli- and
# deflate-encoded (and chunked) responses with consistent lengths, the
# rewrite limit, SIGHUP reloads (a broken file keeps the old rules), and a
# bad rules file refused at startup with its line and column.
. "$(dirname "$0")/lib.sh"

start_origin ORIGIN_PORT
O=http://127.0.0.1:$ORIGIN_PORT

cat > "$tmp/rules" <<'RULES'
# the textbook example
request url host=127.0.0.1 "q=cybersecurity" "q=SEED+Labs"
request header User-Agent set "tapwire-rules-test"
request header X-Drop-Me remove
request body method=POST "secret" "[redacted]"
response body type=text/html "Example Domain" "Tapwire Domain"
RULES
start_proxy --rules "$tmp/rules" --rewrite-limit 100000

head=$(pcurl -H 'X-Drop-Me: 1' "$O/headers?q=cybersecurity&hl=en")
check_contains "URL rule: the origin got q=SEED+Labs" "GET /headers?q=SEED+Labs&hl=en HTTP/1.1" "$head"
check_contains "header set: User-Agent replaced" "User-Agent: tapwire-rules-test" "$head"
check_not_contains "header remove: X-Drop-Me gone" "X-Drop-Me" "$head"

body=$(pcurl --data-binary 'user=a&secret=b&secret2=c' -H 'Content-Type: application/x-www-form-urlencoded' "$O/echo")
check_eq "request body rule on a POST: the origin got the rewritten body" \
    'user=a&[redacted]=b&[redacted]2=c' "$body"
body=$(pcurl -H 'Transfer-Encoding: chunked' --data-binary 'secret' "$O/echo")
check_eq "request body rule on a chunked POST" '[redacted]' "$body"

want_len=$(( 20 * 75 ))
for coding in gzip br deflate; do
    for chunked in 0 1; do
        name="$coding$([ $chunked = 1 ] && echo ', chunked')"
        out=$(pcurl -D "$tmp/h" -o "$tmp/b" -w '%{size_download}' "$O/compressed/$coding?n=20&chunked=$chunked")
        hdrs=$(tr -d '\r' < "$tmp/h")
        check_eq "$name: body rewritten" 20 "$(grep -c '^Tapwire Domain: ' "$tmp/b")"
        check_eq "$name: nothing of the original left" 0 "$(grep -c 'Example Domain' "$tmp/b")"
        check_imatch "$name: sent as identity with a recomputed Content-Length" \
            "^content-length: $want_len\$" "$hdrs"
        check_no_imatch "$name: no Content-Encoding left" '^content-encoding:' "$hdrs"
        check_no_imatch "$name: no Transfer-Encoding left" '^transfer-encoding:' "$hdrs"
        check_eq "$name: bytes received match Content-Length" "$want_len" "$out"
    done
done
# The flows record what was sent: Content-Length and no Content-Encoding
# (the proxy thread notes a section's Content-Encoding as it builds it; a
# body rule then replaces the section, and the note must not outlive it),
# and what arrived as the original. Read from the database once the flow
# writer (a batch every 0.1 s) has stored all six.
recorded() {
    python3 - "$PROXY_DATA/tapwire.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=5)
rows = db.execute("SELECT resp_content_encoding, resp_headers, resp_headers_original "
                  "FROM flows WHERE target LIKE '/compressed/%' ORDER BY id").fetchall()
print(len(rows))
for enc, sent, orig in rows:
    print("%s|%s|%s" % (enc, "content-encoding" in sent.lower(),
                        "content-encoding" in (orig or "").lower()))
PY
}
for ((i = 0; i < 50; i++)); do
    [ "$(recorded | head -1)" = 6 ] && break
    sleep 0.1
done
check_eq "recorded: the six rewritten responses, sent without Content-Encoding, which the \
original had" "6 None|False|True None|False|True None|False|True None|False|True \
None|False|True None|False|True" "$(recorded | tr '\n' ' ' | sed 's/ $//')"

out=$(pcurl --compressed -o "$tmp/b" -w '%{http_code}' "$O/compressed/gzip?n=3")
check_eq "client asking for compression still gets the rewritten body" \
    "200 3" "$out $(grep -c '^Tapwire Domain' "$tmp/b")"

# Over the limit: streamed unmodified, and the client still gets all of it.
out=$(pcurl -D "$tmp/h" -o "$tmp/big" -w '%{http_code}' "$O/compressed/gzip?n=3000")
check_eq "body over --rewrite-limit: status 200" 200 "$out"
check_imatch "body over --rewrite-limit: passed on still encoded" '^content-encoding: gzip' \
    "$(tr -d '\r' < "$tmp/h")"
check_eq "body over --rewrite-limit: passed on unmodified" 3000 \
    "$(gzip -dc < "$tmp/big" | grep -c '^Example Domain')"

# SIGHUP: a broken file keeps the old rules, a good one replaces them.
printf 'request url "q=cybersecurity" "q=(broken\n' > "$tmp/rules"
kill -HUP "$PROXY_PID"
check "SIGHUP with a broken file: the error is logged with its line" \
    wait_for_grep "$PROXY_ERR" 'rules not reloaded.*line 1' 5
head=$(pcurl "$O/headers?q=cybersecurity")
check_contains "SIGHUP with a broken file: the old rules still apply" "q=SEED+Labs" "$head"
printf 'request url "q=cybersecurity" "q=reloaded"\n' > "$tmp/rules"
kill -HUP "$PROXY_PID"
check "SIGHUP with a good file: reload logged" wait_for_grep "$PROXY_ERR" 'rules reloaded' 5
head=$(pcurl "$O/headers?q=cybersecurity")
check_contains "SIGHUP with a good file: the new rules apply" "q=reloaded" "$head"
check_not_contains "SIGHUP with a good file: the old rules are gone" "User-Agent: tapwire-rules-test" "$head"
check "proxy still running after the reloads" kill -0 "$PROXY_PID"
stop_proxy

# --rule on the command line, same syntax as a line of the file.
PROXY_DATA_DIR=$tmp/data2 start_proxy --rule 'response body "conn=" "CONN="'
body=$(pcurl "$O/conn")
check_match "--rule: response body rewritten" '^CONN=[0-9]+ req=1$' "$body"
stop_proxy

# A bad rules file is a startup error naming the line and the column.
printf '# ok\nrequest url regex "(unclosed" "x"\n' > "$tmp/bad"
"$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard --data-dir "$tmp/data3" --rules "$tmp/bad" \
    > "$tmp/bad.out" 2> "$tmp/bad.err" < /dev/null &
bad_pid=$!
track_pid "$bad_pid"
wait_pid "$bad_pid" 10
status=$?
check_eq "bad rules file: tapwire exits with status 1" 1 "$status"
check_match "bad rules file: the error names line 2 and a column" 'line 2, column [0-9]+' "$(cat "$tmp/bad.err")"
check_eq "bad rules file: the error is printed once" 1 "$(grep -c 'line 2, column' "$tmp/bad.err")"

# A FIFO as the rules file: opening it for reading would wait for a writer,
# at start and in the reload thread (and SIGTERM then waits on that thread).
mkfifo "$tmp/fifo"
started=$(now_ms)
"$TAPWIRE_BIN" --listen 127.0.0.1:0 --no-dashboard --data-dir "$tmp/data4" --rules "$tmp/fifo" \
    > "$tmp/fifo.out" 2> "$tmp/fifo.err" < /dev/null &
fifo_pid=$!
track_pid "$fifo_pid"
wait_pid "$fifo_pid" 5
status=$?
check_eq "FIFO rules file: tapwire exits with status 1 within 5 s" 1 "$status"
check_le "FIFO rules file: refused promptly (ms)" "$(($(now_ms) - started))" 3000
check_contains "FIFO rules file: the error says it is not a regular file" \
    "rules file $tmp/fifo is not a regular file (a FIFO)" "$(cat "$tmp/fifo.err")"

printf 'request url "q=a" "q=b"\n' > "$tmp/swap"
PROXY_DATA_DIR=$tmp/data5 start_proxy --rules "$tmp/swap"
rm "$tmp/swap"
mkfifo "$tmp/swap"
kill -HUP "$PROXY_PID"
check "SIGHUP with a FIFO in place of the file: refused and logged" \
    wait_for_grep "$PROXY_ERR" 'rules not reloaded.*not a regular file \(a FIFO\)' 5
started=$(now_ms)
stop_proxy
check_eq "SIGHUP with a FIFO: SIGTERM still stops tapwire cleanly" 0 "$?"
check_le "SIGHUP with a FIFO: stopped within 3 s (ms)" "$(($(now_ms) - started))" 3000

finish
