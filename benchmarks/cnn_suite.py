"""The CNN suite of benchmarks/run.py (issue 15): MNIST and CIFAR-10-scale CNNs against GLipSDP.

    python benchmarks/run.py --suite cnn                          # every network, each at its target time
    python benchmarks/run.py --suite cnn --nets cifar --time-limit 20
    python benchmarks/run.py --suite cnn --nets 2C2F,LeNet5 --solver native

Networks (``--nets``, comma-separated short names; the source of each is stated in :data:`NETS`):

* ``2C2F``, ``LeNet5`` — refdata/GLipSDP ``mnist_2C2F_wd.pth`` / ``mnist_LeNet5_wd.pth``, the
  modules of tests/glipsdp_nets.py as written (LeNet5's average pools included), exported with
  ``lipsdp.from_torch``;
* ``v-2C2F``, ``v-LeNet5``, ``v-FC-R18``, ``v-C-R18`` — refdata/GLipSDP ``versatility_*.pt``,
  the same way;
* ``cifar`` — 3×32×32 → Conv(16, k4, s2, p1) → ReLU → Conv(32, k4, s2, p1) → ReLU → Linear(100) →
  ReLU → Linear(10) (4 096 + 2 048 + 100 hidden neurons), ``torch.manual_seed(0)`` then PyTorch's
  default initialisation, no training;
* ``allconv`` — 1×28×28 → 16 × [Conv(32, k3, s1, p1) → ReLU] → Linear(10) (401 408 hidden
  neurons), ``torch.manual_seed(0)`` then PyTorch's default initialisation, then every kernel
  rescaled to spectral norm ≈ 2 (the kernel divided by the norm of its exact zero-padded
  convolution, estimated from below by 100 power iterations of conv2d / conv_transpose2d, times 2).
  The product of norms is then ≈ 2^16 · ‖W_fc‖, the order of GLipSDP's 10 574 for its trained net.
  Why 2 and not 1: at norm 1 the 16 layers shrink every direction so much that the network is
  numerically constant (benchmarks/results-cnn-suite.md).  Random, not trained (GLipSDP's net is
  trained and has ~94k activations, this one 401k).

Every network runs in its own subprocess (``python benchmarks/cnn_suite.py --worker SPEC``),
killed after 2 × cap + 120 s (+ 120 s for the lower bound; a bound already reported is kept), so
the peak memory of a row is that process's ``resource.getrusage`` ``ru_maxrss`` (C allocations
included).  The cap of a network is its issue-15 target unless ``--time-limit`` is
given; ``lipsdp.certify(net, solver=..., time_limit=0.8 × cap, lower=False)`` leaves the rest for
the independent check, so a network that needs longer reports its best checked (anytime) bound
with status ``time_limit``.  The bound column is the checked bound (``verified``); "lower" is
:func:`lipsdp.lower_bound` computed afterwards in the same process (not timed with the bound).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMPORT_ALLOWANCE = 120.0  # interpreter start, torch import, the export and the first solver step

#: short name -> source, refdata file (or None: built here), GLipSDP's published (bound, seconds) or
#: None, the issue-15 target cap in seconds (default of --time-limit)
NETS = {
    "2C2F": dict(file="mnist_2C2F_wd.pth", source="refdata/GLipSDP mnist_2C2F_wd.pth (GLipSDP repo)",
                 glipsdp=(6.7247, 360), cap=60.0),
    "LeNet5": dict(file="mnist_LeNet5_wd.pth", source="refdata/GLipSDP mnist_LeNet5_wd.pth, average pools as written",
                   glipsdp=(12.252, 99), cap=120.0),
    "v-2C2F": dict(file="versatility_2C2F.pt", source="refdata/GLipSDP versatility_2C2F.pt", glipsdp=None, cap=600.0),
    "v-LeNet5": dict(file="versatility_LeNet5ReLU.pt", source="refdata/GLipSDP versatility_LeNet5ReLU.pt",
                     glipsdp=None, cap=600.0),
    # GLipSDP's 20.956 models the blocks without their post-sum ReLU (SOURCE.md): another network
    "v-FC-R18": dict(file="versatility_FC-R18.pt", source="refdata/GLipSDP versatility_FC-R18.pt",
                     glipsdp=(20.956, 70), glipsdp_note="different network (no post-sum ReLU)", cap=600.0),
    "v-C-R18": dict(file="versatility_C-R18.pt", source="refdata/GLipSDP versatility_C-R18.pt", glipsdp=None, cap=600.0),
    "cifar": dict(file=None, source="CIFAR-10-shaped CNN, torch.manual_seed(0), PyTorch default init (untrained)",
                  glipsdp=None, cap=120.0),
    "allconv": dict(file=None, source="16 × 32-channel 3×3 all-conv MNIST net, torch.manual_seed(0), kernels scaled "
                    "to spectral norm ≈ 2 (untrained)", glipsdp=(10574, 548), glipsdp_note="GLipSDP's is trained",
                    cap=600.0),
}


# ------------------------------------------------------------------------------------------
# the networks (torch modules; built inside the worker)
# ------------------------------------------------------------------------------------------
def cifar_cnn():
    """3×32×32 → Conv(16, k4, s2, p1) → ReLU → Conv(32, k4, s2, p1) → ReLU → Linear(2048, 100) → ReLU →
    Linear(100, 10); ``torch.manual_seed(0)``, PyTorch default initialisation (float64)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 100), nn.ReLU(), nn.Linear(100, 10)).double()


def conv_norm(conv, shape, iters: int = 100) -> float:
    """Spectral norm of ``conv`` (its exact zero-padded linear part) on inputs of ``shape``, by
    power iteration on conv2d / conv_transpose2d (an estimate from below)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    x = torch.randn((1,) + tuple(shape), generator=g, dtype=torch.float64)
    s = 0.0
    with torch.no_grad():
        for _ in range(iters):
            x = x / x.norm()
            y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
            s = float(y.norm())
            x = F.conv_transpose2d(y, conv.weight, None, conv.stride, conv.padding)
    return s


def allconv_net(layers: int = 16, channels: int = 32, norm: float = 2.0):
    """1×28×28 → ``layers`` × [Conv(channels, k3, s1, p1) → ReLU] → Linear(channels·784, 10);
    ``torch.manual_seed(0)``, default init, each kernel scaled to spectral norm ≈ ``norm`` (:func:`conv_norm`)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    mods, c = [], 1
    for _ in range(layers):
        conv = nn.Conv2d(c, channels, 3, padding=1).double()
        with torch.no_grad():
            conv.weight *= norm / conv_norm(conv, (c, 28, 28))
        mods += [conv, nn.ReLU()]
        c = channels
    mods += [nn.Flatten(), nn.Linear(channels * 28 * 28, 10).double()]
    return nn.Sequential(*mods).double()


def module(short: str):
    """(torch module in float64, per-sample input shape)."""
    spec = NETS[short]
    if spec["file"]:
        sys.path.insert(0, str(ROOT))
        from tests import glipsdp_nets

        model, shape = glipsdp_nets.load(spec["file"])
        return model.double(), shape
    if short == "cifar":
        return cifar_cnn(), (3, 32, 32)
    return allconv_net(), (1, 28, 28)


# ------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _hidden(net) -> int:
    """Activation neurons, those inside residual blocks included."""
    from lipsdp.ir import Activation, Residual

    return int(sum(layer.size if isinstance(layer, Activation) else
                   sum(b.size for b in layer.body if isinstance(b, Activation)) if isinstance(layer, Residual) else 0
                   for layer in net.layers))


def worker(short: str, cap: float, solver: str, lower: bool) -> dict:
    import numpy as np

    import lipsdp
    from lipsdp.errors import LipSDPError

    res: dict = {}
    t0 = time.perf_counter()
    model, shape = module(short)
    net = lipsdp.from_torch(model, shape)
    res["export_s"] = time.perf_counter() - t0
    res["hidden"] = _hidden(net)
    res["rss_export_mb"] = _rss_mb()
    t0 = time.perf_counter()
    try:
        cert = lipsdp.certify(net, solver=solver, lower=False, time_limit=0.8 * cap, progress=False)
        res.update(bound=cert.bound, verified=cert.verified, solver=cert.solver, status=cert.status,
                   naive=cert.naive_bound, timings=cert.timings)
    except (LipSDPError, MemoryError) as exc:
        res["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    res["time"] = time.perf_counter() - t0
    if "naive" not in res:  # certify failed: the product of norms alone
        res["naive"] = float(np.prod([a.op.norm2_estimate() for a in net.affines])) if net.is_feedforward else None
    res["rss_mb"] = _rss_mb()
    print("@@RESULT " + json.dumps(res, default=float), flush=True)  # kept if the lower bound runs out of time
    if lower:
        t0 = time.perf_counter()
        try:
            res["lower"] = float(lipsdp.lower_bound(net))
        except (LipSDPError, MemoryError) as exc:
            res["lower_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        res["lower_s"] = time.perf_counter() - t0
    return res


def run_worker(short: str, cap: float, solver: str, lower: bool) -> dict:
    spec = {"net": short, "cap": cap, "solver": solver, "lower": lower}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    # the certify call is capped by its time limit; the export, the check and the lower bound get more
    wall = 2.0 * cap + IMPORT_ALLOWANCE + (120.0 if lower else 0.0)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        stdout, stderr = p.communicate(timeout=wall)
        killed = False
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
        killed = True
    lines = [ln for ln in stdout.splitlines() if ln.startswith("@@RESULT ")]
    if not lines:
        if killed:
            return {"skipped": f"> {wall:g} s (killed)", "wall": time.perf_counter() - t0}
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        why = "killed (out of memory?)" if p.returncode in (-9, 137) else f"exit {p.returncode}: {tail[0][:300]}"
        return {"skipped": why, "wall": time.perf_counter() - t0}
    out = json.loads(lines[-1][len("@@RESULT "):])
    if killed or p.returncode != 0:  # the bound was reported; what came after it did not finish
        out["lower_error" if lower and "lower" not in out else "skipped"] = (
            f"killed after {wall:g} s" if killed else f"exit {p.returncode} after the bound")
    if out.get("time", 0) > cap and "error" not in out:
        out["over_cap"] = True
    return out


# ------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------
def parse_nets(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(NETS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in NETS]
    if bad:
        raise SystemExit(f"--nets: unknown network(s) {bad}; choose from {', '.join(NETS)}")
    return names


def run_all(nets, cap: float | None, solver: str, lower: bool) -> list[dict]:
    rows = []
    for i, short in enumerate(nets, 1):
        ccap = float(cap) if cap is not None else NETS[short]["cap"]
        print(f"[{i}/{len(nets)}] {short} (cap {ccap:g} s) …", file=sys.stderr, flush=True)
        res = run_worker(short, ccap, solver, lower)
        rows.append({"net": short, "cap": ccap, **res})
        print(f"    {_fmt(res.get('bound'))} in {_fmt(res.get('time'), 3)} s, {res.get('status')} "
              f"{res.get('skipped') or res.get('error') or ''}", file=sys.stderr, flush=True)
    return rows


def _fmt(x, digits=5) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, (int, float)):
        return f"{x:.{digits}g}"
    return str(x)


def table(rows) -> str:
    head = ["network", "hidden", "GLipSDP (published)", "product of norms", "bound", "verified", "status", "solver",
            "time [s]", "peak MB", "lower", "source", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        spec = NETS[r["net"]]
        g = spec["glipsdp"]
        gl = "—" if g is None else f"{g[0]:g} in {g[1]:g} s" + (f" ({spec['glipsdp_note']})" if "glipsdp_note" in spec else "")
        notes = []
        for key in ("skipped", "error", "lower_error"):
            if key in r:
                notes.append(f"{key}: {r[key]}")
        if r.get("over_cap"):
            notes.append(f"over the {r['cap']:g} s cap")
        b, ok, lo = r.get("bound"), r.get("verified"), r.get("lower")
        if b is not None and ok and lo is not None and b < lo * (1 - 1e-9):
            notes.append("BOUND BELOW THE SAMPLED LOWER BOUND — BUG")
        tm = r.get("timings") or {}
        if tm:
            notes.append("build/solve/check " + "/".join(f"{tm.get(k, 0):.3g}" for k in ("build", "solve", "check")) + " s")
        if "export_s" in r:
            notes.append(f"export {r['export_s']:.3g} s")
        lines.append("| " + " | ".join([
            r["net"], _fmt(r.get("hidden")), gl, _fmt(r.get("naive")), _fmt(b, 7) if b is not None else "—",
            "—" if ok is None else ("yes" if ok else "NO"), str(r.get("status", "—")), str(r.get("solver", "—")),
            _fmt(r.get("time"), 3), _fmt(r.get("rss_mb"), 4), _fmt(lo), spec["source"], "; ".join(notes),
        ]) + " |")
    return "\n".join(lines)


def main(nets: str | None, cap: float | None, solver: str, out_dir: Path, lower: bool = True) -> int:
    import platform

    names = parse_nets(nets)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = run_all(names, cap, solver, lower)
    import lipsdp

    cap_text = f"{cap:g} s" if cap is not None else "each network's issue-15 target (" + ", ".join(
        f"{n} {NETS[n]['cap']:g} s" for n in names) + ")"
    md = (f"# lipsdp CNN suite (issue 15)\n\n{time.strftime('%Y-%m-%d %H:%M')} · lipsdp {lipsdp.__version__} · "
          f"{platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · "
          f"solver {solver} · cap {cap_text} · total {time.perf_counter() - t0:.0f} s\n\n"
          "time: the certify call (build + solve ≤ 0.8 × cap + check; export excluded). peak MB: peak RSS of the "
          "network's worker process. bound: the checked bound. GLipSDP: published, MOSEK, channel-wise, unchecked.\n\n"
          + table(rows) + "\n")
    (out_dir / "cnn-latest.md").write_text(md)
    (out_dir / "cnn-latest.json").write_text(json.dumps(rows, indent=1, default=float))
    print(md)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        spec = json.loads(sys.argv[2])
        res = worker(spec["net"], spec["cap"], spec.get("solver", "auto"), spec.get("lower", True))
        print("@@RESULT " + json.dumps(res, default=float), flush=True)
        sys.exit(0)
    sys.exit("run it as: python benchmarks/run.py --suite cnn [--nets ...] [--time-limit S] [--solver NAME]")
