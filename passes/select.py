"""Choosing each weight's storage format (simple rule; the cost model replaces `auto`).

``select_formats(g, format)`` packs every prunable weight: ``dense``, ``csr``,
``bitmap``, ``nm``, ``bsr``, ``groupquant`` forced, or ``auto``:

1. detect the pattern the weight already follows, exactly (N:M for the common
   ratios, filled blocks for the common block shapes);
2. N:M with N/M <= 1/2 and at least 75% of the slots used -> ``nm``; blocks at least 80% full with block density
   <= 40% -> ``bsr``; element density <= 35% -> ``csr``; otherwise ``dense``.

Every lossless format represents the weight exactly; ``groupquant`` is lossy
and only used when asked for (``--format groupquant`` or ``--pattern group:G``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsec.ir.errors import ParameterError
from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant, SparseFormat, matrix_dims
from sparsec.ir.graph import Graph
from sparsec.passes.prune import Pattern, parse_pattern
from sparsec.passes.sparsify import prunable_weights

FORMAT_CHOICES = ("auto", "dense", "csr", "bitmap", "nm", "bsr", "groupquant")
NM_CANDIDATES = ((1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (4, 16), (8, 16))
BLOCK_CANDIDATES = ((16, 16), (8, 8), (4, 4), (1, 16), (16, 1), (2, 2))


@dataclass(frozen=True)
class Choice:
    weight: str
    format: str
    params: dict
    density: float
    reason: str


def detect_nm(w2: torch.Tensor) -> tuple[int, int] | None:
    """The sparsest (n, m) of NM_CANDIDATES the matrix follows exactly, if any."""
    rows, k = w2.shape
    best = None
    for n, m in NM_CANDIDATES:
        g = -(-k // m)
        p = torch.zeros(rows, g * m, dtype=torch.bool)
        p[:, :k] = w2 != 0
        counts = p.reshape(rows, g, m).sum(-1)
        if counts.numel() == 0 or int(counts.max()) <= n:
            if best is None or n / m < best[0] / best[1]:
                best = (n, m)
    return best


def block_fill(w2: torch.Tensor, r: int, c: int) -> tuple[float, float]:
    """(fraction of blocks with a non-zero, mean fill of those blocks)."""
    rows, k = w2.shape
    p = torch.zeros(-(-rows // r) * r, -(-k // c) * c, dtype=torch.float32)
    p[:rows, :k] = (w2 != 0).float()
    cnt = p.reshape(p.shape[0] // r, r, p.shape[1] // c, c).sum((1, 3))
    kept = cnt > 0
    nb = kept.numel()
    if not kept.any():
        return 0.0, 0.0
    return float(kept.sum()) / nb, float(cnt[kept].mean()) / (r * c)


def choose(name: str, w: torch.Tensor, fmt: str, pattern: Pattern | None) -> Choice:
    rows, k = matrix_dims(tuple(w.shape))
    w2 = w.reshape(rows, k)
    density = float(torch.count_nonzero(w2)) / max(w2.numel(), 1)
    if fmt == "groupquant" or (pattern is not None and pattern.kind == "group" and fmt == "auto"):
        g = pattern.group if pattern is not None and pattern.kind == "group" else 32
        return Choice(name, "groupquant", {"group": g, "bits": 4}, density, "group-quantised (asked for)")
    if fmt == "dense":
        return Choice(name, "dense", {}, density, "forced")
    if fmt == "csr":
        return Choice(name, "csr", {}, density, "forced")
    if fmt == "bitmap":
        return Choice(name, "bitmap", {"tile": (8, 8)}, density, "forced")
    if fmt == "nm":
        nm = (pattern.n, pattern.m) if pattern is not None and pattern.kind == "nm" else detect_nm(w2)
        if nm is None:
            raise ParameterError(f"weight {name}: --format nm, but it follows no N:M pattern "
                                 f"(prune with --pattern N:M)")
        return Choice(name, "nm", {"n": nm[0], "m": nm[1]}, density, "forced")
    if fmt == "bsr":
        block = pattern.block if pattern is not None and pattern.kind == "block" else (4, 4)
        return Choice(name, "bsr", {"block": block}, density, "forced")
    if fmt != "auto":
        raise ParameterError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMAT_CHOICES)}")
    # auto: the simple rule of the module docstring
    nm = detect_nm(w2)
    # N:M only when the slots are mostly used (a 90%-sparse weight follows 4:8 by chance)
    if nm is not None and nm[0] / nm[1] <= 0.5 and density >= 0.75 * nm[0] / nm[1]:
        return Choice(name, "nm", {"n": nm[0], "m": nm[1]}, density, f"follows {nm[0]}:{nm[1]} exactly")
    for r, c in BLOCK_CANDIDATES:
        frac, fill = block_fill(w2, r, c)
        if frac <= 0.4 and fill >= 0.8:
            return Choice(name, "bsr", {"block": (r, c)}, density,
                          f"{r}x{c} blocks, {frac:.0%} of blocks kept, {fill:.0%} full")
    if density <= 0.35:
        return Choice(name, "csr", {}, density, f"unstructured, density {density:.1%}")
    return Choice(name, "dense", {}, density, f"density {density:.1%} too high to pay off")


def pack_choice(w: torch.Tensor, ch: Choice) -> SparseFormat:
    cls = {"dense": Dense, "csr": CSR, "bitmap": Bitmap, "nm": NM, "bsr": BSR, "groupquant": GroupQuant}[ch.format]
    return cls.from_dense(w, **ch.params)


def select_formats(g: Graph, fmt: str = "auto", pattern: str | Pattern | None = None) -> tuple[Graph, list[Choice]]:
    pat = parse_pattern(pattern) if pattern is not None else None
    choices = []
    for name in prunable_weights(g):
        c = g.constant(name)
        w = c.dense()
        if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            continue
        ch = choose(name, w, fmt, pat)
        choices.append(ch)
        if ch.format != "dense" or not isinstance(c.value, Dense):
            g = g.with_constant(name, pack_choice(w, ch))
    return g, choices
