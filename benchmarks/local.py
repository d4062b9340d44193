#!/usr/bin/env python
"""Issue 16 targets: lower bounds, exact MILP values, local bounds and certified radii.

    python benchmarks/local.py                  # every section (tens of minutes on 2 shared cores)
    python benchmarks/local.py lower milp       # chosen sections (names below)

Each section prints a Markdown table and writes it to ``benchmarks/results-local/<section>.md``
(radii also a plot ``radii.png``).  Sections:

* lower — :func:`lipsdp.lower_bound` with its defaults on mnist_weights.mat, the seed-0
  784-100×5-10 ReLU MLP (Gaussian / sqrt(fan-in), as benchmarks/run.py builds it) and
  QCs_MaxMin 2FC-16 (ℓ2), against the old sampled values quoted in the issue;
* patterns — the activation-pattern climb of :mod:`lipsdp.patterns`
  (``lower_bound(net, pattern_budget=...)``) on the seed-0 784-100×5-10 MLP at budgets of
  10/30/100 s (three search seeds at 100 s) and on mnist_weights.mat, each value re-checked as
  a quotient of the returned pair inside one linear region;
* milp — exact ℓ∞ constants (logit 0) of small bias-free random ReLU nets by the MILP, against
  the ℓ∞ SDP and the default lower bound;
* digits — the shipped digits MLP (lipsdp/data/demo_digits.npz) at test points: local vs global
  bound at ε = 0.1 (ℓ2 ball) and ε = 1/16 (ℓ∞ ball, one logit pair: label vs runner-up);
* radii — local vs global certified ℓ2 radii on digits test points, certified accuracy table
  and plot;
* digits_cnn, radii_cnn — the same for the shipped digits CNN (lipsdp/data/demo_digits_cnn.npz,
  trained by lipsdp/models/train_demo_cnn.py);
* cnn — the MNIST 2C2F CNN (refdata/GLipSDP): stable neurons from bound propagation over the
  box [0, 1]^784 and over ℓ2 balls of radius 0.1 at random points (the SDPs themselves need
  tens of minutes per solve on this network and are not run here).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
OUT = HERE / "results-local"
REF = next((p for p in (ROOT.parent / "shared" / "refdata", Path("/work/shared/refdata")) if p.is_dir()), None)

import lipsdp  # noqa: E402
from lipsdp.io import from_weights, load  # noqa: E402


def _digits_test(n):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    _, Xte, _, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)  # the demo's split
    return Xte[:n], yte[:n]


def _emit(name, text):
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.md").write_text(text + "\n")
    print(text, flush=True)


def section_lower():
    rows = ["| network | norm | old sampled lower | new lower | kind | target | time (s) |", "|---|---|---|---|---|---|---|"]
    mlp = _deep_mlp()
    cases = [("784-100×5-10 seed 0", mlp, "0.725", "≥ 2.175 (3×)")]
    if REF:
        cases.insert(0, ("mnist_weights.mat", load(REF / "LipSDP" / "mnist_weights.mat"), "24.2961", "≥ 24.29"))
        cases.append(("QCs_MaxMin 2FC-16", load(REF / "QCs_MaxMin" / "networks_weights" / "weights_l2_2fc_16.mat",
                                                activation="maxmin"), "22.0213", "≥ 22.02"))
    for name, net, old, target in cases:
        t = time.perf_counter()
        lb = lipsdp.lower_bound(net)
        rows.append(f"| {name} | ℓ2 | {old} | {lb.value:.6g} | {lb.kind} | {target} | {time.perf_counter() - t:.1f} |")
    # a larger ascent budget on the deep MLP
    t = time.perf_counter()
    lb = lipsdp.lower_bound(mlp, ascent_starts=32, ascent_steps=300)
    rows.append(f"| 784-100×5-10 seed 0, ascent 32 starts × 300 steps | ℓ2 | 0.725 | {lb.value:.6g} | {lb.kind} | "
                f"≥ 2.175 | {time.perf_counter() - t:.1f} |")
    _emit("lower", "\n".join(rows))


def _deep_mlp():
    rng = np.random.default_rng(0)
    d = [784] + [100] * 5 + [10]
    return from_weights([rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(d[:-1], d[1:])])


def section_patterns(budgets=(10, 30, 100), seeds=(0, 1, 2)):
    """The activation-pattern climb (lower_bound(pattern_budget=...)) on the seed-0
    784-100×5-10 MLP (seeds of the search: the largest budget only) and on mnist_weights.mat;
    every value is re-checked here as a quotient of the returned pair, inside one region."""
    rows = ["| network | pattern_budget (s) | search seed | lower bound (quotient) | climb | pair in one region | "
            "time (s) |", "|---|---|---|---|---|---|---|"]
    runs = [("784-100×5-10 seed 0", _deep_mlp, b, 0) for b in budgets[:-1]]
    runs += [("784-100×5-10 seed 0", _deep_mlp, budgets[-1], s) for s in seeds]
    if REF:
        runs.append(("mnist_weights.mat", lambda: load(REF / "LipSDP" / "mnist_weights.mat"), 5, 0))
    from lipsdp.patterns import _patterns_of

    for name, make, b, seed in runs:
        net = make()
        t = time.perf_counter()
        lb = lipsdp.lower_bound(net, pattern_budget=b, seed=seed)
        dt = time.perf_counter() - t
        x2 = lb.x + lb.step * lb.direction
        q = float(np.linalg.norm(net.forward(x2) - net.forward(lb.x)) / np.linalg.norm(x2 - lb.x))
        same = all(np.array_equal(p[0], p[1]) for p in _patterns_of(net, np.vstack([lb.x, x2])))
        climb = lb.method.split("activation-pattern climb (")[1].split(")")[0] if "pattern climb" in lb.method else "-"
        rows.append(f"| {name} | {b} | {seed} | {q:.6g} | {climb} | {same} | {dt:.1f} |")
        print(rows[-1], flush=True)
    _emit("patterns", "\n".join(rows))


def section_milp(dims=(8, 12, 12, 2), seeds=range(5), time_limit=120.0):
    from lipsdp.milp import exact_lipschitz

    rows = [f"| net | SDP ℓ∞ (logit 0) | exact (MILP) | MILP status | MILP s | lower bound | lower kind | SDP/exact | exact/lower |",
            "|---|---|---|---|---|---|---|---|---|"]
    for dd in (dims, (8, 16, 16, 2)):
        for seed in seeds:
            rng = np.random.default_rng(seed)
            net = from_weights([rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dd[:-1], dd[1:])])
            cert = lipsdp.certify(net, norm="linf", output=0, lower=False)
            ex = exact_lipschitz(net, "linf", output=0, time_limit=time_limit)
            lb = lipsdp.lower_bound(net, norm="linf", output=0, exact=False)
            # SDP ≥ exact ≥ lower; a time-limited MILP only has its incumbent, no order to check
            ok = cert.bound >= ex.lower * (1 - 1e-9) and (not ex.optimal or ex.lower >= lb.value * (1 - 1e-9))
            rows.append(f"| {'-'.join(map(str, dd))} s{seed} | {cert.bound:.6g} | {ex.value:.6g}"
                        f"{'' if ex.optimal else ' (bound)'} | {ex.status} | {ex.seconds:.1f} | {lb.value:.6g} | "
                        f"{lb.kind} | {cert.bound / ex.lower:.4f} | {ex.lower / lb.value:.4f} |"
                        + ("" if ok else " ORDER VIOLATED"))
            print(rows[-1], flush=True)
    _emit("milp", "\n".join(rows) + "\n\nlower bound: `lower_bound(norm='linf', output=0, exact=False)` "
          "(sampling + Jacobian ascent, no MILP); when the MILP stops at its time limit the exact column is "
          "HiGHS's proven bound and the ratios use the realised quotient.")


def _digits_cnn():
    from lipsdp.models.train_demo_cnn import load_demo_cnn

    return lipsdp.from_torch(load_demo_cnn(), input_shape=(1, 8, 8))


def section_digits_cnn():
    section_digits(n_l2=30, n_linf=2, net=_digits_cnn(), label="digits CNN conv8-32-10", name="digits_cnn")


def section_radii_cnn():
    section_radii(net=_digits_cnn(), label="digits CNN", name="radii_cnn", n=12, iters=4)


def section_digits(n_l2=100, n_linf=5, net=None, label="digits MLP 64-32-32-10", name="digits"):
    from lipsdp.local import LinfBall, L2Ball, certify_local, interval_lipschitz

    net = net or load(ROOT / "lipsdp" / "data" / "demo_digits.npz")
    X, y = _digits_test(n_l2)
    glob = lipsdp.certify(net, lower=False).bound
    loc, t0 = [], time.perf_counter()
    for x in X:
        loc.append(certify_local(net, L2Ball(x, 0.1), lower=False).bound)
    loc = np.array(loc)
    rows = [f"| {label} | points | global | local mean | local median | local min | local max | s/point |",
            "|---|---|---|---|---|---|---|---|",
            f"| ℓ2, ε = 0.1 | {n_l2} | {glob:.5g} | {loc.mean():.5g} | {np.median(loc):.5g} | {loc.min():.5g} | "
            f"{loc.max():.5g} | {(time.perf_counter() - t0) / n_l2:.2f} |"]
    # ℓ∞ (label vs runner-up logit) at ε = 1/16
    sdp, ib, gl = [], [], []
    t0 = time.perf_counter()
    for x, lab in zip(X[:n_linf], y[:n_linf]):
        f = net.forward(x)
        j = int(np.argsort(-f)[1]) if int(np.argmax(f)) == lab else int(np.argmax(f))
        c = np.zeros(10)
        c[lab], c[j] = 1.0, -1.0
        gl.append(lipsdp.certify(net, norm="linf", output=c, lower=False).bound)
        region = LinfBall(x, 1 / 16)
        sdp.append(certify_local(net, region, norm="linf", output=c, lower=False).bound)
        ib.append(interval_lipschitz(net, region, c))
    rows.append(f"| ℓ∞, ε = 1/16, pair (label, runner-up) | {n_linf} | mean {np.mean(gl):.5g} | SDP mean {np.mean(sdp):.5g} | "
                f"interval mean {np.mean(ib):.5g} | SDP min {np.min(sdp):.5g} | SDP max {np.max(sdp):.5g} | "
                f"{(time.perf_counter() - t0) / n_linf:.1f} |")
    _emit(name, "\n".join(rows))


def section_radii(n=40, iters=6, net=None, label="digits MLP", name="radii"):
    from lipsdp.plot import radius_curves
    from lipsdp.robust import certified_radii_local

    net = net or load(ROOT / "lipsdp" / "data" / "demo_digits.npz")
    X, y = _digits_test(n)
    t0 = time.perf_counter()
    frame = certified_radii_local(net, X, y, norm="l2", iters=iters)
    secs = time.perf_counter() - t0
    OUT.mkdir(exist_ok=True)
    frame.to_csv(OUT / f"{name}.csv", index=False)
    ok = frame.correct.to_numpy()
    grid = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    rows = ["| ε (ℓ2) | " + " | ".join(f"{e:g}" for e in grid) + " |", "|---" * (len(grid) + 1) + "|"]
    for col, what in (("radius_global", "global bound"), ("radius_local", "local bounds")):
        r = frame[col].to_numpy()
        acc = [np.mean(ok) if e == 0 else np.mean(ok & (r > e)) for e in grid]
        rows.append(f"| {what} | " + " | ".join(f"{100 * a:.1f} %" for a in acc) + " |")
    ratio = (frame.radius_local[ok] / frame.radius_global[ok]).to_numpy()
    text = ("\n".join(rows) + f"\n\n{n} digits test points, {iters} bisection steps each, {secs:.0f} s in all; "
            f"local/global radius ratio: median {np.median(ratio):.3f}, max {np.max(ratio):.3f}.")
    try:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.2), constrained_layout=True)
        radius_curves(frame, ax=fig.add_subplot(), title=f"{label}: certified accuracy (ℓ2)")
        fig.savefig(OUT / f"{name}.png", dpi=110)
        text += f"\n\n![{name}](results-local/{name}.png)"
    except ImportError:
        pass
    _emit(name, f"{label}\n\n" + text)


def section_cnn(points=20):
    from lipsdp.local import Box, L2Ball, preactivation_bounds

    if REF is None:
        return _emit("cnn", "refdata not found")
    import torch

    path = REF / "GLipSDP" / "mnist_2C2F_wd.pth"
    nn = torch.nn
    model = nn.Sequential()
    for name, mod in (("conv1", nn.Conv2d(1, 16, 4, 2, 1)), ("r1", nn.ReLU()), ("conv2", nn.Conv2d(16, 32, 4, 2, 1)),
                      ("r2", nn.ReLU()), ("flat", nn.Flatten()), ("fc1", nn.Linear(1568, 100)), ("r3", nn.ReLU()),
                      ("fc2", nn.Linear(100, 10))):
        model.add_module(name, mod)
    model.load_state_dict(torch.load(path, weights_only=True))
    net = lipsdp.from_torch(model.double(), input_shape=(1, 28, 28))
    rows = ["| region | neurons | stable (IBP) | stable (IBP+CROWN) |", "|---|---|---|---|"]

    def stable(region, crown):
        b = preactivation_bounds(net, region, crown=crown)
        return sum(int(np.sum((lo >= 0) | (hi <= 0))) for lo, hi in b), sum(lo.size for lo, _ in b)

    s0, tot = stable(Box(0.0, 1.0), False)
    s1, _ = stable(Box(0.0, 1.0), True)
    rows.append(f"| box [0, 1]^784 | {tot} | {s0} | {s1} |")
    rng = np.random.default_rng(0)
    fr0, fr1 = [], []
    for _ in range(points):
        region = L2Ball(rng.random(net.input_dim), 0.1)
        fr0.append(stable(region, False)[0])
        fr1.append(stable(region, True)[0])
    rows.append(f"| ℓ2 ball ε = 0.1 at {points} uniform random points (mean) | {tot} | {np.mean(fr0):.0f} | {np.mean(fr1):.0f} |")
    _emit("cnn", "\n".join(rows))


SECTIONS = {"lower": section_lower, "patterns": section_patterns, "milp": section_milp, "digits": section_digits, "radii": section_radii,
            "digits_cnn": section_digits_cnn, "radii_cnn": section_radii_cnn, "cnn": section_cnn}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(SECTIONS):
        SECTIONS[name]()
