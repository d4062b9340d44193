"""Backends declare what they can do; the registry, auto choice, fallbacks, memory guard and the
chordal rule read the declarations (issue 13, item 4).

A toy backend defined here (lipsdp's native solver under another name, with its own
declarations) is added with one ``register_backend`` line and must then be listed, usable by
name, sized by its own memory model and refused where its ``accepts`` says no.

Reference values: the P-free NSR bound of a MaxMin between identities is exactly 1 (math.md §4);
elsewhere agreement with the explicit CVXOPT solve (same LMI, both bounds checked).
"""

from __future__ import annotations

import numpy as np
import pytest

import lipsdp
from lipsdp import backends
from lipsdp.backends import (REGISTRY, Backend, SolveOptions, candidates, choose_auto, get_backend, installed_backends,
                             register_backend)
from lipsdp.backends.cvxpy_backends import CVXOPTBackend
from lipsdp.backends.native import NativeBackend
from lipsdp.chordal import decompose, should_decompose
from lipsdp.errors import MemoryLimitError, SolverError
from lipsdp.formulations import formulation_for
from lipsdp.io import from_weights, load
from lipsdp.memory import estimate_memory, guard, memory_breakdown


class ToyBackend(NativeBackend):
    """Test double: the native solver renamed, accepting only LMIs of order ≤ 30."""

    name = "toy"
    description = "test double"
    licence = "MIT"
    requires = "an LMI of order at most 30"
    auto_rank = None
    DOUBLES = 1000.0  # its declared memory model: a constant, so the guard's use of it is visible
    solved = 0

    @classmethod
    def accepts(cls, problem) -> bool:
        return super().accepts(problem) and problem.max_order <= 30

    @classmethod
    def memory_doubles(cls, problem) -> dict[str, float]:
        return {"toy": cls.DOUBLES}

    def solve(self, problem, options):
        type(self).solved += 1
        return super().solve(problem, options)


@pytest.fixture
def toy():
    ToyBackend.solved = 0
    register_backend(ToyBackend)  # the one line a new backend needs
    yield ToyBackend
    REGISTRY.pop("toy", None)


def _net(dims, seed=0, activation="relu"):
    rng = np.random.default_rng(seed)
    return from_weights([rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])],
                        activation=activation)


def _problem(dims, seed=0):
    return formulation_for(_net(dims, seed), "l2", "neuron").problem()


SMALL = [3, 8, 8, 1]  # LMI order 3 + 16 = 19
LARGER = [4, 20, 20, 20, 1]  # order 64, 5 blocks: splits into cliques


def test_every_backend_declares_its_capabilities():
    for name, cls in REGISTRY.items():
        assert issubclass(cls, Backend) and cls.name == name
        assert isinstance(cls.licence, str) and cls.licence, name
        assert isinstance(cls.anytime, bool) and isinstance(cls.accurate, bool), name
        assert isinstance(cls.decomposition_pays, bool), name
        assert isinstance(cls.exploits, tuple) and all(isinstance(x, str) for x in cls.exploits), name
        assert cls.auto_rank is None or isinstance(cls.auto_rank, (int, float)), name
        parts = cls.memory_doubles(_problem(SMALL))
        assert parts and all(v > 0 for v in parts.values()), name
    # the decisions that used to be name lists
    assert {n for n, c in REGISTRY.items() if c.decomposition_pays} == {"clarabel", "scs"}
    assert REGISTRY["native"].anytime and REGISTRY["native"].accurate


def test_toy_backend_registered_with_one_line(toy):
    assert "toy" in installed_backends()
    assert isinstance(get_backend("toy"), ToyBackend)
    cert = lipsdp.certify(_net(SMALL), solver="toy", lower=False)
    assert cert.solver == "toy" and ToyBackend.solved == 1
    assert cert.verified
    ref = lipsdp.certify(_net(SMALL), solver="native", lower=False)  # the same solver under its own name
    assert cert.bound == pytest.approx(ref.bound, rel=1e-9)


def test_toy_memory_model_is_used_by_the_guard(toy, monkeypatch):
    P = _problem(SMALL)
    n = P.lmis[0].size
    assert memory_breakdown(P, "toy", check_order=n) == {"toy": 8.0 * 1000.0, "check": 8.0 * 7 * n * n}
    # name, class and instance give the same estimate
    assert estimate_memory(P, "toy") == estimate_memory(P, ToyBackend) == estimate_memory(P, ToyBackend())
    monkeypatch.setattr(ToyBackend, "DOUBLES", 2.0 ** 40)  # 8 TiB declared
    with pytest.raises(MemoryLimitError, match="the toy solve would need about") as info:
        lipsdp.certify(_net(SMALL), solver="toy", memory_limit="1GB", lower=False)
    assert ToyBackend.solved == 0  # refused before solving
    assert "solver='native'" in str(info.value)  # an installed backend whose declared model fits
    assert guard(P, "native", "1GB") > 0


def test_candidates_respect_accepts(toy):
    small, larger = _problem(SMALL), _problem(LARGER)
    assert [b.name for b in candidates(small, "toy")] == ["toy"]
    with pytest.raises(SolverError, match="'toy' cannot solve this problem: it needs an LMI of order at most 30"):
        candidates(larger, "toy")
    for P in (small, larger, decompose(larger)):
        for b in candidates(P, "auto"):
            assert b.accepts(P), (b.name, P.sizes())
    # the native solver refuses a chordally decomposed problem by its declaration, saying why
    D = decompose(larger)
    assert D.decomposed and not small.decomposed
    with pytest.raises(SolverError, match="monolithic LMI.*use solver='auto' or one of: .*scs"):
        candidates(D, "native")
    with pytest.raises(SolverError, match="monolithic LMI"):
        get_backend("native").solve(D, SolveOptions())


def test_auto_fallbacks_are_derived_from_declarations():
    P = _problem(LARGER)
    names = [b.name for b in candidates(P, "auto")]
    assert names[0] == choose_auto(P) == "native"
    expected = [n for n in ("sdpa", "scs") if n in installed_backends()]  # the fallbacks before issue 13
    assert names[1:] == expected
    # the first backend of a decomposed problem is one for which the split pays
    D = decompose(P)
    first = REGISTRY[choose_auto(D)]
    assert first.decomposition_pays and first.accepts(D)


def test_auto_ranked_toy_is_chosen_only_where_it_accepts(toy, monkeypatch):
    monkeypatch.setattr(ToyBackend, "auto_rank", -1)  # preferred over everything ...
    small, larger = _problem(SMALL), _problem(LARGER)
    assert choose_auto(small) == "toy"
    assert choose_auto(larger) == "native"  # ... but it does not accept order 64
    assert "toy" not in [b.name for b in candidates(larger, "auto")]
    monkeypatch.setattr(ToyBackend, "auto_max_order", 10)  # and its size window is honoured
    assert choose_auto(small) == "native"


def test_choose_auto_never_returns_a_backend_that_refuses():
    deep = formulation_for(_net([4] + [64] * 24 + [1]), "l2", "neuron").problem()  # chain's window
    problems = [_problem(SMALL), _problem(LARGER), decompose(_problem(LARGER)), deep,
                formulation_for(_net([2, 2, 1], activation="maxmin"), "l2", "neuron").problem()]
    for P in problems:
        assert REGISTRY[choose_auto(P)].accepts(P), P.sizes()
    assert choose_auto(deep) == "chain"


def test_auto_fallback_after_a_backend_returns_no_point(toy, monkeypatch):
    """solver="auto": a first choice that returns no point hands over to the next candidate."""
    from lipsdp.backends.base import SolveResult

    monkeypatch.setattr(ToyBackend, "auto_rank", -1)
    monkeypatch.setattr(ToyBackend, "solve", lambda self, p, o: SolveResult("error", None, None, 0.0, message="toy"))
    cert = lipsdp.certify(_net(SMALL), lower=False)
    assert cert.verified and cert.solver == "native"


@pytest.fixture
def no_cvxopt(monkeypatch):
    monkeypatch.setattr(CVXOPTBackend, "availability", classmethod(lambda cls: (False, "cvxopt hidden by the test")))
    assert "cvxopt" not in installed_backends()


def test_auto_without_cvxopt_tiny_networks(no_cvxopt):
    # math.md §4: P-free NSR of one MaxMin between identities is exactly 1
    cert = lipsdp.certify(from_weights([np.eye(2), np.eye(2)], activation="maxmin"), lower=False)
    assert cert.verified and cert.solver != "cvxopt"
    assert 1.0 <= cert.bound <= 1.0 + 1e-6
    for seed in (0, 1):
        net = _net([2, 5, 5, 1], seed)  # LMI order 12: auto used to prefer CVXOPT here
        cert = lipsdp.certify(net, lower=False)
        assert cert.verified and cert.solver == "native"
        assert cert.bound <= cert.naive_bound


def test_auto_without_cvxopt_demo_network(no_cvxopt):
    from lipsdp.cli import demo_path

    cert = lipsdp.certify(demo_path(), lower=False)
    assert cert.verified and cert.solver == "native"
    assert cert.bound <= cert.naive_bound


@pytest.mark.skipif("cvxopt" not in installed_backends(), reason="cvxopt is not installed (reference solver)")
def test_tiny_networks_native_matches_cvxopt():
    """Dropping CVXOPT from the auto choice for order ≤ 60 keeps the bound: native = CVXOPT."""
    for seed in (0, 1):
        net = _net([2, 5, 5, 1], seed)
        a = lipsdp.certify(net, solver="native", lower=False)
        b = lipsdp.certify(net, solver="cvxopt", lower=False)
        assert a.verified and b.verified
        # same tolerance as tests/test_native.py::test_matches_cvxopt (measured here: 1.5e-6 relative)
        assert abs(a.bound - b.bound) <= 1e-5 * b.bound, (a.bound, b.bound)


def test_should_decompose_reads_the_declaration(toy, monkeypatch):
    P = _problem([4] + [20] * 8 + [1])
    assert not should_decompose(P, "toy") and not should_decompose(P, ToyBackend())
    monkeypatch.setattr(ToyBackend, "decomposition_pays", True)
    assert should_decompose(P, ToyBackend)


def test_unknown_backend_for_memory_and_chordal():
    P = _problem(SMALL)
    with pytest.raises(SolverError, match="unknown solver 'nope'"):
        estimate_memory(P, "nope")
    with pytest.raises(SolverError, match="unknown solver 'nope'"):
        should_decompose(P, "nope")


def test_registry_module_names_no_removed_constants():
    import lipsdp.api as api
    import lipsdp.chordal as chordal
    import lipsdp.memory as memory

    assert not hasattr(api, "AUTO_FALLBACKS")
    assert not hasattr(chordal, "CONE_BOUND_SOLVERS") and not hasattr(memory, "_SCHUR")
    assert backends.candidates is candidates
    assert [e.split(":")[1] for e in backends.BUILTIN] == [c.__name__ for c in REGISTRY.values()]


def test_suggest_solvers_reads_the_registry(no_cvxopt):
    from lipsdp.backends import suggest_solvers

    text = suggest_solvers(exclude=("native",))
    assert text.startswith("solver='") and "'native'" not in text and "cvxopt" not in text
    D = decompose(_problem(LARGER))
    assert "'native'" not in suggest_solvers(D, limit=10) and "'scs'" in suggest_solvers(D, limit=10)


def test_auto_with_decompose_true_uses_a_backend_that_accepts_the_split():
    """Before: solver="auto" picked native on the monolithic LMI, then decompose=True handed it a
    split problem it cannot start (SolverError).  Now the candidates are re-chosen for the problem
    actually solved.  Same optimum as the monolithic solve (chordal.py theorem; measured: SCS
    4.2408742 vs native 4.2408794, 1.2e-6 relative)."""
    net = _net([4, 20, 20, 20, 20, 1])
    split = lipsdp.certify(net, decompose=True, lower=False)
    assert split.verified and REGISTRY[split.solver].decomposition_pays
    assert split.sizes["chordal"]["cliques"] == 4
    mono = lipsdp.certify(net, solver="native", lower=False)
    assert split.bound == pytest.approx(mono.bound, rel=1e-5)
    with pytest.raises(SolverError, match="'native' cannot solve this problem"):
        lipsdp.certify(net, solver="native", decompose=True, lower=False)
