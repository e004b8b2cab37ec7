#!/usr/bin/env python3
"""The targets of several full benchmark runs side by side.

    python3 bench/across_runs.py [RESULTS_DIR ...]

Reads each RESULTS_DIR/targets.tsv (written by report.py; run `python3 bench/report.py DIR`
first for a run made before report.py wrote it) and prints one markdown table: a row per
target, a column per run, and in how many of the runs the target was met. Without
arguments: every full run under bench/results/ (all tests, not --quick). One run that
passes decides nothing on this noisy machine; a target met in every run is met.
"""
import csv
import os
import re
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FULL = "only=ceiling,bulk,redis,memory,udp"


def is_full_run(d):
    summary = os.path.join(d, "summary.md")
    if not os.path.exists(summary):
        return False
    head = open(summary).read(4000)
    return "quick=0" in head and FULL in head


def commit_of(d):
    m = re.search(r"git HEAD: (\w+)", open(os.path.join(d, "summary.md")).read(4000))
    return m.group(1) if m else "?"


def read_targets(d):
    path = os.path.join(d, "targets.tsv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def main():
    dirs = sys.argv[1:] or sorted(
        os.path.join(RESULTS, n) for n in os.listdir(RESULTS) if is_full_run(os.path.join(RESULTS, n)))
    runs = []
    for d in dirs:
        rows = read_targets(d)
        if rows is None:
            print(f"{d}: no targets.tsv; run python3 bench/report.py {d} > {d}/summary.md first", file=sys.stderr)
            continue
        runs.append((os.path.basename(os.path.normpath(d)), commit_of(d), rows))
    if not runs:
        sys.exit("no runs with targets.tsv")

    order, table = [], {}  # (target, ours) -> {run: (measured, result)}
    for name, _, rows in runs:
        for r in rows:
            key = (r["target"], r["ours"])
            if key not in table:
                order.append(key)
                table[key] = {"target_value": r["target_value"]}
            table[key][name] = (r["measured"], r["result"])

    print("| target | ours | needs | " + " | ".join(f"{n} ({c})" for n, c, _ in runs) + " | met |")
    print("|---|---|---|" + "---|" * len(runs) + "---|")
    for key in order:
        cells, met, judged = [], 0, 0
        for name, _, _ in runs:
            measured, result = table[key].get(name, ("—", "n/a"))
            cells.append(f"**{measured}**" if result == "MISS" else measured)
            if result in ("pass", "MISS"):
                judged += 1
                met += result == "pass"
        verdict = f"{met} of {judged}" if judged else "—"
        print(f"| {key[0]} | {key[1]} | {table[key]['target_value']} | " + " | ".join(cells) + f" | {verdict} |")
    print()
    print("Bold: the target was missed in that run.")


if __name__ == "__main__":
    main()
