"""Local Lipschitz bounds over an input region: bound propagation → per-neuron slopes → the SDP.

On a region R (a box, an ℓ∞ ball or an ℓ2 ball), every pre-activation z_i(x), x ∈ R, lies in an
interval [l_i, u_i].  For x, y ∈ R the incremental slope of an elementwise φ then satisfies

    (φ(z_i(x)) − φ(z_i(y))) / (z_i(x) − z_i(y))  ∈  [min φ' on [l_i, u_i],  max φ' on [l_i, u_i]]

(mean value theorem), so the slope-restricted QC of math.md §2 holds with these *local* slopes
[α_i, β_i]; a stable ReLU gets the exact slope 1 (active, l_i ≥ 0) or 0 (inactive, u_i ≤ 0).
A GroupSort / MaxMin group whose order is the same on all of R is a fixed permutation there
(a linear map, merged into the neighbouring affine layers); a group whose order may change keeps
its GroupSort QC (math.md §4), which stays sound.  Householder groups with a fixed side of the
hyperplane become the identity or the reflection.  The SDP of the localised network bounds

    ‖f(x) − f(y)‖ ≤ L_R ‖x − y‖     for all x, y ∈ R,

and L_R ≤ the global bound (the local QCs are a subset of the global ones' feasible pairs).

Pre-activation bounds: interval bound propagation (IBP) everywhere, intersected with CROWN-style
backward linear bounds (Zhang et al., NeurIPS 2018; Shi et al., 2022 for the local-Lipschitz
use) for feedforward networks whose activations are slope-restricted, written on the IR in numpy
(auto_LiRPA 0.3, the registry's version, pins torch < 1.13 and does not import under numpy 2,
so it is not used).  The first affine layer is
concretised exactly over the region (‖W_i‖_2 ε for an ℓ2 ball).  Residual blocks are propagated
by IBP (x + body(x)); only their slope-restricted activations are localised.

Local slopes of the smooth functions come from the shape of φ' (unimodal for tanh / sigmoid,
monotone for softplus / ELU, piecewise constant for the ReLU family); SiLU / GELU use a grid
with a rigorous margin (|φ''| ≤ 1 times half the grid spacing).  All slopes are widened by
1e-12 (1 + |·|) and intersected with the activation's global interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FormulationError, InvalidNetworkError
from .ir import Activation, Affine, GroupSort, Householder, Network, Residual, SLOPE_FUNCTIONS, SlopeRestricted

__all__ = ["Box", "LinfBall", "L2Ball", "as_region", "preactivation_bounds", "local_slopes", "localize",
           "certify_local", "interval_lipschitz"]


# ---------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------


def _vec(x, what):
    a = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(a)):
        raise FormulationError(f"{what}: must be finite")
    return a


@dataclass(frozen=True, eq=False)
class Box:
    """The box {x : lo ≤ x ≤ hi} (elementwise; scalars broadcast)."""

    lo: np.ndarray
    hi: np.ndarray

    def bounds(self, n):
        lo = np.broadcast_to(_vec(self.lo, "Box.lo"), (n,)).copy()
        hi = np.broadcast_to(_vec(self.hi, "Box.hi"), (n,)).copy()
        if np.any(lo > hi):
            raise FormulationError("Box: needs lo <= hi in every coordinate")
        return lo, hi

    def concretise(self, A, c, n):
        """Lower and upper bounds of A x + c over the region (rows of A)."""
        lo, hi = self.bounds(n)
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        m = A @ mid + c
        r = np.abs(A) @ rad
        return m - r, m + r

    def sample(self, rng, k, n):
        lo, hi = self.bounds(n)
        return lo + (hi - lo) * rng.random((k, n))

    def project(self, X, n):
        lo, hi = self.bounds(n)
        return np.clip(X, lo, hi)

    def describe(self):
        return f"box [{np.min(self.lo):.4g}, {np.max(self.hi):.4g}]"


@dataclass(frozen=True, eq=False)
class LinfBall(Box):
    """The ℓ∞ ball {x : ‖x − x0‖_∞ ≤ eps}."""

    def __init__(self, x0, eps):
        x0 = _vec(x0, "LinfBall.x0")
        if not eps >= 0:
            raise FormulationError(f"LinfBall: eps must be >= 0, got {eps}")
        object.__setattr__(self, "x0", x0)
        object.__setattr__(self, "eps", float(eps))
        object.__setattr__(self, "lo", x0 - eps)
        object.__setattr__(self, "hi", x0 + eps)

    def describe(self):
        return f"ℓ∞ ball of radius {self.eps:.4g}"


@dataclass(frozen=True, eq=False)
class L2Ball:
    """The ℓ2 ball {x : ‖x − x0‖_2 ≤ eps}."""

    x0: np.ndarray
    eps: float

    def __post_init__(self):
        object.__setattr__(self, "x0", _vec(self.x0, "L2Ball.x0"))
        if not self.eps >= 0:
            raise FormulationError(f"L2Ball: eps must be >= 0, got {self.eps}")
        object.__setattr__(self, "eps", float(self.eps))

    def bounds(self, n):
        self._check(n)
        return self.x0 - self.eps, self.x0 + self.eps

    def _check(self, n):
        if self.x0.size != n:
            raise FormulationError(f"L2Ball: x0 has {self.x0.size} entries, the network has {n} inputs")

    def concretise(self, A, c, n):
        self._check(n)
        m = A @ self.x0 + c
        r = self.eps * np.linalg.norm(A, axis=1)
        return m - r, m + r

    def sample(self, rng, k, n):
        d = rng.standard_normal((k, n))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return self.x0 + self.eps * d * rng.random((k, 1)) ** (1.0 / n)

    def project(self, X, n):
        d = X - self.x0
        nrm = np.linalg.norm(d, axis=1, keepdims=True)
        return self.x0 + d * np.minimum(1.0, self.eps / np.maximum(nrm, 1e-300))

    def describe(self):
        return f"ℓ2 ball of radius {self.eps:.4g}"


def as_region(region, n: int):
    """A region object from a Box / LinfBall / L2Ball or a (lo, hi) pair; checks the input size."""
    if isinstance(region, tuple) and len(region) == 2:
        region = Box(*region)
    if not isinstance(region, (Box, L2Ball)):
        raise FormulationError(
            f"region: expected lipsdp.local.Box(lo, hi), LinfBall(x0, eps), L2Ball(x0, eps) or a (lo, hi) pair, "
            f"got {type(region).__name__}")
    lo, hi = region.bounds(n)
    if lo.size != n:
        raise FormulationError(f"region: has {lo.size} coordinates, the network has {n} inputs")
    return region


def _read_vector(text: str, what: str) -> np.ndarray:
    text = text.strip()
    try:
        if text.endswith(".npy"):
            v = np.load(text, allow_pickle=False)
        elif text.endswith((".txt", ".csv")):
            v = np.loadtxt(text, delimiter="," if text.endswith(".csv") else None)
        else:
            v = np.array([float(t) for t in text.split(",")])
    except (OSError, ValueError) as exc:
        raise FormulationError(f"region {what}: expected a .npy/.txt/.csv file or comma-separated numbers, "
                               f"got {text!r} ({exc})") from None
    return np.asarray(v, dtype=float).ravel()


def parse_region(spec: str):
    """A region from the text the CLI takes: ``l2:EPS:X0``, ``linf:EPS:X0`` or ``box:LO:HI``, where
    X0, LO, HI are .npy / .txt / .csv files or comma-separated numbers (a single number for LO or
    HI means every coordinate)."""
    parts = str(spec).split(":")
    kind = parts[0].strip().lower() if parts else ""
    if kind in ("l2", "linf") and len(parts) == 3:
        try:
            eps = float(parts[1])
        except ValueError:
            raise FormulationError(f"region {spec!r}: the radius must be a number, got {parts[1]!r}") from None
        x0 = _read_vector(parts[2], "center")
        return L2Ball(x0, eps) if kind == "l2" else LinfBall(x0, eps)
    if kind == "box" and len(parts) == 3:
        lo, hi = _read_vector(parts[1], "lower corner"), _read_vector(parts[2], "upper corner")
        return Box(lo if lo.size > 1 else float(lo[0]), hi if hi.size > 1 else float(hi[0]))
    raise FormulationError(f"region {spec!r}: expected l2:EPS:X0, linf:EPS:X0 or box:LO:HI "
                           "(X0, LO, HI: a .npy/.txt/.csv file or comma-separated numbers)")


# ---------------------------------------------------------------------------------------------
# local slopes of the elementwise functions on an interval
# ---------------------------------------------------------------------------------------------

_PAD = 1e-12


def _unimodal_at_zero(d):
    """φ' with its maximum at 0 and decreasing in |z| (tanh, sigmoid)."""
    def slopes(l, u, **p):
        near = np.clip(0.0, l, u)
        far = np.where(np.abs(l) > np.abs(u), l, u)
        return d(far, **p), d(near, **p)
    return slopes


def _increasing(d):
    def slopes(l, u, **p):
        return d(l, **p), d(u, **p)
    return slopes


def _piecewise(d, kinks):
    """φ' piecewise constant with jumps at ``kinks(**p)``: the values on the pieces [l, u] meets
    (one-sided values at the end points are included, so the range is conservative there)."""
    def slopes(l, u, **p):
        vals = [d(l, **p), d(u, **p)]
        for k in kinks(**p):
            inside = (l < k) & (k < u)
            vals.append(np.where(inside, d(np.full_like(l, k) - 1e-9 * (1 + abs(k)), **p), vals[0]))
            vals.append(np.where(inside, d(np.full_like(l, k) + 1e-9 * (1 + abs(k)), **p), vals[0]))
        V = np.vstack(vals)
        return V.min(axis=0), V.max(axis=0)
    return slopes


def _grid(d, bound2=1.0, points=2001):
    """φ' extremes on [l, u] from a grid, widened by max|φ''| · spacing / 2 (rigorous)."""
    def slopes(l, u, **p):
        t = np.linspace(0.0, 1.0, points)
        Z = l[:, None] + (u - l)[:, None] * t[None, :]
        D = d(Z, **p)
        pad = bound2 * (u - l) / (points - 1) / 2
        return D.min(axis=1) - pad, D.max(axis=1) + pad
    return slopes


def _d(fn):
    return SLOPE_FUNCTIONS[fn][1]


#: fn name -> slopes(l, u, **params) -> (min φ', max φ') over [l_i, u_i] (vectorised)
LOCAL_SLOPES = {
    "relu": _piecewise(_d("relu"), lambda: [0.0]),
    "leaky_relu": _piecewise(_d("leaky_relu"), lambda negative_slope=0.01: [0.0]),
    "hardtanh": _piecewise(_d("hardtanh"), lambda min_val=-1.0, max_val=1.0: [min_val, max_val]),
    "tanh": _unimodal_at_zero(_d("tanh")),
    "sigmoid": _unimodal_at_zero(_d("sigmoid")),
    "softplus": _increasing(_d("softplus")),
    "identity": lambda l, u: (np.ones_like(l), np.ones_like(l)),
    "silu": _grid(_d("silu")),
    "gelu": _grid(_d("gelu")),
}


def _elu_slopes(l, u, alpha=1.0):
    if 0 <= alpha <= 1:  # φ' = α e^z (z ≤ 0), 1 (z > 0): nondecreasing
        return _d("elu")(l, alpha=alpha), _d("elu")(u, alpha=alpha)
    return _grid(_d("elu"), bound2=abs(alpha))(l, u, alpha=alpha)


LOCAL_SLOPES["elu"] = _elu_slopes


def local_slopes(act: SlopeRestricted, l, u):
    """Per-neuron slope bounds [α_i, β_i] of ``act`` for pre-activations in [l_i, u_i] (sound)."""
    fn = LOCAL_SLOPES.get(act.fn)
    if fn is None:
        return act.alpha.copy(), act.beta.copy()
    a, b = fn(np.asarray(l, float), np.asarray(u, float), **act.params)
    a = np.asarray(a, float) - _PAD * (1 + np.abs(a))
    b = np.asarray(b, float) + _PAD * (1 + np.abs(b))
    if act.fn in ("relu", "leaky_relu"):  # piecewise constant: stable neurons get the exact slope
        ns = act.params.get("negative_slope", 0.01) if act.fn == "leaky_relu" else 0.0
        a = np.where(np.asarray(l) >= 0, 1.0, np.where(np.asarray(u) <= 0, ns, a))
        b = np.where(np.asarray(l) >= 0, 1.0, np.where(np.asarray(u) <= 0, ns, b))
        a, b = np.minimum(a, b), np.maximum(a, b)
    a = np.clip(a, act.alpha, act.beta)
    b = np.clip(b, act.alpha, act.beta)
    return a, np.maximum(a, b)


# ---------------------------------------------------------------------------------------------
# bound propagation
# ---------------------------------------------------------------------------------------------


def _interval_affine(W, b, lo, hi):
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    m = W @ mid + (0 if b is None else b)
    r = np.abs(W) @ rad
    return m - r, m + r


def _act_interval(act: Activation, lo, hi):
    """Interval of act(z) for z in [lo, hi] (sound for monotone φ; generic via slopes otherwise)."""
    if isinstance(act, SlopeRestricted):
        f = SLOPE_FUNCTIONS[act.fn][0]
        if act.fn in ("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "hardtanh", "identity") or (
            act.fn == "elu" and act.params.get("alpha", 1.0) >= 0
        ):  # monotone nondecreasing
            a, b = f(lo, **act.params), f(hi, **act.params)
        else:  # SiLU / GELU: φ(l) + [min slope·(z−l)] ... via the slope interval on [l, u]
            al, be = local_slopes(act, lo, hi)
            fl = f(lo, **act.params)
            w = hi - lo
            a = fl + np.minimum(al * w, 0.0)
            b = fl + np.maximum(be * w, 0.0)
        pad = _PAD * (1 + np.abs(a) + np.abs(b))
        return a - pad, b + pad
    if isinstance(act, GroupSort):  # each output lies between the group's min and max
        g = act.group_size
        # the k-th largest lies in [k-th largest of lo, k-th largest of hi]
        slo = -np.sort(-lo.reshape(-1, g), axis=1).ravel()
        shi = -np.sort(-hi.reshape(-1, g), axis=1).ravel()
        return slo, shi
    if isinstance(act, Householder):  # output has the same norm per group: |φ(z)|_i ≤ ‖z_group‖_2
        g = act.group_size
        r = np.sqrt(np.sum(np.maximum(lo ** 2, hi ** 2).reshape(-1, g), axis=1))
        r = np.repeat(r, g)
        return -r, r
    raise InvalidNetworkError(f"local bounds: unsupported activation {type(act).__name__}")


def _relaxation(act: SlopeRestricted, l, u, al, be):
    """Linear bounds aL z + bL ≤ φ(z) ≤ aU z + bU on [l, u] (per neuron)."""
    f = SLOPE_FUNCTIONS[act.fn][0]
    if act.fn == "relu":
        unstable = (l < 0) & (u > 0)
        s = np.where(unstable, u / np.where(unstable, u - l, 1.0), np.where(l >= 0, 1.0, 0.0))
        aU, bU = s, np.where(unstable, -s * l, 0.0)
        aL = np.where(unstable, (u >= -l).astype(float), s)
        bL = np.zeros_like(l)
        return aL, bL, aU, bU
    fl, fu = f(l, **act.params), f(u, **act.params)
    mid = (l + u) / 2
    # lower: max of φ(l) + α(z − l) and φ(u) − β(u − z) (choose the larger at the midpoint)
    L1, L2 = fl + al * (mid - l), fu - be * (u - mid)
    aL = np.where(L1 >= L2, al, be)
    bL = np.where(L1 >= L2, fl - al * l, fu - be * u)
    U1, U2 = fl + be * (mid - l), fu - al * (u - mid)
    aU = np.where(U1 <= U2, be, al)
    bU = np.where(U1 <= U2, fl - be * l, fu - al * u)
    pad = _PAD * (1 + np.abs(fl) + np.abs(fu) + np.abs(l) + np.abs(u))
    return aL, bL - pad, aU, bU + pad


def preactivation_bounds(network: Network, region, crown: bool = True):
    """[l, u] of every activation's pre-activation over ``region``, in layer order.

    IBP everywhere; for feedforward networks with slope-restricted activations, intersected with
    CROWN backward linear bounds.  Returns a list of (lo, hi) (residual blocks: the activation
    inside each body, in order).
    """
    n = network.input_dim
    region = as_region(region, n)
    layers = network.layers
    use_crown = crown and network.is_feedforward and all(isinstance(a, SlopeRestricted) for a in network.activations)
    out = []
    lo, hi = region.bounds(n)
    first = True
    # CROWN state: the affine maps and relaxations seen so far
    affs, rels = [], []
    for layer in layers:
        if isinstance(layer, Affine):
            if first:
                lo, hi = region.concretise(layer.weight, 0 if layer.bias is None else layer.bias, n)
                first = False
            else:
                lo, hi = _interval_affine(layer.weight, layer.bias, lo, hi)
            affs.append(layer)
            if use_crown and len(affs) > 1:
                cl, cu = _crown(affs, rels, region, n)
                lo, hi = np.maximum(lo, cl), np.minimum(hi, cu)
                hi = np.maximum(hi, lo)
        elif isinstance(layer, Residual):
            body_lo, body_hi = lo, hi
            for inner in layer.body:
                if isinstance(inner, Affine):
                    body_lo, body_hi = _interval_affine(inner.weight, inner.bias, body_lo, body_hi)
                else:
                    out.append((body_lo, body_hi))
                    body_lo, body_hi = _act_interval(inner, body_lo, body_hi)
            lo, hi = lo + body_lo, hi + body_hi
            first = False
        else:
            out.append((lo, hi))
            if use_crown:
                al, be = local_slopes(layer, lo, hi)
                rels.append(_relaxation(layer, lo, hi, al, be))
            lo, hi = _act_interval(layer, lo, hi)
            first = False
    return out


def _crown(affs, rels, region, n):
    """CROWN bounds of the output of the last affine map in ``affs`` (relaxations ``rels``)."""
    last = affs[-1]
    bias = np.zeros(last.out_dim) if last.bias is None else last.bias.copy()
    LamU, LamL = last.weight.copy(), last.weight.copy()
    cU, cL = bias.copy(), bias.copy()
    for k in range(len(rels) - 1, -1, -1):
        aL, bL, aU, bU = rels[k]
        Pu, Nu = np.maximum(LamU, 0), np.minimum(LamU, 0)
        cU = cU + Pu @ bU + Nu @ bL
        LamU = Pu * aU + Nu * aL
        Pl, Nl = np.maximum(LamL, 0), np.minimum(LamL, 0)
        cL = cL + Pl @ bL + Nl @ bU
        LamL = Pl * aL + Nl * aU
        A = affs[k]
        b = np.zeros(A.out_dim) if A.bias is None else A.bias
        cU, cL = cU + LamU @ b, cL + LamL @ b
        LamU, LamL = LamU @ A.weight, LamL @ A.weight
    _, up = region.concretise(LamU, cU, n)
    low, _ = region.concretise(LamL, cL, n)
    return low, up


# ---------------------------------------------------------------------------------------------
# localisation
# ---------------------------------------------------------------------------------------------


def _local_activation(act, lo, hi):
    """A list of layers replacing ``act`` on the region (an activation, or one fixed linear map)."""
    if isinstance(act, SlopeRestricted):
        al, be = local_slopes(act, lo, hi)
        return [SlopeRestricted(act.fn, al, be, dict(act.params), act.name)]
    if isinstance(act, GroupSort):
        g = act.group_size
        L, U = lo.reshape(-1, g), hi.reshape(-1, g)
        order = np.argsort(-(L + U), axis=1, kind="stable")
        Ls = np.take_along_axis(L, order, axis=1)
        Us = np.take_along_axis(U, order, axis=1)
        fixed = np.all(Ls[:, :-1] >= Us[:, 1:], axis=1)  # each element beats the next on all of R
        if np.all(fixed):
            P = np.zeros((act.size, act.size))
            for i, row in enumerate(order):
                P[i * g + np.arange(g), i * g + row] = 1.0
            return [Affine(P, None, f"{act.name or act.describe()} (fixed order on the region)")]
        return [act]
    if isinstance(act, Householder):
        g = act.group_size
        c = (lo + hi) / 2
        r = (hi - lo) / 2
        V = act.vectors
        mid = np.einsum("Gi,Gi->G", c.reshape(-1, g), V)
        rad = np.einsum("Gi,Gi->G", r.reshape(-1, g), np.abs(V))
        if np.all((mid - rad > 0) | (mid + rad <= 0)):
            blocks = [np.eye(g) if m - s > 0 else np.eye(g) - 2 * np.outer(v, v) for m, s, v in zip(mid, rad, V)]
            from scipy.linalg import block_diag

            return [Affine(block_diag(*blocks), None, f"{act.name or 'householder'} (fixed side on the region)")]
        return [act]
    return [act]


def _prune_constant(layers, consts):
    """Drop neurons with slope interval [0, 0] (constant on the region) from top-level
    SlopeRestricted layers, folding their constant output into the next affine bias."""
    out = list(layers)
    for k in range(1, len(out) - 1):
        act = out[k]
        if not (isinstance(act, SlopeRestricted) and isinstance(out[k - 1], Affine) and isinstance(out[k + 1], Affine)):
            continue
        dead = (act.alpha == 0) & (act.beta == 0)
        if not dead.any() or dead.all():
            continue
        prev, nxt = out[k - 1], out[k + 1]
        keep = ~dead
        const = consts[id(act)][dead]
        bias = (np.zeros(nxt.out_dim) if nxt.bias is None else nxt.bias) + nxt.weight[:, dead] @ const
        out[k - 1] = Affine(prev.weight[keep], None if prev.bias is None else prev.bias[keep], prev.name)
        out[k] = SlopeRestricted(act.fn, act.alpha[keep], act.beta[keep], dict(act.params), act.name)
        out[k + 1] = Affine(nxt.weight[:, keep], bias, nxt.name)
    return out


def localize(network, region, crown: bool = True, prune: bool = True) -> Network:
    """The network with the activations' slopes restricted to ``region`` (module docstring).

    Same function on the region; its certified Lipschitz bound is a bound for pairs of inputs
    in the region.  ``region``: :class:`Box`, :class:`LinfBall`, :class:`L2Ball` or (lo, hi).
    ``prune``: neurons whose slope interval is [0, 0] (stably inactive ReLUs) output a constant
    on the region; they are removed and their value folded into the next bias (same function,
    a smaller and better-posed SDP: their multipliers would have no finite optimum).
    """
    from .api import as_network

    net = as_network(network)
    bounds = iter(preactivation_bounds(net, region, crown=crown))
    layers, consts = [], {}
    for layer in net.layers:
        if isinstance(layer, Affine):
            layers.append(layer)
        elif isinstance(layer, Residual):
            body = []
            for inner in layer.body:
                if isinstance(inner, Affine):
                    body.append(inner)
                else:
                    lo, hi = next(bounds)
                    body.append(_local_activation(inner, lo, hi)[0] if isinstance(inner, SlopeRestricted) else inner)
            layers.append(Residual(tuple(body), layer.name))
        else:
            lo, hi = next(bounds)
            new = _local_activation(layer, lo, hi)
            if isinstance(new[0], SlopeRestricted):  # the value of [0, 0]-slope neurons on the region
                consts[id(new[0])] = layer.forward((lo + hi) / 2)
            layers.extend(new)
    if prune:
        layers = _prune_constant(layers, consts)
    name = f"{net.name} (local)" if net.name else "local"
    return Network(layers, name)


def interval_lipschitz(network, region, output, norm: str = "linf") -> float | None:
    """A cheap local bound for the scalar output c^T f on ``region`` by interval arithmetic.

    For x, y in the region, c^T (f(x) − f(y)) = c^T W_l D_l ⋯ D_1 W_0 (x − y) with D_k the
    diagonal of each neuron's chord slope, which lies in its local interval [α_i, β_i]; the
    interval product g ∈ [g_lo, g_hi] ⊇ {W_0^T D_1 ⋯ W_l^T c} gives
    |c^T Δf| ≤ ‖max(|g_lo|, |g_hi|)‖_q ‖Δx‖_p  (ℓ∞ input: q = 1; ℓ2 input: q = 2).
    Looser than the SDP, but a few matrix-vector products.  None when a layer is not
    slope-restricted after localisation (GroupSort groups whose order may change) or the
    network has residual blocks.
    """
    from .api import as_network

    net = as_network(network)
    loc = localize(net, region)
    if not loc.is_feedforward or not all(isinstance(a, SlopeRestricted) for a in loc.activations):
        return None
    c = np.asarray(output, float).ravel() if not isinstance(output, (int, np.integer)) else np.eye(net.output_dim)[output]
    affs = loc.affines
    acts = loc.activations
    glo = ghi = affs[-1].weight.T @ c
    for k in range(len(acts) - 1, -1, -1):
        a, b = acts[k].alpha, acts[k].beta
        cand = np.stack([a * glo, a * ghi, b * glo, b * ghi])
        qlo, qhi = cand.min(axis=0), cand.max(axis=0)
        glo, ghi = _interval_affine(affs[k].weight.T, None, qlo, qhi)
    mag = np.maximum(np.abs(glo), np.abs(ghi))
    val = float(mag.sum() if norm == "linf" else np.linalg.norm(mag))
    return val * (1 + 1e-12) + 1e-300


def local_stats(network, region, crown: bool = True) -> dict:
    """Counts of stable / unstable neurons over the region (a quick diagnostic)."""
    from .api import as_network

    net = as_network(network)
    total = stable = 0
    for (lo, hi) in preactivation_bounds(net, region, crown=crown):
        total += lo.size
        stable += int(np.sum((lo >= 0) | (hi <= 0)))
    return {"neurons": total, "stable": stable}


def certify_local(model, region, **certify_kwargs):
    """``lipsdp.certify(model, region=region, ...)``: a Lipschitz bound valid on the region (the
    :class:`~lipsdp.formulations.local.Local` formulation; its certificate records the region and
    takes its lower bound from pairs inside it)."""
    from .api import certify

    return certify(model, region=region, **certify_kwargs)


def region_lower_bound(network, region, norm: str = "l2", output=None, samples: int = 64, seed: int = 0,
                       steps: int = 30) -> float:
    """Largest difference quotient found with both inputs inside ``region`` (a true local lower bound)."""
    from .api import as_network
    from .ascent import jacobian_ascent

    net = as_network(network)
    n = net.input_dim
    region = as_region(region, n)
    rng = np.random.default_rng(seed)
    K = net.output_dim
    if output is None:
        sels = None if norm == "l2" else [np.eye(K)[k] for k in range(K)]
    elif isinstance(output, (int, np.integer)):
        sels = [np.eye(K)[int(output)]]
    else:
        sels = [np.asarray(output, float).ravel()]
    X0 = region.sample(rng, samples, n)
    sel = None if sels is None else np.vstack([sels[i % len(sels)] for i in range(samples)])
    lo, hi = region.bounds(n)
    width = float(np.max(hi - lo)) if isinstance(region, Box) else 2 * region.eps
    X, V, _ = jacobian_ascent(net, norm, sel, X0, steps=steps, seed=seed, scale=0.5 * width,
                              project=lambda Z: region.project(Z, n))
    best = 0.0
    for i in range(samples):
        for f in (1e-2, 1e-3, 1e-4):  # smaller steps: rounding noise ~ eps |f| / h
            h = f * max(width, 1e-12)
            x1 = region.project(X[i][None, :] - 0.5 * h * V[i], n)[0]
            x2 = region.project(X[i][None, :] + 0.5 * h * V[i], n)[0]
            dx = x2 - x1
            dn = np.linalg.norm(dx) if norm == "l2" else np.max(np.abs(dx))
            if dn <= 0:
                continue
            dy = net.forward(x2) - net.forward(x1)
            if sel is None:
                q = np.linalg.norm(dy) / dn
            else:
                q = abs(sel[i] @ dy) / dn
            best = max(best, float(q))
    return best
