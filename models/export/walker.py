"""The graph walk of :func:`from_torch`: traced ``forward`` -> :class:`lipsdp.ir.Network`.

The walk follows the *forward graph* (:mod:`.tracer`, concrete shapes), never state_dict key
names.  Every node that depends on the model input becomes a chain of IR layers from the input
to it; every node that does not (parametrisations, constants, float attributes, sizes) is a
constant whose value the trace computed.  Each operation is converted by the converter
registered for its module type or function (:mod:`.registry`); arithmetic is handled here:

* ``x * c``, ``x / c``, ``x + c``, ``x − c``, ``c − x``, ``−x`` with c a number or a constant
  tensor (broadcast per sample) -> one affine map (exact: diagonal / identity weights, c as bias);
* ``a ± b`` of two branches where ``b = f(a)`` extends ``a``'s chain -> :class:`ir.Residual`
  ``x + body(x)`` with body = (Affine, Activation[, Affine]) (an affine f merges into one
  Affine ``(I + W) x + b``).  A block with its activation *after* the sum, ``relu(x + f(x))``
  (GLipSDP's R18 blocks), is that Residual followed by the activation layer — the IR (and the
  lifted LMI of math.md §7) takes any sequence of Affine, Activation and Residual layers.

Convolutions stay :class:`lipsdp.linop.Conv` operators: a zero ``F.pad`` just before one is
absorbed into its padding, and a BatchNorm or a scalar multiple just after one into its kernel
(:func:`~.linear.fold`, the same map).

Every unsupported operation is collected into one :class:`UnsupportedLayerError` naming the
qualified submodule it sits in (``features.3``) and the source line of the call.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import fx, nn

from lipsdp import ir
from lipsdp.errors import InvalidNetworkError, LipSDPError, UnsupportedLayerError

from .deel_ops import OPTIONAL_STATE, register_optional
from .linear import ChannelScale, affine, f64, fold, identity, linear_map, merge_affines, numel, scalar_of, scaled
from .registry import FUNCTION_CONVERTERS, converter_for, function_name, type_name
from .tracer import TRACE_BATCH, TraceFailure, trace


@dataclass(frozen=True, eq=False)
class _Tensor:
    """A traced tensor that depends on the model input: the IR layers from the input to it
    (``None`` once an unsupported operation came before it) and its per-sample shape."""

    layers: tuple | None
    shape: tuple


_ARITH = {
    **dict.fromkeys((operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"), "add"),
    **dict.fromkeys((operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__"), "sub"),
    **dict.fromkeys((operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"), "mul"),
    **dict.fromkeys((operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_",
                     "__truediv__"), "div"),
    **dict.fromkeys((operator.neg, torch.neg, "neg", "__neg__"), "neg"),
    **dict.fromkeys((operator.pos,), "pos"),
}


def _f64_const(c):
    return c.detach().to(device="cpu", dtype=torch.float64) if isinstance(c, torch.Tensor) else float(c)


class Walker:
    """Walks a traced graph in order, converting each node; collects every unsupported op."""

    def __init__(self, root: nn.Module, graph: fx.Graph, input_shape: tuple):
        self.root = root
        self.graph = graph
        self.input_shape = input_shape
        self.issues: list[str] = []
        self.env: dict[fx.Node, object] = {}

    # --- locations --------------------------------------------------------------------------
    def where(self, node: fx.Node) -> str:
        """``'features.3' (torch.nn.….LayerNorm)`` for a module call, ``torch.sort in 'blocks.1'
        (Block)`` for a function; then the source line."""
        if node.op == "call_module":
            module = self.root.get_submodule(node.target)
            text = f"'{node.target}' ({type_name(type(module))})"
        else:
            stack = node.meta.get("nn_module_stack") or {}
            owner = f"'{next(reversed(stack))}' ({stack[next(reversed(stack))][1].__name__})" if stack else \
                f"{type(self.root).__name__}.forward"
            text = f"{function_name(node.target)} in {owner}"
        source = node.meta.get("source")
        return f"{text} at {source}" if source else text

    def issue(self, node: fx.Node, reason: str) -> _Tensor:
        self.issues.append(f"{self.where(node)}: {reason}")
        return self.broken(node)

    def broken(self, node: fx.Node) -> _Tensor:
        value = node.meta.get("value")
        shape = tuple(value.shape[1:]) if isinstance(value, torch.Tensor) and value.dim() else ()
        return _Tensor(None, shape)

    # --- the walk ---------------------------------------------------------------------------
    def run(self) -> _Tensor | None:
        result, inputs = None, 0
        for node in self.graph.nodes:
            if node.op == "placeholder":
                inputs += 1
                self.env[node] = _Tensor((), self.input_shape) if inputs == 1 else \
                    self.issue(node, f"second forward input {node.target!r}: only single-input models are supported")
            elif node.op == "get_attr":  # a parameter, buffer or tensor constant fx stored on the root
                self.env[node] = node.meta["value"] if "value" in node.meta else _fetch(self.root, node.target)
            elif node.op == "output":
                result = fx.node.map_arg(node.args[0], self.env.__getitem__)
                if not isinstance(result, _Tensor):
                    self.issues.append(f"model output of type {type(result).__name__}: expected a single tensor")
                    result = None
            else:
                self.env[node] = self.call(node)
        return result

    def call(self, node: fx.Node):
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = dict(fx.node.map_arg(node.kwargs, self.env.__getitem__))
        tensors = [a for a in _flat(args, kwargs) if isinstance(a, _Tensor)]
        if not tensors:  # does not depend on the input: the traced value
            return node.meta["value"]
        target = node.target
        if node.op == "call_module":
            module = self.root.get_submodule(target)
            converter = converter_for(module)
            run = (lambda shape, *a, **k: converter(module, shape)) if converter else None
        elif target in _ARITH:
            run = self.arith
        else:
            run = FUNCTION_CONVERTERS.get(target)
        broken = any(t.layers is None for t in tensors)
        if run is None:
            if broken and target in (operator.getitem, getattr):
                return self.broken(node)
            return self.issue(node, "no converter registered for it")
        value = node.meta["value"]
        if not (isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == TRACE_BATCH):
            if broken:
                return self.broken(node)
            got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            return self.issue(node, f"gives {got} for a batch of {TRACE_BATCH} samples; expected one tensor that keeps "
                                    "the batch dimension first (e.g. x.view(x.size(0), -1) or torch.flatten(x, 1))")
        traced = tuple(int(s) for s in value.shape[1:])
        if run == self.arith:
            return self.arith(node, _ARITH[target], args, kwargs, traced)
        if broken:
            return _Tensor(None, traced)
        if not args or not isinstance(args[0], _Tensor) or len(tensors) > 1:
            return self.issue(node, "expected the tensor computed from the model input as the only tensor argument"
                                    " (first); an operation combining two branches is not supported")
        if node.op == "call_module" and (len(args) > 1 or kwargs):
            return self.issue(node, "expected a module called with one tensor argument")
        x = args[0]
        try:
            layers, shape = run(x.shape, *args[1:], **kwargs)
        except UnsupportedLayerError as exc:
            return self.issue(node, str(exc))
        except LipSDPError as exc:
            raise type(exc)(f"{self.where(node)}: {exc}") from None
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise InvalidNetworkError(f"{self.where(node)} could not be exported for the per-sample input shape "
                                      f"{x.shape}: {exc}") from None
        if shape is None:  # a pure reshape
            if layers or numel(traced) != numel(x.shape):
                return self.issue(node, f"reshapes {x.shape} to {traced}, which changes the number of values per sample")
            shape = traced
        if tuple(int(s) for s in shape) != traced:
            return self.issue(node, f"its converter gives the per-sample shape {tuple(shape)} but forward gives {traced}")
        name = target if node.op == "call_module" else node.name
        layers = tuple(layer if getattr(layer, "name", "") else replace(layer, name=name) for layer in layers)
        prefix = x.layers
        folded = fold(prefix[-1], layers[0]) if prefix and layers else None
        if folded is not None:  # pad → conv, conv → BatchNorm: one Conv operator
            prefix, layers = prefix[:-1], (folded,) + layers[1:]
        return _Tensor(prefix + layers, traced)

    # --- arithmetic -------------------------------------------------------------------------
    def arith(self, node, kind: str, args, kwargs, traced: tuple):
        positions = [i for i, a in enumerate(args) if isinstance(a, _Tensor)]
        if any(isinstance(a, _Tensor) and a.layers is None for a in args):
            return _Tensor(None, traced)
        alpha = kwargs.pop("alpha", 1)
        if kwargs or any(isinstance(v, _Tensor) for v in kwargs.values()):
            return self.issue(node, f"unsupported keyword argument(s) {sorted(kwargs)}")
        if len(positions) == 2 and kind in ("add", "sub"):
            return self.branches(node, args[0], args[1], 1.0, float(alpha) * (1.0 if kind == "add" else -1.0), traced)
        if len(positions) != 1 or len(args) > 2:
            return self.issue(node, "a product or quotient of two tensors computed from the input is not an affine map")
        pos = positions[0]
        x = args[pos]
        c = _f64_const(args[1 - pos]) if len(args) == 2 else None
        n = numel(x.shape)
        try:
            if kind in ("neg", "pos"):
                W, b = (-1.0 if kind == "neg" else 1.0) * sp.identity(n, format="csr"), None
            elif kind in ("add", "sub"):
                sx = float(alpha) if pos == 1 else 1.0  # torch.add(c, x, alpha) = c + alpha x
                sc = float(alpha) if pos == 0 else 1.0
                if kind == "sub":
                    sx, sc = (-sx, sc) if pos == 1 else (sx, -sc)
                W = sx * sp.identity(n, format="csr")
                b = f64(torch.zeros((1,) + x.shape, dtype=torch.float64) + sc * c).ravel()
                if b.size != n:
                    return self.issue(node, f"adding a constant of shape {tuple(np.shape(c))} changes the per-sample shape {x.shape}")
            elif kind == "mul" and np.ndim(c) == 0 and len(x.shape) > 1:  # c · x: a convolution can absorb it
                W, b = ChannelScale(np.full(x.shape[0], float(c)), x.shape), None
            elif kind == "mul":
                W, _ = linear_map(lambda t: t * c, x.shape, sparse=True)
                b = None
            elif pos == 0:  # x / c
                W, _ = linear_map(lambda t: t / c, x.shape, sparse=True)
                b = None
            else:
                return self.issue(node, "c / x is not an affine map of x")
        except RuntimeError as exc:
            return self.issue(node, f"the constant does not broadcast per sample ({exc})")
        if W.shape[0] != numel(traced):
            return self.issue(node, f"the constant changes the per-sample shape {x.shape} to {traced}")
        layer = affine(W, b, node.name)
        folded = fold(x.layers[-1], layer) if x.layers else None
        return _Tensor(x.layers[:-1] + (folded,) if folded is not None else x.layers + (layer,), traced)

    def branches(self, node, a: _Tensor, b: _Tensor, sa: float, sb: float, traced: tuple):
        """``sa·a + sb·b`` of two branches from a common tensor x (the longest shared chain).

        Both tails affine -> one Affine.  One tail affine with weight c·I (the skip, e.g. x or
        0.5·x + 1) and the other f -> ``c (x + f(x)/c) + b``: Residual(f / c), then c·I and the bias.
        """
        if a.shape != b.shape:
            return self.issue(node, f"adds branches of shapes {a.shape} and {b.shape}")
        k = 0
        while k < min(len(a.layers), len(b.layers)) and a.layers[k] is b.layers[k]:
            k += 1
        n = numel(a.shape)
        tails = []
        for s, t in ((sa, a), (sb, b)):
            tail = merge_affines(list(t.layers[k:]))
            if not tail:
                tail = [affine(sp.identity(n, format="csr"))]
            tails.append((s, tail))
        (s1, t1), (s2, t2) = tails
        if len(t1) == 1 and len(t2) == 1 and isinstance(t1[0], ir.Affine) and isinstance(t2[0], ir.Affine):
            bias = [s * t[0].bias for s, t in tails if t[0].bias is not None]
            block = ir.Affine(s1 * t1[0].op.to_sparse() + s2 * t2[0].op.to_sparse(), sum(bias) if bias else None, node.name)
            return _Tensor(a.layers[:k] + (block,), traced)
        skip = [(s, t[0]) for s, t in tails if len(t) == 1 and isinstance(t[0], ir.Affine) and scalar_of(t[0]) is not None]
        if not skip:
            return self.issue(node, "an addition of two branches that is not x + f(x) (a skip connection c·x + b "
                                    "and a branch f computed from x)")
        s_skip, skip_layer = skip[0]
        s_body, body = tails[1] if tails[0][1][0] is skip_layer else tails[0]
        c = s_skip * scalar_of(skip_layer)
        if c == 0:
            return self.issue(node, "the skip connection has weight 0")
        body = list(body)
        ratio = s_body / c  # y = c (x + ratio · f(x)) + s_skip · b_skip
        if isinstance(body[0], ir.Activation):
            body.insert(0, identity(n))
        if isinstance(body[-1], ir.Affine):
            body[-1] = scaled(body[-1], ratio)
        elif ratio != 1.0:
            body.append(affine(ratio * sp.identity(n, format="csr")))
        if not (len(body) in (2, 3) and isinstance(body[1], ir.Activation) and (len(body) == 2 or isinstance(body[2], ir.Affine))):
            kinds = ", ".join(type(layer).__name__ for layer in body)
            return self.issue(node, f"residual body must be affine → activation [→ affine], got ({kinds})")
        layers = a.layers[:k] + (ir.Residual(tuple(body), name=node.name),)
        b_skip = None if skip_layer.bias is None else s_skip * skip_layer.bias
        if c != 1.0 or b_skip is not None:
            layers += (affine(c * sp.identity(n, format="csr"), b_skip, node.name),)
        return _Tensor(layers, traced)


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _flat(args, kwargs) -> list:
    out: list = []
    fx.node.map_aggregate((args, tuple(kwargs.values())), lambda a: out.append(a) or a)
    return out


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def _infer_input_shape(module: nn.Module) -> tuple:
    for name, m in module.named_modules():
        if converter_for(m) is None:
            continue
        if isinstance(m, nn.modules.conv._ConvNd) or hasattr(m, "in_channels"):
            raise InvalidNetworkError(
                f"cannot infer the input shape: '{name}' ({type(m).__name__}) is a convolution; "
                "pass input_shape=(C, H, W) (Conv2d) or (C, L) (Conv1d)"
            )
        if isinstance(getattr(m, "in_features", None), int):
            return (m.in_features,)
    raise InvalidNetworkError(
        "cannot infer the input shape: no Linear layer found; pass input_shape=(features,) or (C, H, W)"
    )


def _check_shape(input_shape) -> tuple:
    shape = (input_shape,) if isinstance(input_shape, int) else input_shape
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InvalidNetworkError(f"input_shape: expected a tuple of positive ints such as (3, 32, 32), got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise InvalidNetworkError(f"input_shape: expected a tuple of positive ints such as (3, 32, 32), got {input_shape!r}")
    return shape


def _sample(module: nn.Module, shape: tuple) -> torch.Tensor:
    ref = next((t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else "cpu"
    gen = torch.Generator().manual_seed(0)
    return torch.randn((TRACE_BATCH,) + shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def _trace(module: nn.Module, shapes: list[tuple]) -> tuple[fx.Graph, tuple]:
    """Trace with the first shape on which ``forward`` runs (a leading batch dimension of
    ``input_shape`` is dropped when the shape as given does not run but the rest does)."""
    first = None
    for shape in shapes:
        try:
            return trace(module, _sample(module, shape)), shape
        except TraceFailure as failure:
            first = first or failure
        except Exception as exc:  # fx raises TraceError, TypeError, ... on dynamic code
            first = first or exc
    if isinstance(first, TraceFailure):
        node, exc = first.args
        locate = Walker(module, None, shapes[0]).where
        culprit = _batch_lost(node.graph)
        if culprit is not None:
            raise UnsupportedLayerError(
                f"{locate(culprit)}: does not keep the batch dimension first (a batch of {TRACE_BATCH} samples "
                f"becomes shape {tuple(culprit.meta['value'].shape)}); reshape with x.view(x.size(0), -1) or "
                "torch.flatten(x, 1)"
            ) from None
        where = locate(node) if node.op != "placeholder" else "the input"
        raise InvalidNetworkError(
            f"{where} fails on a per-sample input of shape {shapes[0]}: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
            "check input_shape (the shape of one sample, e.g. (1, 28, 28))"
        ) from None
    raise UnsupportedLayerError(
        f"cannot follow the forward pass of {type_name(type(module))} with torch.fx "
        f"({type(first).__name__}: {first}). Expected a forward without control flow on tensor values; "
        "register_module() a converter for the module whose forward cannot be traced"
    ) from None


def _batch_lost(graph: fx.Graph):
    """The first traced node computed from the input whose value lost the leading batch dimension."""
    depends: set = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(n in depends for n in node.all_input_nodes):
            depends.add(node)
            value = node.meta.get("value")
            if isinstance(value, torch.Tensor) and (value.dim() == 0 or value.shape[0] != TRACE_BATCH):
                return node
    return None


def from_torch(module: nn.Module, input_shape=None) -> ir.Network:
    """Export a torch module to a float64 :class:`lipsdp.ir.Network` by following its forward.

    Args:
        module: an ``nn.Module`` whose forward chains supported layers and functions, with
            residual additions ``x + f(x)`` and arithmetic with constants; evaluated in eval mode
            (each submodule's training flag is restored afterwards).
        input_shape: the shape of one sample, e.g. ``(3, 32, 32)``; a shape with a leading batch
            dimension (``(1, 3, 32, 32)``) is accepted when the shape as given does not fit the
            model.  Required when the model contains a convolution, inferred from the first
            Linear layer otherwise.

    The exported network's input is the C-order flattened sample ``x.reshape(len(x), -1)`` and
    its output the flattened model output.

    Raises:
        UnsupportedLayerError: listing every unsupported operation (qualified submodule name,
            type, source line), or when the forward cannot be traced.
        InvalidNetworkError: empty model, shapes that do not chain, missing input_shape.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedLayerError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    register_optional()
    flags = {m: m.training for m in module.modules()}
    module.eval()
    root = nn.Sequential(module) if converter_for(module) is not None else module
    try:
        if input_shape is None:
            shapes = [_infer_input_shape(root)]
        else:
            shape = _check_shape(input_shape)
            shapes = [shape] + ([shape[1:]] if len(shape) > 1 else [])
        graph, shape = _trace(root, shapes)
        if not any(node.op.startswith("call_") for node in graph.nodes):
            raise InvalidNetworkError(
                f"the model {type(module).__name__} is empty (its forward applies no layer); expected at least one layer"
            )
        walker = Walker(root, graph, shape)
        with torch.no_grad():
            out = walker.run()
    finally:
        for m, flag in flags.items():
            m.training = flag
    if walker.issues:
        raise UnsupportedLayerError(_unsupported_message(module, walker.issues))
    layers = list(out.layers)
    if not layers:
        raise InvalidNetworkError(
            f"the model {type(module).__name__} computes no affine map or activation (only reshapes/identities)"
        )
    net = ir.Network(_with_identities(layers, numel(shape)), name=type(module).__name__)
    _self_check(net, graph, module)
    return net


#: relative agreement required between the exported network and ``forward`` on the trace's sample
SELF_CHECK_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def _self_check(net: ir.Network, graph: fx.Graph, module: nn.Module) -> None:
    """The exported network must give, on the trace's sample batch, what ``forward`` gave when it
    ran there (the trace records the real output, in-place operations included): a guard against
    any operation the graph walk misread."""
    nodes = list(graph.nodes)
    sample = next(n for n in nodes if n.op == "placeholder").meta["value"]
    want = nodes[-1].args[0].meta.get("value") if isinstance(nodes[-1].args[0], fx.Node) else None
    if not isinstance(want, torch.Tensor):  # pragma: no cover - the walk already required one tensor
        return
    want = f64(want).reshape(len(sample), -1)
    got = net.forward(f64(sample).reshape(len(sample), -1))
    rtol = SELF_CHECK_RTOL.get(sample.dtype, 1e-2)
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got - want).max())
    if not err <= rtol * scale:
        raise InvalidNetworkError(
            f"the exported network does not reproduce {type(module).__name__}.forward on a random sample "
            f"(max difference {err:.3g}, relative {err / scale:.3g}); an in-place operation whose result is not "
            "used (x.relu_(), x.add_(y)) or another side effect in forward is the usual cause: assign results "
            "(x = x.relu())"
        )


def _with_identities(layers: list, dim: int) -> list:
    """Insert identity affine maps where the IR needs an affine layer: first, last and between
    two activations (e.g. ``relu(tanh(x))``)."""
    out: list = []
    for layer in layers:
        if isinstance(layer, ir.Activation) and (not out or isinstance(out[-1], ir.Activation)):
            out.append(identity(dim))
        if isinstance(layer, ir.Residual) and not out:
            out.append(identity(dim))
        out.append(layer)
        if isinstance(layer, ir.Affine):
            dim = layer.out_dim
    if not isinstance(out[-1], ir.Affine):
        out.append(identity(dim))
    return out


def _unsupported_message(module: nn.Module, issues: list[str]) -> str:
    lines = [f"{len(issues)} unsupported operation(s) in {type(module).__name__}:"]
    lines += [f"  - {issue}" for issue in issues]
    deel_error = OPTIONAL_STATE.get("deel")
    if deel_error and any("deel." in issue for issue in issues):
        lines.append(f"deel-torchlip could not be imported ({deel_error}), so its modules have no converter")
    lines.append(
        "Supported: Linear, Conv1d/2d, ConvTranspose1d/2d, BatchNorm1d/2d, padding, Avg/MaxPool1d/2d (also adaptive), "
        "Flatten, Dropout, Identity, ReLU, LeakyReLU, Tanh, Sigmoid, ELU, Softplus, SiLU, GELU, Hardtanh, arithmetic "
        "with constants, residual sums, lipsdp.models MaxMin/GroupSort/Householder and deel-torchlip's Lipschitz "
        "layers; add others with lipsdp.models.register_module(type, converter)"
    )
    return "\n".join(lines)
