"""Property tests for the format library (sparsec.ir.formats).

References are independent of the formats' own code: torch/numpy dense
tensors, hand-written nbytes formulas, hand-corrupted buffers.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sparsec.errors import FormatError, ParameterError, PatternError, SerializationError
from sparsec.ir import formats as F
from sparsec.passes import prune as P

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ITEM = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


@st.composite
def dense_inputs(draw, max_rows=17, max_cols=37):
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    dtype = draw(st.sampled_from(DTYPES))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    keep = torch.rand(rows, cols, generator=g) < density
    x = torch.where(keep, x, torch.zeros(()))
    if draw(st.booleans()) and cols % 2 == 0:   # also exercise >2-D logical shapes
        x = x.reshape(rows, 2, cols // 2)
    return x.to(dtype)


def idx_bytes(t):
    return t.element_size()


# -- round trips ------------------------------------------------------------------

@given(dense_inputs())
def test_dense_and_csr_round_trip(x):
    for cls in (F.Dense, F.CSR):
        f = cls.from_dense(x)
        f.validate()
        assert torch.equal(f.to_dense(), x)
        assert f.to_dense().dtype == x.dtype and tuple(f.to_dense().shape) == tuple(x.shape)


@given(dense_inputs(), st.sampled_from([(1, 8), (8, 8), (4, 16), (3, 5), (16, 1)]))
def test_bitmap_round_trip(x, tile):
    f = F.Bitmap.from_dense(x, tile=tile)
    f.validate()
    assert torch.equal(f.to_dense(), x)


@given(dense_inputs(), st.sampled_from([(1, 4), (2, 4), (2, 8), (1, 8), (4, 16), (3, 7), (1, 2)]))
def test_nm_round_trip(x, nm):
    n, m = nm
    y = P.prune_nm(x, n, m).weight
    f = F.NM.from_dense(y, n=n, m=m)
    f.validate()
    assert torch.equal(f.to_dense(), y)


@given(dense_inputs(), st.sampled_from([(1, 1), (4, 4), (2, 8), (3, 5), (16, 1)]),
       st.floats(0, 1))
def test_bsr_round_trip(x, block, sparsity):
    y = P.prune_block(x, sparsity, block).weight
    f = F.BSR.from_dense(y, block=block)
    f.validate()
    assert torch.equal(f.to_dense(), y)
    # plain round trip without pruning too (any tensor is BSR-representable)
    assert torch.equal(F.BSR.from_dense(x, block=block).to_dense(), x)


@given(dense_inputs(), st.sampled_from([1, 4, 7, 32]), st.sampled_from([4, 8]), st.floats(0, 1))
def test_groupquant_error_bound(x, group, bits, sparsity):
    y = P.prune_group(x, sparsity, group).weight
    f = F.GroupQuant.from_dense(y, group=group, bits=bits)
    f.validate()
    deq = f.to_dense()
    assert deq.dtype == y.dtype and deq.shape == y.shape
    ref = y.float().reshape(y.shape[0], -1)
    got = deq.float().reshape(y.shape[0], -1)
    # zeros (pruned groups and zeros inside kept groups) stay exactly zero
    assert torch.equal(got[ref == 0], torch.zeros_like(got[ref == 0]))
    # per-element bound: scale/2 of the element's group, plus the output dtype's rounding
    k = ref.shape[1]
    scale_of = torch.zeros(ref.shape[0], math.ceil(k / group))
    counts = (f.indptr[1:] - f.indptr[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(ref.shape[0]), counts)
    scale_of[rows, f.group_idx.long()] = f.scales
    bound = scale_of.repeat_interleave(group, 1)[:, :k] / 2
    eps = torch.finfo(y.dtype).eps
    slack = ref.abs() * eps * 2 + bound * 1e-5
    assert bool(((got - ref).abs() <= bound + slack).all())


def test_groupquant_is_exact_on_grid_values():
    # values already on a 4-bit grid with zero in range come back exactly
    x = torch.tensor([[-0.5, 0.0, 0.5, 7.0, 0.0, 0.0, 0.0, 0.0]])   # scale 0.5, zero point 1
    f = F.GroupQuant.from_dense(x, group=4, bits=4)
    assert f.group_idx.tolist() == [0]            # second group all zero: dropped
    assert torch.allclose(f.to_dense(), x, atol=1e-6)


# -- nbytes formulas ------------------------------------------------------------

@given(dense_inputs())
def test_nbytes_formulas(x):
    rows, k = x.shape[0], math.prod(x.shape[1:])
    it = ITEM[x.dtype]
    nnz = int(torch.count_nonzero(x))
    assert F.Dense.from_dense(x).nbytes == rows * k * it

    c = F.CSR.from_dense(x)
    assert c.nbytes == (rows + 1) * 4 + nnz * 4 + nnz * it
    assert c.indptr.dtype == torch.int32

    tr, tc = 4, 8
    b = F.Bitmap.from_dense(x, tile=(tr, tc))
    ntiles = math.ceil(rows / tr) * math.ceil(k / tc)
    assert b.nbytes == ntiles * math.ceil(tr * tc / 8) + (ntiles + 1) * 4 + nnz * it

    y = P.prune_nm(x, 2, 8).weight
    nm = F.NM.from_dense(y, n=2, m=8)
    assert nm.nbytes == rows * math.ceil(k / 8) * 2 * (it + 1)

    z = P.prune_block(x, 0.5, (2, 4)).weight
    bs = F.BSR.from_dense(z, block=(2, 4))
    m2 = z.reshape(rows, k).float()
    pad = torch.zeros(math.ceil(rows / 2) * 2, math.ceil(k / 4) * 4)
    pad[:rows, :k] = m2
    nnzb = int(((pad.reshape(-1, 2, pad.shape[1] // 4, 4) != 0).sum((1, 3)) > 0).sum())
    assert bs.nnzb == nnzb
    assert bs.nbytes == (math.ceil(rows / 2) + 1) * 4 + nnzb * 4 + nnzb * 8 * it

    for bits in (4, 8):
        g = F.GroupQuant.from_dense(x, group=5, bits=bits)
        pad = torch.zeros(rows, math.ceil(k / 5) * 5)
        pad[:, :k] = x.reshape(rows, k).float()
        ngk = int((pad.reshape(rows, -1, 5) != 0).any(-1).sum())
        assert g.nbytes == (rows + 1) * 4 + ngk * 4 + ngk * math.ceil(5 * bits / 8) + ngk * 4 + ngk


def test_density_and_csr_int64_rule():
    x = torch.zeros(4, 10)
    x[0, 3] = 1.0
    x[3, 9] = -2.0
    c = F.CSR.from_dense(x)
    assert c.density == pytest.approx(2 / 40)
    assert F.index_dtype(2**31 - 1) == torch.int32 and F.index_dtype(2**31) == torch.int64


def test_nm_index_type_is_smallest():
    x = P.prune_nm(torch.randn(3, 600), 1, 300).weight
    f = F.NM.from_dense(x, n=1, m=300)
    assert f.indices.dtype == torch.int16
    assert F.NM.from_dense(P.prune_nm(torch.randn(3, 16), 2, 8).weight, n=2, m=8).indices.dtype == torch.uint8


# -- refusing inputs that break the pattern ----------------------------------------

def test_nm_refuses_too_many_nonzeros_naming_the_group():
    x = torch.ones(3, 8)
    with pytest.raises(PatternError, match=r"row 0, group 0 .*4 non-zeros > 2"):
        F.NM.from_dense(x, n=2, m=4)


@pytest.mark.parametrize("call, match", [
    (lambda: F.NM.from_dense(torch.zeros(2, 4), n=4, m=4), "1 <= N < M"),
    (lambda: F.BSR.from_dense(torch.zeros(2, 4), block=(0, 2)), "tile sides"),
    (lambda: F.Bitmap.from_dense(torch.zeros(2, 4), tile=(2,)), "pair"),
    (lambda: F.GroupQuant.from_dense(torch.zeros(2, 4), group=4, bits=3), "bits must be 4 or 8"),
    (lambda: F.CSR.from_dense(torch.zeros(2, 4, dtype=torch.int32)), "dtype"),
    (lambda: F.CSR.from_dense(torch.tensor(1.0)), "scalar"),
    (lambda: F.pack(torch.zeros(2, 2), "coo"), "unknown format 'coo'"),
])
def test_bad_parameters_are_named(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


# -- validate() catches each kind of corruption ---------------------------------

def _corrupt(f, **changes):
    return dataclasses.replace(f, **changes)


def _sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 12, generator=g)
    return P.prune_unstructured(x, 0.5).weight


CORRUPTIONS = [
    ("csr non-monotone row pointers", lambda: (lambda c: _corrupt(c, indptr=c.indptr.flip(0).contiguous()))(F.CSR.from_dense(_sample())), "indptr\\[0\\] == 0|non-decreasing"),
    ("csr decreasing pointer", lambda: (lambda c: _corrupt(c, indptr=torch.cat([c.indptr[:2], c.indptr[1:2] - 1, c.indptr[3:]])))(F.CSR.from_dense(_sample())), "non-decreasing"),
    ("csr index out of range", lambda: (lambda c: _corrupt(c, indices=torch.where(torch.arange(c.indices.numel()) == 0, torch.tensor(99, dtype=torch.int32), c.indices)))(F.CSR.from_dense(_sample())), "column index in \\[0, 12\\)"),
    ("csr unsorted row", lambda: (lambda c: _corrupt(c, indices=torch.cat([c.indices[:2].flip(0), c.indices[2:]])))(F.CSR.from_dense(torch.ones(2, 5))), "strictly increasing"),
    ("csr nnz mismatch", lambda: (lambda c: _corrupt(c, values=c.values[:-1]))(F.CSR.from_dense(_sample())), "equal length"),
    ("bitmap wrong popcount", lambda: (lambda b: _corrupt(b, bits=b.bits ^ torch.tensor(1, dtype=torch.uint8) * (torch.arange(b.bits.numel()).reshape(b.bits.shape) == 0)))(F.Bitmap.from_dense(_sample(), tile=(2, 4))), "popcount"),
    ("bitmap bit outside matrix", lambda: (lambda b: _corrupt(b, bits=b.bits | torch.tensor(128, dtype=torch.uint8)))(F.Bitmap.from_dense(torch.ones(3, 3), tile=(4, 4))), "outside the matrix"),
    ("bitmap values short", lambda: (lambda b: _corrupt(b, values=b.values[:-1]))(F.Bitmap.from_dense(_sample(), tile=(2, 4))), "number of values"),
    ("nm group with too many non-zeros", lambda: (lambda f: _corrupt(f, indices=torch.zeros_like(f.indices)))(F.NM.from_dense(P.prune_nm(_sample(), 2, 4).weight, n=2, m=4)), "distinct"),
    ("nm index past group", lambda: (lambda f: _corrupt(f, indices=f.indices + 4))(F.NM.from_dense(P.prune_nm(_sample(), 2, 4).weight, n=2, m=4)), "within its group"),
    ("nm n >= m", lambda: (lambda f: _corrupt(f, n=4))(F.NM.from_dense(P.prune_nm(_sample(), 2, 4).weight, n=2, m=4)), "1 <= N < M"),
    ("bsr block col out of range", lambda: (lambda b: _corrupt(b, indices=b.indices + 10))(F.BSR.from_dense(_sample(), block=(2, 4))), "block column index"),
    ("bsr padding non-zero", lambda: (lambda b: _corrupt(b, blocks=b.blocks + 1))(F.BSR.from_dense(torch.ones(3, 3), block=(2, 2))), "padding of edge blocks"),
    ("bsr wrong block shape", lambda: (lambda b: _corrupt(b, block=(2, 3)))(F.BSR.from_dense(_sample(), block=(2, 4))), "blocks is"),
    ("gq zero point out of range", lambda: (lambda g: _corrupt(g, zeros=g.zeros + 16))(F.GroupQuant.from_dense(_sample(), group=4, bits=4)), "zero points"),
    ("gq negative scale", lambda: (lambda g: _corrupt(g, scales=-g.scales))(F.GroupQuant.from_dense(_sample(), group=4, bits=4)), "scales finite and positive"),
    ("gq group index out of range", lambda: (lambda g: _corrupt(g, group_idx=g.group_idx + 3))(F.GroupQuant.from_dense(_sample(), group=4, bits=4)), "group index"),
    ("dense wrong shape", lambda: (lambda d: _corrupt(d, shape=(12, 6)))(F.Dense.from_dense(_sample())), "values shape"),
]


@pytest.mark.parametrize("what, make, match", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_validate_catches_corruption(what, make, match):
    bad = make()
    with pytest.raises(FormatError, match=match):
        bad.validate()


def test_from_arrays_validates_corrupt_buffers():
    c = F.CSR.from_dense(_sample())
    header, arrays = c.to_arrays()
    arrays["indices"][0] = 99
    with pytest.raises(FormatError, match="column index"):
        F.SparseFormat.from_arrays(header, arrays)
    header2 = dict(header, format="nope")
    with pytest.raises(SerializationError, match="nope"):
        F.SparseFormat.from_arrays(header2, c.to_arrays()[1])


# -- serialisation and equality --------------------------------------------------

@given(dense_inputs())
def test_serialisation_round_trip_all_formats(x):
    packed = [
        F.Dense.from_dense(x), F.CSR.from_dense(x), F.Bitmap.from_dense(x, tile=(4, 4)),
        F.NM.from_dense(P.prune_nm(x, 2, 4).weight, n=2, m=4), F.BSR.from_dense(x, block=(2, 3)),
        F.GroupQuant.from_dense(x, group=4, bits=4),
    ]
    for f in packed:
        header, arrays = f.to_arrays()
        import json
        header = json.loads(json.dumps(header))          # header is plain JSON
        assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
        g = F.SparseFormat.from_arrays(header, arrays)
        assert g == f
        assert torch.equal(g.to_dense(), f.to_dense())


def test_save_load_directory(tmp_path):
    x = P.prune_nm(torch.randn(5, 16, dtype=torch.bfloat16), 2, 8).weight
    f = F.NM.from_dense(x, n=2, m=8)
    f.save(tmp_path / "w")
    assert F.SparseFormat.load(tmp_path / "w") == f
    with pytest.raises(SerializationError, match="cannot read"):
        F.SparseFormat.load(tmp_path / "missing")


def test_equality_distinguishes_params_and_values():
    x = _sample()
    assert F.CSR.from_dense(x) == F.CSR.from_dense(x.clone())
    assert F.CSR.from_dense(x) != F.CSR.from_dense(x * 2)
    assert F.Bitmap.from_dense(x, tile=(2, 4)) != F.Bitmap.from_dense(x, tile=(4, 2))
    assert F.CSR.from_dense(x) != F.Dense.from_dense(x)


def test_formats_are_frozen():
    f = F.CSR.from_dense(_sample())
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.values = torch.zeros(1)
