#!/usr/bin/env python3
"""The sort benchmark (issue 13): N 100-byte records in TeraSort's format
(benches/gensort.py, seeded) sorted by redmap with --total-order on a
manager with two workers, each reducer writing its part file itself
(--output-dir; R = 4 partitions by default: one per reduce thread of the
two 2-thread workers), against GNU sort (`LC_ALL=C sort -S 50% --parallel=2`) of
the same file and redmap's embedded run, interleaved, wall times.
Every output is checked: the records in order, each once, and the same
multiset as the input (SHA-256 of the sorted records equal to sort's).

    python3 benches/terasort.py [--records 10000000] [--runs 1] [--reducers 4]
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import BIN, REPO, bench_env, run_timed as timed, start_cluster  # noqa: E402


def digest_parts(folder):
    """(records, sha256) of the part files in name order, checking that
    the records are in strictly increasing order."""
    h, n, prev = hashlib.sha256(), 0, None
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            for line in f:
                record, _, count = line.rstrip(b"\n").rpartition(b"\t")
                if prev is not None and record <= prev:
                    sys.exit(f"{folder}/{name}: {record!r} after {prev!r}: out of order")
                prev = record
                for _ in range(int(count)):
                    h.update(record)
                    n += 1
    return n, h.hexdigest()


def digest_sorted(path):
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for line in f:
            h.update(line.rstrip(b"\r\n"))
            n += 1
    return n, h.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--reducers", type=int, default=4)
    opts = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
    tmp, env = bench_env("terasort")
    sort_env = dict(env, LC_ALL="C")
    try:
        data = os.path.join(tmp, "input.dat")
        subprocess.run([sys.executable, os.path.join(REPO, "benches", "gensort.py"),
                        str(opts.records), data], check=True)
        job = os.path.join(REPO, "benches", "jobs", "terasort.rs")
        timed([BIN, "run", job, "--", data], tmp, env)  # build once (and warm the cache)
        times = {"sort": [], "embedded": [], "cluster": []}
        for run in range(opts.runs):
            sorted_path = os.path.join(tmp, "sorted.txt")
            took, _ = timed(["sort", "-S", "50%", "--parallel=2", "-o", sorted_path, data],
                            tmp, sort_env)
            times["sort"].append(took)
            want = digest_sorted(sorted_path)
            os.remove(sorted_path)
            if want[0] != opts.records:
                sys.exit(f"sort gave {want[0]} lines, not {opts.records}")

            parts = os.path.join(tmp, f"embedded-{run}")
            took, _ = timed([BIN, "run", "--output-dir", parts, job, "--", data], tmp, env)
            times["embedded"].append(took)
            if digest_parts(parts) != want:
                sys.exit("the embedded run's output differs from sort's")
            shutil.rmtree(parts)

            procs = []
            try:
                maddr = start_cluster(env, tmp, tmp, procs)
                parts = os.path.join(tmp, f"cluster-{run}")
                took, _ = timed([BIN, "run", "-m", maddr, "--total-order", "--reducers",
                                 str(opts.reducers), "--output-dir", parts, job, "--", data],
                                tmp, env)
                times["cluster"].append(took)
                names = sorted(os.listdir(parts))
                if len(names) != opts.reducers:
                    sys.exit(f"{len(names)} part files, not {opts.reducers}: {names}")
                if digest_parts(parts) != want:
                    sys.exit("the cluster's output differs from sort's")
                shutil.rmtree(parts)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
        med = {k: statistics.median(v) for k, v in times.items()}
        mb = opts.records * 100 / 1e6
        print(f"sort: {opts.records:,} records of 100 bytes ({mb:,.0f} MB), {os.cpu_count()} "
              f"cores, medians of {opts.runs} (wall)")
        for k, label in [("sort", "GNU sort -S 50% --parallel=2"), ("embedded", "redmap embedded"),
                         ("cluster", f"manager + 2 workers, --total-order, R={opts.reducers}")]:
            print(f"{label:<46}{med[k]:8.2f} s  {mb / med[k]:7.1f} MB/s")
        print(f"cluster / sort   {med['sort'] / med['cluster']:8.2f}x  (target > 1x)")
        print(f"cluster / embedded {med['embedded'] / med['cluster']:6.2f}x")
        print("outputs: in order, every record once, the same records as sort's")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
