"""Read an ONNX model straight into a :class:`~lipsdp.ir.Network` (no torch, no onnx2torch).

Method: the graph is walked in its (topological) node order from its one non-constant input.
Every tensor is either a *constant* (an initializer, a ``Constant`` node, or an op whose inputs are
all constants, folded with numpy) or the *traced* per-sample tensor, which carries the IR layers
from the model input to it and its per-sample shape (the batch dimension is dropped).  Each op on
the traced tensor becomes exact IR layers through the registry :data:`OPS`:

- linear ops become one :class:`~lipsdp.ir.Affine` with their exact float64 matrix: Gemm, MatMul
  with a constant right factor, Add / Sub / Mul / Div by a constant (input normalisation), Conv
  (1-D / 2-D, strides, pads, dilations, groups), BatchNormalization (inference form), Pad
  (constant mode), AveragePool / GlobalAveragePool, MaxPool (window gather → GroupSort → first
  entries), and the reshapes Flatten / Reshape /
  Squeeze / Unsqueeze (the identity on the flattened C-order vector); Identity and inference
  Dropout are skipped;
- elementwise activations become :class:`~lipsdp.ir.SlopeRestricted` with their slope bounds
  (math.md §1): Relu, LeakyRelu, Sigmoid, Tanh, Elu.

The result computes the same function as the ONNX graph on per-sample inputs flattened in C order
(checked in tests against ``onnx.reference``); consecutive affine maps are merged by the IR.
Anything else (a residual Add of two traced tensors, a non-constant weight) is refused
with one :class:`~lipsdp.errors.UnsupportedLayerError` naming every offending node.
Needs the ``onnx`` package (``pip install 'lipsdp[onnx]'``), imported only when an ONNX file is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .errors import InvalidNetworkError, ModelLoadError, UnsupportedLayerError
from .ir import Affine, GroupSort, Network, SlopeRestricted
from .linop import Conv

__all__ = ["load_onnx", "OPS", "register_op"]


@dataclass(frozen=True)
class _Traced:
    """The per-sample tensor computed from the model input: its IR layers and shape."""

    layers: tuple
    shape: tuple

    def then(self, layers, shape) -> "_Traced":
        return _Traced(self.layers + tuple(layers), tuple(int(s) for s in shape))


class _Unsupported(Exception):
    """Raised by an op handler; becomes one line of the UnsupportedLayerError."""


#: ONNX op type -> handler(inputs, attrs) -> _Traced | np.ndarray; inputs are _Traced, arrays or None
OPS: dict[str, Callable] = {}


def register_op(op_type: str, handler: Callable) -> None:
    """Register (or replace) the handler of an ONNX op type; see :data:`OPS`."""
    OPS[op_type] = handler


def _numel(shape) -> int:
    return int(math.prod(shape))


def _split(inputs):
    """(traced, [constants]) of a node whose inputs are one traced tensor and constants."""
    traced = [x for x in inputs if isinstance(x, _Traced)]
    if len(traced) != 1:
        raise _Unsupported("combines two tensors computed from the input (residual / skip connections are not "
                           "read from ONNX; export the network with lipsdp.from_torch instead)")
    return traced[0], [x for x in inputs if not isinstance(x, _Traced)]


# ---------------------------------------------------------------------------------------------
# affine ops
# ---------------------------------------------------------------------------------------------


def _per_sample(c: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    """A constant broadcast against a batch of per-sample ``shape``, as a flat per-sample vector."""
    c = np.asarray(c, dtype=np.float64)
    full = (1,) + tuple(shape)
    if c.ndim > len(full) or np.broadcast_shapes(c.shape, full) != full:
        raise _Unsupported(f"{what}: the constant of shape {c.shape} changes the shape {shape} of the input tensor")
    return np.broadcast_to(c, full).reshape(-1).copy()


def _add(inputs, attrs, sign=1.0):
    t, (c,) = _split(inputs)
    first = inputs[0] is t
    b = _per_sample(c, t.shape, "Add/Sub")
    scale = 1.0 if (first or sign > 0) else -1.0  # const - x
    bias = sign * b if first else b
    return t.then([Affine(sp.identity(_numel(t.shape), format="csr") * scale, bias)], t.shape)


def _mul(inputs, attrs, divide=False):
    t, (c,) = _split(inputs)
    if divide and inputs[0] is not t:
        raise _Unsupported("divides a constant by the input tensor (not an affine map)")
    d = _per_sample(c, t.shape, "Div" if divide else "Mul")
    if divide:
        if np.any(d == 0):
            raise InvalidNetworkError("Div: divides by a constant that has zero entries")
        d = 1.0 / d
    return t.then([Affine(sp.diags(d, format="csr"))], t.shape)


def _linear_last(t: _Traced, W: np.ndarray, bias) -> _Traced:
    """``x @ B`` on the last axis of the per-sample tensor (W = Bᵀ of shape (out, in))."""
    if t.shape[-1] != W.shape[1]:
        raise InvalidNetworkError(f"expects {W.shape[1]} input features, receives shape {t.shape}")
    copies = _numel(t.shape[:-1])
    out = W.shape[0]
    if copies > 1:
        W = sp.kron(sp.identity(copies), sp.csr_matrix(W), format="csr")
        bias = None if bias is None else np.tile(bias, copies)
    return t.then([Affine(W, bias)], tuple(t.shape[:-1]) + (out,))


def _gemm(inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if not isinstance(a, _Traced) or isinstance(b, _Traced) or isinstance(c, _Traced):
        raise _Unsupported("only Gemm(input, constant B, constant C) is read")
    if attrs.get("transA", 0):
        raise _Unsupported("transA=1 transposes the batch (not a per-sample map)")
    B = np.asarray(b, dtype=np.float64)
    W = attrs.get("alpha", 1.0) * (B if attrs.get("transB", 0) else B.T)
    bias = None
    if c is not None:
        bias = attrs.get("beta", 1.0) * np.broadcast_to(np.asarray(c, dtype=np.float64), (1, W.shape[0])).ravel()
    if len(a.shape) != 1:
        raise InvalidNetworkError(f"Gemm expects a 2-D input (batch, features), receives per-sample shape {a.shape}")
    return _linear_last(a, W, bias)


def _matmul(inputs, attrs):
    a, b = inputs
    if not isinstance(a, _Traced) or isinstance(b, _Traced) or np.ndim(b) != 2:
        raise _Unsupported("only MatMul(input, constant 2-D matrix) is read")
    return _linear_last(a, np.asarray(b, dtype=np.float64).T, None)


def _reshape_to(t: _Traced, shape) -> _Traced:
    if _numel(shape) != _numel(t.shape):
        raise InvalidNetworkError(f"reshape of per-sample shape {t.shape} to {tuple(shape)} changes the size")
    return t.then([], shape)


def _flatten(inputs, attrs):
    t = inputs[0]
    axis = attrs.get("axis", 1)
    if axis != 1:
        raise _Unsupported(f"Flatten(axis={axis}) merges the batch dimension with others; use axis=1")
    return _reshape_to(t, (_numel(t.shape),))


def _reshape(inputs, attrs):
    t, (target,) = _split(inputs)
    target = [int(v) for v in np.asarray(target).ravel()]
    if not target or target[0] not in (1, 0, -1):
        raise _Unsupported(f"Reshape to {target} does not keep the batch dimension first")
    rest = [t.shape[i - 1] if (v == 0 and not attrs.get("allowzero", 0) and i - 1 < len(t.shape)) else v
            for i, v in enumerate(target[1:], start=1)]
    if target[0] == -1 and -1 in rest:
        raise _Unsupported(f"Reshape to {target} leaves the batch size undetermined")
    if -1 in rest:
        known = _numel([v for v in rest if v != -1])
        rest = [(_numel(t.shape) // known) if v == -1 else v for v in rest]
    return _reshape_to(t, tuple(rest))


def _axes(inputs, attrs):
    axes = attrs.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = [int(v) for v in np.asarray(inputs[1]).ravel()]
    return axes


def _squeeze(inputs, attrs):
    t = inputs[0]
    axes = _axes(inputs, attrs)
    if axes is None:
        return _reshape_to(t, tuple(s for s in t.shape if s != 1))
    full = (1,) + t.shape
    axes = sorted(a % len(full) for a in axes)
    if 0 in axes or any(full[a] != 1 for a in axes):
        raise _Unsupported(f"Squeeze(axes={axes}) removes the batch dimension or a dimension that is not 1")
    return _reshape_to(t, tuple(s for i, s in enumerate(full) if i not in axes)[1:])


def _unsqueeze(inputs, attrs):
    t = inputs[0]
    full = list((1,) + t.shape)
    given = _axes(inputs, attrs) or []
    axes = sorted(a % (len(full) + len(given)) for a in given)
    if 0 in axes:
        raise _Unsupported("Unsqueeze(axes=[0, ...]) moves the batch dimension")
    for a in axes:
        full.insert(a, 1)
    return _reshape_to(t, tuple(full[1:]))


def _identity(inputs, attrs):
    return inputs[0]


def _dropout(inputs, attrs):
    if len(inputs) > 2 and inputs[2] is not None and bool(np.asarray(inputs[2])):
        raise _Unsupported("Dropout with training_mode=True drops units at inference")
    return inputs[0]


def _spatial(t: _Traced, what: str) -> tuple:
    if len(t.shape) not in (2, 3):
        raise InvalidNetworkError(f"{what} expects a per-sample input (C, L) or (C, H, W), receives shape {t.shape}")
    return t.shape if len(t.shape) == 3 else (t.shape[0], 1, t.shape[1])


def _window_params(attrs, k: tuple, nd: int):
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _Unsupported(f"auto_pad={attrs['auto_pad']!r} is not read; export with explicit pads")
    if attrs.get("ceil_mode", 0):
        raise _Unsupported("ceil_mode=1 is not read")
    strides = list(attrs.get("strides", [1] * nd))
    dil = list(attrs.get("dilations", [1] * nd))
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    if nd == 1:  # as 2-D with a unit height
        return (1,) + tuple(k), [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    return tuple(k), strides, dil, pads


def _window_map(shape3, k, strides, dil, pads):
    """Output size and, per kernel offset (ky, kx), the valid (out rows, out cols, in rows, in cols)."""
    _, H, W = shape3
    OH = (H + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // strides[0] + 1
    OW = (W + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // strides[1] + 1
    if OH < 1 or OW < 1:
        raise InvalidNetworkError(f"the window {k} does not fit the input {shape3} with pads {pads}")
    taps = []
    for ky in range(k[0]):
        iy = np.arange(OH) * strides[0] - pads[0] + ky * dil[0]
        my = (iy >= 0) & (iy < H)
        for kx in range(k[1]):
            ix = np.arange(OW) * strides[1] - pads[1] + kx * dil[1]
            mx = (ix >= 0) & (ix < W)
            oy, ox = np.nonzero(my)[0], np.nonzero(mx)[0]
            out_pos = oy[:, None] * OW + ox[None, :]
            in_pos = iy[oy][:, None] * W + ix[ox][None, :]
            taps.append(((ky, kx), out_pos.ravel(), in_pos.ravel()))
    return OH, OW, taps


def _out_shape(t: _Traced, C, OH, OW) -> tuple:
    return (C, OH, OW) if len(t.shape) == 3 else (C, OW)


def _conv(inputs, attrs):
    t, w, b = inputs[0], inputs[1], (inputs[2] if len(inputs) > 2 else None)
    if not isinstance(t, _Traced) or isinstance(w, _Traced) or isinstance(b, _Traced):
        raise _Unsupported("only Conv(input, constant weight, constant bias) is read")
    K = np.asarray(w, dtype=np.float64)
    C, H, W = _spatial(t, "Conv")
    nd = K.ndim - 2
    k, strides, dil, pads = _window_params(attrs, K.shape[2:], nd)
    K = K.reshape(K.shape[:2] + k)
    groups = int(attrs.get("group", 1))
    O, Cg = K.shape[0], K.shape[1]
    if Cg * groups != C or O % groups:
        raise InvalidNetworkError(f"Conv weight {tuple(np.shape(w))} with group={groups} does not fit {C} input channels")
    OH, OW, _ = _window_map((C, H, W), k, strides, dil, pads)
    op = Conv(K, (C, H, W), stride=tuple(strides), padding=((pads[0], pads[2]), (pads[1], pads[3])),
              dilation=tuple(dil), groups=groups)  # kept as a convolution (lipsdp.linop)
    bias = None if b is None else np.repeat(np.asarray(b, dtype=np.float64), OH * OW)
    return t.then([Affine(op, bias)], _out_shape(t, O, OH, OW))


def _average_pool(inputs, attrs):
    t = inputs[0]
    C, H, W = _spatial(t, "AveragePool")
    nd = len(t.shape) - 1
    k, strides, dil, pads = _window_params(attrs, attrs["kernel_shape"], nd)
    OH, OW, taps = _window_map((C, H, W), k, strides, dil, pads)
    count = np.zeros(OH * OW)
    for _, out_pos, _ in taps:
        count[out_pos] += 1
    if attrs.get("count_include_pad", 0):
        count[:] = k[0] * k[1]
    P = np.zeros((OH * OW, H * W))
    for _, out_pos, in_pos in taps:
        P[out_pos, in_pos] += 1.0 / count[out_pos]
    return t.then([Affine(sp.kron(sp.identity(C), sp.csr_matrix(P), format="csr"))], _out_shape(t, C, OH, OW))


def _max_pool(inputs, attrs):
    """MaxPool as window gather D → GroupSort(k) → first entries S (the max of a window is the
    first output of sorting it; ragged windows repeat one of their own entries).  GroupSort's QC
    holds for every input, so the certificate is sound (derivation: models/export/pooling.py)."""
    t = inputs[0]
    C, H, W = _spatial(t, "MaxPool")
    nd = len(t.shape) - 1
    if int(attrs.get("storage_order", 0)):
        raise _Unsupported("storage_order=1 is not read")
    k, strides, dil, pads = _window_params(attrs, attrs["kernel_shape"], nd)
    OH, OW, taps = _window_map((C, H, W), k, strides, dil, pads)
    g, n_out = k[0] * k[1], OH * OW
    members = [[] for _ in range(n_out)]
    for _, out_pos, in_pos in taps:
        for o, i in zip(out_pos.tolist(), in_pos.tolist()):
            members[o].append(i)
    if any(not m for m in members):
        raise InvalidNetworkError("MaxPool: a window lies entirely in the padding")
    cols = np.array([m + [m[0]] * (g - len(m)) for m in members]).ravel()  # (n_out·g,)
    rows = np.arange(C * n_out * g)
    D = sp.csr_matrix((np.ones(rows.size), (rows, (np.arange(C)[:, None] * H * W + cols[None, :]).ravel())),
                      shape=(C * n_out * g, C * H * W))
    shape = _out_shape(t, C, OH, OW)
    if g == 1:
        return t.then([Affine(D)], shape)
    S = sp.csr_matrix((np.ones(C * n_out), (np.arange(C * n_out), np.arange(C * n_out) * g)), shape=(C * n_out, C * n_out * g))
    return t.then([Affine(D), GroupSort(g), Affine(S)], shape)


def _global_average_pool(inputs, attrs):
    t = inputs[0]
    n = _numel(t.shape[1:])
    P = sp.kron(sp.identity(t.shape[0]), sp.csr_matrix(np.full((1, n), 1.0 / n)), format="csr")
    return t.then([Affine(P)], (t.shape[0],) + (1,) * (len(t.shape) - 1))


def _batchnorm(inputs, attrs):
    t, scale, bias, mean, var = inputs[:5]
    if any(isinstance(x, _Traced) for x in (scale, bias, mean, var)):
        raise _Unsupported("BatchNormalization with non-constant statistics")
    if attrs.get("training_mode", 0):
        raise _Unsupported("BatchNormalization in training mode normalises with batch statistics")
    g = np.asarray(scale, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + attrs.get("epsilon", 1e-5))
    shift = np.asarray(bias, dtype=np.float64) - g * np.asarray(mean, dtype=np.float64)
    per = _numel(t.shape[1:])
    return t.then([Affine(sp.diags(np.repeat(g, per), format="csr"), np.repeat(shift, per))], t.shape)


def _pad(inputs, attrs):
    t = inputs[0]
    mode = attrs.get("mode", b"constant")
    if mode not in (b"constant", "constant"):
        raise _Unsupported(f"Pad mode {mode!r} is not read (only constant)")
    pads = attrs.get("pads")
    if pads is None:
        pads = [int(v) for v in np.asarray(inputs[1]).ravel()]
    value = float(np.asarray(inputs[2]).ravel()[0]) if len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0.0)
    if len(inputs) > 3 and inputs[3] is not None:
        raise _Unsupported("Pad with an axes input is not read")
    r = len(t.shape) + 1
    before, after = pads[:r], pads[r:]
    if before[0] or after[0] or min(pads) < 0:
        raise _Unsupported(f"Pad {pads} pads the batch dimension or crops")
    out = tuple(s + a + b for s, a, b in zip(t.shape, before[1:], after[1:]))
    idx = np.arange(_numel(out)).reshape(out)[tuple(slice(a, a + s) for a, s in zip(before[1:], t.shape))].ravel()
    S = sp.csr_matrix((np.ones(idx.size), (idx, np.arange(idx.size))), shape=(_numel(out), _numel(t.shape)))
    bias = None
    if value != 0.0:
        bias = np.full(_numel(out), value)
        bias[idx] = 0.0
    return t.then([Affine(S, bias)], out)


def _activation(fn: str, params: Callable = lambda attrs: {}):
    def handler(inputs, attrs):
        t = inputs[0]
        # a (C, *spatial) feature map: its channel layout (method="channel"), known here even when a
        # BatchNorm or pool merged into the convolution hides it from the operator
        channels = int(t.shape[0]) if len(t.shape) >= 2 else None
        return t.then([SlopeRestricted(fn=fn, params=params(attrs), channels=channels)], t.shape)

    return handler


# ---------------------------------------------------------------------------------------------
# constants: Shape of the input tensor; every node whose inputs are all constants is folded by
# the onnx reference evaluator (shape arithmetic of the legacy torch exporter, Constant nodes)
# ---------------------------------------------------------------------------------------------


def _shape(inputs, attrs):
    full = np.array((1,) + inputs[0].shape, dtype=np.int64)  # batch size 1
    return full[attrs.get("start", 0):attrs.get("end", None)]


def _fold(node, values):
    from onnx.reference import ReferenceEvaluator

    feeds = {n: v for n, v in zip(node.input, values) if n}
    try:
        return ReferenceEvaluator(node).run(None, feeds)[0]
    except Exception as exc:
        raise _Unsupported(f"cannot evaluate on constants ({type(exc).__name__}: {str(exc)[:120]})") from None


def _register_builtins() -> None:
    for name, fn in (("Add", _add), ("Sub", lambda i, a: _add(i, a, sign=-1.0)), ("Mul", _mul),
                     ("Div", lambda i, a: _mul(i, a, divide=True)),
                     ("Gemm", _gemm), ("MatMul", _matmul), ("Conv", _conv), ("BatchNormalization", _batchnorm),
                     ("Pad", _pad), ("AveragePool", _average_pool), ("MaxPool", _max_pool), ("GlobalAveragePool", _global_average_pool),
                     ("Flatten", _flatten), ("Reshape", _reshape), ("Dropout", _dropout), ("Shape", _shape)):
        register_op(name, fn)
    register_op("Identity", _identity)
    register_op("Squeeze", _squeeze)
    register_op("Unsqueeze", _unsqueeze)
    register_op("Relu", _activation("relu"))
    register_op("LeakyRelu", _activation("leaky_relu", lambda a: {"negative_slope": float(a.get("alpha", 0.01))}))
    register_op("Sigmoid", _activation("sigmoid"))
    register_op("Tanh", _activation("tanh"))
    register_op("Elu", _activation("elu", lambda a: {"alpha": float(a.get("alpha", 1.0))}))


_register_builtins()


# ---------------------------------------------------------------------------------------------
# the graph walk
# ---------------------------------------------------------------------------------------------


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ModelLoadError("reading .onnx files needs the onnx package: pip install 'lipsdp[onnx]'") from None
    return onnx


def _read_model(path: Path):
    onnx = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not model.graph.node:
        raise ModelLoadError(f"{path}: the ONNX graph has no nodes")
    return onnx, model


def _graph_input(onnx, graph, consts: dict, path: Path) -> tuple[str, tuple]:
    """The name and per-sample shape of the graph's one non-constant input."""
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"{path}: the ONNX graph has {len(inputs)} non-constant inputs "
                                    f"({[i.name for i in inputs]}); expected exactly one")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if len(shape) < 2 or any(s is None or s < 1 for s in shape[1:]):
        raise ModelLoadError(f"{path}: the input {inputs[0].name!r} has shape {shape}; expected (batch, features) "
                             "or (batch, C, H, W) with fixed per-sample sizes")
    return inputs[0].name, tuple(shape[1:])


def _node_label(node, i: int) -> str:
    return f"node {node.name or i!r} ({node.op_type})"


def load_onnx(path) -> Network:
    """Read an ONNX file into a :class:`~lipsdp.ir.Network` (see the module docstring)."""
    path = Path(path)
    onnx, model = _read_model(path)
    from onnx import numpy_helper

    graph = model.graph
    env: dict = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    name, shape = _graph_input(onnx, graph, env, path)
    env[name] = _Traced((), shape)
    env[""] = None  # omitted optional inputs
    issues, dead = [], set()
    for i, node in enumerate(graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if any(x in dead for x in node.input):
            dead.update(node.output)
            continue
        unknown = [x for x in node.input if x not in env]
        if unknown:
            issues.append(f"{_node_label(node, i)}: input(s) {unknown} are produced by no earlier node")
            dead.update(node.output)
            continue
        values = [env[x] for x in node.input]
        handler = OPS.get(node.op_type)
        try:
            if not any(isinstance(v, _Traced) for v in values):
                env[node.output[0]] = _fold(node, values)
                continue
            if handler is None:
                raise _Unsupported(f"op {node.op_type} has no IR form (supported: {', '.join(sorted(OPS))})")
            env[node.output[0]] = handler(values, attrs)
        except (_Unsupported, InvalidNetworkError) as exc:
            issues.append(f"{_node_label(node, i)}: {exc}")
            dead.update(node.output)
    if issues:
        raise UnsupportedLayerError(f"{path}: {len(issues)} ONNX node(s) cannot be read: " + "; ".join(issues))
    return _network(env, graph, _numel(shape), path)


def _network(env: dict, graph, dim: int, path: Path) -> Network:
    if len(graph.output) != 1:
        raise UnsupportedLayerError(f"{path}: the ONNX graph has {len(graph.output)} outputs; expected one")
    out = env.get(graph.output[0].name)
    if not isinstance(out, _Traced) or not out.layers:
        raise InvalidNetworkError(f"{path}: the ONNX graph's output does not depend on its input through any layer")
    layers = []
    for layer in out.layers:  # the IR wants an affine layer first, last and between two activations
        if not isinstance(layer, Affine) and (not layers or not isinstance(layers[-1], Affine)):
            layers.append(Affine(np.eye(dim), name="identity"))
        layers.append(layer)
        if isinstance(layer, Affine):
            dim = layer.out_dim
    if not isinstance(layers[-1], Affine):
        layers.append(Affine(np.eye(dim), name="identity"))
    return Network(layers, name=path.stem)
