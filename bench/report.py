#!/usr/bin/env python3
"""Turns bench/run's raw measurements into medians, one markdown table and a
JSON file. Called by bench/run; reads nothing else.

Every figure in the table is the median over the repetitions of that
scenario for that peer; derived figures (cold minus warm, RSS per
connection, CPU per 1,000 requests) are derived per repetition first.
"""
import argparse
import datetime
import json
import statistics
import sys

PEERS = ["direct", "tapwire", "tapwire-nocapture", "mitmdump", "squid", "sslsplit"]


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    print("report: bad line in %s: %s" % (path, line[:200]), file=sys.stderr)
    return rows


def lgv(row, key, field="loadgen"):
    lg = row.get(field)
    if not isinstance(lg, dict):
        return None
    v = lg.get(key)
    if v is None or (isinstance(v, (int, float)) and v < 0 and key.endswith("_ms")):
        return None
    return v


def derive(row):
    """The figures one raw row gives, by metric name."""
    s, out = row["scenario"], {}
    if row.get("failed"):
        return out
    if s == 1:
        out["s1_rps"] = lgv(row, "rps")
        out["s1_lat_p50"] = lgv(row, "lat_p50_ms")
        out["s1_lat_p99"] = lgv(row, "lat_p99_ms")
        req = lgv(row, "requests")
        if row.get("cpu_s") is not None and req:
            out["s7_cpu_per_1k"] = row["cpu_s"] / (req / 1000.0)
    elif s == 2:
        out["s2_rps"] = lgv(row, "rps")
        out["s2_ttfb_p50"] = lgv(row, "ttfb_p50_ms")
        out["s2_lat_p99"] = lgv(row, "ttfb_p99_ms")
    elif s == 3:
        warm, cold = lgv(row, "ttfb_p50_ms", "warm"), lgv(row, "ttfb_p50_ms", "cold")
        out["s3_warm"] = warm
        out["s3_cold"] = cold
        if warm is not None and cold is not None:
            out["s3_added"] = cold - warm
    elif s == 4:
        out["s4_mbps"] = lgv(row, "mbps") if lgv(row, "requests") else None
        if row.get("rss_peak_kib") is not None and row.get("rss_before_kib") is not None:
            out["s4_rss_growth_mib"] = (row["rss_peak_kib"] - row["rss_before_kib"]) / 1024.0
    elif s == 5:
        conns = lgv(row, "connections")
        if conns:
            out["s5_kib_per_conn"] = (row["rss_held_kib"] - row["rss_idle_kib"]) / conns
        out["s5_idle_mib"] = row["rss_idle_kib"] / 1024.0
        out["s5_threads"] = row.get("threads_held")
        out["s5_held"] = conns
        out["s5_alive"] = lgv(row, "held_alive")
    elif s == 6:
        if row.get("capture"):
            out["s6_small_mib"] = row["rss_small_kib"] / 1024.0
            out["s6_large_mib"] = row["rss_large_kib"] / 1024.0
            out["s6_growth_pct"] = (row["rss_large_kib"] / row["rss_small_kib"] - 1) * 100
            out["s6_flows_large"] = row.get("flows_large")
    return {k: v for k, v in out.items() if v is not None}


def errors_of(row):
    n = 0
    for key in ("loadgen", "warm", "cold", "loadgen_small", "loadgen_large"):
        lg = row.get(key)
        if isinstance(lg, dict):
            n += int(lg.get("errors", 0))
        elif key == "loadgen" and key in row and lg is None:
            n += 1  # the load generator printed nothing
    return n


# (metric, label, format, better, scenario)
ROWS = [
    ("s1_rps", "1 keep-alive req/s (16 conns, 1 KiB)", "{:,.0f}", "high", 1),
    ("s1_lat_p50", "1 latency p50 ms", "{:.2f}", "low", 1),
    ("s1_lat_p99", "1 latency p99 ms", "{:.2f}", "low", 1),
    ("s2_rps", "2 new connections/s (8 conns, cached cert)", "{:,.0f}", "high", 2),
    ("s2_ttfb_p50", "2 time to first byte p50 ms", "{:.2f}", "low", 2),
    ("s3_warm", "3 sequential new conn, TTFB p50 ms (cached)", "{:.2f}", "low", 3),
    ("s3_cold", "3 sequential new host, TTFB p50 ms (cold)", "{:.2f}", "low", 3),
    ("s3_added", "3 cold host: added TTFB ms (cold - cached)", "{:.2f}", "low", 3),
    ("s4_mbps", "4 one 100 MB download, MB/s", "{:,.0f}", "high", 4),
    ("s4_rss_growth_mib", "4 peak RSS growth during it, MiB", "{:.1f}", "low", 4),
    ("s5_idle_mib", "5 idle process RSS, MiB", "{:.1f}", "low", 5),
    ("s5_kib_per_conn", "5 RSS per idle intercepted conn, KiB", "{:.0f}", "low", 5),
    ("s5_threads", "5 threads with the conns held", "{:.0f}", "low", 5),
    ("s6_small_mib", "6 RSS after N1 captured exchanges, MiB", "{:.1f}", "low", 6),
    ("s6_large_mib", "6 RSS after N2 captured exchanges, MiB", "{:.1f}", "low", 6),
    ("s6_growth_pct", "6 growth N1 -> N2, %", "{:+.1f}", "low", 6),
    ("s7_cpu_per_1k", "7 proxy CPU s per 1,000 req (scenario 1)", "{:.3f}", "low", 7),
]

# metric -> list of (peer, min ratio tapwire/peer) or ("abs", op, value)
TARGETS = {
    "s1_rps": [("direct", 0.5), ("squid", 2.0), ("mitmdump", 20.0)],
    "s2_rps": [("direct", 0.4), ("squid", 2.0), ("mitmdump", 5.0)],
    "s3_added": [("abs", "<=", 1.0)],
    "s4_mbps": [("direct", 0.5)],
    "s4_rss_growth_mib": [("abs", "<", 16.0)],
    "s5_kib_per_conn": [("abs", "<=", 64.0)],
    "s6_growth_pct": [("abs", "<=", 10.0)],
}


def target_text(metric):
    parts = []
    for t in TARGETS.get(metric, []):
        if t[0] == "abs":
            parts.append("%s %g" % ("≤" if t[1] == "<=" else "<", t[2]))
        elif t[0] == "direct":
            parts.append("≥ %d%% direct" % round(t[1] * 100))
        else:
            parts.append("≥ %g× %s" % (t[1], t[0]))
    return ", ".join(parts)


def target_met(metric, med):
    """'yes', 'NO (...)' or '' when nothing could be judged."""
    tw = med.get(("tapwire", metric))
    if tw is None or metric not in TARGETS:
        return ""
    missed, judged = [], 0
    for t in TARGETS[metric]:
        if t[0] == "abs":
            ok = tw <= t[2] if t[1] == "<=" else tw < t[2]
            judged += 1
            if not ok:
                missed.append("%s %g" % (t[1], t[2]))
        else:
            other = med.get((t[0], metric))
            if not other:
                continue
            judged += 1
            if tw / other < t[1]:
                missed.append("%s: %.2f×" % (t[0], tw / other))
    if judged == 0:
        return ""
    return "yes" if not missed else "**NO** (" + "; ".join(missed) + ")"


def ratio(metric, med, other, better):
    tw, ov = med.get(("tapwire", metric)), med.get((other, metric))
    if tw is None or ov is None or ov == 0 or metric.endswith("_pct") or metric == "s3_added":
        return ""
    r = tw / ov
    if other == "direct" and better == "high":
        return "%.0f%%" % (r * 100)
    return ("%.1f×" if r >= 10 else "%.2f×") % r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--out", required=True)
    for name in ("reps", "duration", "cold-hosts", "idle-conns", "capture-small",
                 "capture-large", "quick", "scenarios", "peers"):
        ap.add_argument("--" + name, default="")
    a = ap.parse_args()

    raw = load(a.raw)
    with open(a.versions) as f:
        versions = json.load(f)
    peers = [p for p in PEERS if p in a.peers.split()]

    per = {}  # (peer, metric) -> [values]
    errors = {}  # (peer, scenario) -> count
    failed = set()
    capture_missing = False
    for row in raw:
        for k, v in derive(row).items():
            per.setdefault((row["peer"], k), []).append(v)
        e = errors_of(row)
        if e:
            errors[(row["peer"], row["scenario"])] = errors.get((row["peer"], row["scenario"]), 0) + e
        if row.get("failed"):
            failed.add((row["peer"], row["scenario"]))
        if row["scenario"] == 6 and row.get("capture") is False:
            capture_missing = True
    med = {k: statistics.median(v) for k, v in per.items()}

    wanted = set(int(s) for s in a.scenarios.split(",") if s.strip().isdigit())
    lines = []
    head = ["scenario / metric"] + peers + ["tapwire ÷ direct", "tapwire ÷ mitmdump",
                                              "tapwire ÷ squid", "target (tapwire)", "met"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 3) + ["---", "---"]) + "|")
    for metric, label, fmt, better, scen in ROWS:
        if scen not in wanted:
            continue
        label = label.replace("N1", "{:,}".format(int(a.capture_small or 0)))
        label = label.replace("N2", "{:,}".format(int(a.capture_large or 0)))
        if metric == "s5_kib_per_conn":
            label = label + " (%s held)" % a.idle_conns
        if metric == "s3_cold":
            label = label.replace("new host", "%s new hosts" % a.cold_hosts)
        cells = [label]
        for p in peers:
            v = med.get((p, metric))
            if v is None:
                if (p, scen if scen != 7 else 1) in failed:
                    cell = "failed"
                elif scen == 6 and p == "tapwire" and capture_missing:
                    cell = "n/a (no capture)"
                else:
                    cell = "n/a"
            else:
                cell = fmt.format(v)
                n_err = errors.get((p, scen if scen != 7 else 1), 0)
                if n_err and metric in ("s1_rps", "s2_rps", "s3_cold", "s4_mbps",
                                        "s5_kib_per_conn", "s6_large_mib"):
                    cell += " (%d err)" % n_err
            cells.append(cell)
        if "tapwire" in peers:
            cells += [ratio(metric, med, "direct", better), ratio(metric, med, "mitmdump", better),
                      ratio(metric, med, "squid", better)]
            cells += [target_text(metric), target_met(metric, med)]
        else:
            cells += ["", "", "", target_text(metric), ""]
        lines.append("| " + " | ".join(cells) + " |")

    held = {p: med.get((p, "s5_alive")) for p in peers if (p, "s5_alive") in med}
    notes = [
        "Medians of %s repetition(s)%s; %s s of load in scenarios 1 and 2; "
        "every peer started fresh for each scenario." % (
            a.reps, " (--quick)" if a.quick == "yes" else "", a.duration),
        "Ratios are tapwire's figure divided by the peer's (for req/s and MB/s, "
        "higher is better; for ms, MiB, KiB and CPU, lower is better).",
    ]
    if "tapwire-nocapture" in peers:
        notes.append("tapwire-nocapture is the same binary with `--no-capture`: the "
                     "difference to tapwire is what flow capture costs.")
    if "mitmdump" in peers:
        notes.append("mitmdump runs scenario 4 with `--set stream_large_bodies=1m`.")
    if "sslsplit" in peers:
        notes.append(
        "sslsplit has no CONNECT: the load generator speaks TLS to it directly and it "
        "forwards to a static destination (the origin) with the client's SNI; it does "
        "**not verify** the origin's certificate (it has no option to). In scenario 3 "
        "it copies the origin's `*.bench.test` into one forged certificate and reuses "
        "it, so it mints nothing per name.")
    if "squid" in peers:
        notes.append("squid routes bumped requests by Host, resolved through its `hosts_file`.")
    notes += [
        "Memory and CPU include a proxy's child processes (squid's certificate "
        "helpers, sslsplit's privilege-separated child).",
    ]
    if held:
        notes.append("Scenario 5 connections still open at the end of the hold: " +
                     ", ".join("%s %d" % (p, v) for p, v in held.items()) + ".")
    flows = [(row.get("flows_small"), row.get("n_small"), row.get("flows_large"), row.get("n_large"))
             for row in raw if row["scenario"] == 6 and row.get("capture")]
    if flows:
        notes.append("Scenario 6 flows in the database after each step (stored/sent): " + ", ".join(
            "%s/%s then %s/%s" % f for f in flows) + "; fewer stored than sent means the "
            "flow queue was full and flows were dropped.")
    elif capture_missing:
        notes.append("Scenario 6: this tapwire has no flow capture (no flows table); n/a.")
    if errors:
        notes.append("Requests that failed (counted, not in the rates): " + ", ".join(
            "%s scenario %d: %d" % (p, s, n) for (p, s), n in sorted(errors.items())) + ".")
    table = "\n".join(lines)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    vline = ("%s (%s), %s, nginx %s, mitmproxy %s, squid-openssl %s, sslsplit %s; "
             "Linux %s, %s × %s" % (
                 versions.get("tapwire"), versions.get("tapwire_source"), versions.get("openssl"),
                 versions.get("nginx", "").replace("nginx version: nginx/", ""),
                 versions.get("mitmproxy"), versions.get("squid"), versions.get("sslsplit"),
                 versions.get("kernel"), versions.get("cpus"),
                 versions.get("cpu_model", "").strip()))

    print()
    print("Measured %s; %s." % (date, vline))
    print()
    print(table)
    print()
    for n in notes:
        print("- " + n)
    print()

    result = {
        "date": date,
        "versions": versions,
        "config": {k: getattr(a, k.replace("-", "_")) for k in (
            "reps", "duration", "cold_hosts", "idle_conns", "capture_small",
            "capture_large", "quick", "scenarios", "peers")},
        "medians": {p: {m: v for (pp, m), v in med.items() if pp == p} for p in peers},
        "errors": {"%s/%d" % k: v for k, v in errors.items()},
        "table_markdown": table,
        "notes": notes,
        "raw": raw,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
