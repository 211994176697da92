#!/bin/sh
# The whole test suite, as CI runs it: install what is missing, check the
# formatting and that the build is quiet, build with -Werror and run
# `make check`, build again with AddressSanitizer +
# UndefinedBehaviorSanitizer and run `make check` once more, then fuzz every
# parser of untrusted input for FUZZ_SECONDS (default 30) each.
# Builds go to build/ and build-asan/ (out of tree); the source tree stays clean.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)
"$top/deps/install.sh"
# The build is quiet: anything autoreconf, configure or make print on
# stderr (an ordering warning, ar's modifier notice) fails the run.
quiet_check() {
    if [ -s "$1" ]; then
        echo "== $2 printed warnings (the build must be quiet):"
        cat "$1"
        return 1
    fi
}
mkdir -p "$top/build"
autoreconf -fi >/dev/null 2>"$top/build/autoreconf.raw" || { cat "$top/build/autoreconf.raw"; exit 1; }
# On a clean clone automake reports each helper script it copies into
# build-aux/ ("installing 'build-aux/compile'"): a notice, not a warning.
grep -v -E "^[^ ]+: installing '(build-aux|m4)/[^']+'$" "$top/build/autoreconf.raw" >"$top/build/autoreconf.err" || true

summary="$top/build/test-summary.txt"
run_suite() {
    dir=$1; shift
    rm -rf "$top/$dir"
    mkdir -p "$top/$dir"
    (cd "$top/$dir" && "$top/configure" --enable-werror "$@" >/dev/null 2>configure.err &&
        make -j"$jobs" >/dev/null 2>make.err && quiet_check configure.err configure &&
        quiet_check make.err make && make -j"$jobs" check) || {
        cat "$top/$dir/configure.err" "$top/$dir/make.err" 2>/dev/null | tail -n 40
        for log in "$top/$dir"/tests/*/*.log; do
            grep -qE '^(FAIL|ERROR)' "${log%.log}.trs" 2>/dev/null || continue
            echo "=== $log"; tail -n 80 "$log"
        done
        return 1
    }
}

status=0
quiet_check "$top/build/autoreconf.err" autoreconf || status=1
echo "== one style (clang-format)"
"$top/tests/check-format.sh" || status=1
echo "== build with -Werror and run the suite"
run_suite build || status=1
echo "== build with AddressSanitizer + UndefinedBehaviorSanitizer and run the suite again"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite build-asan CFLAGS="-g -O1 $san" LDFLAGS="$san" || status=1
echo "== fuzz the parsers"
"$top/tests/fuzz/run.sh" "${FUZZ_SECONDS:-30}" || status=1

# One closing line over both suites and the fuzzers.
pass=0; fail=0
for trs in "$top"/build/tests/*/*.trs "$top"/build-asan/tests/*/*.trs; do
    [ -f "$trs" ] || continue
    if grep -q '^:test-result: PASS' "$trs"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
[ $status -ne 0 ] && [ $fail -eq 0 ] && fail=1
echo "$pass passed, $fail failed"
exit $status
