"""Pruning follows its pattern and keeps the largest-magnitude entries.

The reference is a plain numpy loop written for the test, independent of
sparsec.passes.prune's vectorised code.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sparsec.errors import ParameterError
from sparsec.passes import prune as P


@st.composite
def weights(draw):
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    if draw(st.booleans()):  # ties and exact zeros
        w = np.round(w)
    return w


def _check_keeps_largest(w, mask, groups):
    """In every group (list of index arrays), kept |w| >= dropped |w|."""
    a = np.abs(w)
    for g in groups:
        kept, dropped = a.flat[g][mask.flat[g]], a.flat[g][~mask.flat[g]]
        if kept.size and dropped.size:
            assert kept.min() >= dropped.max()


@given(weights(), st.floats(0, 1))
def test_unstructured(w, s):
    out, mask = P.prune_unstructured(w, s)
    assert mask.sum() == w.size - round(s * w.size)
    assert np.array_equal(out, np.where(mask, w, 0))
    _check_keeps_largest(w, mask, [np.arange(w.size)])


@given(weights(), st.sampled_from([(1, 2), (2, 4), (1, 4), (2, 8), (4, 16), (3, 5)]))
def test_nm(w, nm):
    n, m = nm
    out, mask = P.prune_nm(w, n, m)
    rows, k = w.shape
    groups = []
    for r in range(rows):
        for g0 in range(0, k, m):
            idx = np.arange(r * k + g0, r * k + min(g0 + m, k))
            assert mask.flat[idx].sum() == min(n, idx.size)
            groups.append(idx)
    _check_keeps_largest(w, mask, groups)
    assert np.array_equal(out, np.where(mask, w, 0))


@given(weights(), st.floats(0, 1), st.sampled_from([(1, 1), (2, 2), (4, 4), (3, 5), (1, 8)]))
def test_block(w, s, block):
    r, c = block
    out, mask = P.prune_block(w, s, block)
    rows, k = w.shape
    nbr, nbc = math.ceil(rows / r), math.ceil(k / c)
    norms, kept = [], []
    for bi in range(nbr):
        for bj in range(nbc):
            sub = mask[bi * r:(bi + 1) * r, bj * c:(bj + 1) * c]
            assert sub.all() or not sub.any(), "a block is kept or removed whole"
            norms.append(np.sum(w[bi * r:(bi + 1) * r, bj * c:(bj + 1) * c].astype(np.float64) ** 2))
            kept.append(bool(sub.any()))
    norms, kept = np.array(norms), np.array(kept)
    assert (~kept).sum() == round(s * nbr * nbc)
    if kept.any() and (~kept).any():
        assert norms[kept].min() >= norms[~kept].max()


@given(weights(), st.floats(0, 1), st.sampled_from([1, 3, 8]))
def test_group_is_row_blocks(w, s, g):
    a = P.prune_group(w, s, g)
    b = P.prune_block(w, s, (1, g))
    assert np.array_equal(a.mask, b.mask)


def test_torch_in_torch_out_and_dtypes():
    w = torch.randn(8, 16, dtype=torch.bfloat16)
    out, mask = P.prune(w, "2:4")
    assert out.dtype == torch.bfloat16 and mask.dtype == torch.bool
    assert int(mask.sum()) == 8 * 16 // 2
    conv = torch.randn(4, 3, 3, 3)
    out, mask = P.prune(conv, "unstructured", 0.75)
    assert out.shape == conv.shape and int(mask.sum()) == 108 - 81


@pytest.mark.parametrize("pattern, sparsity, match", [
    ("3:3", None, "1 <= N < M"),
    ("0:4", None, "1 <= N < M"),
    ("block:0x4", 0.5, "at least 1x1"),
    ("diagonal", 0.5, "unknown sparsity pattern 'diagonal'"),
    ("unstructured", None, "needs a target sparsity"),
    ("unstructured", 1.5, r"sparsity must be in \[0, 1\]"),
])
def test_bad_patterns(pattern, sparsity, match):
    with pytest.raises(ParameterError, match=match):
        P.prune(torch.randn(4, 8), pattern, sparsity)


def test_parse_pattern_round_trip():
    for text in ["unstructured", "2:4", "1:8", "block:4x4", "block:1x16", "group:32"]:
        assert str(P.parse_pattern(text)) == text


@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, float("nan")]), min_size=1, max_size=80), st.data())
def test_keep_top_is_the_stable_sorts_first_keep(scores, data):
    """``_keep_top`` (linear time: a partition, then the earliest ties) keeps exactly what the stable descending
    sort's first ``keep`` entries are, ties and NaN included (a NaN only after every number)."""
    s = torch.tensor(scores, dtype=torch.float32)
    keep = data.draw(st.integers(0, len(scores)))
    order = np.argsort(-s.double().numpy(), kind="stable")
    want = np.zeros(len(scores), dtype=bool)
    want[order[:keep]] = True
    got = P._keep_top(s, keep).numpy()
    assert got.sum() == keep and (got == want).all()
