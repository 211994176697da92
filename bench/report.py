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
import math
import statistics
import sys

PEERS = ["direct", "tapwire", "tapwire-baseline", "tapwire-nocapture", "mitmdump", "squid",
         "sslsplit"]


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
        # tapwire's own clock (/api/stats "certificates"), around the cold run.
        b, a = row.get("stats_before"), row.get("stats_after")
        cb = b.get("certificates") if isinstance(b, dict) else None
        ca = a.get("certificates") if isinstance(a, dict) else None
        if cb and ca and ca.get("minted", 0) > cb.get("minted", 0):
            out["s3_mint_ms"] = ((ca["mint_us_total"] - cb["mint_us_total"]) / 1000.0 /
                                 (ca["minted"] - cb["minted"]))
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
    elif s == 8:
        fw = row.get("flowwrite")
        if isinstance(fw, dict) and fw.get("written") == fw.get("flows"):
            out["s8_writer_us"] = fw.get("cpu_us_per_flow")
        for size in ("small", "large"):
            part = row.get(size)
            if not isinstance(part, dict):
                continue
            times = part.get("times")
            if isinstance(times, dict):
                for shape in S8_SHAPES:
                    t = times.get(shape)
                    if isinstance(t, dict):
                        out["s8_%s_p50_%s" % (shape, size)] = t.get("p50_ms")
                        out["s8_%s_p99_%s" % (shape, size)] = t.get("p99_ms")
            if part.get("rss_kib") is not None:
                out["s8_rss_%s" % size] = part["rss_kib"] / 1024.0
            if part.get("rss_fill_kib") is not None:
                out["s8_rssfill_%s" % size] = part["rss_fill_kib"] / 1024.0
            st = part.get("stats") if isinstance(part.get("stats"), dict) else {}
            out["s8_stored_%s" % size] = st.get("stored")
            out["s8_dropped_%s" % size] = st.get("dropped")
            out["s8_fillrps_%s" % size] = lgv(part, "rps", "fill")
    elif s == 9:
        key = "%s_%s" % (row.get("variant"), row.get("size"))
        out["s9_rps_" + key] = lgv(row, "rps")
        out["s9_p50_" + key] = lgv(row, "lat_p50_ms")
        req = lgv(row, "requests")
        if row.get("cpu_s") is not None and req:
            out["s9_cpu_" + key] = row["cpu_s"] / (req / 1000.0)
    return {k: v for k, v in out.items() if v is not None}


def derive_pairs(raw):
    """Figures that pair two rows of one repetition: what capture costs
    (scenario 1, tapwire against tapwire-nocapture). (peer, metric) -> value."""
    out = []
    by_rep = {}
    for row in raw:
        if row["scenario"] == 1 and not row.get("failed"):
            by_rep.setdefault(row["rep"], {})[row["peer"]] = row
    for rows in by_rep.values():
        on, off = rows.get("tapwire"), rows.get("tapwire-nocapture")
        if not on or not off:
            continue
        r_on, r_off = lgv(on, "rps"), lgv(off, "rps")
        if r_on and r_off:
            out.append(("tapwire", "s8_capture_cost_pct", (1 - r_on / r_off) * 100))
        c_on, c_off = derive(on).get("s7_cpu_per_1k"), derive(off).get("s7_cpu_per_1k")
        if c_on and c_off:
            out.append(("tapwire", "s8_capture_cpu_pct", (1 - c_off / c_on) * 100))
    return out


# Before and after a change (--baseline): per scenario, the figures compared
# between tapwire and tapwire-baseline, (metric, label). Scenario 1's line
# carries its CPU per request (what scenario 7 reports).
BASELINE_SCENARIOS = [
    (1, "keep-alive", [("s1_rps", "req/s"), ("s1_lat_p50", "latency p50"),
                       ("s1_lat_p99", "p99"), ("s7_cpu_per_1k", "CPU per request")]),
    (2, "new connection per request", [("s2_rps", "connections/s"),
                                       ("s2_ttfb_p50", "time to first byte p50")]),
    (3, "cold hosts", [("s3_cold", "TTFB p50 cold"), ("s3_warm", "cached"),
                       ("s3_mint_ms", "minting per new host")]),
    (4, "100 MB download", [("s4_mbps", "MB/s"), ("s4_rss_growth_mib", "peak RSS growth")]),
    (5, "idle connections", [("s5_kib_per_conn", "RSS per idle conn"),
                             ("s5_idle_mib", "idle RSS")]),
    (6, "captured exchanges", [("s6_small_mib", "RSS after N1"), ("s6_large_mib", "after N2")]),
]


def derive_baseline(raw):
    """Before and after: each repetition's tapwire and tapwire-baseline ran
    back to back (ABBA over the repetitions), so each repetition gives one
    pair per figure, and the change is tapwire ÷ baseline − 1 for that pair;
    the median over the pairs leaves out what the machine drifted between
    repetitions. Returns {(scenario, metric): [(rep, first, change %), ...]},
    first the peer that ran first in that repetition (rows are in run order)."""
    rows, first = {}, {}
    for row in raw:
        if row["peer"] in ("tapwire", "tapwire-baseline") and not row.get("failed"):
            key = (row["rep"], row["scenario"])
            rows.setdefault(key, {})[row["peer"]] = derive(row)
            first.setdefault(key, row["peer"])
    out = {}
    for (rep_, scen), by_peer in sorted(rows.items()):
        new, old = by_peer.get("tapwire"), by_peer.get("tapwire-baseline")
        if new is None or old is None:
            continue
        for metric, v_new in new.items():
            v_old = old.get(metric)
            if v_old:  # neither missing nor zero
                out.setdefault((scen, metric), []).append(
                    (rep_, first[(rep_, scen)], (v_new / v_old - 1) * 100))
    return out


def baseline_table(pairs, wanted, a):
    """One line per scenario: tapwire against tapwire-baseline, in per cent."""
    lines = ["| before and after: tapwire vs tapwire-baseline (median over repetitions of "
             "tapwire ÷ tapwire-baseline − 1; + is higher) | change, % | pairs |",
             "|---|---|---:|"]
    notes = []
    for scen, name, metrics in BASELINE_SCENARIOS:
        if scen not in wanted and not (scen == 1 and 7 in wanted):
            continue
        parts, n = [], 0
        for metric, label in metrics:
            label = label.replace("N1", "{:,}".format(int(a.capture_small or 0)))
            label = label.replace("N2", "{:,}".format(int(a.capture_large or 0)))
            vals = pairs.get((scen, metric))
            if not vals:
                continue
            parts.append("%s %+.1f%%" % (label, statistics.median(v for _, _, v in vals)))
            n = max(n, len(vals))
        lines.append("| %d %s, tapwire vs tapwire-baseline | %s | %s |" % (
            scen, name, ", ".join(parts) if parts else "n/a", n or ""))
        head = pairs.get((scen, metrics[0][0]))
        if head:
            notes.append("Scenario %d, tapwire vs tapwire-baseline, %s per repetition: %s." % (
                scen, metrics[0][1], ", ".join(
                    "repetition %d (%s first) %+.1f%%" % (r, f, v) for r, f, v in head)))
    return "\n".join(lines), notes


def derive_interleaved(raw):
    """Scenario 10: slices of tapwire (capture) and tapwire-nocapture taken in
    ABBA order in one repetition; slices 2k-1 and 2k are a pair, one of each.
    Returns (figures, info): figures by (peer, metric), aggregated over every
    repetition (the pair losses' median and mean, CPU per request over all
    slices); info holds what the notes and the JSON file show."""
    slices, totals = {}, []
    for row in raw:
        if row["scenario"] != 10 or row.get("failed"):
            continue
        if "slice" in row:
            slices.setdefault(row["rep"], {})[row["slice"]] = row
        elif "flows_stored" in row:
            totals.append(row)
    pairs = []
    for rep_, by_slice in sorted(slices.items()):
        for first in range(1, max(by_slice) + 1, 2):
            a, b = by_slice.get(first), by_slice.get(first + 1)
            if not a or not b or a["peer"] == b["peer"]:
                continue
            on, off = (a, b) if a["peer"] == "tapwire" else (b, a)
            r_on, r_off = lgv(on, "rps"), lgv(off, "rps")
            p_on, p_off = lgv(on, "lat_p99_ms"), lgv(off, "lat_p99_ms")
            if r_on and r_off:
                pair = {"rep": rep_, "slices": [first, first + 1],
                        "rps": [r_on, r_off], "loss_pct": (1 - r_on / r_off) * 100}
                if p_on and p_off:
                    pair["p99_ms"] = [p_on, p_off]
                    pair["p99_ratio"] = p_on / p_off
                pairs.append(pair)
    fig = {}
    losses = [p["loss_pct"] for p in pairs]
    if losses:
        fig[("tapwire", "s10_capture_cost_pct")] = statistics.median(losses)
        fig[("tapwire", "s10_capture_cost_mean_pct")] = statistics.mean(losses)
        fig[("tapwire", "s10_pairs")] = len(losses)
    p99_ratios = [p["p99_ratio"] for p in pairs if "p99_ratio" in p]
    if p99_ratios:
        fig[("tapwire", "s10_p99_ratio")] = statistics.median(p99_ratios)
    cpu = {}
    for by_slice in slices.values():
        for row in by_slice.values():
            req = lgv(row, "requests")
            if not req or row.get("cpu_s") is None:
                continue
            c = cpu.setdefault(row["peer"], {"cpu_s": 0.0, "tail_cpu_s": 0.0, "requests": 0,
                                             "rps": [], "writer_cpu_s": 0.0,
                                             "writer_tail_cpu_s": 0.0})
            c["cpu_s"] += row["cpu_s"]
            c["tail_cpu_s"] += row.get("tail_cpu_s") or 0.0
            c["writer_cpu_s"] += row.get("writer_cpu_s") or 0.0
            c["writer_tail_cpu_s"] += row.get("writer_tail_cpu_s") or 0.0
            c["requests"] += req
            c["rps"].append(lgv(row, "rps"))
    for peer, c in cpu.items():
        c["cpu_per_1k"] = (c["cpu_s"] + c["tail_cpu_s"]) / (c["requests"] / 1000.0)
        c["writer_us_per_flow"] = c["writer_cpu_s"] * 1e6 / c["requests"]
        c["writer_tail_us_per_flow"] = c["writer_tail_cpu_s"] * 1e6 / c["requests"]
        fig[(peer, "s10_cpu_per_1k")] = c["cpu_per_1k"]
        fig[(peer, "s10_rps")] = statistics.median(c["rps"])
    on, off = cpu.get("tapwire"), cpu.get("tapwire-nocapture")
    if on and off:
        fig[("tapwire", "s10_cpu_ratio")] = on["cpu_per_1k"] / off["cpu_per_1k"]
    # With --s10-max-flows below the requests made, the database holds
    # max_flows (pruned) and a drop shows only in the log.
    short = ["repetition %d: %s/%s%s" % (t["rep"], "{:,}".format(t["flows_stored"]),
                                         "{:,}".format(t.get("flows_expected",
                                                             t["requests_total"])),
                                         ", drops logged" if t.get("dropped_logged") else "")
             for t in totals
             if t["flows_stored"] < t.get("flows_expected", t["requests_total"]) or
             t.get("dropped_logged")]
    unsettled = sum(1 for by_slice in slices.values() for row in by_slice.values()
                    if row.get("settled") is False)
    info = {"pairs": pairs, "cpu": cpu, "flows": totals, "short": short,
            "unsettled": unsettled, "median_ci": median_interval(losses)}
    return fig, info


def median_interval(values, level=0.95):
    """A distribution-free interval for the median: the k-th smallest and
    k-th largest value, k the largest rank with P(Binomial(n, 1/2) < k) at
    most (1 - level) / 2. None below 6 values (no such k)."""
    n, xs = len(values), sorted(values)
    below, k = 0.0, 0
    for j in range(n):
        below += math.comb(n, j) / 2.0 ** n
        if below > (1 - level) / 2:
            break
        k = j + 1
    if k == 0:
        return None
    return xs[k - 1], xs[n - k]


def errors_of(row):
    n = 0
    for key in ("loadgen", "warm", "cold", "loadgen_small", "loadgen_large"):
        lg = row.get(key)
        if isinstance(lg, dict):
            n += int(lg.get("errors", 0))
        elif key == "loadgen" and key in row and lg is None:
            n += 1  # the load generator printed nothing
    if row.get("scenario") == 8:
        for size in ("small", "large"):
            part = row.get(size)
            if isinstance(part, dict):
                n += int(part.get("errors") or 0)
                for t in (part.get("times") or {}).values():
                    if isinstance(t, dict):
                        n += int(t.get("errors") or 0)
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
    ("s3_mint_ms", "3 cold host: minting ms per new host (tapwire's clock: lookup, sign, store)",
     "{:.2f}", "low", 3),
    ("s4_mbps", "4 one 100 MB download, MB/s", "{:,.0f}", "high", 4),
    ("s4_rss_growth_mib", "4 peak RSS growth during it, MiB", "{:.1f}", "low", 4),
    ("s5_idle_mib", "5 idle process RSS, MiB", "{:.1f}", "low", 5),
    ("s5_kib_per_conn", "5 RSS per idle intercepted conn, KiB", "{:.0f}", "low", 5),
    ("s5_threads", "5 threads with the conns held", "{:.0f}", "low", 5),
    ("s6_small_mib", "6 RSS after N1 captured exchanges, MiB", "{:.1f}", "low", 6),
    ("s6_large_mib", "6 RSS after N2 captured exchanges, MiB", "{:.1f}", "low", 6),
    ("s6_growth_pct", "6 growth N1 -> N2, %", "{:+.1f}", "low", 6),
    ("s7_cpu_per_1k", "7 proxy CPU s per 1,000 req (scenario 1)", "{:.3f}", "low", 7),
    ("s8_capture_cost_pct", "8 capture cost, keep-alive req/s: 1 − tapwire ÷ tapwire-nocapture (scenario 1), %",
     "{:.1f}", "low", 8),
    ("s8_capture_cpu_pct", "8 capture share of CPU per request: 1 − tapwire-nocapture ÷ tapwire (scenario 7), %",
     "{:.1f}", "low", 8),
    ("s8_writer_us", "8 flow writer alone (bench/flowwrite, 50,000 scenario-1-shaped flows), CPU µs per flow",
     "{:.1f}", "low", 8),
    ("s10_capture_cost_pct", "10 capture cost, keep-alive req/s (interleaved): median over adjacent "
     "slice pairs of 1 − tapwire ÷ tapwire-nocapture, %", "{:.1f}", "low", 10),
    ("s10_capture_cost_mean_pct", "10 … mean of the pair losses, %", "{:.1f}", "low", 10),
    ("s10_pairs", "10 … pairs", "{:.0f}", "", 10),
    ("s10_p99_ratio", "10 p99 latency, tapwire ÷ tapwire-nocapture: median over the same pairs",
     "{:.2f}", "low", 10),
    ("s10_rps", "10 keep-alive req/s per slice, median (16 conns, 1 KiB)", "{:,.0f}", "high", 10),
    ("s10_cpu_per_1k", "10 proxy CPU s per 1,000 req over the slices (tapwire: with its writer's tail)",
     "{:.3f}", "low", 10),
    ("s10_cpu_ratio", "10 CPU per request, tapwire ÷ tapwire-nocapture", "{:.2f}", "low", 10),
]

# Scenario 8's query shapes (bench/dashboard.py): key, label.
S8_SHAPES = ["list", "filter", "page2", "rare"]
S8_LABELS = {
    "list": "GET /api/flows?limit=100",
    "filter": "filtered: &status=2xx&q=bench (every flow matches)",
    "page2": "second page: &before=NEXT",
    "rare": "filter matching no flow: &q=zzzz-no-such-flow (reads every row)",
}
# Scenario 8 targets, on tapwire's medians: latency at N2 within this factor
# of N1 ("about the same"), and RSS growth N1 -> N2 within this many per cent.
S8_LATENCY_MAX_RATIO = 1.5
S8_RSS_MAX_GROWTH_PCT = 10.0
S9_VARIANTS = [("none", "no rule"), ("nomatch", "rule, pattern never found"),
               ("match", "rule, pattern found and replaced")]

# metric -> list of (peer, min ratio tapwire/peer) or ("abs", op, value)
TARGETS = {
    "s1_rps": [("direct", 0.5), ("squid", 2.0), ("mitmdump", 20.0)],
    "s2_rps": [("direct", 0.4), ("squid", 2.0), ("mitmdump", 5.0)],
    "s3_mint_ms": [("abs", "<=", 1.0)],
    "s4_mbps": [("direct", 0.5)],
    "s4_rss_growth_mib": [("abs", "<", 16.0)],
    "s5_kib_per_conn": [("abs", "<=", 64.0)],
    "s6_growth_pct": [("abs", "<=", 10.0)],
    "s8_capture_cost_pct": [("abs", "<", 10.0)],
    # The recorder's targets: capture under 5% of keep-alive req/s, p99
    # with capture within 1.25 times p99 without.
    "s10_capture_cost_pct": [("abs", "<", 5.0)],
    "s10_p99_ratio": [("abs", "<=", 1.25)],
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
    if tw is None or ov is None or ov == 0 or metric.endswith("_pct") or metric in ("s3_added", "s3_mint_ms"):
        return ""
    r = tw / ov
    if other == "direct" and better == "high":
        return "%.0f%%" % (r * 100)
    return ("%.1f×" if r >= 10 else "%.2f×") % r


def fmt_num(v, fmt):
    return "n/a" if v is None else fmt.format(v)


def dashboard_table(raw, med, a):
    """Scenario 8: tapwire's dashboard with N1 and N2 flows stored."""
    n1, n2 = int(a.dash_small or 0), int(a.dash_large or 0)
    c1, c2 = "{:,} flows".format(n1), "{:,} flows".format(n2)
    head = ["8 dashboard, tapwire (ms: %s requests each, one keep-alive connection)" % a.dash_requests,
            c1, c2, "%s ÷ %s" % (c2, c1), "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---|---|"]
    m = lambda k: med.get(("tapwire", k))

    def row(label, small, large, fmt, target="", kind="ratio"):
        cells = [label, fmt_num(small, fmt), fmt_num(large, fmt)]
        met = ""
        if small is not None and large is not None and small > 0:
            if kind == "ratio":
                r = large / small
                cells.append("%.2f×" % r)
                if target:
                    met = "yes" if r <= S8_LATENCY_MAX_RATIO else "**NO** (%.2f×)" % r
            else:
                g = (large / small - 1) * 100
                cells.append("%+.1f%%" % g)
                if target:
                    met = "yes" if g <= S8_RSS_MAX_GROWTH_PCT else "**NO** (%+.1f%%)" % g
        else:
            cells.append("")
        cells += [target, met]
        lines.append("| " + " | ".join(cells) + " |")

    for shape in S8_SHAPES:
        has_target = shape != "rare"
        row(S8_LABELS[shape] + ", p50 ms", m("s8_%s_p50_small" % shape), m("s8_%s_p50_large" % shape),
            "{:.2f}", "≤ %g×" % S8_LATENCY_MAX_RATIO if has_target else "")
        row("… p99 ms", m("s8_%s_p99_small" % shape), m("s8_%s_p99_large" % shape), "{:.2f}")
    row("proxy RSS after filling, MiB", m("s8_rssfill_small"), m("s8_rssfill_large"), "{:.1f}",
        kind="growth")
    row("proxy RSS after the list requests, MiB", m("s8_rss_small"), m("s8_rss_large"), "{:.1f}",
        "≤ +%g%%" % S8_RSS_MAX_GROWTH_PCT, kind="growth")

    notes = []
    fills = []
    for r in raw:
        if r["scenario"] != 8 or r.get("failed"):
            continue
        parts = []
        for size in ("small", "large"):
            p = r.get(size) or {}
            st = p.get("stats") or {}
            first = p.get("stats_after_first") or {}
            fill = p.get("fill") or {}
            txt = "{:,}/{:,} stored".format(st.get("stored", 0) or 0, p.get("n", 0) or 0)
            if (first.get("dropped") or 0) > 0 or (p.get("rounds") or 0) > 1:
                txt += " (%s dropped by the queue at %s req/s, %d top-up round(s))" % (
                    "{:,}".format(st.get("dropped") or 0),
                    "{:,.0f}".format(fill.get("rps") or 0), (p.get("rounds") or 1) - 1)
            parts.append(txt)
        fills.append("repetition %d: %s" % (r["rep"], "; ".join(parts)))
    if fills:
        notes.append("Scenario 8 fills the database through the proxy (keep-alive GET /1k, 8 "
                     "connections; `dropped` is the dashboard's cumulative count of flows the "
                     "queue dropped): " + ", ".join(fills) + ".")
    notes.append("Scenario 8 times each GET /api/flows shape %s times after 3 warm-ups on one "
                 "keep-alive connection with the token in X-Tapwire-Token (bench/dashboard.py), "
                 "first at %s and then at %s stored flows in the same process; medians over "
                 "repetitions. 'About the same' is judged as the %s median p50 within %g× of the "
                 "%s one; the filter that matches nothing is a full scan by design and has no "
                 "target." % (a.dash_requests, "{:,}".format(n1), "{:,}".format(n2),
                              "{:,}".format(n2), S8_LATENCY_MAX_RATIO, "{:,}".format(n1)))
    return "\n".join(lines), notes


def rules_table(raw, med, a, peers):
    """Scenario 9: one response body rule against none, 1 KiB and 1 MiB."""
    tw = [p for p in ("tapwire", "tapwire-nocapture") if p in peers]
    if not tw:
        return "", []
    head = ["9 one body rule (4 keep-alive conns)"]
    for p in tw:
        head += ["%s req/s" % p, "÷ no rule", "%s CPU s per 1,000 req" % p, "÷ no rule"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    matches = (a.s9_matches or "").split(",")
    for i, (size, size_label) in enumerate((("1k", "1 KiB"), ("1m", "1 MiB"))):
        for v, v_label in S9_VARIANTS:
            label = "%s, %s" % (size_label, v_label)
            if v == "match" and i < len(matches) and matches[i]:
                label += " (%s× per body)" % "{:,}".format(int(matches[i]))
            cells = [label]
            for p in tw:
                for metric, fmt in (("s9_rps_", "{:,.0f}"), ("s9_cpu_", "{:.3f}")):
                    val = med.get((p, metric + v + "_" + size))
                    base = med.get((p, metric + "none_" + size))
                    cells.append(fmt_num(val, fmt))
                    if v == "none" or val is None or not base:
                        cells.append("")
                    else:
                        cells.append("%.2f×" % (val / base))
            lines.append("| " + " | ".join(cells) + " |")

    notes = ["Scenario 9: rules `%s` (filter matches every response, the pattern never occurs: "
             "the body is buffered and scanned, and sent on unchanged) and `%s` (a same-length "
             "replacement, found %s times in the 1 KiB and 1 MiB bodies), each in a fresh process, "
             "against the same process without rules; bodies are English-like text/plain files from "
             "nginx, not compressed. %s s of load per step; CPU is the proxy's, from before the "
             "step until it is idle again (the flow writer drains its queue after the load "
             "ends). Ratios are of the medians." % (
                 a.s9_rule_nomatch, a.s9_rule_match,
                 " and ".join("{:,}".format(int(m)) for m in matches if m) or "?",
                 a.duration)]
    # Flows stored against exchanges made, per step (capture on only).
    steps = {}
    for r in raw:
        if r["scenario"] == 9 and r.get("flows_stored") is not None and r.get("size"):
            steps.setdefault((r["rep"], r["peer"], r["variant"]), {})[r["size"]] = r
    lost = {}
    for (rep_, peer, v), by_size in steps.items():
        prev_sent, prev_stored = 0, 0
        for size in ("1k", "1m"):
            r = by_size.get(size)
            if r is None:
                continue
            sent = (r.get("sent_total") or 0) - prev_sent
            stored = (r.get("flows_stored") or 0) - prev_stored
            prev_sent, prev_stored = r.get("sent_total") or 0, r.get("flows_stored") or 0
            if sent > 0:
                lost.setdefault((peer, v, size), []).append((stored, sent))
    if lost:
        parts = []
        for (peer, v, size), vals in sorted(lost.items()):
            parts.append("%s %s %s: %s" % (peer, dict(S9_VARIANTS)[v], size,
                                           ", ".join("%d/%d" % x for x in vals)))
        notes.append("Scenario 9 flows stored/exchanges made per step (with capture; fewer "
                     "stored means the flow queue overflowed and dropped them): " +
                     "; ".join(parts) + ".")
    return "\n".join(lines), notes


def interleaved_notes(s10, s1_losses, a):
    """Scenario 10: how it was measured, every pair, CPU and flows, and
    scenario 1's pairs of the same run beside them when there are any."""
    notes = ["Scenario 10 runs tapwire and tapwire `--no-capture` side by side, both warm, and "
             "gives them, in turn, %s slices of %s s of keep-alive load per repetition (16 "
             "connections, GET /1k) in ABBA order (BAAB in even repetitions), so that a drift of "
             "the machine hits both alike; adjacent slices (1-2, 3-4, ...) are pairs of one slice "
             "of each process, and the figure "
             "is the median over every pair of every repetition of 1 − with ÷ without (target "
             "< 5%%), and the p99 latency's is the median of with ÷ without over the same pairs "
             "(target ≤ 1.25). Before each slice the capture process has gone idle (its flow writer done "
             "with the previous slice's flows). It estimates what scenario 1's pair does, "
             "without the minutes between the two." % (
                 "{:,}".format(int(a.s10_slices)) if a.s10_slices else "N",
                 a.s10_slice_s or "?")]
    if s10["pairs"]:
        by_rep = {}
        for p in s10["pairs"]:
            by_rep.setdefault(p["rep"], []).append("%.1f" % p["loss_pct"])
        ci = s10["median_ci"]
        notes.append("Scenario 10 pair losses, %: " + "; ".join(
            "repetition %d: %s" % (r, ", ".join(v)) for r, v in sorted(by_rep.items())) +
            (". 95%% interval of the median (from the pairs' order statistics, no assumption "
             "about their distribution): %.1f%% to %.1f%%." % ci if ci else "."))
    if s1_losses:
        notes.append("Scenario 1's pairs in this run (tapwire and tapwire-nocapture of one "
                     "repetition, each fresh for %s s, one after the other): %s; median %.1f%%." % (
                         a.duration, ", ".join("%.1f" % v for v in s1_losses),
                         statistics.median(s1_losses)))
    on, off = s10["cpu"].get("tapwire"), s10["cpu"].get("tapwire-nocapture")
    if on and off:
        notes.append("Scenario 10 CPU s per 1,000 requests over all slices: tapwire %.3f "
                     "(%.3f during the slices, %.3f after them until idle: the writer's tail), "
                     "tapwire-nocapture %.3f (%.3f after); tapwire ÷ tapwire-nocapture %.2f×, "
                     "capture %.1f%% of tapwire's CPU per request." % (
                         on["cpu_per_1k"], on["cpu_s"] / on["requests"] * 1000,
                         on["tail_cpu_s"] / on["requests"] * 1000, off["cpu_per_1k"],
                         off["tail_cpu_s"] / off["requests"] * 1000,
                         on["cpu_per_1k"] / off["cpu_per_1k"],
                         (1 - off["cpu_per_1k"] / on["cpu_per_1k"]) * 100))
    if on and on.get("writer_cpu_s"):
        notes.append("Scenario 10 flow writer thread (tw-flowwriter) CPU per request through "
                     "the capture process: %.1f µs during the slices, %.1f µs after them until "
                     "idle (work it put off, such as header words), %.1f µs in all." % (
                         on["writer_us_per_flow"], on["writer_tail_us_per_flow"],
                         on["writer_us_per_flow"] + on["writer_tail_us_per_flow"]))
    if s10["flows"]:
        pruned = [t for t in s10["flows"] if t.get("flows_expected", t["requests_total"]) <
                  t["requests_total"]]
        notes.append("Scenario 10 flows stored/requests made through the capture process "
                     "(warm-up and slices): " + ", ".join(
                         "repetition %d: %s/%s" % (t["rep"], "{:,}".format(t["flows_stored"]),
                                                   "{:,}".format(t["requests_total"]))
                         for t in s10["flows"]) +
                     ("; with --max-flows %s, so the database was full and the oldest flows "
                      "were pruned (a segment, an eighth, at a time): at least %s expected" % (
                          "{:,}".format(pruned[0]["max_flows"]),
                          "{:,}".format(pruned[0]["flows_expected"])) if pruned else "") +
                     ("; fewer stored (or drops in the log) means the flow queue dropped flows, "
                      "which makes capture look cheaper: the target is then not met."
                      if s10["short"] else "; no flow was dropped."))
    if s10["unsettled"]:
        notes.append("Scenario 10: %d slice(s) ended with the process still using CPU after "
                     "5 s; their tail is cut there." % s10["unsettled"])
    return notes


def million_table(raw):
    """Scenario 11: tapwire's RSS over a million captured flows."""
    rows = [r for r in raw if r["scenario"] == 11 and not r.get("failed")]
    if not rows:
        return "", []
    lines = ["| 11 RSS over captured flows (tapwire, 16 keep-alive conns, 1 KiB) | MiB |",
             "|---|---:|"]
    notes = []
    for r in rows:
        mib = lambda kib: "%.1f" % (kib / 1024.0)
        steps = r.get("rss_steps_kib") or []
        n = int(r.get("flows") or 0)
        lines.append("| before the load (after one request) | %s |" % mib(r["rss_start_kib"]))
        for i, kib in enumerate(steps):
            if i in (0, 4, len(steps) - 1) or len(steps) < 4:
                lines.append("| after {:,} requests (end of step {}) | {} |".format(
                    n * (i + 1) // 10, i + 1, mib(kib)))
        lines.append("| peak during the run (1 s samples) | %s |" % mib(r["rss_peak_kib"]))
        lines.append("| peak (VmHWM) | %s |" % mib(r["hwm_kib"]))
        lines.append("| after the writer caught up | %s |" % mib(r["rss_after_kib"]))
        if steps:
            lines.append("| growth from the end of step 1 to the end, %% | %+.1f |" % (
                (steps[-1] / float(steps[0]) - 1) * 100))
        st = r.get("stats") or {}
        flows = {k: st.get(k) for k in ("written", "dropped", "write_errors", "stored")}
        notes.append("Scenario 11: %s requests in %s s with --max-flows %s; the writer's "
                     "counters at the end: %s." % (
                         "{:,}".format(r.get("sent", 0)), r.get("seconds"),
                         r.get("max_flows"), json.dumps(flows, sort_keys=True)[:400]))
    return "\n".join(lines), notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--out", required=True)
    for name in ("reps", "duration", "cold-hosts", "idle-conns", "capture-small",
                 "capture-large", "quick", "scenarios", "peers", "dash-small", "dash-large",
                 "dash-requests", "s9-matches", "s9-rule-nomatch", "s9-rule-match",
                 "s10-slices", "s10-slice-s", "s10-max-flows", "s11-flows", "s11-max-flows"):
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
    for p, k, v in derive_pairs(raw):
        per.setdefault((p, k), []).append(v)
    med = {k: statistics.median(v) for k, v in per.items()}
    s10_fig, s10 = derive_interleaved(raw)
    med.update(s10_fig)

    wanted = set(int(s) for s in a.scenarios.split(",") if s.strip().isdigit())
    lines = []
    # A ratio column for each of these peers that ran.
    others = [o for o in ("direct", "mitmdump", "squid") if o in peers]
    head = ["scenario / metric"] + peers + ["tapwire ÷ " + o for o in others] + [
        "target (tapwire)", "met"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 3) + ["---", "---"]) + "|")
    main_rows = 0
    for metric, label, fmt, better, scen in ROWS:
        if scen not in wanted and not (scen == 7 and 1 in wanted and
                                       "tapwire-baseline" in peers):
            continue
        main_rows += 1
        src_scen = {7: 1, 8: 1}.get(scen, scen)
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
                if (p, src_scen) in failed:
                    cell = "failed"
                elif scen == 6 and p == "tapwire" and capture_missing:
                    cell = "n/a (no capture)"
                else:
                    cell = "n/a"
            else:
                cell = fmt.format(v)
                n_err = errors.get((p, src_scen), 0)
                if n_err and metric in ("s1_rps", "s2_rps", "s3_cold", "s4_mbps",
                                        "s5_kib_per_conn", "s6_large_mib", "s10_rps"):
                    cell += " (%d err)" % n_err
            cells.append(cell)
        if "tapwire" in peers:
            met = target_met(metric, med)
            if metric == "s10_capture_cost_pct" and s10["short"]:
                # Dropped flows make capture look cheaper: no pass then.
                met = "**NO** (flows stored/requests: %s)" % "; ".join(s10["short"])
            cells += [ratio(metric, med, o, better) for o in others]
            cells += [target_text(metric), met]
        else:
            cells += [""] * len(others) + [target_text(metric), ""]
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
    if "tapwire-baseline" in peers:
        notes.append("tapwire-baseline is %s (%s), started with tapwire's options and its own "
                     "data directory: the figures before a change. In each repetition of a "
                     "scenario it runs right before or after tapwire, back to back, in the "
                     "order tapwire, baseline, baseline, tapwire, ... over the repetitions "
                     "(ABBA), so a drift of the machine hits both alike; the before-and-after "
                     "table takes the median of the repetitions' pairs." % (
                         versions.get("tapwire_baseline_source") or "another binary",
                         versions.get("tapwire_baseline") or "n/a"))
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
    if "tapwire" in peers and 8 in wanted:
        if "tapwire-nocapture" in peers:
            notes.append("Scenario 8's capture cost pairs tapwire and tapwire-nocapture of the same "
                         "repetition in scenario 1 (req/s: 1 − with ÷ without) and 7 (CPU per "
                         "request: 1 − without ÷ with), then takes the median; target < 10%.")
        else:
            notes.append("Scenario 8's capture cost needs the tapwire-nocapture peer: n/a.")
    if "tapwire" in peers and 10 in wanted:
        notes += interleaved_notes(s10, per.get(("tapwire", "s8_capture_cost_pct")), a)
    table = "\n".join(lines) if main_rows else ""
    dash_table, dash_notes = dashboard_table(raw, med, a) if 8 in wanted and "tapwire" in peers \
        else ("", [])
    rules_table_md, rules_notes = rules_table(raw, med, a, peers) if 9 in wanted else ("", [])
    million_md, million_notes = million_table(raw) if 11 in wanted else ("", [])
    base_pairs = derive_baseline(raw)
    base_table, base_notes = ("", [])
    if "tapwire" in peers and "tapwire-baseline" in peers:
        base_table, base_notes = baseline_table(base_pairs, wanted, a)
    notes += base_notes + dash_notes + rules_notes + million_notes
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if versions.get("tapwire_baseline_source"):
        vline_base = "; tapwire-baseline %s (%s)" % (versions.get("tapwire_baseline"),
                                                    versions.get("tapwire_baseline_source"))
    else:
        vline_base = ""
    vline = ("%s (%s)%s, %s, nginx %s, mitmproxy %s, squid-openssl %s, sslsplit %s; "
             "Linux %s, %s × %s" % (
                 versions.get("tapwire"), versions.get("tapwire_source"), vline_base,
                 versions.get("openssl"),
                 versions.get("nginx", "").replace("nginx version: nginx/", ""),
                 versions.get("mitmproxy"), versions.get("squid"), versions.get("sslsplit"),
                 versions.get("kernel"), versions.get("cpus"),
                 versions.get("cpu_model", "").strip()))

    print()
    print("Measured %s; %s." % (date, vline))
    for t in (table, base_table, dash_table, rules_table_md, million_md):
        if t:
            print()
            print(t)
    print()
    for n in notes:
        print("- " + n)
    print()

    result = {
        "date": date,
        "versions": versions,
        "config": {k: getattr(a, k.replace("-", "_")) for k in (
            "reps", "duration", "cold_hosts", "idle_conns", "capture_small",
            "capture_large", "quick", "scenarios", "peers", "dash_small", "dash_large",
            "dash_requests", "s9_matches", "s9_rule_nomatch", "s9_rule_match",
            "s10_slices", "s10_slice_s", "s10_max_flows", "s11_flows", "s11_max_flows")},
        "medians": {p: {m: v for (pp, m), v in med.items() if pp == p} for p in peers},
        "errors": {"%s/%d" % k: v for k, v in errors.items()},
        "table_markdown": table,
        "table_dashboard_markdown": dash_table,
        "table_rules_markdown": rules_table_md,
        "table_million_markdown": million_md,
        "table_baseline_markdown": base_table,
        "baseline_pairs": {"%d/%s" % k: [{"rep": r, "first": f, "change_pct": v}
                                         for r, f, v in vals]
                           for k, vals in base_pairs.items()},
        "interleaved": {"pairs": s10["pairs"], "cpu": s10["cpu"], "flows": s10["flows"]},
        "notes": notes,
        "raw": raw,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
