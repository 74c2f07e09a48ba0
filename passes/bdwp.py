"""BDWP (bidirectional weight pruning) masks: pure tensor functions.

One definition of the two N:M masks, used both by the SAT simulator
(``sparsec.sim.sat``) and by BDWP training (``sparsec.training``).

Conventions
-----------
- A linear weight is ``[C_out, C_in]``; a conv weight ``[C_out, C_in, kh, kw]``.
- **GEMM view.** Every layer is ``Y = X · B`` with ``B = weight_matrix(w)``
  of shape ``[K, C_out]``. For conv the reduction index is ordered
  ``(kh, kw, C_in)`` (``K = kh·kw·C_in``, C_in fastest), the NHWC /
  HWIO implicit-GEMM layout: that is what makes "N:M along C_in" a run of
  consecutive reduction elements.
- **FF mask** (forward, ``Y = X·W``): N:M groups along C_in, separately for
  every (C_out, kh, kw). A C_in that is not a multiple of M ends with a
  partial group of ``g < M`` entries keeping ``min(N, g)`` (``prune_nm``'s rule).
- **BP mask** (backward data, ``dX = dY·Wᵀ``): N:M groups along C_out,
  separately for every (C_in, kh, kw): ``prune_nm`` applied to ``Wᵀ``.
- WU (``dW = Xᵀ·dY``) has no weight operand: dense.

Masks are returned in the weight's own shape (bool), for numpy arrays and
torch tensors alike. ``dense`` (n = m = 1) masks keep everything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsec.ir.errors import ParameterError
from sparsec.passes.prune import check_nm, parse_pattern, prune_nm


@dataclass(frozen=True)
class NM:
    """An N:M pattern; ``NM(1, 1)`` is dense."""

    n: int
    m: int

    @property
    def dense(self) -> bool:
        return self.n == self.m

    def __str__(self) -> str:
        return "dense" if self.dense else f"{self.n}:{self.m}"


DENSE = NM(1, 1)


def parse_nm(text) -> NM:
    """``"dense"`` or ``"N:M"`` (1 <= N < M) -> NM."""
    if isinstance(text, NM):
        return text
    s = str(text).strip().lower()
    if s == "dense":
        return DENSE
    p = parse_pattern(s)
    if p.kind != "nm":
        raise ParameterError(f"BDWP pattern must be 'dense' or N:M (e.g. 2:8), got {text!r}")
    return NM(p.n, p.m)


def _is_torch(w) -> bool:
    return type(w).__module__.startswith("torch")


def _check_weight(w, where: str):
    if w.ndim not in (2, 4):
        raise ParameterError(f"{where}: expected a linear [C_out, C_in] or conv [C_out, C_in, kh, kw] "
                             f"weight, got shape {tuple(w.shape)}")


def ff_mask(w, n: int, m: int, where: str = "weight"):
    """Forward mask: N:M along C_in (the reduction dimension of Y = X·W)."""
    _check_weight(w, where)
    check_nm(n, m, where=f"{where}: FF N:M")
    if w.ndim == 2:
        return prune_nm(w, n, m).mask
    co, ci, kh, kw = w.shape
    # [C_out, kh, kw, C_in] rows: groups never straddle a (kh, kw) boundary.
    v = w.permute(0, 2, 3, 1) if _is_torch(w) else w.transpose(0, 2, 3, 1)
    mk = prune_nm(v.reshape(co * kh * kw, ci), n, m).mask.reshape(co, kh, kw, ci)
    return mk.permute(0, 3, 1, 2).contiguous() if _is_torch(w) else np.ascontiguousarray(mk.transpose(0, 3, 1, 2))


def bp_mask(w, n: int, m: int, where: str = "weight"):
    """Backward-data mask: N:M along C_out (the reduction dimension of dX = dY·Wᵀ)."""
    _check_weight(w, where)
    check_nm(n, m, where=f"{where}: BP N:M")
    if w.ndim == 2:
        wt = w.t() if _is_torch(w) else w.T
        mk = prune_nm(wt.contiguous() if _is_torch(w) else np.ascontiguousarray(wt), n, m).mask
        return mk.t().contiguous() if _is_torch(w) else np.ascontiguousarray(mk.T)
    co, ci, kh, kw = w.shape
    # [C_in, kh, kw, C_out] rows: groups along C_out.
    v = w.permute(1, 2, 3, 0) if _is_torch(w) else w.transpose(1, 2, 3, 0)
    v = v.contiguous() if _is_torch(w) else np.ascontiguousarray(v)
    mk = prune_nm(v.reshape(ci * kh * kw, co), n, m).mask.reshape(ci, kh, kw, co)
    return mk.permute(3, 0, 1, 2).contiguous() if _is_torch(w) else np.ascontiguousarray(mk.transpose(3, 0, 1, 2))


def masks(w, pattern) -> tuple:
    """(FF mask, BP mask) for ``pattern`` (``NM`` or text); dense -> all-True masks."""
    p = parse_nm(pattern)
    if p.dense:
        ones = (w == w) | True
        return ones, ones
    return ff_mask(w, p.n, p.m), bp_mask(w, p.n, p.m)


def weight_matrix(w):
    """The ``[K, C_out]`` GEMM operand of a weight (conv K ordered (kh, kw, C_in))."""
    _check_weight(w, "weight")
    if w.ndim == 2:
        return w.T
    co = w.shape[0]
    v = w.permute(2, 3, 1, 0) if _is_torch(w) else w.transpose(2, 3, 1, 0)
    return v.reshape(-1, co)


# --- group structure along a reduction dimension --------------------------------

@dataclass(frozen=True)
class Groups:
    """N:M groups along a reduction of ``segments`` runs of ``run`` elements each.

    Groups never straddle a run (a conv's C_in run per (kh, kw)). Dense is
    ``n = m = 1``: every element its own group.
    """

    run: int
    segments: int
    n: int
    m: int

    def lengths(self) -> np.ndarray:
        """Dense length of every group, in reduction order."""
        full, rem = divmod(self.run, self.m)
        one = [self.m] * full + ([rem] if rem else [])
        return np.tile(np.asarray(one, dtype=np.int64), self.segments)

    def kept(self) -> np.ndarray:
        """Kept (compressed) length of every group: min(N, length)."""
        return np.minimum(self.lengths(), self.n)

    @property
    def dense_len(self) -> int:
        return self.run * self.segments

    @property
    def kept_len(self) -> int:
        full, rem = divmod(self.run, self.m)
        return self.segments * (full * self.n + min(self.n, rem))


def ff_groups(shape, p: NM) -> Groups:
    """Reduction groups of FF (along C_in per (kh, kw)) for a weight of ``shape``."""
    if len(shape) == 2:
        return Groups(shape[1], 1, p.n, p.m)
    return Groups(shape[1], shape[2] * shape[3], p.n, p.m)


def bp_groups(shape, p: NM) -> Groups:
    """Reduction groups of BP (along C_out) for a weight of ``shape``."""
    return Groups(shape[0], 1, p.n, p.m)


def compress(b: np.ndarray, mask: np.ndarray, groups: Groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N:M-compress the ``[K, N]`` operand ``b`` whose mask keeps min(N, g) per group per column.

    Returns ``(values [Kc, N], index [Kc, N], group_start [Kc])``: kept entry
    ``kc`` of column ``j`` is ``b[group_start[kc] + index[kc, j], j]``; kept
    entries of a group appear in ascending position.
    """
    k, ncols = b.shape
    if k != groups.dense_len or mask.shape != b.shape:
        raise ParameterError(f"compress: operand {b.shape} / mask {mask.shape} do not match "
                             f"groups of total length {groups.dense_len}")
    lens, kept = groups.lengths(), groups.kept()
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    kc = int(kept.sum())
    vals = np.zeros((kc, ncols), dtype=b.dtype)
    idx = np.zeros((kc, ncols), dtype=np.int64)
    gstart = np.repeat(starts, kept)
    # Kept positions inside a group in ascending order: stable sort on ~mask.
    pos_in_group = np.arange(k) - np.repeat(starts, lens)
    out = 0
    for g_len in np.unique(lens):
        sel = np.nonzero(lens == g_len)[0]
        nk = int(min(groups.n, g_len))
        rows = starts[sel][:, None] + np.arange(g_len)[None, :]          # [G, g_len]
        mk = mask[rows]                                                    # [G, g_len, N]
        if not np.all(mk.sum(axis=1) == nk):
            raise ParameterError(f"compress: mask does not keep exactly {nk} of every group of {g_len}")
        order = np.argsort(~mk, axis=1, kind="stable")[:, :nk, :]          # [G, nk, N]
        src = np.take_along_axis(rows[:, :, None].repeat(ncols, 2), order, axis=1)
        dst = (np.cumsum(np.concatenate([[0], kept[:-1]]))[sel])[:, None] + np.arange(nk)[None, :]
        vals[dst] = np.take_along_axis(b, src.reshape(-1, ncols), axis=0).reshape(len(sel), nk, ncols)
        idx[dst] = pos_in_group[src]
        out += len(sel) * nk
    assert out == kc
    return vals, idx, gstart
