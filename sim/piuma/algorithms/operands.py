"""The operands in the layouts the algorithms read, and the partial products.

Layout assumption (all algorithms): a non-zero is one 8-byte word (32-bit
index + fp32 value); a row or column extent is two 8-byte pointer words.
Functional values are computed in float64.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp

from sparsec.errors import ParameterError

# Partial products materialised at once when expanding (bounds memory).
CHUNK_FLOPS = 1 << 22


def canonical(M, name: str) -> sp.csr_matrix:
    """CSR, float64, sorted and duplicate-free (duplicates are summed)."""
    if not sp.issparse(M):
        M = sp.csr_matrix(np.asarray(M, dtype=float))
    M = sp.csr_matrix(M, dtype=np.float64, copy=True)
    M.sum_duplicates()
    M.sort_indices()
    if M.ndim != 2:
        raise ParameterError(f"{name}: expected a matrix, got {M.ndim} dimensions")
    return M


class Operands:
    def __init__(self, A, B):
        self.A = canonical(A, "A")
        self.B = canonical(B, "B")
        if self.A.shape[1] != self.B.shape[0]:
            raise ParameterError(f"A is {self.A.shape[0]}x{self.A.shape[1]} but B is "
                                 f"{self.B.shape[0]}x{self.B.shape[1]}: A's columns must equal B's rows")
        self.M, self.K = self.A.shape
        self.N = self.B.shape[1]
        self.a_len = np.diff(self.A.indptr)                    # per row of A
        self.b_len = np.diff(self.B.indptr)                    # per row of B
        self.anz_row = np.repeat(np.arange(self.M), self.a_len)
        self.anz_k = self.A.indices.astype(np.int64)
        self.anz_flops = self.b_len[self.anz_k]                # partials per A non-zero
        self.row_flops = np.bincount(self.anz_row, weights=self.anz_flops,
                                     minlength=self.M).astype(np.int64)
        self.flops = int(self.row_flops.sum())

    @cached_property
    def Bc(self) -> sp.csc_matrix:
        return self.B.tocsc()

    @cached_property
    def Acsc(self) -> sp.csc_matrix:
        return self.A.tocsc()

    def row_chunks(self):
        """Row ranges [r0, r1) of at most ~CHUNK_FLOPS partial products each."""
        csum = np.concatenate([[0], np.cumsum(self.row_flops)])
        r0 = 0
        while r0 < self.M:
            r1 = int(np.searchsorted(csum, csum[r0] + CHUNK_FLOPS, side="right")) - 1
            r1 = min(max(r1, r0 + 1), self.M)
            yield r0, r1
            r0 = r1

    def partials(self, r0: int, r1: int):
        """Partial products of rows [r0, r1) in Gustavson order (row, then A's
        non-zeros in column order, then B's row in column order).

        Returns (anz, row, col, val): the generating A non-zero (global index),
        output row, output column and value of each partial product.
        """
        p0, p1 = self.A.indptr[r0], self.A.indptr[r1]
        cnt = self.anz_flops[p0:p1]
        anz = np.repeat(np.arange(p0, p1), cnt)
        start = np.cumsum(cnt) - cnt
        bpos = self.B.indptr[self.anz_k[anz]] + (np.arange(anz.size) - np.repeat(start, cnt))
        row = self.anz_row[anz]
        col = self.B.indices[bpos].astype(np.int64)
        val = self.A.data[anz] * self.B.data[bpos]
        return anz, row, col, val
