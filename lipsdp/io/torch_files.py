"""Torch ``.pt`` / ``.pth`` weight files, read with ``torch.load(weights_only=True)``.

Accepted: a list of weight tensors; a dict ``{'weights': [...], 'biases': [...], 'activation': ...}``;
the state_dict of an ``nn.Sequential`` of Linear layers (nothing else: key names do not define a
network).  A pickled ``nn.Module`` runs code from the file and is read only with
``allow_pickle=True``.  Torch is imported only when such a file is read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..ir import Network
from .common import FileWeights, _short

__all__ = ["read_torch"]

_SEQ_KEY = re.compile(r"^(\d+)\.(weight|bias)$")


def _is_tensor(x) -> bool:
    return type(x).__name__ in ("Tensor", "Parameter") and hasattr(x, "detach")


def _to_numpy(t, what: str, path: Path):
    if _is_tensor(t):
        return t.detach().cpu().double().numpy()
    if isinstance(t, np.ndarray):
        return t
    raise ModelLoadError(f"{path}: {what}: expected a tensor, got {type(t).__name__}")


def _from_torch_object(obj, path: Path):
    """(weights, biases, activation, options) from what torch.load returned (no modules)."""
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise ModelLoadError(f"{path}: the file holds an empty list of weights")
        return FileWeights([_to_numpy(t, f"entry {k}", path) for k, t in enumerate(obj)], None, None, {})
    if isinstance(obj, dict):
        if "weights" in obj:
            ws = obj["weights"]
            if not isinstance(ws, (list, tuple)) or not ws:
                raise ModelLoadError(f"{path}: key 'weights' must be a non-empty list of tensors")
            mats = [_to_numpy(t, f"weights[{k}]", path) for k, t in enumerate(ws)]
            biases = obj.get("biases")
            if biases is not None:
                if not isinstance(biases, (list, tuple)):
                    raise ModelLoadError(f"{path}: key 'biases' must be a list (None entries allowed)")
                biases = [None if b is None else _to_numpy(b, f"biases[{k}]", path) for k, b in enumerate(biases)]
            act = obj.get("activation")
            if act is not None and not isinstance(act, str):
                raise ModelLoadError(f"{path}: key 'activation' must be a string, got {type(act).__name__}")
            options = {}
            if obj.get("group_size") is not None:
                options["group_size"] = int(obj["group_size"])
            return FileWeights(mats, biases, act, options)
        return _from_state_dict(obj, path)
    raise ModelLoadError(
        f"{path}: expected a list of weight tensors, a dict with key 'weights', or the state_dict of an "
        f"nn.Sequential of Linear layers; got {type(obj).__name__}"
    )


def _from_state_dict(sd: dict, path: Path):
    """Accept only the state_dict of an nn.Sequential of Linear layers (and parameter-free layers).

    A bare state_dict is ambiguous: key names do not say which tensors are layers or how they
    connect (a policy's ``log_std.weight`` is not a layer).  Anything unusual is refused.
    """
    hint = (
        "a bare state_dict is only accepted for an nn.Sequential of Linear layers (keys '0.weight', "
        "'0.bias', '2.weight', ...); export the model with lipsdp.from_torch(model) instead, or save "
        "{'weights': [W0, W1, ...], 'biases': [...], 'activation': 'relu'}"
    )
    if not sd:
        raise ModelLoadError(f"{path}: the file holds an empty dict; {hint}")
    odd = [k for k in sd if not (isinstance(k, str) and _SEQ_KEY.match(k))]
    if odd:
        raise ModelLoadError(f"{path}: unexpected state_dict keys {odd[:5]}; {hint}")
    ws: dict[int, np.ndarray] = {}
    bs: dict[int, np.ndarray] = {}
    for key, t in sd.items():
        i, kind = _SEQ_KEY.match(key).groups()
        arr = _to_numpy(t, key, path)
        if kind == "weight":
            if arr.ndim != 2:
                raise ModelLoadError(f"{path}: {key!r} has shape {tuple(arr.shape)}, not a Linear weight; {hint}")
            ws[int(i)] = arr
        else:
            bs[int(i)] = arr
    orphan = sorted(set(bs) - set(ws))
    if orphan:
        raise ModelLoadError(f"{path}: biases {orphan} have no matching weight; {hint}")
    idx = sorted(ws)
    adjacent = [(a, b) for a, b in zip(idx, idx[1:]) if b == a + 1]
    if adjacent:
        raise ModelLoadError(
            f"{path}: Linear layers {adjacent[0]} are adjacent in the Sequential, so no activation sits "
            f"between them and the layout cannot be inferred; {hint}"
        )
    return FileWeights([ws[i] for i in idx], [bs.get(i) for i in idx], None, {})


def read_torch(path: Path, allow_pickle: bool = False):
    """A ``.pt`` / ``.pth`` file read with ``weights_only=True``: FileWeights, or the Network of a
    pickled ``nn.Module`` (only with ``allow_pickle=True``)."""
    try:
        import torch
    except ImportError:
        raise ModelLoadError(f"{path}: reading .pt/.pth files needs torch (pip install torch)") from None
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc).lower():
            raise ModelLoadError(f"{path}: not a readable torch file ({_short(exc)})") from None
        if not allow_pickle:
            raise ModelLoadError(
                f"{path}: the file holds pickled Python objects (e.g. a whole nn.Module); loading it would "
                "run code stored in the file. Save model.state_dict() or a list of weight tensors instead, "
                "or pass allow_pickle=True if you trust the file"
            ) from None
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelLoadError(f"{path}: not a readable torch file ({_short(exc2)})") from None
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable torch file ({_short(exc)})") from None
    if isinstance(obj, torch.nn.Module):
        return _module_to_network(obj, path)
    return _from_torch_object(obj, path)


def _module_to_network(module, path: Path) -> Network:
    try:
        from ..models.export import from_torch
    except ImportError as exc:
        raise ModelLoadError(
            f"{path}: holds a torch nn.Module, which needs lipsdp.models.export.from_torch, "
            f"unavailable here ({_short(exc)})"
        ) from None
    return from_torch(module)
