#!/bin/bash
# Intercept and replay in a real browser (tapwire(1) INTERCEPT AND REPLAY):
# headless Chromium opens the dashboard, sets the intercept filter in the
# page, and loads a page from the plain HTTP test origin through tapwire in
# a second, proxied context. The request waits; its header is edited in
# the dashboard's editor and resumed, and the loaded page (the origin's
# /headers, which echoes the request it got) must show the edit; a held
# response's body edited in the editor must be what the page shows. Then the
# flow's detail view's Replay must add a flow whose replay_of names it.
#
# Chromium is started here (this script owns its PID); browser/
# intercept.test.mjs drives it over CDP with playwright-core from
# browser/node_modules (installed by test_dashboard_browser.sh with npm ci,
# or here when missing). Environment: CHROMIUM, TEST_ARTIFACTS_DIR.
. "$(dirname "$0")/lib.sh"

WAIT_S=10
TOKEN=intercept-browser-token-0123456789
browser_prepare intercept.test.mjs

# ---- peers ----
start_origin ORIGIN_PORT
start_proxy --dashboard-token "$TOKEN"
dashboard_port

start_chromium "$tmp" "$tmp/chromium-profile"

# ---- the driver ----
artifacts=${TEST_ARTIFACTS_DIR:-$tmp}
mkdir -p "$artifacts" || bail "mkdir $artifacts"
marker=ic$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
results=$tmp/browser-results.tsv

CDP_URL=http://127.0.0.1:$CDP_PORT DASHBOARD_URL="$D/?token=$TOKEN" \
    PROXY_SERVER=http://127.0.0.1:$PROXY_PORT ORIGIN=http://127.0.0.1:$ORIGIN_PORT \
    MARKER=$marker RESULTS=$results SCREENSHOT=$artifacts/intercept.png \
    WAIT_MS=$((WAIT_S * 1000)) \
    node "$browser_dir/intercept.test.mjs" > "$tmp/driver.out" 2>&1 < /dev/null &
driver_pid=$!
track_pid "$driver_pid"
wait_pid "$driver_pid" 150
driver_rc=$?
sed -n 's/^# /# driver: /p' "$tmp/driver.out"
check_eq "the browser driver finished within 150 s and exited 0" 0 "$driver_rc"
[ "$driver_rc" = 0 ] || _show "$(tail -n 30 "$tmp/driver.out")"
stop_pid "$CHROMIUM_PID" 10

browser_results "$results"
check_eq "the driver ran its ten checks" 10 "$browser_ran"

# What crossed the wire: the page's request reached the origin edited (and
# once more as the replay), never as Chromium sent it.
check_eq "the origin got the page's request twice (the load and the replay)" 2 \
    "$(grep -c "GET /headers?ic=$marker" "$ORIGIN_PORT_LOG")"
check "tapwire is still alive" _alive "$PROXY_PID"

finish
