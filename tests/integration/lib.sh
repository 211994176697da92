# lib.sh: sourced by every integration test (bash).
#
# Gives each test a temporary directory, starts the test origin and the real
# tapwire binary on ephemeral loopback ports, records every process it starts
# and kills them by PID at exit (TERM, then KILL after a bound), and counts
# checks. Every wait is bounded; nothing listens anywhere but 127.0.0.1.
#
# Exit codes (automake): 0 all checks passed, 1 a check failed, 77 skipped
# (a tool is missing), 99 hard error (the proxy or the origin could not run).
#
# Environment (exported by Makefile.am's AM_TESTS_ENVIRONMENT; defaulted here
# for manual runs, e.g. `bash tests/integration/test_proxy_http.sh`):
#   TAPWIRE_BIN      the proxy binary
#   TEST_ORIGIN_BIN  tests/integration/origin (built from origin.c if absent)
#   TESTS_SRCDIR     the source tree's tests/ directory
#   KEEP_TMP=1       keep the test's temporary directory for a post-mortem

set -u
set -o pipefail
export LC_ALL=C

# Nothing from the caller's environment may steer curl or OpenSSL elsewhere.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
unset SSLKEYLOGFILE CURL_CA_BUNDLE SSL_CERT_FILE SSL_CERT_DIR

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_top=$(cd "$LIB_DIR/../.." && pwd)

BIG=16777216 # 16 MiB, the size of the large transfers

_passed=0
_failed=0
_pids=()
_origin_count=0
_proxy_count=0
_test_name=$(basename "$0" .sh)

note() { printf '# %s\n' "$*"; }

# Hard error: the test could not run at all.
bail() {
    printf 'Bail out! %s\n' "$*"
    exit 99
}

skip_all() {
    printf 'SKIP: %s\n' "$*"
    exit 77
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" > /dev/null 2>&1 || skip_all "$c is not installed"
    done
}

need_cmd curl openssl sha256sum timeout mktemp

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tapwire-$_test_name.XXXXXX") || bail "mktemp failed"
tmp=$(cd "$tmp" && pwd) # absolute, whatever TMPDIR was

# ---- process tracking and cleanup ----

track_pid() { _pids+=("$1"); }

_alive() { kill -0 "$1" 2> /dev/null; }

# stop_pid PID [BOUND_S]: TERM, wait up to BOUND_S (default 10) seconds, then
# KILL. Returns the process's exit status (128+N if killed by signal N).
stop_pid() {
    local pid=$1 bound=${2:-10} i
    kill -TERM "$pid" 2> /dev/null
    for ((i = 0; i < bound * 20; i++)); do
        _alive "$pid" || break
        sleep 0.05
    done
    if _alive "$pid"; then
        note "PID $pid ignored SIGTERM for ${bound}s; killing it"
        kill -KILL "$pid" 2> /dev/null
    fi
    wait "$pid" 2> /dev/null
}

_cleanup() {
    local rc=$? pid i any
    trap - EXIT INT TERM
    for pid in ${_pids[@]+"${_pids[@]}"}; do
        kill -TERM "$pid" 2> /dev/null
    done
    for ((i = 0; i < 100; i++)); do
        any=0
        for pid in ${_pids[@]+"${_pids[@]}"}; do
            _alive "$pid" && any=1
        done
        [ "$any" = 0 ] && break
        sleep 0.05
    done
    for pid in ${_pids[@]+"${_pids[@]}"}; do
        kill -KILL "$pid" 2> /dev/null
        wait "$pid" 2> /dev/null
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        note "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- binaries ----

_first_existing() {
    local f
    for f in "$@"; do
        if [ -x "$f" ]; then
            printf '%s\n' "$f"
            return 0
        fi
    done
    printf '%s\n' "$1"
}

: "${TESTS_SRCDIR:=$_top/tests}"
: "${TAPWIRE_BIN:=$(_first_existing "$_top/tapwire" "$_top/tapwire-build/tapwire" \
    "$_top/build/tapwire" "$_top/_build/tapwire")}"
if [ -z "${TEST_ORIGIN_BIN:-}" ]; then
    TEST_ORIGIN_BIN=$(_first_existing "$_top/tests/integration/origin" \
        "$_top/tapwire-build/tests/integration/origin" "$_top/build/tests/integration/origin" \
        "$_top/_build/tests/integration/origin")
    # A manual run without a build tree: compile the origin for this test.
    if [ ! -x "$TEST_ORIGIN_BIN" ] && command -v cc > /dev/null 2>&1 &&
        command -v pkg-config > /dev/null 2>&1; then
        # shellcheck disable=SC2046
        cc -std=c11 -O1 -o "$tmp/origin" "$TESTS_SRCDIR/integration/origin.c" \
            $(pkg-config --cflags --libs openssl) -pthread ||
            bail "cannot build the test origin from $TESTS_SRCDIR/integration/origin.c"
        TEST_ORIGIN_BIN=$tmp/origin
    fi
fi
export TAPWIRE_BIN TEST_ORIGIN_BIN TESTS_SRCDIR
[ -x "$TEST_ORIGIN_BIN" ] || bail "test origin not found: $TEST_ORIGIN_BIN"

# ---- checks ----

_show() {
    # Details of a failure, indented, bounded, control bytes made visible.
    printf '%s\n' "$1" | head -c 2000 | cat -v | sed 's/^/#     /'
}

pass() {
    _passed=$((_passed + 1))
    printf 'ok - %s\n' "$1"
}

fail() {
    local name=$1
    shift
    _failed=$((_failed + 1))
    printf 'not ok - %s\n' "$name"
    while [ $# -gt 0 ]; do
        _show "$1"
        shift
    done
}

# check NAME CMD...: passes when CMD exits 0.
check() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        pass "$name"
    else
        fail "$name" "command: $* (exit $rc)" "$out"
    fi
}

check_eq() {
    if [ "$2" = "$3" ]; then
        pass "$1"
    else
        fail "$1" "expected: $2" "actual:   $3"
    fi
}

check_contains() {
    if [[ $3 == *"$2"* ]]; then
        pass "$1"
    else
        fail "$1" "expected to contain: $2" "in: $3"
    fi
}

check_not_contains() {
    if [[ $3 != *"$2"* ]]; then
        pass "$1"
    else
        fail "$1" "expected NOT to contain: $2" "in: $3"
    fi
}
# check_match NAME ERE STRING (grep -E semantics, any line may match). A
# here-string, not a pipe: grep -q exits at the first match, and a printf
# still writing would die of SIGPIPE, which pipefail makes a failed check.
check_match() {
    if grep -Eq -- "$2" <<< "$3"; then
        pass "$1"
    else
        fail "$1" "expected to match: $2" "in: $3"
    fi
}

# check_imatch NAME ERE STRING: the same, ignoring case (header names)
check_imatch() {
    if grep -Eiq -- "$2" <<< "$3"; then
        pass "$1"
    else
        fail "$1" "expected to match (ignoring case): $2" "in: $3"
    fi
}

check_no_imatch() {
    if ! grep -Eiq -- "$2" <<< "$3"; then
        pass "$1"
    else
        fail "$1" "expected NOT to match (ignoring case): $2" "in: $3"
    fi
}

check_no_match() {
    if ! grep -Eq -- "$2" <<< "$3"; then
        pass "$1"
    else
        fail "$1" "expected NOT to match: $2" "in: $3"
    fi
}

# check_le NAME A B: integer A <= B
check_le() {
    if [ "$2" -le "$3" ] 2> /dev/null; then
        pass "$1"
    else
        fail "$1" "expected $2 <= $3"
    fi
}

finish() {
    local f
    printf '%d passed, %d failed\n' "$_passed" "$_failed"
    if [ $((_passed + _failed)) -eq 0 ]; then
        bail "no checks ran"
    fi
    if [ "$_failed" -gt 0 ]; then
        for f in "$tmp"/proxy*.err; do
            [ -f "$f" ] || continue
            note "---- last lines of $(basename "$f") ----"
            tail -n 40 "$f" | cat -v | sed 's/^/#   /'
        done
        exit 1
    fi
    exit 0
}

# ---- time ----

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wait_for_grep FILE ERE SECONDS [MORE_FILES...]: polls every 50 ms; 0 as
# soon as a line of one of the files matches.
wait_for_grep() {
    local re=$2 bound=$3 i
    local files=("$1" "${@:4}")
    for ((i = 0; i < bound * 20; i++)); do
        grep -Eqas -- "$re" "${files[@]}" && return 0
        sleep 0.05
    done
    grep -Eqas -- "$re" "${files[@]}"
}

# wait_pid PID SECONDS: waits for PID to exit; returns its status, or 124 if
# it is still running after SECONDS (it is left running; cleanup kills it).
wait_pid() {
    local pid=$1 bound=$2 i
    for ((i = 0; i < bound * 20; i++)); do
        _alive "$pid" || break
        sleep 0.05
    done
    _alive "$pid" && return 124
    wait "$pid" 2> /dev/null
}

# ---- data ----

file_sha() { sha256sum < "$1" | cut -c1-64; }

# SHA-256 of the origin's /bytes/N body.
pattern_sha() { "$TEST_ORIGIN_BIN" --pattern "$1" | sha256sum | cut -c1-64; }

# make_pki: the test PKI in $tmp/pki, path in PKI.
make_pki() {
    PKI=$tmp/pki
    bash "$LIB_DIR/make-test-pki.sh" "$PKI" || bail "make-test-pki.sh failed"
}

# make_localhost_leaf: $tmp/localhost.pem and $tmp/localhost-key.pem, a leaf
# of the test CA for "localhost" (the one name that resolves here without
# help), 127.0.0.1 and ::1. After make_pki.
make_localhost_leaf() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$tmp/localhost-key.pem" -out "$tmp/localhost.csr" 2> /dev/null ||
        bail "cannot make a key for localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' \
        > "$tmp/localhost.ext"
    openssl x509 -req -in "$tmp/localhost.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca-key.pem" \
        -CAcreateserial -CAserial "$tmp/ca.srl" -days 30 -extfile "$tmp/localhost.ext" \
        -out "$tmp/localhost.pem" 2> /dev/null || bail "cannot sign the localhost leaf"
}

# ---- peers ----

# wait_port_file VAR FILE WHAT LOG: a helper server started in the
# background writes the port it bound into FILE; this waits for it (10 s at
# most) and sets VAR to it, or bails naming WHAT with the end of LOG.
wait_port_file() {
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$2" ] && break
        sleep 0.05
    done
    [ -s "$2" ] || bail "$3 did not start: $(tail -n 5 "$4" 2> /dev/null)"
    printf -v "$1" '%s' "$(cat "$2")"
}

# start_origin VAR [origin options...]: starts the test origin on an ephemeral
# port and sets VAR to the port, VAR_PID and VAR_LOG (its stderr: one line per
# request, "origin: conn=N req=M METHOD TARGET").
start_origin() {
    local var=$1 n pf log pid i
    shift
    _origin_count=$((_origin_count + 1))
    n=$_origin_count
    pf=$tmp/origin-$n.port
    log=$tmp/origin-$n.log
    "$TEST_ORIGIN_BIN" --listen 127.0.0.1:0 --port-file "$pf" "$@" > "$log" 2>&1 &
    pid=$!
    track_pid "$pid"
    for ((i = 0; i < 100; i++)); do
        [ -s "$pf" ] && break
        _alive "$pid" || break
        sleep 0.05
    done
    [ -s "$pf" ] || bail "origin $* did not start within 5 s: $(tail -n 5 "$log")"
    printf -v "$var" '%s' "$(cat "$pf")"
    printf -v "${var}_PID" '%s' "$pid"
    printf -v "${var}_LOG" '%s' "$log"
}

# start_proxy [tapwire options...]: starts $TAPWIRE_BIN on 127.0.0.1:0 with the
# data directory ${PROXY_DATA_DIR:-$tmp/data}. Sets PROXY_PORT, PROXY_PID,
# PROXY_DATA, PROXY_CA (from the "CA certificate: PATH" line), PROXY_OUT and
# PROXY_ERR (proxy.out/proxy.err for the first instance, proxy-N.* after).
# The environment of the call is passed on (e.g. SSLKEYLOGFILE=... start_proxy).
start_proxy() {
    local suffix="" i line deadline why
    _proxy_count=$((_proxy_count + 1))
    [ "$_proxy_count" -gt 1 ] && suffix=-$_proxy_count
    PROXY_OUT=$tmp/proxy$suffix.out
    PROXY_ERR=$tmp/proxy$suffix.err
    PROXY_DATA=${PROXY_DATA_DIR:-$tmp/data}
    PROXY_PORT=
    [ -x "$TAPWIRE_BIN" ] || bail "tapwire binary not found or not executable: $TAPWIRE_BIN"
    # Tests run in parallel: the dashboard gets an ephemeral port too, unless
    # the test chose its own dashboard setting.
    local dash_arg="--dashboard=127.0.0.1:0"
    case " $* " in *" --dashboard "* | *" --dashboard="* | *" --no-dashboard "*) dash_arg="" ;; esac
    "$TAPWIRE_BIN" --listen 127.0.0.1:0 --data-dir "$PROXY_DATA" $dash_arg "$@" \
        > "$PROXY_OUT" 2> "$PROXY_ERR" < /dev/null &
    PROXY_PID=$!
    track_pid "$PROXY_PID"
    # Generous: the first start creates the CA key.
    deadline=$(($(now_ms) + 15000))
    while :; do
        line=$(grep -aEo -m 1 '^proxy listening on 127\.0\.0\.1:[0-9]+' "$PROXY_OUT" 2> /dev/null)
        [ -n "$line" ] && break
        _alive "$PROXY_PID" || break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 0.05
    done
    if [ -z "$line" ]; then
        if _alive "$PROXY_PID"; then
            why="is running but printed no 'proxy listening on 127.0.0.1:PORT' line on stdout within 15 s (is stdout flushed?)"
        else
            wait "$PROXY_PID"
            why="exited with status $? before printing 'proxy listening on 127.0.0.1:PORT'"
        fi
        bail "$TAPWIRE_BIN $why; stdout: $(head -c 500 "$PROXY_OUT"); stderr: $(tail -n 20 "$PROXY_ERR")"
    fi
    PROXY_PORT=${line##*:}
    PROXY_CA=
    for ((i = 0; i < 40; i++)); do
        PROXY_CA=$(sed -n 's/^CA certificate: //p' "$PROXY_OUT" | head -n 1)
        [ -n "$PROXY_CA" ] && break
        sleep 0.05
    done
    [ -n "$PROXY_CA" ] || PROXY_CA=$PROXY_DATA/ca-cert.pem
}

# dashboard_port: DASH_PORT and D (the dashboard's base URL) from the current
# proxy's startup line "dashboard: http://127.0.0.1:PORT/?token=..." (10 s).
dashboard_port() {
    local i line=""
    for ((i = 0; i < 200; i++)); do
        line=$(grep -aEo -m 1 '^dashboard: http://127\.0\.0\.1:[0-9]+/' "$PROXY_OUT" 2> /dev/null)
        [ -n "$line" ] && break
        sleep 0.05
    done
    [ -n "$line" ] ||
        bail "no 'dashboard: http://127.0.0.1:PORT/?token=' line on stdout within 10 s: $(head -c 500 "$PROXY_OUT")"
    line=${line%/}
    DASH_PORT=${line##*:}
    D=http://127.0.0.1:$DASH_PORT
}

# dash_json PATH EXPR: GET PATH from the dashboard with the token in $TOKEN,
# and print a Python expression over the JSON document d.
dash_json() {
    dcurl -H "X-Tapwire-Token: $TOKEN" "$D$1" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$2" 2>&1
}

# wait_written N: until the dashboard reports at least N flows written (10 s).
wait_written() {
    local i n=0
    for ((i = 0; i < 200; i++)); do
        n=$(dash_json /api/stats 'd["written"]')
        [ "$n" -ge "$1" ] 2> /dev/null && return 0
        sleep 0.05
    done
    echo "written: $n, expected at least $1"
    return 1
}

# stop_proxy: SIGTERM to the current proxy; returns its exit status.
stop_proxy() { stop_pid "$PROXY_PID" 10; }

# ---- clients ----

CURL_MAX_TIME=${CURL_MAX_TIME:-30}

# curl to a peer directly, never through any proxy.
dcurl() { curl -q -sS --max-time "$CURL_MAX_TIME" --noproxy '*' "$@"; }

# curl through the current proxy (NO_PROXY cannot bypass it: --noproxy '').
pcurl() {
    curl -q -sS --max-time "$CURL_MAX_TIME" --noproxy '' -x "http://127.0.0.1:$PROXY_PORT" "$@"
}

# raw_send PORT INFILE OUTFILE [SECONDS]: connects to 127.0.0.1:PORT, writes
# INFILE in one write, and reads until the peer closes, at most SECONDS
# (default 5). Returns 0 when the peer closed (FIN or RST), 124 when it was
# still open at the bound, 3 when the connection failed.
raw_send() {
    local rc
    timeout "${4:-5}" bash -c 'exec 3<> "/dev/tcp/127.0.0.1/$1" || exit 3
        cat "$2" >&3 2> /dev/null
        cat <&3 2> /dev/null
        exit 0' _ "$1" "$2" > "$3" 2> /dev/null
    rc=$?
    case $rc in
    0 | 124 | 3) return $rc ;;
    *) return 0 ;;
    esac
}

# status_line FILE: the first line of a raw response, without CR.
status_line() { head -n 1 "$1" | tr -d '\r'; }

# proxy_serves ORIGIN_PORT: the proxy process lives and forwards a request.
proxy_serves() {
    local body
    _alive "$PROXY_PID" || {
        echo "proxy process $PROXY_PID is gone"
        return 1
    }
    body=$(pcurl --max-time 10 "http://127.0.0.1:$1/conn") || return 1
    [[ $body == conn=* ]] || {
        echo "unexpected body: $body"
        return 1
    }
}

# leaf_via_proxy SNI HOST:PORT OUT: the certificate the proxy presents in a
# CONNECT tunnel to HOST:PORT for SNI ("" for none), as PEM in OUT.
leaf_via_proxy() {
    local sni_opt=(-servername "$1")
    [ -z "$1" ] && sni_opt=(-noservername)
    timeout 15 openssl s_client -proxy "127.0.0.1:$PROXY_PORT" -connect "$2" "${sni_opt[@]}" \
        < /dev/null 2> /dev/null | openssl x509 -out "$3" 2> /dev/null
}

# The SAN list of a PEM certificate, one line.
cert_sans() { openssl x509 -in "$1" -noout -ext subjectAltName 2> /dev/null | tail -n +2 | tr -d ' '; }

# ---- a headless Chromium driven over CDP (tests/integration/browser/) ----

# skip_browser WHY: the test is skipped without a browser, unless a check
# already failed: a skip must not hide that.
skip_browser() {
    if [ "$_failed" -gt 0 ]; then
        note "browser part skipped: $*"
        finish
    fi
    skip_all "$*"
}

# browser_prepare DRIVER: Chromium ($CHROMIUM, default /usr/bin/chromium),
# node >= 20 and playwright-core in browser/node_modules (npm ci when it is
# missing), or the test is skipped. Sets browser_dir, where DRIVER (a .mjs
# of browser/) is run from: beside node_modules, since its imports resolve
# from there; a read-only source tree (distcheck) gets a copy in $tmp.
browser_prepare() {
    local src=$TESTS_SRCDIR/integration/browser node_major
    CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
    [ -x "$CHROMIUM" ] ||
        skip_browser "chromium is not installed ($CHROMIUM; Debian: apt-get install chromium)"
    command -v node > /dev/null 2>&1 || skip_browser "node is not installed (Debian: apt-get install nodejs)"
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2> /dev/null)
    [ "${node_major:-0}" -ge 20 ] 2> /dev/null ||
        skip_browser "node $(node --version 2> /dev/null) is too old: playwright-core needs node >= 20"
    if [ -w "$src" ]; then
        browser_dir=$src
    else
        browser_dir=$tmp/browser
        mkdir -p "$browser_dir" || bail "mkdir $browser_dir"
        cp "$src/package.json" "$src/package-lock.json" "$src/harness.mjs" "$src/$1" "$browser_dir/" ||
            bail "cannot copy $src"
    fi
    if [ ! -f "$browser_dir/node_modules/playwright-core/package.json" ]; then
        command -v npm > /dev/null 2>&1 ||
            skip_browser "npm is not installed and $browser_dir/node_modules is missing (Debian: apt-get install npm)"
        note "installing playwright-core into $browser_dir/node_modules (npm ci)"
        (cd "$browser_dir" && timeout 300 npm ci --no-audit --no-fund) > "$tmp/npm.log" 2>&1 ||
            bail "npm ci failed in $browser_dir: $(tail -n 20 "$tmp/npm.log")"
    fi
}

# start_chromium HOME PROFILE [ARG...]: headless Chromium with its own home
# and profile, no global proxy, and a debugging port on loopback that it
# chooses itself (read from the profile). Sets CHROMIUM_PID and CDP_PORT,
# or bails after 20 s.
start_chromium() {
    local home=$1 profile=$2 i
    shift 2
    mkdir -p "$home" "$profile" || bail "mkdir $home $profile"
    HOME=$home XDG_CONFIG_HOME=$home/.config XDG_CACHE_HOME=$home/.cache \
        "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-default-apps --disable-extensions --no-default-browser-check \
        --password-store=basic --use-mock-keychain \
        --user-data-dir="$profile" --remote-debugging-port=0 "$@" about:blank \
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
}

# browser_results FILE: one check per line "PASS|FAIL<TAB>name<TAB>detail"
# that a driver wrote (other lines ignored); sets browser_ran to how many.
browser_results() {
    local verdict name detail
    browser_ran=0
    [ -f "$1" ] || : > "$1"
    while IFS=$'\t' read -r verdict name detail; do
        case $verdict in
        PASS) pass "browser: $name" ;;
        FAIL) fail "browser: $name" "$detail" ;;
        *) continue ;;
        esac
        browser_ran=$((browser_ran + 1))
    done < "$1"
}

# ---- the flows and the intercept, as the tests read them ----

# flows_where SQL_CONDITION: how many stored flows match (read-only).
flows_where() { sqlite3 "file:$PROXY_DATA/tapwire.db?mode=ro" "select count(*) from flows where $1"; }

# held_id: the id of the first flow waiting at the intercept (a number;
# asked again, within 5 s, while the dashboard's answer is not one, as on
# a loaded machine).
held_id() {
    local i id=""
    for ((i = 0; i < 100; i++)); do
        id=$(dash_json /api/intercepted 'd["flows"][0]["id"]' 2> /dev/null)
        [[ $id =~ ^[0-9]+$ ]] && break
        sleep 0.05
    done
    echo "$id"
}

# wait_held N: until N flows wait at the intercept (5 s).
wait_held() {
    local i n=0
    for ((i = 0; i < 100; i++)); do
        n=$(dash_json /api/intercepted 'len(d["flows"])')
        [ "$n" = "$1" ] && return 0
        sleep 0.05
    done
    echo "waiting: $n, expected $1"
    return 1
}

# dsend METHOD PATH [JSON]: a dashboard request with the caller's header
# array H (token, Origin) to $D; prints the status, the answer in
# $tmp/answer.json.
dsend() {
    local method=$1 path=$2 body=${3-}
    if [ -n "$body" ]; then
        dcurl -o "$tmp/answer.json" -w '%{http_code}' -X "$method" "${H[@]}" \
            -H 'Content-Type: application/json' --data-binary "$body" "$D$path"
    else
        dcurl -o "$tmp/answer.json" -w '%{http_code}' -X "$method" "${H[@]}" "$D$path"
    fi
}

# answer EXPR: EXPR over d, the JSON of the last dsend's answer.
answer() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
print(eval(sys.argv[2]))' "$tmp/answer.json" "$1" 2>&1
}
