"""``tiled_layout.build(..., order=...)``: the bank-conflict order of the stage entries (default) vs the previous
row-major order. Pure torch: the layout is decoded back to a dense weight through the documented slot map and
compared with the weight itself, and the scatter's shared-memory wavefronts are counted."""
from __future__ import annotations

import pytest
import torch

from sparsec.backends.cuda.kernels import tiled_layout as TL


def _decode(bufs, O, K, rt, sc):
    """Dense W from the layout: every stage's (value, slot) pairs, the slot mapped back to (row, col) with a table
    built from ``slot_of`` over all elements of a stage (pads go to the trash slot and are dropped)."""
    rg = 16 * rt
    r, c = torch.meshgrid(torch.arange(rg), torch.arange(sc), indexing="ij")
    slot = TL.slot_of(r.reshape(-1), c.reshape(-1), rt)
    inv_r = torch.full((rg * sc + 8,), -1, dtype=torch.long)
    inv_c = torch.full((rg * sc + 8,), -1, dtype=torch.long)
    inv_r[slot], inv_c[slot] = r.reshape(-1), c.reshape(-1)
    nst = -(-K // sc)
    ptr = bufs["tc_ptr"].long() * 8
    W = torch.zeros(-(-O // rg) * rg, nst * sc, dtype=torch.float64)
    for s in range(ptr.numel() - 1):
        g, st = divmod(s, nst)
        p = bufs["tc_pos"][ptr[s]:ptr[s + 1]].long()
        v = bufs["tc_values"][ptr[s]:ptr[s + 1]].double()
        keep = inv_r[p] >= 0
        W[g * rg + inv_r[p[keep]], st * sc + inv_c[p[keep]]] += v[keep]
    return W[:O, :K]


@pytest.mark.parametrize("O,K,rt,sc,s", [(100, 200, 2, 64, 0.7), (37, 77, 1, 128, 0.9), (64, 300, 4, 32, 0.5),
                                         (48, 64, 2, 64, 0.0)])
def test_bank_order_keeps_every_stage_and_the_weight(O, K, rt, sc, s):
    torch.manual_seed(O + K)
    w = torch.randn(O, K, dtype=torch.float16) * (torch.rand(O, K) >= s)
    w[3] = 0                                                   # an empty row
    rows = TL.build(w, rt, sc, order="rows")
    bank = TL.build(w, rt, sc)                                 # the default
    assert torch.equal(rows["tc_ptr"], bank["tc_ptr"])         # same runs, same bytes
    assert bank["tc_pos"].dtype == torch.int16 and bank["tc_values"].dtype == torch.float16
    torch.testing.assert_close(_decode(bank, O, K, rt, sc), w.double(), rtol=0, atol=0)
    torch.testing.assert_close(_decode(rows, O, K, rt, sc), w.double(), rtol=0, atol=0)
    ptr = bank["tc_ptr"].long() * 8
    for i in range(ptr.numel() - 1):                           # a permutation inside each run
        a = slice(int(ptr[i]), int(ptr[i + 1]))
        pa, pb = rows["tc_pos"][a].tolist(), bank["tc_pos"][a].tolist()
        assert sorted(zip(pa, rows["tc_values"][a].tolist())) == sorted(zip(pb, bank["tc_values"][a].tolist()))


def test_bank_order_removes_most_scatter_bank_conflicts():
    torch.manual_seed(0)
    for s, most in ((0.7, 0.6), (0.9, 0.7)):
        w = torch.randn(512, 2048, dtype=torch.float16) * (torch.rand(512, 2048) >= s)
        rows, bank = TL.build(w, 2, 64, order="rows"), TL.build(w, 2, 64, order="bank")
        wr, wb = TL.store_wavefronts(rows), TL.store_wavefronts(bank)
        assert wb <= most * wr, (s, wr, wb)


def test_store_wavefronts_counts_distinct_words_per_bank():
    # one stage of 8 entries (one store per register j, lane 0 only): 1 wavefront each
    bufs = {"tc_ptr": torch.tensor([0, 1], dtype=torch.int32), "tc_pos": torch.arange(8, dtype=torch.int16) * 64,
            "tc_values": torch.ones(8, dtype=torch.float16)}
    assert TL.store_wavefronts(bufs) == 8
    # 32 lanes whose j-th entries all hit bank 0 in distinct words: 32 wavefronts per store
    pos = (torch.arange(256) // 8 * 64).to(torch.int16)
    bufs = {"tc_ptr": torch.tensor([0, 32], dtype=torch.int32), "tc_pos": pos,
            "tc_values": torch.ones(256, dtype=torch.float16)}
    assert TL.store_wavefronts(bufs) == 8 * 32


def test_unknown_order_is_refused():
    with pytest.raises(ValueError):
        TL.build(torch.eye(16, dtype=torch.float16), 1, 32, order="cols")
