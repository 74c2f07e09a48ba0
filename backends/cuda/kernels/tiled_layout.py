"""Kernel-private layout of the ``tiled`` CUDA kernel (``tiled.py``): a tiled CSR with 16-bit in-stage positions.

Pure torch (no TVM): the GPU machine, which has only the TVM runtime, builds it from the format's
own buffers too. Built from the non-zeros' coordinates (never a dense copy of the values):

- the weight ``W[O, K]`` is cut into *row groups* of ``16 * rt`` rows and *stages* of ``sc``
  columns; a stage (``16*rt x sc`` elements) is what one warp decodes into shared memory at once;
- inside a stage every element has a fixed shared-memory slot, the position of the element in the
  ``mma.sync.m16n8k16`` A fragments of the lane that multiplies it (fragment-major: chunk of 32
  columns, row tile, mma, lane, register element; the reduction order is permuted so that a lane's
  8 contiguous columns ``q*8 .. q*8+7`` of a chunk are its B fragment, see ``matmul.py``), so after
  the scatter each lane reads each of its A fragments with one 16-byte shared load (no ldmatrix);
- ``values[n]`` (weight dtype) and ``pos[n]`` (int16 slot) list the non-zeros stage by stage
  (row group major); every stage's run starts at a multiple of 8 entries (16-byte vector loads)
  and is padded with zeros sent to the slot ``16*rt*sc`` (a trash slot never read);
- ``ptr[ngroups * nstages + 1]`` (int32): where each stage's run starts, in units of 8 entries.

Bytes: 2 + 2 per non-zero (+ padding ~4 entries per stage) + 4 per stage, vs 2 per element dense.
"""
from __future__ import annotations

import torch

BUFFERS = ("tc_values", "tc_pos", "tc_ptr")


def coordinates(fmt):
    """``(rows, cols, values)`` of a format's stored non-zeros, from its own buffers (no dense copy for
    bitmap/csr/nm; other formats go through ``to_dense``)."""
    name = type(fmt).__name__.lower()
    if name == "csr":
        indptr = fmt.indptr.long()
        counts = indptr[1:] - indptr[:-1]
        rows = torch.repeat_interleave(torch.arange(counts.numel(), device=indptr.device), counts)
        return rows, fmt.indices.long(), fmt.values
    if name == "bitmap":
        tr, tc = fmt.tile
        O, K = fmt.shape
        shifts = torch.arange(8, dtype=torch.int32, device=fmt.bits.device)
        mask = ((fmt.bits.int().unsqueeze(-1) >> shifts) & 1).reshape(*fmt.bits.shape[:2], -1).bool()
        mask = mask[..., : tr * tc]                              # [nti, ntj, tr*tc], tile order = values order
        ti, tj, e = mask.nonzero(as_tuple=True)
        return ti * tr + e // tc, tj * tc + e % tc, fmt.values
    if name == "nm":
        n, m = fmt.n, fmt.m
        vals, idx = fmt.values, fmt.indices.long()               # [O, G*n]
        O, K = fmt.shape
        slot = torch.arange(vals.shape[1], device=vals.device)
        cols = (slot // n * m).view(1, -1) + idx
        rows = torch.arange(O, device=vals.device).view(-1, 1).expand_as(cols)
        keep = (vals != 0) & (cols < K)
        return rows[keep], cols[keep], vals[keep]
    d = fmt.to_dense() if hasattr(fmt, "to_dense") else torch.as_tensor(fmt)
    r, c = d.nonzero(as_tuple=True)
    return r, c, d[r, c]


def slot_of(rows_in_group, cols_in_stage, rt: int):
    """Shared-memory slot of an element (row within its 16*rt row group, column within its stage)."""
    r, rw = rows_in_group // 16, rows_in_group % 16
    c, jj = cols_in_stage // 32, cols_in_stage % 32
    q, t = jj // 8, jj % 8
    mm, t4 = t // 4, t % 4
    lane = (rw % 8) * 4 + q
    e = (t4 // 2) * 4 + (rw // 8) * 2 + t4 % 2
    return ((((c * rt + r) * 2 + mm) * 32 + lane) * 8 + e)


def build(fmt, rt: int, sc: int, shape=None, dtype=None) -> dict:
    """The three kernel buffers for ``fmt`` (any sparsec format), on the device of its buffers."""
    O, K = shape or tuple(fmt.shape)
    rows, cols, vals = coordinates(fmt)
    dtype = dtype or vals.dtype
    rows, cols = rows.long(), cols.long()
    rg = 16 * rt
    ngr, nst = -(-O // rg), -(-K // sc)
    stg = rg * sc
    seg = (rows // rg) * nst + cols // sc
    order = torch.argsort(seg, stable=True)
    seg, rows, cols, vals = seg[order], rows[order], cols[order], vals[order]
    dev = rows.device
    counts = torch.bincount(seg, minlength=ngr * nst)
    padded = (counts + 7) // 8 * 8
    ptr = torch.zeros(ngr * nst + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(padded, 0)
    start = torch.zeros_like(ptr)
    start[1:] = torch.cumsum(counts, 0)
    n = int(ptr[-1])
    rank = torch.arange(seg.numel(), device=dev) - start[seg]
    dest = ptr[seg] + rank
    values = torch.zeros(max(n, 8), dtype=dtype, device=dev)
    pos = torch.full((max(n, 8),), stg, dtype=torch.int32, device=dev)
    values[dest] = vals.to(dtype)
    pos[dest] = slot_of(rows % rg, cols % sc, rt).int()
    if stg + 8 > 32767:
        raise ValueError(f"tiled layout: stage {rg}x{sc} too large for 16-bit positions")
    return {"tc_values": values, "tc_pos": pos.to(torch.int16), "tc_ptr": (ptr // 8).to(torch.int32)}


def nbytes(bufs: dict) -> int:
    return sum(t.numel() * t.element_size() for t in bufs.values())
