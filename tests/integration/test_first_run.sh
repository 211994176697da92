#!/bin/bash
# What a new user sees first: the start-up text names where to get the CA
# (http://tapwire.invalid/ through the proxy, and the dashboard's /ca page,
# which answers without the token), a port already in use suggests
# --listen instead of only saying so, and the man page's Chromium recipe
# works in a home where Chromium never ran, and the dashboard token survives a
# restart (kept in the data directory, mode 0600) until --new-dashboard-token.
. "$(dirname "$0")/lib.sh"

start_origin ORIGIN_PORT
start_proxy
out=$(cat "$PROXY_OUT")
check_contains "start-up names the CA page through the proxy" "http://tapwire.invalid/" "$out"
ca_page=$(sed -n 's/^CA page: //p' "$PROXY_OUT" | head -n 1)
check_match "start-up names the dashboard's CA page" '^http://127\.0\.0\.1:[0-9]+/ca$' "$ca_page"
if [ -n "$ca_page" ]; then
    code=$(dcurl -o "$tmp/ca-page.html" -w '%{http_code}' "$ca_page")
    check_eq "the CA page printed at start answers without the token" 200 "$code"
    check_contains "the CA page offers the certificate" "ca.pem" "$(cat "$tmp/ca-page.html")"
fi
code=$(pcurl -o "$tmp/invalid.html" -w '%{http_code}' http://tapwire.invalid/)
check_eq "http://tapwire.invalid/ through the proxy answers" 200 "$code"

# ---- a port in use ----
out=$(timeout 20 "$TAPWIRE_BIN" --listen "127.0.0.1:$PROXY_PORT" --data-dir "$tmp/data-2" \
    --no-dashboard < /dev/null 2>&1)
rc=$?
check_eq "a port in use: exit 1" 1 "$rc"
check_contains "a port in use: says so" "Address already in use" "$out"
check_contains "a port in use: suggests --listen" "--listen" "$out"

# ---- the man page's Chromium recipe, as printed, in a fresh home ----
if command -v certutil > /dev/null 2>&1; then
    man_page=$TESTS_SRCDIR/../man/tapwire.1
    # The command lines of the "Chromium (Linux)" entry, roff escapes undone.
    sed -n '/^Chromium (Linux)/,/^\.TP/p' "$man_page" | grep '^\\fB' |
        sed 's/\\f[BRI]//g; s/\\-/-/g' > "$tmp/recipe.sh"
    check_eq "the recipe has its three commands" 3 "$(wc -l < "$tmp/recipe.sh")"
    mkdir -p "$tmp/fresh-home"
    (cd "$PROXY_DATA" && HOME=$tmp/fresh-home timeout 30 bash -e "$tmp/recipe.sh") \
        > "$tmp/recipe.log" 2>&1
    check_eq "the recipe runs in a home where Chromium never ran" 0 "$?"
    listed=$(certutil -d "sql:$tmp/fresh-home/.pki/nssdb" -L 2>&1)
    check_match "the CA is then trusted for TLS servers" '^tapwire +C,,' "$listed"
    (cd "$PROXY_DATA" && HOME=$tmp/fresh-home timeout 30 bash -e "$tmp/recipe.sh") \
        > "$tmp/recipe-again.log" 2>&1
    check_eq "the recipe runs again on the existing database" 0 "$?"
else
    note "certutil missing: the Chromium recipe is not tried"
fi

# ---- the dashboard token across restarts ----
token_of() { grep -aEo -m 1 'token=[A-Za-z0-9._~-]+' "$PROXY_OUT" | cut -d= -f2; }
first_token=$(token_of)
check_match "the first start prints a token" '^[0-9a-f]{32}$' "$first_token"
check_eq "the token is kept in the data directory" "$first_token" \
    "$(cat "$PROXY_DATA/dashboard-token" 2> /dev/null)"
check_eq "the kept token is private (0600)" 600 "$(stat -c %a "$PROXY_DATA/dashboard-token")"
stop_proxy
start_proxy
check_eq "a restart keeps the token, so open tabs keep working" "$first_token" "$(token_of)"
dport=$(grep -aEo -m 1 '^dashboard: http://127\.0\.0\.1:[0-9]+' "$PROXY_OUT" | grep -Eo '[0-9]+$')
code=$(dcurl -o /dev/null -w '%{http_code}' -H "X-Tapwire-Token: $first_token" \
    "http://127.0.0.1:$dport/api/stats")
check_eq "the old token opens the restarted dashboard" 200 "$code"
stop_proxy
start_proxy --new-dashboard-token
new_token=$(token_of)
check_match "--new-dashboard-token prints a new token" '^[0-9a-f]{32}$' "$new_token"
check "--new-dashboard-token replaces the old one" test "$new_token" != "$first_token"
check_eq "the new token is the kept one" "$new_token" "$(cat "$PROXY_DATA/dashboard-token")"
stop_proxy
start_proxy --dashboard 127.0.0.1:0 --dashboard-token given-on-the-command-line-0123
check_eq "--dashboard-token is used as given" given-on-the-command-line-0123 "$(token_of)"
check_eq "--dashboard-token leaves the kept token alone" "$new_token" \
    "$(cat "$PROXY_DATA/dashboard-token")"
stop_proxy
chmod 644 "$PROXY_DATA/dashboard-token"
out=$(timeout 20 "$TAPWIRE_BIN" --listen 127.0.0.1:0 --data-dir "$PROXY_DATA" \
    --dashboard 127.0.0.1:0 < /dev/null 2>&1)
check_eq "a kept token readable by others: tapwire refuses to start" 1 "$?"
check_contains "and says why" "may be known to other users" "$out"

finish
