"""Kernel-private 2:4 layout of the ``mma`` CUDA kernel (``mma_gemm.py``): ``mma.sp`` operands.

Pure torch (no TVM; the GPU machine builds it from the format's own buffers too):

- ``sp_values[O, K/2]``: per group of 4 columns the two kept values, at increasing positions (the
  NM format already stores them so, except padding slots, which may repeat a position or come
  first: here every group gets two *distinct increasing* positions, the unused ones holding 0);
- ``sp_meta[ceil(O/16), K/16, 8]`` (int32 bits of the ``uint32`` metadata): word ``g`` of 16-row
  block ``rb`` and 16-column block ``kb`` holds row ``16*rb + g`` in bits 0..15 and row
  ``16*rb + g + 8`` in bits 16..31; per row, group ``j`` of the block (columns ``4j .. 4j+3``) has its
  two positions at bits ``4j`` and ``4j + 2`` (the ``mma.sp.m16n8k16`` f16/bf16 metadata with sparsity
  selector 0: lane ``4g`` of each quad supplies it).
"""
from __future__ import annotations

import torch

BUFFERS = ("sp_values", "sp_meta")


def build(fmt) -> dict:
    """``{"sp_values", "sp_meta"}`` from an ``NM`` 2:4 format (any device)."""
    n, m = getattr(fmt, "n", None), getattr(fmt, "m", None)
    if type(fmt).__name__.lower() != "nm" or (n, m) != (2, 4):
        raise ValueError(f"mma_layout.build: 2:4 NM weights only (got {type(fmt).__name__} {n}:{m})")
    O, K = fmt.shape
    if K % 16:
        raise ValueError(f"mma_layout.build: K={K} must be a multiple of 16")
    G = K // 4
    vals, idx = fmt.values, fmt.indices.long()
    dev = vals.device
    grp = torch.zeros(O, G, 4, dtype=torch.float32, device=dev)
    grp.scatter_add_(2, idx.view(O, G, 2), vals.float().view(O, G, 2))
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
    return {"sp_values": sp_values, "sp_meta": sp_meta}


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
