#!/usr/bin/env python
"""lipsdp against ECLipsE, ECLipsE-Fast and the product of norms — one command (issue 4).

    python benchmarks/run.py            # the full suite, every issue-4 target (about 25 minutes on 2 cores)
    python benchmarks/run.py --quick    # a small subset, about 2 minutes
    python benchmarks/run.py --cap 300  # one per-case time cap for every case
    python benchmarks/run.py --suite cnn [--nets cifar,2C2F] [--time-limit 20]   # the CNN suite (issue 15)

The CNN suite (GLipSDP's networks, a CIFAR-10-shaped CNN, a 16-layer all-conv net, with GLipSDP's
published values as columns) is described in benchmarks/cnn_suite.py; it writes
``benchmarks/results/cnn-latest.md``.  What follows is the default suite (``--suite mlp``).

The default per-case cap is the case's own target: 60 s, and 600 s for the wide network (its
target is 10 minutes); --quick: 20 s.  lipsdp's solver gets 80 % of the cap (the rest is for the
independent check), so a case that needs longer reports its best checked bound, flagged
``time_limit``.

Cases: random ReLU MLPs 784-100×5-10 (Gaussian / sqrt(fan-in)); the ECLipsE grid (input 4,
output 1, width 80, depth 2…100, each layer scaled to a spectral norm uniform in [0.4, 1.8]);
the 13 MaxMin networks of refdata/QCs_MaxMin (ℓ2, and ℓ∞ for logit 8 when lipsdp has an ℓ∞
formulation); one wide MLP 3072-1024-1024-1024-10.

Every method runs in a subprocess with a wall-clock cap, so a peak-memory figure per case is the
peak RSS of that process (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read by the worker — this
counts C allocations, unlike tracemalloc) and a runaway solver is killed and reported as skipped.
lipsdp runs with ``solver="auto"`` (or ``--solver``); its bound is the *checked* one (``verified`` column).
ECLipsE does not apply to MaxMin networks (MaxMin is not an elementwise slope-restricted
activation): those cells say n/a.  The gap column is (lipsdp − lower) / lower with the sampled
lower bound of :func:`lipsdp.lower_bound`.

Writes a Markdown table to stdout and ``benchmarks/results/latest.md``, a plot to
``benchmarks/results/latest.png`` and the raw rows to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# as `import lipsdp` would, had numpy not been imported first (see README, "Choosing a solver")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAXMIN_DIR_CANDIDATES = [os.environ.get("LIPSDP_REFDATA", ""), str(ROOT.parent / "shared" / "refdata"),
                         "/work/shared/refdata"]
MAXMIN_NAMES = ["2fc_16", "2fc_32", "2fc_64", "2fc_128", "5fc_32", "5fc_64", "8fc_32", "8fc_64", "8fc_128",
                "8fc_256", "18fc_32", "18fc_64", "18fc_128"]
GRID_DEPTHS = [2, 5, 10, 20, 50, 100]
IMPORT_ALLOWANCE = 30.0  # seconds for interpreter start + imports on a loaded machine


def _refdata() -> Path | None:
    for p in MAXMIN_DIR_CANDIDATES:
        if p and (Path(p) / "QCs_MaxMin" / "networks_weights").is_dir():
            return Path(p)
    return None


# ------------------------------------------------------------------------------------------
# cases: plain dicts, rebuilt deterministically inside each worker
# ------------------------------------------------------------------------------------------
def cases(quick: bool) -> list[dict]:
    out = []
    if quick:
        out.append({"family": "mlp", "name": "mlp 784-100x5-10", "dims": [784] + [100] * 5 + [10], "seed": 0})
        for d in (2, 4, 8):
            out.append({"family": "grid", "name": f"grid w16 d{d}", "depth": d, "width": 16, "seed": d})
        names = ["2fc_16"]
    else:
        for seed in (0, 1):
            out.append({"family": "mlp", "name": f"mlp 784-100x5-10 s{seed}", "dims": [784] + [100] * 5 + [10],
                        "seed": seed})
        for d in GRID_DEPTHS:
            out.append({"family": "grid", "name": f"grid w80 d{d}", "depth": d, "width": 80, "seed": d})
        names = MAXMIN_NAMES
    for nm in names:
        out.append({"family": "maxmin", "name": f"maxmin {nm} l2", "file": f"weights_l2_{nm}.mat", "norm": "l2"})
    for nm in names:
        out.append({"family": "maxmin", "name": f"maxmin {nm} linf8", "file": f"weights_l2_{nm}.mat", "norm": "linf",
                    "output": 8})
    if not quick:
        out.append({"family": "wide", "name": "wide 3072-1024x3-10", "dims": [3072, 1024, 1024, 1024, 10], "seed": 0,
                    "limit": WIDE_LIMIT})
    return out


#: per-case caps when --cap is not given: the issue-4 targets (60 s each; the wide net 10 minutes)
DEFAULT_LIMIT = 60.0
WIDE_LIMIT = 600.0


def cap_of(case: dict, cap: float | None) -> float:
    """The wall-clock cap of one case: --cap if given, else the case's own target."""
    return float(cap) if cap is not None else float(case.get("limit", DEFAULT_LIMIT))


def build(case: dict):
    """(weights list in torch orientation (out, in), activation name)."""
    fam = case["family"]
    if fam in ("mlp", "wide"):
        rng = np.random.default_rng(case["seed"])
        d = case["dims"]
        return [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(d[:-1], d[1:])], "relu"
    if fam == "grid":
        rng = np.random.default_rng(1000 + case["seed"])
        d = [4] + [case["width"]] * case["depth"] + [1]
        Ws = []
        for a, b in zip(d[:-1], d[1:]):
            W = rng.standard_normal((b, a))
            Ws.append(W * (rng.uniform(0.4, 1.8) / np.linalg.norm(W, 2)))
        return Ws, "relu"
    if fam == "maxmin":
        import scipy.io

        ref = _refdata()
        path = ref / "QCs_MaxMin" / "networks_weights" / case["file"]
        W = scipy.io.loadmat(path)["W"]
        return [np.asarray(W.flat[k], dtype=float) for k in range(W.size)], "maxmin"
    raise ValueError(fam)


def dims_of(Ws) -> str:
    d = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    hidden = d[1:-1]
    if len(hidden) > 2 and len(set(hidden)) == 1:
        return f"{d[0]}-{hidden[0]}x{len(hidden)}-{d[-1]}"
    return "-".join(map(str, d))


# ------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(case: dict, task: str, cap: float, solver: str = "auto") -> dict:
    Ws, act = build(case)
    norm = case.get("norm", "l2")
    output = case.get("output")
    res: dict = {}
    if task == "lipsdp":
        import lipsdp
        from lipsdp.errors import LipSDPError

        net = lipsdp.from_weights(Ws, activation=act)
        res["rss_before_mb"] = _rss_mb()
        t0 = time.perf_counter()
        try:
            # the solver's budget leaves room for the independent check inside the cap
            cert = lipsdp.certify(net, norm=norm, output=output, solver=solver, lower=False, time_limit=0.8 * cap)
            res.update(bound=cert.bound, verified=cert.verified, solver=cert.solver, status=cert.status,
                       naive=cert.naive_bound, sizes=cert.sizes)
        except LipSDPError as exc:
            res.update(error=f"{type(exc).__name__}: {str(exc)[:300]}")
        res["time"] = time.perf_counter() - t0
        res["rss_mb"] = _rss_mb()
    elif task == "peers":
        if act == "relu":
            import torch
            from eclipse_nn.LipConstEstimator import LipConstEstimator

            tw = [torch.tensor(W, dtype=torch.float64) for W in Ws]
            if output is not None:
                tw[-1] = tw[-1][[output], :]
            import contextlib
            import io

            for key, meth in (("eclipse", "ECLipsE"), ("fast", "ECLipsE_Fast")):
                buf = io.StringIO()
                t0 = time.perf_counter()
                try:
                    with contextlib.redirect_stdout(buf):
                        v = LipConstEstimator(weights=list(tw)).estimate(meth)
                    res[key] = float(v)
                except Exception as exc:  # a peer failing must not stop the benchmark
                    res[key + "_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                res[key + "_time"] = time.perf_counter() - t0
                if "boundary" in buf.getvalue():  # eclipse-nn prints this when it falls back to Fast
                    res[key + "_note"] = "ECLipsE reached a boundary solution and fell back to ECLipsE-Fast"
    elif task == "lower":
        import lipsdp

        net = lipsdp.from_weights(Ws, activation=act)
        t0 = time.perf_counter()
        try:
            res["lower"] = float(lipsdp.lower_bound(net, norm=norm, output=output))
        except Exception as exc:
            res["lower_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        res["lower_time"] = time.perf_counter() - t0
    return res


def run_worker(case: dict, task: str, cap: float, solver: str = "auto") -> dict:
    spec = {"case": case, "task": task, "cap": cap, "solver": solver}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=cap + IMPORT_ALLOWANCE,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        return {"skipped": f"> {cap:g} s (killed)", "wall": time.perf_counter() - t0}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("@@RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        why = "killed (out of memory?)" if p.returncode in (-9, 137) else f"exit {p.returncode}: {tail[0][:200]}"
        return {"skipped": why, "wall": time.perf_counter() - t0}
    out = json.loads(lines[-1][len("@@RESULT "):])
    if task == "lipsdp" and out.get("time", 0) > cap and "error" not in out:
        out["over_cap"] = True
    return out


# ------------------------------------------------------------------------------------------
# parent: run, tabulate, plot
# ------------------------------------------------------------------------------------------
def _naive(Ws, act, norm, output):
    if norm == "linf":
        W = [np.asarray(w) for w in Ws]
        last = W[-1][[output], :] if output is not None else W[-1]
        return float(np.prod([np.abs(w).sum(axis=1).max() for w in W[:-1]]) * np.abs(last).sum())
    return float(np.prod([np.linalg.norm(w, 2) for w in Ws]))


def _linf_available() -> tuple[bool, str]:
    try:
        import lipsdp
        from lipsdp.formulations import formulation_for

        net = lipsdp.from_weights([np.eye(2), np.ones((2, 2))], activation="maxmin")
        formulation_for(net, "linf", "neuron", 0)
        return True, ""
    except Exception as exc:
        return False, f"no ℓ∞ formulation for MaxMin networks in this lipsdp ({type(exc).__name__}: {str(exc)[:120]})"


def run_all(quick: bool, cap: float | None, out_dir: Path, only: str | None = None, solver: str = "auto") -> list[dict]:
    rows = []
    linf_ok, linf_why = _linf_available()
    have_ref = _refdata() is not None
    todo = [c for c in cases(quick) if not only or only in c["name"]]
    for i, case in enumerate(todo, 1):
        row = {"case": case["name"], "family": case["family"], "depth": case.get("depth"), "notes": []}
        if case["family"] == "maxmin" and not have_ref:
            row["notes"].append("refdata/QCs_MaxMin not found: skipped")
            rows.append(row)
            continue
        if case.get("norm") == "linf" and not linf_ok:
            row["notes"].append(linf_why)
            rows.append(row)
            continue
        Ws, act = build(case)
        row["dims"] = dims_of(Ws)
        row["naive"] = _naive(Ws, act, case.get("norm", "l2"), case.get("output"))
        print(f"[{i}/{len(todo)}] {case['name']} ({row['dims']}) …", file=sys.stderr, flush=True)
        row["cap"] = ccap = cap_of(case, cap)
        lip = run_worker(case, "lipsdp", ccap, solver)
        row["lipsdp"] = lip
        peers = run_worker(case, "peers", ccap) if act == "relu" else {}
        low = run_worker(case, "lower", ccap)
        peers.update({k: v for k, v in low.items() if k.startswith("lower")})
        if "skipped" in low:
            peers["lower_error"] = low["skipped"]
        row["peers"] = peers
        if act != "relu":
            row["notes"].append("ECLipsE n/a (MaxMin is not elementwise slope-restricted)")
        rows.append(row)
        print(f"    lipsdp: {_fmt(lip.get('bound'))} in {_fmt(lip.get('time'))} s "
              f"{lip.get('skipped') or lip.get('error') or ''}", file=sys.stderr, flush=True)
    return rows


def _fmt(x, digits=5) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, (int, float)):
        return f"{x:.{digits}g}"
    return str(x)


def fit_exponent(rows, key) -> tuple[float | None, int]:
    """Least-squares slope of log(time) against log(depth) over the grid rows that finished
    (for lipsdp: solved to optimality — a time-limited row measures the budget, not the cost)."""
    pts = []
    for r in rows:
        if r["family"] != "grid" or not r.get("depth"):
            continue
        if key == "lipsdp" and (r.get("lipsdp") or {}).get("status") != "optimal":
            continue
        t = _time_of(r, key)
        if t is not None and t > 0:
            pts.append((math.log(r["depth"]), math.log(t)))
    if len(pts) < 2:
        return None, len(pts)
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0]), len(pts)


def _time_of(r, key):
    if key == "lipsdp":
        lip = r.get("lipsdp") or {}
        if "skipped" in lip or "error" in lip or lip.get("bound") is None or not lip.get("verified"):
            return None
        return lip.get("time")
    p = r.get("peers") or {}
    return p.get(key + "_time") if p.get(key) is not None else None


def _commit() -> str:
    """' · commit abc1234' of the lipsdp checkout being measured, or '' outside a git checkout."""
    import lipsdp

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(lipsdp.__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" · commit {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else ""


def _cap_text(cap: float | None) -> str:
    return f"{cap:g} s" if cap is not None else f"each case's target ({DEFAULT_LIMIT:g} s; wide {WIDE_LIMIT:g} s)"


def table(rows, cap: float | None) -> str:
    head = ["case", "dims", "lipsdp bound", "checked", "status", "lipsdp s", "peak MB", "solver", "ECLipsE", "ECLipsE s",
            "ECLipsE-Fast", "Fast s", "naive", "lower", "lipsdp/ECLipsE", "lipsdp/Fast", "lipsdp/naive",
            "gap to lower", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lip, peers = r.get("lipsdp") or {}, r.get("peers") or {}
        notes = list(r["notes"])
        if "skipped" in lip:
            notes.append(f"lipsdp skipped: {lip['skipped']}")
        if "error" in lip:
            notes.append(f"lipsdp: {lip['error']}")
        if lip.get("over_cap"):
            notes.append(f"lipsdp over the {r.get('cap', cap):g} s cap")
        if "eclipse_note" in peers:
            notes.append(peers["eclipse_note"])
        for k in ("eclipse_error", "fast_error", "lower_error"):
            if k in peers:
                notes.append(f"{k.split('_')[0]}: {peers[k]}")
        if "skipped" in peers:
            notes.append(f"ECLipsE skipped: {peers['skipped']}")
        b = lip.get("bound")
        ok = lip.get("verified")
        good = b is not None and ok
        e, f, lo, nv = peers.get("eclipse"), peers.get("fast"), peers.get("lower"), r.get("naive")

        def ratio(a, c):
            return _fmt(a / c, 4) if (good and c) else "—"

        gap = f"{100 * (b - lo) / lo:.3g} %" if (good and lo) else "—"
        if good and lo and b < lo * (1 - 1e-9):
            notes.append("BOUND BELOW THE SAMPLED LOWER BOUND — BUG")
        lines.append("| " + " | ".join([
            r["case"], r.get("dims", "—"), _fmt(b, 7) if b is not None else "—",
            "—" if ok is None else ("yes" if ok else "NO"), str(lip.get("status", "—")), _fmt(lip.get("time"), 3),
            _fmt(lip.get("rss_mb"), 4), str(lip.get("solver", "—")),
            _fmt(e), _fmt(peers.get("eclipse_time") if e is not None else None, 3),
            _fmt(f), _fmt(peers.get("fast_time") if f is not None else None, 3),
            _fmt(nv), _fmt(lo), ratio(b, e), ratio(b, f), ratio(b, nv), gap, "; ".join(notes) or "",
        ]) + " |")
    return "\n".join(lines)


def targets(rows, cap) -> str:
    """The issue-4 targets, evaluated on this run's rows (PASS / FAIL / not run)."""
    out = []

    def status(cond, ran):
        return "not run" if not ran else ("PASS" if cond else "FAIL")

    mlp = [r for r in rows if r["family"] == "mlp"]
    for r in mlp:
        lip, peers = r.get("lipsdp") or {}, r.get("peers") or {}
        t, ft = _time_of(r, "lipsdp"), peers.get("fast_time")
        ran = t is not None or "skipped" in lip or "error" in lip
        cond = t is not None and t <= 5 and ft is not None and t <= 3 * ft
        out.append(f"- {r['case']}: ≤ 5 s and ≤ 3× ECLipsE-Fast ({_fmt(ft, 3)} s): lipsdp {_fmt(t, 3)} s → "
                   f"{status(cond, ran)}")
    deep = [r for r in rows if r["family"] == "grid" and r.get("depth") == 100]
    for r in deep:
        t = _time_of(r, "lipsdp")
        st = (r.get("lipsdp") or {}).get("status")
        out.append(f"- grid depth 100: SDP optimum (status optimal) in ≤ 60 s: lipsdp {_fmt(t, 3)} s, status {st} → "
                   f"{status(t is not None and t <= 60 and st == 'optimal', True)}")
    mm = [r for r in rows if r["family"] == "maxmin" and r.get("lipsdp")]
    if mm:
        ok = [r for r in mm if (_time_of(r, "lipsdp") or 1e9) <= 60 and r["lipsdp"].get("status") == "optimal"]
        anytime = [r for r in mm if (_time_of(r, "lipsdp") or 1e9) <= 60 and r["lipsdp"].get("verified")]
        out.append(f"- MaxMin networks ≤ 60 s each: {len(ok)}/{len(mm)} optimal within 60 s "
                   f"({len(anytime)}/{len(mm)} with a checked, possibly time-limited bound) → "
                   f"{status(len(ok) == len(mm), True)}")
    for r in (r for r in rows if r["family"] == "wide"):
        lip = r.get("lipsdp") or {}
        t = _time_of(r, "lipsdp")
        cond = t is not None and t <= 600 and lip.get("rss_mb", 1e12) <= 8192 and lip.get("bound", 1e300) < r["naive"]
        out.append(f"- wide 3072-1024x3-10: checked bound < naive in ≤ 600 s and ≤ 8 GB: "
                   f"{_fmt(lip.get('bound'))} in {_fmt(t, 3)} s, {_fmt(lip.get('rss_mb'), 4)} MB → "
                   f"{status(cond, True)}")
    for key, name in (("lipsdp", "lipsdp"), ("eclipse", "ECLipsE"), ("fast", "ECLipsE-Fast")):
        p, n = fit_exponent(rows, key)
        what = "points solved to optimality" if key == "lipsdp" else "points"
        out.append(f"- time ∝ depth^p on the grid, {name}: p = {_fmt(p, 3)} ({n} {what})")
    return "\n".join(out)


def plot(rows, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for key, name, mk in (("lipsdp", "lipsdp", "o-"), ("eclipse", "ECLipsE", "s--"), ("fast", "ECLipsE-Fast", "^:")):
        pts = sorted((r["depth"], _time_of(r, key), (r.get(key) or {}).get("status", "optimal")) for r in rows
                     if r["family"] == "grid" and r.get("depth") and _time_of(r, key))
        if pts:
            p, _ = fit_exponent(rows, key)
            opt = [(d, t) for d, t, st in pts if st == "optimal"]
            if opt:
                a1.loglog(*zip(*opt), mk, label=f"{name} (p = {_fmt(p, 3)})")
            cut = [(d, t) for d, t, st in pts if st != "optimal"]
            if cut:  # a time-limited run measures the cap, not the cost: hollow, not fitted
                a1.loglog(*zip(*cut), mk[0], mfc="none", color=a1.lines[-1].get_color() if opt else None,
                          label=f"{name}: stopped at the cap (checked, not optimal)")
    a1.set_xlabel("depth (ECLipsE grid)")
    a1.set_ylabel("wall time [s]")
    a1.set_title("time vs depth")
    a1.legend()
    a1.grid(True, which="both", alpha=0.3)
    labels, vals = [], {"lipsdp": [], "ECLipsE": [], "ECLipsE-Fast": []}
    for r in rows:
        nv = r.get("naive")
        if not nv:
            continue
        lip, peers = r.get("lipsdp") or {}, r.get("peers") or {}
        labels.append(r["case"])
        vals["lipsdp"].append(lip["bound"] / nv if lip.get("verified") else np.nan)
        vals["ECLipsE"].append(peers["eclipse"] / nv if peers.get("eclipse") else np.nan)
        vals["ECLipsE-Fast"].append(peers["fast"] / nv if peers.get("fast") else np.nan)
    x = np.arange(len(labels))
    for j, (k, v) in enumerate(vals.items()):
        a2.bar(x + (j - 1) * 0.27, v, 0.27, label=k)
    a2.axhline(1.0, color="k", lw=0.8)
    a2.set_yscale("log")  # the deep grid's ratios reach 1e-11
    a2.set_xticks(x, labels, rotation=75, fontsize=7)
    a2.set_ylabel("bound / product of norms")
    a2.set_title("tightness (lower is better)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small subset (about 2 minutes)")
    ap.add_argument("--cap", type=float, default=None, help="one time cap in seconds for every case (default: each case's target, 60 s, the wide net 600 s; quick 20)")
    ap.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (default benchmarks/results)")
    ap.add_argument("--solver", default="auto", help="lipsdp solver for every case (default auto)")
    ap.add_argument("--suite", choices=["mlp", "cnn"], default="mlp",
                    help="mlp: the issue-4 suite (default); cnn: the CNN suite of benchmarks/cnn_suite.py")
    ap.add_argument("--nets", default=None, help="cnn suite: comma-separated networks (default all; see cnn_suite.py)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="cnn suite: the cap per network in seconds (default: each network's target); same as --cap")
    ap.add_argument("--no-lower", action="store_true", help="cnn suite: skip the sampled lower bound")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.suite == "cnn":
        sys.path.insert(0, str(HERE))
        import cnn_suite

        cap = a.time_limit if a.time_limit is not None else a.cap
        return cnn_suite.main(a.nets, cap, a.solver, Path(a.out), lower=not a.no_lower)
    if a.worker:
        spec = json.loads(a.worker)
        res = worker(spec["case"], spec["task"], spec["cap"], spec.get("solver", "auto"))
        print("@@RESULT " + json.dumps(res, default=float), flush=True)
        return 0
    cap = a.cap if a.cap is not None else (20.0 if a.quick else None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = run_all(a.quick, cap, out, a.only, a.solver)
    import lipsdp

    head = (f"# lipsdp benchmark{' (quick)' if a.quick else ''}\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')} · lipsdp {lipsdp.__version__} · {platform.processor() or platform.machine()}"
            f" · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · solver {a.solver} · per-case cap {_cap_text(cap)} · "
            f"total {time.perf_counter() - t0:.0f} s{_commit()}\n\n"
            "Times are wall-clock seconds of the call alone (no interpreter start); peak MB is the peak RSS "
            "of the lipsdp worker process (imports included). lipsdp bounds are checked bounds "
            "(lipsdp.check); ratios use them.\n\n")
    md = head + table(rows, cap) + "\n\n## Targets (issue 4)\n\n" + targets(rows, cap) + "\n"
    why = plot(rows, out / "latest.png")
    if why:
        md += f"\n{why}\n"
    (out / "latest.md").write_text(md)
    (out / "latest.json").write_text(json.dumps(rows, indent=1, default=float))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
