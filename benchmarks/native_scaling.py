"""Benchmark of the native interior-point backend (lipsdp.backends.native); not a timed test.

Sections (pick with flags; default: mlp and depth):

* ``mlp``   — 784-100×5-10 random ReLU MLP (Gaussian / sqrt(fan-in), numpy default_rng(0)),
  ℓ2 LipSDP-Neuron: native vs ECLipsE-Fast (eclipse-nn) and, with ``--cvxopt``, vs CVXOPT
  (about 4–5 minutes on 2 cores).
* ``depth`` — the ECLipsE grid (input 4, output 1, width 80, each layer scaled to a spectral norm
  uniform in [0.4, 1.8], same generator as benchmarks/run.py), depths from ``--depths``;
  prints the fitted exponent of time vs depth (log-log least squares).
* ``maxmin`` — the QCs_MaxMin Table-1 networks (``--maxmin-files``), ℓ2, method neuron.
* ``wide``  — 3072-1024-1024-1024-10, checked bound vs product of norms, peak RSS.

Every lipsdp number is a *checked* bound (api.certify with lower=False); wall and process CPU
time are both printed (the machine may be shared: compare ratios measured in one run).

    python benchmarks/native_scaling.py mlp depth --depths 2 5 10 20 --cvxopt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import sys
import time
from pathlib import Path

import numpy as np

import lipsdp

REF = Path(__file__).resolve().parents[2] / "shared" / "refdata"


def mlp(dims, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]


def grid(depth, width=80, seed=None):
    rng = np.random.default_rng(1000 + (depth if seed is None else seed))
    d = [4] + [width] * depth + [1]
    Ws = []
    for a, b in zip(d[:-1], d[1:]):
        W = rng.standard_normal((b, a))
        Ws.append(W * (rng.uniform(0.4, 1.8) / np.linalg.norm(W, 2)))
    return Ws


def run_lipsdp(Ws, solver, activation="relu", time_limit=None, method="neuron"):
    t0, c0 = time.perf_counter(), time.process_time()
    cert = lipsdp.certify(Ws, solver=solver, lower=False, activation=activation, time_limit=time_limit,
                          method=method)
    return dict(bound=cert.bound if cert.verified else float("nan"), verified=cert.verified, status=cert.status,
                wall=time.perf_counter() - t0, cpu=time.process_time() - c0, naive=cert.naive_bound,
                timings={k: round(v, 3) for k, v in cert.timings.items()})


def run_fast(Ws, method="ECLipsE_Fast"):
    try:
        import torch
        from eclipse_nn.LipConstEstimator import LipConstEstimator
    except ImportError as exc:
        return dict(bound=float("nan"), wall=float("nan"), note=f"eclipse-nn unavailable: {exc}")
    tw = [torch.tensor(W, dtype=torch.float64) for W in Ws]
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        v = float(LipConstEstimator(weights=tw).estimate(method))
    return dict(bound=v, wall=time.perf_counter() - t0, cpu=time.process_time() - c0)


def row(name, method, r):
    print(f"| {name} | {method} | {r.get('wall', float('nan')):.2f} | {r.get('cpu', float('nan')):.2f} | "
          f"{r.get('bound', float('nan')):.7g} | {r.get('status', '')} |", flush=True)


def header():
    print("| network | method | wall s | cpu s | bound | status |\n|---|---|---|---|---|---|", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="*", default=["mlp", "depth"], choices=["mlp", "depth", "maxmin", "wide"])
    ap.add_argument("--cvxopt", action="store_true", help="also run CVXOPT on the 784 net (minutes)")
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 5, 10, 20])
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--time-limit", type=float, default=None, help="native time budget per network (s)")
    ap.add_argument("--maxmin-files", nargs="+", default=["weights_l2_2fc_16.mat", "weights_l2_5fc_32.mat",
                                                          "weights_l2_8fc_64.mat", "weights_l2_18fc_32.mat"])
    a = ap.parse_args(argv)
    header()
    if "mlp" in a.sections:
        Ws = mlp([784] + [100] * 5 + [10])
        r = run_lipsdp(Ws, "native", time_limit=a.time_limit)
        row("784-100x5-10", "lipsdp native", r)
        f = run_fast(Ws)
        row("784-100x5-10", "ECLipsE-Fast", f)
        print(f"|  | ratio native/Fast wall | {r['wall'] / f['wall']:.2f} | | naive {r['naive']:.5g} | |")
        if a.cvxopt:
            c = run_lipsdp(Ws, "cvxopt")
            row("784-100x5-10", "lipsdp cvxopt", c)
            print(f"|  | native vs cvxopt: bound rel. diff {(r['bound'] - c['bound']) / c['bound']:.2e}, "
                  f"wall ratio {c['wall'] / r['wall']:.1f}x | | | |")
    if "depth" in a.sections:
        ts, ds = [], []
        for d in a.depths:
            Ws = grid(d, a.width)
            r = run_lipsdp(Ws, "native", time_limit=a.time_limit)
            row(f"grid d{d} w{a.width}", "lipsdp native", r)
            f = run_fast(Ws)
            row(f"grid d{d} w{a.width}", "ECLipsE-Fast", f)
            ts.append(r["wall"])
            ds.append(d)
        if len(ds) >= 2:
            k = np.polyfit(np.log(ds), np.log(ts), 1)[0]
            print(f"\nfitted exponent of native wall time vs depth (width {a.width}): {k:.2f}")
    if "maxmin" in a.sections:
        import scipy.io

        for fn in a.maxmin_files:
            W = scipy.io.loadmat(REF / "QCs_MaxMin" / "networks_weights" / fn)["W"]
            Ws = [np.asarray(W.flat[k], dtype=float) for k in range(W.size)]
            r = run_lipsdp(Ws, "native", activation="maxmin", time_limit=a.time_limit)
            row(fn, "lipsdp native (NSR neuron)", r)
    if "wide" in a.sections:
        Ws = mlp([3072, 1024, 1024, 1024, 10])
        r = run_lipsdp(Ws, "native", time_limit=a.time_limit or 540.0)
        row("3072-1024x3-10", "lipsdp native", r)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"|  | naive {r['naive']:.6g}; bound/naive {r['bound'] / r['naive']:.4f}; peak RSS {rss:.0f} MB | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
