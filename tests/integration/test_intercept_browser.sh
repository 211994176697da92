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
browser_src=$TESTS_SRCDIR/integration/browser

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || skip_all "chromium is not installed ($CHROMIUM; Debian: apt-get install chromium)"
command -v node > /dev/null 2>&1 || skip_all "node is not installed (Debian: apt-get install nodejs)"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2> /dev/null)
[ "${node_major:-0}" -ge 20 ] 2> /dev/null ||
    skip_all "node $(node --version 2> /dev/null) is too old: playwright-core needs node >= 20"

# node_modules beside package.json; a read-only source tree (distcheck)
# gets a copy in the temporary directory.
if [ -w "$browser_src" ]; then
    browser_dir=$browser_src
else
    browser_dir=$tmp/browser
    mkdir -p "$browser_dir" || bail "mkdir $browser_dir"
    cp "$browser_src/package.json" "$browser_src/package-lock.json" \
        "$browser_src/intercept.test.mjs" "$browser_dir/" || bail "cannot copy $browser_src"
fi
if [ ! -f "$browser_dir/node_modules/playwright-core/package.json" ]; then
    command -v npm > /dev/null 2>&1 ||
        skip_all "npm is not installed and $browser_dir/node_modules is missing (Debian: apt-get install npm)"
    note "installing playwright-core into $browser_dir/node_modules (npm ci)"
    (cd "$browser_dir" && timeout 300 npm ci --no-audit --no-fund) > "$tmp/npm.log" 2>&1 ||
        bail "npm ci failed in $browser_dir: $(tail -n 20 "$tmp/npm.log")"
fi

# ---- peers ----
start_origin ORIGIN_PORT
start_proxy --dashboard-token "$TOKEN"
dashboard_port

profile=$tmp/chromium-profile
mkdir -p "$profile" || bail "mkdir $profile"
HOME=$tmp XDG_CONFIG_HOME=$tmp/.config XDG_CACHE_HOME=$tmp/.cache \
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --disable-extensions --no-default-browser-check \
    --password-store=basic --use-mock-keychain \
    --user-data-dir="$profile" --remote-debugging-port=0 about:blank \
    > "$tmp/chromium.log" 2>&1 < /dev/null &
CHROMIUM_PID=$!
track_pid "$CHROMIUM_PID"
for ((i = 0; i < 400; i++)); do
    [ -s "$profile/DevToolsActivePort" ] && break
    _alive "$CHROMIUM_PID" || break
    sleep 0.05
done
CDP_PORT=$(head -n 1 "$profile/DevToolsActivePort" 2> /dev/null)
[[ $CDP_PORT =~ ^[0-9]+$ ]] ||
    bail "chromium did not open its debugging port within 20 s: $(tail -n 20 "$tmp/chromium.log")"

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

ran=0
[ -f "$results" ] || : > "$results"
while IFS=$'\t' read -r verdict name detail; do
    case $verdict in
    PASS) pass "browser: $name" ;;
    FAIL) fail "browser: $name" "$detail" ;;
    *) continue ;;
    esac
    ran=$((ran + 1))
done < "$results"
check_eq "the driver ran its ten checks" 10 "$ran"

# What crossed the wire: the page's request reached the origin edited (and
# once more as the replay), never as Chromium sent it.
check_eq "the origin got the page's request twice (the load and the replay)" 2 \
    "$(grep -c "GET /headers?ic=$marker" "$ORIGIN_PORT_LOG")"
check "tapwire is still alive" _alive "$PROXY_PID"

finish
