"""Every PIUMA algorithm's C equals scipy.sparse's A @ B (differential tests)."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, strategies as st

from sparsec.sim.piuma import ALGORITHMS, load_config, simulate
from sparsec.sim.piuma.inputs import banded, erdos_renyi, networkx_graph, rmat

SMALL = load_config().with_(core__count=2)

# Each algorithm and the switches that change its data path.
VARIANTS = {
    "inner": SMALL,
    "inner-all": SMALL.with_(inner__candidates="all"),
    "outer": SMALL,
    "outer-loads": SMALL.with_(outer__merge_gather="loads"),
    "rowwise": SMALL,
    "rowwise-sorted": SMALL.with_(rowwise__accumulator="sorted"),
    "smash": SMALL,
    "smash-v1": SMALL.with_(smash__tokenise=False, smash__fragmented=False),
    # a scratchpad so small every table overflows (to DRAM, or in fragments)
    "smash-overflow": SMALL.with_(scratchpad__size_bytes=1024, smash__token_flops=2),
    "smash-overflow-whole": SMALL.with_(scratchpad__size_bytes=1024, smash__fragmented=False),
    # a load factor of 1 packs tables full: long probe chains
    "smash-full": SMALL.with_(smash__load_factor=1.0),
}


def reference(A, B):
    C = sp.csr_matrix(A @ B)
    C.sum_duplicates()
    C.eliminate_zeros()
    C.sort_indices()
    return C


def assert_same(C, ref, exact: bool):
    assert C.shape == ref.shape
    C = sp.csr_matrix(C)
    assert all(np.all(np.diff(C.indices[C.indptr[i]:C.indptr[i + 1]]) > 0)
               for i in range(C.shape[0])), "column indices not sorted and unique"
    if exact:
        np.testing.assert_array_equal(C.indptr, ref.indptr)
        np.testing.assert_array_equal(C.indices, ref.indices)
        np.testing.assert_array_equal(C.data, ref.data)
    else:
        np.testing.assert_allclose(C.toarray(), ref.toarray(), rtol=1e-12, atol=1e-12)


@st.composite
def sparse_pair(draw):
    m = draw(st.integers(1, 12))
    k = draw(st.integers(1, 12))
    n = draw(st.integers(1, 12))

    def mat(r, c):
        cells = draw(st.sets(st.tuples(st.integers(0, r - 1), st.integers(0, c - 1)),
                             max_size=r * c))
        # small non-zero integers: every sum is exact, so the pattern must match
        # scipy's exactly, cancellations (dropped by scipy) included
        vals = [draw(st.sampled_from([-2.0, -1.0, 1.0, 2.0, 3.0])) for _ in cells]
        rows = [i for i, _ in cells]
        cols = [j for _, j in cells]
        return sp.csr_matrix((vals, (rows, cols)), shape=(r, c))

    return mat(m, k), mat(k, n)


@pytest.mark.parametrize("variant", list(VARIANTS))
@given(pair=sparse_pair())
def test_product_equals_scipy(variant, pair):
    A, B = pair
    algo = variant.split("-")[0]
    r = simulate(A, B, algo=algo, config=VARIANTS[variant])
    assert_same(r.C, reference(A, B), exact=True)
    assert r.cycles > 0


@pytest.mark.parametrize("algo", list(ALGORITHMS))
@pytest.mark.parametrize("case", ["single", "empty", "zero-row", "rect"])
def test_edge_shapes(algo, case):
    if case == "single":
        A = sp.csr_matrix(([2.5], ([0], [0])), shape=(1, 1))
        B = A
    elif case == "empty":
        A = sp.csr_matrix((5, 3))
        B = sp.csr_matrix((3, 4))
    elif case == "zero-row":
        A = sp.csr_matrix(np.array([[0, 0, 0], [1, 0, 2], [0, 0, 0]], dtype=float))
        B = sp.csr_matrix(np.array([[0, 1], [5, 5], [3, 0]], dtype=float))
    else:
        A = erdos_renyi(7, avg=2, cols=19, seed=1)
        B = erdos_renyi(19, avg=3, cols=5, seed=2)
    r = simulate(A, B, algo=algo, config=SMALL)
    assert_same(r.C, reference(A, B), exact=False)


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_generated_and_real_graphs(algo):
    for A in (rmat(8, 6, seed=3), banded(40, 3), networkx_graph("karate"),
              networkx_graph("les_miserables")):
        r = simulate(A, algo=algo, config=SMALL)
        assert_same(r.C, reference(A, A), exact=False)


def test_float_values_close_to_scipy():
    A = rmat(9, 8, seed=5)
    ref = reference(A, A)
    for algo in ALGORITHMS:
        r = simulate(A, algo=algo, config=SMALL)
        assert r.C.nnz == ref.nnz
        np.testing.assert_array_equal(r.C.indices, ref.indices)
        np.testing.assert_allclose(r.C.data, ref.data, rtol=1e-12)
