"""Magnitude pruning of a dense weight to a sparsity pattern.

Pruning returns the pruned dense tensor and its keep-mask; packing into a
format is the format's job (``sparsec.ir.formats``).

Conventions (shared with the formats):
- A weight is viewed as a matrix ``[rows, K]`` where ``K`` is the product of all
  dimensions but the first (an ``nn.Linear`` weight ``[out, in]`` as is; a conv
  weight ``[out, in, kh, kw]`` as ``[out, in*kh*kw]``). The reduction dimension is
  the last one, and every pattern's groups run along it.
- Ties in magnitude are broken by position (the earlier element is kept), so
  pruning is deterministic.
- ``sparsity`` is the fraction of entries (or blocks/groups) removed:
  ``round(sparsity * count)`` of them, in ``[0, 1]``.

Patterns (``parse_pattern``):
  ``unstructured``   top-k by |w| over the whole tensor
  ``N:M``            the N largest |w| of every M consecutive entries of a row;
                     a row whose length is not a multiple of M ends with a partial
                     group of g < M entries that keeps min(N, g) of them
  ``block:RxC``      R×C blocks (partial at the edges) ranked by Frobenius norm
  ``group:G``        G consecutive entries of a row (partial at the row's end),
                     ranked by L2 norm (GQSA-style structured groups)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from sparsec.ir.errors import ParameterError


class Pruned(NamedTuple):
    weight: torch.Tensor   # same shape/dtype as the input, pruned entries exactly 0
    mask: torch.Tensor     # bool, True where the entry is kept


@dataclass(frozen=True)
class Pattern:
    """A parsed sparsity pattern. ``kind`` is one of unstructured, nm, block, group."""

    kind: str
    n: int = 0
    m: int = 0
    block: tuple[int, int] = (1, 1)
    group: int = 0

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.block[0]}x{self.block[1]}"
        if self.kind == "group":
            return f"group:{self.group}"
        return self.kind


_NM = re.compile(r"^(\d+):(\d+)$")
_BLOCK = re.compile(r"^block:(\d+)x(\d+)$")
_GROUP = re.compile(r"^group:(\d+)$")


def parse_pattern(text: str | Pattern) -> Pattern:
    """Parse ``unstructured | N:M | block:RxC | group:G`` (case-insensitive)."""
    if isinstance(text, Pattern):
        return text
    s = str(text).strip().lower()
    if s == "unstructured":
        return Pattern("unstructured")
    if mt := _NM.match(s):
        n, m = int(mt[1]), int(mt[2])
        check_nm(n, m)
        return Pattern("nm", n=n, m=m)
    if mt := _BLOCK.match(s):
        r, c = int(mt[1]), int(mt[2])
        if r < 1 or c < 1:
            raise ParameterError(f"pattern {text!r}: block shape must be at least 1x1")
        return Pattern("block", block=(r, c))
    if mt := _GROUP.match(s):
        g = int(mt[1])
        if g < 1:
            raise ParameterError(f"pattern {text!r}: group size must be >= 1")
        return Pattern("group", group=g)
    raise ParameterError(
        f"unknown sparsity pattern {text!r}; expected unstructured, N:M (e.g. 2:4), "
        f"block:RxC (e.g. block:4x4) or group:G (e.g. group:32)")


def check_nm(n: int, m: int, where: str = "N:M") -> None:
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer))):
        raise ParameterError(f"{where}: n and m must be integers, got n={n!r}, m={m!r}")
    if m < 2 or n < 1 or n >= m:
        raise ParameterError(f"{where}: need 1 <= N < M and M >= 2, got N={n}, M={m}")


def check_sparsity(sparsity: float, where: str = "sparsity") -> float:
    s = float(sparsity)
    if not (0.0 <= s <= 1.0) or s != s:
        raise ParameterError(f"{where} must be in [0, 1], got {sparsity!r}")
    return s


def as_matrix(w: torch.Tensor, where: str = "weight") -> torch.Tensor:
    """The ``[rows, K]`` view of a weight (see module docstring)."""
    if w.dim() == 0:
        raise ParameterError(f"{where}: cannot prune a scalar")
    if w.dim() == 1:
        return w.reshape(1, -1)
    return w.reshape(w.shape[0], -1)


def _to_torch(w) -> tuple[torch.Tensor, bool]:
    if isinstance(w, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(w)), True
    if isinstance(w, torch.Tensor):
        return w.detach(), False
    raise ParameterError(f"weight must be a torch.Tensor or numpy array, got {type(w).__name__}")


def _finish(w: torch.Tensor, mask2d: torch.Tensor, was_numpy: bool) -> Pruned:
    mask = mask2d.reshape(w.shape)
    out = torch.where(mask, w, torch.zeros((), dtype=w.dtype))
    if was_numpy:
        return Pruned(out.numpy(), mask.numpy())
    return Pruned(out, mask)


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask over a 1-D score vector keeping the ``keep`` largest (ties: earlier wins; NaN never before a
    number). The stable descending sort's first ``keep``, in linear time: everything above the ``keep``-th largest
    score (``np.partition``), then the earliest entries equal to it (an LLM weight's 45 M scores: 6 s -> 0.5 s)."""
    s = scores.double().numpy()
    n = s.size
    mask = np.zeros(n, dtype=bool)
    if keep >= n:
        mask[:] = True
    elif keep > 0:
        s = np.where(np.isnan(s), -np.inf, s)          # a NaN sorts after every number, as in the stable sort
        v = np.partition(s, n - keep)[n - keep]         # the keep-th largest
        mask = s > v
        need = keep - int(np.count_nonzero(mask))
        if need > 0:
            mask[np.flatnonzero(s == v)[:need]] = True
    return torch.from_numpy(mask)


def prune_unstructured(w, sparsity: float) -> Pruned:
    t, was_np = _to_torch(w)
    s = check_sparsity(sparsity)
    m2 = as_matrix(t)
    keep = m2.numel() - int(round(s * m2.numel()))
    mask = _keep_top(m2.abs().flatten().float(), keep).reshape(m2.shape)
    return _finish(t, mask, was_np)


def prune_nm(w, n: int, m: int) -> Pruned:
    """Keep the ``n`` largest-magnitude entries of every ``m`` along the last axis of the matrix view."""
    t, was_np = _to_torch(w)
    check_nm(n, m)
    m2 = as_matrix(t)
    rows, k = m2.shape
    kp = -(-k // m) * m
    # Padding with -1 scores: a partial group's padding is never preferred over a real entry.
    scores = torch.full((rows, kp), -1.0, dtype=torch.float64)
    scores[:, :k] = m2.abs().double()
    g = scores.reshape(rows, kp // m, m)
    # Stable top-n per group: sort by (-score, position).
    order = np.argsort(-g.numpy(), axis=-1, kind="stable")[..., :n]
    keep = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=-1)
    keep = keep.reshape(rows, kp)[:, :k]
    return _finish(t, torch.from_numpy(np.ascontiguousarray(keep)), was_np)


def _block_scores(m2: torch.Tensor, r: int, c: int) -> torch.Tensor:
    rows, k = m2.shape
    br, bc = -(-rows // r), -(-k // c)
    sq = torch.zeros(br * r, bc * c, dtype=torch.float64)
    sq[:rows, :k] = m2.double() ** 2
    return sq.reshape(br, r, bc, c).sum(dim=(1, 3))


def prune_block(w, sparsity: float, block: tuple[int, int]) -> Pruned:
    """Remove ``round(sparsity * nblocks)`` whole r×c blocks with the smallest Frobenius norm."""
    t, was_np = _to_torch(w)
    s = check_sparsity(sparsity)
    r, c = int(block[0]), int(block[1])
    if r < 1 or c < 1:
        raise ParameterError(f"block shape must be at least 1x1, got {block}")
    m2 = as_matrix(t)
    scores = _block_scores(m2, r, c)
    nb = scores.numel()
    keep_blocks = _keep_top(scores.flatten(), nb - int(round(s * nb))).reshape(scores.shape)
    mask = keep_blocks.repeat_interleave(r, 0).repeat_interleave(c, 1)[: m2.shape[0], : m2.shape[1]]
    return _finish(t, mask, was_np)


def prune_group(w, sparsity: float, group: int) -> Pruned:
    """Remove ``round(sparsity * ngroups)`` whole row groups of ``group`` entries with the smallest L2 norm."""
    return prune_block(w, sparsity, (1, group))


def prune(w, pattern: str | Pattern, sparsity: float | None = None) -> Pruned:
    """Prune ``w`` to ``pattern``; ``sparsity`` is required except for N:M (fixed at 1 - N/M)."""
    p = parse_pattern(pattern)
    if p.kind == "nm":
        return prune_nm(w, p.n, p.m)
    if sparsity is None:
        raise ParameterError(f"pattern {p} needs a target sparsity (--sparsity)")
    if p.kind == "unstructured":
        return prune_unstructured(w, sparsity)
    if p.kind == "block":
        return prune_block(w, sparsity, p.block)
    return prune_group(w, sparsity, p.group)
