"""Self-contained HTML report of one certification (``lipsdp certify --report out.html``).

The report is one HTML file with no external assets: CSS inline, figures embedded as base64
PNG (``data:image/png;base64,…``), no scripts.  It shows the certificate table, the interval
[lower, upper] against the naive bound (:func:`lipsdp.plot.compare`), and — when the network is
given — a per-layer table (shape, activation, ‖W_k‖_2) and the per-layer factors of the
certified chain (:func:`lipsdp.plot.layer_contributions`; skipped for large networks because it
costs one solve per layer).  Written atomically (temporary file + rename).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json

import numpy as np

__all__ = ["write_report", "render_report", "certificate_table_html"]

#: layer contributions are computed only up to this many hidden neurons (one solve per layer)
CONTRIBUTIONS_MAX_NEURONS = 400

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1000px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:.9em}
table.lipsdp-cert,table.lipsdp-layers{border-collapse:collapse;font-size:.92em}
table.lipsdp-cert th,table.lipsdp-cert td,table.lipsdp-layers th,table.lipsdp-layers td{
border:1px solid #ddd;padding:.3em .7em;text-align:left}
table.lipsdp-cert th,table.lipsdp-layers th{background:#f5f5f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}
"""


def certificate_table_html(cert) -> str:
    """A small HTML table of a certificate (used by ``Certificate._repr_html_`` in Jupyter)."""
    rows = cert.rows()
    body = []
    for key, val in rows:
        cls = ""
        if key == "verified":
            cls = ' class="ok"' if cert.verified else ' class="bad"'
        elif key == "certified bound":
            cls = ' class="num ok"' if cert.verified else ' class="num bad"'
        body.append(f"<tr><th>{html.escape(str(key))}</th><td{cls}>{html.escape(str(val))}</td></tr>")
    return '<table class="lipsdp-cert">' + "".join(body) + "</table>"


def _png_tag(fig, alt: str) -> str:
    from .plot import figure_png

    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(figsize):
    from matplotlib.figure import Figure  # no pyplot: works headless, leaves no global state

    return Figure(figsize=figsize, constrained_layout=True)


def _layer_table(net) -> str:
    from .ir import Activation, Affine, Residual

    rows = ["<tr><th>#</th><th>layer</th><th>shape</th><th>‖W‖<sub>2</sub></th></tr>"]
    k = 0
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Affine):
            nrm = float(layer.op.norm2_estimate())  # a convolution stays an operator
            rows.append(f"<tr><td>{i}</td><td>W{k} (affine)</td><td>{layer.out_dim} × {layer.in_dim}</td>"
                        f'<td class="num">{nrm:.6g}</td></tr>')
            k += 1
        elif isinstance(layer, Activation):
            rows.append(f"<tr><td>{i}</td><td>{html.escape(layer.describe())}</td><td>{layer.size}</td><td></td></tr>")
        elif isinstance(layer, Residual):
            rows.append(f"<tr><td>{i}</td><td>residual block</td><td>{layer.dim}</td><td></td></tr>")
    return '<table class="lipsdp-layers">' + "".join(rows) + "</table>"


def render_report(cert, network=None, title: str | None = None, contributions: bool | None = None,
                  activation: str | None = None) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    from . import __version__
    from .plot import compare, layer_contributions, layer_factors

    title = title or "lipsdp certificate"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="sub">lipsdp {html.escape(__version__)} · '
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · {html.escape(cert.network)}</div>",
        "<h2>Certificate</h2>",
        "<p>The certified bound passed lipsdp's independent float64 check: every input pair "
        "satisfies ‖f(x) − f(y)‖ ≤ bound · ‖x − y‖" + (" (ℓ2 → ℓ2)." if cert.norm == "l2" else
                                                             " (ℓ∞ input, scalar output).") +
        " The lower bound is a difference quotient actually evaluated, so the true Lipschitz "
        "constant lies in [lower, upper].</p>"
        if cert.verified else
        '<p class="bad">The solver\'s value could NOT be verified: it is not a certificate.</p>',
        certificate_table_html(cert),
        "<h2>Bounds</h2>",
    ]
    fig = _figure((7.5, 2.2))
    compare(cert, ax=fig.add_subplot(), labels=[f"{cert.norm} / {cert.method}"])
    parts.append(_png_tag(fig, "certified interval against the naive bound"))

    net = None
    if network is not None:
        from .api import as_network

        net = as_network(network, activation=activation)
        parts += ["<h2>Layers</h2>", _layer_table(net)]
        hidden = sum(a.size or 0 for a in net.activations)
        if contributions is None:
            contributions = net.is_feedforward and cert.norm == "l2" and hidden <= CONTRIBUTIONS_MAX_NEURONS
        if contributions and net.is_feedforward and len(net.activations) >= 1:
            parts.append("<h2>Per-layer factors</h2>")
            try:
                fac = layer_factors(net, method="chain")
            except Exception as exc:  # a diagnostic figure must not prevent the report
                parts.append(f'<p class="bad">per-layer factors failed: {html.escape(str(exc))}</p>')
            else:
                parts.append(
                    "<p>Grey: ‖W<sub>k</sub>‖<sub>2</sub> (their product is the naive bound). Blue: "
                    "c<sub>k</sub> = sqrt(ρ<sub>k</sub>/ρ<sub>k−1</sub>), with ρ<sub>k</sub> the squared "
                    "certified bound (S = P = 0 chain, checked) of the network truncated after W<sub>k</sub>; "
                    "their product is the chain's certified bound "
                    f"{fac['bound']:.6g}.</p>")
                fig = _figure((7.5, 3.0))
                layer_contributions(ax=fig.add_subplot(), factors=fac)
                parts.append(_png_tag(fig, "per-layer factors"))
        elif net.is_feedforward:
            parts.append(f'<p class="sub">Per-layer factors skipped ({hidden} hidden neurons &gt; '
                         f"{CONTRIBUTIONS_MAX_NEURONS}, or ℓ∞): they cost one solve per layer.</p>")
    parts += [
        "<h2>Details</h2><details><summary>certificate as JSON</summary><pre>",
        html.escape(json.dumps(cert.to_dict(), indent=2)),
        "</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(cert, path, network=None, title: str | None = None, contributions: bool | None = None,
                 activation: str | None = None) -> str:
    """Write a self-contained HTML report of ``cert`` to ``path`` (atomically); returns the path.

    ``network`` (a :class:`~lipsdp.Network`, weight-file path, weight list or torch module) adds
    the layer table and, when ``contributions`` is True — or None and the network is small
    (≤ ``CONTRIBUTIONS_MAX_NEURONS`` hidden neurons, ℓ2) — the per-layer factors of the chain
    certificate (one extra solve per layer; :func:`lipsdp.plot.layer_factors`).
    """
    from .cli import write_atomic

    text = render_report(cert, network=network, title=title, contributions=contributions, activation=activation)
    write_atomic(str(path), text)
    return str(path)
