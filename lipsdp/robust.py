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
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np

from .errors import CertificateError, FormulationError, LipSDPError

__all__ = ["certified_accuracy", "CertifiedAccuracy", "certified_radii"]


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
            "verified bounds — try solver='cvxopt' or method='layer'"
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
