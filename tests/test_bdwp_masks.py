"""BDWP masks against loop-based references (N:M along C_in for FF, along C_out for BP)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparsec.errors import ParameterError
from sparsec.passes import bdwp


def _ref_topn(vec, n):
    """Keep the n largest |v| (ties: earlier position), by a plain Python sort."""
    order = sorted(range(len(vec)), key=lambda i: (-abs(vec[i]), i))[: min(n, len(vec))]
    keep = np.zeros(len(vec), bool)
    keep[order] = True
    return keep


def _ref_ff(w, n, m):
    co, ci, kh, kw = w.shape
    out = np.zeros(w.shape, bool)
    for o in range(co):
        for i in range(kh):
            for j in range(kw):
                for s in range(0, ci, m):
                    out[o, s:s + m, i, j] = _ref_topn(w[o, s:s + m, i, j], n)
    return out


def _ref_bp(w, n, m):
    co, ci, kh, kw = w.shape
    out = np.zeros(w.shape, bool)
    for c in range(ci):
        for i in range(kh):
            for j in range(kw):
                for s in range(0, co, m):
                    out[s:s + m, c, i, j] = _ref_topn(w[s:s + m, c, i, j], n)
    return out


nm = st.sampled_from([(1, 2), (2, 4), (2, 8), (1, 4), (3, 4), (4, 16)])


@given(nm=nm, co=st.integers(1, 12), ci=st.integers(1, 12), k=st.sampled_from([1, 3]), seed=st.integers(0, 9))
def test_conv_masks_match_reference(nm, co, ci, k, seed):
    n, m = nm
    w = np.random.default_rng(seed).standard_normal((co, ci, k, k)).round(1)  # rounding makes ties
    np.testing.assert_array_equal(bdwp.ff_mask(w, n, m), _ref_ff(w, n, m))
    np.testing.assert_array_equal(bdwp.bp_mask(w, n, m), _ref_bp(w, n, m))
    tw = torch.from_numpy(w)
    assert torch.equal(bdwp.ff_mask(tw, n, m), torch.from_numpy(_ref_ff(w, n, m)))
    assert torch.equal(bdwp.bp_mask(tw, n, m), torch.from_numpy(_ref_bp(w, n, m)))


@given(nm=nm, co=st.integers(1, 20), ci=st.integers(1, 20), seed=st.integers(0, 9))
def test_linear_masks_match_reference(nm, co, ci, seed):
    n, m = nm
    w = np.random.default_rng(seed).standard_normal((co, ci))
    w4 = w[:, :, None, None]
    np.testing.assert_array_equal(bdwp.ff_mask(w, n, m), _ref_ff(w4, n, m)[:, :, 0, 0])
    np.testing.assert_array_equal(bdwp.bp_mask(w, n, m), _ref_bp(w4, n, m)[:, :, 0, 0])


def test_masks_differ_and_density():
    w = torch.randn(16, 32, 3, 3, generator=torch.Generator().manual_seed(0))
    ff, bp = bdwp.masks(w, "2:8")
    assert ff.float().mean().item() == pytest.approx(0.25)
    assert bp.float().mean().item() == pytest.approx(0.25)
    assert not torch.equal(ff, bp)           # two different masks
    assert torch.all(ff.reshape(16, 4, 8, 3, 3).sum(2) == 2)       # along C_in
    assert torch.all(bp.reshape(2, 8, 32, 3, 3).sum(1) == 2)       # along C_out


def test_compress_roundtrip():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((2 * 12, 5))     # two (kh,kw) runs of C_in = 12 (groups 8 + 4)
    g = bdwp.Groups(12, 2, 2, 8)
    mask = np.zeros_like(b, bool)
    for c in range(5):
        for s, ln in [(0, 8), (8, 4), (12, 8), (20, 4)]:
            mask[s:s + ln, c] = _ref_topn(b[s:s + ln, c], 2)
    vals, idx, gs = bdwp.compress(b, mask, g)
    assert vals.shape == (g.kept_len, 5) == (8, 5)
    back = np.zeros_like(b)
    for kc in range(vals.shape[0]):
        back[gs[kc] + idx[kc], np.arange(5)] = vals[kc]
    np.testing.assert_array_equal(back, b * mask)


def test_bad_patterns():
    w = np.ones((4, 8))
    with pytest.raises(ParameterError, match="N < M"):
        bdwp.ff_mask(w, 4, 4)
    with pytest.raises(ParameterError, match="dense' or N:M"):
        bdwp.parse_nm("block:2x2")
    with pytest.raises(ParameterError, match="linear"):
        bdwp.ff_mask(np.ones(3), 2, 4)
