"""Matrix Market loading (with errors naming file and line) and generators."""
import numpy as np
import pytest
import scipy.sparse as sp

from sparsec.errors import ParameterError, SerializationError, SparsecError
from sparsec.sim.piuma.inputs import (banded, erdos_renyi, generate, load_mtx, networkx_graph,
                                      rmat, save_mtx)

GOOD = """%%MatrixMarket matrix coordinate real general
% a comment
3 4 3
1 1 2.5
3 4 -1
2 2 4
"""


def test_round_trip(tmp_path):
    M = rmat(6, 4, seed=1)
    save_mtx(tmp_path / "m.mtx", M)
    L = load_mtx(tmp_path / "m.mtx")
    assert (abs(L - M)).max() < 1e-12 and L.shape == M.shape


def test_reads_good_file(tmp_path):
    f = tmp_path / "a.mtx"
    f.write_text(GOOD)
    M = load_mtx(f)
    assert M.shape == (3, 4)
    np.testing.assert_array_equal(M.toarray()[[0, 2, 1], [0, 3, 1]], [2.5, -1, 4])


def test_pattern_and_symmetric(tmp_path):
    f = tmp_path / "p.mtx"
    f.write_text("%%MatrixMarket matrix coordinate pattern symmetric\n3 3 2\n2 1\n3 3\n")
    M = load_mtx(f)
    np.testing.assert_array_equal(M.toarray(), [[0, 1, 0], [1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("text, where", [
    ("hello\n1 1 0\n", ":1: missing '%%MatrixMarket'"),
    ("%%MatrixMarket matrix coordinate complex general\n1 1 0\n", ":1: field 'complex'"),
    ("%%MatrixMarket matrix coordinate real general\n3 x 1\n1 1 1\n", ":2: size line"),
    ("%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1\n", "promises 2 entries, found 1"),
    ("%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1\n4 1 2\n", ":4: index (4, 1) outside"),
    ("%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1\n", ":3: expected 3 fields"),
    ("%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 abc\n", ":3: malformed entry"),
    ("%%MatrixMarket matrix coordinate real general\n", "no size line"),
])
def test_malformed_files(tmp_path, text, where):
    f = tmp_path / "bad.mtx"
    f.write_text(text)
    with pytest.raises(SerializationError) as exc:
        load_mtx(f)
    assert str(f) in str(exc.value) and where in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(SerializationError, match="no such"):
        load_mtx(tmp_path / "x.mtx")


def test_rmat_is_power_law_and_deterministic():
    A = rmat(12, 8, seed=0)
    assert A.shape == (4096, 4096)
    assert 0.7 * 8 * 4096 < A.nnz <= 8 * 4096          # duplicates merged
    deg = np.diff(A.indptr)
    assert deg.max() > 20 * deg.mean()                  # heavy tail, unlike Erdős–Rényi
    assert (rmat(12, 8, seed=0) != A).nnz == 0


def test_erdos_renyi_banded_networkx():
    E = erdos_renyi(500, avg=6, seed=1)
    assert abs(E.nnz / 500 - 6) < 1
    assert np.diff(E.indptr).max() < 5 * 6
    Bd = banded(10, 2)
    assert Bd.nnz == 10 * 5 - 2 * (1 + 2)
    assert abs(sp.triu(Bd, 3)).sum() == 0
    K = networkx_graph("karate")
    assert K.shape == (34, 34) and K.nnz == 2 * 78


@pytest.mark.parametrize("spec, words", [
    ("foo:n=3", "unknown generator"),
    ("rmat:ef=8", "needs scale"),
    ("rmat:scale=x", "scale must be int"),
    ("rmat:scale=5,zz=1", "unknown parameter 'zz'"),
    ("rmat:scale=5,a=0.9,b=0.2,c=0.1", "a + b + c < 1"),
    ("er:avg=3", "needs n="),
    ("nx:petersen", "unknown graph"),
])
def test_generate_errors(spec, words):
    with pytest.raises(ParameterError) as exc:
        generate(spec)
    assert words in str(exc.value)


def test_generate_specs():
    assert generate("rmat:scale=6,ef=4").shape == (64, 64)
    assert generate("er:n=50,avg=3,cols=20").shape == (50, 20)
    assert generate("banded:n=20,bw=1").nnz == 58
    assert generate("nx:florentine").shape[0] == 15
    assert isinstance(SerializationError("x"), SparsecError)
