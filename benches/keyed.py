#!/usr/bin/env python3
"""Keyed word count against its limit: a plain Rust 2-thread count
(benches/native/wordcount.rs), the keyed job run embedded, and the same job
on a manager with two workers, all on one seeded corpus, interleaved, as
medians and ratios.

    python3 benches/keyed.py [--mb 200] [--runs 5] [--reducers R]

It builds the release binary and the native program, writes the corpus
(seeded: the same bytes every time) into a temporary directory, checks that
every run's output equals the native one, and removes everything at the
end. Times are wall times of whole commands (process start included); the
keyed job is tests/jobs/keyed_wordcount.rs, which counts the file its
argument names and writes `result` where `redmap run` runs.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The same seeded text, binary and servers as the end-to-end script.
from e2e import BIN, REPO, run_timed, start_cluster  # noqa: E402
from e2e import make_text as make_corpus  # noqa: E402


def timed(cmd, cwd, env):
    return run_timed(cmd, cwd, env)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reducers", type=int, default=0,
                        help="the cluster's partitions (default: one per worker)")
    opts = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
    tmp = tempfile.mkdtemp(prefix="redmap-keyed-")
    procs = []
    try:
        native = os.path.join(tmp, "native-wordcount")
        subprocess.run(
            ["rustc", "-O", "--edition", "2021", "-o", native,
             os.path.join(REPO, "benches", "native", "wordcount.rs")],
            check=True,
        )
        # One directory per way of running: each gets the corpus (a hard
        # link) and writes its own `result`.
        dirs = {k: os.path.join(tmp, k) for k in ("native", "embedded", "cluster")}
        for d in dirs.values():
            os.mkdir(d)
        corpus = os.path.join(dirs["native"], "corpus.txt")
        make_corpus(corpus, opts.mb)
        for k in ("embedded", "cluster"):
            os.link(corpus, os.path.join(dirs[k], "corpus.txt"))
            shutil.copy(os.path.join(REPO, "tests", "jobs", "keyed_wordcount.rs"),
                        os.path.join(dirs[k], "wc.rs"))
        env = dict(os.environ, REDMAP_CACHE_DIR=os.path.join(tmp, "cache"), RUST_LOG="warn")
        env.pop("REDMAP_MANAGER", None)
        # The manager runs `load` (the corpus by its absolute path); `done`
        # runs in the client, which writes `result` in its directory.
        maddr = start_cluster(env, tmp, tmp, procs)
        ways = {
            "native": ([native, "corpus.txt"], dirs["native"]),
            "embedded": ([BIN, "run", "wc.rs", "--", corpus], dirs["embedded"]),
            "cluster": ([BIN, "run", "-m", maddr]
                        + (["--reducers", str(opts.reducers)] if opts.reducers else [])
                        + ["wc.rs", "--", corpus], dirs["cluster"]),
        }
        for cmd, cwd in ways.values():  # warm up: build cache, installs
            timed(cmd, cwd, env)
        times = {k: [] for k in ways}
        for _ in range(opts.runs):
            for k, (cmd, cwd) in ways.items():
                times[k].append(timed(cmd, cwd, env))
        expected = open(os.path.join(dirs["native"], "result")).read()
        for k in ("embedded", "cluster"):
            if open(os.path.join(dirs[k], "result")).read() != expected:
                sys.exit(f"the {k} run's counts differ from the native count")
        med = {k: statistics.median(v) for k, v in times.items()}
        mb = opts.mb * 1.048576
        cores = os.cpu_count()
        print(f"keyed word count, {opts.mb} MiB, {cores} cores, medians of {opts.runs} (wall)")
        for k, label in [("native", "native Rust, 2 threads"), ("embedded", "redmap embedded"),
                         ("cluster", "manager + 2 workers")]:
            print(f"{label:<26}{med[k]:8.2f} s  {mb / med[k]:7.0f} MB/s")
        print(f"embedded / native         {med['native'] / med['embedded']:8.2f}x  (target >= 0.5x)")
        print(f"cluster / embedded        {med['embedded'] / med['cluster']:8.2f}x  (target >= 0.8x)")
        print("outputs: identical to the native count")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
