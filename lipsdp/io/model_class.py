"""A state dict plus the model class that defines it (``--model path.py:Class``): the class is
imported and built, the state dict loaded into it with ``weights_only=True`` and exported with
:func:`lipsdp.from_torch`."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidNetworkError, ModelLoadError
from ..ir import Network
from .common import _short

__all__ = ["load_with_class", "parse_input_shape"]


def parse_input_shape(value) -> tuple | None:
    """``"1,28,28"`` / ``[1, 28, 28]`` / ``784`` → a tuple of positive ints (None stays None)."""
    if value is None or value == "":
        return None
    parts = value.replace("(", "").replace(")", "").split(",") if isinstance(value, str) else (
        [value] if isinstance(value, int) else value)
    try:
        shape = tuple(int(str(p).strip()) for p in parts if str(p).strip() != "")
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(s < 1 for s in shape) or isinstance(value, bool):
        raise InvalidNetworkError(f"input shape: expected positive integers such as 1,28,28 (C,H,W) or 784, got {value!r}")
    return shape


def _import_class(spec: str):
    """``path/to/file.py:ClassName`` or ``package.module:ClassName`` → the class (runs that code)."""
    import importlib
    import importlib.util
    import sys

    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ModelLoadError(f"model class {spec!r}: expected path/to/file.py:ClassName or package.module:ClassName")
    if where.endswith(".py"):
        file = Path(where).expanduser()
        if not file.is_file():
            raise ModelLoadError(f"model class {spec!r}: no such file {str(file)!r}")
        mod_name = f"lipsdp_user_model_{abs(hash(str(file.resolve())))}"
        mspec = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[mod_name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise ModelLoadError(f"model class {spec!r}: importing {file} failed ({_short(exc)})") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ModelLoadError(f"model class {spec!r}: cannot import module {where!r} ({_short(exc)})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ModelLoadError(f"model class {spec!r}: {where} defines no class {name!r}")
    return cls


def _model_args(model_args):
    """JSON text, a dict (keyword arguments) or a list (positional) → (args, kwargs)."""
    import json

    if model_args is None or model_args == "":
        return (), {}
    if isinstance(model_args, str):
        try:
            model_args = json.loads(model_args)
        except ValueError as exc:
            raise ModelLoadError(f"model arguments: not valid JSON ({exc}); e.g. '{{\"hidden\": 64}}'") from None
    if isinstance(model_args, dict):
        return (), model_args
    if isinstance(model_args, list):
        return tuple(model_args), {}
    raise ModelLoadError(f"model arguments: expected a JSON object (keyword arguments) or list, got {model_args!r}")


def load_with_class(path, model_class, model_args=None, input_shape=None) -> Network:
    """Build ``model_class(**model_args)``, load the state dict stored at ``path`` into it
    (``torch.load(weights_only=True)``, strict key match) and export it with
    :func:`lipsdp.from_torch`.

    ``model_class`` is ``path/to/file.py:ClassName`` or ``package.module:ClassName``: that code is
    imported and run, which the caller asked for explicitly.  The checkpoint itself is never
    unpickled beyond tensors.  A checkpoint dict with one key ``state_dict`` /
    ``model_state_dict`` holding the state dict is accepted too.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        import torch
    except ImportError:
        raise ModelLoadError(f"{path}: a model class needs torch (pip install torch)") from None
    cls = _import_class(model_class)
    args, kwargs = _model_args(model_args)
    try:
        module = cls(*args, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"model class {model_class!r}: {cls.__name__}(*{list(args)}, **{kwargs}) failed "
                             f"({_short(exc)}); pass its constructor arguments with --model-args JSON") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"model class {model_class!r}: {cls.__name__} is not a torch.nn.Module")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a state dict readable with weights_only=True ({_short(exc)})") from None
    if isinstance(sd, dict) and len(sd) == 1 and next(iter(sd)) in ("state_dict", "model_state_dict"):
        sd = next(iter(sd.values()))
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path}: expected a state dict (a dict of tensors), got {type(sd).__name__}")
    try:
        module.load_state_dict(sd, strict=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{path}: the state dict does not fit {cls.__name__}: {detail}") from None
    module.eval()
    from ..models.export import from_torch

    return from_torch(module, input_shape=parse_input_shape(input_shape))
