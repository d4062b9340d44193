"""CNN benchmark: methods neuron / channel / layer × solvers native / chain on the GLipSDP MNIST
CNNs (refdata/GLipSDP, written as plain PyTorch in tests/glipsdp_nets.py), with GLipSDP's
published values as columns (Pauli et al. 2024, arXiv 2405.01125; /work/shared/notes/reference-values.md).

    python benchmarks/cnn.py [--nets 2C2F,LeNet5] [--methods channel,layer,neuron]
                             [--solvers native,chain] [--time-limit 120] [--out results.jsonl]

Every run is ``lipsdp.certify(net, method=m, solver=s, time_limit=T, lower=False)``: the bound is
checked (an anytime bound when the solver stops at the limit; ``status`` says which).  One JSON
line per run is appended to ``--out`` as soon as it finishes; a markdown table is printed at the end.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import glipsdp_nets  # noqa: E402

import lipsdp  # noqa: E402

#: short name -> (refdata file, GLipSDP's bound, its time [s], product of norms, neuron-wise optimum)
NETS = {
    "2C2F": ("mnist_2C2F_wd.pth", 6.7247, 360, 10.89, 4.27222),
    "LeNet5": ("mnist_LeNet5_wd.pth", 12.252, 99, 15.62, None),  # neuron-wise: 9.941 after a 110 s solve (not optimal)
}


def run(nets, methods, solvers, time_limit, out):
    rows = []
    for short in nets:
        file, *_ = NETS[short]
        model, shape = glipsdp_nets.load(file)
        net = lipsdp.from_torch(model.double(), shape)
        for method in methods:
            for solver in solvers:
                t0 = time.perf_counter()
                try:
                    cert = lipsdp.certify(net, method=method, solver=solver, time_limit=time_limit, lower=False,
                                          progress=False)
                    row = dict(bound=cert.bound, verified=cert.verified, status=cert.status)
                except Exception as exc:  # record, do not stop
                    row = dict(bound=None, verified=False, status=f"{type(exc).__name__}: {str(exc)[:120]}")
                row.update(net=short, method=method, solver=solver, seconds=round(time.perf_counter() - t0, 1),
                           time_limit=time_limit)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if out:
                    with open(out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    return rows


def table(rows) -> str:
    lines = ["| network | method | solver | bound | verified | status | time [s] | GLipSDP (channel, MOSEK) | "
             "product of norms | neuron-wise optimum |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        _, g, gt, prod, opt = NETS[r["net"]]
        b = "–" if r["bound"] is None else f"{r['bound']:.4f}"
        lines.append(f"| {r['net']} | {r['method']} | {r['solver']} | {b} | {r['verified']} | {r['status']} | "
                     f"{r['seconds']} | {g} in {gt} s | {prod} | {opt if opt else '–'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="2C2F,LeNet5")
    ap.add_argument("--methods", default="channel,layer,neuron")
    ap.add_argument("--solvers", default="native,chain")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = run(a.nets.split(","), a.methods.split(","), a.solvers.split(","), a.time_limit, a.out)
    print(table(rows))


if __name__ == "__main__":
    main()
