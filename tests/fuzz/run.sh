#!/bin/sh
# Builds every libFuzzer target in tests/fuzz/ with clang (ASan + UBSan) and
# runs each for FUZZ_SECONDS (default 60) on a copy of its seed corpus.
# A target names the sources it needs on lines "fuzz-sources: a.c b.c"
# (paths relative to the top of the tree; several lines add up), and may name pkg-config modules
# beyond openssl on a line "fuzz-libs: zlib libzstd".
# Usage: tests/fuzz/run.sh [SECONDS]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-60}}
work=$(mktemp -d "${TMPDIR:-/tmp}/tapwire-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cc=${FUZZ_CC:-clang}
status=0
for target in "$top"/tests/fuzz/fuzz_*.c; do
    name=$(basename "$target" .c)
    sources=$(sed -n 's/.*fuzz-sources: *//p' "$target" | sed 's|\*/.*||' | tr '\n' ' ')
    libs=$(sed -n 's/.*fuzz-libs: *//p' "$target" | head -n 1 | sed 's|\*/.*||')
    srcs=""
    for s in $sources; do srcs="$srcs $top/$s"; done
    echo "== building $name"
    # shellcheck disable=SC2086
    $cc -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined -I"$top/src" \
        $(pkg-config --cflags openssl $libs) -o "$work/$name" "$target" $srcs \
        $(pkg-config --libs openssl $libs)
    mkdir -p "$work/$name.corpus"
    if [ -d "$top/tests/fuzz/corpus/$name" ]; then
        cp "$top/tests/fuzz/corpus/$name"/* "$work/$name.corpus/" 2>/dev/null || true
    fi
    echo "== running $name for ${seconds}s"
    if ! "$work/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 "$work/$name.corpus" > "$work/$name.log" 2>&1; then
        tail -n 60 "$work/$name.log"
        echo "FAIL: $name found a crash"
        status=1
    else
        grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$work/$name.log" | tail -n 2
        echo "PASS: $name"
    fi
done
exit $status
