"""The benchmark harness's own logic (benchmarks/run.py): caps, target verdicts, the depth fit.

The benchmark itself is not a test (it takes ~25 minutes); these check that its verdicts mean what
the issue-4 targets say — a time-limited answer never passes an "SDP optimum" target and never
enters the depth exponent — on small synthetic rows.
"""

import importlib.util
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("lipsdp_benchmark_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grid(depth, t, status):
    return {"case": f"grid w80 d{depth}", "family": "grid", "depth": depth, "notes": [],
            "lipsdp": {"bound": 1.0, "verified": True, "time": t, "status": status}}


def test_default_caps_are_the_targets(run):
    wide = [c for c in run.cases(False) if c["family"] == "wide"]
    assert len(wide) == 1 and run.cap_of(wide[0], None) == 600.0
    others = [c for c in run.cases(False) if c["family"] != "wide"]
    assert {run.cap_of(c, None) for c in others} == {60.0}
    assert run.cap_of(wide[0], 30) == 30.0  # --cap overrides every case


def test_time_limited_rows_do_not_pass_or_enter_the_fit(run):
    rows = [_grid(2, 1.0, "optimal"), _grid(4, 4.0, "optimal"), _grid(100, 50.0, "time_limit")]
    p, n = run.fit_exponent(rows, "lipsdp")
    assert n == 2 and p == pytest.approx(2.0)  # the time-limited row is left out
    text = run.targets(rows, None)
    assert "grid depth 100" in text and "status time_limit → FAIL" in text
    rows[-1]["lipsdp"]["status"] = "optimal"
    assert "status optimal → PASS" in run.targets(rows, None)


def test_maxmin_target_counts_only_optimal_rows_within_60_s(run):
    def mm(t, status):
        return {"case": "maxmin x", "family": "maxmin", "notes": [],
                "lipsdp": {"bound": 1.0, "verified": True, "time": t, "status": status}}

    text = run.targets([mm(10, "optimal"), mm(59, "optimal"), mm(50, "time_limit"), mm(61, "optimal")], None)
    assert "2/4 optimal within 60 s (3/4 with a checked" in text and "→ FAIL" in text
