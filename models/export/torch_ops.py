"""Converters for torch.nn modules and torch / functional calls (registered at import).

Every converter is exact: linear layers become the affine map ``forward`` computes in eval
mode (weights read through their parametrisations, BatchNorm running statistics folded),
activations become the IR activation of the same function.  Pooling lives in :mod:`.pooling`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from lipsdp import ir
from lipsdp.errors import InvalidNetworkError, UnsupportedLayerError
from lipsdp.linop import Conv, Sparse

from . import pooling
from .linear import ChannelScale, ZeroPad, affine, f64, linear_map, numel, selection_map
from .registry import ModuleConverter, register_function, register_module

# --- linear layers ---------------------------------------------------------------------------


def convert_linear(m: nn.Linear, shape: tuple):
    weight = f64(m.weight)  # the effective (possibly parametrised) weight forward uses
    return linear_function(shape, weight, None if m.bias is None else f64(m.bias))


def linear_function(shape: tuple, weight, bias=None):
    """F.linear(x, weight, bias) on the last dimension of each sample."""
    weight = f64(weight) if isinstance(weight, torch.Tensor) else np.asarray(weight, dtype=float)
    bias = f64(bias) if isinstance(bias, torch.Tensor) else bias
    if weight.ndim != 2 or shape[-1] != weight.shape[1]:
        raise InvalidNetworkError(
            f"Linear layer expects {weight.shape[-1]} input features but receives shape {shape}; "
            "check input_shape or add a Flatten before it"
        )
    copies = numel(shape[:-1])  # nn.Linear acts on the last dimension
    W = sp.kron(sp.identity(copies), weight, format="csr") if copies > 1 else weight
    b = None if bias is None else np.tile(bias, copies)
    return [affine(W, b)], tuple(shape[:-1]) + (weight.shape[0],)


def _conv_padding(padding, kernel: tuple, dilation) -> object:
    """torch's padding argument as the operator's: ``"valid"`` = 0, ``"same"`` = total
    d·(k − 1) per dimension, the smaller half before (as torch pads)."""
    if padding == "valid":
        return 0
    if padding == "same":
        dil = (dilation,) * len(kernel) if isinstance(dilation, int) else tuple(dilation)
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dil))
    return padding


def conv_operator(weight, shape: tuple, stride=1, padding=0, dilation=1, groups=1, transposed=False,
                  output_padding=0):
    """(operator, out_shape) of the convolution ``conv(x, weight)`` (bias excluded) on samples of
    ``shape``: a :class:`lipsdp.linop.Conv` kept as a convolution; a transposed convolution is the
    exact sparse matrix of ``F.conv_transpose*``."""
    K = f64(weight)
    if transposed:
        fn = {3: F.conv_transpose1d, 4: F.conv_transpose2d}[K.ndim]
        w = torch.as_tensor(K)
        W, out_shape = linear_map(lambda x: fn(x, w, None, stride, padding, output_padding, groups, dilation),
                                  shape, sparse=True)
        return Sparse(W), out_shape
    op = Conv(K, shape, stride, _conv_padding(padding, K.shape[2:], dilation), dilation, groups)
    return op, tuple(op.out_shape)


def conv_layers(m: nn.modules.conv._ConvNd, shape: tuple, pre: Callable | None = None):
    """Conv1d/Conv2d/ConvTranspose1d/2d with any stride, padding, padding mode, dilation and
    groups.  Padding modes other than zeros (reflect, replicate, circular) are ``F.pad`` first,
    exactly as ``_ConvNd._conv_forward`` does: a 0/1 sparse map (rows repeat the reflected /
    replicated / wrapped cells), then the convolution without padding.  ``pre`` (deel's own
    padding) is a linear map applied first in the same way."""
    spatial = len(m.kernel_size)
    if len(shape) != spatial + 1:
        want = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}[spatial]
        raise InvalidNetworkError(
            f"{type(m).__name__} expects a per-sample input of shape {want}, got {shape}; pass input_shape={want}"
        )
    if shape[0] != m.in_channels:
        raise InvalidNetworkError(f"{type(m).__name__} expects {m.in_channels} input channels, got shape {shape}")
    padding, inner = m.padding, None
    if m.padding_mode != "zeros":
        if m.transposed:
            raise UnsupportedLayerError(f"{type(m).__name__} with padding_mode={m.padding_mode!r}")
        inner, pad, mode = pre, m._reversed_padding_repeated_twice, m.padding_mode
        pre = (lambda x: F.pad(x if inner is None else inner(x), pad, mode=mode))
        padding = 0
    layers = []
    if m.padding_mode != "zeros":
        P, shape = selection_map(pre, shape) if inner is None else linear_map(pre, shape, sparse=True)
        layers.append(affine(P))
    elif pre is not None:
        P, shape = linear_map(pre, shape, sparse=True)
        layers.append(affine(P))
    op, out_shape = conv_operator(m.weight, shape, m.stride, padding, m.dilation, m.groups, m.transposed,
                                  getattr(m, "output_padding", 0))
    bias = None if m.bias is None else np.repeat(f64(m.bias), numel(out_shape[1:]))
    return layers + [affine(op, bias)], out_shape


def convert_conv(m, shape):
    return conv_layers(m, shape)


def conv_function(transposed: bool):
    """F.conv1d/2d(x, weight, bias, ...) and F.conv_transpose1d/2d with constant weights."""
    names = ("stride", "padding", "output_padding", "groups", "dilation") if transposed else \
        ("stride", "padding", "dilation", "groups")

    def convert(shape, weight, bias=None, *args, **kwargs):
        params = dict(zip(names, args), **kwargs)
        op, out_shape = conv_operator(weight, shape, transposed=transposed, **params)
        b = None if bias is None else np.repeat(f64(bias), numel(out_shape[1:]))
        return [affine(op, b)], out_shape

    return convert


# --- normalisation, padding, reshapes ----------------------------------------------------------


def convert_batchnorm(m: nn.modules.batchnorm._BatchNorm, shape: tuple):
    """Eval-mode BatchNorm  y = γ (x − μ) / sqrt(σ² + ε) + β  as a diagonal Affine."""
    if m.running_mean is None or m.running_var is None:
        raise UnsupportedLayerError(
            "BatchNorm without running statistics (track_running_stats=False) normalises with batch "
            "statistics even in eval mode, which is not a fixed affine map"
        )
    if shape[0] != m.num_features:
        raise InvalidNetworkError(f"{type(m).__name__} expects {m.num_features} channels, got shape {shape}")
    scale = 1.0 / np.sqrt(f64(m.running_var) + m.eps)
    if m.weight is not None:
        scale = scale * f64(m.weight)
    shift = -f64(m.running_mean) * scale
    if m.bias is not None:
        shift = shift + f64(m.bias)
    per_channel = numel(shape[1:])
    return [affine(ChannelScale(scale, shape), np.repeat(shift, per_channel))], shape


def batchnorm_of_rank(ranks: tuple[int, ...]) -> ModuleConverter:
    def convert(m, shape):
        if len(shape) not in ranks:
            raise InvalidNetworkError(
                f"{type(m).__name__} expects a per-sample input with {' or '.join(map(str, ranks))} "
                f"dimension(s), got shape {shape}"
            )
        return convert_batchnorm(m, shape)

    return convert


def pad_function(shape: tuple, pad, mode: str = "constant", value=None):
    """F.pad: constant padding is x -> P x + c (P the 0/1 embedding, c the padding value in the
    padded cells); reflect / replicate / circular padding is a 0/1 map whose rows repeat the
    reflected / replicated / wrapped cells (:func:`~.linear.selection_map`)."""
    W, out_shape = selection_map(lambda t: F.pad(t, pad, mode=mode, value=None if mode != "constant" else 0.0), shape)
    pairs = [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad), 2)][::-1]  # F.pad lists the last dim first
    if mode == "constant" and len(pairs) < len(shape) and all(a >= 0 and b >= 0 for a, b in pairs):
        pairs = [(0, 0)] * (len(shape) - 1 - len(pairs)) + pairs  # spatial dims only: a convolution can absorb it
        W = ZeroPad(W, shape, tuple(pairs))
    bias = None
    if mode == "constant" and value:
        bias = f64(F.pad(torch.zeros((1,) + tuple(shape), dtype=torch.float64), pad, value=float(value))).ravel()
    return [affine(W, bias)], out_shape


def convert_pad(m, shape):
    """ZeroPad / ConstantPad / ReflectionPad / ReplicationPad / CircularPad modules."""
    mode = {nn.modules.padding._ReflectionPadNd: "reflect", nn.modules.padding._ReplicationPadNd: "replicate",
            nn.modules.padding._CircularPadNd: "circular"}
    for cls, name in mode.items():
        if isinstance(m, cls):
            return pad_function(shape, m.padding, mode=name)
    return pad_function(shape, m.padding, value=getattr(m, "value", 0.0))


def skip(m, shape):
    """Identity in eval mode (Dropout, Identity)."""
    return [], shape


def reshape_module(m, shape):
    """A module that only reshapes (Flatten, Unflatten): the flat C-order vector is unchanged; the
    output shape is the traced one (``None``), and the walker checks that the batch stays first."""
    return [], None


def reshape_function(shape, *args, **kwargs):
    """torch.flatten / reshape / view / unflatten: as :func:`reshape_module`."""
    return [], None


# --- activations ----------------------------------------------------------------------------


def slope(fn: str, **params):
    return [ir.SlopeRestricted(fn=fn, params=params)]


def gelu_params(approximate: str = "none"):
    if approximate != "none":
        raise UnsupportedLayerError(
            f"GELU(approximate={approximate!r}) is not the exact GELU the IR evaluates; "
            "use approximate='none' (slope bounds of the tanh form are not implemented)"
        )
    return {}


# torch.nn activation type -> (IR function name, module -> params)
SLOPE_MODULES: dict[type, tuple[str, Callable]] = {
    nn.ReLU: ("relu", lambda m: {}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": float(m.negative_slope)}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.ELU: ("elu", lambda m: {"alpha": float(m.alpha)}),
    nn.Softplus: ("softplus", lambda m: {"beta": float(m.beta), "threshold": float(m.threshold)}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.GELU: ("gelu", lambda m: gelu_params(m.approximate)),
    nn.Hardtanh: ("hardtanh", lambda m: {"min_val": float(m.min_val), "max_val": float(m.max_val)}),
}


def slope_module_converter(fn: str, params: Callable) -> ModuleConverter:
    def convert(m, shape):
        return slope(fn, **params(m)), shape

    return convert


def fn_slope(fn: str, params: Callable = lambda *a, **k: {}):
    def convert(shape, *args, **kwargs):
        return slope(fn, **params(*args, **kwargs)), shape

    return convert


def fn_dropout(shape, p=0.5, training=True, inplace=False):
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
_GELU = lambda approximate="none": gelu_params(approximate)  # noqa: E731
_NOOP = lambda shape, *a, **k: ([], shape)  # noqa: E731

BUILTIN_FUNCTIONS: dict[object, Callable] = {
    F.relu: fn_slope("relu"), torch.relu: fn_slope("relu"), "relu": fn_slope("relu"),
    F.leaky_relu: fn_slope("leaky_relu", _LEAKY),
    torch.tanh: fn_slope("tanh"), F.tanh: fn_slope("tanh"), "tanh": fn_slope("tanh"),
    torch.sigmoid: fn_slope("sigmoid"), F.sigmoid: fn_slope("sigmoid"), "sigmoid": fn_slope("sigmoid"),
    F.elu: fn_slope("elu", _ELU),
    F.softplus: fn_slope("softplus", _SOFTPLUS),
    F.silu: fn_slope("silu", lambda inplace=False: {}),
    F.gelu: fn_slope("gelu", _GELU),
    F.hardtanh: fn_slope("hardtanh", _HARDTANH),
    F.relu6: fn_slope("hardtanh", lambda inplace=False: {"min_val": 0.0, "max_val": 6.0}),
    torch.flatten: reshape_function, torch.reshape: reshape_function, "flatten": reshape_function,
    "view": reshape_function, "reshape": reshape_function, "unflatten": reshape_function,
    "contiguous": _NOOP,
    F.dropout: fn_dropout,
    F.linear: linear_function,
    F.conv1d: conv_function(False), F.conv2d: conv_function(False),
    F.conv_transpose1d: conv_function(True), F.conv_transpose2d: conv_function(True),
    F.pad: pad_function,
    F.avg_pool1d: pooling.function_linear(F.avg_pool1d), F.avg_pool2d: pooling.function_linear(F.avg_pool2d),
    F.adaptive_avg_pool1d: pooling.function_linear(F.adaptive_avg_pool1d),
    F.adaptive_avg_pool2d: pooling.function_linear(F.adaptive_avg_pool2d),
    F.max_pool1d: pooling.torch_maxpool(F.max_pool1d), F.max_pool2d: pooling.torch_maxpool(F.max_pool2d),
    F.adaptive_max_pool1d: pooling.torch_maxpool(F.adaptive_max_pool1d),
    F.adaptive_max_pool2d: pooling.torch_maxpool(F.adaptive_max_pool2d),
}

PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ReflectionPad1d,
               nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d, nn.CircularPad1d, nn.CircularPad2d)
AVGPOOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def register_builtins() -> None:
    for torch_type, (fn, params) in SLOPE_MODULES.items():
        register_module(torch_type, slope_module_converter(fn, params))
    register_module(nn.Linear, convert_linear)
    for conv in (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d):
        register_module(conv, convert_conv)
    register_module(nn.BatchNorm1d, batchnorm_of_rank((1, 2)))
    register_module(nn.BatchNorm2d, batchnorm_of_rank((3,)))
    for torch_type in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity):
        register_module(torch_type, skip)
    register_module(nn.Flatten, reshape_module)
    register_module(nn.Unflatten, reshape_module)
    for torch_type in PAD_MODULES:
        register_module(torch_type, convert_pad)
    for torch_type in AVGPOOL_MODULES:
        register_module(torch_type, pooling.module_linear)
    for torch_type in MAXPOOL_MODULES:
        register_module(torch_type, pooling.module_maxpool)
    for fn, conv in BUILTIN_FUNCTIONS.items():
        register_function(fn, conv)
