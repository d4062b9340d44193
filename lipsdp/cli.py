"""The ``lipsdp`` command line (also ``python -m lipsdp``).

    lipsdp certify PATH [--norm l2|linf] [--method neuron|layer|chain] [--solver NAME]
                        [--output K] [--activation relu] [--json] [--out FILE] [--report FILE]
                        [--model FILE.py:Class [--model-args JSON] [--input-shape C,H,W]]
    lipsdp demo
    lipsdp solvers

Errors a user can cause print one line on stderr and exit with code 2; an unverified bound
exits with code 1.  Output paths (``--out``, ``--report``) are checked for writability before
anything is solved; output files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from importlib import resources

from . import __version__
from .options import METHODS, NORMS, parse_output
from .errors import LipSDPError

__all__ = ["main", "SUBCOMMANDS", "write_atomic", "check_writable"]

EXIT_OK, EXIT_UNVERIFIED, EXIT_USAGE = 0, 1, 2

#: extra subcommands: name -> (add_arguments(parser), run(args) -> exit code).  Modules such as
#: lipsdp.batch register here so the CLI stays one small file.
SUBCOMMANDS: dict = {}


def write_atomic(path: str, text: str) -> None:
    """Write text to ``path`` via a temporary file in the same folder and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lipsdp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(path, what: str) -> None:
    """Raise LipSDPError (one line) unless ``path`` can be written: its folder exists and is
    writable, and ``path`` itself is not a folder or a read-only file."""
    full = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise LipSDPError(f"{what} {str(path)!r}: the folder {folder} does not exist; create it or choose another path")
    if os.path.isdir(full):
        raise LipSDPError(f"{what} {str(path)!r} is a folder; give a file path")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise LipSDPError(f"{what} {str(path)!r} exists and is not writable")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LipSDPError(f"{what} {str(path)!r}: the folder {folder} is not writable")


def demo_path() -> str:
    return str(resources.files("lipsdp") / "data" / "demo_digits.npz")


def _parse_output(text):
    return parse_output(text)  # lipsdp.options: the one output parser (index, JSON or comma vector)


def _add_certify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--norm", default="l2", choices=list(NORMS), help="input/output norm (default l2)")
    p.add_argument("--method", default="neuron",
                   help=f"{', '.join(METHODS)} (default neuron; channel: one multiplier per conv channel)")
    p.add_argument("--solver", default="auto", help="auto (default) or a backend name (see `lipsdp solvers`)")
    p.add_argument("--output", default=None, help="one logit index, or a comma-separated vector c (margin c^T f)")
    p.add_argument("--activation", default=None, help="hidden activation for bare weight files (default: the file's own, else relu)")
    p.add_argument("--no-lower", action="store_true", help="skip the sampled lower bound")
    p.add_argument("--region", default=None, metavar="SPEC",
                   help="a local bound on an input region: l2:EPS:X0, linf:EPS:X0 or box:LO:HI "
                        "(X0, LO, HI: .npy/.txt/.csv files or comma-separated numbers)")
    p.add_argument("--time-limit", type=float, default=None, help="solver time limit in seconds")
    p.add_argument("--json", action="store_true", help="print the certificate as JSON")
    p.add_argument("--out", default=None, help="also write the JSON certificate to this file (atomically)")
    p.add_argument("--report", default=None, help="also write a self-contained HTML report to this file")


def _add_model_class_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="FILE.py:CLASS",
                   help="PATH is a state dict of this torch model class (path/to/file.py:ClassName or "
                        "package.module:ClassName). This IMPORTS AND RUNS that Python code; the state dict "
                        "itself is still loaded with torch.load(weights_only=True)")
    p.add_argument("--model-args", default=None, metavar="JSON",
                   help="constructor arguments of --model as a JSON object (keywords) or list, e.g. '{\"hidden\": 64}'")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="per-sample input shape of --model without the batch dimension, e.g. 1,28,28 or 784")


def _model(args, path: str):
    """What to certify: the path itself, or the network built from --model and the state dict."""
    if getattr(args, "model", None) is None:
        if getattr(args, "model_args", None) is not None or getattr(args, "input_shape", None) is not None:
            raise LipSDPError("--model-args and --input-shape need --model FILE.py:ClassName")
        return path
    from .io import load_with_class

    return load_with_class(path, args.model, args.model_args, args.input_shape)


def _run_certify(args, path: str) -> int:
    from .api import CertificationWarning, certify

    for option in ("out", "report"):
        if getattr(args, option, None):
            check_writable(getattr(args, option), f"--{option}")
    region = None
    if getattr(args, "region", None):
        from .local import parse_region

        region = parse_region(args.region)
    model = _model(args, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CertificationWarning)
        cert = certify(
            model,
            norm=args.norm,
            method=args.method,
            solver=args.solver,
            output=_parse_output(args.output),
            activation=args.activation,
            lower=not args.no_lower,
            time_limit=args.time_limit,
            region=region,
        )
    if args.json:
        print(cert.to_json(indent=2))
    else:
        print(cert)
    if args.out:
        write_atomic(args.out, cert.to_json(indent=2) + "\n")
    if getattr(args, "report", None):
        from .report import write_report

        write_report(cert, args.report, network=model, activation=args.activation)
    if not cert.verified:
        print(f"lipsdp: error: the bound could not be verified ({cert.message})", file=sys.stderr)
        return EXIT_UNVERIFIED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipsdp", description="Certified Lipschitz bounds for neural networks by SDP.")
    parser.add_argument("--version", action="version", version=f"lipsdp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certify", help="certify a network stored in a weight file")
    p.add_argument("path", help="model file: .mat (cell 'weights' or 'W'), .npz, .pt (weights_only) or .onnx")
    _add_certify_args(p)
    _add_model_class_args(p)
    d = sub.add_parser("demo", help="certify the small digits MLP that ships with lipsdp")
    _add_certify_args(d)
    sub.add_parser("solvers", help="list the solver backends and whether they can run here")
    for name, (add_args, _run) in SUBCOMMANDS.items():
        add_args(sub.add_parser(name))
    return parser


def _run_solvers() -> int:
    from .backends import REGISTRY

    for name, cls in REGISTRY.items():
        ok, why = cls.availability()
        print(f"{name:<10} {'available' if ok else 'unavailable'}  {cls.description if ok else why}")
    return EXIT_OK


def main(argv=None) -> int:
    _load_plugins()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "certify":
            return _run_certify(args, args.path)
        if args.command == "demo":
            print(f"lipsdp demo: certifying the bundled 64-32-32-10 ReLU MLP trained on scikit-learn digits\n({demo_path()})\n")
            return _run_certify(args, demo_path())
        if args.command == "solvers":
            return _run_solvers()
        return SUBCOMMANDS[args.command][1](args)
    except LipSDPError as exc:
        print(f"lipsdp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lipsdp: interrupted", file=sys.stderr)
        return 130


def _load_plugins() -> None:
    """Import the modules that register extra subcommands (cheap; no heavy imports at top level)."""
    for mod in ("lipsdp.batch",):
        try:
            __import__(mod)
        except ImportError:
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
