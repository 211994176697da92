#!/bin/bash
# --rewrite-memory bounds what body rules buffer across all exchanges: with a
# budget that fits one upload's buffers but not two, two uploads sent at the
# same time are one rewritten and one passed on unmodified, and the flow of
# the unmodified one says why in its rules notes (dashboard API).
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=rewrite-memory-test-token-0123456789
BUDGET=2097152 # 2 MiB: one 700 kB body's buffer (1 MiB) and its rewrite, not two

start_origin ORIGIN_PORT
start_proxy --rule 'request body method=POST "secret" "[redacted]"' \
    --rewrite-memory "$BUDGET" --dashboard=127.0.0.1:0 --dashboard-token "$TOKEN"

dashboard_port

python3 -c 'import sys; sys.stdout.write("secret " * 100000)' > "$tmp/body"
sed 's/secret/[redacted]/g' "$tmp/body" > "$tmp/redacted"
sha_orig=$(file_sha "$tmp/body")
sha_redacted=$(file_sha "$tmp/redacted")

# Both uploads at 200 kB/s take about 3.5 s; they overlap for all but the
# first 0.3 s, so their buffers are held at the same time.
for n in 1 2; do
    pcurl --limit-rate 200k -H 'Expect:' --data-binary @"$tmp/body" \
        "http://127.0.0.1:$ORIGIN_PORT/sha256?n=$n" > "$tmp/sha$n" 2> "$tmp/curl$n.err" &
    pids[n]=$!
    track_pid "${pids[n]}"
    sleep 0.3
done
for n in 1 2; do
    wait_pid "${pids[n]}" 30
    check_eq "upload $n: curl succeeded" 0 $?
done
got=$({ cat "$tmp/sha1"; echo; cat "$tmp/sha2"; echo; } | sed "s/$sha_orig/unmodified/; s/$sha_redacted/rewritten/" |
    sort | tr '\n' ' ')
check_eq "two uploads over the budget: one rewritten, one unmodified" "rewritten unmodified " "$got"

# The flows: the unmodified one carries the note.
notes=""
for ((i = 0; i < 100; i++)); do
    notes=$(python3 - "$D" "$TOKEN" << 'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
def get(path):
    req = urllib.request.Request(base + path, headers={"X-Tapwire-Token": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
flows = [f for f in get("/api/flows")["flows"] if f["path"].startswith("/sha256?n=")]
for f in flows:
    print(get("/api/flows/%d" % f["id"]).get("rules_notes"))
PY
    2> "$tmp/notes.err")
    [ "$(printf '%s\n' "$notes" | grep -c .)" -ge 2 ] && break
    sleep 0.1
done
note "rules notes of the two flows: $(printf '%s' "$notes" | tr '\n' '|')"
check_eq "one flow notes the budget" 1 \
    "$(printf '%s\n' "$notes" | grep -c '^body rules skipped: rewrite memory budget (2 MiB) in use$')"

# A body larger than the whole budget (but within --rewrite-limit) stops
# being buffered part way: what was read so far and the rest go on intact.
python3 -c 'import sys; sys.stdout.write("secret " * 500000)' > "$tmp/big"
code=$(pcurl -H 'Expect:' --data-binary @"$tmp/big" -o "$tmp/sha-big" -w '%{http_code}' \
    "http://127.0.0.1:$ORIGIN_PORT/sha256?big=1")
check_eq "body over the whole budget: 200" 200 "$code"
check_eq "body over the whole budget: passed on intact" "$(file_sha "$tmp/big")" \
    "$(cat "$tmp/sha-big")"

# Once both are done, the budget is free again: a single upload is rewritten.
code=$(pcurl --data-binary @"$tmp/body" -o "$tmp/sha3" -w '%{http_code}' \
    "http://127.0.0.1:$ORIGIN_PORT/sha256?n=3")
check_eq "afterwards: 200" 200 "$code"
check_eq "afterwards: the budget is free, the body rewritten" "$sha_redacted" "$(cat "$tmp/sha3")"

finish
