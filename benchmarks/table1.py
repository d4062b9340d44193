"""Table 1 of LipSDP-NSR (Pauli et al., ICLR 2024) re-measured with lipsdp.

For the 13 MaxMin MNIST networks in shared/refdata/QCs_MaxMin prints one Markdown table:
ℓ2 (naive = product of norms, LipSDP-RR, LipSDP-NSR, sampled lower bound, times) and ℓ∞ for
logit 8 (naive, NSR, sampled lower bound, time).  Every SDP runs in a child process under a
wall-clock cap (``--cap``); a cell reads "> cap s" when it did not finish, "failed" when the
solver returned no verifiable point.  Only verified bounds are printed.

    python benchmarks/table1.py --cap 300 --networks 2fc_16 2fc_32 > benchmarks/results-table1.md
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import warnings

NETWORKS = ["2fc_16", "2fc_32", "2fc_64", "2fc_128", "5fc_32", "5fc_64", "8fc_32", "8fc_64", "8fc_128",
            "8fc_256", "18fc_32", "18fc_64", "18fc_128"]
LOGIT = 8


def _refdir():
    for p in (os.environ.get("LIPSDP_REFDATA"), os.path.join(os.path.dirname(__file__), "..", "..", "shared", "refdata"),
              "/work/shared/refdata"):
        if p and os.path.isdir(p):
            return os.path.join(p, "QCs_MaxMin", "networks_weights")
    sys.exit("refdata not found: set LIPSDP_REFDATA")


def _job(q, path, norm, method, solver, output):
    warnings.simplefilter("ignore")
    import lipsdp

    try:
        net = lipsdp.load(path, activation="maxmin")
        t0 = time.perf_counter()
        c = lipsdp.certify(net, norm=norm, method=method, solver=solver, output=output, lower=False)
        q.put(("ok", c.bound if c.verified else None, c.naive_bound, time.perf_counter() - t0, c.timings.get("solve", 0.0)))
    except Exception as exc:  # reported as "failed" in the table
        q.put(("error", None, None, None, f"{type(exc).__name__}: {exc}"[:120]))


def run_capped(cap, *args):
    q = mp.Queue()
    p = mp.Process(target=_job, args=(q,) + args)
    p.start()
    p.join(cap)
    if p.is_alive():
        p.terminate()
        p.join()
        return ("timeout", None, None, None, None)
    return q.get() if not q.empty() else ("error", None, None, None, "no result")


def fmt(x, digits=5):
    return "—" if x is None else f"{x:.{digits}g}"


def cell(res, cap):
    st, bound, _, total, _ = res
    if st == "timeout":
        return f"> {cap:g} s", ""
    if st == "error" or bound is None:
        return "failed", "" if total is None else f"{total:.3g}"
    return fmt(bound), f"{total:.3g}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="*", default=NETWORKS)
    ap.add_argument("--cap", type=float, default=300.0, help="seconds per SDP (default 300)")
    ap.add_argument("--solver", default="sdpa", help="solver for NSR (default sdpa)")
    ap.add_argument("--rr-solver", default="cvxopt")
    ap.add_argument("--no-linf", action="store_true")
    ap.add_argument("--no-rr", action="store_true")
    ap.add_argument("--no-nsr", action="store_true", help="skip the ℓ2 NSR column")
    args = ap.parse_args(argv)
    import numpy as np

    import lipsdp
    from lipsdp.formulations.linf import naive_linf
    from lipsdp.formulations.feedforward import select_output
    from lipsdp.lower import lower_bound

    ref = _refdir()
    print(f"Measured with lipsdp {lipsdp.__version__}; NSR = P-free LipSDP-NSR (method='neuron', solver {args.solver}); "
          f"RR = LipSDP-Neuron on the residual-ReLU rewriting (solver {args.rr_solver}); cap {args.cap:g} s per SDP; "
          "times = wall seconds of certify (build + solve + check). All printed bounds passed the float64 check.\n")
    hdr = ("| net | ℓ2 naive | ℓ2 RR | t RR | ℓ2 NSR | t NSR | ℓ2 lower | ℓ∞ naive (logit 8) | ℓ∞ NSR | t ℓ∞ | ℓ∞ lower |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    sys.stdout.flush()
    for name in args.networks:
        path = os.path.join(ref, f"weights_l2_{name}.mat")
        net = lipsdp.load(path, activation="maxmin")
        naive2 = float(np.prod([np.linalg.norm(W, 2) for W in net.weights]))
        Ws = list(net.weights)
        Ws[-1] = select_output(Ws[-1], LOGIT)
        naiveinf = naive_linf(Ws, net.activations)
        lb2 = float(lower_bound(net, norm="l2"))
        lbinf = float(lower_bound(net, norm="linf", output=LOGIT))
        rr = ("skipped", None, None, None, None) if args.no_rr else run_capped(args.cap, path, "l2", "residual-relu",
                                                                              args.rr_solver, None)
        nsr = ("skipped", None, None, None, None) if args.no_nsr else run_capped(args.cap, path, "l2", "neuron",
                                                                                args.solver, None)
        linf = ("skipped", None, None, None, None) if args.no_linf else run_capped(args.cap, path, "linf", "neuron",
                                                                                  args.solver, LOGIT)
        rr_b, rr_t = ("skipped", "") if rr[0] == "skipped" else cell(rr, args.cap)
        n_b, n_t = ("skipped", "") if nsr[0] == "skipped" else cell(nsr, args.cap)
        i_b, i_t = ("skipped", "") if linf[0] == "skipped" else cell(linf, args.cap)
        print(f"| {name.upper().replace('_', '-')} | {fmt(naive2)} | {rr_b} | {rr_t} | {n_b} | {n_t} | {fmt(lb2)} | "
              f"{fmt(naiveinf, 4)} | {i_b} | {i_t} | {fmt(lbinf)} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
