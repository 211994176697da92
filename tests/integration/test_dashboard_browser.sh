#!/bin/bash
# The dashboard in a real browser: headless Chromium opens it with the token
# from tapwire's startup line while a second, proxied browser context loads an
# https page from the test origin through tapwire. The flow must appear in the
# open dashboard without a reload, and its detail must show the response body
# as text (and a JSON body pretty-printed), with no CSP violation on the way.
# Then a rewrite rule is made in the page's Rules view; the next page loaded
# through tapwire must come back rewritten, its flow marked as modified, and
# its Changes tab must show the original body beside the sent one.
# Screenshots of what a person sees (the flows, the Rules view) are kept
# (TEST_ARTIFACTS_DIR, or the test's temporary directory with KEEP_TMP=1).
#
# Chromium is started here, not by Playwright, so that this script owns its
# PID like every other process it starts; browser/dashboard.test.mjs connects
# to it over CDP (playwright-core, pinned in browser/package-lock.json, and
# installed with `npm ci` on first use).
#
# Environment: CHROMIUM (default /usr/bin/chromium), TEST_ARTIFACTS_DIR.
. "$(dirname "$0")/lib.sh"

WAIT_S=10 # bound for each step the page must take: the row, the body, ...

web_dir=$(cd "$TESTS_SRCDIR/../web" 2> /dev/null && pwd)

# ---- (f) the page never parses captured data as HTML ----
# app.js must build the DOM with createElement + textContent; none of the
# string-to-HTML sinks may appear in it at all (not even with static strings).
no_html_sinks() {
    [ -f "$web_dir/app.js" ] || {
        echo "no $web_dir/app.js"
        return 1
    }
    ! grep -nE 'innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(' \
        "$web_dir/app.js" "$web_dir/interact.js"
}
check "app.js and interact.js use no innerHTML, outerHTML, insertAdjacentHTML, document.write or eval" no_html_sinks

# The CSP forbids inline script and style: nothing of the kind in the page.
no_inline_code() {
    ! grep -nEi '<script[^>]*>[^<[:space:]]|<style|[[:space:]]style=|[[:space:]]on[a-z]+=' \
        "$web_dir/index.html"
}
check "index.html has no inline script, style or event handler" no_inline_code

# ---- tools ----
# Without a browser the test is skipped, unless a check above already failed
# (skip_browser in lib.sh).
browser_prepare dashboard.test.mjs

# ---- peers ----
make_pki
start_origin ORIGIN_PORT --tls "$PKI/good.pem" "$PKI/good-key.pem"
# A --rule that matches nothing here: the Rules view must list it read-only.
STATIC_RULE="response header X-Static-Check set path=/never-requested 'on'"
start_proxy --upstream-ca "$PKI/ca.pem" --dashboard 127.0.0.1:0 --rule "$STATIC_RULE"

# "dashboard: http://127.0.0.1:PORT/?token=TOKEN" on stdout, with the bound port.
dash_re='^dashboard: http://127\.0\.0\.1:[0-9]+/\?token=[0-9A-Za-z]+'
wait_for_grep "$PROXY_OUT" "$dash_re" "$WAIT_S" ||
    bail "tapwire printed no '$dash_re' line within ${WAIT_S}s; stdout: $(head -c 600 "$PROXY_OUT"); stderr: $(tail -n 10 "$PROXY_ERR")"
DASH_URL=$(grep -aEo -m 1 "$dash_re" "$PROXY_OUT")
DASH_URL=${DASH_URL#dashboard: }
check_no_match "the dashboard line names the bound port, not :0" '^http://127\.0\.0\.1:0/' "$DASH_URL"
note "dashboard: ${DASH_URL%%\?*}"

# ---- the browser ----
# Trust: a fresh NSS database in a throwaway HOME holding tapwire's CA as a
# trusted TLS root, the same thing a person does with "Trust the CA"; Chromium
# on Linux takes user-added roots from ~/.pki/nssdb. The browser then checks
# the minted leaf like any other certificate (chain, IP SAN, validity, key
# usage), so a minting bug fails here. Only without certutil (libnss3-tools)
# does the test fall back to --ignore-certificate-errors-spki-list with the
# hash of tapwire's one leaf key, which accepts that leaf whatever is wrong
# with it.
home=$tmp/home
profile=$tmp/chromium-profile
mkdir -p "$home/.pki/nssdb" "$profile" || bail "mkdir $home"
trust_args=()
if command -v certutil > /dev/null 2>&1; then
    if ! certutil -N -d "sql:$home/.pki/nssdb" --empty-password > "$tmp/certutil.log" 2>&1 ||
        ! certutil -A -d "sql:$home/.pki/nssdb" -n "tapwire test CA" -t "C,," -i "$PROXY_CA" \
            >> "$tmp/certutil.log" 2>&1; then
        bail "certutil could not trust $PROXY_CA: $(cat "$tmp/certutil.log")"
    fi
    note "trust: tapwire's CA in a fresh NSS database"
else
    spki=$(openssl pkey -in "$PROXY_DATA/leaf-key.pem" -pubout -outform der |
        openssl dgst -sha256 -binary | base64) || bail "cannot hash $PROXY_DATA/leaf-key.pem"
    trust_args=("--ignore-certificate-errors-spki-list=$spki")
    note "trust: certutil is missing; pinning tapwire's leaf key ($spki)"
fi

# No global proxy: the dashboard context connects directly; the driver gives
# the other context tapwire as its proxy.
start_chromium "$home" "$profile" ${trust_args[@]+"${trust_args[@]}"}

# ---- the driver ----
artifacts=${TEST_ARTIFACTS_DIR:-$tmp}
mkdir -p "$artifacts" || bail "mkdir $artifacts"
shot=$artifacts/dashboard.png
shot_rules=$artifacts/dashboard-rules.png
shot_changes=$artifacts/dashboard-changes.png
marker=e2e$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
results=$tmp/browser-results.tsv

CDP_URL=http://127.0.0.1:$CDP_PORT DASHBOARD_URL=$DASH_URL \
    PROXY_SERVER=http://127.0.0.1:$PROXY_PORT ORIGIN=https://127.0.0.1:$ORIGIN_PORT \
    MARKER=$marker SCREENSHOT=$shot SCREENSHOT_RULES=$shot_rules \
    SCREENSHOT_CHANGES=$shot_changes STATIC_RULE="$STATIC_RULE" \
    RESULTS=$results WAIT_MS=$((WAIT_S * 1000)) TMPDIR=$tmp \
    node "$browser_dir/dashboard.test.mjs" > "$tmp/driver.out" 2>&1 < /dev/null &
driver_pid=$!
track_pid "$driver_pid"
wait_pid "$driver_pid" 180
driver_rc=$?
sed -n 's/^# /# driver: /p' "$tmp/driver.out"
check_eq "the browser driver finished within 180 s and exited 0" 0 "$driver_rc"
[ "$driver_rc" = 0 ] || _show "$(tail -n 30 "$tmp/driver.out")"

# The driver asked Chromium to quit; make sure (it reaps its helpers itself
# on a clean exit, unlike after a signal).
stop_pid "$CHROMIUM_PID" 10

browser_results "$results"
check_le "the driver ran its checks" 14 "$browser_ran"

for f in "$shot" "$shot_rules"; do
    if [ -s "$f" ]; then
        note "screenshot: $f"
    else
        fail "a screenshot was saved" "no $f"
    fi
done
[ -z "${TEST_ARTIFACTS_DIR:-}" ] && [ "${KEEP_TMP:-0}" != 1 ] &&
    note "(set TEST_ARTIFACTS_DIR or KEEP_TMP=1 to keep the screenshots)"

# The browser reached the origin through tapwire, never around it.
check "the origin saw the proxied page request" grep -q "GET /headers?marker=$marker" "$ORIGIN_PORT_LOG"
# Only when the page could add the rule (the driver reported it either way).
if grep -q $'^PASS\ta rule added through the page' "$results"; then
    check "the origin saw the request made after the rule was added" \
        grep -q "GET /conn?marker=$marker" "$ORIGIN_PORT_LOG"
fi
check "tapwire is still alive" _alive "$PROXY_PID"

finish
