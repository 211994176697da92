#!/bin/bash
# Users' flows survive what users do to them: reading the database with the
# sqlite3 shell while tapwire captures (then kill -9: every committed flow is
# still there), starting a second tapwire on the same data directory (refused,
# naming the PID that holds it), a corrupt page (refused at start with the
# file named, the file left as it was), SIGTERM under load (every flow
# queued is written before exit, and the totals are logged), and SIGKILL
# under load while flow segments start and go (intact, every committed flow
# there, and tapwire starts again).
. "$(dirname "$0")/lib.sh"

need_cmd python3 sqlite3

TOKEN=data-safety-test-token-0123456789

# written: the flows the running proxy reports written (its own count, not
# the file's: a detached WAL shows only in the file).
written() { dash_json /api/stats 'd["written"]'; }

# requests N: N requests through the proxy, one curl each.
requests() {
    local i
    for ((i = 0; i < $1; i++)); do
        pcurl -o /dev/null "$O/bytes/10" || return 1
    done
}

# db_query SQL: the sqlite3 shell on the proxy's database, bounded in time.
db_query() { timeout 10 sqlite3 "$PROXY_DATA/tapwire.db" "$1" 2>&1; }

start_origin ORIGIN_PORT
O=http://127.0.0.1:$ORIGIN_PORT

# ---- an outside reader, then kill -9 ----

start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port
check "5 requests through the proxy" requests 5
check "the proxy writes 5 flows" wait_written 5
check_eq "the sqlite3 shell reads 5 flows while tapwire runs" 5 \
    "$(db_query 'select count(*) from flows')"
check "the WAL is still there after the outside reader closed" test -e "$PROXY_DATA/tapwire.db-wal"
deleted=$(ls -l "/proc/$PROXY_PID/fd" 2> /dev/null | grep -c 'tapwire.db.*(deleted)')
check_eq "no database file of tapwire's is deleted under it" 0 "$deleted"
check "7 more requests" requests 7
check "the proxy writes 12 flows" wait_written 12
kill -KILL "$PROXY_PID"
wait "$PROXY_PID" 2> /dev/null
check_eq "after kill -9 every committed flow is in the file" 12 \
    "$(db_query 'select count(*) from flows')"
check_eq "after kill -9 the database is intact" ok "$(db_query 'pragma integrity_check')"

# ---- one tapwire per data directory ----

start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port
check "a new tapwire starts after kill -9 (no stale lock)" proxy_serves "$ORIGIN_PORT"
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --data-dir "$PROXY_DATA" --no-dashboard \
    < /dev/null 2>&1)
rc=$?
check_eq "a second tapwire on the same data directory exits 1" 1 "$rc"
check_contains "the refusal names the PID that holds the directory" "PID $PROXY_PID" "$out"
check "the first tapwire still serves" proxy_serves "$ORIGIN_PORT"
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --data-dir "$tmp/data-b" --no-dashboard \
    --db "$PROXY_DATA/tapwire.db" < /dev/null 2>&1)
rc=$?
check_eq "a second tapwire on the same database through --db is refused too" 1 "$rc"
check_contains "that refusal names the PID too" "PID $PROXY_PID" "$out"
requests 1
check "the first tapwire writes on" wait_written 1
second=$(written)
stop_proxy
check_eq "the database keeps the flows of both runs" "$((12 + ${second:-0}))" \
    "$(db_query 'select count(*) from flows')"

# ---- a corrupt page ----

# flows is a view over the segments' tables (tapwire-db(5)): the oldest one.
root=$(db_query "select rootpage from sqlite_master where name = (select 'flows_' || min(seg) from flow_segments)")
page_size=$(db_query 'pragma page_size')
python3 - "$PROXY_DATA/tapwire.db" "$root" "$page_size" << 'EOF'
import sys
path, root, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek((root - 1) * size)
    f.write(b"\x99" * 64)
EOF
before=$(file_sha "$PROXY_DATA/tapwire.db")
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --data-dir "$PROXY_DATA" --no-dashboard \
    < /dev/null 2>&1)
rc=$?
check_eq "a corrupt database: tapwire refuses to start (exit 1)" 1 "$rc"
check_contains "the refusal names the file" "$PROXY_DATA/tapwire.db" "$out"
check_contains "the refusal says what to do" "move it away" "$out"
check_eq "the corrupt file is left as it was" "$before" "$(file_sha "$PROXY_DATA/tapwire.db")"

# ---- SIGTERM under load ----

PROXY_DATA_DIR=$tmp/data-term start_proxy --no-dashboard
curl -q -sS --max-time 60 --noproxy '' -x "http://127.0.0.1:$PROXY_PORT" \
    -o /dev/null "$O/bytes/[1-400]" 2> /dev/null &
load=$!
track_pid "$load"
sleep 0.3
stop_pid "$PROXY_PID" 20
stop_rc=$?
wait "$load" 2> /dev/null
check_eq "SIGTERM under load: tapwire exits 0" 0 "$stop_rc"
totals=$(grep -aEo 'flows: [0-9]+ written, [0-9]+ dropped' "$PROXY_ERR" | tail -n 1)
check_match "SIGTERM: the flow totals are logged at exit" '^flows: [0-9]+ written, 0 dropped$' \
    "$totals"
n_logged=$(printf '%s' "$totals" | grep -Eo '^flows: [0-9]+' | grep -Eo '[0-9]+')
n_file=$(db_query 'select count(*) from flows')
check_eq "SIGTERM: every flow the proxy took is in the file" "${n_logged:-none}" "$n_file"
answered=$(grep -c 'req=' "$ORIGIN_PORT_LOG" 2> /dev/null)
note "origin answered $answered requests in all, $n_file stored after SIGTERM"

# ---- SIGKILL under load, while segments start and go ----

# --max-flows 64 makes segments of 8 flows: under load the writer starts
# and drops them (DROP TABLE, the views rewritten) in most of its batches,
# so the kill lands in or between those transactions.
PROXY_DATA_DIR=$tmp/data-kill start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN" \
    --max-flows 64
dashboard_port
loads=()
for i in 1 2; do
    curl -q -sS --max-time 60 --noproxy '' -x "http://127.0.0.1:$PROXY_PORT" \
        -o /dev/null "$O/bytes/[1-20000]" 2> /dev/null &
    loads+=("$!")
    track_pid "$!"
done
committed=0
for ((i = 0; i < 400; i++)); do
    committed=$(written)
    [ "${committed:-0}" -ge 300 ] 2> /dev/null && break
    sleep 0.05
done
kill -KILL "$PROXY_PID"
wait "$PROXY_PID" 2> /dev/null
for pid in "${loads[@]}"; do
    kill -TERM "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
done
note "killed under load after $committed flows were reported written"
PROXY_DATA=$tmp/data-kill
check "SIGKILL under load: at least 300 flows were committed first" test "${committed:-0}" -ge 300
check_eq "SIGKILL under load: the database is intact" ok "$(db_query 'pragma integrity_check')"
newest=$(db_query 'select id from flows order by id desc limit 1')
check "SIGKILL under load: the newest committed flow is there" test "${newest:-0}" -ge "${committed:-1}"
check_eq "SIGKILL under load: the newest flows are all there, without a gap" \
    "$(db_query 'select count(*) from flows')" \
    "$(db_query 'select (select id from flows order by id desc limit 1) - (select id from flows order by id limit 1) + 1')"
check "SIGKILL under load: --max-flows holds (at most 64 flows)" \
    test "$(db_query 'select count(*) from flows')" -le 64
check_eq "SIGKILL under load: the segments' counts match their tables" \
    "$(db_query 'select sum(flows) from flow_segments')" "$(db_query 'select count(*) from flows')"
PROXY_DATA_DIR=$tmp/data-kill start_proxy --no-dashboard --max-flows 64
check "after SIGKILL under load tapwire starts and serves" proxy_serves "$ORIGIN_PORT"
stop_proxy
check_eq "after the restart the newest flow is newer still" 1 \
    "$(db_query "select (select id from flows order by id desc limit 1) > ${newest:-0}")"
check "a clean stop leaves no spool file behind" test ! -e "$tmp/data-kill/tapwire.db-spool"

finish
