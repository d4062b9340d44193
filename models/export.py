"""Export torch modules to the lipsdp IR (:class:`lipsdp.ir.Network`).

:func:`from_torch` follows the *forward graph* (``torch.fx`` symbolic tracing), never state_dict
key names.  Each traced operation is converted by one function looked up in a registry:

* modules: ``_MODULE_CONVERTERS[torch type]`` (looked up along the type's MRO, so subclasses and
  parametrised modules — whose class torch replaces by a subclass — use their base's
  converter); extend with :func:`register_module`;
* functions / tensor methods called in ``forward`` (``F.relu``, ``torch.flatten``,
  ``x.view``, ...): ``_FUNCTION_CONVERTERS[function or method name]``; extend with
  :func:`register_function`.

A module converter has the signature ``converter(module, shape) -> (layers, out_shape)`` where
``shape`` is the per-sample input shape (no batch dimension), ``layers`` a list of IR layers
(:class:`~lipsdp.ir.Affine`, an :class:`~lipsdp.ir.Activation`, :class:`~lipsdp.ir.Residual`) acting
on the C-order flattened sample, and ``out_shape`` the per-sample output shape.  A function
converter has the signature ``converter(shape, *args, **kwargs)`` with the non-tensor
arguments of the call.  A converter that meets a configuration it cannot export raises
:class:`lipsdp.errors.UnsupportedLayerError`; the exporter collects every such case into one error.

Residual connections: an addition ``a + b`` where ``b`` is computed from ``a`` by a chain
(``x + f(x)``, :class:`lipsdp.models.Residual`) becomes ``ir.Residual(body)``.

Everything in the IR is float64; torch weights are read in eval mode (BatchNorm running
statistics, parametrised weights as forward uses them) and converted exactly.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from lipsdp import ir
from lipsdp.errors import InvalidNetworkError, LipSDPError, UnsupportedLayerError

from . import modules as lm

__all__ = [
    "from_torch",
    "register_module",
    "register_function",
    "implicit_to_ir",
    "ImplicitSpec",
    "supported_modules",
]

ModuleConverter = Callable[[nn.Module, tuple], tuple[list, tuple]]

_MODULE_CONVERTERS: dict[type, ModuleConverter] = {}
_FUNCTION_CONVERTERS: dict[object, Callable] = {}

#: batch size of the shape-only ("meta") tensors used to evaluate reshapes; an unusual prime so
#: that a reshape hard-coding a batch size is caught.
_META_BATCH = 7919


def register_module(torch_type: type, converter: ModuleConverter) -> None:
    """Register ``converter(module, shape) -> (ir_layers, out_shape)`` for ``torch_type``.

    ``shape`` is the per-sample input shape, e.g. ``(features,)`` or ``(C, H, W)``; the IR
    layers act on the C-order flattened sample.  The type's modules become leaves of the trace
    (their ``forward`` is not followed), and subclasses use the converter too.  Registering a
    type again replaces its converter.
    """
    if not (isinstance(torch_type, type) and issubclass(torch_type, nn.Module)):
        raise UnsupportedLayerError(f"register_module: expected a torch.nn.Module subclass, got {torch_type!r}")
    if not callable(converter):
        raise UnsupportedLayerError(f"register_module: expected a callable converter, got {type(converter).__name__}")
    _MODULE_CONVERTERS[torch_type] = converter


def register_function(function, converter: Callable) -> None:
    """Register ``converter(shape, *args, **kwargs) -> (ir_layers, out_shape)`` for a function
    called in ``forward`` (e.g. ``torch.nn.functional.relu``) or a tensor method given by name
    (e.g. ``"relu"`` for ``x.relu()``).  ``args``/``kwargs`` are the call's non-tensor arguments.
    """
    if not (callable(function) or isinstance(function, str)):
        raise UnsupportedLayerError(f"register_function: expected a function or a method name, got {function!r}")
    if not callable(converter):
        raise UnsupportedLayerError(f"register_function: expected a callable converter, got {type(converter).__name__}")
    _FUNCTION_CONVERTERS[function] = converter


def supported_modules() -> list[str]:
    """Qualified names of the module types with a converter (after optional imports)."""
    _register_optional()
    return sorted(_type_name(t) for t in _MODULE_CONVERTERS)


def _converter_for(module: nn.Module) -> ModuleConverter | None:
    for cls in type(module).__mro__:
        if cls in _MODULE_CONVERTERS:
            return _MODULE_CONVERTERS[cls]
    return None


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _function_name(fn) -> str:
    if isinstance(fn, str):
        return f"Tensor.{fn}"
    name = getattr(fn, "__name__", repr(fn))
    for public, namespace in (("torch.nn.functional", F), ("torch", torch)):
        if getattr(namespace, name, None) is fn:
            return f"{public}.{name}"
    return f"{getattr(fn, '__module__', None) or ''}.{name}".lstrip(".")


# ---------------------------------------------------------------------------------------------
# Numeric helpers (float64 throughout)
# ---------------------------------------------------------------------------------------------


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def _numel(shape: tuple) -> int:
    return int(math.prod(shape))


def _linear_operator(fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple) -> tuple[np.ndarray, tuple]:
    """The matrix of a linear map on per-sample tensors of ``shape``, found by pushing the
    identity basis through ``fn`` in float64.  Returns (W with W x_flat = fn(x)_flat, out shape)."""
    n = _numel(shape)
    with torch.no_grad():
        out = fn(torch.eye(n, dtype=torch.float64).reshape((n,) + tuple(shape)))
    return _f64(out.reshape(n, -1)).T, tuple(out.shape[1:])


def _permutation(perm: np.ndarray) -> np.ndarray:
    """P with (P z)[i] = z[perm[i]]."""
    return np.eye(perm.size)[perm]


def _channel_groups(shape: tuple, group_size: int, what: str) -> np.ndarray:
    """Flat indices, ordered so that every ``group_size`` consecutive entries form one group of
    consecutive channels (dimension 0 of ``shape``) at one spatial position."""
    channels = shape[0]
    if channels % group_size:
        raise InvalidNetworkError(
            f"{what}: {channels} channels cannot be split into groups of {group_size} (input shape {shape})"
        )
    idx = np.arange(_numel(shape)).reshape(shape)
    return np.moveaxis(idx.reshape((channels // group_size, group_size) + tuple(shape[1:])), 1, -1).ravel()


def _grouped(activation: ir.Activation, perm: np.ndarray, perm_out: np.ndarray | None = None,
             scale: float = 1.0) -> list:
    """[P_in, activation, scale · P_outᵀ]: the IR activation (contiguous groups) conjugated by
    the permutations that bring the module's groups next to each other.  Identity maps are left
    out (the IR merges the others into the neighbouring affine layers)."""
    perm_out = perm if perm_out is None else perm_out
    layers = []
    identity = np.arange(perm.size)
    if not np.array_equal(perm, identity):
        layers.append(ir.Affine(_permutation(perm)))
    layers.append(activation)
    if scale != 1.0 or not np.array_equal(perm_out, identity):
        layers.append(ir.Affine(scale * _permutation(perm_out).T))
    return layers


def _merge_affines(layers) -> list:
    """Merge consecutive Affine layers: W2 (W1 x + b1) + b2."""
    out: list = []
    for layer in layers:
        if isinstance(layer, ir.Affine) and out and isinstance(out[-1], ir.Affine):
            prev = out.pop()
            bias = None
            if prev.bias is not None or layer.bias is not None:
                b1 = prev.bias if prev.bias is not None else np.zeros(prev.out_dim)
                bias = layer.weight @ b1 + (layer.bias if layer.bias is not None else 0.0)
            layer = ir.Affine(layer.weight @ prev.weight, bias, "+".join(n for n in (prev.name, layer.name) if n))
        out.append(layer)
    return out


# ---------------------------------------------------------------------------------------------
# Converters: torch.nn
# ---------------------------------------------------------------------------------------------


def _convert_linear(m: nn.Linear, shape: tuple):
    weight = _f64(m.weight)  # the effective (possibly parametrised) weight forward uses
    if shape[-1] != weight.shape[1]:
        raise InvalidNetworkError(
            f"Linear layer expects {weight.shape[1]} input features but receives shape {shape}; "
            "check input_shape or add a Flatten before it"
        )
    bias = None if m.bias is None else _f64(m.bias)
    copies = _numel(shape[:-1])  # nn.Linear acts on the last dimension
    if copies > 1:
        weight = np.kron(np.eye(copies), weight)
        bias = None if bias is None else np.tile(bias, copies)
    return [ir.Affine(weight, bias)], tuple(shape[:-1]) + (m.weight.shape[0],)


def _conv_layers(m: nn.modules.conv._ConvNd, shape: tuple, pre: Callable = lambda x: x):
    """The exact dense operator of a Conv1d/Conv2d on inputs of ``shape`` ((C, L) or (C, H, W)):
    the identity basis pushed through ``F.conv`` (bias excluded) in float64, then the bias."""
    spatial = len(m.kernel_size)
    if len(shape) != spatial + 1:
        want = "(C, L)" if spatial == 1 else "(C, H, W)"
        raise InvalidNetworkError(
            f"{type(m).__name__} expects a per-sample input of shape {want}, got {shape}; pass input_shape={want}"
        )
    if shape[0] != m.in_channels:
        raise InvalidNetworkError(f"{type(m).__name__} expects {m.in_channels} input channels, got shape {shape}")
    conv = F.conv1d if spatial == 1 else F.conv2d
    weight = m.weight.detach().to(device="cpu", dtype=torch.float64)

    def op(x):
        x = pre(x)
        if m.padding_mode != "zeros":
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            return conv(x, weight, None, m.stride, 0, m.dilation, m.groups)
        return conv(x, weight, None, m.stride, m.padding, m.dilation, m.groups)

    W, out_shape = _linear_operator(op, shape)
    bias = None if m.bias is None else np.repeat(_f64(m.bias), _numel(out_shape[1:]))
    return [ir.Affine(W, bias)], out_shape


def _convert_conv(m, shape):
    return _conv_layers(m, shape)


def _convert_batchnorm(m: nn.modules.batchnorm._BatchNorm, shape: tuple):
    """Eval-mode BatchNorm  y = γ (x − μ) / sqrt(σ² + ε) + β  as a diagonal Affine."""
    if m.running_mean is None or m.running_var is None:
        raise UnsupportedLayerError(
            "BatchNorm without running statistics (track_running_stats=False) normalises with batch "
            "statistics even in eval mode, which is not a fixed affine map"
        )
    if shape[0] != m.num_features:
        raise InvalidNetworkError(f"{type(m).__name__} expects {m.num_features} channels, got shape {shape}")
    scale = 1.0 / np.sqrt(_f64(m.running_var) + m.eps)
    if m.weight is not None:
        scale = scale * _f64(m.weight)
    shift = -_f64(m.running_mean) * scale
    if m.bias is not None:
        shift = shift + _f64(m.bias)
    per_channel = _numel(shape[1:])
    return [ir.Affine(np.diag(np.repeat(scale, per_channel)), np.repeat(shift, per_channel))], shape


def _check_batchnorm_rank(ranks: tuple[int, ...]):
    def convert(m, shape):
        if len(shape) not in ranks:
            raise InvalidNetworkError(
                f"{type(m).__name__} expects a per-sample input with {' or '.join(map(str, ranks))} "
                f"dimension(s), got shape {shape}"
            )
        return _convert_batchnorm(m, shape)

    return convert


def _skip(m, shape):
    """Identity in eval mode (Dropout, Identity)."""
    return [], shape


def _reshape_module(m, shape):
    """A module that only reshapes (Flatten, Unflatten): the flat C-order vector is unchanged."""
    return [], _meta_reshape(lambda t: m(t), shape)


def _meta_reshape(fn: Callable, shape: tuple) -> tuple:
    out = fn(torch.empty((_META_BATCH,) + tuple(shape), device="meta"))
    if out.dim() == 0 or out.shape[0] != _META_BATCH or out.numel() != _META_BATCH * _numel(shape):
        raise UnsupportedLayerError(
            f"a reshape must keep the batch dimension first (e.g. x.view(x.size(0), -1) or torch.flatten(x, 1)); "
            f"it maps a per-sample shape {shape} to a batch of shape {tuple(out.shape)} when the batch size "
            f"is {_META_BATCH}"
        )
    return tuple(out.shape[1:])


def _slope(fn: str, **params):
    return [ir.SlopeRestricted(fn=fn, params=params)]


def _gelu_params(approximate: str = "none"):
    if approximate != "none":
        raise UnsupportedLayerError(
            f"GELU(approximate={approximate!r}) is not the exact GELU the IR evaluates; "
            "use approximate='none' (slope bounds of the tanh form are not implemented)"
        )
    return {}


# torch.nn activation type -> (IR function name, module -> params)
_SLOPE_MODULES: dict[type, tuple[str, Callable]] = {
    nn.ReLU: ("relu", lambda m: {}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": float(m.negative_slope)}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.ELU: ("elu", lambda m: {"alpha": float(m.alpha)}),
    nn.Softplus: ("softplus", lambda m: {"beta": float(m.beta), "threshold": float(m.threshold)}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.GELU: ("gelu", lambda m: _gelu_params(m.approximate)),
    nn.Hardtanh: ("hardtanh", lambda m: {"min_val": float(m.min_val), "max_val": float(m.max_val)}),
}


def _slope_module_converter(fn: str, params: Callable) -> ModuleConverter:
    def convert(m, shape):
        return _slope(fn, **params(m)), shape

    return convert


# ---------------------------------------------------------------------------------------------
# Converters: lipsdp.models
# ---------------------------------------------------------------------------------------------


def _convert_groupsort(m: lm.GroupSort, shape: tuple):
    g = m.group_size
    return _grouped(ir.GroupSort(g), _channel_groups(shape, g, type(m).__name__)), shape


def _convert_householder(m: lm.Householder, shape: tuple):
    g = m.group_size
    perm = _channel_groups(shape, g, "Householder")
    V = _f64(m.unit_vectors())
    n_groups = shape[0] // g
    if V.shape[0] not in (1, n_groups):
        raise InvalidNetworkError(f"Householder: {V.shape[0]} vectors for {n_groups} channel groups")
    # groups are ordered (channel group, spatial position) by _channel_groups
    V = np.repeat(np.broadcast_to(V, (n_groups, g)), _numel(shape[1:]), axis=0)
    return _grouped(ir.Householder(V), perm), shape


def _convert_implicit(m, shape):
    raise UnsupportedLayerError(
        "an implicit (equilibrium) layer is not a feedforward map; export it with lipsdp.models.implicit_to_ir(module)"
    )


# ---------------------------------------------------------------------------------------------
# Converters: deel-torchlip (registered when it imports)
# ---------------------------------------------------------------------------------------------


def _deel_groupsort(m, shape):
    """deel GroupSort: contiguous channel groups sorted *ascending*, times k (``_coefficient_lip``);
    ``group_size=None`` (FullSort) sorts all channels.  IR: descending sort + group reversal."""
    channels = shape[0]
    g = channels if m.group_size is None or m.group_size > channels else int(m.group_size)
    k = float(m._coefficient_lip)
    if g == 1:
        return ([ir.Affine(k * np.eye(_numel(shape)))] if k != 1.0 else []), shape
    perm = _channel_groups(shape, g, type(m).__name__)
    ascending = perm.reshape(-1, g)[:, ::-1].ravel()
    return _grouped(ir.GroupSort(g), perm, ascending, scale=k), shape


def _deel_maxmin(m, shape):
    """deel MaxMin: k · cat(ReLU(x), ReLU(−x)) along ``dim`` (doubles the width) =
    Affine [I; −I] (in the concatenation order) → ReLU → k I."""
    dim = 1 if m._dim is None else (m._dim if m._dim >= 0 else m._dim + len(shape) + 1)
    W, out_shape = _linear_operator(lambda x: torch.cat((x, -x), dim=dim), shape)
    k = float(m._coefficient_lip)
    layers = [ir.Affine(W), ir.SlopeRestricted(fn="relu")]
    if k != 1.0:
        layers.append(ir.Affine(k * np.eye(W.shape[0])))
    return layers, out_shape


def _deel_householder(m, shape):
    """deel HouseHolder: pairs (x_j, y_j) = (channel j, channel j + C/2) with angle θ_j; reflects
    by [[cos θ, sin θ], [sin θ, −cos θ]] = I − 2 v vᵀ, v = (sin θ/2, −cos θ/2), when vᵀz > 0.
    In the IR convention (keep when uᵀz > 0) that is u = −v = (−sin θ/2, cos θ/2); the two agree
    on vᵀz = 0 too, where the reflection is the identity."""
    channels = shape[0]
    theta = _f64(m.theta).ravel()
    if channels != 2 * theta.size:
        raise InvalidNetworkError(f"deel HouseHolder with {theta.size} angles expects {2 * theta.size} channels, got shape {shape}")
    idx = np.arange(_numel(shape)).reshape(shape)
    perm = np.moveaxis(idx.reshape((2, channels // 2) + tuple(shape[1:])), 0, -1).ravel()
    U = np.stack([-np.sin(theta / 2), np.cos(theta / 2)], axis=1)
    return _grouped(ir.Householder(np.repeat(U, _numel(shape[1:]), axis=0)), perm), shape


def _deel_padconv(m, shape):
    """deel PadConv1d/2d (and SpectralConv*, FrobeniusConv2d): its own padding (e.g. symmetric)
    then the torch convolution with the effective (parametrised) weight."""
    return _conv_layers(m, shape, pre=m.pad)


_OPTIONAL_STATE: dict[str, object] = {}


def _register_optional() -> None:
    """Register deel-torchlip's modules if it imports (once)."""
    if "deel" in _OPTIONAL_STATE:
        return
    try:
        from deel import torchlip
    except Exception as exc:  # not installed, or broken against this torch
        _OPTIONAL_STATE["deel"] = f"{type(exc).__name__}: {exc}"
        return
    _OPTIONAL_STATE["deel"] = None
    register_module(torchlip.GroupSort, _deel_groupsort)  # GroupSort2 and FullSort are subclasses
    register_module(torchlip.MaxMin, _deel_maxmin)
    register_module(torchlip.HouseHolder, _deel_householder)
    for name in ("PadConv1d", "PadConv2d"):
        if hasattr(torchlip, name):
            register_module(getattr(torchlip, name), _deel_padconv)
    # SpectralLinear / FrobeniusLinear subclass nn.Linear: the Linear converter reads the
    # parametrised weight (normalisation and k_coef_lip included).


# ---------------------------------------------------------------------------------------------
# Converters: functions and tensor methods
# ---------------------------------------------------------------------------------------------


def _fn_slope(fn: str, params: Callable = lambda *a, **k: {}):
    def convert(shape, *args, **kwargs):
        return _slope(fn, **params(*args, **kwargs)), shape

    return convert


def _fn_reshape(call: Callable):
    def convert(shape, *args, **kwargs):
        return [], _meta_reshape(lambda t: call(t, *args, **kwargs), shape)

    return convert


def _fn_dropout(shape, p=0.5, training=True, inplace=False):
    if training:
        raise UnsupportedLayerError(
            "F.dropout is called with training=True (its default), so it drops units even in eval mode; "
            "pass training=self.training or use nn.Dropout"
        )
    return [], shape


_LEAKY = lambda negative_slope=0.01, inplace=False: {"negative_slope": float(negative_slope)}  # noqa: E731
_ELU = lambda alpha=1.0, inplace=False: {"alpha": float(alpha)}  # noqa: E731
_SOFTPLUS = lambda beta=1.0, threshold=20.0: {"beta": float(beta), "threshold": float(threshold)}  # noqa: E731
_HARDTANH = lambda min_val=-1.0, max_val=1.0, inplace=False: {"min_val": float(min_val), "max_val": float(max_val)}  # noqa: E731
_GELU = lambda approximate="none": _gelu_params(approximate)  # noqa: E731

_BUILTIN_FUNCTIONS: dict[object, Callable] = {
    F.relu: _fn_slope("relu"), torch.relu: _fn_slope("relu"), "relu": _fn_slope("relu"),
    F.leaky_relu: _fn_slope("leaky_relu", _LEAKY),
    torch.tanh: _fn_slope("tanh"), F.tanh: _fn_slope("tanh"), "tanh": _fn_slope("tanh"),
    torch.sigmoid: _fn_slope("sigmoid"), F.sigmoid: _fn_slope("sigmoid"), "sigmoid": _fn_slope("sigmoid"),
    F.elu: _fn_slope("elu", _ELU),
    F.softplus: _fn_slope("softplus", _SOFTPLUS),
    F.silu: _fn_slope("silu", lambda inplace=False: {}),
    F.gelu: _fn_slope("gelu", _GELU),
    F.hardtanh: _fn_slope("hardtanh", _HARDTANH),
    F.relu6: _fn_slope("hardtanh", lambda inplace=False: {"min_val": 0.0, "max_val": 6.0}),
    torch.flatten: _fn_reshape(torch.flatten), torch.reshape: _fn_reshape(torch.reshape),
    "flatten": _fn_reshape(torch.Tensor.flatten), "view": _fn_reshape(torch.Tensor.view),
    "reshape": _fn_reshape(torch.Tensor.reshape), "contiguous": lambda shape, *a, **k: ([], shape),
    F.dropout: _fn_dropout,
}

_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__"}


def _register_builtins() -> None:
    for torch_type, (fn, params) in _SLOPE_MODULES.items():
        register_module(torch_type, _slope_module_converter(fn, params))
    register_module(nn.Linear, _convert_linear)
    register_module(nn.Conv1d, _convert_conv)
    register_module(nn.Conv2d, _convert_conv)
    register_module(nn.BatchNorm1d, _check_batchnorm_rank((1, 2)))
    register_module(nn.BatchNorm2d, _check_batchnorm_rank((3,)))
    for torch_type in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity):
        register_module(torch_type, _skip)
    register_module(nn.Flatten, _reshape_module)
    register_module(nn.Unflatten, _reshape_module)
    register_module(lm.GroupSort, _convert_groupsort)  # MaxMin is a subclass
    register_module(lm.Householder, _convert_householder)
    register_module(lm.ImplicitLayer, _convert_implicit)
    for fn, conv in _BUILTIN_FUNCTIONS.items():
        register_function(fn, conv)


_register_builtins()


# ---------------------------------------------------------------------------------------------
# Graph walk
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Tensor:
    """A traced tensor: the IR layers from the model input to it, and its per-sample shape
    (``None`` once an unsupported operation came before it)."""

    layers: tuple
    shape: tuple | None


@dataclass(frozen=True, eq=False)
class _Opaque:
    """A parameter or buffer used directly in forward (``self.weight``)."""

    what: str


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _converter_for(m) is not None or super().is_leaf_module(m, qualname)


def _trace(module: nn.Module) -> fx.GraphModule:
    root = nn.Sequential(module) if _converter_for(module) is not None else module
    try:
        graph = _Tracer().trace(root)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ... on dynamic code
        raise UnsupportedLayerError(
            f"cannot follow the forward pass of {_type_name(type(module))} with torch.fx "
            f"({type(exc).__name__}: {exc}). Expected a forward that chains layers without data-dependent "
            "control flow; try an nn.Sequential, or register_module() a converter for the module whose "
            "forward cannot be traced"
        ) from None
    return fx.GraphModule(root, graph)


class _Walker:
    """Walks an fx graph in order, converting each node; collects every unsupported op."""

    def __init__(self, gm: fx.GraphModule, input_shape: tuple):
        self.gm = gm
        self.input_shape = input_shape
        self.issues: list[str] = []
        self.env: dict[fx.Node, object] = {}
        self.placeholders = 0

    def issue(self, node: fx.Node, what: str, reason: str = "") -> _Tensor:
        self.issues.append(f"{what}{': ' + reason if reason else ''}")
        return _Tensor((), None)

    def run(self) -> _Tensor:
        result = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.placeholders += 1
                if self.placeholders == 1:
                    self.env[node] = _Tensor((), self.input_shape)
                else:
                    self.env[node] = self.issue(node, f"second forward input {node.target!r}",
                                                "only single-input models are supported")
            elif node.op == "get_attr":
                self.env[node] = _Opaque(f"parameter or buffer '{node.target}' used directly in forward")
            elif node.op == "output":
                result = fx.node.map_arg(node.args[0], self.env.__getitem__)
            else:
                self.env[node] = self.call(node)
        if not isinstance(result, _Tensor):
            self.issues.append(f"model output of type {type(result).__name__}: expected a single tensor")
        return result

    # --- one call node ---------------------------------------------------------------------
    def call(self, node: fx.Node):
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.env.__getitem__)
        target = node.target
        if node.op == "call_module":
            module = self.gm.get_submodule(target)
            what = f"'{target}' ({_type_name(type(module))})"
            converter = _converter_for(module)
            run = (lambda shape, *a, **k: converter(module, shape)) if converter else None
        else:
            what = f"{_function_name(target)} (graph node '{node.name}')"
            if target in _ADD:
                return self.add(node, what, args, kwargs)
            introspected = self.introspect(target, args, kwargs)
            if introspected is not NotImplemented:
                return introspected
            converter = _FUNCTION_CONVERTERS.get(target)
            run = converter
        extra = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, (_Tensor, _Opaque))]
        found = "; ".join(a.what if isinstance(a, _Opaque) else "a second tensor" for a in extra)
        # after an unsupported op shapes are unknown: propagate that silently, but keep listing
        # every op that has no converter
        poisoned = any(isinstance(a, _Tensor) and a.shape is None for a in list(args) + list(kwargs.values()))
        if run is None:
            if poisoned and target in (operator.getitem, getattr):
                return _Tensor((), None)
            return self.issue(node, what, "no converter registered for it" + (f" (it also uses {found})" if found else ""))
        if poisoned:
            return _Tensor((), None)
        if not args or not isinstance(args[0], _Tensor):
            return self.issue(node, what, "expected a tensor computed from the model input as first argument")
        if extra or (node.op == "call_module" and (len(args) > 1 or kwargs)):
            return self.issue(node, what, f"expected one tensor argument, got {found or 'extra arguments'}")
        x = args[0]
        try:
            layers, shape = run(x.shape, *args[1:], **kwargs)
        except UnsupportedLayerError as exc:
            return self.issue(node, what, str(exc))
        except LipSDPError as exc:
            raise type(exc)(f"{what}: {exc}") from None
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise InvalidNetworkError(
                f"{what} could not be exported for the per-sample input shape {x.shape}: {exc}"
            ) from None
        name = target if node.op == "call_module" else node.name
        layers = tuple(layer if getattr(layer, "name", "") else replace(layer, name=name) for layer in layers)
        return _Tensor(x.layers + layers, tuple(int(s) for s in shape))

    def introspect(self, target, args, kwargs):
        """Shape plumbing (x.size(0), x.shape[0], ...) and constant folding of non-tensor calls."""
        values = list(args) + list(kwargs.values())
        if target in ("size", "dim") or (target is getattr and len(args) == 2 and args[1] == "shape"):
            x = args[0]
            if not isinstance(x, _Tensor) or x.shape is None:
                return _Tensor((), None)
            size = torch.Size((_META_BATCH,) + x.shape)
            if target == "dim":
                return len(size)
            return size if target is getattr or len(args) == 1 else size[args[1]]
        if callable(target) and not any(isinstance(v, (_Tensor, _Opaque)) for v in values):
            return target(*args, **kwargs)  # e.g. operator.getitem on a size, integer arithmetic
        return NotImplemented

    def add(self, node: fx.Node, what: str, args, kwargs):
        """``a + b`` with ``b = f(a)`` computed by a chain from ``a`` -> ir.Residual(f)."""
        if len(args) != 2 or kwargs or not all(isinstance(a, _Tensor) for a in args):
            return self.issue(node, what, "only x + f(x) of two traced tensors is supported (no constants or alpha)")
        short, long = sorted(args, key=lambda t: len(t.layers))
        if short.shape is None or long.shape is None:
            return _Tensor((), None)
        k = len(short.layers)
        if not all(p is q for p, q in zip(long.layers[:k], short.layers)):
            return self.issue(node, what, "an addition of two branches that is not x + f(x) (f a chain from x)")
        if long.shape != short.shape:
            return self.issue(node, what, f"residual branch changes the shape from {short.shape} to {long.shape}")
        n = _numel(short.shape)
        body = _merge_affines(long.layers[k:])
        if body and isinstance(body[0], ir.Activation):
            body.insert(0, ir.Affine(np.eye(n), name="identity"))
        if not body:  # x + x
            block = ir.Affine(2 * np.eye(n), name=node.name)
        elif len(body) == 1 and isinstance(body[0], ir.Affine):  # x + (W x + b)
            block = ir.Affine(np.eye(n) + body[0].weight, body[0].bias, body[0].name)
        elif len(body) in (2, 3) and isinstance(body[1], ir.Activation) and (len(body) == 2 or isinstance(body[2], ir.Affine)):
            block = ir.Residual(tuple(body), name=node.name)
        else:
            kinds = ", ".join(type(layer).__name__ for layer in body)
            return self.issue(node, what, f"residual body must be affine → activation [→ affine], got ({kinds})")
        return _Tensor(short.layers + (block,), short.shape)


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def _infer_input_shape(gm: fx.GraphModule) -> tuple:
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.modules.conv._ConvNd) or hasattr(module, "in_channels"):
            raise InvalidNetworkError(
                f"cannot infer the input shape: '{node.target}' ({type(module).__name__}) is a convolution; "
                "pass input_shape=(C, H, W) (Conv2d) or (C, L) (Conv1d) without the batch dimension"
            )
        if isinstance(getattr(module, "in_features", None), int):
            return (module.in_features,)
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


def from_torch(module: nn.Module, input_shape=None) -> ir.Network:
    """Export a torch module to a float64 :class:`lipsdp.ir.Network` by following its forward.

    Args:
        module: an ``nn.Sequential`` or an ``nn.Module`` whose forward is a chain of supported
            layers (optionally with residual additions ``x + f(x)``); evaluated in eval mode
            (each submodule's training flag is restored afterwards).
        input_shape: per-sample input shape without the batch dimension, e.g. ``(3, 32, 32)``;
            required when the model contains a convolution, inferred from the first Linear
            layer otherwise.

    The exported network's input is the C-order flattened sample ``x.reshape(len(x), -1)`` and
    its output the flattened model output.

    Raises:
        UnsupportedLayerError: listing every unsupported module / function (qualified name and
            type), or when the forward cannot be traced.
        InvalidNetworkError: empty model, shapes that do not chain, missing input_shape.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedLayerError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    _register_optional()
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        gm = _trace(module)
        if not any(node.op.startswith("call_") for node in gm.graph.nodes):
            raise InvalidNetworkError(
                f"the model {type(module).__name__} is empty (its forward applies no layer); expected at least one layer"
            )
        shape = _infer_input_shape(gm) if input_shape is None else _check_shape(input_shape)
        walker = _Walker(gm, shape)
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
    return ir.Network(_with_identities(layers, _numel(shape)), name=type(module).__name__)


def _with_identities(layers: list, dim: int) -> list:
    """Insert identity affine maps where the IR needs an affine layer: first, last and between
    two activations (e.g. ``relu(tanh(x))``)."""
    out: list = []
    for layer in layers:
        if isinstance(layer, ir.Activation) and (not out or isinstance(out[-1], ir.Activation)):
            out.append(ir.Affine(np.eye(dim), name="identity"))
        out.append(layer)
        if isinstance(layer, ir.Affine):
            dim = layer.out_dim
    if not isinstance(out[-1], ir.Affine):
        out.append(ir.Affine(np.eye(dim), name="identity"))
    return out


def _unsupported_message(module: nn.Module, issues: list[str]) -> str:
    lines = [f"{len(issues)} unsupported operation(s) in {type(module).__name__}:"]
    lines += [f"  - {issue}" for issue in issues]
    deel_error = _OPTIONAL_STATE.get("deel")
    if deel_error and any("deel." in issue for issue in issues):
        lines.append(f"deel-torchlip could not be imported ({deel_error}), so its modules have no converter")
    lines.append(
        "Supported: Linear, Conv1d/Conv2d, BatchNorm1d/2d, Flatten, Dropout, Identity, ReLU, LeakyReLU, Tanh, "
        "Sigmoid, ELU, Softplus, SiLU, GELU, Hardtanh, lipsdp.models MaxMin/GroupSort/Householder/Residual "
        "and deel-torchlip's Lipschitz layers; add others with lipsdp.models.register_module(type, converter)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Implicit models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImplicitSpec:
    """An implicit model z = φ(W z + U x + b), y = C z as float64 numpy arrays.

    ``activation`` is the IR activation (``lipsdp.ir.GroupSort`` or ``SlopeRestricted('relu')``)
    sized to the hidden width; groups are contiguous.  Shapes: W (n, n), U (n, d), C (m, n), b (n,).
    """

    W: np.ndarray
    U: np.ndarray
    C: np.ndarray
    b: np.ndarray
    activation: object


def implicit_to_ir(module: "lm.ImplicitLayer") -> ImplicitSpec:
    """Export a :class:`lipsdp.models.ImplicitLayer` to an :class:`ImplicitSpec` (math.md §8)."""
    if not isinstance(module, lm.ImplicitLayer):
        raise UnsupportedLayerError(
            f"implicit_to_ir: expected a lipsdp.models.ImplicitLayer, got {_type_name(type(module))}"
        )
    n = module.W.shape[0]
    converter = _converter_for(module.activation)
    layers, _ = converter(module.activation, (n,))
    if len(layers) != 1 or not isinstance(layers[0], ir.Activation):  # pragma: no cover - guarded in ImplicitLayer
        raise UnsupportedLayerError(f"implicit_to_ir: activation {type(module.activation).__name__} is not elementwise/grouped")
    return ImplicitSpec(
        W=_f64(module.W), U=_f64(module.U), C=_f64(module.C), b=_f64(module.b), activation=layers[0].with_size(n)
    )
