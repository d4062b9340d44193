"""Batch certification: many (model × norm × method × solver × output) jobs on a Dask cluster.

lipsdp does not schedule anything itself: jobs are ``dask.distributed`` tasks, so the same
manifest runs on a laptop (an embedded ``LocalCluster``), on an existing Dask cluster
(``--scheduler tcp://HOST:PORT``) or on SLURM / PBS through ``dask-jobqueue``
(``--cluster slurm --cluster-config FILE``).  Dask, pandas, PyYAML and tqdm are imported lazily
(``pip install lipsdp[batch]``), so ``import lipsdp.batch`` stays cheap.

Modules: :mod:`~lipsdp.batch.manifest` (manifest → validated jobs), :mod:`~lipsdp.batch.worker`
(one process per job, with its limits), :mod:`~lipsdp.batch.store` (the SQLite results file),
:mod:`~lipsdp.batch.cluster` (Dask clusters), :mod:`~lipsdp.batch.runner` (:func:`run`),
:mod:`~lipsdp.batch.progress` and :mod:`~lipsdp.batch.cli` (``lipsdp batch``).

Manifest (YAML)
---------------
::

    defaults:                  # optional; applied to every job, a job's own keys win
      solver: cvxopt
      time_limit: 10m          # seconds, or a number with s / m / h
      memory_limit: 2GB        # bytes, or a number with kB / MB / GB / KiB / MiB / GiB
    jobs:                      # or: the whole file is the list of jobs
      - model: runs/*/ckpt-*.npz          # a path or a glob, or a list of them
        norm: [l2, linf]                  # a list means "each of these" (cartesian product)
        method: neuron
        output: [null, 0, [1, -1, 0]]     # all outputs, logit 0, margin c = (1, -1, 0);
                                          # one vector c alone is written [[1, -1, 0]]
      - model: big.mat
        activation: maxmin
        time_limit: 3600

Manifest (CSV)
--------------
One header line naming the columns, then one row per job; ``a|b`` in a cell means "each of
these"; an empty cell takes the default; ``output`` is an integer, ``all`` / empty, or a JSON
vector ``[1,-1,0]`` (quote the cell)::

    model,norm,method,solver,output,time_limit,memory_limit
    runs/*.npz,l2,neuron|layer,cvxopt,,60,2GB

Fields (both formats): ``model`` (required; paths and globs are relative to the manifest's folder;
any format :func:`lipsdp.load` reads), ``norm`` (l2 | linf; default l2), ``method`` (neuron |
layer | chain; default neuron), ``solver`` (auto or a backend name; default auto), ``output``
(default null = all outputs), ``activation`` (default: the file's, else relu), ``lower`` (also
compute the sampled lower bound; default true), ``time_limit`` (wall clock of the job, which is
killed when it runs out; default none), ``memory_limit`` (address-space limit, RLIMIT_AS, of the
job's process; default none), ``model_class`` (for a state-dict checkpoint: the torch class
``path/to/file.py:ClassName``, relative to the manifest's folder, or ``package.module:ClassName``;
this imports and runs that code, while the checkpoint is loaded with ``weights_only=True``),
``model_args`` (its constructor arguments, a mapping or list; JSON in a CSV cell) and
``input_shape`` (e.g. ``[1, 28, 28]``; ``1,28,28`` in a CSV cell).  ``.onnx`` models are read
as :func:`lipsdp.load` reads them.  Every row is checked before anything runs; all bad rows are
reported at once as ``FILE:LINE: what is wrong`` (:class:`ManifestError`).  A glob that matches
nothing and a missing file are manifest errors; a file that exists but cannot be read as a model
becomes a failed result row.

Each job runs in its own Python subprocess on the worker (the time limit kills the process group;
the memory limit is ``setrlimit(RLIMIT_AS)`` in that process; the subprocess dies with its worker
through ``PR_SET_PDEATHSIG``).  Results go to one SQLite file (table ``results``, one row per job
key = sha256 of the model file's bytes and the job's parameters), written only by the client
process, one transaction per finished job.  See docs/batch.md.
"""

from __future__ import annotations

from .base import BatchError, ManifestError
from .cli import add_arguments, run_cli
from .cluster import jobqueue_cluster, local_cluster
from .manifest import DEFAULTS, FIELDS, METHODS, NORMS, Job, expand, file_hash, load_manifest, parse_bytes, parse_seconds
from .progress import _Progress, summary
from .runner import run
from .store import COLUMNS, STATUSES, Store
from .worker import _execute, _zygote_main

__all__ = [
    "Job",
    "ManifestError",
    "BatchError",
    "load_manifest",
    "expand",
    "run",
    "Store",
    "local_cluster",
    "jobqueue_cluster",
    "add_arguments",
    "run_cli",
]


def _register() -> None:
    try:
        from ..cli import SUBCOMMANDS
    except ImportError:  # pragma: no cover
        return
    SUBCOMMANDS["batch"] = (add_arguments, run_cli)


_register()
