"""SCALE-Sim v3 stall-free golden cycle counts (independent reference values).

folds = ceil(Sr/R)·ceil(Sc/C); WS/IS: folds·(2R+C+T-2)-1, OS: folds·(R+C+T-2)-1.
The values below are SCALE-Sim's own outputs on a 32×32 array, not ours.
"""
import numpy as np
import pytest

from sparsec.sim.sat import cycle, functional
from sparsec.sim.sat.scalesim import conv_gemm, gemm_cycles, sequence
from sparsec.sim.sat.workloads import dense_groups

GOLDEN = [
    # (M, N, K), dataflow, cycles  (SCALE-Sim names a GEMM M×N×K)
    ((256, 128, 256), "ws", 11199),
    ((256, 128, 256), "os", 10175),
    ((256, 128, 256), "is", 14207),
    ((64, 64, 100), "ws", 1263),
    ((64, 64, 100), "os", 647),
    ((64, 64, 100), "is", 1263),
]


@pytest.mark.parametrize("mnk,df,expected", GOLDEN)
def test_fast_path_matches_scalesim(mnk, df, expected):
    assert gemm_cycles(*mnk, df) == expected


def test_alexnet_conv1_ws():
    # 224×224×3, 11×11, 96 filters, stride 4, no padding -> 55×55 outputs (SCALE-Sim's ceil rule)
    assert conv_gemm(224, 224, 11, 11, 3, 96, 4) == (3025, 96, 363)
    assert gemm_cycles(*conv_gemm(224, 224, 11, 11, 3, 96, 4), "ws") == 112283


def _cl(m, n, k, df):
    seq = sequence(m, n, k, df)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    res = cycle.run(seq, {("gemm", "FF"): (a, b, None, dense_groups(k))})
    np.testing.assert_allclose(res.outputs[("gemm", "FF")], a @ b, rtol=1e-10, atol=1e-10)
    return res.total


@pytest.mark.parametrize("df,expected", [("ws", 1263), ("os", 647), ("is", 1263)])
def test_cycle_level_matches_scalesim_small(df, expected):
    assert _cl(64, 64, 100, df) == expected


@pytest.mark.slow
@pytest.mark.parametrize("mnk,df,expected", GOLDEN[:3])
def test_cycle_level_matches_scalesim_large(mnk, df, expected):
    assert _cl(*mnk, df) == expected


def test_functional_dense_gemm_is_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((7, 9)), rng.standard_normal((9, 5))
    np.testing.assert_allclose(functional.nm_gemm(a, b, None, dense_groups(9)), a @ b)
