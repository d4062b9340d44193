"""Batch certification: many (model × norm × method × solver × output) jobs on a Dask cluster.

lipsdp does not schedule anything itself: jobs are ``dask.distributed`` tasks, so the same
manifest runs on a laptop (an embedded ``LocalCluster``), on an existing Dask cluster
(``--scheduler tcp://HOST:PORT``) or on SLURM / PBS through ``dask-jobqueue``
(``--cluster slurm --cluster-config FILE``).  Dask, pandas, PyYAML and tqdm are imported lazily
(``pip install lipsdp[batch]``), so ``import lipsdp.batch`` stays cheap.

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
job's process; default none).  Every row is checked before anything runs; all bad rows are
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

import csv
import glob as _glob
import hashlib
import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .errors import LipSDPError

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

NORMS = ("l2", "linf")
METHODS = ("neuron", "layer", "chain")
FIELDS = ("model", "norm", "method", "solver", "output", "activation", "lower", "time_limit", "memory_limit")
_LIST_FIELDS = ("model", "norm", "method", "solver", "output", "activation")  # may hold alternatives
DEFAULTS = {"norm": "l2", "method": "neuron", "solver": "auto", "output": None, "activation": None,
            "lower": True, "time_limit": None, "memory_limit": None}
#: job statuses in the store; "unverified" rows hold a bound that must NOT be used as a certificate
STATUSES = ("ok", "unverified", "failed")


class ManifestError(LipSDPError, ValueError):
    """The manifest is malformed; the message lists every bad row as ``FILE:LINE: problem``."""


class BatchError(LipSDPError, RuntimeError):
    """A batch cannot start (results store clash, cluster configuration, missing dependency)."""


def _need(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise BatchError(
            f"lipsdp batch needs the package providing {module!r}, which is not installed; "
            "install the extra: pip install 'lipsdp[batch]'"
        ) from None


# ---------------------------------------------------------------------------------------------
# jobs and the manifest
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One certification: a model file and the parameters passed to :func:`lipsdp.certify`."""

    model: str
    model_hash: str
    norm: str = "l2"
    method: str = "neuron"
    solver: str = "auto"
    output: object = None  # None, int or tuple of floats
    activation: str | None = None
    lower: bool = True
    time_limit: float | None = None
    memory_limit: int | None = None
    source: str = ""  # "manifest.yaml:12"

    def params(self) -> dict:
        """The parameters that define the result (limits and paths are not among them)."""
        out = list(self.output) if isinstance(self.output, tuple) else self.output
        return {"model_hash": self.model_hash, "norm": self.norm, "method": self.method,
                "solver": self.solver, "output": out, "activation": self.activation, "lower": self.lower}

    @property
    def key(self) -> str:
        """sha256 of the model file's bytes and :meth:`params` (``--resume`` matches on it)."""
        text = json.dumps({"v": 1, **self.params()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def label(self) -> str:
        out = "" if self.output is None else f" out={list(self.output) if isinstance(self.output, tuple) else self.output}"
        return f"{os.path.basename(self.model)} {self.norm}/{self.method}/{self.solver}{out}"


_HASHES: dict[tuple, str] = {}


def file_hash(path: str) -> str:
    """sha256 of a file's bytes (cached per path, size and mtime)."""
    st = os.stat(path)
    k = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if k not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[k] = h.hexdigest()
    return _HASHES[k]


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30, "tib": 2**40}


def parse_bytes(value) -> int | None:
    """``2GB`` → 2·10⁹, ``512MiB`` → 512·2²⁰, a number → bytes, None/"" → None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory_limit must be bytes or a size like '2GB', got {value!r}")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"memory_limit must be bytes or a size like '2GB' / '512MiB', got {value!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"memory_limit must be positive, got {value!r}")
    return int(n)


def parse_seconds(value) -> float | None:
    """``90`` / ``90s`` / ``10m`` / ``2h`` → seconds; None/"" → None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"time_limit must be seconds or e.g. '10m', got {value!r}")
    if isinstance(value, (int, float)):
        s = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", str(value).lower())
        if not m:
            raise ValueError(f"time_limit must be seconds or a number with s / m / h (e.g. '10m'), got {value!r}")
        s = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"time_limit must be positive, got {value!r}")
    return s


def _parse_output(value):
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all", "none", "null")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"output must be null, a logit index or a vector c, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"output index must be >= 0, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+", text):
            return int(text)
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"output must be empty/all, a logit index or a JSON vector like [1,-1,0], got {text!r}") from None
        return _parse_output(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    raise ValueError(f"output must be null, a logit index or a non-empty vector c of numbers, got {value!r}")


def _choice(value, field_name, valid):
    if not isinstance(value, str) or value.lower() not in valid:
        raise ValueError(f"unknown {field_name} {value!r}; valid: {', '.join(valid)}")
    return value.lower()


def _solvers() -> tuple:
    from .backends import REGISTRY

    return ("auto",) + tuple(REGISTRY)


def _alternatives(value, name):
    """A manifest value → list of alternatives (a list means "each of these")."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{name}: an empty list selects no job")
        return value
    return [value]


def expand(rows, base_dir=".") -> list[Job]:
    """Expand rows (dicts with the manifest fields, plus ``_source`` for error messages) into
    jobs: globs, lists and the cartesian product.  Raises one :class:`ManifestError` listing
    every bad row."""
    errors, jobs, seen = [], [], set()
    solvers = _solvers()
    for i, row in enumerate(rows):
        src = row.get("_source") or f"job {i}"
        try:
            unknown = sorted(k for k in row if k not in FIELDS and k != "_source")
            if unknown:
                raise ValueError(f"unknown field(s) {unknown}; valid: {', '.join(FIELDS)}")
            if row.get("model") in (None, "", []):
                raise ValueError("missing 'model' (a path or glob of weight files)")
            vals = {**DEFAULTS, **{k: v for k, v in row.items() if k != "_source"}}
            files = []
            for pattern in _alternatives(vals["model"], "model"):
                if not isinstance(pattern, (str, os.PathLike)):
                    raise ValueError(f"model must be a path or glob, got {pattern!r}")
                pat = os.path.join(base_dir, os.path.expanduser(str(pattern)))
                if _glob.has_magic(pat):
                    hits = sorted(p for p in _glob.glob(pat, recursive=True) if os.path.isfile(p))
                    if not hits:
                        raise ValueError(f"model glob {str(pattern)!r} matches no file (looked in {os.path.abspath(base_dir)})")
                    files += hits
                elif not os.path.isfile(pat):
                    raise ValueError(f"model file {str(pattern)!r} does not exist (looked for {os.path.abspath(pat)})")
                else:
                    files.append(pat)
            norms = [_choice(v, "norm", NORMS) for v in _alternatives(vals["norm"], "norm")]
            methods = [_choice(v, "method", METHODS) for v in _alternatives(vals["method"], "method")]
            sols = [_choice(v, "solver", solvers) for v in _alternatives(vals["solver"], "solver")]
            outs = [_parse_output(v) for v in _alternatives(vals["output"], "output")]
            acts = []
            for a in _alternatives(vals["activation"], "activation"):
                if a is not None and not isinstance(a, str):
                    raise ValueError(f"activation must be a name like 'relu', got {a!r}")
                acts.append(a or None)
            lower = vals["lower"]
            if isinstance(lower, str) and lower.lower() in ("true", "false", "yes", "no", "1", "0", ""):
                lower = lower.lower() in ("true", "yes", "1", "")
            if not isinstance(lower, bool):
                raise ValueError(f"lower must be true or false, got {lower!r}")
            tl = parse_seconds(vals["time_limit"])
            ml = parse_bytes(vals["memory_limit"])
        except (ValueError, OSError) as exc:
            errors.append(f"{src}: {exc}")
            continue
        for f in files:
            try:
                h = file_hash(f)
            except OSError as exc:
                errors.append(f"{src}: cannot read model file {f}: {exc.strerror or exc}")
                continue
            for norm in norms:
                for method in methods:
                    for sol in sols:
                        for out in outs:
                            for act in acts:
                                job = Job(os.path.abspath(f), h, norm, method, sol, out, act, lower, tl, ml, src)
                                if job.key not in seen:  # the same job listed twice runs once
                                    seen.add(job.key)
                                    jobs.append(job)
    if errors:
        raise ManifestError(
            f"{len(errors)} bad manifest row(s); nothing was run:\n  " + "\n  ".join(errors)
            + f"\nvalid fields: {', '.join(FIELDS)} (see `pydoc lipsdp.batch`)"
        )
    return jobs


def _yaml_rows(path: Path) -> list[dict]:
    yaml = _need("yaml")
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ManifestError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        raise ManifestError(f"{path}: the manifest is empty; expected a list of jobs or a mapping with 'jobs'")
    defaults, items, nodes = {}, data, root
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"jobs", "defaults"})
        if unknown or "jobs" not in data:
            raise ManifestError(
                f"{path}:1: expected top-level keys 'jobs' (required) and 'defaults', got {sorted(data)}"
            )
        keys = {k.value: v for k, v in root.value}
        items, nodes = data["jobs"], keys["jobs"]
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ManifestError(f"{path}:{keys['defaults'].start_mark.line + 1}: 'defaults' must be a mapping")
    if not isinstance(items, list):
        raise ManifestError(f"{path}:{nodes.start_mark.line + 1}: 'jobs' must be a list of mappings")
    rows = []
    for item, node in zip(items, nodes.value):
        line = node.start_mark.line + 1
        if not isinstance(item, dict):
            rows.append({"_source": f"{path}:{line}", "model": None, "_bad": item})
            continue
        rows.append({**defaults, **item, "_source": f"{path}:{line}"})
    bad = [f"{r['_source']}: a job must be a mapping of fields, got {r['_bad']!r}" for r in rows if "_bad" in r]
    if bad:
        raise ManifestError(f"{len(bad)} bad manifest row(s); nothing was run:\n  " + "\n  ".join(bad))
    return rows


def _csv_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = None
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                unknown = [c for c in header if c not in FIELDS]
                if unknown:
                    raise ManifestError(f"{path}:{line}: unknown column(s) {unknown} in the header; "
                                        f"valid: {', '.join(FIELDS)}")
                if "model" not in header:
                    raise ManifestError(f"{path}:{line}: the header must name a 'model' column, got {header}")
                continue
            if len(cells) != len(header):
                rows.append({"_source": f"{path}:{line}", "model": "", "_ncols": len(cells)})
                continue
            row = {"_source": f"{path}:{line}"}
            for name, cell in zip(header, cells):
                cell = cell.strip()
                if cell == "":
                    continue
                parts = [p.strip() for p in cell.split("|")] if name in _LIST_FIELDS else [cell]
                row[name] = parts if len(parts) > 1 else parts[0]
            rows.append(row)
    bad = [f"{r['_source']}: expected {len(header)} cells, got {r['_ncols']}" for r in rows if "_ncols" in r]
    if bad:
        raise ManifestError(f"{len(bad)} bad manifest row(s); nothing was run:\n  " + "\n  ".join(bad))
    if header is None:
        raise ManifestError(f"{path}: the CSV manifest is empty; expected a header line and job rows")
    return rows


def load_manifest(path) -> list[Job]:
    """Read a ``.yaml`` / ``.yml`` or ``.csv`` manifest and return its validated jobs."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist or is not a file")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        rows = _yaml_rows(p)
    elif suffix == ".csv":
        rows = _csv_rows(p)
    else:
        raise ManifestError(f"manifest {str(path)!r}: expected a .yaml, .yml or .csv file, got {suffix or 'no extension'!r}")
    jobs = expand(rows, base_dir=str(p.parent))
    if not jobs:
        raise ManifestError(f"{path}: the manifest lists no job")
    return jobs


# ---------------------------------------------------------------------------------------------
# the job, on the worker
# ---------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _die_with_parent():  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the child outlives a killed worker until its time limit
        pass


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_PRELOAD = ("lipsdp.api", "lipsdp.io", "lipsdp.lower", "lipsdp.formulations", "lipsdp.backends",
            "cvxpy", "cvxopt", "scs", "clarabel")


def _job_main(spec: dict) -> None:
    """Body of one job's process (forked from the zygote): certify, write the result JSON."""
    import resource
    import traceback
    import warnings

    out = {"status": "failed", "error_type": "error", "error": "", "certificate": None}
    try:
        from .api import CertificationWarning, certify
        from .errors import InvalidNetworkError, ModelLoadError

        base = _vm_bytes()
        out["vm_base"] = base
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if spec.get("memory_limit"):
            lim = int(spec["memory_limit"])
            resource.setrlimit(resource.RLIMIT_AS, (min(lim, hard) if hard >= 0 else lim, hard))
        try:
            if file_hash(spec["model"]) != spec["model_hash"]:
                raise ModelLoadError(f"{spec['model']}: the file changed since the manifest was read (hash differs)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CertificationWarning)
                cert = certify(spec["model"], norm=spec["norm"], method=spec["method"], solver=spec["solver"],
                               output=spec["output"], lower=spec["lower"], activation=spec["activation"])
            out.update(status="ok" if cert.verified else "unverified", error_type=None,
                       error=None if cert.verified else f"bound not verified: {cert.message}",
                       certificate=cert.to_dict())
        except MemoryError as exc:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))  # room to report
            out.update(error_type="memory", error=(
                f"memory limit exceeded: the job needed more than memory_limit={spec.get('memory_limit')} bytes "
                f"of address space (the process held {base} bytes before the job started; "
                f"{type(exc).__name__}: {exc}); raise memory_limit or try method='layer'"))
        except (ModelLoadError, InvalidNetworkError) as exc:
            out.update(error_type="load", error=f"{type(exc).__name__}: {exc}")
        except LipSDPError as exc:
            out.update(error_type="lipsdp", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        out.update(error_type="error", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
    out["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["lipsdp_version"] = __version__
    tmp = spec["result_path"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh)
    os.replace(tmp, spec["result_path"])


def _zygote_main() -> None:
    """A single-threaded process per worker thread that imports the certification stack once and
    forks one process per job (``{spec}`` line in → ``pid`` line, then ``exit-status`` line out).

    It exits, killing its running job, when its stdin closes (the worker died or shut down).
    """
    import select
    import traceback

    for mod in _PRELOAD:
        try:
            __import__(mod)
        except Exception:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = fin.readline()
        if not line:
            return
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the job process
            code = 1
            try:
                _die_with_parent()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                null = os.open(os.devnull, os.O_RDWR)
                err = os.open(spec["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(err, 2)
                _job_main(spec)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        fout.write(f"{pid}\n".encode())
        fout.flush()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            ready, _, _ = select.select([fin], [], [], 0.05)
            if ready and not os.read(fin.fileno(), 1):  # the worker is gone: stop the job, leave
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
        fout.write(f"{status}\n".encode())
        fout.flush()


class _Zygote:
    """The worker side of :func:`_zygote_main` (one per worker thread)."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from lipsdp.batch import _zygote_main; _zygote_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, env=env, bufsize=0,
        )
        self.buf = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, spec: dict) -> None:
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")

    def readline(self, timeout):
        """A line from the zygote; None on timeout; RuntimeError if it died."""
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the lipsdp job launcher on {socket.gethostname()} exited "
                                   f"(code {self.proc.poll()})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except Exception:
            self.proc.kill()


_LOCAL = __import__("threading").local()


def _zygote() -> _Zygote:
    z = getattr(_LOCAL, "zygote", None)
    if z is None or not z.alive():
        z = _LOCAL.zygote = _Zygote()
    return z


def _execute(spec: dict) -> dict:
    """Run one job in its own process on this worker; never raises for a job-level failure.

    A RuntimeError (the launcher died) is a fault of the worker, not of the job: :func:`run`
    resubmits such a job like one whose worker was killed.
    """
    t0 = time.perf_counter()
    row = {"host": socket.gethostname(), "worker_pid": os.getpid(), "started_at": _now(),
           "lipsdp_version": __version__}
    tmpdir = tempfile.mkdtemp(prefix="lipsdp-job-")
    result_path = os.path.join(tmpdir, "result.json")
    stderr_path = os.path.join(tmpdir, "stderr.txt")
    z = _zygote()
    try:
        z.send({**spec, "result_path": result_path, "stderr_path": stderr_path})
        pid = int(z.readline(120) or -1)
        if pid < 0:
            z.close()
            raise RuntimeError("the lipsdp job launcher did not answer within 120 s")
        limit = spec.get("time_limit")
        line = z.readline(None if limit is None else max(0.0, limit - (time.perf_counter() - t0)))
        timed_out = line is None
        if timed_out:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            line = z.readline(60)
        status = int(line) if line else 0
        if timed_out:
            row.update(status="failed", error_type="timeout",
                       error=f"time limit exceeded: killed after {limit:g} s; raise time_limit, "
                             "or try method='layer' or a faster solver")
        elif os.path.exists(result_path):
            with open(result_path) as fh:
                row.update(json.load(fh))
        else:
            rc = os.waitstatus_to_exitcode(status)
            how = f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit code {rc}"
            with open(stderr_path, errors="replace") as fh:
                tail = fh.read()[-1500:]
            hint = (f"; with memory_limit={spec['memory_limit']} this is most likely the memory limit"
                    if spec.get("memory_limit") else "")
            row.update(status="failed", error_type="memory" if spec.get("memory_limit") else "crash",
                       error=f"the job process died ({how}) without a result{hint}\n{tail}".rstrip())
    finally:
        for name in (result_path, result_path + ".tmp", stderr_path):
            if os.path.exists(name):
                os.unlink(name)
        os.rmdir(tmpdir)
    row["seconds"] = time.perf_counter() - t0
    row["finished_at"] = _now()
    return row


# ---------------------------------------------------------------------------------------------
# the results store
# ---------------------------------------------------------------------------------------------

_COLUMNS = [
    ("job_key", "TEXT PRIMARY KEY"), ("status", "TEXT NOT NULL"), ("bound", "REAL"), ("verified", "INTEGER"),
    ("model_path", "TEXT"), ("model_hash", "TEXT"), ("norm", "TEXT"), ("method", "TEXT"), ("solver", "TEXT"),
    ("solver_used", "TEXT"), ("output", "TEXT"), ("activation", "TEXT"), ("lower", "INTEGER"),
    ("time_limit", "REAL"), ("memory_limit", "INTEGER"), ("error_type", "TEXT"), ("error", "TEXT"),
    ("certificate", "TEXT"), ("seconds", "REAL"), ("solve_seconds", "REAL"), ("max_rss", "INTEGER"),
    ("host", "TEXT"), ("worker_pid", "INTEGER"), ("lipsdp_version", "TEXT"), ("attempts", "INTEGER"),
    ("started_at", "TEXT"), ("finished_at", "TEXT"), ("manifest_row", "TEXT"),
]
COLUMNS = [c for c, _ in _COLUMNS]


class Store:
    """The SQLite results file: table ``results``, one row per job key.

    Only the client process writes; every row is its own transaction (``BEGIN IMMEDIATE`` …
    ``COMMIT``), so a row is either fully there or absent.  ``INSERT … ON CONFLICT(job_key) DO
    UPDATE … WHERE status = 'failed'`` means a stored result is never overwritten, and a failed
    row is replaced only by a later attempt of the same job (``--resume``).
    """

    def __init__(self, path):
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        cols = ", ".join(f"{c} {t}" for c, t in _COLUMNS)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
        if "job_key" not in have or not set(COLUMNS) <= have:
            raise BatchError(f"{self.path}: has a 'results' table that was not written by lipsdp batch; "
                             "choose another --out file")

    def statuses(self) -> dict:
        return dict(self.conn.execute("SELECT job_key, status FROM results"))

    def write(self, job: Job, row: dict, attempts: int) -> None:
        cert = row.get("certificate")
        rec = {
            "job_key": job.key, "status": row["status"], "model_path": job.model, "model_hash": job.model_hash,
            "norm": job.norm, "method": job.method, "solver": job.solver,
            "solver_used": (cert or {}).get("solver"), "output": json.dumps(job.params()["output"]),
            "activation": job.activation, "lower": int(job.lower), "time_limit": job.time_limit,
            "memory_limit": job.memory_limit, "error_type": row.get("error_type"), "error": row.get("error"),
            "certificate": json.dumps(cert) if cert is not None else None,
            "bound": (cert or {}).get("bound"), "verified": None if cert is None else int(bool(cert.get("verified"))),
            "seconds": row.get("seconds"), "solve_seconds": ((cert or {}).get("timings") or {}).get("solve"),
            "max_rss": row.get("max_rss"), "host": row.get("host"), "worker_pid": row.get("worker_pid"),
            "lipsdp_version": row.get("lipsdp_version", __version__), "attempts": attempts,
            "started_at": row.get("started_at"), "finished_at": row.get("finished_at"), "manifest_row": job.source,
        }
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "job_key")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                f"INSERT INTO results ({names}) VALUES ({marks}) "
                f"ON CONFLICT(job_key) DO UPDATE SET {update} WHERE results.status = 'failed'",
                [rec[c] for c in COLUMNS],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def dataframe(self, keys=None):
        pd = _need("pandas")
        df = pd.read_sql_query("SELECT * FROM results ORDER BY rowid", self.conn)
        if keys is not None:
            order = {k: i for i, k in enumerate(keys)}
            df = df[df["job_key"].isin(order)].copy()
            df["_order"] = df["job_key"].map(order)
            df = df.sort_values("_order").drop(columns="_order").reset_index(drop=True)
        return df

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------


class _Progress:
    """tqdm bar on a terminal (done / failed / running, ETA); one log line per job otherwise."""

    def __init__(self, total: int, nthreads, enabled=None, stream=None):
        self.total, self.nthreads, self.stream = total, nthreads, stream or sys.stderr
        self.done = self.failed = 0
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.mode = "off" if enabled is False else ("bar" if tty else "log")
        self.bar = None
        if self.mode == "bar":
            tqdm = _need("tqdm")
            self.bar = tqdm.tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True)
            self._postfix()

    def _postfix(self, refresh=True):
        running = min(self.total - self.done - self.failed, max(1, self.nthreads()))
        self.bar.set_postfix_str(f"done={self.done} failed={self.failed} running={running}", refresh=refresh)

    def update(self, job: Job, row: dict, attempts: int):
        if row["status"] == "failed":
            self.failed += 1
        else:
            self.done += 1
        if self.mode == "bar":
            self._postfix(refresh=False)
            self.bar.update(1)
        elif self.mode == "log":
            n = self.done + self.failed
            what = (f"bound {row['certificate']['bound']:.6g}" if row.get("certificate") else
                    f"{row.get('error_type')}: {str(row.get('error') or '').splitlines()[0][:120]}")
            again = f", attempt {attempts}" if attempts > 1 else ""
            print(f"lipsdp batch: [{n}/{self.total}] {row['status']:<10} {job.label()}  {what}  "
                  f"({row.get('seconds', 0):.1f} s on {row.get('host')}{again})", file=self.stream, flush=True)

    def note(self, text: str):
        if self.mode == "bar":
            self.bar.write(f"lipsdp batch: {text}", file=self.stream)
        elif self.mode == "log":
            print(f"lipsdp batch: {text}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def summary(df) -> str:
    """A short text table: jobs per status, then one line per job (the first 40)."""
    if len(df) == 0:
        return "no jobs"
    counts = df["status"].value_counts()
    head = "  ".join(f"{s}: {int(counts.get(s, 0))}" for s in STATUSES)
    view = df.assign(model=df["model_path"].map(os.path.basename), output=df["output"].where(df["output"] != "null", "all"))
    cols = ["model", "norm", "method", "solver", "output", "status", "bound", "seconds", "attempts", "error_type"]
    table = view[cols].head(40).to_string(index=False, float_format=lambda x: f"{x:.6g}")
    more = f"\n… and {len(df) - 40} more rows in the store" if len(df) > 40 else ""
    return f"{len(df)} jobs — {head}\n{table}{more}"


# ---------------------------------------------------------------------------------------------
# clusters and run()
# ---------------------------------------------------------------------------------------------


def local_cluster(workers: int | None = None, **kwargs):
    """The embedded default: a ``LocalCluster`` of worker processes with one thread each.

    The scheduler is told to fail a task the first time its worker dies
    (``allowed-failures = 0``) and to hand each worker one task at a time
    (``worker-saturation = 1.0``), so that :func:`run` sees every lost job and resubmits it itself,
    counting attempts exactly.
    """
    dask = _need("dask")
    distributed = _need("distributed")
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}):
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=kwargs.pop("dashboard_address", None), **kwargs)


def jobqueue_cluster(kind: str, config):
    """A dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` from a dict or a YAML file of its keyword
    arguments (``cores``, ``memory``, ``queue``, ``account``, ``walltime``, ``job_extra_directives``, …)."""
    kinds = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}
    if kind not in kinds:
        raise BatchError(f"unknown --cluster {kind!r}; valid: {', '.join(kinds)}")
    if not isinstance(config, dict):
        yaml = _need("yaml")
        try:
            with open(config) as fh:
                config = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise BatchError(f"cannot read --cluster-config {config!r}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise BatchError(f"--cluster-config {config!r} is not valid YAML ({exc})") from None
        if not isinstance(config, dict):
            raise BatchError(f"--cluster-config must be a YAML mapping of {kinds[kind]} keyword arguments, "
                             f"got {type(config).__name__}")
    jq = _need("dask_jobqueue")
    cls = getattr(jq, kinds[kind])
    kw = {"cores": 1, "processes": 1, "memory": "4GB", "python": sys.executable, **config}
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise BatchError(f"cannot build a {kinds[kind]} from {sorted(config)}: {exc}; "
                         f"see the dask-jobqueue documentation of {kinds[kind]}") from None


def _as_jobs(jobs) -> list[Job]:
    if isinstance(jobs, (str, os.PathLike)):
        return load_manifest(jobs)
    jobs = list(jobs)
    if all(isinstance(j, Job) for j in jobs):
        return jobs
    if all(isinstance(j, dict) for j in jobs):
        return expand(jobs)
    raise BatchError("jobs must be a manifest path, a list of lipsdp.batch.Job or a list of dicts with the "
                     f"manifest fields ({', '.join(FIELDS)})")


def run(jobs, client=None, store="lipsdp-results.sqlite", workers=None, retries=2, resume=False,
        progress=None, on_result=None):
    """Run certification jobs on Dask and return one row per job as a pandas DataFrame.

    Parameters
    ----------
    jobs: a manifest path (YAML / CSV, see the module docstring), a list of :class:`Job`, or a list
        of dicts with the manifest fields.
    client: a ``distributed.Client``; None builds :func:`local_cluster` (``workers`` processes)
        and closes it at the end.
    store: the SQLite results file (created if missing).
    retries: how many times a job is resubmitted after its worker was lost (killed, crashed,
        disconnected).  Failures of the job itself (load error, time or memory limit, solver
        error) are deterministic and stored as failed rows at once.
    resume: skip jobs whose result is already stored (status ok / unverified; same model hash
        and parameters); failed rows are run again.  Without it, a store that already holds any of
        these jobs is an error.
    progress: None (bar on a terminal, log lines otherwise) or False.
    on_result: optional callback ``on_result(job, row)`` called after each row is committed.

    Ctrl-C (KeyboardInterrupt) cancels the outstanding jobs, closes the cluster it built and
    re-raises; every row already committed is complete, no row is partial.
    """
    jobs = _as_jobs(jobs)
    st = Store(store)
    try:
        stored = st.statuses()
        keys = [j.key for j in jobs]
        if resume:
            todo = [j for j in jobs if stored.get(j.key) not in ("ok", "unverified")]
        else:
            clash = [k for k in keys if k in stored]
            if clash:
                raise BatchError(f"the results store {st.path} already holds {len(clash)} of these {len(jobs)} jobs; "
                                 "pass resume=True (--resume) to skip them, or choose another store (--out)")
            todo = jobs
        if todo:
            _run_jobs(todo, st, client, workers, retries, progress, on_result, skipped=len(jobs) - len(todo))
        return st.dataframe(keys)
    finally:
        st.close()


def _run_jobs(todo, st, client, workers, retries, progress, on_result, skipped):
    distributed = _need("distributed")
    cluster = None
    if client is None:
        cluster = local_cluster(workers)
        client = distributed.Client(cluster)
    meta, written, futures = {}, set(), []

    def submit(job: Job, attempt: int):
        spec = {k: v for k, v in asdict(job).items() if k != "source"}
        spec["output"] = job.params()["output"]
        fut = client.submit(_execute, spec, key=f"lipsdp-job-{job.key[:20]}-{attempt}", pure=False)
        meta[fut.key] = (job, attempt)
        futures.append(fut)
        return fut

    bar = _Progress(len(todo), lambda: sum(client.nthreads().values()), enabled=progress)
    if skipped:
        bar.note(f"--resume: {skipped} job(s) already stored, {len(todo)} to run")
    try:
        ac = distributed.as_completed([submit(j, 1) for j in todo])
        for fut in ac:
            job, attempt = meta.pop(fut.key)
            try:
                row = fut.result()
            except Exception as exc:  # the worker was lost or the task could not run
                lost = type(exc).__name__ == "KilledWorker"
                if attempt <= retries:
                    bar.note(f"{job.label()}: {'worker lost' if lost else type(exc).__name__} "
                             f"(attempt {attempt}); resubmitting")
                    ac.add(submit(job, attempt + 1))
                    fut.release()
                    continue
                row = {"status": "failed", "error_type": "worker-lost" if lost else "error",
                       "error": f"{type(exc).__name__}: {exc} (after {attempt} attempt(s))",
                       "finished_at": _now()}
            fut.release()
            if job.key in written:  # cannot happen: one future per (job, attempt) is pending at a time
                continue
            st.write(job, row, attempt)
            written.add(job.key)
            bar.update(job, row, attempt)
            if on_result is not None:
                on_result(job, row)
    except KeyboardInterrupt:
        bar.note(f"interrupted: {len(written)} finished job(s) are stored; cancelling the rest")
        raise
    finally:
        bar.close()
        try:
            client.cancel([f for f in futures if not f.done()])
        except Exception:
            pass
        if cluster is not None:
            client.close()
            cluster.close()


# ---------------------------------------------------------------------------------------------
# the CLI subcommand
# ---------------------------------------------------------------------------------------------


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
    jobs = load_manifest(args.manifest)  # validate before any cluster starts
    if args.cluster_config and not args.cluster:
        raise BatchError("--cluster-config needs --cluster slurm|pbs")
    if args.retries < 0:
        raise BatchError(f"--retries must be >= 0, got {args.retries}")
    client = cluster = None
    try:
        if args.scheduler or args.cluster:
            distributed = _need("distributed")
            if args.cluster:
                cluster = jobqueue_cluster(args.cluster, args.cluster_config or {})
                if args.workers:
                    cluster.scale(n=args.workers)
                else:
                    cluster.scale(jobs=1)
                client = distributed.Client(cluster)
            else:
                try:
                    client = distributed.Client(args.scheduler, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise BatchError(f"cannot connect to the Dask scheduler {args.scheduler!r} ({exc}); "
                                     "check the address (tcp://HOST:PORT) and that `dask scheduler` runs") from None
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


def _register() -> None:
    try:
        from .cli import SUBCOMMANDS
    except ImportError:  # pragma: no cover
        return
    SUBCOMMANDS["batch"] = (add_arguments, run_cli)


_register()
