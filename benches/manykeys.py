#!/usr/bin/env python3
"""Many distinct keys (issue 13): a keyed count of PAIRS 8-byte ids drawn
from a seeded generator among KEYS (benches/jobs/manykeys.rs), against a
plain one-thread Rust hash-map count of the same ids
(benches/native/manykeys.rs), embedded and on a manager with two workers,
with the reduce's memory bounded by --reduce-memory (embedded: the run's;
on the cluster: each worker's, which reduces its partitions). Prints wall-time
medians, the ratios, and the peak resident memory (VmHWM) of the manager
and the workers, from a fresh cluster for each run.

    python3 benches/manykeys.py [--pairs 20000000] [--keys 4000000]
                                [--reduce-memory 32M] [--runs 3] [--reducers R]

The issue's full size is --pairs 100000000 --keys 20000000. Every run's
output (fetched back in binary, framed pairs) is checked against the
native count: the same number of keys and the same total.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import BIN, REPO, bench_env, run_timed as timed, start_cluster  # noqa: E402


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def varint(b, i):
    n, shift = 0, 0
    while True:
        byte = b[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return n, i


def check(path, expected):
    """The framed output's number of keys and total, as the native prints."""
    b = open(path, "rb").read()
    i, keys, total = 0, 0, 0
    while i < len(b):
        klen, i = varint(b, i)
        i += klen
        vlen, i = varint(b, i)
        total += int.from_bytes(b[i:i + vlen], "big")
        i += vlen
        keys += 1
    got = f"{keys} {total}"
    if got != expected:
        sys.exit(f"{path}: {got}, but the native count gives {expected}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000_000)
    parser.add_argument("--keys", type=int, default=4_000_000)
    parser.add_argument("--reduce-memory", default="32M")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reducers", type=int, default=0,
                        help="the cluster's partitions (default: one per worker)")
    opts = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
    tmp, env = bench_env("manykeys")
    try:
        native = os.path.join(tmp, "native-manykeys")
        subprocess.run(["rustc", "-O", "--edition", "2021", "-o", native,
                        os.path.join(REPO, "benches", "native", "manykeys.rs")], check=True)
        job = os.path.join(REPO, "benches", "jobs", "manykeys.rs")
        args = ["--", str(opts.pairs), str(opts.keys)]
        out = os.path.join(tmp, "out.bin")
        fetch = ["-o", out, "--format", "binary"]
        timed([BIN, "run", job] + ["--", "1", "1"], tmp, env)  # build once
        times = {"native": [], "embedded": [], "cluster": []}
        peaks = {"manager": [], "worker": []}
        expected = None
        for _ in range(opts.runs):
            took, printed = timed([native, str(opts.pairs), str(opts.keys)], tmp, env)
            times["native"].append(took)
            expected = printed.strip()
            took, _ = timed([BIN, "run", "--reduce-memory", opts.reduce_memory] + fetch
                            + [job] + args, tmp, env)
            times["embedded"].append(took)
            check(out, expected)
            procs = []
            try:
                maddr = start_cluster(env, tmp, tmp, procs,
                                      worker_args=["--reduce-memory", opts.reduce_memory])
                manager = procs[0]
                reducers = ["--reducers", str(opts.reducers)] if opts.reducers else []
                took, _ = timed([BIN, "run", "-m", maddr] + reducers + fetch + [job] + args,
                                tmp, env)
                times["cluster"].append(took)
                check(out, expected)
                peaks["manager"].append(hwm_kib(manager.pid))
                peaks["worker"].append(max(hwm_kib(p.pid) for p in procs[1:]))
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
        med = {k: statistics.median(v) for k, v in times.items()}
        r = opts.reducers or "one per worker"
        print(f"many keys: {opts.pairs:,} pairs over {opts.keys:,} ids, --reduce-memory "
              f"{opts.reduce_memory}, partitions: {r}, {os.cpu_count()} cores, "
              f"medians of {opts.runs} (wall)")
        for k, label in [("native", "native Rust, 1 thread"), ("embedded", "redmap embedded"),
                         ("cluster", "manager + 2 workers")]:
            rate = opts.pairs / med[k] / 1e6
            print(f"{label:<26}{med[k]:8.2f} s  {rate:7.1f} M pairs/s")
        print(f"embedded / native         {med['native'] / med['embedded']:8.2f}x")
        print(f"cluster / native          {med['native'] / med['cluster']:8.2f}x  (target >= 0.5x)")
        print(f"peak RSS: manager {max(peaks['manager']) / 1024:.0f} MiB (target < 64), "
              f"worker {max(peaks['worker']) / 1024:.0f} MiB")
        print(f"outputs: {expected.split()[0]} keys, identical to the native count")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
