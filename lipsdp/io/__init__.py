"""Build a :class:`~lipsdp.ir.Network` from weight matrices or from a weight file.

Two entry points:

* :func:`from_weights` -- a list of matrices ``W_k`` (torch orientation, shape (out, in)) and
  the name of the hidden activation.  The network is
  ``x -> W_0 x + b_0 -> φ -> W_1 (.) + b_1 -> φ -> ... -> W_L (.) + b_L``.
* :func:`load` -- read a ``.mat``, ``.npz``, ``.pt`` / ``.pth`` file and call
  :func:`from_weights`, or an ``.onnx`` graph (:mod:`lipsdp.io_onnx`).  Nothing is ever written; pickled code is never run unless the caller
  opts in with ``allow_pickle=True``.

Torch is imported lazily, only to read ``.pt`` / ``.pth`` files.  Every failure to read a file
is one :class:`~lipsdp.errors.ModelLoadError`; malformed weights give
:class:`~lipsdp.errors.InvalidNetworkError` naming the layer index.

Modules: :mod:`.weights` (from_weights), :mod:`.loaders` (load: path checks and the extension →
reader registry), one reader per format (:mod:`.mat`, :mod:`.npz`, :mod:`.torch_files`; ONNX in
:mod:`lipsdp.io_onnx`), :mod:`.model_class` (a state dict plus its model class).
"""

from __future__ import annotations

from .common import FileWeights
from .loaders import LOADERS, SUPPORTED_EXTENSIONS, load, register_loader
from .model_class import load_with_class, parse_input_shape
from .weights import ACTIVATION_NAMES, from_weights

__all__ = ["from_weights", "load", "load_with_class", "parse_input_shape", "SUPPORTED_EXTENSIONS", "ACTIVATION_NAMES",
           "LOADERS", "register_loader", "FileWeights"]
