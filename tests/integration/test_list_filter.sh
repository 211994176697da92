#!/bin/bash
# The flow list and the HAR export take a filter expression (filter=,
# tapwire-filters(7)): terms SQLite answers from columns, terms the
# evaluator decides (header and body contents), combinations, and a bad
# expression refused with a 400 naming the column.
. "$(dirname "$0")/lib.sh"

TOKEN=list-filter-test-token-0123456789
start_origin ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port
O=http://127.0.0.1:$ORIGIN_PORT

pcurl -o /dev/null "$O/bytes/10"
pcurl -o /dev/null "$O/status/404"
pcurl -o /dev/null -X POST --data-binary 'needle-in-the-body' "$O/echo"
pcurl -o /dev/null -H 'X-Marker: findme' "$O/headers"
check "four flows written" wait_written 4

# paths FILTER: the paths of the listed flows, newest first, one line.
paths() {
    dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" --data-urlencode "filter=$1" |
        python3 -c 'import json, sys
print(" ".join(f["path"] for f in json.load(sys.stdin)["flows"]))'
}

check_eq "~c 404: the status, from a column" "/status/404" "$(paths '~c 404')"
check_eq "~m POST: the method" "/echo" "$(paths '~m POST')"
check_eq "!~c 2xx: a negation" "/status/404" "$(paths '!~c 2xx')"
check_eq "~u bytes | ~c 404: an alternative, newest first" "/status/404 /bytes/10" \
    "$(paths '~u bytes | ~c 404')"
check_eq "~bq needle: the request body, by the evaluator" "/echo" "$(paths '~bq needle')"
check_eq "~hq x-marker: a request header, by the evaluator" "/headers" "$(paths '~hq x-marker')"
check_eq "~m GET & ~hq findme: a column and a header together" "/headers" \
    "$(paths '~m GET & ~hq findme')"
check_eq "a bare word is URL text" "/bytes/10" "$(paths 'bytes')"

out=$(dcurl -G -o "$tmp/bad.json" -w '%{http_code}' -H "X-Tapwire-Token: $TOKEN" "$D/api/flows" \
    --data-urlencode 'filter=~c 404 &')
check_eq "a bad expression: 400" 400 "$out"
check_contains "a bad expression: the column is named" "column 9" "$(cat "$tmp/bad.json")"

har=$(dcurl -G -H "X-Tapwire-Token: $TOKEN" "$D/api/har" --data-urlencode 'filter=~bq needle' |
    python3 -c 'import json, sys
print(" ".join(e["request"]["url"] for e in json.load(sys.stdin)["log"]["entries"]))')
check_eq "the HAR export honours the expression" "$O/echo" "$har"

finish
