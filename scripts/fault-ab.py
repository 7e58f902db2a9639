#!/usr/bin/env python3
"""Interleaved A/B of fault-service rows of `remap bench`, for ratios too small for one run.

Runs `BIN bench --only METHOD --reps 3 --json` for each method in turn, ROUNDS times (the order
reversed every other round, so no method always runs first), and prints per method and cell the
median over rounds of each round's median p50, its ratio to the first method's, faults/s and
handler CPU per fault. A method may be given as LABEL@BIN@METHOD to compare two builds.

Usage: scripts/fault-ab.py target/release/remap 10 raw-move-loop server-move
"""
import collections
import json
import statistics
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, rounds, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    specs = [s.split("@") if "@" in s else (s, binary, s) for s in specs]
    p50, fps, cpu = (collections.defaultdict(list) for _ in range(3))
    for r in range(rounds):
        for label, b, method in specs if r % 2 == 0 else specs[::-1]:
            cmd = [b, "bench", "--only", method, "--reps", "3", "--json",
                   "--chart", "/tmp/fault-ab.svg"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                print(f"timeout: {label} (round {r})", file=sys.stderr)
                continue
            if done.returncode != 0:
                # A method the binary lacks (peer-loop without the `peer` feature) says so here
                # rather than dropping out of the table silently.
                tail = done.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
                print(f"{label} (round {r}) exited {done.returncode}: {tail[0]}", file=sys.stderr)
                continue
            out = done.stdout
            for line in out.splitlines():
                rec = json.loads(line)
                if rec["type"] != "fault":
                    continue
                d = rec["data"]
                key = (label, d["handlers"], d["mutators"])
                p50[key].append(d["p50_ns"]["median"] / 1000)
                fps[key].append(d["faults_per_s"]["median"])
                cpu[key].append(d["handler_cpu_ns_per_fault"]["median"] / 1000)
    labels = [s[0] for s in specs]
    med = statistics.median
    for key in sorted(p50, key=lambda k: (labels.index(k[0]), k[1], k[2])):
        base = (labels[0], key[1], key[2])
        ratio = med(p50[key]) / med(p50[base]) if base in p50 else float("nan")
        print(f"{key[0]:18} {key[1]}h/{key[2]}m  p50 {med(p50[key]):6.1f} us "
              f"(x{labels[0]} {ratio:.2f})  faults/s {med(fps[key]):8.0f}  "
              f"cpu/fault {med(cpu[key]):5.1f} us  rounds {len(p50[key])}")


if __name__ == "__main__":
    main()
