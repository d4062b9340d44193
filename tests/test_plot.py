"""lipsdp.plot: figures are written to files and are valid, non-empty PNGs (Agg backend)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the plot/test extras")
import matplotlib  # noqa: E402

matplotlib.use("Agg", force=True)
from matplotlib.figure import Figure  # noqa: E402

import lipsdp  # noqa: E402
from lipsdp import plot  # noqa: E402
from lipsdp.errors import LipSDPError  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _net(seed=0, dims=(3, 6, 6, 2)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((dims[k + 1], dims[k])) / np.sqrt(dims[k]) for k in range(len(dims) - 1)]


@pytest.fixture(scope="module")
def cert():
    return lipsdp.certify(_net(), solver="cvxopt")


def _assert_png(path, min_bytes=3000):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    assert len(data) > min_bytes, f"PNG suspiciously small ({len(data)} bytes)"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert w >= 200 and h >= 100, (w, h)


def test_compare_writes_png(cert, tmp_path):
    ax = plot.compare({"neuron": cert, "ECLipsE-Fast (number)": cert.bound * 1.3})
    path = tmp_path / "compare.png"
    ax.figure.savefig(path)
    _assert_png(path)
    assert matplotlib.get_backend().lower() == "agg"


def test_certificate_plot_method_and_html(cert, tmp_path):
    fig = Figure()
    ax = cert.plot(ax=fig.add_subplot())
    assert ax.figure is fig
    png = plot.figure_png(fig)
    assert png[:8] == PNG_MAGIC and len(png) > 3000
    html = cert._repr_html_()
    assert html.startswith("<table") and "certified bound" in html and f"{cert.bound:.6g}" in html


def test_layer_factors_telescope_and_plot(tmp_path):
    """Π c_k equals the chain's certified bound; the last prefix bound is the full network's."""
    Ws = _net(1, (3, 6, 6, 6, 2))
    fac = plot.layer_factors(Ws, solver="cvxopt")
    assert len(fac["factors"]) == len(Ws) == len(fac["norms"])
    assert np.prod(fac["factors"]) == pytest.approx(fac["bound"], rel=1e-12)
    assert fac["naive"] == pytest.approx(np.prod([np.linalg.norm(W, 2) for W in Ws]), rel=1e-12)
    full = lipsdp.certify(Ws, method="chain", solver="cvxopt", lower=False)
    assert fac["bound"] == pytest.approx(full.bound, rel=1e-5)
    assert fac["factors"][0] == pytest.approx(np.linalg.norm(Ws[0], 2), rel=1e-12)
    assert fac["bound"] <= fac["naive"] * (1 + 1e-9)
    ax = plot.layer_contributions(factors=fac)
    path = tmp_path / "layers.png"
    ax.figure.savefig(path)
    _assert_png(path)


def test_scaling_two_panels(tmp_path):
    recs = [dict(depth=d, method=m, bound=b * d, time=(0.1 * d if m != "naive" else None))
            for d in (2, 3, 4) for m, b in (("LipSDP", 1.0), ("naive", 2.0))]
    axes = plot.scaling(recs, x="depth")
    assert len(axes) == 2
    path = tmp_path / "scaling.png"
    axes[0].figure.savefig(path)
    _assert_png(path)
    with pytest.raises(LipSDPError, match="no 'width' key"):
        plot.scaling(recs, x="width")


def test_compare_rejects_bad_input():
    with pytest.raises(LipSDPError, match="expected a Certificate"):
        plot.compare("not a certificate")
    with pytest.raises(LipSDPError, match="needs a label"):
        plot.compare([1.0])


def test_no_display_needed():
    assert "DISPLAY" not in os.environ or matplotlib.get_backend().lower() == "agg"
