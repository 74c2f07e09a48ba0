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
- ``ptr[ngroups * nstages + 1]`` (int32): where each stage's run starts, in units of 8 entries;
- ``order="bank"`` (default): inside each stage's run the entries are permuted so that the 32 lanes of
  one scatter store (entry ``b*256 + lane*8 + j`` of the run, for batch ``b`` and register ``j``) hit
  distinct shared-memory banks where they can: the entries sorted by bank are dealt to the stores in turn
  (lane-major), so two entries of one bank meet in a store only if the bank holds more entries than the
  run has stores at that lane. With the ``"rows"`` order (row-major, the previous layout) a 16-bit
  scatter store of up to 32 random slots needs ~3.0 shared-memory wavefronts, with "bank" 1.7-1.9
  (70-90 % sparsity; ``store_wavefronts`` counts them): 37-45 % fewer, and a median 3 % faster kernel
  (H100, 2026-11-23, ``benchmarks/results/dev/tiled_bank.*``). The kernel does not depend on the order.

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
    """Shared-memory slot of an element (row within its 16*rt row group, column within its stage).
    Shifts and masks (every factor is a power of two): int64 ``//`` and ``%`` made this 5x slower."""
    r, rw = rows_in_group >> 4, rows_in_group & 15
    c, jj = cols_in_stage >> 5, cols_in_stage & 31
    q, t = jj >> 3, jj & 7
    mm, t4 = t >> 2, t & 3
    lane = ((rw & 7) << 2) + q
    e = ((t4 >> 1) << 2) + ((rw >> 3) << 1) + (t4 & 1)
    return (((((c * rt + r) << 1) + mm) << 5) + lane << 3) + e


ORDERS = ("bank", "rows")


def build(fmt, rt: int, sc: int, shape=None, dtype=None, order: str = "bank") -> dict:
    """The three kernel buffers for ``fmt`` (any sparsec format), on the device of its buffers; ``order``: the
    order of the entries inside a stage's run (see the module docstring)."""
    if order not in ORDERS:
        raise ValueError(f"tiled layout: order {order!r} is not one of {ORDERS}")
    O, K = shape or tuple(fmt.shape)
    rows, cols, vals = coordinates(fmt)
    dtype = dtype or vals.dtype
    rows, cols = rows.long(), cols.long()
    rg = 16 * rt
    ngr, nst = -(-O // rg), -(-K // sc)
    stg = rg * sc
    seg = (rows // rg) * nst + cols // sc
    srt = torch.argsort(seg, stable=True)
    seg, rows, cols, vals = seg[srt], rows[srt], cols[srt], vals[srt]
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
    if order == "bank" and n:
        values, pos = bank_order(values[:n], pos[:n], ptr, ngr * nst, values, pos)
    return {"tc_values": values, "tc_pos": pos.to(torch.int16), "tc_ptr": (ptr // 8).to(torch.int32)}


def bank_order(values, pos, ptr, nseg, out_values, out_pos):
    """Permute the entries of every stage's run (``ptr`` in entries) so that the stores of one scatter
    instruction hit distinct banks where possible (vectorised: two stable sorts over all entries, each
    by one int64 key ``stage << 25 | key``: the same order as a sort by key then by stage)."""
    n = values.numel()
    dev = values.device
    counts = ptr[1:] - ptr[:-1]
    seg = torch.repeat_interleave(torch.arange(nseg, device=dev), counts)
    e = torch.arange(n, device=dev) - ptr[seg]                     # offset inside the run (< 2^15)
    word = pos.long() >> 1                                          # 4-byte words (< 2^14), 32 banks
    seg25 = seg << 25
    src = torch.argsort(seg25 | ((word & 31) << 20) | word, stable=True)       # by (stage, bank, word)
    # the run's places in dealing order: lane within its batch, then batch, then register
    dst = torch.argsort(seg25 | (((e & 255) >> 3) << 20) | ((e >> 8) << 3) | (e & 7), stable=True)
    out_values = out_values.clone()
    out_pos = out_pos.clone()
    out_values[dst] = values[src]
    out_pos[dst] = pos[src]
    return out_values, out_pos


def store_wavefronts(bufs: dict) -> int:
    """Shared-memory wavefronts of all the kernel's scatter stores (per store: the largest number of distinct
    4-byte words one bank receives from the 32 lanes), a host-side measure of the layout's bank conflicts."""
    ptr = bufs["tc_ptr"].long() * 8
    pos = bufs["tc_pos"].long()
    nseg = ptr.numel() - 1
    counts = ptr[1:] - ptr[:-1]
    seg = torch.repeat_interleave(torch.arange(nseg, device=pos.device), counts)
    e = torch.arange(pos.numel(), device=pos.device)[: int(ptr[-1])] - ptr[seg]
    pos = pos[: int(ptr[-1])]
    store = seg * 4096 + (e // 256) * 8 + e % 8                     # one id per (stage, batch, register)
    word = pos // 2
    key = torch.unique(store * (1 << 20) + word)                    # distinct (store, word)
    st, w = key // (1 << 20), key % (1 << 20)
    per_bank = torch.unique(st * 32 + w % 32, return_counts=True)   # words per (store, bank)
    sb = per_bank[0] // 32
    mx = torch.zeros(int(store.max()) + 1 if store.numel() else 1, dtype=torch.long, device=pos.device)
    mx.scatter_reduce_(0, sb, per_bank[1], reduce="amax")
    return int(mx.sum())


def nbytes(bufs: dict) -> int:
    return sum(t.numel() * t.element_size() for t in bufs.values())


# --- code="bitmap": bank-owned bitmap stages (tiled.py, ``code="bitmap"``) -------------------------------------
#
# A stage buffer of S = 16*rt*sc halves is S/2 4-byte words; bank j (word % 32 == j) holds S/64 words, S/32
# halves, and lane j owns exactly those: its bitmap is S/32 bits, NW = S/1024 uint32 words, where bit
# b = w*32 + p (word w, bit p) is half h = b // Q of word q = b % Q of the bank (Q = S/64 words per bank), i.e.
# the half slot (q * 32 + j) * 2 + h: at NW >= 2 slot = p*64 + (a constant per word and lane), one shift-add per
# non-zero in the kernel. A lane walks its words in order and each word from its highest set bit down
# (``31 - clz``), so its values are stored in that order.
# Buffers: ``tc_bits`` (int32 [stages * 32 * NW], the words of lane j of stage s at (s*32 + j)*NW ..),
# ``tc_values`` (every stage's non-zeros lane by lane in walk order, each stage's run padded to 8 halves) and
# ``tc_ptr`` (int32: where each stage's run starts, in units of 8 halves). A lane's first value is the exclusive
# prefix over lanes of the popcounts (a shuffle scan in the kernel). Bytes: S/8 per stage (0.125 per element) +
# 2 per non-zero (+ padding ~7 bytes and 4 per stage). H100 results (slower than the positions above): tiled.py.

BM_BUFFERS = ("tc_values", "tc_bits", "tc_ptr")


def bitmap_words(rt: int, sc: int) -> int:
    """uint32 bitmap words per lane per stage (``S/1024``); needs ``rt * sc >= 64``."""
    s = 16 * rt * sc
    if s < 1024:
        raise ValueError(f"tiled bitmap layout: stage {16 * rt}x{sc} has fewer than 1024 slots (32 bits per lane)")
    return s // 1024


def bit_of_slot(slot, nw: int):
    """(lane, word, bit-in-word) of a half slot of the stage buffer (the bank-owned bijection above)."""
    word = slot >> 1
    lane = word & 31
    b = (slot & 1) * (16 * nw) + (word >> 5)
    return lane, b >> 5, b & 31


def slot_of_bit(lane, w, p, nw: int):
    """Inverse of ``bit_of_slot``."""
    b = w * 32 + p
    q, h = b % (16 * nw), b // (16 * nw)
    return (q * 32 + lane) * 2 + h


def build_bitmap(fmt, rt: int, sc: int, shape=None, dtype=None) -> dict:
    """The three buffers of ``code="bitmap"`` for ``fmt`` (any sparsec format), on the device of its buffers
    (vectorised: one stable sort by ``stage * S + walk position``)."""
    O, K = shape or tuple(fmt.shape)
    nw = bitmap_words(rt, sc)
    rows, cols, vals = coordinates(fmt)
    dtype = dtype or vals.dtype
    rows, cols = rows.long(), cols.long()
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    rg = 16 * rt
    ngr, nst = -(-O // rg), -(-K // sc)
    S = rg * sc
    dev = rows.device
    seg = (rows // rg) * nst + cols // sc
    slot = slot_of(rows % rg, cols % sc, rt)
    lane, w, p = bit_of_slot(slot, nw)
    walk = (lane * nw + w) * 32 + (31 - p)                       # the lane's walk order (< S/32 * 32 = S)
    srt = torch.argsort(seg * S + walk)
    seg, lane, w, p, vals = seg[srt], lane[srt], w[srt], p[srt], vals[srt]
    nseg = ngr * nst
    bits = torch.zeros(nseg * 32 * nw, dtype=torch.int64, device=dev)
    bits.index_add_(0, (seg * 32 + lane) * nw + w, torch.ones_like(p) << p)     # distinct bits: sum == or
    bits = torch.where(bits >= 2 ** 31, bits - 2 ** 32, bits).to(torch.int32)
    counts = torch.bincount(seg, minlength=nseg)
    padded = (counts + 7) // 8 * 8
    ptr = torch.zeros(nseg + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(padded, 0)
    start = torch.zeros_like(ptr)
    start[1:] = torch.cumsum(counts, 0)
    n = int(ptr[-1])
    dest = ptr[seg] + torch.arange(seg.numel(), device=dev) - start[seg]
    values = torch.zeros(max(n, 8), dtype=dtype, device=dev)
    values[dest] = vals.to(dtype)
    return {"tc_values": values, "tc_bits": bits, "tc_ptr": (ptr // 8).to(torch.int32)}


def bitmap_to_dense(bufs: dict, O: int, K: int, rt: int, sc: int) -> torch.Tensor:
    """Inverse of ``build_bitmap`` (vectorised, float64): walks the bits in the kernel's order."""
    nw = bitmap_words(rt, sc)
    rg = 16 * rt
    S = rg * sc
    ngr, nst = -(-O // rg), -(-K // sc)
    dev = bufs["tc_bits"].device
    words = bufs["tc_bits"].long() & 0xFFFFFFFF
    shifts = torch.arange(31, -1, -1, device=dev)                # walk: highest bit first
    set_ = ((words.view(ngr * nst, 32, nw, 1) >> shifts) & 1).bool()
    seg, lane, w, q = set_.nonzero(as_tuple=True)                # row-major == walk order within a stage
    slot = slot_of_bit(lane, w, 31 - q, nw)
    counts = torch.bincount(seg, minlength=ngr * nst)
    first = torch.zeros(ngr * nst + 1, dtype=torch.long, device=dev)
    first[1:] = torch.cumsum(counts, 0)
    ptr = bufs["tc_ptr"].long() * 8
    v = bufs["tc_values"][ptr[seg] + torch.arange(seg.numel(), device=dev) - first[seg]].double()
    r, c = torch.meshgrid(torch.arange(rg, device=dev), torch.arange(sc, device=dev), indexing="ij")
    tab = slot_of(r.reshape(-1), c.reshape(-1), rt)
    inv_r = torch.empty(S, dtype=torch.long, device=dev)
    inv_c = torch.empty(S, dtype=torch.long, device=dev)
    inv_r[tab], inv_c[tab] = r.reshape(-1), c.reshape(-1)
    W = torch.zeros(ngr * rg, nst * sc, dtype=torch.float64, device=dev)
    W[(seg // nst) * rg + inv_r[slot], (seg % nst) * sc + inv_c[slot]] = v
    return W[:O, :K]
