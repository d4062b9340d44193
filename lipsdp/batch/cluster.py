"""Where the jobs run: an embedded Dask ``LocalCluster``, an existing scheduler, or SLURM / PBS
workers through ``dask-jobqueue``.  lipsdp schedules nothing itself; jobs are Dask tasks."""

from __future__ import annotations

import os
import sys

from .base import BatchError, need

__all__ = ["local_cluster", "jobqueue_cluster", "connect"]

_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


def local_cluster(workers: int | None = None, **kwargs):
    """The embedded default: a ``LocalCluster`` of worker processes with one thread each.

    The scheduler is told to fail a task the first time its worker dies
    (``allowed-failures = 0``) and to hand each worker one task at a time
    (``worker-saturation = 1.0``), so that :func:`lipsdp.batch.run` sees every lost job and
    resubmits it itself, counting attempts exactly.
    """
    dask = need("dask")
    distributed = need("distributed")
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}):
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=kwargs.pop("dashboard_address", None), **kwargs)


def _read_cluster_config(kind: str, path) -> dict:
    yaml = need("yaml")
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise BatchError(f"cannot read --cluster-config {path!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BatchError(f"--cluster-config {path!r} is not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise BatchError(f"--cluster-config must be a YAML mapping of {_JOBQUEUE[kind]} keyword arguments, "
                         f"got {type(config).__name__}")
    return config


def jobqueue_cluster(kind: str, config):
    """A dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` from a dict or a YAML file of its keyword
    arguments (``cores``, ``memory``, ``queue``, ``account``, ``walltime``, ``job_extra_directives``, …)."""
    if kind not in _JOBQUEUE:
        raise BatchError(f"unknown --cluster {kind!r}; valid: {', '.join(_JOBQUEUE)}")
    if not isinstance(config, dict):
        config = _read_cluster_config(kind, config)
    jq = need("dask_jobqueue")
    cls = getattr(jq, _JOBQUEUE[kind])
    kw = {"cores": 1, "processes": 1, "memory": "4GB", "python": sys.executable, **config}
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise BatchError(f"cannot build a {_JOBQUEUE[kind]} from {sorted(config)}: {exc}; "
                         f"see the dask-jobqueue documentation of {_JOBQUEUE[kind]}") from None


def connect(scheduler=None, cluster=None, cluster_config=None, workers=None):
    """(client, cluster) for the CLI: an existing scheduler, a jobqueue cluster, or (None, None),
    which makes :func:`lipsdp.batch.run` build and close a :func:`local_cluster` itself."""
    if not (scheduler or cluster):
        return None, None
    distributed = need("distributed")
    if cluster:
        jq = jobqueue_cluster(cluster, cluster_config or {})
        if workers:
            jq.scale(n=workers)
        else:
            jq.scale(jobs=1)
        try:
            return distributed.Client(jq), jq
        except BaseException:
            jq.close()
            raise
    try:
        return distributed.Client(scheduler, timeout="20s"), None
    except (OSError, TimeoutError) as exc:
        raise BatchError(f"cannot connect to the Dask scheduler {scheduler!r} ({exc}); "
                         "check the address (tcp://HOST:PORT) and that `dask scheduler` runs") from None
