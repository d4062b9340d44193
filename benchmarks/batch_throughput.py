"""Throughput of ``lipsdp.batch.run`` with 1 and 2 LocalCluster workers on the same 40 jobs,
measured in one process (compare the ratio, not the absolute times: the machine is shared),
then a kill -9 of a busy worker in the middle of a 20-job run.

    /work/venv/bin/python benchmarks/batch_throughput.py [--jobs 40] [--dims 5,24,24,5]

Jobs: random Gaussian ReLU nets (seeded), LipSDP-Neuron, ℓ2, solver cvxopt, no lower bound.
Every timed run uses a fresh store; the time includes each worker's first-job launcher start
(its imports), not the cluster start, which is reported separately.
"""

import argparse
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lipsdp import batch


def write_nets(folder: Path, n: int, dims):
    paths = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        ws = {f"W{k}": rng.standard_normal((dims[k + 1], dims[k])) / np.sqrt(dims[k]) for k in range(len(dims) - 1)}
        p = folder / f"net{i:03d}.npz"
        np.savez(p, **ws)
        paths.append(p)
    return paths


def timed_run(jobs, workers, store):
    import distributed

    t0 = time.perf_counter()
    cluster = batch.local_cluster(workers)
    client = distributed.Client(cluster)
    client.wait_for_workers(workers, timeout=120)
    t_start = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        df = batch.run(jobs, client=client, store=store, progress=False)
        wall = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    return t_start, wall, df


def kill_run(jobs, store):
    import distributed

    cluster = batch.local_cluster(2)
    client = distributed.Client(cluster)
    client.wait_for_workers(2, timeout=120)
    events = []
    t0 = time.perf_counter()

    def kill_one(job, row):
        if events:
            return
        pids = client.run(os.getpid)
        busy = {w: k for w, k in client.processing().items() if k}
        victim = sorted(busy)[0]
        os.kill(pids[victim], signal.SIGKILL)
        events.append((time.perf_counter() - t0, pids[victim], busy[victim]))

    try:
        df = batch.run(jobs, client=client, store=store, progress=None, on_result=kill_one)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    return events, wall, df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--dims", default="5,24,24,5")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nets = write_nets(tmp, args.jobs, dims)
        jobs = batch.expand([{"model": str(p), "solver": "cvxopt", "lower": False} for p in nets])
        print(f"{len(jobs)} jobs: {'-'.join(map(str, dims))} ReLU nets, l2 / neuron / cvxopt; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        res = {}
        for w in (1, 2):
            t_start, wall, df = timed_run(jobs, w, tmp / f"r{w}.sqlite")
            assert len(df) == len(jobs) and (df["status"] == "ok").all(), df["status"].value_counts()
            res[w] = (wall, df)
            print(f"workers={w}: cluster start {t_start:.1f} s, {len(jobs)} jobs in {wall:.1f} s "
                  f"= {len(jobs) / wall:.2f} jobs/s (median job {df['seconds'].median():.2f} s on the worker, "
                  f"median solve {df['solve_seconds'].median():.2f} s)")
        b1 = res[1][1].set_index("job_key")["bound"]
        b2 = res[2][1].set_index("job_key")["bound"]
        print(f"speed-up 2 vs 1 worker: {res[1][0] / res[2][0]:.2f}x; "
              f"max |bound difference| between the runs: {float((b1 - b2.loc[b1.index]).abs().max()):.2e}")

        print("\nkill -9 of a busy worker after the first result, 20 jobs, 2 workers, retries=2:")
        sub = jobs[:20]
        store = tmp / "kill.sqlite"
        events, wall, df = kill_run(sub, store)
        t_kill, pid, keys = events[0]
        print(f"killed worker pid {pid} at t={t_kill:.1f} s while it held {keys}")
        with sqlite3.connect(store) as conn:
            n, distinct = conn.execute("SELECT count(*), count(DISTINCT job_key) FROM results").fetchone()
        retried = df[df["attempts"] > 1]
        print(f"finished in {wall:.1f} s; store rows {n}, distinct job keys {distinct}, statuses "
              f"{df['status'].value_counts().to_dict()}; resubmitted jobs: "
              + ", ".join(f"{os.path.basename(r.model_path)} (attempts {r.attempts}, pid {r.worker_pid})"
                          for r in retried.itertuples()))
        print(batch.summary(df.head(5)))


if __name__ == "__main__":
    sys.exit(main())
