#!/bin/bash
# Intercept through the real binary (tapwire-filters(7), tapwire(1)
# INTERCEPT): a request matching --intercept waits until the dashboard's
# API resumes it, edited (the origin's /headers and /echo show what
# arrived) or not, or drops it (it never reaches the origin, the client
# gets tapwire's 502); --intercept-timeout resumes it unchanged; a client
# that hangs up ends the wait; a body that was not held cannot be edited
# (409); resume-all; a response held and its head edited, or its body
# (decoded; a body over the limit is not held), or dropped; ~bs matched on
# the response body; the filter set
# over PUT /api/intercept, a bad one refused with its column.
. "$(dirname "$0")/lib.sh"

need_cmd python3

TOKEN=intercept-test-token-0123456789

start_origin ORIGIN_PORT
start_proxy --dashboard-token "$TOKEN" --intercept 'held' --intercept-timeout 10
dashboard_port
O=http://127.0.0.1:$ORIGIN_PORT
H=(-H "X-Tapwire-Token: $TOKEN" -H "Origin: $D")

# newest_flow EXPR: EXPR over the detail d of the newest flow.
newest_flow() {
    local id
    id=$(dash_json '/api/flows?limit=1' 'd["flows"][0]["id"]')
    dash_json "/api/flows/$id" "$1"
}

origin_saw() { grep -c -- "$1" "$ORIGIN_PORT_LOG"; }

check_eq "GET /api/intercept: the filter of --intercept" "held" \
    "$(dash_json /api/intercept 'd["filter"]')"
check_eq "a bad filter: 400" 400 "$(dsend PUT /api/intercept '{"filter": "~c 2xx &"}')"
check_contains "a bad filter: the parser's column" "column" "$(answer 'd["error"]')"
check_eq "the bad filter left the old one" "held" "$(dash_json /api/intercept 'd["filter"]')"
check_eq "resume of nothing waiting: 404" 404 "$(dsend POST /api/flows/999/resume)"

# A request that does not match goes straight on.
check_eq "not matching: answered at once" 200 \
    "$(pcurl -o /dev/null -w '%{http_code}' --max-time 3 "$O/headers?free=1")"

# Held, edited (method stays, URL's query, a header added), resumed.
pcurl -o "$tmp/edited.out" "$O/headers?held=1" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the request waits" wait_held 1
check_eq "the origin has not seen it yet" 0 "$(origin_saw 'held=1')"
check_eq "waiting: a request" "request" "$(dash_json /api/intercepted 'd["flows"][0]["side"]')"
check_eq "waiting: its URL" "$O/headers?held=1" "$(dash_json /api/intercepted 'd["flows"][0]["url"]')"
check_contains "waiting: its headers" "User-Agent" \
    "$(dash_json /api/intercepted '[h[0] for h in d["flows"][0]["headers"]]')"
ID=$(held_id)
check_eq "another host in the URL: 400" 400 \
    "$(dsend POST "/api/flows/$ID/resume" '{"url": "http://example.com/headers"}')"
check_eq "resume with edits: 200" 200 "$(dsend POST "/api/flows/$ID/resume" \
    "{\"url\": \"$O/headers?held=1&edited=1\", \"headers\": [[\"User-Agent\", \"curl\"], [\"X-Edited\", \"yes\"]]}")"
wait_pid "$CURL_PID" 5
check_eq "the client got its answer" 0 "$?"
check_contains "the origin got the edited target" "GET /headers?held=1&edited=1 HTTP/1.1" \
    "$(cat "$tmp/edited.out")"
check_contains "the origin got the added header" "X-Edited: yes" "$(cat "$tmp/edited.out")"
check "flow written" wait_written 2
check_contains "flow: sent headers" "X-Edited" "$(newest_flow 'd["request"]["headers"]')"
check_not_contains "flow: the original headers as received" "X-Edited" \
    "$(newest_flow 'd["original"]["request_headers"]')"
check_contains "flow: marked as changed by the intercept" "intercept" "$(newest_flow 'd["rules"]')"
check_contains "flow: the note" "resumed edited" "$(newest_flow 'd["rules_notes"]')"

# A POST with a body: held with it, the body edited, sent with its length.
pcurl -o "$tmp/echo.out" --data-binary 'original body' "$O/echo?held=2" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the POST waits" wait_held 1
check_eq "waiting: its body" "original body" "$(dash_json /api/intercepted 'd["flows"][0]["body"]')"
ID=$(held_id)
check_eq "resume with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "the edited, longer body"}')"
wait_pid "$CURL_PID" 5
check_eq "the POST's client got its answer" 0 "$?"
check_eq "the origin echoed the edited body" "the edited, longer body" "$(cat "$tmp/echo.out")"

# Dropped: never reaches the origin; the client gets tapwire's 502.
pcurl -o "$tmp/drop.out" -w '%{http_code}' "$O/headers?held=drop" > "$tmp/drop.code" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the request to drop waits" wait_held 1
ID=$(held_id)
check_eq "drop: 200" 200 "$(dsend POST "/api/flows/$ID/drop")"
wait_pid "$CURL_PID" 5
check_eq "the dropped client got its answer" 0 "$?"
check_eq "dropped: 502" 502 "$(cat "$tmp/drop.code")"
check_contains "dropped: tapwire's page says why" "dropped while intercepted" "$(cat "$tmp/drop.out")"
check_eq "dropped: never reached the origin" 0 "$(origin_saw 'held=drop')"
check "dropped flow written" wait_written 4
check_eq "dropped flow: 502" 502 "$(newest_flow 'd["status"]')"
check_contains "dropped flow: the note" "dropped" "$(newest_flow 'd["rules_notes"]')"

# Nobody answers: --intercept-timeout (10 s: held flows are edited meanwhile, and on a loaded machine that takes seconds) sends it on unchanged.
start=$(now_ms)
code=$(pcurl -o /dev/null -w '%{http_code}' --max-time 25 "$O/headers?held=timeout")
elapsed=$(($(now_ms) - start))
check_eq "timed out: answered by the origin" 200 "$code"
check_le "timed out: not before the timeout" 9900 "$elapsed"
check_le "timed out: soon after it" "$elapsed" 16000
check "timed-out flow written" wait_written 5
check_contains "timed-out flow: the note" "intercept-timeout" "$(newest_flow 'd["rules_notes"]')"

# The client hangs up while it waits: the wait ends at once, nothing sent.
start=$(now_ms)
pcurl -o /dev/null --max-time 1 "$O/headers?held=gone" 2> /dev/null
check "a hung-up client's request leaves the room" wait_held 0
check_le "it left before the timeout" "$(($(now_ms) - start))" 3500
check_eq "a hung-up client's request never reached the origin" 0 "$(origin_saw 'held=gone')"
check "hung-up flow written" wait_written 6
check_contains "hung-up flow: why" "hung up" "$(newest_flow 'd["error"]')"

# A chunked body is not held: its head can be edited, its body not (409).
printf 'chunked body' > "$tmp/chunked.txt"
pcurl -o "$tmp/chunked.out" -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/chunked.txt" \
    "$O/echo?held=chunked" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the chunked POST waits" wait_held 1
check_eq "waiting: its body not held" "False" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body_held"]')"
ID=$(held_id)
check_eq "a body edit of a body not held: 409" 409 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "x"}')"
check_eq "resume unchanged: 200" 200 "$(dsend POST "/api/flows/$ID/resume")"
wait_pid "$CURL_PID" 5
check_eq "the chunked client got its answer" 0 "$?"
check_eq "the chunked body went on whole" "chunked body" "$(cat "$tmp/chunked.out")"

# Resume-all.
pcurl -o /dev/null "$O/headers?held=a" &
P1=$!
pcurl -o /dev/null "$O/headers?held=b" &
P2=$!
track_pid "$P1"
track_pid "$P2"
check "two wait" wait_held 2
check_eq "resume-all: 200" 200 "$(dsend POST /api/intercepted/resume-all)"
check_eq "resume-all: two" 2 "$(answer 'd["resumed"]')"
wait_pid "$P1" 5
check_eq "both answered" 0 "$?"
wait_pid "$P2" 5
check_eq "both answered (2)" 0 "$?"

# Responses: a filter that reads the response holds the response head.
check_eq "PUT a response filter: 200" 200 \
    "$(dsend PUT /api/intercept '{"filter": "~s & ~u resp"}')"
pcurl -i -o "$tmp/resp.out" "$O/headers?resp=1" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the response waits" wait_held 1
check_eq "waiting: a response" "response" "$(dash_json /api/intercepted 'd["flows"][0]["side"]')"
check_eq "waiting: its status" 200 "$(dash_json /api/intercepted 'd["flows"][0]["status"]')"
check_eq "the origin answered already" 1 "$(origin_saw 'resp=1')"
ID=$(held_id)
check_eq "resume the response edited: 200" 200 "$(dsend POST "/api/flows/$ID/resume" \
    '{"status": 203, "headers": [["Content-Type", "text/plain"], ["X-Response-Edited", "1"]]}')"
wait_pid "$CURL_PID" 5
check_eq "the response's client got it" 0 "$?"
check_contains "the client got the edited status" "HTTP/1.1 203" "$(head -n 1 "$tmp/resp.out")"
check_contains "the client got the edited header" "X-Response-Edited: 1" "$(cat "$tmp/resp.out")"
check_contains "and the body" "GET /headers?resp=1" "$(cat "$tmp/resp.out")"

# A response with its body: held decoded (gzip, chunked), the body edited,
# sent with a Content-Length and without Content-Encoding; the flow keeps
# both bodies.
pcurl -i --raw -o "$tmp/respbody.out" "$O/compressed/gzip?n=2&chunked=1&resp=2" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the response with a body waits" wait_held 1
check_eq "waiting: its body held" "True" "$(dash_json /api/intercepted 'd["flows"][0]["body_held"]')"
check_contains "waiting: its body decoded" "Example Domain: this page is served compressed" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body"]')"
ID=$(held_id)
check_eq "resume the response with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "the edited response body\n"}')"
wait_pid "$CURL_PID" 5
check_eq "the edited response's client got it" 0 "$?"
check_contains "edited response: the new body" "the edited response body" "$(cat "$tmp/respbody.out")"
check_contains "edited response: its length" "Content-Length: 25" "$(tr -d '\r' < "$tmp/respbody.out")"
check_not_contains "edited response: not gzip any more" "Content-Encoding" "$(cat "$tmp/respbody.out")"
check_not_contains "edited response: not chunked any more" "Transfer-Encoding" \
    "$(cat "$tmp/respbody.out")"
check "edited response flow written" wait_written 11
FID=$(dash_json '/api/flows?limit=1' 'd["flows"][0]["id"]')
check_eq "flow: the body sent" "the edited response body" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$FID/response/body")"
check_contains "flow: the body as the origin sent it (decoded)" "Example Domain" \
    "$(dcurl -H "X-Tapwire-Token: $TOKEN" "$D/api/flows/$FID/response/body?original=1")"
check_contains "flow: the original headers" "gzip" "$(newest_flow 'd["original"]["response_headers"]')"
check_contains "flow: the note" "resumed edited" "$(newest_flow 'd["rules_notes"]')"

# Resumed with the body as shown: no edit, the gzip body goes on as it came.
pcurl -o "$tmp/respsame.out" --compressed "$O/compressed/gzip?n=2&resp=3" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the response to resume as shown waits" wait_held 1
ID=$(held_id)
dash_json /api/intercepted 'json.dumps({"body": d["flows"][0]["body"]})' > "$tmp/same.json"
check_eq "resume with the body unchanged: 200" 200 \
    "$(dsend POST "/api/flows/$ID/resume" "$(cat "$tmp/same.json")")"
wait_pid "$CURL_PID" 5
check_eq "the unchanged response's client got it" 0 "$?"
check_eq "unchanged: two lines, decoded by curl" 2 "$(grep -c 'Example Domain' "$tmp/respsame.out")"
check "unchanged response flow written" wait_written 12
check_not_contains "unchanged: not noted as edited" "edited" "$(newest_flow 'd["rules_notes"]')"
check_eq "unchanged: went on gzip" "gzip" \
    "$(newest_flow '[v for n, v in d["response"]["headers"] if n.lower() == "content-encoding"][0]')"

# A response body larger than the intercept limit is not held: its head is.
pcurl -o "$tmp/respbig.out" "$O/bytes/2000000?resp=4" &
CURL_PID=$!
track_pid "$CURL_PID"
check "the large response waits" wait_held 1
check_eq "waiting: its large body not held" "False" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body_held"]')"
ID=$(held_id)
check_eq "a body edit of a response body not held: 409" 409 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "x"}')"
check_eq "resume the large response: 200" 200 "$(dsend POST "/api/flows/$ID/resume")"
wait_pid "$CURL_PID" 10
check_eq "the large response's client got it" 0 "$?"
check_eq "the large body went on whole" 2000000 "$(stat -c %s "$tmp/respbig.out")"

# ~bs is matched on the response body (decoded): a gzip body that says it
# is held, one that does not goes on unheld.
check_eq "PUT a response body filter: 200" 200 \
    "$(dsend PUT /api/intercept '{"filter": "~bs served.compressed & ~u resp"}')"
check_eq "~bs: a body that does not match goes on" 200 \
    "$(pcurl -o /dev/null -w '%{http_code}' --max-time 5 "$O/headers?resp=6")"
pcurl -o "$tmp/respbs.out" --compressed "$O/compressed/gzip?n=2&resp=7" &
CURL_PID=$!
track_pid "$CURL_PID"
check "~bs: the body that matches waits" wait_held 1
check_contains "~bs: held with its body decoded" "served compressed" \
    "$(dash_json /api/intercepted 'd["flows"][0]["body"]')"
ID=$(held_id)
check_eq "~bs: resume with a new body: 200" 200 \
    "$(dsend POST "/api/flows/$ID/resume" '{"body": "edited after ~bs\n"}')"
wait_pid "$CURL_PID" 5
check_eq "~bs: the client got it" 0 "$?"
check_eq "~bs: the edited body" "edited after ~bs" "$(cat "$tmp/respbs.out")"
check_eq "PUT the response filter back: 200" 200 \
    "$(dsend PUT /api/intercept '{"filter": "~s & ~u resp"}')"

# Dropped at the response: the client gets tapwire's 502.
check_eq "dropped response: 502" 502 "$(
    pcurl -o /dev/null -w '%{http_code}' "$O/headers?resp=5" &
    P=$!
    wait_held 1 > /dev/null
    dsend POST "/api/flows/$(held_id)/drop" > /dev/null
    wait $P
)"

check_eq "PUT an empty filter turns it off" 200 "$(dsend PUT /api/intercept '{"filter": ""}')"
check_eq "off: answered at once" 200 \
    "$(pcurl -o /dev/null -w '%{http_code}' --max-time 3 "$O/headers?held=off")"

# Shutdown releases a waiting request (unchanged) rather than waiting it out.
check_eq "PUT the filter again" 200 "$(dsend PUT /api/intercept '{"filter": "held"}')"
pcurl -o /dev/null "$O/headers?held=shutdown" 2> /dev/null &
CURL_PID=$!
track_pid "$CURL_PID"
check "the last request waits" wait_held 1
start=$(now_ms)
stop_proxy
check_eq "the proxy stops cleanly" 0 "$?"
check_le "it stopped before the intercept timeout" "$(($(now_ms) - start))" 3500

finish
