"""Knobs the kernel families declare for the tuner: every value computes the same product.

Differential against torch (float64), never against another sparsec kernel.
"""
import pytest
import torch

from sparsec.backends.kernels import build_matmul
from sparsec.backends.kernels.csr import CSRFamily
from sparsec.ir.formats import CSR


def _weight(o, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, k, generator=g)
    w[torch.rand(o, k, generator=g) < 0.85] = 0
    w[3] = 0                       # an empty row
    w[5] = 0
    w[5, 7] = 1.5                  # a row shorter than any chain count
    w[6, :3] = 2.0
    return w


@pytest.mark.parametrize("tokens", [2, 16, 37])
@pytest.mark.parametrize("chains", [1, 2, 4, 8])
@pytest.mark.parametrize("parallel", [True, False])
def test_csr_chains_match_torch(tokens, chains, parallel):
    w = _weight(67, 45)
    x = torch.randn(45, tokens, dtype=torch.float32)
    fo = CSR.from_dense(w)
    k = build_matmul(fo, tokens, knobs={"chains": chains, "parallel": parallel, "t_tile": 16 if tokens > 16 else None})
    assert k.knobs["chains"] == chains
    y = torch.full((67, tokens), float("nan"))
    k.func(*[getattr(fo, b) for b in fo.buffers], x, y)
    ref = w.double() @ x.double()
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-5)


def test_csr_chains_default_rule():
    # about 8 vector registers of accumulators, at most 4 sets
    assert CSRFamily.default_chains(16, 16) == 4
    assert CSRFamily.default_chains(64, 16) == 2
    assert CSRFamily.default_chains(128, 16) == 1
    assert CSRFamily.default_chains(16, 4) == 2     # NEON: 4 vectors
    w = _weight(40, 30)
    fo = CSR.from_dense(w)
    assert build_matmul(fo, 16).knobs["chains"] == 4
    assert build_matmul(fo, 128).knobs["chains"] == 1
    assert build_matmul(fo, 1).knobs["chains"] == 1      # gemv: not used


def test_csr_chains_bad_value():
    from sparsec.backends.kernels.common import KernelError
    fo = CSR.from_dense(_weight(20, 20))
    with pytest.raises(KernelError, match="chains"):
        build_matmul(fo, 16, knobs={"chains": 3})
