#!/bin/bash
# HAR import and filtered export against a real proxy: POST /api/har needs
# the token header, a same-origin request, a JSON Content-Type and a body
# under 32 MiB; a file that is not HAR gets 400; the flows of an exported
# HAR come back as new flows marked imported, whose export gives the same
# entries; "Export all" with the list's filters holds what the list shows
# (tapwire(1), JSON API).
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=har-import-test-token-0123456789

# post NAME FILE [CURL_ARGS...]: POST FILE to /api/har; prints the status,
# the answer in $tmp/post-NAME.json.
post() {
    local name=$1 file=$2
    shift 2
    dcurl -o "$tmp/post-$name.json" -w '%{http_code}' -X POST --data-binary @"$file" "$@" \
        "$D/api/har"
}

# jfile FILE EXPR: a Python expression over the JSON document d in FILE.
jfile() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
print(eval(sys.argv[2]))' "$1" "$2" 2>&1
}

start_origin ORIGIN_PORT
start_proxy --dashboard 127.0.0.1:0 --dashboard-token "$TOKEN"
dashboard_port
O=http://127.0.0.1:$ORIGIN_PORT
H=(-H "X-Tapwire-Token: $TOKEN")
J=(-H 'Content-Type: application/json')

pcurl -o /dev/null "$O/headers?marker=one" || fail "GET /headers through the proxy"
pcurl -o /dev/null --data-binary 'posted body text' "$O/echo" || fail "POST /echo through the proxy"
pcurl -o /dev/null "$O/bytes/300" || fail "GET /bytes/300 through the proxy"
check "three flows written" wait_written 3

check_eq "export all: 200" 200 \
    "$(dcurl -o "$tmp/all.har" -w '%{http_code}' "${H[@]}" "$D/api/har")"
check_eq "export all: three entries" 3 "$(jfile "$tmp/all.har" 'len(d["log"]["entries"])')"
check_eq "export with the list's filter q=echo: 200" 200 \
    "$(dcurl -o "$tmp/echo.har" -w '%{http_code}' "${H[@]}" "$D/api/har?q=ECHO")"
check_eq "export with q=echo: only /echo" "['/echo']" \
    "$(jfile "$tmp/echo.har" '[e["request"]["url"].split(str('"$ORIGIN_PORT"'))[1] for e in d["log"]["entries"]]')"
check_eq "export with body=posted: only /echo" 1 \
    "$(dcurl "${H[@]}" "$D/api/har?body=posted+body" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["log"]["entries"]))')"
check_eq "export with a bad status filter: 400" 400 \
    "$(dcurl -o /dev/null -w '%{http_code}' "${H[@]}" "$D/api/har?status=9xx")"

check_eq "import without the token: 401" 401 "$(post no-token "$tmp/all.har" "${J[@]}")"
check_eq "import from another origin: 403" 403 \
    "$(post cross "$tmp/all.har" "${H[@]}" "${J[@]}" -H 'Origin: http://evil.test')"
check_eq "import that is not JSON: 415" 415 \
    "$(post type "$tmp/all.har" "${H[@]}" -H 'Content-Type: text/plain')"
printf 'not a HAR file' > "$tmp/junk"
check_eq "import of junk: 400" 400 "$(post junk "$tmp/junk" "${H[@]}" "${J[@]}")"
check_contains "import of junk: says why" "not a HAR file" "$(jfile "$tmp/post-junk.json" 'd["error"]')"
head -c $((33 * 1024 * 1024)) /dev/zero > "$tmp/big"
check_eq "import over 32 MiB: 413" 413 "$(post big "$tmp/big" "${H[@]}" "${J[@]}" 2> /dev/null)"
check_eq "nothing imported so far" 3 "$(dash_json /api/stats 'd["stored"]')"

check_eq "import of the export: 200" 200 \
    "$(post ok "$tmp/all.har" "${H[@]}" "${J[@]}" -H "Origin: $D")"
check_eq "import: three imported, none skipped" "3 0" \
    "$(jfile "$tmp/post-ok.json" '"%d %d" % (d["imported"], d["skipped"])')"
check_eq "six flows listed, three marked imported" "6 3" \
    "$(dash_json /api/flows '"%d %d" % (len(d["flows"]), sum(f["imported"] for f in d["flows"]))')"
ids=$(dash_json /api/flows '",".join(str(f["id"]) for f in d["flows"] if f["imported"])')
check_eq "export of the imported flows: 200" 200 \
    "$(dcurl -o "$tmp/again.har" -w '%{http_code}' "${H[@]}" "$D/api/har?ids=$ids")"
check_eq "export -> import -> export gives the same entries" "True" \
    "$(python3 -c 'import json, sys
def entries(p):
    es = json.load(open(p))["log"]["entries"]
    for e in es:
        e.pop("_tapwire_id", None)
    return es
a, b = entries(sys.argv[1]), entries(sys.argv[2])
print(a == b)
for x, y in zip(a, b):
    if x != y:
        print(json.dumps(x, sort_keys=True))
        print(json.dumps(y, sort_keys=True))' "$tmp/all.har" "$tmp/again.har")"
check_eq "the imported POST body is searchable" 2 \
    "$(dash_json '/api/flows?body=posted%20body' 'len(d["flows"])')"

finish
