#!/bin/bash
# Replay and compose through the real binary: POST /api/flows/ID/replay
# sends a stored GET and a stored POST with its body again, as they were
# and edited (the origin's /headers and /echo show what arrived), each as a
# new flow linked to its source; the rules apply to a replay as to any
# request; a body cut at --capture-limit is refused with 409 and never sent
# shortened; POST /api/replay sends a composed request; errors are clean.
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=replay-test-token-0123456789

start_origin ORIGIN_PORT
start_proxy --dashboard-token "$TOKEN" --capture-limit 4096 \
    --rule 'request header User-Agent set ruled-agent'
dashboard_port
O=http://127.0.0.1:$ORIGIN_PORT
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")

# response_body ID: the captured response body of flow ID.
response_body() { dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$1/response/body"; }

origin_saw() { grep -c -- "$1" "$ORIGIN_PORT_LOG"; }

newest_id() { dash_json '/api/flows?limit=1' 'd["flows"][0]["id"]'; }

# A GET, replayed as it was.
pcurl -o /dev/null "$O/headers?r=get" || fail "GET through the proxy"
check "the GET written" wait_written 1
GET_ID=$(newest_id)
check_eq "replay the GET: 200" 200 "$(dsend POST "/api/flows/$GET_ID/replay")"
NEW=$(answer 'd["id"]')
check_match "replay: the new flow's id" '^[0-9]+$' "$NEW"
check_eq "replay: a new flow" "True" "$(answer "d['id'] > $GET_ID")"
check_eq "the origin saw the GET twice" 2 "$(origin_saw 'r=get')"
check_eq "replay flow: 200" 200 "$(dash_json "/api/flows/$NEW" 'd["status"]')"
check_eq "replay flow: linked to its source" "$GET_ID" "$(dash_json "/api/flows/$NEW" 'd["replay_of"]')"
check_eq "replay flow: its client says so" "replay of #$GET_ID" \
    "$(dash_json "/api/flows/$NEW" 'd["client"]')"
check_contains "replay: the rules applied to it" "User-Agent: ruled-agent" "$(response_body "$NEW")"
check_eq "replay: one User-Agent" 1 "$(response_body "$NEW" | grep -c 'User-Agent')"

# The GET, edited: another query and a header.
check_eq "replay the GET edited: 200" 200 "$(dsend POST "/api/flows/$GET_ID/replay" \
    "{\"url\": \"$O/headers?r=edited\", \"headers\": [[\"Accept\", \"text/x-edited\"], [\"X-Replayed\", \"1\"]]}")"
NEW=$(answer 'd["id"]')
check_contains "edited: the origin got the new target" "GET /headers?r=edited HTTP/1.1" \
    "$(response_body "$NEW")"
check_contains "edited: the origin got the new header" "X-Replayed: 1" "$(response_body "$NEW")"
check_contains "edited: the headers replaced" "Accept: text/x-edited" "$(response_body "$NEW")"
check_not_contains "edited: the stored ones gone" "curl" "$(response_body "$NEW")"

# A POST with a body, replayed as it was and with a new body.
check_eq "POST through the proxy" "posted body" \
    "$(pcurl --data-binary 'posted body' "$O/echo?r=post")"
check "the POST written" wait_written 4
POST_ID=$(newest_id)
check_eq "replay the POST: 200" 200 "$(dsend POST "/api/flows/$POST_ID/replay")"
NEW=$(answer 'd["id"]')
check_eq "replay POST: the origin echoed the same body" "posted body" "$(response_body "$NEW")"
check_eq "replay the POST with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$POST_ID/replay" '{"body": "a longer, edited body"}')"
NEW=$(answer 'd["id"]')
check_eq "replay POST edited: the origin echoed the new body whole" "a longer, edited body" \
    "$(response_body "$NEW")"
check_eq "replay POST edited: its request body size" 21 \
    "$(dash_json "/api/flows/$NEW" 'd["request"]["body"]["size"]')"

# A body cut at --capture-limit: refused, never sent shortened.
head -c 10000 /dev/zero | tr '\0' 'a' > "$tmp/big.txt"
check_eq "a large POST through the proxy" 10000 \
    "$(pcurl --data-binary @"$tmp/big.txt" "$O/echo?r=big" | wc -c | tr -d ' ')"
check "the large POST written" wait_written 7
BIG_ID=$(newest_id)
check_eq "replay of a truncated body: 409" 409 "$(dsend POST "/api/flows/$BIG_ID/replay")"
check_contains "409: says why" "capture limit" "$(answer 'd["error"]')"
check_eq "the origin saw the large POST once" 1 "$(origin_saw 'r=big')"
check_eq "with a whole body given it goes: 200" 200 \
    "$(dsend POST "/api/flows/$BIG_ID/replay" '{"body": "short and whole"}')"
check_eq "the origin saw it a second time" 2 "$(origin_saw 'r=big')"

# Compose: a request made in the dashboard.
check_eq "compose: 200" 200 \
    "$(dsend POST /api/replay "{\"method\": \"POST\", \"url\": \"$O/echo?r=composed\", \"headers\": [[\"Content-Type\", \"text/plain\"]], \"body\": \"composed body\"}")"
NEW=$(answer 'd["id"]')
check_eq "compose: the origin echoed the body" "composed body" "$(response_body "$NEW")"
check_eq "compose: its client" "composed" "$(dash_json "/api/flows/$NEW" 'd["client"]')"
check_eq "compose: no source" "None" "$(dash_json "/api/flows/$NEW" 'd["replay_of"]')"

# Clean refusals.
check_eq "no such flow: 404" 404 "$(dsend POST /api/flows/999999/replay)"
check_eq "compose without a url: 400" 400 "$(dsend POST /api/replay '{"method": "GET"}')"
check_eq "a bad method: 400" 400 \
    "$(dsend POST /api/replay "{\"method\": \"GE T\", \"url\": \"$O/headers\"}")"
check_eq "not JSON: 400" 400 "$(dsend POST "/api/flows/$GET_ID/replay" '{nope')"
check_eq "a replay to tapwire's own dashboard: refused by the guard (flow says 508)" 200 \
    "$(dsend POST /api/replay "{\"url\": \"$D/api/stats\"}")"
NEW=$(answer 'd["id"]')
check_match "the refused replay's status" '^(403|508)$' "$(dash_json "/api/flows/$NEW" 'd["status"]')"
check_eq "without the token: 401" 401 \
    "$(dcurl -o /dev/null -w '%{http_code}' -X POST -H "Origin: $D" "$D/api/flows/$GET_ID/replay")"
check_eq "from another origin: 403" 403 \
    "$(dcurl -o /dev/null -w '%{http_code}' -X POST -H "X-Tapwire-Token: $TOKEN" \
        -H 'Origin: http://evil.example' "$D/api/flows/$GET_ID/replay")"

finish
