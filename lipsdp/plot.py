"""Plots of certificates (matplotlib, imported only when a plot is drawn).

* :func:`compare` — the interval [lower, upper] of one or several certificates against their
  naive bound (product of norms);
* :func:`layer_contributions` — where the looseness comes from: each layer's spectral norm
  ‖W_k‖_2 next to the layer's factor in a certified chain of prefix bounds (definition in
  :func:`layer_factors`);
* :func:`scaling` — bound and time against depth or width from a list of records;
* :func:`radius_curves` — certified accuracy against the radius from local and from global
  certified radii (:func:`lipsdp.robust.certified_radii_local`).

Every function takes an optional matplotlib ``ax`` and returns the axes it drew on, so figures
can be composed, saved (``ax.figure.savefig(...)``) or embedded (:mod:`lipsdp.report`).
Without ``ax`` a new figure is made through pyplot (inline in notebooks); pass an ``ax`` from
a bare ``matplotlib.figure.Figure`` to draw without any GUI backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import numpy as np

from .errors import FormulationError, LipSDPError

__all__ = ["compare", "layer_factors", "layer_contributions", "scaling", "figure_png", "radius_curves"]

#: colours used consistently across the plots (upper, lower, naive, layer norm)
COLORS = {"upper": "#1f77b4", "lower": "#2ca02c", "naive": "#d62728", "norm": "#9a9a9a", "other": "#ff7f0e"}


def _new_axes(ax, figsize=(6.4, 3.2), ncols=1):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _fig, ax = plt.subplots(1, ncols, figsize=figsize, constrained_layout=True)
    return ax


def figure_png(fig, dpi: int = 110) -> bytes:
    """The PNG bytes of a matplotlib figure (Agg canvas; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def _entries(certs_or_dict, labels=None):
    """Normalise the input of :func:`compare` to [(label, upper, lower, naive, verified)]."""
    from .certificate import Certificate

    if isinstance(certs_or_dict, Certificate):
        items = [(None, certs_or_dict)]
    elif isinstance(certs_or_dict, Mapping):
        items = list(certs_or_dict.items())
    elif isinstance(certs_or_dict, (list, tuple)):
        items = [(None, c) for c in certs_or_dict]
    else:
        raise LipSDPError(
            f"compare() expected a Certificate, a list of them or a dict label -> Certificate/number, "
            f"got {type(certs_or_dict).__name__}"
        )
    if labels is not None:
        if len(labels) != len(items):
            raise LipSDPError(f"compare(): {len(labels)} labels for {len(items)} certificates")
        items = [(lab, c) for lab, (_, c) in zip(labels, items)]
    out = []
    for lab, c in items:
        if isinstance(c, Certificate):
            name = lab if lab is not None else f"{c.norm} / {c.method}"
            out.append((str(name), float(c.bound), c.lower_bound, float(c.naive_bound), bool(c.verified)))
        elif isinstance(c, (int, float, np.floating, np.integer)):
            if lab is None:
                raise LipSDPError("compare(): a plain number needs a label (pass a dict label -> value)")
            out.append((str(lab), float(c), None, None, True))
        else:
            raise LipSDPError(f"compare(): entry {lab!r} is a {type(c).__name__}; expected a Certificate or a number")
    return out


def compare(certs_or_dict, ax=None, labels=None, log: bool | None = None, title: str | None = None):
    """Plot the certified interval [lower, upper] of each certificate against its naive bound.

    For each entry one row shows: a bar from the sampled lower bound (a true difference
    quotient, ≤ Lip(f)) to the certified upper bound (≥ Lip(f), verified by lipsdp.check), a
    marker at the naive bound Π‖W_k‖ (ℓ2) or Π‖W_k‖_∞ (ℓ∞), and the ratio upper/naive as text.
    Any true Lipschitz constant lies inside the bar; unverified bounds are drawn hollow and
    labelled "NOT VERIFIED".

    Parameters
    ----------
    certs_or_dict
        a :class:`~lipsdp.Certificate`, a list of them, or a dict label → Certificate or plain
        number (e.g. ``{"ECLipsE-Fast": 5.34}`` — drawn as an upper bound only).
    ax
        matplotlib axes (default: a new pyplot figure).
    labels
        row labels (default: the dict keys, or ``"norm / method"``).
    log
        logarithmic bound axis (default: when the values span more than a factor 20).
    """
    rows = _entries(certs_or_dict, labels)
    ax = _new_axes(ax, figsize=(6.4, 0.9 + 0.55 * len(rows)))
    vals = [v for r in rows for v in (r[1], r[2], r[3]) if v is not None and math.isfinite(v) and v > 0]
    if log is None:
        log = bool(vals) and max(vals) / min(vals) > 20
    y = np.arange(len(rows))[::-1]
    seen = set()

    def lab(key, text):
        if key in seen:
            return None
        seen.add(key)
        return text

    for yi, (name, up, lo, naive, ok) in zip(y, rows):
        if lo is not None and math.isfinite(up):
            ax.plot([lo, up], [yi, yi], color=COLORS["upper"], lw=7, alpha=0.35, solid_capstyle="butt",
                    label=lab("int", "certified interval [lower, upper]"))
            ax.plot([lo], [yi], "|", color=COLORS["lower"], ms=18, mew=3, label=lab("lo", "lower bound (sampled)"))
        ax.plot([up], [yi], "|" if ok else "o", color=COLORS["upper"], ms=18 if ok else 9, mew=3,
                mfc=COLORS["upper"] if ok else "none", label=lab("up", "certified upper bound"))
        if naive is not None and math.isfinite(naive):
            ax.plot([naive], [yi], "x", color=COLORS["naive"], ms=10, mew=2.5, label=lab("naive", "naive (product of norms)"))
            ax.annotate(f"{up:.4g}  ({100 * up / naive:.1f}% of naive)" + ("" if ok else "  NOT VERIFIED"),
                        (up, yi), textcoords="offset points", xytext=(0, 9), fontsize=8, ha="center")
        else:
            ax.annotate(f"{up:.4g}", (up, yi), textcoords="offset points", xytext=(0, 9), fontsize=8, ha="center")
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    if log:
        ax.set_xscale("log")
    elif vals:
        ax.set_xlim(0, max(vals) * 1.08)
    ax.set_xlabel("Lipschitz bound")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------------------------
# layer contributions
# ---------------------------------------------------------------------------------------------


def layer_factors(network, method: str = "chain", solver: str = "auto", **certify_kw) -> dict:
    """Per-layer factors of a certified chain of prefix bounds, next to each layer's norm.

    For a feedforward network f = W_l ∘ φ_l ∘ … ∘ φ_1 ∘ W_0 (ℓ2), let f_k be the *prefix*
    network ending with the affine map W_k (f_0 = W_0, f_l = f), and ρ_k the square of its
    certified ℓ2 bound (``lipsdp.certify(f_k, method=method)``, every one checked by
    lipsdp.check; ρ_0 = ‖W_0‖_2² exactly).  The factor of layer k is

        c_0 = sqrt(ρ_0) = ‖W_0‖_2,      c_k = sqrt(ρ_k / ρ_{k−1})   (k = 1..l),

    so Π_k c_k = sqrt(ρ_l) is the certified bound of the whole network, while Π_k ‖W_k‖_2 is
    the naive bound: layers with c_k ≪ ‖W_k‖_2 are where the SDP gains over the product of
    norms.  With the default ``method="chain"`` each ρ_k is the bound of the S = P = 0 chain
    (LipSDP-NSR Table 1 form; for slope-restricted layers LipSDP-Neuron) — Pauli et al.,
    ICLR 2024; Fazlyab et al., NeurIPS 2019.  Costs l solves of growing size.

    Returns a dict with ``norms`` (‖W_k‖_2), ``factors`` (c_k), ``prefix_bounds`` (sqrt(ρ_k)),
    ``bound`` (Π c_k), ``naive`` (Π ‖W_k‖_2) and ``certificates`` (the prefix certificates).
    """
    from .api import as_network, certify
    from .ir import Affine, Network

    net = as_network(network)
    if not net.is_feedforward:
        raise FormulationError("layer_factors needs a feedforward network (prefix bounds are defined layer by layer)")
    norms = [float(a.op.norm2_estimate()) for a in net.affines]  # no dense copy of a convolution
    ends = [i for i, layer in enumerate(net.layers) if isinstance(layer, Affine)]
    prefix = [norms[0]]
    certs = [None]
    for end in ends[1:]:
        sub = Network(net.layers[: end + 1], name=f"{net.name or 'network'}[:{end + 1}]")
        cert = certify(sub, method=method, solver=solver, lower=False, **certify_kw)
        if not cert.verified:
            raise LipSDPError(
                f"prefix bound through layer {len(prefix)} could not be verified ({cert.message}); "
                f"try {_suggest()} or method='layer'"
            )
        prefix.append(float(cert.bound))
        certs.append(cert)
    factors = [prefix[0]] + [prefix[k] / prefix[k - 1] if prefix[k - 1] > 0 else 0.0 for k in range(1, len(prefix))]
    return {
        "norms": norms,
        "factors": factors,
        "prefix_bounds": prefix,
        "bound": prefix[-1],
        "naive": float(np.prod(norms)),
        "method": method,
        "certificates": certs,
    }


def layer_contributions(network=None, ax=None, factors: dict | None = None, method: str = "chain",
                        solver: str = "auto", log: bool | None = None):
    """Bar chart: ‖W_k‖_2 (grey) next to the certified layer factor c_k (blue) per layer k.

    ``c_k = sqrt(ρ_k/ρ_{k−1})`` with ρ_k the squared certified bound of the prefix network
    through W_k (see :func:`layer_factors`, which this calls unless ``factors`` — its result —
    is given).  Π c_k is the certified bound, Π ‖W_k‖ the naive one; both are in the title.
    """
    if factors is None:
        if network is None:
            raise LipSDPError("layer_contributions() needs a network or the result of layer_factors()")
        factors = layer_factors(network, method=method, solver=solver)
    ax = _new_axes(ax, figsize=(6.4, 3.2))
    n = len(factors["norms"])
    x = np.arange(n)
    w = 0.38
    ax.bar(x - w / 2, factors["norms"], w, color=COLORS["norm"], label=r"$\|W_k\|_2$ (naive factor)")
    ax.bar(x + w / 2, factors["factors"], w, color=COLORS["upper"],
           label=r"certified factor $\sqrt{\rho_k/\rho_{k-1}}$")
    ax.axhline(1.0, color="k", lw=0.6, alpha=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels([f"W{k}" for k in range(n)])
    ax.set_xlabel("layer k")
    ax.set_ylabel("factor")
    vals = [v for v in list(factors["norms"]) + list(factors["factors"]) if v > 0]
    if log is None:
        log = bool(vals) and max(vals) / min(vals) > 20
    if log:
        ax.set_yscale("log")
    ax.set_title(f"certified {factors['bound']:.4g} = Π factors  vs  naive {factors['naive']:.4g} = Π norms",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return ax


# ---------------------------------------------------------------------------------------------
# scaling
# ---------------------------------------------------------------------------------------------


def scaling(records, x: str = "depth", ax=None, by: str = "method", ys=("bound", "time"), logy=(True, True)):
    """Depth or width scaling chart: ``ys`` (default bound and seconds) against ``x``.

    ``records`` is a list of dicts (or a pandas DataFrame) with at least the key ``x``
    (``"depth"`` or ``"width"``), the grouping key ``by`` (e.g. ``"method"``: "LipSDP-NSR",
    "naive", "ECLipsE-Fast") and the ``ys`` keys; a missing or None value is skipped (e.g. no
    time for the naive bound).  One line per group, one panel per y.  ``ax`` may be one axes
    (one y) or a sequence of ``len(ys)`` axes.
    """
    if x not in ("depth", "width") and not isinstance(x, str):
        raise LipSDPError(f"scaling(): x must be 'depth' or 'width', got {x!r}")
    if hasattr(records, "to_dict"):
        records = records.to_dict("records")
    records = list(records)
    if not records:
        raise LipSDPError("scaling(): no records to plot")
    for r in records:
        if x not in r:
            raise LipSDPError(f"scaling(): a record has no {x!r} key (keys: {sorted(r)})")
    if isinstance(ys, str):
        ys = (ys,)
    if isinstance(logy, bool):
        logy = (logy,) * len(ys)
    axes = _new_axes(ax, figsize=(5.0 * len(ys), 3.4), ncols=len(ys))
    axes = list(np.atleast_1d(axes))
    if len(axes) != len(ys):
        raise LipSDPError(f"scaling(): {len(axes)} axes for {len(ys)} quantities {list(ys)}")
    groups: dict = {}
    for r in records:
        groups.setdefault(str(r.get(by, "")), []).append(r)
    for a, key, lg in zip(axes, ys, logy):
        for gi, (name, rs) in enumerate(groups.items()):
            pts = sorted((float(r[x]), float(r[key])) for r in rs
                         if r.get(key) is not None and np.isfinite(float(r[key])))
            if not pts:
                continue
            xs, vs = zip(*pts)
            a.plot(xs, vs, marker="os^Dv<>"[gi % 7], label=name)
        a.set_xlabel(x)
        a.set_ylabel({"time": "seconds", "bound": "Lipschitz bound"}.get(key, key))
        if lg:
            a.set_yscale("log")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
        a.set_title(f"{key} vs {x}", fontsize=9)
    return axes[0] if len(axes) == 1 else axes


def radius_curves(frame, ax=None, radii=None, title: str | None = None):
    """Certified accuracy vs radius: local radii against global-bound radii, one step curve each.

    ``frame``: the DataFrame of :func:`lipsdp.robust.certified_radii_local` (columns
    ``correct``, ``radius_local``, ``radius_global``).  Accuracy at ε is the fraction of
    samples with radius > ε (at ε = 0: the clean accuracy), as :func:`lipsdp.certified_accuracy`
    computes it.  ``radii``: the ε grid (default: 60 points up to the largest local radius).
    """
    for col in ("correct", "radius_local", "radius_global"):
        if col not in frame:
            raise LipSDPError(f"radius_curves: the frame has no column {col!r} (use lipsdp.robust.certified_radii_local)")
    ax = _new_axes(ax, figsize=(5, 3.2))
    rl = np.asarray(frame["radius_local"], dtype=float)
    rg = np.asarray(frame["radius_global"], dtype=float)
    ok = np.asarray(frame["correct"], dtype=bool)
    if radii is None:
        top = float(np.max(rl[ok])) if ok.any() else 1.0
        radii = np.linspace(0.0, 1.05 * max(top, 1e-12), 60)
    radii = np.asarray(radii, dtype=float)

    def acc(r):
        return np.array([np.mean(ok) if e == 0 else np.mean(ok & (r > e)) for e in radii])

    norm = frame.attrs.get("norm", "")
    ax.step(radii, acc(rl), where="post", color=COLORS["upper"], label="local bounds")
    ax.step(radii, acc(rg), where="post", color=COLORS["naive"], linestyle="--", label="global bound")
    ax.set_xlabel(f"radius ε{f' ({norm})' if norm else ''}")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _suggest() -> str:
    """Other solvers to try, from the backend registry."""
    from .backends import suggest_solvers

    return suggest_solvers()
