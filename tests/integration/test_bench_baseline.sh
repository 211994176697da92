#!/usr/bin/env bash
# bench/run --baseline: a second tapwire binary (the peer tapwire-baseline)
# runs back to back with tapwire, in ABBA order over the repetitions, and
# bench/report.py prints it beside tapwire with the change in per cent,
# paired per repetition. Nothing is measured here: the run order comes from
# `bench/run --plan` (which installs, builds and starts nothing) and the
# report from made-up measurements.
. "$(dirname "$0")/lib.sh"

bench=$TESTS_SRCDIR/../bench
[ -x "$bench/run" ] && [ -f "$bench/report.py" ] || skip_all "no bench/ in this tree"
need_cmd python3

# ---- the run order
# plan_peers SCENARIO ARGS...: the peers of SCENARIO, in run order, one line.
plan_peers() {
    local scen=$1
    shift
    timeout 20 "$bench/run" --plan "$@" 2> /dev/null |
        awk -v s="$scen" '$4 == s {printf "%s%s", sep, $5; sep = " "} END {print ""}'
}

got=$(plan_peers 1 --reps 4 --scenarios 1,6 --peers direct,tapwire,tapwire-nocapture \
    --baseline "$TAPWIRE_BIN")
check_eq "--baseline adds tapwire-baseline, right after tapwire; the order reverses each repetition" \
    "direct tapwire-nocapture tapwire tapwire-baseline tapwire-baseline tapwire tapwire-nocapture direct direct tapwire-nocapture tapwire tapwire-baseline tapwire-baseline tapwire tapwire-nocapture direct" \
    "$got"
got=$(plan_peers 6 --reps 4 --scenarios 1,6 --peers tapwire-baseline,direct,tapwire \
    --baseline "$TAPWIRE_BIN")
check_eq "scenario 6 runs both binaries, back to back, ABBA" \
    "tapwire tapwire-baseline tapwire-baseline tapwire tapwire tapwire-baseline tapwire-baseline tapwire" \
    "$got"
for s in 2 3 4 5; do
    got=$(plan_peers "$s" --reps 2 --scenarios 1,2,3,4,5,6,8,9,10 --peers tapwire \
        --baseline "$TAPWIRE_BIN")
    check_eq "scenario $s runs tapwire-baseline beside tapwire" \
        "tapwire tapwire-baseline tapwire-baseline tapwire" "$got"
done
for s in 8 9 10; do
    got=$(plan_peers "$s" --reps 1 --scenarios 8,9,10 --peers tapwire --baseline "$TAPWIRE_BIN")
    check_eq "scenario $s is tapwire's own: no tapwire-baseline" "tapwire" "$got"
done
got=$(plan_peers 1 --reps 1 --scenarios 8 --peers tapwire,tapwire-nocapture --baseline "$TAPWIRE_BIN")
check_eq "scenario 1 run only for 8's capture cost leaves the baseline out" \
    "tapwire-nocapture tapwire" "$got"

out=$(timeout 20 "$bench/run" --plan --peers tapwire,tapwire-baseline 2>&1)
check_eq "tapwire-baseline without --baseline is refused" 1 "$?"
check_contains "and says why" "needs --baseline PATH" "$out"
out=$(timeout 20 "$bench/run" --plan --baseline "$tmp/no-such-tapwire" 2>&1)
check_eq "--baseline naming no binary is refused" 1 "$?"
check_contains "and names it" "$tmp/no-such-tapwire" "$out"
check_contains "--help lists --baseline" "--baseline PATH" "$("$bench/run" --help)"

# ---- the report
# Three repetitions; per repetition tapwire gains +20%, 0% and +4.76% req/s:
# the paired median is +4.8%, where the medians' ratio (1,100 ÷ 1,000) would
# say +10%. The keep-alive CPU per request: 0.1 s per 1,000 against 0.125.
raw=$tmp/raw.jsonl
: > "$raw"
s1() { # s1 REP PEER RPS
    printf '{"rep":%d,"scenario":1,"peer":"%s","loadgen":{"requests":%d,"errors":0,"rps":%s,"lat_p50_ms":1.0,"lat_p99_ms":4.0},"cpu_s":%s}\n' \
        "$1" "$2" $(($3 * 8)) "$3" "$4" >> "$raw"
}
s1 1 tapwire 1200 0.96
s1 1 tapwire-baseline 1000 1.0
s1 2 tapwire-baseline 1000 1.0
s1 2 tapwire 1000 0.8
s1 3 tapwire 1100 0.88
s1 3 tapwire-baseline 1050 1.05
printf '{"rep":1,"scenario":2,"peer":"tapwire","loadgen":{"requests":800,"errors":0,"rps":100,"ttfb_p50_ms":9.0}}\n' >> "$raw"
printf '{"rep":1,"scenario":2,"peer":"tapwire-baseline","loadgen":{"requests":1000,"errors":0,"rps":125,"ttfb_p50_ms":10.0}}\n' >> "$raw"
echo '{"tapwire": "tapwire 0.1.0", "tapwire_source": "built from test", "tapwire_baseline": "tapwire 0.0.9", "tapwire_baseline_source": "binary /old/tapwire"}' \
    > "$tmp/versions.json"
report=$(python3 "$bench/report.py" --raw "$raw" --versions "$tmp/versions.json" \
    --out "$tmp/out.json" --reps 3 --duration 8 --scenarios 1,2 --peers "tapwire tapwire-baseline" 2>&1)
check_eq "report.py runs" 0 "$?"
check_contains "tapwire-baseline is a column beside tapwire" \
    "| scenario / metric | tapwire | tapwire-baseline |" "$report"
check_contains "each column has its median" "| 1 keep-alive req/s (16 conns, 1 KiB) | 1,100 | 1,000 |" "$report"
check_contains "CPU per request shows with scenario 1" \
    "| 7 proxy CPU s per 1,000 req (scenario 1) | 0.100 | 0.125 |" "$report"
check_contains "scenario 1's line: the median of the repetitions' pairs, in per cent" \
    "| 1 keep-alive, tapwire vs tapwire-baseline | req/s +4.8%, latency p50 +0.0%, p99 +0.0%, CPU per request -20.0% | 3 |" \
    "$report"
check_contains "scenario 2's line" \
    "| 2 new connection per request, tapwire vs tapwire-baseline | connections/s -20.0%, time to first byte p50 -10.0% | 1 |" \
    "$report"
check_contains "each repetition's pair and who ran first" \
    "repetition 1 (tapwire first) +20.0%, repetition 2 (tapwire-baseline first) +0.0%, repetition 3 (tapwire first) +4.8%" \
    "$report"
check_contains "the baseline binary is named" "tapwire-baseline tapwire 0.0.9 (binary /old/tapwire)" "$report"
check "the JSON file keeps the pairs" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
p = r["baseline_pairs"]["1/s1_rps"]
assert [x["rep"] for x in p] == [1, 2, 3], p
assert round(p[0]["change_pct"], 1) == 20.0, p
assert "tapwire-baseline" in r["medians"], r["medians"].keys()
' "$tmp/out.json"

# Without the baseline, no such column or line.
grep -v tapwire-baseline "$raw" > "$tmp/raw-nobase.jsonl"
report=$(python3 "$bench/report.py" --raw "$tmp/raw-nobase.jsonl" --versions "$tmp/versions.json" \
    --out "$tmp/out2.json" --reps 3 --duration 8 --scenarios 1,2 --peers "tapwire" 2>&1)
check_not_contains "no baseline, no before-and-after table" "tapwire vs tapwire-baseline" "$report"

finish
