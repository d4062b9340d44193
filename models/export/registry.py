"""The two converter registries of the exporter and their public ``register_…`` functions.

* modules: ``MODULE_CONVERTERS[torch type]``, looked up along the type's MRO (subclasses and
  parametrised modules — whose class torch replaces by a subclass — use their base's
  converter).  A registered module is a *leaf* of the trace: its ``forward`` is not entered.
* functions / tensor methods called in ``forward`` (``F.relu``, ``torch.flatten``, ``"view"``):
  ``FUNCTION_CONVERTERS[function or method name]``.

A module converter is ``converter(module, shape) -> (layers, out_shape)``; a function
converter ``converter(shape, *args, **kwargs) -> (layers, out_shape)`` where ``args`` are the
call's other arguments (Python values, or the values of tensors that do not depend on the model
input).  ``shape`` is the per-sample input shape (no batch dimension); ``layers`` are IR layers
acting on the C-order flattened sample.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lipsdp.errors import UnsupportedLayerError

ModuleConverter = Callable[[nn.Module, tuple], tuple[list, tuple]]

MODULE_CONVERTERS: dict[type, ModuleConverter] = {}
FUNCTION_CONVERTERS: dict[object, Callable] = {}


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
    MODULE_CONVERTERS[torch_type] = converter


def register_function(function, converter: Callable) -> None:
    """Register ``converter(shape, *args, **kwargs) -> (ir_layers, out_shape)`` for a function
    called in ``forward`` (e.g. ``torch.nn.functional.relu``) or a tensor method given by name
    (e.g. ``"relu"`` for ``x.relu()``).  ``args``/``kwargs`` are the call's other arguments.
    """
    if not (callable(function) or isinstance(function, str)):
        raise UnsupportedLayerError(f"register_function: expected a function or a method name, got {function!r}")
    if not callable(converter):
        raise UnsupportedLayerError(f"register_function: expected a callable converter, got {type(converter).__name__}")
    FUNCTION_CONVERTERS[function] = converter


def converter_for(module: nn.Module) -> ModuleConverter | None:
    for cls in type(module).__mro__:
        if cls in MODULE_CONVERTERS:
            return MODULE_CONVERTERS[cls]
    return None


def type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def function_name(fn) -> str:
    if isinstance(fn, str):
        return f"Tensor.{fn}"
    name = getattr(fn, "__name__", repr(fn))
    for public, namespace in (("torch.nn.functional", F), ("torch", torch)):
        if getattr(namespace, name, None) is fn:
            return f"{public}.{name}"
    return f"{getattr(fn, '__module__', None) or ''}.{name}".lstrip(".")
