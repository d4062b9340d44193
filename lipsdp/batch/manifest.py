"""Manifests → jobs: reading YAML / CSV manifests, validating every row, expanding globs and lists.

The format is documented in :mod:`lipsdp.batch` (``pydoc lipsdp.batch``) and docs/batch.md.
Guarantee: :func:`load_manifest` / :func:`expand` either return the complete list of jobs or raise
one :class:`ManifestError` that lists every bad row as ``FILE:LINE: what is wrong``; nothing is
run before that.  A job's :attr:`Job.key` depends on the model file's bytes and the parameters
that define the result, never on paths or limits.
"""

from __future__ import annotations

import csv
import glob as _glob
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..options import METHODS, NORMS, parse_output
from .base import ManifestError, need

__all__ = ["Job", "expand", "load_manifest", "file_hash", "parse_bytes", "parse_seconds",
           "NORMS", "METHODS", "FIELDS", "DEFAULTS"]

FIELDS = ("model", "norm", "method", "solver", "output", "activation", "lower", "time_limit", "memory_limit",
          "model_class", "model_args", "input_shape", "region")
_LIST_FIELDS = ("model", "norm", "method", "solver", "output", "activation")  # may hold alternatives
DEFAULTS = {"norm": "l2", "method": "neuron", "solver": "auto", "output": None, "activation": None,
            "lower": True, "time_limit": None, "memory_limit": None,
            "model_class": None, "model_args": None, "input_shape": None, "region": None}


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
    model_class: str | None = None  # "/abs/path/file.py:ClassName" or "package.module:ClassName"
    model_args: str | None = None  # canonical JSON of the constructor arguments
    input_shape: tuple | None = None
    model_class_hash: str | None = None  # sha256 of the class's .py file
    region: str | None = None  # a local bound's region, as lipsdp.local.parse_region reads it (paths absolute)
    region_hash: str | None = None  # sha256 of the region's numbers (so --resume sees edited files)

    def params(self) -> dict:
        """The parameters that define the result (limits and paths are not among them)."""
        out = list(self.output) if isinstance(self.output, tuple) else self.output
        params = {"model_hash": self.model_hash, "norm": self.norm, "method": self.method,
                  "solver": self.solver, "output": out, "activation": self.activation, "lower": self.lower}
        if self.model_class is not None:  # jobs without a class keep the keys they always had
            params.update(model_class=self.model_class.rpartition(":")[2], model_class_hash=self.model_class_hash,
                          model_args=self.model_args,
                          input_shape=None if self.input_shape is None else list(self.input_shape))
        if self.region is not None:  # jobs without a region keep the keys they always had
            params.update(region=self.region, region_hash=self.region_hash)
        return params

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


# ---------------------------------------------------------------------------------------------
# field values
# ---------------------------------------------------------------------------------------------

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


#: the one output parser (lipsdp.options); its FormulationError is a ValueError like the others here
_parse_output = parse_output


def _parse_lower(value) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", ""):
        value = value.lower() in ("true", "yes", "1", "")
    if not isinstance(value, bool):
        raise ValueError(f"lower must be true or false, got {value!r}")
    return value


def _parse_activation(value):
    if value is not None and not isinstance(value, str):
        raise ValueError(f"activation must be a name like 'relu', got {value!r}")
    return value or None


def _parse_model_class(value, base_dir) -> tuple[str | None, str | None]:
    """(model_class with an absolute file path, sha256 of that file or None for a module)."""
    if value is None or value == "":
        return None, None
    where, sep, name = str(value).rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"model_class must be path/to/file.py:ClassName or package.module:ClassName, got {value!r}")
    if not where.endswith(".py"):
        return value, None
    file = os.path.abspath(os.path.join(base_dir, os.path.expanduser(where)))
    if not os.path.isfile(file):
        raise ValueError(f"model_class file {where!r} does not exist (looked for {file})")
    return f"{file}:{name}", file_hash(file)


def _parse_model_args(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"model_args must be a JSON object or list, got {value!r}") from None
    if not isinstance(value, (dict, list)):
        raise ValueError(f"model_args must be a mapping (keyword arguments) or a list, got {value!r}")
    return json.dumps(value, sort_keys=True)


def _parse_region(value, base_dir) -> tuple[str | None, str | None]:
    """(the region spec with file paths made absolute, sha256 of its numbers), or (None, None)."""
    if value in (None, ""):
        return None, None
    from ..local import parse_region

    parts = str(value).split(":")
    for i in range(2 if parts[0].strip().lower() in ("l2", "linf") else 1, len(parts)):
        cand = os.path.join(str(base_dir), parts[i].strip())
        if parts[i].strip().endswith((".npy", ".txt", ".csv")) and os.path.exists(cand):
            parts[i] = os.path.abspath(cand)
    spec = ":".join(parts)
    region = parse_region(spec)  # validates now: a bad region fails the manifest, not the job
    digest = hashlib.sha256()
    for name in ("lo", "hi", "x0", "eps"):
        if hasattr(region, name):
            digest.update(np.ascontiguousarray(np.asarray(getattr(region, name), dtype=float)).tobytes())
    return spec, digest.hexdigest()


def _parse_input_shape(value) -> tuple | None:
    from ..io import parse_input_shape

    return parse_input_shape(value)


def _choice(value, field_name, valid):
    if not isinstance(value, str) or value.lower() not in valid:
        raise ValueError(f"unknown {field_name} {value!r}; valid: {', '.join(valid)}")
    return value.lower()


def _solvers() -> tuple:
    from ..backends import REGISTRY

    return ("auto",) + tuple(REGISTRY)


def _alternatives(value, name):
    """A manifest value → list of alternatives (a list means "each of these")."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{name}: an empty list selects no job")
        return value
    return [value]


# ---------------------------------------------------------------------------------------------
# rows → jobs
# ---------------------------------------------------------------------------------------------


def _model_files(value, base_dir) -> list[str]:
    """The model field (a path, a glob or a list of them) → existing files, in order."""
    files = []
    for pattern in _alternatives(value, "model"):
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
    return files


def _row_choices(row: dict, base_dir, solvers) -> tuple[list[str], dict, dict]:
    """Validate one row: (model files, {field: list of alternatives}, {field: single value})."""
    unknown = sorted(k for k in row if k not in FIELDS and k != "_source")
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; valid: {', '.join(FIELDS)}")
    if row.get("model") in (None, "", []):
        raise ValueError("missing 'model' (a path or glob of weight files)")
    vals = {**DEFAULTS, **{k: v for k, v in row.items() if k != "_source"}}
    files = _model_files(vals["model"], base_dir)
    choices = {
        "norm": [_choice(v, "norm", NORMS) for v in _alternatives(vals["norm"], "norm")],
        "method": [_choice(v, "method", METHODS) for v in _alternatives(vals["method"], "method")],
        "solver": [_choice(v, "solver", solvers) for v in _alternatives(vals["solver"], "solver")],
        "output": [_parse_output(v) for v in _alternatives(vals["output"], "output")],
        "activation": [_parse_activation(a) for a in _alternatives(vals["activation"], "activation")],
    }
    single = {"lower": _parse_lower(vals["lower"]), "time_limit": parse_seconds(vals["time_limit"]),
              "memory_limit": parse_bytes(vals["memory_limit"])}
    single["model_class"], single["model_class_hash"] = _parse_model_class(vals["model_class"], base_dir)
    single["model_args"] = _parse_model_args(vals["model_args"])
    single["input_shape"] = _parse_input_shape(vals["input_shape"])
    single["region"], single["region_hash"] = _parse_region(vals["region"], base_dir)
    if single["model_class"] is None and (single["model_args"] or single["input_shape"]):
        raise ValueError("model_args and input_shape need model_class (path/to/file.py:ClassName)")
    return files, choices, single


def expand(rows, base_dir=".") -> list[Job]:
    """Expand rows (dicts with the manifest fields, plus ``_source`` for error messages) into
    jobs: globs, lists and the cartesian product.  Raises one :class:`ManifestError` listing
    every bad row.  The same job listed twice runs once."""
    errors, jobs, seen = [], [], set()
    solvers = _solvers()
    for i, row in enumerate(rows):
        src = row.get("_source") or f"job {i}"
        try:
            files, choices, single = _row_choices(row, base_dir, solvers)
        except (ValueError, OSError) as exc:
            errors.append(f"{src}: {exc}")
            continue
        for f in files:
            try:
                h = file_hash(f)
            except OSError as exc:
                errors.append(f"{src}: cannot read model file {f}: {exc.strerror or exc}")
                continue
            for combo in itertools.product(*choices.values()):
                job = Job(os.path.abspath(f), h, **dict(zip(choices, combo)), **single, source=src)
                if job.key not in seen:
                    seen.add(job.key)
                    jobs.append(job)
    if errors:
        raise ManifestError(
            f"{len(errors)} bad manifest row(s); nothing was run:\n  " + "\n  ".join(errors)
            + f"\nvalid fields: {', '.join(FIELDS)} (see `pydoc lipsdp.batch`)"
        )
    return jobs


# ---------------------------------------------------------------------------------------------
# manifest files → rows
# ---------------------------------------------------------------------------------------------


def _bad_rows(bad: list[str]) -> ManifestError:
    return ManifestError(f"{len(bad)} bad manifest row(s); nothing was run:\n  " + "\n  ".join(bad))


def _yaml_load(path: Path):
    """(data, root node) of a YAML file; a syntax error → ManifestError with its line."""
    yaml = need("yaml")
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
    return data, root


def _yaml_rows(path: Path) -> list[dict]:
    data, root = _yaml_load(path)
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
    rows, bad = [], []
    for item, node in zip(items, nodes.value):
        src = f"{path}:{node.start_mark.line + 1}"
        if not isinstance(item, dict):
            bad.append(f"{src}: a job must be a mapping of fields, got {item!r}")
            continue
        rows.append({**defaults, **item, "_source": src})
    if bad:
        raise _bad_rows(bad)
    return rows


def _csv_header(cells, path, line) -> list[str]:
    header = [c.strip() for c in cells]
    unknown = [c for c in header if c not in FIELDS]
    if unknown:
        raise ManifestError(f"{path}:{line}: unknown column(s) {unknown} in the header; valid: {', '.join(FIELDS)}")
    if "model" not in header:
        raise ManifestError(f"{path}:{line}: the header must name a 'model' column, got {header}")
    return header


def _csv_row(header, cells, src) -> dict:
    row = {"_source": src}
    for name, cell in zip(header, cells):
        cell = cell.strip()
        if cell == "":
            continue
        parts = [p.strip() for p in cell.split("|")] if name in _LIST_FIELDS else [cell]
        row[name] = parts if len(parts) > 1 else parts[0]
    return row


def _csv_rows(path: Path) -> list[dict]:
    rows, bad, header = [], [], None
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = _csv_header(cells, path, line)
            elif len(cells) != len(header):
                bad.append(f"{path}:{line}: expected {len(header)} cells, got {len(cells)}")
            else:
                rows.append(_csv_row(header, cells, f"{path}:{line}"))
    if bad:
        raise _bad_rows(bad)
    if header is None:
        raise ManifestError(f"{path}: the CSV manifest is empty; expected a header line and job rows")
    return rows


_READERS = {".yaml": _yaml_rows, ".yml": _yaml_rows, ".csv": _csv_rows}


def load_manifest(path) -> list[Job]:
    """Read a ``.yaml`` / ``.yml`` or ``.csv`` manifest and return its validated jobs."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist or is not a file")
    suffix = p.suffix.lower()
    if suffix not in _READERS:
        raise ManifestError(f"manifest {str(path)!r}: expected a .yaml, .yml or .csv file, got {suffix or 'no extension'!r}")
    jobs = expand(_READERS[suffix](p), base_dir=str(p.parent))
    if not jobs:
        raise ManifestError(f"{path}: the manifest lists no job")
    return jobs
