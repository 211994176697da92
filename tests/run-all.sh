#!/bin/sh
# The whole test suite, as CI runs it: install what is missing, build with
# -Werror and run `make check`, build again with AddressSanitizer +
# UndefinedBehaviorSanitizer and run `make check` once more, then fuzz every
# parser of untrusted input for FUZZ_SECONDS (default 60) each.
# Builds go to build/ and build-asan/ (out of tree); the source tree stays clean.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)
"$top/deps/install.sh"
autoreconf -fi >/dev/null

summary="$top/build/test-summary.txt"
run_suite() {
    dir=$1; shift
    rm -rf "$top/$dir"
    mkdir -p "$top/$dir"
    (cd "$top/$dir" && "$top/configure" --enable-werror "$@" >/dev/null &&
        make -j"$jobs" >/dev/null && make -j"$jobs" check) || {
        for log in "$top/$dir"/tests/*/*.log; do
            grep -qE '^(FAIL|ERROR)' "${log%.log}.trs" 2>/dev/null || continue
            echo "=== $log"; tail -n 80 "$log"
        done
        return 1
    }
}

status=0
echo "== build with -Werror and run the suite"
run_suite build || status=1
echo "== build with AddressSanitizer + UndefinedBehaviorSanitizer and run the suite again"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite build-asan CFLAGS="-g -O1 $san" LDFLAGS="$san" || status=1
echo "== fuzz the parsers"
"$top/tests/fuzz/run.sh" "${FUZZ_SECONDS:-60}" || status=1

# One closing line over both suites and the fuzzers.
pass=0; fail=0
for trs in "$top"/build/tests/*/*.trs "$top"/build-asan/tests/*/*.trs; do
    [ -f "$trs" ] || continue
    if grep -q '^:test-result: PASS' "$trs"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
[ $status -ne 0 ] && [ $fail -eq 0 ] && fail=1
echo "$pass passed, $fail failed"
exit $status
