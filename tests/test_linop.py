"""The IR's linear operators reproduce torch's layers exactly and keep their structure."""

import numpy as np
import pytest
import scipy.sparse as sp

from lipsdp import Affine, Network, SlopeRestricted
from lipsdp.errors import InvalidNetworkError
from lipsdp.linop import Conv, Dense, Sparse, as_linop, compose

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("cfg", [
    dict(c_in=1, c_out=4, k=3, s=1, p=0, d=1, g=1, hw=(7, 6)),
    dict(c_in=2, c_out=4, k=4, s=2, p=1, d=1, g=2, hw=(9, 8)),
    dict(c_in=3, c_out=2, k=3, s=(2, 1), p=(2, 0), d=(1, 2), g=1, hw=(8, 9)),
    dict(c_in=4, c_out=4, k=2, s=3, p=0, d=2, g=4, hw=(10, 10)),
])
def test_conv2d_matches_torch(cfg):
    rng = np.random.default_rng(0)
    conv = torch.nn.Conv2d(cfg["c_in"], cfg["c_out"], cfg["k"], stride=cfg["s"], padding=cfg["p"],
                           dilation=cfg["d"], groups=cfg["g"], bias=False).double()
    x = rng.standard_normal((3, cfg["c_in"], *cfg["hw"]))
    with torch.no_grad():
        y = conv(torch.from_numpy(x)).numpy()
    op = Conv(conv.weight.detach().numpy(), (cfg["c_in"], *cfg["hw"]), cfg["s"], cfg["p"], cfg["d"], cfg["g"])
    assert op.out_shape == y.shape[1:]
    got = op.matvec(x.reshape(3, -1).T).T
    np.testing.assert_allclose(got, y.reshape(3, -1), rtol=1e-12, atol=1e-12)
    # the transpose is conv_transpose: check <W x, y> = <x, W^T y>
    z = rng.standard_normal(op.shape[0])
    assert float(z @ op.matvec(x[0].ravel())) == pytest.approx(float(op.rmatvec(z) @ x[0].ravel()), rel=1e-12)
    # never dense: at most one entry per (output, kernel entry)
    assert op.nnz <= op.shape[0] * cfg["c_in"] // cfg["g"] * cfg["k"] ** 2


def test_conv1d_and_asymmetric_padding():
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3, 2, 5))
    x = rng.standard_normal((2, 11))
    op = Conv(K, (2, 11), stride=2, padding=[(1, 3)])
    xp = np.pad(x, ((0, 0), (1, 3)))
    with torch.no_grad():
        ref = torch.nn.functional.conv1d(torch.from_numpy(xp[None]), torch.from_numpy(K), stride=2)[0].numpy()
    np.testing.assert_allclose(op.matvec(x.ravel()), ref.ravel(), rtol=1e-12, atol=1e-12)


def test_norms_and_abs():
    rng = np.random.default_rng(2)
    op = Conv(rng.standard_normal((4, 2, 3, 3)), (2, 8, 8), stride=1, padding=1)
    W = op.to_dense()
    s = np.linalg.norm(W, 2)
    assert op.norm2_estimate() == pytest.approx(s, rel=1e-8)
    assert op.norm2_upper() >= s
    np.testing.assert_array_equal(op.abs().to_dense(), np.abs(W))
    D = Dense(W)
    assert D.norm2_upper() >= s and D.norm2_upper() <= s * (1 + 1e-6)
    np.testing.assert_allclose(op.scaled(0.5).to_dense(), 0.5 * W)


def test_affine_keeps_the_operator_and_merges_exactly():
    rng = np.random.default_rng(3)
    conv = Conv(rng.standard_normal((2, 1, 3, 3)), (1, 6, 6))
    A = Affine(conv, rng.standard_normal(conv.shape[0]))
    assert A.op is conv and A.in_dim == 36 and A.out_dim == 32
    net = Network([A, SlopeRestricted("relu"), Affine(rng.standard_normal((3, 32)))])
    x = rng.standard_normal((4, 36))
    ref = np.maximum(x @ conv.to_dense().T + A.bias, 0) @ net.affines[-1].weight.T
    np.testing.assert_allclose(net.forward(x), ref, rtol=1e-12)
    # consecutive affine maps merge into one operator
    merged = Network([Affine(conv), Affine(sp.identity(32) * 2.0), SlopeRestricted("relu"), Affine(np.ones((1, 32)))])
    assert isinstance(merged.affines[0].op, Sparse)
    np.testing.assert_allclose(merged.affines[0].weight, 2 * conv.to_dense())
    assert isinstance(compose(Dense(np.ones((2, 32))), conv), Dense)


def test_bad_operators_are_refused():
    with pytest.raises(InvalidNetworkError):
        Conv(np.ones((2, 3, 3, 3)), (2, 5, 5))  # channels do not fit
    with pytest.raises(InvalidNetworkError):
        Conv(np.ones((2, 1, 5, 5)), (1, 3, 3))  # input too small
    with pytest.raises(InvalidNetworkError):
        as_linop(np.array([[np.nan]]))
    with pytest.raises(AttributeError):
        Affine(np.eye(2)).bias = None


def test_conv_network_certifies_like_its_dense_copy():
    """Structured operators go through assembly, normalisation, the check and the lower bound:
    same checked bound as the same network with the convolution written out densely."""
    import lipsdp

    rng = np.random.default_rng(4)
    conv = Conv(rng.standard_normal((3, 1, 3, 3)), (1, 6, 6), stride=2, padding=1)
    head = rng.standard_normal((2, conv.shape[0]))
    as_conv = Network([Affine(conv), SlopeRestricted("relu"), Affine(head)])
    as_dense = Network([Affine(conv.to_dense()), SlopeRestricted("relu"), Affine(head)])
    for norm, output in (("l2", None), ("linf", 1)):
        a = lipsdp.certify(as_conv, norm=norm, output=output, solver="native")
        b = lipsdp.certify(as_dense, norm=norm, output=output, solver="native", lower=False)
        assert a.verified and b.verified
        assert a.bound == pytest.approx(b.bound, rel=1e-6)
        assert a.lower_bound <= a.bound <= a.naive_bound * (1 + 1e-9)
