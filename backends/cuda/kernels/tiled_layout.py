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
    bitmap/csr/nm; other formats go through ``to_dense``; a ``(rows, cols, values)`` tuple is returned as is)."""
    if isinstance(fmt, tuple):
        return fmt
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


def nonzero_coordinates(fmt, dtype=None):
    """``coordinates`` with int64 rows and columns and the stored zeros dropped, and the layout's value dtype
    (``dtype``, or the format's)."""
    rows, cols, vals = coordinates(fmt)
    keep = vals != 0
    return rows.long()[keep], cols.long()[keep], vals[keep], dtype or vals.dtype


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


def wg_slot_of(rows_in_group, cols_in_stage, rt: int = 1):
    """``slots="wg"`` (``tiled`` with ``mma="wg"``, rt=1): slot of an element of a 16-row strip in the 128B-swizzled
    K-major ``wgmma`` A operand. Column ``c`` lies in the 64-column atom ``c >> 6`` (1024 slots of the strip each);
    inside it row ``r``'s 16-byte chunk ``(c & 63) >> 3`` sits at chunk ``chunk ^ (r & 7)`` of the row's 128 bytes.
    The kernel puts slot ``p`` of warp ``w``'s strip at element ``(p >> 10) * 4096 + w * 1024 + (p & 1023)`` of its
    64-row stage buffer (the same bank as ``p``: both offsets are multiples of 64 halves)."""
    if rt != 1:
        raise ValueError(f"tiled layout: slots='wg' needs rt=1 (16-row strips), got rt={rt}")
    r, c = rows_in_group, cols_in_stage
    return ((c >> 6) << 10) + (r << 6) + ((((c & 63) >> 3) ^ (r & 7)) << 3) + (c & 7)


def wgx_col(cols_in_stage):
    """``slots="wgx"`` (``mma="wg"`` with ``xa=1``: the activations are the wgmma A operand, loaded into registers
    16 bytes at a time): the k position, in the wgmma's order, of stage column ``c``. Inside each 32-column chunk
    lane ``t``'s 8 contiguous columns ``8t .. 8t + 7`` are its A fragment pairs of the chunk's two k16 slices:
    columns ``8t + 4h + e`` -> slice ``h``, k ``2t + (e & 1) + 8 (e >> 1)``."""
    c = cols_in_stage
    t, i = (c >> 3) & 3, c & 7
    return (c >> 5 << 5) + ((i >> 2) << 4) + 2 * t + (i & 1) + (((i >> 1) & 1) << 3)


def wgx_slot_of(rows_in_group, cols_in_stage, rt: int = 1):
    """``wg_slot_of`` of the permuted column ``wgx_col`` (the weight is the wgmma B operand in the same swizzled
    K-major layout)."""
    return wg_slot_of(rows_in_group, wgx_col(cols_in_stage), rt)


SLOTS = {"frag": slot_of, "wg": wg_slot_of, "wgx": wgx_slot_of}


def slot_fn(slots: str):
    if slots not in SLOTS:
        raise ValueError(f"tiled layout: slots {slots!r} is not one of {tuple(SLOTS)}")
    return SLOTS[slots]


ORDERS = ("bank", "rows")


def build(fmt, rt: int, sc: int, shape=None, dtype=None, order: str = "bank", slots: str = "frag") -> dict:
    """The three kernel buffers for ``fmt`` (any sparsec format), on the device of its buffers; ``order``: the
    order of the entries inside a stage's run (see the module docstring); ``slots``: the in-stage slot map
    (``"frag"``: ``slot_of``, pads to the trash slot; ``"wg"``: ``wg_slot_of``, pads repeat the run's first entry
    (same slot, same value), as the ``mma="wg"`` stage buffer has no trash slot; ``tc_pos`` then holds element
    offsets, ``wg_offset_of_slot``)."""
    slot = slot_fn(slots)
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
    pos[dest] = slot(rows % rg, cols % sc, rt).int()
    if slots in ("wg", "wgx") and n:
        # pads repeat their run's first entry (a second store of the same value to the same slot)
        seg_e = torch.repeat_interleave(torch.arange(ngr * nst, device=dev), padded)
        pad = pos[:n] == stg
        first = ptr[:-1][seg_e[pad]]
        values[:n][pad] = values[first]
        pos[:n][pad] = pos[first]
    if stg + 8 > 32767:
        raise ValueError(f"tiled layout: stage {rg}x{sc} too large for 16-bit positions")
    if order == "bank" and n:
        values, pos = bank_order(values[:n], pos[:n], ptr, ngr * nst, values, pos)
    if slots in ("wg", "wgx"):
        pos = wg_offset_of_slot(pos)
    return {"tc_values": values, "tc_pos": pos.to(torch.int16), "tc_ptr": (ptr // 8).to(torch.int32)}


def wg_offset_of_slot(p):
    """``slots="wg"`` with ``code="pos"`` stores, instead of slot ``p``, its element offset in the strip's part of the
    stage buffer, ``(p >> 10) * 4096 + (p & 1023)`` (64-column atoms 4096 halves apart; < 2^15 for ``sc <= 128``): the
    kernel's scatter address is then one add. Offsets and slots differ by multiples of 4096 halves, so banks and
    distinct words are the same (``store_wavefronts`` holds)."""
    return p + (p >> 10) * 3072


def wg_slot_of_offset(q):
    """Inverse of ``wg_offset_of_slot``."""
    return (q >> 12) * 1024 + (q & 1023)


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
    rows, cols, vals, dtype = nonzero_coordinates(fmt, dtype)
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


# --- code="pos7": 3-byte entries, 7-bit in-group positions (tiled.py, ``code="pos7"``) ---------------------------
#
# A stage of S = 16*rt*sc slots (S <= 2048) is cut into S/128 slot groups ``u = slot >> 7`` (<= 16). The entries are
# stored in *chunks* of 8 (what one lane scatters from one 16-byte value load): all 8 entries of a chunk belong to
# one group, so its positions are one 64-bit code word, two int32 ``lo, hi``: entry j < 4 in bits [7j, 7j+7) of
# ``lo``, entry j >= 4 in bits [7(j-4), 7(j-4)+7) of ``hi``, the group u in bits [28, 32) of ``lo`` (no field
# straddles the two words: slot_j = ((lo >> 21) & 0x780) + ((word >> 7(j%4)) & 127), 2-3 integer operations). A
# group's entries are padded to a multiple of 8 by repeating one of its chunk's entries (same slot, same value: a
# duplicate store of the same value), so no trash slot is needed.
# Buffers: ``tc_values`` (dtype, 8 per chunk), ``tc_code`` (int32, 2 per chunk), ``tc_ptr`` (int32: where each
# stage's chunks start, in chunks = units of 8 values, as for ``pos``). Bytes: 3 per entry + 4 per stage; entries =
# non-zeros + ~3.5 pads per non-empty group.
# Free choices, used against shared-memory bank conflicts (the 32 lanes of batch b hold chunks b*32 .. b*32+31, store
# j of the batch is entry j of every lane's chunk): ``order="bank"`` (default) deals a group's entries, sorted by
# bank, round-robin to its chunks (each chunk gets banks spread over the 32), then places every chunk's entries on its
# 8 stores greedily (``_bank_places``: lane by lane over all batches at once, each entry on the free store whose bank
# the lanes before it used least; a pad repeats the chunk's entry whose bank is least used at its store): 1.13-1.39x
# ``pos``'s scatter wavefronts at 70-90 % (``order="slot"``, chunks and entries in slot order: 2.0-2.6x), worth
# 1.04-1.08x kernel time on the H100 (tiled.py).

P7_BUFFERS = ("tc_values", "tc_code", "tc_ptr")
P7_ORDERS = ("bank", "slot")


def build_pos7(fmt, rt: int, sc: int, shape=None, dtype=None, order: str = "bank", slots: str = "frag") -> dict:
    """The three buffers of ``code="pos7"`` for ``fmt`` (any sparsec format), on the device of its buffers
    (vectorised: two sorts over all entries, no loop over stages or groups); ``slots`` as for ``build``."""
    slot_map = slot_fn(slots)
    if order not in P7_ORDERS:
        raise ValueError(f"tiled pos7 layout: order {order!r} is not one of {P7_ORDERS}")
    O, K = shape or tuple(fmt.shape)
    rg = 16 * rt
    S = rg * sc
    if S > 2048 or S % 128:
        raise ValueError(f"tiled pos7 layout: stage {rg}x{sc} has {S} slots (at most 2048: 16 groups of 128)")
    G = S >> 7                                                   # slot groups per stage
    rows, cols, vals, dtype = nonzero_coordinates(fmt, dtype)
    ngr, nst = -(-O // rg), -(-K // sc)
    nseg = ngr * nst
    dev = rows.device
    seg = (rows // rg) * nst + cols // sc
    slot = slot_map(rows % rg, cols % sc, rt)
    grp = seg * G + (slot >> 7)                                  # global group id (stage-major)
    bank = (slot >> 1) & 31
    inner = (bank << 7) | (slot & 127) if order == "bank" else slot & 127
    srt = torch.argsort((grp << 12) | inner)                     # by group, then (bank, slot) | slot
    grp, slot, vals = grp[srt], slot[srt], vals[srt]
    bank = (slot >> 1) & 31
    cnt = torch.bincount(grp, minlength=nseg * G)
    nch = (cnt + 7) >> 3                                         # chunks per group
    gstart = torch.zeros(nseg * G + 1, dtype=torch.int64, device=dev)
    gstart[1:] = torch.cumsum(cnt, 0)
    cstart = torch.zeros(nseg * G + 1, dtype=torch.int64, device=dev)
    cstart[1:] = torch.cumsum(nch, 0)
    nchunks = int(cstart[-1])
    ptr = cstart[::G]                                            # [nseg + 1]: a stage's first chunk
    k = torch.arange(grp.numel(), device=dev) - gstart[grp]      # rank inside the group
    ng = nch[grp]
    if order == "bank":
        ch = cstart[grp] + k % ng                                # dealt round-robin: banks spread over chunks
    else:
        ch = cstart[grp] + k // 8                                # filled in slot order
    srt = torch.argsort((ch << 5) | (k & 7), stable=True)        # by chunk (inside it: by bank | slot)
    ch, slot, vals = ch[srt], slot[srt], vals[srt]
    first = torch.zeros(nchunks + 1, dtype=torch.int64, device=dev)
    first[1:] = torch.cumsum(torch.bincount(ch, minlength=nchunks), 0)
    m = first[1:] - first[:-1]                                   # real entries per chunk (1..8)
    j = torch.arange(8, device=dev)
    src = first[:-1, None] + torch.minimum(j[None, :], m[:, None] - 1)   # pads repeat the chunk's last entry
    if order == "bank" and nchunks:
        src = _bank_places(src, m, (slot[src] >> 1) & 31, ptr)
    cslot = slot[src]                                            # [nchunks, 8]
    values = torch.zeros(max(nchunks, 1) * 8, dtype=dtype, device=dev)
    values[: nchunks * 8] = vals[src].reshape(-1).to(dtype)
    f = cslot & 127
    lo = f[:, 0] | (f[:, 1] << 7) | (f[:, 2] << 14) | (f[:, 3] << 21) | ((cslot[:, 0] >> 7) << 28)
    hi = f[:, 4] | (f[:, 5] << 7) | (f[:, 6] << 14) | (f[:, 7] << 21)
    lo = torch.where(lo >= 2 ** 31, lo - 2 ** 32, lo)
    code = torch.zeros(max(nchunks, 1) * 2, dtype=torch.int32, device=dev)
    code[: nchunks * 2] = torch.stack([lo, hi], 1).reshape(-1).to(torch.int32)
    return {"tc_values": values, "tc_code": code, "tc_ptr": ptr.to(torch.int32)}


def _bank_places(src, m, banks, ptr):
    """Greedy placement of every chunk's entries on its 8 stores (``src[c, j]``: the entry chunk c stores at store j),
    lane by lane over all batches at once: each real entry takes the free store whose bank is least used so far by
    the lanes before it in its batch; then every store left free repeats the chunk's entry whose bank is least used
    there. ``banks[c, j]``: bank of ``src[c, j]`` (the first ``m[c]`` are the chunk's real entries)."""
    dev = src.device
    nch = src.shape[0]
    nseg = ptr.numel() - 1
    seg = torch.repeat_interleave(torch.arange(nseg, device=dev), ptr[1:] - ptr[:-1])
    rel = torch.arange(nch, device=dev) - ptr[seg]
    nb = (ptr[1:] - ptr[:-1] + 31) >> 5                          # batches per stage
    bstart = torch.zeros(nseg + 1, dtype=torch.int64, device=dev)
    bstart[1:] = torch.cumsum(nb, 0)
    batch = bstart[seg] + (rel >> 5)
    lane = rel & 31
    # stores per (batch, store, bank), flat: a lane's chunks lie in distinct batches, so each step reads and bumps
    # only the counters it needs (n x 8 of them) instead of copying its batches' 256 (as long as 4 s per LLM layer)
    occ = torch.zeros(int(bstart[-1]) * 256, dtype=torch.int16, device=dev)
    out = torch.empty_like(src)
    big = torch.iinfo(torch.int16).max
    ar8 = torch.arange(8, device=dev)
    st32 = ar8 * 32
    for ln in range(32):
        cs = (lane == ln).nonzero(as_tuple=True)[0]
        if not cs.numel():
            continue
        bk, mm, sr = banks[cs], m[cs], src[cs]
        base = batch[cs] * 256                                   # [n]: this chunk's batch's counters
        n = cs.numel()
        taken = torch.zeros(n, 8, dtype=torch.bool, device=dev)
        place = torch.empty(n, 8, dtype=torch.int64, device=dev)
        rows = torch.arange(n, device=dev)
        for e in range(8):
            real = mm > e
            idx = base[:, None] + st32[None, :] + bk[:, e, None]  # [n, 8]: this entry's bank at every store
            cost = occ[idx]
            cost[taken] = big
            jj = cost.argmin(1)
            jj = torch.where(real, jj, 0)
            r = rows[real]
            taken[r, jj[real]] = True
            hit = idx[r, jj[real]]
            occ[hit] += 1
            place[:, e] = jj
        res = torch.empty_like(sr)
        for jpos in range(8):
            # the real entry placed at store jpos, if any; else the entry whose bank is least used there
            hit = (place == jpos) & (ar8[None, :] < mm[:, None])
            has = hit.any(1)
            e_hit = hit.int().argmax(1)
            idx = base[:, None] + jpos * 32 + bk                  # [n, 8]: each entry's bank at store jpos
            cost = occ[idx]
            cost[ar8[None, :] >= mm[:, None]] = big
            e_pad = cost.argmin(1)
            e = torch.where(has, e_hit, e_pad)
            res[:, jpos] = sr[rows, e]
            pad = ~has
            occ[idx[rows[pad], e_pad[pad]]] += 1
        out[cs] = res
    return out


def pos7_slots(bufs: dict) -> torch.Tensor:
    """Every entry's slot (int64, chunk-major, 8 per chunk), decoded from ``tc_code`` with the kernel's arithmetic."""
    w = bufs["tc_code"].long().view(-1, 2)
    n = int(bufs["tc_ptr"][-1])
    w = w[:n]
    base = (w[:, 0] >> 21) & 0x780
    sh = torch.arange(4, device=w.device) * 7
    f = (w[:, :, None] >> sh) & 127                              # [n, 2, 4]: entries 0-3 (lo), 4-7 (hi)
    return (base[:, None] + f.reshape(-1, 8)).reshape(-1)


def pos7_to_dense(bufs: dict, O: int, K: int, rt: int, sc: int, slots: str = "frag") -> torch.Tensor:
    """Inverse of ``build_pos7`` (vectorised, float64). Raises if a chunk stores two values to one slot."""
    rg = 16 * rt
    S = rg * sc
    ngr, nst = -(-O // rg), -(-K // sc)
    dev = bufs["tc_code"].device
    ptr = bufs["tc_ptr"].long()
    slot = pos7_slots(bufs)
    n = slot.numel()
    seg = torch.repeat_interleave(torch.arange(ngr * nst, device=dev), (ptr[1:] - ptr[:-1]) * 8)
    v = bufs["tc_values"][:n].double()
    if n and int(slot.max()) >= S:
        raise ValueError("tiled pos7 layout: a slot outside its stage")
    key = seg * S + slot
    uk, inv = torch.unique(key, return_inverse=True)
    lo = torch.full((uk.numel(),), float("inf"), dtype=torch.float64, device=dev)
    hi = torch.full((uk.numel(),), float("-inf"), dtype=torch.float64, device=dev)
    lo.scatter_reduce_(0, inv, v, reduce="amin")
    hi.scatter_reduce_(0, inv, v, reduce="amax")
    if not torch.equal(lo, hi):
        raise ValueError("tiled pos7 layout: two different values for one slot")
    r, c = torch.meshgrid(torch.arange(rg, device=dev), torch.arange(sc, device=dev), indexing="ij")
    tab = slot_fn(slots)(r.reshape(-1), c.reshape(-1), rt)
    inv_r = torch.empty(S, dtype=torch.long, device=dev)
    inv_c = torch.empty(S, dtype=torch.long, device=dev)
    inv_r[tab], inv_c[tab] = r.reshape(-1), c.reshape(-1)
    s_, sl = uk // S, uk % S
    W = torch.zeros(ngr * rg, nst * sc, dtype=torch.float64, device=dev)
    W[(s_ // nst) * rg + inv_r[sl], (s_ % nst) * sc + inv_c[sl]] = lo
    return W[:O, :K]


def pos7_wavefronts(bufs: dict) -> int:
    """``store_wavefronts`` of a pos7 layout (its decoded slots in the kernel's store order)."""
    return store_wavefronts({"tc_ptr": bufs["tc_ptr"], "tc_pos": pos7_slots(bufs)})


# --- sp=1: the stage decoded into the 2:4 sparse wgmma operand (``tiled_wg.py`` with ``sp=1``) ------------------
#
# Per row and group of 4 columns the first two non-zeros (column order) are the group's 2:4 part: they go to the
# two slots of the group in the compressed A operand of ``wgmma.mma_async.sp`` (a stage of sc = 128 columns is 64
# compressed columns: one 128B-swizzled atom per 64 rows, half the dense stage buffer), at the two *distinct
# increasing* positions of the group's metadata (``mma_layout``'s rule: the non-zeros' positions first, then the
# free ones, the first two sorted; a lone non-zero at position 3 takes slot 1). The rest (the 3rd and 4th
# non-zero of a group: the *residual*, about 1 % / 4 % / 8 % of the non-zeros of random 90 / 80 / 70 % weights)
# is added by the kernel on CUDA cores from the stage's activation tile.
# Buffers, next to the compressed stage's own (``build`` / ``build_pos7`` of the compressed coordinates, slots
# "wg" of a 64-column stage):
# - ``tc_meta`` (int32 [strips, stages, 16, sc/32]): the metadata words of a strip's stage in lane order: chunk
#   ``2 g + s`` (lane ``4 g + s``, s = 0, 1: sparsity selector 0) holds, for each k32 step ``kk`` of the stage, the
#   word of rows ``g`` (bits 0..15) and ``g + 8`` (bits 16..31) and 16-column block ``2 kk + s``: 4 bits per group
#   of 4 columns, its two positions at bits ``4 j`` and ``4 j + 2``. One 16-byte load per lane.
# - ``tc_res`` (int32 [8 * rows]): per strip and stage ``R`` rows of 8 words, word ``q`` of a row an entry of
#   strip rows ``q`` or ``q + 8`` (the rows the lanes ``4 q .. 4 q + 3`` own in the wgmma accumulators):
#   bits 0..7 the column in the stage, bit 8 ``h`` (row ``q + 8 h``), bits 16..31 the value's bits; R is the
#   largest count over the 8 row pairs, the rest pad with zero words (value 0).
# - ``tc_rptr`` (int32 [strips * stages + 1]): where each strip stage's residual rows start (rows of 8 words).

SP_BUFFERS = ("tc_meta", "tc_res", "tc_rptr")
SP_SC = 128
SP_SCS = (128, 256)           # 64 / 128 compressed columns: one / two swizzle atoms per 64 rows


def _sp_pairs(device):
    """Per 4-bit mask of a group's kept positions (at most 2 bits): its two metadata positions (distinct,
    increasing: the mask's positions first, then the free ones) -> tensors ``(p0[16], p1[16])``."""
    p0, p1 = [], []
    for m in range(16):
        order = [i for i in range(4) if m >> i & 1] + [i for i in range(4) if not m >> i & 1]
        a, b = sorted(order[:2])
        p0.append(a)
        p1.append(b)
    return torch.tensor(p0, device=device), torch.tensor(p1, device=device)


def build_wsp(fmt, sc: int = SP_SC, code: str = "pos7", shape=None, dtype=None, order: str = "bank") -> dict:
    """The buffers of ``sp=1`` (see above) for ``fmt`` (any sparsec format), on the device of its buffers
    (vectorised): the compressed stage's ``tc_values``, ``tc_code`` | ``tc_pos``, ``tc_ptr`` and ``SP_BUFFERS``."""
    if sc not in SP_SCS:
        raise ValueError(f"tiled sp layout: sc={sc} (sp=1 takes sc in {SP_SCS}: 64-column compressed swizzle atoms)")
    O, K = shape or tuple(fmt.shape)
    rows, cols, vals, dtype = nonzero_coordinates(fmt, dtype)
    dev = rows.device
    ngr, nst = -(-O // 16), -(-K // sc)
    Kp = nst * sc
    srt = torch.argsort(rows * Kp + cols)
    rows, cols, vals = rows[srt], cols[srt], vals[srt]
    grp = rows * (Kp // 4) + (cols >> 2)                         # (row, group of 4) id, sorted
    _, inv, cnt = torch.unique_consecutive(grp, return_inverse=True, return_counts=True)
    first = torch.zeros(cnt.numel() + 1, dtype=torch.long, device=dev)
    first[1:] = torch.cumsum(cnt, 0)
    rank = torch.arange(grp.numel(), device=dev) - first[inv]
    main = rank < 2
    # the 2:4 part: metadata positions per group, slot of each kept entry
    mask = torch.zeros(cnt.numel(), dtype=torch.long, device=dev)
    mask.index_add_(0, inv[main], 1 << (cols[main] & 3))
    t0, t1 = _sp_pairs(dev)
    p0, p1 = t0[mask], t1[mask]
    mr, mc, mv, mi = rows[main], cols[main], vals[main], inv[main]
    slot = (mc & 3 != p0[mi]).long()                             # 0 at position p0, else 1 (at p1)
    ccol = (mc // sc) * (sc // 2) + ((mc % sc) >> 2) * 2 + slot
    if code == "pos7":
        lay = build_pos7((mr, ccol, mv), 1, sc // 2, shape=(O, nst * sc // 2), dtype=dtype, order=order, slots="wg")
    elif code == "pos":
        lay = build((mr, ccol, mv), 1, sc // 2, shape=(O, nst * sc // 2), dtype=dtype, order=order, slots="wg")
    else:
        raise ValueError(f"tiled sp layout: code {code!r} (pos or pos7)")
    # metadata: default (0, 1) = 0x4 per group; groups with kept entries add their nibble's difference
    NK = sc // 32
    nseg = ngr * nst
    words = torch.full((nseg * 16 * NK,), 0x44444444, dtype=torch.int64, device=dev)
    gr = torch.unique_consecutive(grp)                           # the groups, in inv order
    r, gi = gr // (Kp // 4), gr % (Kp // 4)
    stg, gl = gi // (sc // 4), gi % (sc // 4)                    # stage, group in the stage
    cb = gl >> 2                                                 # 16-column block of the stage
    seg = (r >> 4) * nst + stg
    chunk = ((r & 7) << 1) + (cb & 1)
    widx = (seg * 16 + chunk) * NK + (cb >> 1)
    shift = ((gl & 3) << 2) + (((r >> 3) & 1) << 4)
    nib = p0 | (p1 << 2)
    words.index_add_(0, widx, (nib - 4) << shift)                # distinct fields: the sum replaces each nibble
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
    # residual: per strip stage and row pair q, its entries; rows of 8 words (one per row pair)
    rr_, rc, rv = rows[~main], cols[~main], vals[~main]
    rseg = (rr_ >> 4) * nst + rc // sc
    q = rr_ & 7
    key = rseg * 8 + q
    srt = torch.argsort(key, stable=True)
    rr_, rc, rv, rseg, q, key = rr_[srt], rc[srt], rv[srt], rseg[srt], q[srt], key[srt]
    kc = torch.bincount(key, minlength=nseg * 8)
    kfirst = torch.zeros(nseg * 8 + 1, dtype=torch.long, device=dev)
    kfirst[1:] = torch.cumsum(kc, 0)
    krank = torch.arange(key.numel(), device=dev) - kfirst[key]
    R = kc.view(nseg, 8).max(1).values
    rptr = torch.zeros(nseg + 1, dtype=torch.long, device=dev)
    rptr[1:] = torch.cumsum(R, 0)
    nres = int(rptr[-1])
    res = torch.zeros(max(nres, 1) * 8, dtype=torch.int64, device=dev)
    bits = rv.to(dtype).view(torch.int16).long() & 0xFFFF
    res[(rptr[rseg] + krank) * 8 + q] = (rc % sc) | (((rr_ >> 3) & 1) << 8) | (bits << 16)
    res = torch.where(res >= 2 ** 31, res - 2 ** 32, res).to(torch.int32)
    lay.update({"tc_meta": words, "tc_res": res, "tc_rptr": rptr.to(torch.int32)})
    return lay


def wsp_to_dense(lay: dict, O: int, K: int, sc: int = SP_SC, code: str = "pos7") -> torch.Tensor:
    """Inverse of ``build_wsp`` (float64, for tests): the compressed stages expanded through their metadata plus
    the residual."""
    ngr, nst = -(-O // 16), -(-K // sc)
    C = (pos7_to_dense(lay, ngr * 16, nst * sc // 2, 1, sc // 2, slots="wg") if code == "pos7"
         else _pos_wg_to_dense(lay, ngr * 16, nst * sc // 2, sc // 2))
    NK = sc // 32
    w = lay["tc_meta"].long().view(ngr, nst, 8, 2, NK) & 0xFFFFFFFF   # [strip, stage, g, s, kk]
    half = torch.stack([w & 0xFFFF, w >> 16], 2)                   # [strip, stage, h, g, s, kk]: row g + 8h
    nib = (half.unsqueeze(-1) >> (torch.arange(4) * 4)) & 0xF      # [..., j]: group j of block 2kk + s
    nib = nib.permute(0, 2, 3, 1, 5, 4, 6).reshape(ngr * 16, nst * sc // 4)   # [row, group]
    W = torch.zeros(ngr * 16, nst * sc // 4, 4, dtype=torch.float64)
    cv = C.view(ngr * 16, nst * sc // 4, 2)
    W.scatter_add_(2, (nib & 3).unsqueeze(-1), cv[..., :1])
    W.scatter_add_(2, (nib >> 2).unsqueeze(-1), cv[..., 1:])
    W = W.view(ngr * 16, nst * sc)
    rp = lay["tc_rptr"].long()
    res = lay["tc_res"].long() & 0xFFFFFFFF
    nseg = ngr * nst
    segs = torch.repeat_interleave(torch.arange(nseg), (rp[1:] - rp[:-1]) * 8)
    e = res[: int(rp[-1]) * 8]
    qq = torch.arange(e.numel()) % 8
    vbits = (e >> 16).to(torch.int32)
    vbits = torch.where(vbits >= 2 ** 15, vbits - 2 ** 16, vbits).to(torch.int16)
    v = vbits.view(lay["tc_values"].dtype).double()
    row = (segs // nst) * 16 + qq + 8 * ((e >> 8) & 1)
    col = (segs % nst) * sc + (e & 0xFF)
    W.index_put_((row, col), v, accumulate=True)
    return W[:O, :K]


def _pos_wg_to_dense(lay: dict, O: int, K: int, sc: int) -> torch.Tensor:
    """``build``'s ``slots="wg"`` layout back to dense (float64; rows and columns padded to the stages)."""
    ngr, nst = -(-O // 16), -(-K // sc)
    ptr = lay["tc_ptr"].long() * 8
    n = int(ptr[-1])
    slot = wg_slot_of_offset(lay["tc_pos"][:n].long())
    seg = torch.repeat_interleave(torch.arange(ngr * nst), ptr[1:] - ptr[:-1])
    r, c = torch.meshgrid(torch.arange(16), torch.arange(sc), indexing="ij")
    tab = wg_slot_of(r.reshape(-1), c.reshape(-1))
    inv_r = torch.empty(16 * sc, dtype=torch.long)
    inv_c = torch.empty(16 * sc, dtype=torch.long)
    inv_r[tab], inv_c[tab] = r.reshape(-1), c.reshape(-1)
    W = torch.zeros(ngr * 16, nst * sc, dtype=torch.float64)
    W[(seg // nst) * 16 + inv_r[slot], (seg % nst) * sc + inv_c[slot]] = lay["tc_values"][:n].double()
    return W


def layout_key(knobs: dict) -> tuple:
    """What ``build_for``'s layout depends on: ``(rt, sc, code, mma, xa, sp)`` of resolved knobs (kernels with equal
    keys share one layout)."""
    return (knobs["rt"], knobs["sc"], knobs.get("code", "pos"), knobs.get("mma", "sync"), knobs.get("xa", 0),
            knobs.get("sp", 0))


def build_for(fmt, knobs: dict, **kw) -> tuple[dict, tuple]:
    """The tiled kernel's layout for its resolved knobs (``code``: pos | pos7 | bitmap) and the buffer names in the
    kernel's argument order."""
    code = knobs.get("code", "pos")
    if knobs.get("sp"):
        return build_wsp(fmt, knobs["sc"], code, **kw), (P7_BUFFERS if code == "pos7" else BUFFERS) + SP_BUFFERS
    slots = ("wgx" if knobs.get("xa") else "wg") if knobs.get("mma") == "wg" else "frag"
    if code == "pos7":
        return build_pos7(fmt, knobs["rt"], knobs["sc"], slots=slots, **kw), P7_BUFFERS
    if code == "bitmap":
        return build_bitmap(fmt, knobs["rt"], knobs["sc"], **kw), BM_BUFFERS
    return build(fmt, knobs["rt"], knobs["sc"], slots=slots, **kw), BUFFERS
