"""Kernel-private 2:4 layout of the ``mma`` / ``wgmma`` CUDA kernels: ``mma.sp`` / ``wgmma.mma_async.sp`` operands.

Any ``n:m`` with ``n <= 2`` and ``m % 4 == 0`` (1:4, 2:8, ...) has at most 2 non-zeros in every group of 4
columns, so it runs on the same layout and kernels (``fits_24``; "general N:M where no library exists").

Pure torch (no TVM; the GPU machine builds it from the format's own buffers too):

- ``sp_values[O, K/2]``: per group of 4 columns the two kept values, at increasing positions (the
  NM format already stores them so, except padding slots, which may repeat a position or come
  first: here every group gets two *distinct increasing* positions, the unused ones holding 0);
- ``sp_meta[ceil(O/16), K/16, 8]`` (int32 bits of the ``uint32`` metadata): word ``g`` of 16-row
  block ``rb`` and 16-column block ``kb`` holds row ``16*rb + g`` in bits 0..15 and row
  ``16*rb + g + 8`` in bits 16..31; per row, group ``j`` of the block (columns ``4j .. 4j+3``) has its
  two positions at bits ``4j`` and ``4j + 2`` (the ``mma.sp.m16n8k16`` f16/bf16 metadata with sparsity
  selector 0: lane ``4g`` of each quad supplies it).
- ``sp_frag[ceil(O/16), K/32, 32, 8]`` (``build(fmt, frag=True)``, the ``wgmma`` design's ``ar`` knob): the same
  stored values in the order of the sparse ``wgmma``'s register operand. Per 16-row block ``rb`` and k32 step ``s``
  (16 stored columns) lane ``4g + t`` holds 8 values, registers ``r = 0..3`` of two each: row ``16 rb + g + 8 (r % 2)``,
  stored columns ``16 s + 8 (r // 2) + 2 t``, ``+ 1`` (the ``mma.m16n8k16`` A fragment over the stored columns); rows
  past O hold zeros. A warp loads a k32 step as 512 contiguous bytes, one 16-byte load per lane.
"""
from __future__ import annotations

import torch

BUFFERS = ("sp_values", "sp_meta")
FRAG_BUFFERS = ("sp_frag", "sp_meta")     # the wgmma design with ar > 0: values in register-operand order


def fits_24(n, m) -> bool:
    """An ``n:m`` pattern runs on the 2:4 sparse tensor cores when every group of 4 consecutive columns holds at
    most 2 non-zeros whatever the positions: ``n <= 2`` and ``m`` a multiple of 4 (2:4, 1:4, 2:8, 1:8, 2:16 ...;
    the unused of the two slots of a group hold zeros)."""
    return n is not None and m is not None and n <= 2 and m % 4 == 0


def tensor_core_weight(meta, who: str) -> bool:
    """For the ``mma`` / ``wgmma`` GEMMs: ``False`` for a dense fp16/bf16 weight, ``True`` for an N:M one that fits
    the 2:4 sparse tensor cores (``fits_24``); any other weight is a ``KernelError`` naming ``who``."""
    from sparsec.backends.kernels.common import KernelError

    if meta.format == "dense":
        sparse = False
    elif meta.format == "nm" and fits_24(meta.param("n"), meta.param("m")):    # 2:4, 1:4, 2:8, ...
        sparse = True
    else:
        raise KernelError(f"cuda {who} kernel: dense or N:M weights with at most 2 per 4 columns only (got "
                          f"{meta.format!r}"
                          + (f" {meta.param('n')}:{meta.param('m')}" if meta.format == "nm" else "") + ")")
    if meta.dtype not in ("float16", "bfloat16"):
        raise KernelError(f"cuda {who} kernel: dtype {meta.dtype} unsupported (float16, bfloat16)")
    return sparse


def buffers_for(knobs: dict | None) -> tuple[str, ...]:
    """The layout buffers a kernel with these resolved knobs takes (``ar`` > 0: ``FRAG_BUFFERS``)."""
    return FRAG_BUFFERS if (knobs or {}).get("ar") else BUFFERS


def frag_order(sp_values: torch.Tensor) -> torch.Tensor:
    """``sp_frag[ceil(O/16), K/32, 32, 8]`` from ``sp_values[O, K/2]`` (module docstring)."""
    O, KH = sp_values.shape
    RB = -(-O // 16)
    v = torch.zeros(RB * 16, KH, dtype=sp_values.dtype, device=sp_values.device)
    v[:O] = sp_values
    # rows (rb, h, g) with row = 16 rb + 8 h + g; stored columns (s, half, t, e) with column = 16 s + 8 half + 2 t + e
    v = v.view(RB, 2, 8, KH // 16, 2, 4, 2)
    # -> (rb, s, lane = 4 g + t, register r = h + 2 half, e)
    return v.permute(0, 3, 2, 5, 4, 1, 6).reshape(RB, KH // 16, 32, 8).contiguous()


def build_for(fmt, knobs: dict | None) -> tuple[dict, tuple[str, ...]]:
    """``(layout, buffer names)`` for a kernel with these resolved knobs."""
    names = buffers_for(knobs)
    return build(fmt, frag="sp_frag" in names), names


def build(fmt, frag: bool = False) -> dict:
    """``{"sp_values", "sp_meta"}`` (+ ``"sp_frag"`` with ``frag``) from an ``NM`` format whose pattern ``fits_24``
    (any device)."""
    n, m = getattr(fmt, "n", None), getattr(fmt, "m", None)
    if type(fmt).__name__.lower() != "nm" or not fits_24(n, m):
        raise ValueError(f"mma_layout.build: NM weights with n <= 2 and m % 4 == 0 only (got {type(fmt).__name__} "
                         f"{n}:{m})")
    O, K = fmt.shape
    if K % 16:
        raise ValueError(f"mma_layout.build: K={K} must be a multiple of 16")
    G = K // 4
    vals = fmt.values
    dev = vals.device
    grp = torch.zeros(O, G, 4, dtype=torch.float32, device=dev)
    if (n, m) == (2, 4):
        grp.scatter_add_(2, fmt.indices.long().view(O, G, 2), vals.float().view(O, G, 2))
    else:                                   # n:m -> groups of 4: every stored entry at its column
        from sparsec.backends.cuda.kernels.tiled_layout import coordinates

        rows, cols, v = coordinates(fmt)
        grp.view(O, K).index_put_((rows.long(), cols.long()), v.float(), accumulate=True)
        if int((grp != 0).sum(-1).max()) > 2:
            raise ValueError(f"mma_layout.build: a group of 4 columns holds more than 2 non-zeros ({n}:{m} weight)")
    pos = torch.arange(4, device=dev).expand(O, G, 4)
    key = torch.where(grp != 0, pos, pos + 4)
    sel = torch.sort(torch.argsort(key, dim=-1, stable=True)[..., :2], dim=-1).values    # [O, G, 2] distinct, increasing
    sp_values = torch.gather(grp, 2, sel).to(vals.dtype).reshape(O, K // 2).contiguous()
    nib = (sel[..., 0] | (sel[..., 1] << 2)).view(O, K // 16, 4)                          # 4 bits per group
    m16 = (nib << (torch.arange(4, device=dev) * 4)).sum(-1)                             # [O, K/16] 16 bits per row
    RB = -(-O // 16)
    pad = torch.full((RB * 16, K // 16), 0x4444, dtype=torch.int64, device=dev)          # rows past O: (0, 1)
    pad[:O] = m16
    pad = pad.view(RB, 2, 8, K // 16)                                                     # [rb, half, g, kb]
    words = pad[:, 0] | (pad[:, 1] << 16)                                                 # [rb, g, kb]
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words)
    sp_meta = words.permute(0, 2, 1).to(torch.int32).contiguous()                         # [rb, kb, g]
    lay = {"sp_values": sp_values, "sp_meta": sp_meta}
    if frag:
        if K % 32:
            raise ValueError(f"mma_layout.build: the register-order values need K a multiple of 32 (got K={K})")
        lay["sp_frag"] = frag_order(sp_values)
    return lay


def to_dense(lay: dict, O: int, K: int) -> torch.Tensor:
    """The dense weight the layout encodes (for tests): inverse of ``build``."""
    v = lay["sp_values"].float().view(O, K // 4, 2)
    w = lay["sp_meta"].long() & 0xFFFFFFFF                                                # [rb, kb, g]
    RB = w.shape[0]
    w = w.permute(0, 2, 1)                                                                # [rb, g, kb]
    rows = torch.stack([w & 0xFFFF, w >> 16], 1).reshape(RB * 16, K // 16)[:O]           # [O, kb]
    nib = (rows.unsqueeze(-1) >> (torch.arange(4) * 4)) & 0xF                             # [O, kb, 4]
    p0, p1 = (nib & 3).reshape(O, K // 4), (nib >> 2).reshape(O, K // 4)
    out = torch.zeros(O, K // 4, 4)
    out.scatter_add_(2, p0.unsqueeze(-1), v[..., :1])
    out.scatter_add_(2, p1.unsqueeze(-1), v[..., 1:])
    return out.reshape(O, K)
