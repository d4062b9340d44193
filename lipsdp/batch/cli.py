"""The ``lipsdp batch`` subcommand: validate the manifest, connect to the cluster, run, summarise."""

from __future__ import annotations

import os
import sys

from .base import BatchError
from .cluster import connect
from .manifest import load_manifest
from .progress import summary
from .runner import run

__all__ = ["add_arguments", "run_cli"]


def add_arguments(p) -> None:
    p.description = "Run a manifest of certification jobs on Dask (see docs/batch.md)."
    p.add_argument("manifest", help="YAML or CSV manifest (model × norm × method × solver × output)")
    p.add_argument("--out", default="lipsdp-results.sqlite", help="SQLite results file (default lipsdp-results.sqlite)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (local) or workers to request (jobqueue)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, help="connect to an existing Dask scheduler, e.g. tcp://HOST:8786")
    where.add_argument("--cluster", choices=["slurm", "pbs"], default=None, help="start workers through dask-jobqueue")
    p.add_argument("--cluster-config", default=None, help="YAML file of SLURMCluster/PBSCluster keyword arguments")
    p.add_argument("--resume", action="store_true", help="skip jobs already stored in --out")
    p.add_argument("--retries", type=int, default=2, help="resubmissions after a lost worker (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")


def run_cli(args) -> int:
    from ..cli import check_writable

    check_writable(args.out, "--out")  # the store and the manifest are checked before any cluster starts
    jobs = load_manifest(args.manifest)
    if args.cluster_config and not args.cluster:
        raise BatchError("--cluster-config needs --cluster slurm|pbs")
    if args.retries < 0:
        raise BatchError(f"--retries must be >= 0, got {args.retries}")
    client = cluster = None
    try:
        client, cluster = connect(args.scheduler, args.cluster, args.cluster_config, args.workers)
        df = run(jobs, client=client, store=args.out, workers=args.workers, retries=args.retries,
                 resume=args.resume, progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(f"lipsdp batch: interrupted; finished jobs are stored in {args.out}; "
              "run again with --resume to finish", file=sys.stderr)
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(summary(df))
    print(f"results: {os.path.abspath(args.out)} (SQLite, table 'results')")
    return 0 if (df["status"] == "ok").all() else 1
