"""Kernel-private layout of the ``bmtc`` CUDA kernel (``bmtc.py``): a bitmap in ``mma.sync`` fragment order.

Pure torch (no TVM): the GPU machine, which has only the TVM runtime, builds it from the format's own
buffers too (the non-zeros' coordinates from ``tiled_layout.coordinates``, never a dense copy).

- the weight ``W[O, K]`` is cut into row groups of ``16 * rt`` rows and stages of ``sc`` columns (what one
  warp decodes at once); a stage holds ``nu = rt * sc / 32`` *units* of 16 rows x 32 columns, unit
  ``u = chunk * rt + row_tile``;
- in a unit, lane ``(g, q) = (lane // 4, lane % 4)`` owns rows ``g, g + 8`` and columns ``q*8 .. q*8+7``: the
  16 halves of its two ``mma.sync.m16n8k16`` A fragments (with the fragment kernels' reduction permutation,
  so its B fragment is 8 contiguous activations, see ``matmul.py``). Register ``R = mm*4 + (t4//2)*2 + rw//8``
  (``mm`` the mma, ``t = jj % 8 = mm*4 + t4`` the column in the lane's slice, ``rw`` the row in the tile)
  holds the halves ``h = t4 % 2`` of element ``(rw, q*8 + t)``;
- ``mask``: per stage, lane and pair of units one 32-bit word (``[stage][lane][nw]``, ``nw = ceil(nu/2)``):
  unit ``2w`` in the low 16 bits, ``2w+1`` in the high ones; inside a unit's 16 bits, element ``(R, h)`` is
  bit ``R + 8*h`` (so the two halves of register ``R`` are 8 bits apart, which the kernel turns into a
  ``prmt`` selector with one multiply-add);
- ``values``: per stage, unit by unit, lane by lane, each lane's non-zeros in register order ``2R + h``;
  each stage's run starts at a multiple of 8 halves (16-byte copies) and is zero-padded;
- ``ptr[ngroups * nstages + 1]`` (int32): where each stage's run starts, in units of 8 halves.

Bytes: 2 per non-zero + 1/8 per element (+ padding ~7 bytes per stage) + 4 per stage: 0.725 B/element at
70 % sparsity, 0.325 at 90 % (dense: 2).
"""
from __future__ import annotations

import torch

from sparsec.backends.cuda.kernels.tiled_layout import nonzero_coordinates

BUFFERS = ("bm_values", "bm_mask", "bm_ptr")


def element_place(rows_in_group, cols_in_stage, rt: int):
    """``(unit, lane, bit, order)`` of elements (row in its 16*rt row group, column in its stage)."""
    r, rw = rows_in_group // 16, rows_in_group % 16
    c, jj = cols_in_stage // 32, cols_in_stage % 32
    q, t = jj // 8, jj % 8
    mm, t4 = t // 4, t % 4
    lane = (rw % 8) * 4 + q
    R = mm * 4 + (t4 // 2) * 2 + rw // 8
    h = t4 % 2
    return c * rt + r, lane, R + 8 * h, 2 * R + h


def build(fmt, rt: int, sc: int, shape=None, dtype=None) -> dict:
    """The three kernel buffers for ``fmt`` (any sparsec format, or a dense tensor), on its device."""
    if sc % 32:
        raise ValueError(f"bmtc layout: sc={sc} must be a multiple of 32")
    O, K = shape or tuple(fmt.shape)
    rows, cols, vals, dtype = nonzero_coordinates(fmt, dtype)
    rg = 16 * rt
    ngr, nst = -(-O // rg), -(-K // sc)
    nu = rt * sc // 32
    nw = (nu + 1) // 2
    dev = rows.device
    seg = (rows // rg) * nst + cols // sc
    unit, lane, bit, order = element_place(rows % rg, cols % sc, rt)
    # mask words: [seg][lane][unit // 2], bit (unit % 2) * 16 + bit
    widx = (seg * 32 + lane) * nw + unit // 2
    wbit = (unit % 2) * 16 + bit
    words = torch.zeros(max(ngr * nst * 32 * nw, 1), dtype=torch.int64, device=dev)
    words.index_add_(0, widx, torch.ones_like(widx) << wbit)
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
    # values: by (seg, unit, lane, order)
    key = ((seg * nu + unit) * 32 + lane) * 16 + order
    srt = torch.argsort(key)
    seg, vals = seg[srt], vals[srt]
    counts = torch.bincount(seg, minlength=ngr * nst)
    padded = (counts + 7) // 8 * 8
    ptr = torch.zeros(ngr * nst + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(padded, 0)
    start = torch.zeros_like(ptr)
    start[1:] = torch.cumsum(counts, 0)
    n = int(ptr[-1])
    rank = torch.arange(seg.numel(), device=dev) - start[seg]
    values = torch.zeros(max(n, 8), dtype=dtype, device=dev)
    values[ptr[seg] + rank] = vals.to(dtype)
    return {"bm_values": values, "bm_mask": words, "bm_ptr": (ptr // 8).to(torch.int32)}


def to_dense(bufs: dict, O: int, K: int, rt: int, sc: int) -> torch.Tensor:
    """Inverse of ``build`` by the kernel's own decode rule (popcounts and exclusive prefix over lanes), for
    tests: the dense ``W[O, K]``."""
    rg = 16 * rt
    ngr, nst = -(-O // rg), -(-K // sc)
    nu = rt * sc // 32
    nw = (nu + 1) // 2
    vals = bufs["bm_values"]
    words = bufs["bm_mask"].long() & 0xFFFFFFFF
    ptr = bufs["bm_ptr"].long() * 8
    W = torch.zeros(ngr * rg, nst * sc, dtype=vals.dtype, device=vals.device)
    rr = torch.arange(rg, device=vals.device).view(-1, 1).expand(rg, sc)
    cc = torch.arange(sc, device=vals.device).view(1, -1).expand(rg, sc)
    unit, lane, bit, order = element_place(rr, cc, rt)
    for gs in range(ngr * nst):
        g, s = gs // nst, gs % nst
        wd = words[gs * 32 * nw:(gs + 1) * 32 * nw].view(32, nw)
        m = torch.stack([(wd[:, u // 2] >> (16 * (u % 2))) & 0xFFFF for u in range(nu)])   # [nu, 32]
        bits = (m.unsqueeze(-1) >> torch.arange(16, device=m.device)) & 1                    # [nu, 32, 16]
        cnt = bits.sum(-1)
        tot = cnt.sum(-1)
        ubase = torch.cumsum(tot, 0) - tot
        lbase = torch.cumsum(cnt, 1) - cnt
        # rank of (R, h) in the lane: set bits of elements 2R'+h' < 2R+h; bit of (R, h) is R + 8h
        bo = torch.tensor([(b % 8) * 2 + b // 8 for b in range(16)], device=m.device)   # bit -> order
        ob = torch.argsort(bo)                                                          # order -> bit
        bits_o = bits[..., ob]
        rank_o = torch.cumsum(bits_o, -1) - bits_o
        idx = ptr[gs] + ubase[unit] + lbase[unit, lane] + rank_o[unit, lane, order]
        on = bits_o[unit, lane, order].bool()
        blk = torch.where(on, vals[idx.clamp(max=vals.numel() - 1)], torch.zeros((), dtype=vals.dtype))
        W[g * rg:(g + 1) * rg, s * sc:(s + 1) * sc] = blk
    return W[:O, :K]


def nbytes(bufs: dict) -> int:
    return sum(t.numel() * t.element_size() for t in bufs.values())
