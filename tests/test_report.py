"""lipsdp.report: a self-contained HTML report (CLI --report), and a headless-Chromium screenshot."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the plot/test extras")
import matplotlib  # noqa: E402

matplotlib.use("Agg", force=True)

import lipsdp  # noqa: E402
from lipsdp.cli import main  # noqa: E402
from lipsdp.report import write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.refs, self.open = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append(v)
        if tag not in ("meta", "img", "br", "link", "input"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.open:
            while self.open and self.open.pop() != tag:
                pass


def _check_self_contained(text: str, n_images: int):
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    p = _Collect()
    p.feed(text)
    assert not p.open, f"unclosed tags: {p.open}"
    assert "script" not in p.tags and "link" not in p.tags
    assert all(r.startswith("data:image/png;base64,") for r in p.refs), p.refs  # no external assets
    assert len(p.refs) == n_images
    for r in p.refs:
        png = base64.b64decode(r.split(",", 1)[1])
        assert png[:8] == PNG_MAGIC and len(png) > 3000
    assert not re.search(r"https?://|url\(|@import", text)          # nothing fetched from elsewhere


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((6, 3)), rng.standard_normal((6, 6)) / 2, rng.standard_normal((2, 6))]


def test_write_report_self_contained(tmp_path):
    Ws = _weights()
    cert = lipsdp.certify(Ws, solver="cvxopt")
    out = write_report(cert, tmp_path / "r.html", network=Ws)
    text = Path(out).read_text()
    _check_self_contained(text, n_images=2)   # compare + per-layer factors
    assert f"{cert.bound:.6g}" in text and "verified" in text
    assert "W2 (affine)" in text
    assert not list(tmp_path.glob(".lipsdp-*"))          # atomic write left no temporary file


def test_report_without_network_and_unverified_flag(tmp_path):
    cert = lipsdp.certify(_weights(1), solver="cvxopt", lower=False)
    cert.verified, cert.message = False, "forced for the test"
    text = Path(write_report(cert, tmp_path / "u.html")).read_text()
    _check_self_contained(text, n_images=1)
    assert "NOT VERIFIED" in text or "could NOT be verified" in text


def test_cli_report(tmp_path):
    np.savez(tmp_path / "w.npz", **{f"W{k}": W for k, W in enumerate(_weights(2))})
    out = tmp_path / "cli.html"
    rc = main(["certify", str(tmp_path / "w.npz"), "--solver", "cvxopt", "--report", str(out)])
    assert rc == 0
    _check_self_contained(out.read_text(), n_images=2)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
def test_report_opens_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")
    path = "/work/shared/refdata/LipSDP/random_weights.mat"
    if not os.path.exists(path):
        path = str(tmp_path / "w.npz")
        np.savez(path, **{f"W{k}": W for k, W in enumerate(_weights(3))})
    cert = lipsdp.certify(path, solver="cvxopt")
    html = write_report(cert, tmp_path / "report.html", network=path)
    shot = tmp_path / "report.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
           f"file://{html}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20000, len(data)   # a rendered page, not a blank one
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == (1200, 900)
    from matplotlib import image

    img = image.imread(shot)
    assert img[..., :3].std() > 0.05, "screenshot is (nearly) uniform: the page did not render"
    keep = os.environ.get("LIPSDP_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
