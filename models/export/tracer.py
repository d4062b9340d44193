"""Tracing ``forward`` with concrete shapes.

:class:`ConcreteTracer` is a ``torch.fx`` tracer whose proxies also carry the *value* the traced
operation has on a sample batch (``TRACE_BATCH`` random inputs of the given shape).  Sizes are
therefore concrete: ``x.shape``, ``x.size(i)``, ``x.dim()`` and ``len(x)`` return Python ints, so
Python computed from shapes in ``forward`` (TensorFlow-style "same" padding, reshapes,
``if h % 2``) runs as plain Python and only tensor operations are recorded.  Control flow on tensor
*values* still stops the trace (fx raises), so no branch taken by the sample is baked in.

Modules with a registered converter (torch.nn layers, lipsdp.models, deel-torchlip, user
registrations) are leaves: their ``forward`` is run for the value but not entered.  Each node
records its value (``meta["value"]``), the qualified name of the module it sits in
(``meta["nn_module_stack"]``, from fx) and the user source line that created it
(``meta["source"]``).

Why not ``torch.export`` / ``make_fx``: both trace the six GLipSDP networks with concrete shapes
too (in comparable time), but they lower to ATen operations and enter every module, so lipsdp's,
deel-torchlip's and user-registered modules could not stay leaves, every converter would be
keyed by ATen op, and errors could not point at the user's module call
(benchmarks/results-export.md).
"""

from __future__ import annotations

import linecache
import os
import sys

import torch
from torch import fx, nn
from torch.fx._symbolic_trace import _orig_module_call

from .registry import converter_for

#: batch size of the sample the trace runs on: an unusual size, so that a reshape that hard-codes
#: a batch size (``x.view(1, -1)``) or merges the batch into the features is caught
TRACE_BATCH = 7

_SKIP_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(fx.__file__), os.path.dirname(__file__))


class TraceFailure(Exception):
    """A traced operation failed on the sample (a shape error): carries the node's location."""


def _source_line() -> str:
    """``file:line: code`` of the innermost frame outside torch and this package."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP_DIRS):
        frame = frame.f_back
    if frame is None:
        return ""
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" + (f": `{code}`" if code else "")


class ConcreteProxy(fx.Proxy):
    """An fx proxy whose sizes are concrete (read from the value on the sample batch)."""

    _CONCRETE = frozenset({"shape", "size", "dim", "ndim", "ndimension", "numel", "dtype", "device", "is_cuda"})

    def __getattr__(self, name):
        if name in ConcreteProxy._CONCRETE:
            return getattr(self.node.meta["value"], name)
        return ConcreteAttribute(self, name)

    def __len__(self):
        return len(self.node.meta["value"])


class ConcreteAttribute(fx.proxy.Attribute):
    """``proxy.name``: a method (called -> call_method node) or an attribute (``.values``, ``.T``),
    whose own sizes are concrete too."""

    __getattr__ = ConcreteProxy.__getattr__
    __len__ = ConcreteProxy.__len__


def _value(a):
    return a.node.meta["value"] if isinstance(a, fx.Proxy) else a


class ConcreteTracer(fx.Tracer):
    def __init__(self, sample: torch.Tensor):
        super().__init__()
        self.sample = sample
        self.concrete = False  # True while computing a value: fx's patches step aside

    def call_module(self, m, forward, args, kwargs):
        if self.concrete:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self.concrete:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return converter_for(m) is not None or super().is_leaf_module(m, qualname)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return ConcreteProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        node = proxy.node
        node.meta["source"] = _source_line()
        a = fx.node.map_aggregate(args, _value)
        k = fx.node.map_aggregate(kwargs, _value)
        self.concrete = True
        try:
            with torch.no_grad():
                if kind == "placeholder":
                    value = self.sample
                elif kind == "get_attr":
                    value = _fetch(self.root, target)
                elif kind == "call_function":
                    value = target(*a, **k)
                elif kind == "call_method":
                    value = getattr(a[0], target)(*a[1:], **k)
                elif kind == "call_module":
                    value = _orig_module_call(self.root.get_submodule(target), *a, **k)
                else:
                    value = None
        except Exception as exc:
            raise TraceFailure(node, exc) from None
        finally:
            self.concrete = False
        node.meta["value"] = value
        return proxy


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(root: nn.Module, sample: torch.Tensor) -> fx.Graph:
    """The fx graph of ``root.forward`` on ``sample`` (values and locations in ``node.meta``)."""
    return ConcreteTracer(sample).trace(root)
