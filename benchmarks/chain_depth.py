"""Depth scaling of the chain backend (lipsdp.backends.chain) on the ECLipsE grid; not a timed test.

The ECLipsE grid: input 4, output 1, width 80, ReLU, each layer scaled to a spectral norm uniform
in [0.4, 1.8] (``grid`` from benchmarks/native_scaling.py, same seeds).  For each depth, in one run:

* ``chain``  — lipsdp.certify(solver="chain"): wall time (build + solve + check), solve time,
  checked bound, status (``time_limit`` = anytime bound after ``--time-limit`` seconds of solve);
* ``native`` — the dense interior point, for depths ≤ ``--native-max-depth`` (reference optimum);
* ``ECLipsE-Fast`` (eclipse-nn), bound and time.

Prints a Markdown table and the fitted exponent of the chain's solve time vs depth (log-log least
squares over the depths that finished with status ``optimal``).  Every lipsdp number is a
*checked* bound.  The machine may be shared: compare ratios measured in one run.

    python benchmarks/chain_depth.py --depths 2 5 10 20 50 100 --time-limit 600
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lipsdp  # noqa: E402
from native_scaling import grid, run_fast  # noqa: E402


def run(Ws, solver, time_limit=None):
    t0, c0 = time.perf_counter(), time.process_time()
    # the memory guard has no formula for "chain" yet (lipsdp/memory.py treats unknown backends as
    # dense Schur-complement solvers: 31 GiB at depth 20); the chain solver stores O(depth·w²)
    cert = lipsdp.certify(Ws, solver=solver, lower=False, time_limit=time_limit, memory_limit=float("inf"))
    return dict(bound=cert.bound if cert.verified else float("nan"), verified=cert.verified, status=cert.status,
                wall=time.perf_counter() - t0, cpu=time.process_time() - c0,
                solve=cert.timings.get("solve", float("nan")), check=cert.timings.get("check", float("nan")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 5, 10, 20, 50, 100])
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--time-limit", type=float, default=600.0, help="chain solve budget per network (s)")
    ap.add_argument("--native-max-depth", type=int, default=10)
    a = ap.parse_args(argv)
    print("| depth | chain wall s | chain solve s | chain check s | chain bound | status | native wall s | "
          "native bound | rel. diff | ECLipsE-Fast s | ECLipsE-Fast bound |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    ds, ts = [], []
    for d in a.depths:
        Ws = grid(d, a.width)
        r = run(Ws, "chain", a.time_limit)
        nat = run(Ws, "native") if d <= a.native_max_depth else None
        f = run_fast(Ws)
        rel = "" if nat is None else f"{(r['bound'] - nat['bound']) / nat['bound']:.1e}"
        print(f"| {d} | {r['wall']:.1f} | {r['solve']:.1f} | {r['check']:.1f} | {r['bound']:.7g} | {r['status']} | "
              f"{'' if nat is None else format(nat['wall'], '.1f')} | {'' if nat is None else format(nat['bound'], '.7g')} | "
              f"{rel} | {f.get('wall', float('nan')):.2f} | {f.get('bound', float('nan')):.7g} |", flush=True)
        if r["status"] == "optimal":
            ds.append(d)
            ts.append(r["solve"])
    if len(ds) >= 2:
        k = np.polyfit(np.log(ds), np.log(ts), 1)[0]
        print(f"\nfitted exponent of chain solve time vs depth (width {a.width}, depths {ds}): {k:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
