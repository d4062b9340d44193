"""The public entry point :func:`certify`: a short pipeline.

    model  →  as_model (Network / ImplicitNetwork)  →  formulation_for (by type and norm)
           →  lipsdp.pipeline.run (rewrites, solve-and-check with fallbacks)  →  Certificate

Every option reaches every model type, or raises a :class:`~lipsdp.errors.LipSDPError` saying why
it does not apply.
"""

from __future__ import annotations

import sys
from os import PathLike

from .certificate import Certificate, CertificationWarning
from .errors import FormulationError, InvalidNetworkError
from .formulations import formulation_for
from .formulations.implicit import ImplicitNetwork
from .ir import Network
from .options import CertifyOptions, parse_norm, parse_output

__all__ = ["certify", "Certificate", "as_network", "as_model", "CertificationWarning"]


def _refuse(option: str, value, kind: str, applies: str):
    raise FormulationError(f"{option}={value!r} does not apply to a {kind}: it is used for {applies}")


def as_network(model, input_shape=None, activation=None, allow_pickle: bool = False) -> Network:
    """Accept a :class:`Network`, a weight-file path, a list of weight matrices or a torch module.

    ``input_shape`` is for torch modules, ``activation`` for weight files and lists (None: the
    file's own, else ReLU), ``allow_pickle`` for weight files; each raises where it does not apply.
    """
    is_path = isinstance(model, (str, PathLike))
    if allow_pickle and not is_path:
        _refuse("allow_pickle", allow_pickle, type(model).__name__, "weight files")
    if isinstance(model, Network):
        if input_shape is not None:
            _refuse("input_shape", input_shape, "lipsdp Network", "torch modules")
        if activation is not None:
            _refuse("activation", activation, "lipsdp Network", "weight files and lists of matrices")
        return model
    if is_path:
        from .io import load

        if input_shape is not None:
            _refuse("input_shape", input_shape, "weight file", "torch modules (for a state dict with its class, "
                    "use lipsdp.io.load_with_class)")
        return load(model, activation=activation, allow_pickle=allow_pickle)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from .models.export import from_torch

        if activation is not None:
            _refuse("activation", activation, "torch module", "weight files and lists of matrices "
                    "(a module's activations are read from the module)")
        return from_torch(model, input_shape=input_shape)
    if isinstance(model, (list, tuple)):
        from .io import from_weights

        if input_shape is not None:
            _refuse("input_shape", input_shape, "list of matrices", "torch modules")
        return from_weights(model, activation="relu" if activation is None else activation)
    raise InvalidNetworkError(
        f"cannot certify a {type(model).__name__}: expected a torch nn.Module, a lipsdp Network, an "
        "ImplicitNetwork, a weight-file path (.mat/.npz/.pt/.onnx) or a list of weight matrices"
    )


def as_model(model, input_shape=None, activation=None, allow_pickle: bool = False):
    """A :class:`Network` or :class:`ImplicitNetwork` from what users pass to :func:`certify`:
    those, a torch module, a weight-file path, a list of weight matrices, or the exporter's
    :class:`~lipsdp.models.ImplicitSpec` (an implicit model exported from torch)."""
    export = sys.modules.get("lipsdp.models.export")
    if isinstance(model, ImplicitNetwork) or (export is not None and isinstance(model, export.ImplicitSpec)):
        for option, value in (("input_shape", input_shape), ("activation", activation)):
            if value is not None:
                _refuse(option, value, "implicit model", "torch modules / weight files")
        return model if isinstance(model, ImplicitNetwork) else ImplicitNetwork.coerce(model)
    return as_network(model, input_shape=input_shape, activation=activation, allow_pickle=allow_pickle)


def certify(
    model,
    norm: str = "l2",
    method: str = "neuron",
    solver: str = "auto",
    input_shape=None,
    output=None,
    lower: bool = True,
    tol: float = 1e-8,
    time_limit: float | None = None,
    verbose: bool = False,
    activation: str | None = None,
    allow_pickle: bool = False,
    progress: bool | None = None,
    decompose="auto",
    memory_limit=None,
    region=None,
) -> Certificate:
    """Certify an upper bound on the Lipschitz constant of ``model``.

    Parameters
    ----------
    model: torch ``nn.Module``, :class:`lipsdp.Network`, implicit model
        (:class:`~lipsdp.formulations.implicit.ImplicitNetwork`), weight-file path or list of matrices.
    norm: ``"l2"`` (ℓ2 → ℓ2) or ``"linf"`` (ℓ∞ → |·| of a scalar output; without ``output``, the
        maximum over the outputs).
    method: ``"neuron"`` (default; LipSDP-Neuron / full LipSDP-NSR), ``"layer"`` (LipSDP-Layer /
        NSR chain), ``"chain"``, ``"channel"`` (one multiplier per convolution channel, as GLipSDP)
        or ``"residual-relu"`` (the LipSDP-RR baseline).  ``"network"`` is
        refused: it is unsound (math.md §2).
    solver: ``"auto"`` or a backend name (``lipsdp.backends.installed_backends()``).
    output: None (all outputs), an int (one logit) or a vector c (the margin c^T f).
    lower: also compute a lower bound (a real difference quotient) to report the gap.
    tol, time_limit, verbose: passed to the solver.
    activation: for a weight file (None: the file's own, else ReLU; see :func:`lipsdp.load`) or a list of
        matrices (None: ReLU).  allow_pickle: for weight files.  input_shape: for torch modules.
        Each raises where it does not apply.
    decompose: ``"auto"`` (default), True or False — solve the exact chordal decomposition of the
        LMI (:mod:`lipsdp.chordal`, math.md §3; same optimum); auto = only where it pays.
    memory_limit: bytes (or ``"8GB"``); the estimated peak memory (:mod:`lipsdp.memory`) above it
        raises :class:`~lipsdp.errors.MemoryLimitError` before solving.  None: 80% of the free RAM.
    progress: show stage / iteration / checked bound (tqdm); None = only when interactive.
    region: None (a global bound), or an input region — ``lipsdp.local.Box(lo, hi)``,
        ``LinfBall(x0, eps)``, ``L2Ball(x0, eps)`` or a ``(lo, hi)`` pair: the bound then holds for
        pairs of inputs inside it, with slopes from bound propagation (:mod:`lipsdp.formulations.local`).

    Returns a :class:`Certificate` whose ``bound`` passed the independent float64 check
    (``verified=True``); otherwise ``verified=False`` and a :class:`CertificationWarning`.
    """
    from .pipeline import run

    opts = CertifyOptions(solver=solver, tol=tol, time_limit=time_limit, verbose=verbose, decompose=decompose,
                          memory_limit=memory_limit, progress=progress, lower=lower)
    norm = parse_norm(norm)
    output = parse_output(output)
    net = as_model(model, input_shape=input_shape, activation=activation, allow_pickle=allow_pickle)
    return run(formulation_for(net, norm, method, output, region), opts)
