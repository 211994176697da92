#!/bin/bash
# A full disk: the data directory is a small tmpfs that the test fills.
# tapwire keeps proxying (every response whole), says so in its log and in
# /api/stats (write_errors, last_error, and write_failing while it lasts).
# With a little room back (less than a body needs) the flows' records are
# written without their bodies, each flow saying so; when space returns
# new flows are written whole again, and the log says that too.
# Needs mount(8) with the right to mount a tmpfs (root); skips without.
. "$(dirname "$0")/lib.sh"

need_cmd python3 mount umount dd

TOKEN=full-disk-test-token-0123456789
MNT=$tmp/disk
BODY=262144 # a quarter MiB per flow: the WAL must grow to hold it

mkdir -p "$MNT" || bail "cannot make $MNT"
mount -t tmpfs -o size=6m,mode=0700 tapwire-full-disk "$MNT" 2> "$tmp/mount.err" ||
    skip_all "cannot mount a tmpfs here (not root, or not permitted): $(cat "$tmp/mount.err")"
# Lazily, before lib.sh's cleanup stops the proxy (whose files keep the
# mount busy until then) and removes $tmp: the mount is detached at once.
_full_disk_exit() {
    local rc=$?
    umount -l "$MNT" 2> /dev/null
    (exit "$rc")
    _cleanup
}
trap _full_disk_exit EXIT

start_origin ORIGIN_PORT
O=http://127.0.0.1:$ORIGIN_PORT
WANT=$(pattern_sha "$BODY")

PROXY_DATA_DIR=$MNT start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port

# fetch N TAG: N requests through the proxy; each body must be whole.
fetch() {
    local i sha
    for ((i = 0; i < $1; i++)); do
        sha=$(pcurl "$O/bytes/$BODY?$2-$i" | sha256sum | cut -c1-64) || return 1
        [ "$sha" = "$WANT" ] || {
            echo "request $2-$i: the body is not whole"
            return 1
        }
    done
}
stat_of() { dash_json /api/stats "d[\"$1\"]"; }

check "requests go through with room on the disk" fetch 3 before
check "their flows are written" wait_written 3
check_eq "no write errors yet" 0 "$(stat_of write_errors)"

# ---- the disk fills ----

# A reserve to give back later: room for a batch's records, not for the
# pages of one 256 KiB body.
dd if=/dev/zero of="$MNT/reserve" bs=64k count=4 2> /dev/null || bail "cannot write the reserve"
dd if=/dev/zero of="$MNT/filler" bs=64k 2> /dev/null
check_eq "the data directory is full" 0 "$(df --output=avail -k "$MNT" | tail -n 1 | tr -d ' ')"
check "requests still go through, whole, with the disk full" fetch 6 full
errors_seen() {
    local n
    n=$(stat_of write_errors)
    [ "$n" -gt 0 ] 2> /dev/null || {
        echo "write_errors: $n"
        return 1
    }
}
wait_errors() {
    local i
    for ((i = 0; i < 200; i++)); do
        errors_seen > /dev/null && return 0
        sleep 0.05
    done
    errors_seen
}
check "/api/stats counts the flows lost to the full disk" wait_errors
check_contains "/api/stats last_error says the disk is full" "disk is full" "$(stat_of last_error)"
check_eq "/api/stats says writes are failing now" True "$(stat_of write_failing)"
check_eq "the list's figures say so too" True \
    "$(dash_json '/api/flows?limit=1' 'd["stats"]["write_failing"]')"
check "the log says the disk is full and the proxy keeps working" \
    wait_for_grep "$PROXY_ERR" "disk is full.*the proxy keeps working" 10
check "the proxy process is alive" kill -0 "$PROXY_PID"

# ---- a little room: the records go in, their bodies do not ----

rm -f "$MNT/reserve"
before=$(stat_of written)
check "requests go through with a little room" fetch 3 room
check "their flows are written" wait_written $((before + 3))
check_eq "/api/stats counts three flows kept without their bodies" 3 "$(stat_of bodies_dropped)"
room=$(dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" --data-urlencode 'limit=3' |
    python3 -c 'import json, sys
print(" ".join("%s:%s:%s" % (f["path"].split("?")[1], f["bodies_dropped"], f["size"])
               for f in json.load(sys.stdin)["flows"]))')
check_eq "each says its bodies were dropped and keeps their size" \
    "room-2:True:$BODY room-1:True:$BODY room-0:True:$BODY" "$room"
check "the log says flows are kept without their bodies" \
    wait_for_grep "$PROXY_ERR" "disk is full.*kept without their bodies" 10

# ---- space returns ----

rm -f "$MNT/filler"
before=$(stat_of written)
check "requests go through after space returned" fetch 3 after
check "new flows are written again" wait_written $((before + 3))
check "the log says the database works again" wait_for_grep "$PROXY_ERR" "works again" 10
check_eq "/api/stats no longer says writes are failing" False "$(stat_of write_failing)"
check_eq "the flows after it kept their bodies" 3 "$(stat_of bodies_dropped)"
paths=$(dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" --data-urlencode 'limit=3' |
    python3 -c 'import json, sys
print(" ".join(f["path"].split("?")[1] for f in json.load(sys.stdin)["flows"]))')
check_eq "the newest flows listed are those after the recovery" "after-2 after-1 after-0" "$paths"
check_eq "the database is intact" ok \
    "$(python3 -c 'import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("pragma integrity_check").fetchone()[0])' \
        "$MNT/tapwire.db" 2>&1)"

finish
