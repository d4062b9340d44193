"""Certified robust accuracy from Lipschitz certificates (the margin bound).

For a classifier f: R^n → R^K, input x with label y and logit margin
m(x) = f_y(x) − max_{j≠y} f_j(x), a perturbation δ cannot change the prediction while every
logit difference keeps its sign:  f_y(x+δ) − f_j(x+δ) ≥ f_y(x) − f_j(x) − L_yj ‖δ‖  > 0, where
L_yj is a Lipschitz bound of the scalar map x ↦ (e_y − e_j)^T f(x).  Hence x is *certified* at
radius ε when it is correctly classified and

* ℓ2, ``pairwise=False``:  m(x) > sqrt(2) · L · ε, with L the certified ℓ2 → ℓ2 bound of the
  whole network (‖e_y − e_j‖_2 = sqrt(2), so L_yj ≤ sqrt(2) L) — one solve;
  Tsuzuku, Sato, Sugiyama, "Lipschitz-Margin Training", NeurIPS 2018, Prop. 1;
* ℓ2, ``pairwise=True``:   f_y(x) − f_j(x) > L_yj · ε for all j ≠ y, with L_yj certified by
  ``certify(model, output=e_y − e_j)`` (K(K−1)/2 solves; L_yj = L_jy; tighter);
* ℓ∞:  f_y(x) − f_j(x) > L^∞_yj · ε for all j ≠ y, L^∞_yj certified by
  ``certify(model, norm="linf", output=e_y − e_j)`` (LipSDP-NSR Theorems 2–3: |c^T Δf| ≤ ρ ‖Δx‖_∞).
  When this lipsdp has no ℓ∞ formulation, the sound conversion ‖δ‖_2 ≤ sqrt(n) ‖δ‖_∞ is used
  instead (L^∞_yj ≤ sqrt(n) · L_yj; much looser) and ``bounds_from`` says so.

Each point's certified radius r(x) = min_{j≠y} (f_y − f_j)/L_yj (0 when misclassified); the
certified accuracy at ε is the fraction with r(x) > ε (at ε = 0: the clean accuracy).  Logits
are computed in float64 by the exported network (lipsdp IR), the function the certificates are
about.  Only verified certificates are used; an unverified one raises.

Local radii (:func:`certified_radius`): the same margin conditions with the *local* bound of
the ball B(x0, ε) itself (:mod:`lipsdp.local`), which holds for every perturbation inside it:

* ℓ2:  m(x0) > sqrt(2) · L_2(B_2(x0, ε)) · ε;
* ℓ∞:  f_y(x0) − f_j(x0) > L^∞_yj(B_∞(x0, ε)) · ε for every j ≠ y.

Every ε that satisfies its condition is a certified radius (the ball is robust), whether or not
the condition is monotone in ε; bisection between the global radius (always certified, since
L(B) ≤ L_global) and m / (sqrt(2) ‖J(x0)‖) (no local bound can beat the Jacobian at x0) returns
the largest ε it verified.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np

from .errors import CertificateError, FormulationError, LipSDPError

__all__ = ["certified_accuracy", "CertifiedAccuracy", "certified_radii", "certified_radius", "CertifiedRadius",
           "certified_radii_local"]


class CertifiedAccuracy(dict):
    """The result of :func:`certified_accuracy`: a dict with attribute access.

    Keys: ``radius`` (the radii, array), ``accuracy`` (certified accuracy per radius, array),
    ``clean_accuracy``, ``radii_per_point`` (r(x) per sample, 0 when misclassified),
    ``correct`` (bool per sample), ``L`` (K × K matrix of the pairwise bounds used, zero diagonal),
    ``norm``, ``pairwise``, ``bounds_from`` (how L was obtained), ``certificates`` and ``n``.
    ``table()`` gives the columns (radius, certified_accuracy); ``to_frame()`` a pandas
    DataFrame; ``plot(ax)`` the accuracy-vs-radius curve.
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def table(self) -> dict:
        return {"radius": list(map(float, self["radius"])), "certified_accuracy": list(map(float, self["accuracy"]))}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.table())

    def _repr_html_(self) -> str:
        head = f"<tr><th>radius ({self['norm']})</th>" + "".join(f"<td>{r:.4g}</td>" for r in self["radius"]) + "</tr>"
        acc = "<tr><th>certified accuracy</th>" + "".join(f"<td>{100 * a:.1f}%</td>" for a in self["accuracy"]) + "</tr>"
        return f"<table>{head}{acc}</table><small>{self['n']} samples; bounds from {self['bounds_from']}</small>"

    def __repr__(self):
        pairs = ", ".join(f"{r:.3g}: {100 * a:.1f}%" for r, a in zip(self["radius"], self["accuracy"]))
        return f"CertifiedAccuracy({self['norm']}, {{{pairs}}}, n={self['n']}, bounds from {self['bounds_from']})"

    def plot(self, ax=None, label=None, **kw):
        if ax is None:
            import matplotlib.pyplot as plt

            _fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
        ax.step(self["radius"], self["accuracy"], where="post", marker="o", label=label or self["bounds_from"], **kw)
        ax.set_xlabel(f"radius ε ({self['norm']})")
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return ax


def _pair_vector(K: int, i: int, j: int) -> np.ndarray:
    c = np.zeros(K)
    c[i], c[j] = 1.0, -1.0
    return c


def _verified(cert, what: str):
    if not cert.verified:
        raise CertificateError(
            f"the {what} bound {cert.bound:.6g} could not be verified ({cert.message}); certified accuracy needs "
            f"verified bounds — try {_suggest()} or method='layer'"
        )
    return float(cert.bound)


def certified_radii(logits: np.ndarray, y: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample certified radius r = min_{j≠y} (f_y − f_j) / L_yj (0 if misclassified), and correctness.

    ``L`` is the K × K matrix of Lipschitz bounds of the logit differences (L_yj ≥ 0; an entry
    of 0 means the difference is constant, so it never changes sign).
    """
    logits = np.asarray(logits, dtype=float)
    y = np.asarray(y).astype(int).ravel()
    n, K = logits.shape
    fy = logits[np.arange(n), y]
    diff = fy[:, None] - logits  # f_y - f_j
    Ly = np.asarray(L, dtype=float)[y]  # (n, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(Ly > 0, diff / np.where(Ly > 0, Ly, 1.0), np.where(diff > 0, np.inf, -np.inf))
    r[np.arange(n), y] = np.inf
    radius = r.min(axis=1)
    diff[np.arange(n), y] = np.inf
    correct = diff.min(axis=1) > 0
    radius = np.where(correct, np.maximum(radius, 0.0), 0.0)
    return radius, correct


def certified_accuracy(model, X, y, radii, norm: str = "l2", method: str = "neuron", pairwise: bool = False,
                       solver: str = "auto", input_shape=None, **certify_kw) -> CertifiedAccuracy:
    """Certified robust accuracy of ``model`` on (X, y) at each radius in ``radii``.

    A sample counts at radius ε when it is correctly classified and every logit difference
    provably keeps its sign for all ‖δ‖ ≤ ε (module docstring): ℓ2 with ``pairwise=False``
    needs m(x) > sqrt(2) · L · ε (L the certified ℓ2 bound of the whole network); ℓ2 with
    ``pairwise=True`` and ℓ∞ need f_y − f_j > L_yj · ε for all j ≠ y with L_yj certified for the
    scalar output (e_y − e_j)^T f.

    Parameters
    ----------
    model: torch module, :class:`lipsdp.Network`, weight file or weight list (as in ``certify``).
    X: inputs, shape (n, input_dim) (or (n, *input_shape) for a torch module).
    y: integer labels, shape (n,).
    radii: radii ε ≥ 0 (any order; reported sorted).
    norm: ``"l2"`` or ``"linf"``.
    method, solver, **certify_kw: passed to :func:`lipsdp.certify` for each bound.
    pairwise: ℓ2 only — certify each logit difference (K(K−1)/2 solves) instead of one bound.

    Returns a :class:`CertifiedAccuracy` (a dict; see its docstring).
    """
    from .api import as_network, certify

    if norm not in ("l2", "linf"):
        raise FormulationError(f"certified_accuracy: norm must be 'l2' or 'linf', got {norm!r}")
    net = as_network(model, input_shape=input_shape)
    X = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=float)
    X = X.reshape(X.shape[0], -1)
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y).astype(int).ravel()
    if X.shape[1] != net.input_dim:
        raise LipSDPError(f"certified_accuracy: X has {X.shape[1]} features per sample, the network expects {net.input_dim}")
    if X.shape[0] != y.shape[0]:
        raise LipSDPError(f"certified_accuracy: {X.shape[0]} inputs but {y.shape[0]} labels")
    K = net.output_dim
    if K < 2:
        raise LipSDPError("certified_accuracy needs a classifier with at least 2 outputs (logits)")
    if y.size and (y.min() < 0 or y.max() >= K):
        raise LipSDPError(f"certified_accuracy: labels must be in 0..{K - 1}, got {y.min()}..{y.max()}")
    radii = np.sort(np.asarray(radii, dtype=float).ravel())
    if radii.size == 0 or np.any(radii < 0) or not np.all(np.isfinite(radii)):
        raise LipSDPError("certified_accuracy: radii must be a non-empty list of finite values >= 0")
    certify_kw.setdefault("lower", False)

    certs: dict = {}
    L = np.zeros((K, K))
    bounds_from = ""
    use_pairs = pairwise or norm == "linf"
    if norm == "linf":
        try:
            for i, j in combinations(range(K), 2):
                c = certify(net, norm="linf", method=method, solver=solver, output=_pair_vector(K, i, j), **certify_kw)
                L[i, j] = L[j, i] = _verified(c, f"ℓ∞ logit-difference ({i}, {j})")
                certs[(i, j)] = c
            bounds_from = f"ℓ∞ certificates of each logit difference e_i − e_j ({method})"
        except FormulationError as exc:
            warnings.warn(f"no ℓ∞ formulation for this network ({exc}); using the looser sound conversion "
                          "L∞ ≤ sqrt(n)·L2", RuntimeWarning, stacklevel=2)
            norm_scale = math.sqrt(net.input_dim)
            certs.clear()
            use_pairs = pairwise
            bounds_from = "ℓ2 certificates × sqrt(n) (no ℓ∞ formulation available)"
        else:
            norm_scale = None
    if norm == "l2" or norm_scale is not None:
        scale = 1.0 if norm == "l2" else norm_scale
        if use_pairs:
            for i, j in combinations(range(K), 2):
                c = certify(net, norm="l2", method=method, solver=solver, output=_pair_vector(K, i, j), **certify_kw)
                L[i, j] = L[j, i] = scale * _verified(c, f"ℓ2 logit-difference ({i}, {j})")
                certs[(i, j)] = c
            bounds_from = (bounds_from or "") if norm == "linf" else ""
            bounds_from = bounds_from or f"ℓ2 certificates of each logit difference e_i − e_j ({method})"
        else:
            c = certify(net, norm="l2", method=method, solver=solver, **certify_kw)
            Lnet = _verified(c, "ℓ2 network")
            L[:] = scale * math.sqrt(2.0) * Lnet
            np.fill_diagonal(L, 0.0)
            certs["network"] = c
            bounds_from = bounds_from or f"sqrt(2) × the ℓ2 bound of the network ({method})"

    logits = net.forward(X)
    r, correct = certified_radii(logits, y, L)
    acc = np.array([float(np.mean(r > eps)) if eps > 0 else float(np.mean(correct)) for eps in radii])
    return CertifiedAccuracy(
        radius=radii,
        accuracy=acc,
        clean_accuracy=float(np.mean(correct)),
        radii_per_point=r,
        correct=correct,
        L=L,
        norm=norm,
        pairwise=bool(use_pairs),
        bounds_from=bounds_from,
        certificates=certs,
        n=int(y.size),
    )


# ---------------------------------------------------------------------------------------------
# local certified radii
# ---------------------------------------------------------------------------------------------


class CertifiedRadius(float):
    """A certified radius (a float) with ``details``: the evaluations of the bisection."""

    details: dict

    def __new__(cls, value, details):
        obj = super().__new__(cls, value)
        obj.details = details
        return obj


def _pair_bounds_global(net, y, norm, certify_kw):
    """Global bounds: sqrt(2)·L (ℓ2) or L^∞_yj per j (ℓ∞), as a length-K vector (entry y unused)."""
    from .api import certify

    K = net.output_dim
    if norm == "l2":
        return np.full(K, math.sqrt(2.0) * _verified(certify(net, lower=False, **certify_kw), "ℓ2 network"))
    out = np.zeros(K)
    for j in range(K):
        if j != y:
            c = certify(net, norm="linf", output=_pair_vector(K, y, j), lower=False, **certify_kw)
            out[j] = _verified(c, f"ℓ∞ logit-difference ({y}, {j})")
    return out


def _radius_at(net, x0, y, diffs, eps, norm, certify_kw, Lg, linf_sdp=False):
    """(certified?, per-pair local bounds) for the ball of radius eps around x0.

    ℓ∞: pairs that the global bound already certifies at eps are not re-solved (a local bound
    is never larger); the others are tried from the tightest down, stopping at the first failure,
    with the interval bound of :func:`lipsdp.local.interval_lipschitz` and, if ``linf_sdp``,
    the local ℓ∞ SDP when the interval bound is not enough.
    """
    from .api import certify
    from .local import L2Ball, LinfBall, interval_lipschitz, localize

    K = net.output_dim
    region = L2Ball(x0, eps) if norm == "l2" else LinfBall(x0, eps)
    loc = localize(net, region)
    mask = np.arange(K) != y
    if norm == "l2":
        L = math.sqrt(2.0) * _verified(certify(loc, lower=False, **certify_kw), "local ℓ2")
        Ls = np.full(K, L)
        return bool(np.all(diffs[mask] > Ls[mask] * eps)), Ls
    Ls = np.array(Lg, dtype=float)
    need = [j for j in np.argsort(diffs - Lg * eps) if j != y and not diffs[j] > Lg[j] * eps]
    for j in need:
        ib = interval_lipschitz(net, region, _pair_vector(K, y, j), "linf")
        if ib is not None:
            Ls[j] = min(Ls[j], ib)
        if not diffs[j] > Ls[j] * eps and linf_sdp:
            c = certify(loc, norm="linf", output=_pair_vector(K, y, j), lower=False, **certify_kw)
            Ls[j] = min(Ls[j], _verified(c, f"local ℓ∞ logit-difference ({y}, {j})"))
        if not diffs[j] > Ls[j] * eps:
            return False, Ls
    return True, Ls


def certified_radius(model, x0, norm: str = "l2", label=None, iters: int = 10, rel_tol: float = 1e-2,
                     global_bounds=None, input_shape=None, linf_sdp: bool = False, **certify_kw) -> CertifiedRadius:
    """The largest ε found for which B(x0, ε) provably keeps the label (local bounds; module docstring).

    ``label``: the true label (default: the prediction at x0; a misclassified point gets 0).
    ``iters``: bisection steps (each a local certification; ℓ∞: one per other logit).
    ``global_bounds``: the global per-pair bounds (from a previous call's ``details``) to skip
    recomputing them.  ``linf_sdp``: ℓ∞ local bounds also by the SDP when the interval bound of
    :func:`lipsdp.local.interval_lipschitz` is not enough (one ℓ∞ solve per logit pair; slow).  Returns a :class:`CertifiedRadius` (a float) whose ``details`` hold the
    global radius, the evaluations and the local bounds at the returned radius.
    """
    from .api import as_network

    if norm not in ("l2", "linf"):
        raise FormulationError(f"certified_radius: norm must be 'l2' or 'linf', got {norm!r}")
    net = as_network(model, input_shape=input_shape)
    x0 = np.asarray(x0.detach().cpu().numpy() if hasattr(x0, "detach") else x0, dtype=float).ravel()
    if x0.size != net.input_dim:
        raise LipSDPError(f"certified_radius: x0 has {x0.size} entries, the network expects {net.input_dim}")
    K = net.output_dim
    if K < 2:
        raise LipSDPError("certified_radius needs a classifier with at least 2 outputs (logits)")
    f = net.forward(x0)
    pred = int(np.argmax(f))
    y = pred if label is None else int(label)
    diffs = f[y] - f
    Lg = global_bounds if global_bounds is not None else _pair_bounds_global(net, y, norm, certify_kw)
    mask = np.arange(K) != y
    details = {"label": y, "predicted": pred, "margin": float(diffs[mask].min()), "global_bounds": Lg,
               "evaluations": []}
    if np.any(diffs[mask] <= 0):
        details.update(global_radius=0.0, local_bounds=None)
        return CertifiedRadius(0.0, details)
    with np.errstate(divide="ignore"):
        r_global = float(np.min(np.where(Lg[mask] > 0, diffs[mask] / Lg[mask], np.inf)))
    # no local bound is below the Jacobian norm at x0: an upper end for the search
    J = net.jacobian(x0)
    if norm == "l2":
        jac = math.sqrt(2.0) * np.linalg.norm(J, 2)
        hi = float(diffs[mask].min() / jac) if jac > 0 else np.inf
    else:
        g = np.abs(J[y][None, :] - J).sum(axis=1)
        with np.errstate(divide="ignore"):
            hi = float(np.min(np.where(g[mask] > 0, diffs[mask] / g[mask], np.inf)))
    if not np.isfinite(hi):
        hi = max(r_global, 1.0) * 1e3
    lo, best_L = r_global, None
    details["global_radius"] = r_global
    if not np.isfinite(r_global):
        details.update(local_bounds=None)
        return CertifiedRadius(float("inf"), details)
    for _ in range(iters):
        if hi <= lo * (1 + rel_tol):
            break
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        ok, Ls = _radius_at(net, x0, y, diffs, mid, norm, certify_kw, Lg, linf_sdp)
        details["evaluations"].append((mid, ok, float(Ls[mask].max())))
        if ok:
            lo, best_L = mid, Ls
        else:
            hi = mid
    details["local_bounds"] = best_L
    return CertifiedRadius(lo, details)


def certified_radii_local(model, X, y, norm: str = "l2", iters: int = 10, input_shape=None, linf_sdp: bool = False,
                          **certify_kw):
    """Local and global certified radii of each sample: a pandas DataFrame (one row per sample).

    Columns: ``label``, ``predicted``, ``correct``, ``margin``, ``radius_global`` (from the
    global bound, as in :func:`certified_accuracy`), ``radius_local`` (:func:`certified_radius`)
    and ``evaluations`` (local certifications spent).  ``lipsdp.plot.radius_curves(frame)`` draws
    the certified accuracy of both against the radius.
    """
    import pandas as pd

    from .api import as_network

    net = as_network(model, input_shape=input_shape)
    X = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=float).reshape(len(X), -1)
    y = np.asarray(y).astype(int).ravel()
    if X.shape[0] != y.shape[0]:
        raise LipSDPError(f"certified_radii_local: {X.shape[0]} inputs but {y.shape[0]} labels")
    cache: dict = {}
    rows = []
    for i, (x, lab) in enumerate(zip(X, y)):
        if lab not in cache:
            cache[lab] = _pair_bounds_global(net, lab, norm, certify_kw)
        r = certified_radius(net, x, norm=norm, label=lab, iters=iters, global_bounds=cache[lab], linf_sdp=linf_sdp,
                             **certify_kw)
        d = r.details
        rows.append({"label": lab, "predicted": d["predicted"], "correct": d["predicted"] == lab,
                     "margin": d["margin"], "radius_global": d["global_radius"], "radius_local": float(r),
                     "evaluations": len(d["evaluations"])})
    frame = pd.DataFrame(rows)
    frame.attrs["norm"] = norm
    return frame


def _suggest() -> str:
    """Other solvers to try, from the backend registry."""
    from .backends import suggest_solvers

    return suggest_solvers()
