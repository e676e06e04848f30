#!/usr/bin/env python3
"""End-to-end figures: a job on a manager with two workers on loopback, next
to the embedded run of the same job in one process (the in-process
baseline), printed as medians and as a ratio.

    python3 benches/e2e.py [--tasks 1000000] [--runs 5] [--wordcount-mb 16]

It builds the release binary, starts a manager and two workers on free
ports in a temporary directory, and stops them at the end. "job" times are
the job's own (from load to done, as the manager or the embedded run
reports it); "wall" times are whole `redmap run` commands, which add
process start, the build-cache check and the library check.
"""

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
BIN = os.path.join(TARGET, "release", "redmap")


def start(args, env, cwd, extra=()):
    proc = subprocess.Popen(
        [BIN] + args + ["127.0.0.1:0"] + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        proc.kill()
        sys.exit(f"server did not start: {line!r}")
    return proc, match.group(1)


def bench_env(name):
    """A fresh temporary directory for a bench, and the environment its
    commands run in: their own build cache, quiet logs, spills and shuffle
    files in that directory, no manager from the caller's environment."""
    tmp = tempfile.mkdtemp(prefix=f"redmap-{name}-")
    env = dict(os.environ, REDMAP_CACHE_DIR=os.path.join(tmp, "cache"), RUST_LOG="warn",
               TMPDIR=tmp)
    env.pop("REDMAP_MANAGER", None)
    return tmp, env


def run_timed(cmd, cwd, env):
    """Runs `cmd` to completion (exiting with its output if it fails);
    returns its wall time in seconds and its standard output."""
    began = time.monotonic()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - began
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return took, out.stdout


def start_cluster(env, manager_cwd, worker_cwd, procs, workers=2, worker_args=()):
    """A manager (in `manager_cwd`, where jobs' `load` and `done` run) and
    `workers` workers (with `worker_args`), attached; their processes are
    added to `procs` for the caller to kill, the manager first. Returns the
    manager's address."""
    manager, maddr = start(["manager", "start"], env, manager_cwd)
    procs.append(manager)
    waddrs = []
    for _ in range(workers):
        w, waddr = start(["worker", "start"], env, worker_cwd, worker_args)
        procs.append(w)
        waddrs.append(waddr)
    subprocess.run([BIN, "manager", "attach", "-m", maddr] + waddrs, check=True,
                   stdout=subprocess.DEVNULL, env=env)
    return maddr


def run_job(args, env, cwd):
    began = time.monotonic()
    out = subprocess.run(
        [BIN, "run", "--json"] + args,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.monotonic() - began
    if out.returncode != 0:
        sys.exit(f"redmap run {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    report = json.loads(out.stdout)
    job = report["elapsed_us"] / 1e6 if "elapsed_us" in report else report["elapsed_ms"] / 1e3
    return job, wall, report


def measure(label, args, env, cwd, runs):
    run_job(args, env, cwd)  # warm up: build cache, library installs
    jobs, walls, reports = [], [], []
    for _ in range(runs):
        job, wall, report = run_job(args, env, cwd)
        jobs.append(job)
        walls.append(wall)
        reports.append(report)
    return statistics.median(jobs), statistics.median(walls), reports


def make_text(path, megabytes):
    rng = random.Random(7)
    words = [f"w{i}" for i in range(2000)]
    with open(path, "w") as f:
        size = 0
        while size < megabytes * 1024 * 1024:
            line = " ".join(words[int(rng.paretovariate(1.2)) % len(words)] for _ in range(12)) + "\n"
            f.write(line)
            size += len(line)


def straggler_runs(env, runs):
    """The straggler job on a manager with a normal and a 20x slower
    worker, with backup tasks and without."""
    job = os.path.join(REPO, "benches", "jobs", "straggler.rs")
    results = []
    for label, flags in [("with backup tasks", []), ("--no-backup-tasks", ["--no-backup-tasks"])]:
        tmp = tempfile.mkdtemp(prefix="redmap-bench-")
        run_env = dict(env, REDMAP_CACHE_DIR=os.path.join(tmp, "cache"))
        slow_env = dict(run_env, SLOW_WORKER="1")
        procs = []
        try:
            manager, maddr = start(["manager", "start"], run_env, tmp, flags)
            procs.append(manager)
            fast, faddr = start(["worker", "start"], run_env, tmp)
            slow, saddr = start(["worker", "start"], slow_env, tmp)
            procs += [fast, slow]
            subprocess.run([BIN, "manager", "attach", "-m", maddr, faddr, saddr], check=True,
                           stdout=subprocess.DEVNULL, env=run_env)
            results.append((label, measure("straggler", ["-m", maddr, job], run_env, tmp, runs)))
        finally:
            for p in procs:
                p.kill()
                p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--wordcount-mb", type=int, default=16)
    opts = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    tmp = tempfile.mkdtemp(prefix="redmap-bench-")
    text = os.path.join(tmp, "text.txt")
    make_text(text, opts.wordcount_mb)
    env = dict(os.environ)
    env.update(
        REDMAP_CACHE_DIR=os.path.join(tmp, "cache"),
        RUST_LOG="warn",
    )
    procs = []
    try:
        maddr = start_cluster(env, tmp, tmp, procs)
        sum_rs = os.path.join(REPO, "examples", "sum.rs")
        # The original contract's word count, byte-level (the keyed one is
        # benches/keyed.py's).
        wc_rs = os.path.join(REPO, "tests", "jobs", "wordcount_bytes.rs")
        rows = []
        for name, path, job_args, unit, amount in [
            ("sum", sum_rs, [str(opts.tasks)], "tasks/s", opts.tasks),
            ("wordcount", wc_rs, [text, "2000"], "MB/s", os.path.getsize(text) / 1e6),
        ]:
            local = measure(name, ["--threads", "2", path, "--"] + job_args, env, tmp, opts.runs)
            cluster = measure(name, ["-m", maddr, path, "--"] + job_args, env, tmp, opts.runs)
            rows.append((name, unit, amount, local, cluster))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    stragglers = straggler_runs(env, opts.runs)

    print(f"redmap end-to-end, {os.cpu_count()} cores, medians of {opts.runs} runs")
    print(f"{'job':<10} {'mode':<22} {'job time':>10} {'wall time':>10} {'throughput':>18}")
    for name, unit, amount, local, cluster in rows:
        for mode, (job, wall, _) in [("embedded, 2 threads", local), ("manager + 2 workers", cluster)]:
            print(f"{name:<10} {mode:<22} {job*1e3:>8.1f}ms {wall*1e3:>8.1f}ms {amount/job:>13,.0f} {unit}")
        print(f"{name:<10} {'ratio cluster/embedded':<22} {cluster[0]/local[0]:>9.2f}x {cluster[1]/local[1]:>9.2f}x")
    print()
    print("stragglers: 2,000 tasks of 2 ms, one of two workers 20x slower")
    for label, (job, wall, reports) in stragglers:
        sent = sum(r.get("backups", 0) for r in reports)
        won = sum(r.get("backups_won", 0) for r in reports)
        print(f"{label:<24} job {job*1e3:>8.1f}ms  wall {wall*1e3:>8.1f}ms  "
              f"backups over {len(reports)} runs: {sent} sent, {won} won")
    (_, on), (_, off) = stragglers
    print(f"{'gain from backup tasks':<24} {off[0]/on[0]:.2f}x shorter job")


if __name__ == "__main__":
    main()
