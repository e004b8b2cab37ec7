#!/usr/bin/env python3
"""Summarises bench/profile.sh's callgrind and perf profiles as markdown.

    python3 bench/profile_report.py DIR

For each case (bulk, cpr) and binary (tunnel-in, tunnel-out): time by category (crypto,
mbedTLS protocol/X.509, libc, C++ runtime, Asio, logging, our code, kernel) and the top
functions by self cost, with crypto excluded from a second percentage column.
"""
import collections
import glob
import os
import re
import subprocess
import sys


def category(func, obj):
    o = os.path.basename(obj or "")
    f = func or ""
    if o.startswith("libmbedcrypto"):
        return "crypto (libmbedcrypto)"
    if o.startswith("libmbedtls") or o.startswith("libmbedx509"):
        return "mbedTLS protocol + X.509"
    if "kernel" in o or o.startswith("[k") or o == "[kernel.kallsyms]":
        return "kernel"
    if o.startswith("libc.so") or o.startswith("libc-") or o.startswith("ld-linux"):
        return "libc (memcpy, malloc, syscalls stubs)"
    if o.startswith("libstdc++") or o.startswith("libgcc"):
        return "C++ runtime"
    if "spdlog" in f or "fmt::" in f or o.startswith("libspdlog") or o.startswith("libfmt"):
        return "logging (spdlog/fmt)"
    if "asio::" in f:
        return "Asio"
    if "tunnel::" in f:
        return "tunnel code"
    if f.startswith(("std::", "operator new", "operator delete")):
        return "C++ std (inlined in binary)"
    if o.startswith("tunnel-") or not o:
        return "tunnel binary (other)"
    return o


def callgrind_functions(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", path],
                         capture_output=True, text=True).stdout
    funcs = collections.Counter()
    objs = {}
    total = 0
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        cost = int(m.group(1).replace(",", ""))
        rest = m.group(2)
        if rest.startswith("PROGRAM TOTALS"):
            total = cost
            continue
        obj = None
        mo = re.match(r"^(.*) \[(.*)\]$", rest)
        if mo:
            rest, obj = mo.group(1), mo.group(2)
        func = rest.split(":", 1)[1] if ":" in rest else rest
        funcs[func] += cost
        if obj:
            objs[func] = obj
    return total, funcs, objs


def perf_functions(path):
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "--stdio", "-q",
                          "--percent-limit", "0.05"], capture_output=True, text=True).stdout
    funcs = collections.Counter()
    objs = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
        if kind == "k":
            dso = "[kernel.kallsyms]"
        funcs[sym] += pct
        objs[sym] = dso
    return 100.0, funcs, objs


def short(func, n=90):
    f = re.sub(r"\(.*\)$", "", func)
    f = re.sub(r"<[^<>]*(<[^<>]*>[^<>]*)*>", "<…>", f)
    return f if len(f) <= n else f[: n - 1] + "…"


def report(title, total, funcs, objs, unit):
    lines = []
    P = lines.append
    cats = collections.Counter()
    for f, c in funcs.items():
        cats[category(f, objs.get(f))] += c
    total = total or sum(funcs.values())
    crypto = cats.get("crypto (libmbedcrypto)", 0)
    P(f"#### {title}")
    P("")
    P(f"| category | share of {unit} | share outside crypto |")
    P("|---|---|---|")
    for cat, c in cats.most_common():
        outside = "" if cat.startswith("crypto") else f"{100 * c / max(1e-9, total - crypto):.1f}%"
        P(f"| {cat} | {100 * c / total:.1f}% | {outside} |")
    P("")
    P("Top functions outside crypto (self cost):")
    P("")
    P(f"| function | object | share of {unit} | share outside crypto |")
    P("|---|---|---|---|")
    k = 0
    for f, c in funcs.most_common():
        cat = category(f, objs.get(f))
        if cat.startswith("crypto"):
            continue
        P(f"| `{short(f)}` | {os.path.basename(objs.get(f) or '?')} | {100 * c / total:.2f}% | {100 * c / max(1e-9, total - crypto):.1f}% |")
        k += 1
        if k >= 22:
            break
    P("")
    P("Top crypto functions:")
    P("")
    k = 0
    for f, c in funcs.most_common():
        if category(f, objs.get(f)).startswith("crypto"):
            P(f"- `{short(f)}` {100 * c / total:.1f}%")
            k += 1
            if k >= 6:
                break
    P("")
    return lines


def main():
    d = sys.argv[1]
    lines = []
    for case, label in (("bulk", "bulk transfer (iperf3, one connection)"),
                        ("cpr", "new connection per request (redis-benchmark -k 0)")):
        for binary in ("tunnel-in", "tunnel-out"):
            cg = os.path.join(d, f"callgrind.{case}.{binary}")
            cgs = sorted(glob.glob(cg + "*"))
            if cgs:
                total, funcs, objs = callgrind_functions(cgs[0])
                lines += report(f"callgrind: {label}, {binary}", total, funcs, objs, "instructions")
            pf = os.path.join(d, f"perf.{case}.{binary}.data")
            if os.path.exists(pf) and os.path.getsize(pf) > 0:
                total, funcs, objs = perf_functions(pf)
                if funcs:
                    lines += report(f"perf cpu-clock samples: {label}, {binary}", total, funcs, objs, "CPU samples")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
