#!/bin/bash
# The dashboard's read-only SQL console against a real proxy: /api/sql
# needs the token, counts the flows the proxy wrote, refuses a write with
# SQLite's message (and the flows stay), refuses two statements, lists its
# example queries (which run); the sqlite3 shell reads the database while
# tapwire runs and tapwire goes on writing after it (tapwire-db(5)).
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=sql-console-test-token-0123456789

# sql NAME QUERY [CURL_ARGS...]: GET /api/sql?q=QUERY with the token; prints
# the status, the body in $tmp/sql-NAME.json.
sql() {
    local name=$1 q=$2
    shift 2
    dcurl -o "$tmp/sql-$name.json" -w '%{http_code}' -G --data-urlencode "q=$q" "$@" "$D/api/sql"
}

# jfile NAME EXPR: a Python expression over the JSON document d of sql NAME.
jfile() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
print(eval(sys.argv[2]))' "$tmp/sql-$1.json" "$2" 2>&1
}

start_origin ORIGIN_PORT
start_proxy --dashboard-token "$TOKEN"
dashboard_port
O=http://127.0.0.1:$ORIGIN_PORT
H=(-H "X-Tapwire-Token: $TOKEN")

for i in 1 2 3; do
    pcurl -o /dev/null "$O/bytes/$((i * 100))" || fail "GET /bytes/$((i * 100)) through the proxy"
done
check "three flows written" wait_written 3

check_eq "no token: 401" 401 "$(sql no-token 'select count(*) from flows')"
check_eq "count: 200" 200 "$(sql count 'select count(*) from flows' "${H[@]}")"
check_eq "count: three flows" "[[3]]" "$(jfile count 'json.dumps(d["rows"])')"
check_eq "count: the column's name" "['count(*)']" "$(jfile count 'd["columns"]')"
check_eq "count: not truncated" "False" "$(jfile count 'd["truncated"]')"
check_match "count: elapsed_ms" '^[0-9]+$' "$(jfile count 'd["elapsed_ms"]')"

check_eq "rows: 200" 200 \
    "$(sql rows 'select id, host, resp_body_size from flows order by id' "${H[@]}")"
check_eq "rows: values in order" "[200, 300]" \
    "$(jfile rows '[r[2] for r in d["rows"]][1:]')"

# flows is a view over the segment tables flows_N (tapwire-db(5)).
check_eq "a write: 400" 400 "$(sql delete 'delete from flows_1' "${H[@]}")"
check_contains "a write: SQLite's message" "not authorized" "$(jfile delete 'd["error"]')"
check_eq "a write to the view: 400" 400 "$(sql delete-view 'delete from flows' "${H[@]}")"
check_contains "a write to the view: SQLite's message" "cannot modify" \
    "$(jfile delete-view 'd["error"]')"
check_eq "the search index answers: 200" 200 \
    "$(sql fts "select count(*) from flows_fts_1 where flows_fts_1 match '\"127\" AND \".0.\"'" "${H[@]}")"
check_eq "the search index finds every flow by its host" "[[3]]" "$(jfile fts 'd["rows"]')"
check_eq "ATTACH: 400" 400 "$(sql attach "attach '$tmp/other.db' as o" "${H[@]}")"
check "ATTACH made no file" test ! -e "$tmp/other.db"
check_eq "PRAGMA user_version = 5: 400" 400 "$(sql pragma 'pragma user_version = 5' "${H[@]}")"
check_eq "two statements: 400" 400 "$(sql two 'select 1; select 2' "${H[@]}")"
check_contains "two statements: why" "one statement" "$(jfile two 'd["error"]')"
check_eq "a syntax error: 400" 400 "$(sql syntax 'selec 1' "${H[@]}")"
check_contains "a syntax error: SQLite's message" "syntax error" "$(jfile syntax 'd["error"]')"
check_eq "no q: 400" 400 "$(dcurl -o /dev/null -w '%{http_code}' "${H[@]}" "$D/api/sql")"
check_eq "POST: 405" 405 \
    "$(dcurl -o /dev/null -w '%{http_code}' -X POST -H "Origin: $D" "${H[@]}" "$D/api/sql")"
check_eq "the flows are all still there" "[[3]]" \
    "$(sql recount 'select count(*) from flows' "${H[@]}" > /dev/null; jfile recount 'json.dumps(d["rows"])')"

code=$(dcurl -o "$tmp/sql-examples.json" -w '%{http_code}' "${H[@]}" "$D/api/sql/examples")
check_eq "examples: 200" 200 "$code"
check_eq "examples: three" 3 "$(jfile examples 'len(d)')"
for i in 0 1 2; do
    q=$(jfile examples "d[$i]['sql']")
    check_eq "example $i runs" 200 "$(sql "example-$i" "$q" "${H[@]}")"
done
check_eq "largest response first" 300 \
    "$(jfile example-1 'd["rows"][0][d["columns"].index("resp_body_size")]')"

# WAL: an outside reader while tapwire runs, and tapwire writes on after it.
if command -v sqlite3 > /dev/null 2>&1; then
    check_eq "the sqlite3 shell reads the database while tapwire runs" 3 \
        "$(sqlite3 -readonly "$PROXY_DATA/tapwire.db" 'select count(*) from flows' 2>&1)"
    pcurl -o /dev/null "$O/bytes/400" || fail "GET /bytes/400 through the proxy"
    check "a fourth flow written after the shell closed" wait_written 4
    sql count4 'select count(*) from flows' "${H[@]}" > /dev/null
    check_eq "the console sees it" "[[4]]" "$(jfile count4 'json.dumps(d["rows"])')"
else
    note "no sqlite3 shell: its checks are skipped"
fi

stop_proxy
check_eq "tapwire stops cleanly" 0 "$?"
finish
