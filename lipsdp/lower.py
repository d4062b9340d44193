"""Certified *lower* bounds on the Lipschitz constant: the largest difference quotient found.

For any inputs x ≠ x' the true Lipschitz constant L satisfies

    L  ≥  ||f(x') − f(x)||_out / ||x' − x||_in ,

so every difference quotient evaluated from two forward passes is a lower bound (up to
floating-point rounding of those two passes, ~1e-12 relative with the step sizes used here).
:func:`lower_bound` searches for a large one:

1. random inputs (standard Gaussians at scales 1, 10 and 0.01, i.e. also near the origin);
2. the Jacobian at each input (its top right singular vector for ℓ2, ``sign(c^T J)`` for ℓ∞);
3. a few steps of local ascent from the best points: moves along the top direction, random
   perturbations and, for ReLU / leaky-ReLU / MaxMin first hidden layers, a move to the
   activation pattern of the first hidden layer that best aligns with the current top singular
   pair (an alternating maximisation; the target pre-activation is reached through the
   pseudo-inverse of the first weight matrix);
4. a real finite difference ``(x, x ± h d)`` at several h along each best direction.

Only step 4 produces the reported value: a Jacobian norm alone is not certified at a kink.
The result is a sanity floor for SDP upper bounds: a certified upper bound below it is a bug.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import numpy as np

from .options import parse_norm
from .errors import FormulationError, InvalidNetworkError
from .ir import SLOPE_FUNCTIONS, Affine, GroupSort, Network, Residual, SlopeRestricted

__all__ = ["LowerBound", "lower_bound"]

_H_FACTORS = (1e-1, 1e-2, 1e-3, 1e-4)  # smaller h: more rounding noise (~eps |f| / h)
_SCALES = (1.0, 10.0, 1e-2)
#: first layers with more (dense) entries skip the pattern move (its pseudo-inverse is dense)
_PATTERN_MAX_ENTRIES = 4e6
#: weight nonzeros above which the local ascent's default budget shrinks (lower_bound's ``steps``)
_LOCAL_NNZ = 2e7
_PATTERN_STARTS = 3  # best candidates the pattern climb starts from


@dataclass(frozen=True, eq=False)
class LowerBound:
    """A certified lower bound ``value`` ≤ Lip(f), witnessed by the inputs ``x`` and ``x + step·direction``.

    ``value = ||C (f(x + step·direction) − f(x))||_2 / ||step·direction||_in`` with ``C`` the
    output selection (identity, one logit or a vector ``c``).  ``float(lb)`` gives ``value``.
    ``kind`` is ``"quotient"`` (the largest quotient found) or ``"exact"`` (the quotient meets
    the MILP optimum of :mod:`lipsdp.milp`: it *is* the Lipschitz constant, up to HiGHS's
    tolerances); ``upper`` is that MILP optimum when ``kind == "exact"``.
    """

    value: float
    x: np.ndarray
    direction: np.ndarray
    step: float
    method: str
    norm: str
    output: object = None
    kind: str = "quotient"
    upper: float | None = None

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return f"LowerBound(value={self.value:.6g}, kind={self.kind!r}, norm={self.norm!r}, output={self.output!r})"


# ---------------------------------------------------------------------------------------------
# search oracle on the IR
# ---------------------------------------------------------------------------------------------


class _NetworkOracle:
    """Forward passes and Jacobians of a Network (numpy), plus what the pattern move needs."""

    def __init__(self, net: Network):
        self.net = net
        self.dim = net.input_dim
        self.out_dim = net.output_dim
        self.pattern = None
        layers = net.layers
        if len(layers) >= 3 and isinstance(layers[0], Affine):
            act = layers[1]
            if isinstance(act, SlopeRestricted) and act.fn in ("relu", "leaky_relu") and act.params.get(
                "negative_slope", 0.01 if act.fn == "leaky_relu" else 0.0
            ) <= 1.0:
                self.pattern = "relu"
            elif isinstance(act, GroupSort) and act.group_size == 2:
                self.pattern = "maxmin"
        if self.pattern and np.prod(layers[0].op.shape, dtype=float) > _PATTERN_MAX_ENTRIES:
            self.pattern = None  # a pseudo-inverse of this first layer would cost more than the search
        if self.pattern:
            W0 = layers[0].weight
            self.W0 = W0
            self.pinv = np.linalg.pinv(W0)

    def forward(self, X):
        return self.net.forward(X)

    def jacobian(self, x):
        """(J, R, z0): J = ∂f/∂x, R = ∂f/∂(output of the first activation), z0 its pre-activation.

        Pulled back from the output (out_dim rows) through each layer's vector-Jacobian product,
        so a convolution is applied as an operator and no layer Jacobian is formed."""
        y = x
        pulls = []
        z0 = None
        for i, layer in enumerate(self.net.layers):
            pulls.append(_pullback(layer, y))
            y = layer.forward(y)
            if i == 0:
                z0 = y
        M = np.eye(self.out_dim)
        R = None
        for i in range(len(pulls) - 1, -1, -1):
            if i == 1:
                R = M
            M = pulls[i](M)
        return M, R, z0


def _pullback(layer, y):
    """M ↦ M · (∂ layer / ∂ input at y), for M with one row per output selection."""
    if isinstance(layer, Affine):
        op = layer.op
        return lambda M: np.asarray(op.rmatvec(M.T)).T
    if isinstance(layer, SlopeRestricted) and type(layer).jacobian is SlopeRestricted.jacobian:
        d = SLOPE_FUNCTIONS[layer.fn][1](y, **layer.params)
        return lambda M: M * d[None, :]
    if isinstance(layer, GroupSort) and type(layer).jacobian is GroupSort.jacobian:  # out[:, idx[k]] = M[:, k]
        g = layer.group_size
        order = np.argsort(-y.reshape(-1, g), axis=1, kind="stable")
        idx = (order + np.arange(0, y.size, g)[:, None]).ravel()

        def permute(M):
            out = np.empty_like(M)
            out[:, idx] = M
            return out

        return permute
    if isinstance(layer, Residual):
        pulls, yb = [], y
        for inner in layer.body:
            pulls.append(_pullback(inner, yb))
            yb = inner.forward(yb)

        def residual(M):
            Mb = M
            for pull in reversed(pulls):
                Mb = pull(Mb)
            return M + Mb

        return residual
    J = layer.jacobian(y)  # Householder, user activations: their own (size × size) Jacobian
    return lambda M: M @ J


class _TorchOracle:
    """Autograd fallback for torch modules that the IR exporter cannot handle (no pattern move)."""

    pattern = None

    def __init__(self, module, input_shape):
        import torch

        self.torch = torch
        self.module = module
        self.shape = tuple(input_shape)
        self.dim = int(np.prod(self.shape))
        with torch.no_grad():
            self.out_dim = int(np.prod(module(torch.zeros((1,) + self.shape, dtype=torch.float64)).shape[1:]))

    def forward(self, X):
        torch = self.torch
        X = np.atleast_2d(X)
        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(X)).reshape((-1,) + self.shape))
        return out.reshape(X.shape[0], -1).numpy()

    def jacobian(self, x):
        torch = self.torch

        def f(v):
            return self.module(v.reshape((1,) + self.shape)).reshape(-1)

        J = torch.autograd.functional.jacobian(f, torch.from_numpy(np.array(x, dtype=np.float64)))
        return J.detach().numpy(), None, None


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _objectives(out_dim: int, norm: str, output):
    """List of output selections C (rows × out_dim); the bound is the max over them."""
    if output is None:
        if norm == "l2":
            return [np.eye(out_dim)]
        return [np.eye(out_dim)[i:i + 1] for i in range(out_dim)]
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        if not -out_dim <= output < out_dim:
            raise FormulationError(f"output={output}: the network has {out_dim} outputs (valid 0..{out_dim - 1})")
        return [np.eye(out_dim)[[int(output) % out_dim]]]
    c = np.asarray(output, dtype=np.float64).ravel()
    if c.shape != (out_dim,) or not np.all(np.isfinite(c)):
        raise FormulationError(
            f"output: expected an int logit index or a finite vector c of length {out_dim}, got shape {c.shape}"
        )
    return [c[None, :]]


def _score(J, R, objectives, norm):
    """Best (score, objective index, u, v) over the objectives at one point."""
    best = (-1.0, 0, None, None)
    for k, C in enumerate(objectives):
        CJ = C @ J
        if norm == "l2":
            U, S, Vt = np.linalg.svd(CJ, full_matrices=False)
            s, u, v = S[0], U[:, 0], Vt[0]
        else:
            g = CJ[0]
            s, u, v = np.abs(g).sum(), np.ones(1), np.where(g >= 0, 1.0, -1.0)
        if s > best[0]:
            best = (float(s), k, u, v)
    return best


def _pattern_move(oracle, x, R, z0, C, u, v):
    """Move x so the first hidden layer takes the pattern that best aligns with (u, v)."""
    w = (C @ R).T @ u          # sensitivity of the output direction to each first-layer neuron
    p = oracle.W0 @ v           # change of each pre-activation along v
    gain = w * p
    s = float(np.mean(np.abs(z0))) + 1e-12
    if oracle.pattern == "relu":
        want = np.where(gain > 0, 1.0, np.where(gain < 0, -1.0, np.sign(z0) + (z0 == 0)))
        t = s * want
    else:  # maxmin on adjacent pairs
        za, zb = z0[0::2], z0[1::2]
        pa, pb = p[0::2], p[1::2]
        wa, wb = w[0::2], w[1::2]
        keep = (wa - wb) * (pa - pb)
        sigma = np.where(keep > 0, 1.0, np.where(keep < 0, -1.0, np.sign(za - zb) + (za == zb)))
        m = 0.5 * (za + zb)
        t = np.empty_like(z0)
        t[0::2], t[1::2] = m + s * sigma, m - s * sigma
    return x + oracle.pinv @ (t - z0)


def _as_search_problem(model, input_shape):
    """(oracle, evaluate-forward, input shape, description) for a Network, a weight-file path or a torch module."""
    if isinstance(model, Network):
        return _NetworkOracle(model), None, None, "network"
    if isinstance(model, (str, os.PathLike)):
        from .io import load

        return _NetworkOracle(load(model)), None, None, f"file {os.fspath(model)}"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not isinstance(model, torch.nn.Module):
        raise InvalidNetworkError(
            f"lower_bound: expected a lipsdp Network, a torch nn.Module or a weight-file path, got {type(model).__name__}"
        )
    import copy

    module = copy.deepcopy(model).double().eval()
    if input_shape is None:
        first = next((m for m in module.modules() if hasattr(m, "in_features")), None)
        if first is None:
            raise InvalidNetworkError(
                "lower_bound: cannot infer the input shape of this torch module; pass input_shape=(C, H, W) or (n,)"
            )
        input_shape = (int(first.in_features),)
    input_shape = tuple(int(s) for s in np.atleast_1d(input_shape))
    torch_oracle = _TorchOracle(module, input_shape)
    oracle = torch_oracle
    try:  # search on the IR (enables the pattern move); evaluate on the module itself
        from .models.export import from_torch

        kwargs = {"input_shape": input_shape} if "input_shape" in inspect.signature(from_torch).parameters else {}
        net = from_torch(model, **kwargs)
        if net.input_dim == torch_oracle.dim and net.output_dim == torch_oracle.out_dim:
            oracle = _NetworkOracle(net)
    except Exception:  # exporter missing or unsupported layer: plain autograd search
        oracle = torch_oracle
    return oracle, torch_oracle.forward, input_shape, "torch module (quotients from its own forward passes)"


def _dense_size(net) -> float:
    """Σ rows × columns of the affine layers (a cost scale; structured operators are not densified)."""
    return float(sum(np.prod(a.op.shape, dtype=float) for a in net.affines))


def _local_plan(oracle, steps, starts) -> tuple[int, int]:
    """Local-ascent (steps, starts): the given ones, else 20 and 8, scaled down in proportion on
    networks whose affine layers hold more than :data:`_LOCAL_NNZ` nonzeros (large CNNs)."""
    net = getattr(oracle, "net", None)
    scale = 1.0
    if net is not None:
        scale = min(1.0, _LOCAL_NNZ / max(1.0, float(sum(a.op.nnz for a in net.affines))))
    return (int(steps) if steps is not None else max(3, round(20 * scale)),
            int(starts) if starts is not None else max(2, round(8 * scale)))


def _default_samples(oracle) -> int:
    """16-256 random inputs: fewer for bigger networks (about 0.3 s in all)."""
    net = getattr(oracle, "net", None)
    if net is None:
        return 32
    n_params = _dense_size(net)
    return int(np.clip(2e6 / n_params, 16, 256))


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------


def _ascent_plan(oracle, norm, objectives, output, n_starts, steps):
    """Starts and selections for :func:`lipsdp.ascent.jacobian_ascent` (None when it does not apply)."""
    net = getattr(oracle, "net", None)
    if net is None or steps == 0:
        return None
    n_params = _dense_size(net)
    # about 4e7 (points × steps × weights): ~1 s for 784-100×5-10 on one core, seconds for the largest nets
    B = n_starts if n_starts is not None else int(np.clip(5e5 / n_params, 4, 16))
    S = steps if steps is not None else int(np.clip(4e7 / (n_params * B), 10, 80))
    if norm == "l2" and output is None:
        sel = None
    else:  # one scalar output per start (ℓ∞ without output: the logits in turn)
        sel = np.vstack([objectives[i % len(objectives)][0] for i in range(B)])
    return B, S, sel


def _jac_norm(oracle, x, objectives):
    J = oracle.jacobian(x)[0]
    return max(np.linalg.norm(C @ J, 2) for C in objectives)


def _milp_candidates(oracle, norm, objectives, exact, time_budget):
    """ℓ∞ MILP results per objective for small bias-free ReLU networks (lipsdp.milp), or []."""
    net = getattr(oracle, "net", None)
    if net is None or norm != "linf" or exact is False:
        return []
    from .milp import MAX_NEURONS, AUTO_NEURONS, exact_lipschitz, milp_supported

    if milp_supported(net) is not None or any(a.bias is not None and np.any(a.bias) for a in net.affines):
        if exact:
            raise FormulationError("exact=True: the MILP needs a feedforward ReLU network without biases")
        return []
    hidden = sum(a.size for a in net.activations)
    if hidden > (MAX_NEURONS if exact else AUTO_NEURONS):
        return []
    try:
        import highspy  # noqa: F401
    except ImportError:
        if exact:
            raise FormulationError("exact=True needs highspy: pip install 'lipsdp[milp]'") from None
        return []
    return [exact_lipschitz(net, "linf", output=C[0], time_limit=time_budget / len(objectives)) for C in objectives]


def lower_bound(
    model_or_network,
    norm: str = "l2",
    output=None,
    n_samples: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    input_shape=None,
    starts: int | None = None,
    ascent_steps: int | None = None,
    ascent_starts: int | None = None,
    exact: bool | None = None,
    time_budget: float = 2.0,
    pattern_budget: float = 0.0,
) -> LowerBound:
    """A certified lower bound on the Lipschitz constant: the largest difference quotient found.

    Returns the largest ``||C (f(x') − f(x))|| / ||x' − x||_in`` actually evaluated, where
    ``norm="l2"`` uses ℓ2 in and out (``C = I`` unless ``output`` is given) and
    ``norm="linf"`` uses the ℓ∞ input norm and a scalar output ``c^T f`` (``output`` = logit
    index or vector ``c``; without ``output``, the max over the logits).  Any true Lipschitz
    constant (and any sound upper bound) is ≥ this value.  Candidates come from three
    searches: random sampling with local ascent (module docstring), gradient ascent of the
    Jacobian norm (:mod:`lipsdp.ascent`) and, for ℓ∞ on small ReLU networks without biases,
    the exact MILP (:mod:`lipsdp.milp`); the result says which ``kind`` it is.

    Parameters
    ----------
    model_or_network
        A :class:`~lipsdp.ir.Network`, a weight-file path (:func:`lipsdp.io.load`) or a torch
        ``nn.Module`` (searched on its IR export when ``lipsdp.from_torch`` handles it, else by
        autograd; the reported quotient always comes from the module's own forward passes).
    n_samples
        Random starting inputs (default: 16–256 depending on network size).
    steps
        Local-ascent iterations per start (stops early after 3 without progress); default 20,
        fewer when the layers hold more than 2e7 nonzeros in all (each step is a few passes).
    seed
        Seed of the random generator; the result is deterministic given the seed.
    input_shape
        Input shape (without batch) of a torch module, if it cannot be inferred from its first
        Linear layer.
    starts
        Number of best random inputs refined by local ascent (default 8, fewer like ``steps``).
    ascent_steps, ascent_starts
        Jacobian-norm gradient ascent (on the IR; default sized to about a second); 0 disables.
    exact
        None (default): try the ℓ∞ MILP when the network is a bias-free ReLU MLP with at most
        ``lipsdp.milp.AUTO_NEURONS`` hidden neurons; True: require it (up to ``MAX_NEURONS``);
        False: never.
    time_budget
        Seconds for the MILP (all outputs together).
    pattern_budget
        Seconds for the activation-pattern climb of :mod:`lipsdp.patterns` (ℓ2, feedforward
        ReLU / leaky-ReLU networks on the IR), started from the best points of the other
        searches; 0 (default) skips it.  It is the strong ℓ2 search: tens of seconds on
        784-100×5-10 (benchmarks/results-local.md).
    """
    key = str(norm).lower()
    norm = parse_norm(key)
    oracle, evaluate, shape, source = _as_search_problem(model_or_network, input_shape)
    evaluate = evaluate or oracle.forward
    steps, starts = _local_plan(oracle, steps, starts)
    objectives = _objectives(oracle.out_dim, norm, output)
    rng = np.random.default_rng(seed)
    d = oracle.dim
    n = int(n_samples) if n_samples is not None else _default_samples(oracle)
    n = max(n, 1)
    scales = np.array([_SCALES[i % len(_SCALES)] for i in range(n)])
    X = rng.standard_normal((n, d)) * scales[:, None]

    def evaluate_point(x):
        J, R, z0 = oracle.jacobian(x)
        s, k, u, v = _score(J, R, objectives, norm)
        return {"x": x, "score": s, "obj": k, "u": u, "v": v, "R": R, "z0": z0}

    points = [evaluate_point(x) for x in X]
    points.sort(key=lambda p: -p["score"])
    finals = []
    for p in points[: max(1, starts)]:
        stale = 0
        for _ in range(steps):
            x = p["x"]
            r = max(float(np.linalg.norm(x)), 1e-6)
            vhat = p["v"] / np.linalg.norm(p["v"])
            proposals = [x + t * r * vhat for t in (0.3, -0.3, 0.03, -0.03)]
            proposals.append(x + 0.1 * r * rng.standard_normal(d) / np.sqrt(d))
            if oracle.pattern and p["R"] is not None:
                proposals.append(_pattern_move(oracle, x, p["R"], p["z0"], objectives[p["obj"]], p["u"], p["v"]))
            cand = max((evaluate_point(q) for q in proposals), key=lambda q: q["score"])
            if cand["score"] > p["score"] * (1 + 1e-12):
                p, stale = cand, 0
            else:
                stale += 1
                if stale >= 3:
                    break
        finals.append(p)
    # (x, direction, objective index, steps h): the candidates for real finite differences
    cands = []
    for p in finals:
        v = p["v"] if norm == "linf" else p["v"] / np.linalg.norm(p["v"])
        scale = max(1.0, float(np.max(np.abs(p["x"]))))
        cands.append((p["x"], v, p["obj"], [f * scale for f in _H_FACTORS]))

    plan = _ascent_plan(oracle, norm, objectives, output, ascent_starts, ascent_steps)
    ascent_note = ""
    if plan is not None:
        from .ascent import jacobian_ascent

        B, S, sel = plan
        X0 = rng.standard_normal((B, d)) * np.array([_SCALES[i % len(_SCALES)] for i in range(B)])[:, None]
        X0[: min(len(finals), B // 2)] = [p["x"] for p in finals[: B // 2]]
        Xa, Va, Sa = jacobian_ascent(oracle.net, norm, sel, X0, steps=S, seed=seed)
        for i in np.argsort(-Sa)[: max(4, B // 4)]:
            scale = max(1.0, float(np.max(np.abs(Xa[i]))))
            obj = (i % len(objectives)) if sel is not None else 0
            cands.append((Xa[i], Va[i], obj, [f * scale for f in _H_FACTORS]))
        ascent_note = f", Jacobian-norm ascent from {B} starts x {S} steps"

    pattern_note = ""
    net = getattr(oracle, "net", None)
    if pattern_budget > 0 and norm == "l2" and net is not None:
        from .patterns import pattern_search, pattern_supported

        if pattern_supported(net) is None:
            ranked = sorted(cands, key=lambda c: -_jac_norm(oracle, c[0], objectives))
            starts_x = np.array([c[0] for c in ranked[:_PATTERN_STARTS]])
            pr = pattern_search(net, starts_x, output=objectives[0], time_budget=pattern_budget, seed=seed)
            if pr.step > 0:
                cands.append((pr.x, pr.direction, 0, [pr.step]))
            pattern_note = f", activation-pattern climb ({pattern_budget:g} s: {pr.moves} moves, {pr.kicks} kicks)"

    milp = _milp_candidates(oracle, norm, objectives, exact, time_budget)
    for k, r in enumerate(milp):
        if r.step > 0:
            cands.append((r.x, r.direction, k, [r.step]))

    # real finite differences: only these quotients are reported
    X1, X2, meta = [], [], []
    for x, v, obj, hs in cands:
        for h in hs:
            for sgn in (1.0, -1.0):
                X1.append(x)
                X2.append(x + sgn * h * v)
                meta.append((x, sgn * v, h, obj))
    X1, X2 = np.array(X1), np.array(X2)
    Y1, Y2 = evaluate(X1), evaluate(X2)
    dX = X2 - X1
    dY = Y2 - Y1
    in_norms = np.linalg.norm(dX, axis=1) if norm == "l2" else np.max(np.abs(dX), axis=1)
    best_q, best_i, best_obj = -1.0, 0, 0
    for k, C in enumerate(objectives):
        q = np.linalg.norm(dY @ C.T, axis=1) / np.where(in_norms > 0, in_norms, np.inf)
        i = int(np.argmax(q))
        if q[i] > best_q:
            best_q, best_i, best_obj = float(q[i]), i, k
    x_best, direction, h, _ = meta[best_i]
    out = output
    if output is None and norm == "linf":
        out = best_obj
    kind, upper = "quotient", None
    if milp and all(r.optimal for r in milp):
        top = max(r.value for r in milp)
        if best_q >= top * (1 - 1e-6):
            kind, upper = "exact", float(top)
    x_best = np.array(x_best, dtype=np.float64)
    if shape is not None:  # torch module: report inputs in its own shape
        x_best, direction = x_best.reshape(shape), np.asarray(direction).reshape(shape)
    method = (
        f"max finite-difference quotient on a {source}: {n} random inputs (seed {seed}), "
        f"{len(finals)} local ascents x {steps} steps{' with first-layer pattern moves' if oracle.pattern else ''}"
        f"{ascent_note}{pattern_note}{', ℓ∞ MILP (HiGHS)' if milp else ''}, "
        f"steps h in {list(_H_FACTORS)} x max(1, |x|_inf)"
        + (f"; equals the MILP optimum {upper:.9g}: the exact constant" if kind == "exact" else "")
    )
    return LowerBound(best_q, x_best, np.asarray(direction, dtype=np.float64), float(abs(h)), method, norm, out,
                      kind, upper)
