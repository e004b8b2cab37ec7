#!/usr/bin/env python3
"""Turns bench/run.sh's results.tsv into the markdown summary and the ratio chart.

    python3 bench/report.py RESULTS_DIR

Reads RESULTS_DIR/results.tsv (test, variant, rep, metric, value), machine.md and notes.txt;
writes RESULTS_DIR/summary.md (also printed), RESULTS_DIR/ratios.svg and RESULTS_DIR/targets.tsv
(for bench/across_runs.py). Only the standard library: the chart is plain SVG written here.
"""
import collections
import math
import os
import statistics
import sys

OURS = ["raw", "mux"]
BUSY = {"raw": "raw-bp", "mux": "mux-bp"}  # the same with --busy-poll (request/response tests only)


def load(path):
    """(test, variant, metric) -> [values], and the same -> {rep: value}."""
    data = collections.defaultdict(list)
    by_rep = collections.defaultdict(dict)
    with open(path) as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                continue
            test, variant, rep, metric, value = parts
            try:
                data[(test, variant, metric)].append(float(value))
                by_rep[(test, variant, metric)][rep] = float(value)
            except ValueError:
                pass
    return data, by_rep


class Figures:
    def __init__(self, data, by_rep):
        self.data = data
        self.by_rep = by_rep

    def paired_ratio(self, test, a, b, metric, minus=None):
        """The median over repetitions of a's figure ÷ b's in the same repetition (each
        repetition runs every variant close together, so drift over the run cancels). With
        `minus`, that variant's figure in the same repetition is first taken from both (for
        latency added over direct)."""
        ra, rb = self.by_rep.get((test, a, metric), {}), self.by_rep.get((test, b, metric), {})
        rm = self.by_rep.get((test, minus, metric), {}) if minus else None
        ratios = []
        for k in ra:
            if k not in rb or (rm is not None and k not in rm):
                continue
            base = rm[k] if rm is not None else 0.0
            if rb[k] - base:
                ratios.append((ra[k] - base) / (rb[k] - base))
        return statistics.median(ratios) if ratios else None

    def med(self, test, variant, metric):
        v = self.data.get((test, variant, metric))
        return statistics.median(v) if v else None

    def spread(self, test, variant, metric):
        v = self.data.get((test, variant, metric))
        if not v or len(v) < 2:
            return ""
        return f"{min(v):.4g}–{max(v):.4g}"

    def failed(self, test, variant):
        return any(k[0] == test and k[1] == variant and (k[2] == "failed" or k[2].endswith("_failed")
                   or k[2].startswith("failed") or k[2] == "unavailable") for k in self.data)

    def variants(self, test):
        return {k[1] for k in self.data if k[0] == test}


def fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    a = abs(x)
    if float(x).is_integer() and a < 1000:
        return f"{int(x)}" + unit
    if a >= 1000:
        s = f"{x:,.0f}"
    elif a >= 100:
        s = f"{x:.0f}"
    elif a >= 10:
        s = f"{x:.1f}"
    elif a >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3f}"
    return s + unit


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    if r is None:
        return "—"
    return f"{r:.2f}×"


def main():
    out = sys.argv[1]
    data, by_rep = load(os.path.join(out, "results.tsv"))
    F = Figures(data, by_rep)
    lines = []
    P = lines.append

    machine = ""
    mpath = os.path.join(out, "machine.md")
    if os.path.exists(mpath):
        machine = open(mpath).read()

    def avail(test, v, metric_probe=None):
        return any(k[0] == test and k[1] == v for k in data)

    # ------------------------------------------------------------ main table rows
    # each row: label, unit, getter(variant) -> value or None, better ("high"/"low"), ratio_vs_direct?
    def g(test, metric, scale=1.0):
        def get(v):
            x = F.med(test, v, metric)
            return None if x is None else x * scale
        return get

    def added_p50(v):
        a, d = F.med("rr1", v, "p50_ms"), F.med("rr1", "direct", "p50_ms")
        return None if a is None or d is None else a - d

    rows = [
        ("Bulk, 1 TCP connection", "Gbit/s", g("bulk", "bulk_1_bps", 1e-9), "high", True),
        ("Bulk, 8 TCP connections", "Gbit/s", g("bulk", "bulk_8_bps", 1e-9), "high", True),
        ("Bulk, 1 connection, per CPU-second of the busier tunnel end", "MB/s", g("bulk", "bulk_1_Bps_per_cpu", 1e-6), "high", False),
        ("Bulk, 8 connections, per CPU-second of the busier tunnel end", "MB/s", g("bulk", "bulk_8_Bps_per_cpu", 1e-6), "high", False),
        ("Bulk, 1 connection, 50 ms round trip (delay line)", "Gbit/s", g("wan", "wan_bps", 1e-9), "high", True),
        ("Request/response, 1 client: p50", "ms", g("rr1", "p50_ms"), "low", True),
        ("… p50 added over direct", "ms", added_p50, "low", False),
        ("Request/response, 1 client: rate", "req/s", g("rr1", "rps"), "high", True),
        ("Request/response, 50 clients: rate", "req/s", g("rr50", "rps"), "high", True),
        ("Request/response, 50 clients: p99", "ms", g("rr50", "p99_ms"), "low", True),
        ("One client paced at 1,000 req/s: p50", "ms", g("paced", "p50_ms"), "low", True),
        ("… CPU of both tunnel ends, % of one core", "%", g("paced", "cpu_pct_both"), "low", False),
        ("New connection per request (-k 0, 10 clients)", "req/s", g("cpr", "rps"), "high", True),
        ("… CPU per request of the relay processes (both ends)", "µs", g("cpr", "cpu_us_per_req"), "low", False),
        ("Memory per idle connection @1000 (in+out)", "KiB", g("mem1000", "kib_per_conn"), "low", False),
        ("… client side (tunnel-in / stunnel client)", "KiB", g("mem1000", "kib_per_conn_in"), "low", False),
        ("… server side (tunnel-out / stunnel server)", "KiB", g("mem1000", "kib_per_conn_out"), "low", False),
        ("Memory per idle connection @5000 (in+out)", "KiB", g("mem5000", "kib_per_conn"), "low", False),
        ("… client side", "KiB", g("mem5000", "kib_per_conn_in"), "low", False),
        ("… server side", "KiB", g("mem5000", "kib_per_conn_out"), "low", False),
    ]

    all_variants = ["direct", "stunnel", "raw", "mux"]
    present = [v for v in all_variants if any(k[1] == v for k in data)]
    ours_present = [v for v in OURS if v in present]

    P("# Benchmark: direct vs stunnel vs tunnel-in/tunnel-out")
    P("")
    for l in machine.splitlines():
        if l.startswith(("date:", "kernel:", "nproc:", "loadavg", "tunnel-in:", "git HEAD:", "mbedtls:", "stunnel:", "features:", "options:")):
            P(f"- {l}")
    P("")
    P("Medians over the repetitions (spread in results.tsv and the detail table below). "
      "Ratios are ours ÷ the other, so read them with the row's direction: ↑ higher is better, ↓ lower is better.")
    P("")
    hdr = ["figure", "unit"] + present
    for o in ours_present:
        if "stunnel" in present:
            hdr.append(f"{o}/stunnel")
    for o in ours_present:
        hdr.append(f"{o}/direct")
    P("| " + " | ".join(hdr) + " |")
    P("|" + "---|" * len(hdr))
    for label, unit, get, better, vs_direct in rows:
        vals = {v: get(v) for v in present}
        if all(x is None for x in vals.values()):
            continue
        arrow = "↑" if better == "high" else "↓"
        cells = [f"{label} {arrow}", unit]
        for v in present:
            x = vals[v]
            if x is None and v != "direct":
                test = None
                cells.append("failed" if any(k[1] == v and k[2].startswith("failed") for k in data) else "—")
            else:
                cells.append(fmt(x) if not (v == "direct" and not vs_direct and label.startswith("Memory")) else "—")
        for o in ours_present:
            if "stunnel" in present:
                cells.append(fmt_ratio(ratio(vals.get(o), vals.get("stunnel"))))
        for o in ours_present:
            cells.append(fmt_ratio(ratio(vals.get(o), vals.get("direct"))) if vs_direct else "—")
        P("| " + " | ".join(cells) + " |")
    P("")

    # ------------------------------------------------------------ with --busy-poll
    busy_present = [(o, BUSY[o]) for o in ours_present if any(k[1] == BUSY[o] for k in data)]
    if busy_present:
        opts = next((l for l in machine.splitlines() if l.startswith("options:")), "")
        us = next((w.split("=")[1] for w in opts.split() if w.startswith("busy_poll_us=")), "?")
        P(f"The request/response tests again with `--busy-poll {us}` on both tunnel ends (`raw-bp`, `mux-bp`): "
          f"a worker with nothing to do keeps looking for work for {us} µs before it sleeps.")
        P("")
        hdr = ["figure", "unit"] + (["stunnel"] if "stunnel" in present else [])
        for o, b in busy_present:
            hdr += [o, b]
        hdr += [f"{b}/stunnel" for o, b in busy_present if "stunnel" in present] + [f"{b}/{o}" for o, b in busy_present]
        P("| " + " | ".join(hdr) + " |")
        P("|" + "---|" * len(hdr))
        for label, unit, get, better, _ in rows:
            if not label.startswith(("Request/response", "… p50 added", "One client paced", "… CPU of both",
                                     "New connection")):
                continue
            cells = [f"{label} {'↑' if better == 'high' else '↓'}", unit]
            if "stunnel" in present:
                cells.append(fmt(get("stunnel")))
            for o, b in busy_present:
                cells += [fmt(get(o)), fmt(get(b))]
            if "stunnel" in present:
                cells += [fmt_ratio(ratio(get(b), get("stunnel"))) for o, b in busy_present]
            cells += [fmt_ratio(ratio(get(b), get(o))) for o, b in busy_present]
            P("| " + " | ".join(cells) + " |")
        P("")
        if any((added_p50(b) or 0) < 0 for o, b in busy_present):
            P("A p50 below direct's is no tunnel taking time away: the polling tunnel ends keep this machine's "
              "(virtual) CPUs from going idle, so the client and the server wake faster too, which the direct "
              "run does not get. Read these rows as what the option does on a host like this one.")
            P("")

    # ------------------------------------------------------------ latency floor
    floor = added_p50("relay")
    if floor is not None:
        P("The floor of one client's added latency: a plain relay pair (two socat forwarders, no TLS) "
          "in the places of the tunnel ends adds "
          f"{fmt(floor)} ms at p50 over direct; stunnel adds {fmt(added_p50('stunnel'))} ms"
          + "".join(f", {o} {fmt(added_p50(o))} ms" for o in ours_present) + ". "
          f"The target (≤ 0.5× stunnel's) is {fmt(ratio(0.5 * added_p50('stunnel'), floor) if added_p50('stunnel') else None)}× this floor.")
        P("")

    # ------------------------------------------------------------ -k 0 floor
    hop = F.med("cpr", "hop", "rps")
    if hop is not None:
        st_cpr = F.med("cpr", "stunnel", "rps")
        P("The floor of a new connection per request: one plain relay (haproxy, no TLS, one process) "
          "between the client and redis, which accepts and connects once per request as our pair must, "
          f"reaches {fmt(hop)} req/s (direct {fmt(F.med('cpr', 'direct', 'rps'))})"
          + "".join(f"; {o} {fmt(F.med('cpr', o, 'rps'))} ({fmt_ratio(ratio(F.med('cpr', o, 'rps'), hop))} of it)"
                    for o in ours_present) + ". "
          + (f"The target (≥ 10× stunnel's {fmt(st_cpr)}) is {fmt(10 * st_cpr)} req/s, "
             f"{fmt_ratio(ratio(10 * st_cpr, hop))} this floor." if st_cpr else ""))
        P("")
        cpu = {v: F.med("cpr", v, "cpu_us_per_req") for v in ["stunnel", "hop"] + ours_present}
        if all(cpu[v] is not None for v in cpu):
            direct_cpr = F.med("cpr", "direct", "rps")
            P("CPU per request at -k 0, all relay processes together (load-independent): "
              + ", ".join(f"{v} {fmt(cpu[v])} µs" for v in cpu) + ". "
              + "".join(f"{o} spends {fmt_ratio(ratio(cpu[o], cpu['stunnel']))} of stunnel's and "
                        f"{fmt_ratio(ratio(cpu[o], cpu['hop']))} of the hop's. " for o in ours_present)
              + (f"redis-benchmark and redis-server take the rest of the two cores, at most "
                 f"{fmt(2e6 / direct_cpr)} µs of CPU per request (two cores ÷ direct's rate), which every "
                 f"variant pays on top of its own."
                 if direct_cpr else ""))
            P("")

    # ------------------------------------------------------------ held connections
    held = []
    for n in (1000, 5000):
        for v in ["stunnel"] + OURS:
            ok = F.med(f"mem{n}", v, "setup_ok")
            if ok is None and not F.failed(f"mem{n}", v):
                continue
            rok = F.med(f"mem{n}", v, "recheck_ok")
            secs = F.med(f"mem{n}", v, "setup_secs")
            alive = F.med(f"mem{n}", v, "processes_alive")
            thr_in = F.med(f"mem{n}", v, "threads_in")
            thr_out = F.med(f"mem{n}", v, "threads_out")
            held.append((n, v, ok, rok, secs, alive, thr_in, thr_out))
    if held:
        P("Idle connections held (memory test): opened through the tunnel, one PING each, held, PINGed again.")
        P("")
        P("| connections | variant | set up ok | still answering | set-up time (s) | set-up rate (conn/s) | processes alive | threads in/out |")
        P("|---|---|---|---|---|---|---|---|")
        for n, v, ok, rok, secs, alive, ti, to in held:
            rate = (ok / secs) if ok and secs else None
            P(f"| {n} | {v} | {fmt(ok) if ok is not None else 'failed'} | {fmt(rok)} | {fmt(secs)} | {fmt(rate)} | "
              f"{'yes' if alive == 1 else ('no' if alive == 0 else '—')} | {fmt(ti)}/{fmt(to)} |")
        P("")

    # ------------------------------------------------------------ UDP
    udp_vs = [v for v in ["direct", "socat", "raw", "mux"] if any(k[0] == "udp" and k[1] == v for k in data)]
    rates = sorted({int(k[2].split("_")[1]) for k in data if k[0] == "udp" and k[2].startswith("rate_")})
    if udp_vs:
        P(f"UDP, one flow, 512-byte datagrams, offered at fixed rates (delivered datagrams/s, loss %):")
        P("")
        hdr = ["offered /s"] + udp_vs + [f"{o}/{b}" for o in OURS if o in udp_vs for b in ("socat", "direct") if b in udp_vs]
        P("| " + " | ".join(hdr) + " |")
        P("|" + "---|" * len(hdr))
        for r in rates:
            cells = [f"{r:,}"]
            for v in udp_vs:
                got = F.med("udp", v, f"rate_{r}")
                loss = F.med("udp", v, f"loss_{r}")
                if got is None:
                    cells.append("unavailable" if F.failed("udp", v) else "—")
                else:
                    cells.append(f"{got:,.0f} ({100 * loss:.2f}% lost)")
            for o in OURS:
                if o not in udp_vs:
                    continue
                for b in ("socat", "direct"):
                    if b in udp_vs:
                        cells.append(fmt_ratio(ratio(F.med("udp", o, f"rate_{r}"), F.med("udp", b, f"rate_{r}"))))
            P("| " + " | ".join(cells) + " |")
        for v in udp_vs:
            if F.failed("udp", v) and F.med("udp", v, f"rate_{rates[0]}" if rates else "x") is None:
                P(f"\n{v}: unavailable (see notes).")
        P("")

    # ------------------------------------------------------------ ceiling
    ce = {m: F.med("ceiling", "mbedtls", m) for m in [
        "chacha20_poly1305_encrypt_Bps", "chacha20_poly1305_decrypt_Bps", "aes_128_gcm_encrypt_Bps",
        "aes_128_gcm_decrypt_Bps", "aes_256_gcm_encrypt_Bps", "aes_256_gcm_decrypt_Bps",
        "handshake_cpu_ms_both", "handshake_cpu_ms_client", "handshake_cpu_ms_server"]}
    ceiling_Bps = None
    if ce["chacha20_poly1305_encrypt_Bps"]:
        ceiling_Bps = min(ce["chacha20_poly1305_encrypt_Bps"], ce["chacha20_poly1305_decrypt_Bps"])
        P("The ceiling (mbedTLS on one core of this machine, 16 KiB records, CPU time):")
        P("")
        P("| figure | value |")
        P("|---|---|")
        for name, key in [("ChaCha20-Poly1305", "chacha20_poly1305"), ("AES-128-GCM", "aes_128_gcm"), ("AES-256-GCM", "aes_256_gcm")]:
            e, d = ce[f"{key}_encrypt_Bps"], ce[f"{key}_decrypt_Bps"]
            P(f"| {name} encrypt / decrypt | {e / 1e6:.0f} / {d / 1e6:.0f} MB/s ({8 * min(e, d) / 1e9:.2f} Gbit/s) |")
        hs = ce["handshake_cpu_ms_both"]
        P(f"| TLS 1.3 mutual-auth full handshake (ECDSA P-256, P-256 ECDHE), both ends | {hs:.2f} ms CPU "
          f"(client {ce['handshake_cpu_ms_client']:.2f}, server {ce['handshake_cpu_ms_server']:.2f}) |")
        P(f"| → handshakes/s at most, {os.cpu_count()} cores, both ends on this host | {1000 * os.cpu_count() / hs:.0f} |")
        for o in ours_present:
            b1 = F.med("bulk", o, "bulk_1_bps")
            if b1:
                P(f"| {o} bulk 1 connection ÷ ChaCha20-Poly1305 ceiling | {b1 / 8 / ceiling_Bps:.0%} |")
            c1 = F.med("bulk", o, "bulk_1_Bps_per_cpu")
            if c1:
                P(f"| {o} bulk 1 connection per CPU-second of the busier end ÷ ceiling | {c1 / ceiling_Bps:.0%} |")
        P("")

    # ------------------------------------------------------------ targets
    targets = []  # (name, variant, value_text, target_text, pass?)

    def tgt(name, variant, value, limit, higher, fmtv=fmt_ratio):
        if value is None:
            targets.append((name, variant, "not measured", ("≥ " if higher else "≤ ") + fmtv(limit), None))
            return
        ok = value >= limit if higher else value <= limit
        targets.append((name, variant, fmtv(value), ("≥ " if higher else "≤ ") + fmtv(limit), ok))

    st = lambda test, metric: F.med(test, "stunnel", metric)

    def vs_stunnel(name, test, variant, metric, limit, higher):
        """The target as the ratio of the medians, then as the median of the ratios within
        each repetition (the same variants measured minutes apart drift on this machine)."""
        tgt(name, variant, ratio(F.med(test, variant, metric), st(test, metric)), limit, higher)
        tgt("… the same, median of per-repetition ratios", variant, F.paired_ratio(test, variant, "stunnel", metric),
            limit, higher)

    def added_vs_stunnel(variant):
        tgt("1-client p50 added over direct vs stunnel's", variant, ratio(added_p50(variant), added_p50("stunnel")), 0.5,
            False)
        tgt("… the same, median of per-repetition ratios", variant,
            F.paired_ratio("rr1", variant, "stunnel", "p50_ms", minus="direct"), 0.5, False)

    if "mux" in present:
        vs_stunnel("new connection per request vs stunnel", "cpr", "mux", "rps", 10, True)
        if F.med("cpr", "hop", "rps") is not None:
            targets.append(("… for scale: one plain relay (haproxy, no TLS) vs stunnel", "—",
                            fmt_ratio(ratio(F.med("cpr", "hop", "rps"), st("cpr", "rps"))), "—", None))
    else:
        targets.append(("new connection per request vs stunnel", "mux", "mux not available", "≥ 10.00×", None))
    for o in OURS:
        if o not in present:
            continue
        vs_stunnel("50-client request rate vs stunnel", "rr50", o, "rps", 2, True)
        vs_stunnel("50-client p99 vs stunnel", "rr50", o, "p99_ms", 0.5, False)
        added_vs_stunnel(o)
        if o == ours_present[-1] and added_p50("relay") is not None:
            targets.append(("… for scale: what a plain relay pair (no TLS) adds vs stunnel's", "—",
                            fmt_ratio(ratio(added_p50("relay"), added_p50("stunnel"))), "—", None))
        for n in (1000, 5000):
            m = F.med(f"mem{n}", o, "kib_per_conn")
            s = F.med(f"mem{n}", "stunnel", "kib_per_conn")
            if m is None and s is None and not F.failed(f"mem{n}", o):
                continue
            tgt(f"memory per idle connection @{n} vs stunnel", o, ratio(m, s), 0.1 if o == "mux" else 0.5, False)
        if ceiling_Bps:
            b1 = F.med("bulk", o, "bulk_1_bps")
            tgt("bulk 1 connection vs mbedTLS ChaCha20-Poly1305 ceiling", o,
                None if b1 is None else b1 / 8 / ceiling_Bps, 0.85, True, lambda x: f"{x:.0%}")
            c1 = F.med("bulk", o, "bulk_1_Bps_per_cpu")
            if c1 is not None:
                tgt("… same, per CPU-second of the busier tunnel end (load-independent)", o, c1 / ceiling_Bps, 0.85, True,
                    lambda x: f"{x:.0%}")
        ok5 = F.med("mem5000", o, "setup_ok")
        rok5 = F.med("mem5000", o, "recheck_ok")
        if ok5 is not None or F.failed("mem5000", o):
            held_ok = ok5 == 5000 and rok5 == 5000 and F.med("mem5000", o, "processes_alive") == 1
            targets.append(("5000 concurrent tunneled connections, no error", o,
                            f"{fmt(ok5)} set up, {fmt(rok5)} answering", "5000 / 5000", held_ok))
        else:
            targets.append(("5000 concurrent tunneled connections, no error", o, "not run (--quick)", "5000 / 5000", None))

    for o, b in [(o, BUSY[o]) for o in OURS if any(k[1] == BUSY[o] for k in data)]:
        added_vs_stunnel(b)
        vs_stunnel("50-client request rate vs stunnel", "rr50", b, "rps", 2, True)
        vs_stunnel("50-client p99 vs stunnel", "rr50", b, "p99_ms", 0.5, False)
        if o == "mux":
            vs_stunnel("new connection per request vs stunnel", "cpr", b, "rps", 10, True)

    P("## Targets")
    P("")
    P("| target | ours | measured | target | result |")
    P("|---|---|---|---|---|")
    for name, v, val, lim, ok in targets:
        res = "**pass**" if ok else ("**MISS**" if ok is False else "n/a")
        P(f"| {name} | {v} | {val} | {lim} | {res} |")
    P("")
    write_targets(os.path.join(out, "targets.tsv"), targets)

    # ------------------------------------------------------------ detail
    P("<details><summary>All medians with min–max over repetitions</summary>")
    P("")
    P("| test | variant | metric | median | min–max | n |")
    P("|---|---|---|---|---|---|")
    for (test, v, metric), vals in sorted(data.items()):
        P(f"| {test} | {v} | {metric} | {statistics.median(vals):.6g} | {F.spread(test, v, metric)} | {len(vals)} |")
    P("")
    P("</details>")
    P("")

    notes = os.path.join(out, "notes.txt")
    if os.path.exists(notes):
        P("## Notes from the run")
        P("")
        for l in open(notes):
            P(f"- {l.strip()}")
        P("")

    # ------------------------------------------------------------ chart
    bars = []  # (label, ratio, target, higher_is_better)
    def add_bar(label, r, t, higher):
        if r is not None and r > 0:
            bars.append((label, r, t, higher))
    for o in ours_present:
        add_bar(f"{o}: bulk 1 conn", ratio(F.med("bulk", o, "bulk_1_bps"), st("bulk", "bulk_1_bps")), None, True)
        add_bar(f"{o}: bulk 8 conns", ratio(F.med("bulk", o, "bulk_8_bps"), st("bulk", "bulk_8_bps")), None, True)
        add_bar(f"{o}: 1-client added p50", ratio(added_p50(o), added_p50("stunnel")), 0.5, False)
        add_bar(f"{o}: 50-client rate", ratio(F.med("rr50", o, "rps"), st("rr50", "rps")), 2, True)
        add_bar(f"{o}: 50-client p99", ratio(F.med("rr50", o, "p99_ms"), st("rr50", "p99_ms")), 0.5, False)
        add_bar(f"{o}: new conn/request", ratio(F.med("cpr", o, "rps"), st("cpr", "rps")), 10 if o == "mux" else None, True)
        for n in (1000, 5000):
            add_bar(f"{o}: memory/conn @{n}", ratio(F.med(f"mem{n}", o, "kib_per_conn"), st(f"mem{n}", "kib_per_conn")),
                    0.1 if o == "mux" else 0.5, False)
    write_svg(os.path.join(out, "ratios.svg"), bars)
    P(f"Chart of ours/stunnel ratios: ratios.svg")

    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)


def write_targets(path, targets):
    """targets.tsv: one line per target, for bench/across_runs.py. A "… the same" row is
    named in full (its target's name, then what the row measures)."""
    with open(path, "w") as f:
        f.write("target\tours\tmeasured\ttarget_value\tresult\n")
        last = ""
        for name, v, val, lim, ok in targets:
            full = name
            if name.startswith("… "):
                full = f"{last} — {name[2:].removeprefix('the same, ')}"
            else:
                last = name
            res = "pass" if ok else ("MISS" if ok is False else "n/a")
            f.write(f"{full}\t{v}\t{val}\t{lim}\t{res}\n")


def write_svg(path, bars):
    """Horizontal bars on a log scale around 1 (= same as stunnel). Green: better than stunnel
    in the row's direction; a black tick marks the target where there is one."""
    if not bars:
        return
    lo, hi = 0.01, 100.0
    for _, r, t, _ in bars:
        lo = min(lo, r / 1.5)
        hi = max(hi, r * 1.5)
    lo = 10 ** math.floor(math.log10(lo))
    hi = 10 ** math.ceil(math.log10(hi))
    W, left, right, top, rowh = 900, 230, 40, 50, 24
    H = top + rowh * len(bars) + 60
    plot_w = W - left - right

    def x(v):
        return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">')
    o.append(f'<rect width="{W}" height="{H}" fill="white"/>')
    o.append(f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="15">ours ÷ stunnel (log scale; 1 = same as stunnel)</text>')
    o.append(f'<text x="{W / 2}" y="37" text-anchor="middle" fill="#555">green = better than stunnel, red = worse; '
             f'black tick = target; rows marked ↓ are better when smaller</text>')
    d = lo
    while d <= hi * 1.0001:
        xx = x(d)
        o.append(f'<line x1="{xx:.1f}" y1="{top - 5}" x2="{xx:.1f}" y2="{H - 45}" stroke="{"#333" if abs(d - 1) < 1e-9 else "#ddd"}"/>')
        o.append(f'<text x="{xx:.1f}" y="{H - 30}" text-anchor="middle">{d:g}×</text>')
        d *= 10
    for i, (label, r, t, higher) in enumerate(bars):
        y = top + i * rowh
        good = (r >= 1) if higher else (r <= 1)
        color = "#3a9a4a" if good else "#c0392b"
        x0, x1 = sorted((x(1), x(r)))
        arrow = "↑" if higher else "↓"
        o.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{label} {arrow}</text>')
        o.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(1, x1 - x0):.1f}" height="{rowh - 8}" fill="{color}"/>')
        tx = x(r) + (4 if r >= 1 else -4)
        o.append(f'<text x="{tx:.1f}" y="{y + 15}" text-anchor="{"start" if r >= 1 else "end"}" font-size="11">{r:.2f}×</text>')
        if t:
            o.append(f'<line x1="{x(t):.1f}" y1="{y + 1}" x2="{x(t):.1f}" y2="{y + rowh - 1}" stroke="black" stroke-width="3"/>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
