"""FL: the numbers SAT computes for a training step under BDWP (no timing).

A GEMM ``Out = A · B`` with B N:M-compressed along K is computed the way the
array does it (gather of the kept positions' A values, multiply by the
compressed values) rather than by a dense product, so a test against numpy's
dense ``A @ (B * mask)`` checks the compressed representation too.
Conv layers use the (kh, kw, C_in) implicit-GEMM layout of ``passes.bdwp``.
"""
from __future__ import annotations

import numpy as np

from sparsec.ir.errors import ParameterError
from sparsec.passes import bdwp
from sparsec.sim.sat.workloads import Layer


def nm_gemm(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, groups: bdwp.Groups) -> np.ndarray:
    """``a [M, K] · b [K, N]`` with b's kept entries only (``mask`` None or groups dense: plain GEMM)."""
    if a.shape[1] != b.shape[0]:
        raise ParameterError(f"nm_gemm: A {a.shape} and B {b.shape} do not chain")
    if mask is None or groups.n == groups.m:
        return a @ b
    vals, idx, gstart = bdwp.compress(b, mask, groups)
    gathered = a[:, gstart[:, None] + idx]                 # [M, Kc, N]
    return np.einsum("mkn,kn->mn", gathered, vals)


def im2col(x: np.ndarray, layer: Layer) -> np.ndarray:
    """``[B, C_in, H, W]`` -> ``[B·Ho·Wo, kh·kw·C_in]`` with columns ordered (kh, kw, C_in)."""
    b = x.shape[0]
    p, s = layer.pad, layer.stride
    ho, wo = layer.out_hw()
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.empty((b, ho, wo, layer.kh, layer.kw, layer.cin), dtype=x.dtype)
    for i in range(layer.kh):
        for j in range(layer.kw):
            cols[:, :, :, i, j, :] = xp[:, :, i:i + s * ho:s, j:j + s * wo:s].transpose(0, 2, 3, 1)
    return cols.reshape(b * ho * wo, -1)


def col2im(cols: np.ndarray, layer: Layer, batch: int) -> np.ndarray:
    """Adjoint of ``im2col``: scatter-add ``[B·Ho·Wo, kh·kw·C_in]`` back to ``[B, C_in, H, W]``."""
    p, s = layer.pad, layer.stride
    ho, wo = layer.out_hw()
    c = cols.reshape(batch, ho, wo, layer.kh, layer.kw, layer.cin)
    xp = np.zeros((batch, layer.cin, layer.h + 2 * p, layer.w + 2 * p), dtype=cols.dtype)
    for i in range(layer.kh):
        for j in range(layer.kw):
            xp[:, :, i:i + s * ho:s, j:j + s * wo:s] += c[:, :, :, i, j, :].transpose(0, 3, 1, 2)
    return xp[:, :, p:p + layer.h, p:p + layer.w]


def layer_operands(layer: Layer, x: np.ndarray, w: np.ndarray, dy: np.ndarray, pattern) -> dict:
    """The three phase GEMMs' operands ``{phase: (A, B, mask, groups)}`` of one layer."""
    p = bdwp.parse_nm(pattern)
    if layer.kind == "conv2d":
        xcol = im2col(x, layer)
        dym = dy.transpose(0, 2, 3, 1).reshape(-1, layer.cout)
    else:
        xcol, dym = x, dy
    bmat = bdwp.weight_matrix(w)                            # [K, C_out]
    if p.dense:
        ff = bp = None
        gff, gbp = bdwp.Groups(layer.k, 1, 1, 1), bdwp.Groups(layer.cout, 1, 1, 1)
    else:
        fm, bm = bdwp.masks(w, p)
        ff, bp = bdwp.weight_matrix(fm), bdwp.weight_matrix(bm).T
        gff, gbp = bdwp.ff_groups(w.shape, p), bdwp.bp_groups(w.shape, p)
    return {"FF": (xcol, bmat, ff, gff),
            "BP": (dym, np.ascontiguousarray(bmat.T), bp, gbp),
            "WU": (np.ascontiguousarray(xcol.T), dym, None, bdwp.Groups(dym.shape[0], 1, 1, 1))}


def finish(layer: Layer, phase: str, out: np.ndarray, batch: int) -> np.ndarray:
    """A phase GEMM's output in the layer's own layout (Y / dX / dW)."""
    if layer.kind == "linear":
        return out.T if phase == "WU" else out
    ho, wo = layer.out_hw()
    if phase == "FF":
        return out.reshape(batch, ho, wo, layer.cout).transpose(0, 3, 1, 2)
    if phase == "BP":
        return col2im(out, layer, batch)
    return out.reshape(layer.kh, layer.kw, layer.cin, layer.cout).transpose(3, 2, 0, 1)


def train_step(layer: Layer, x: np.ndarray, w: np.ndarray, dy: np.ndarray, pattern="2:8") -> dict:
    """Y (FF with the FF mask), dX (BP with the BP mask), dW (dense WU) of one layer."""
    ops = layer_operands(layer, x, w, dy, pattern)
    batch = x.shape[0] if layer.kind == "conv2d" else 1
    return {ph: finish(layer, ph, nm_gemm(*ops[ph]), batch) for ph in ("FF", "BP", "WU")}
