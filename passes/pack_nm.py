"""Pack every prunable weight that follows an N:M pattern exactly into the ``NM`` format.

BDWP training (the torch.compile backend's ``train="bdwp"``) fixes the format
of its masked weights: the forward weight ``W ⊙ mask_ff`` is N:M along C_in
and the backward-data weight ``(W ⊙ mask_bp)ᵀ`` is N:M along C_out, each the
reduction dimension of its ``linear``. Both run the N:M kernel family, with no
cost-model choice in between (which would pick dense for small layers and
change the kernels with every mask refresh). Weights that do not follow the
pattern stay as they are.
"""
from __future__ import annotations

from sparsec.ir.errors import FormatError
from sparsec.ir.formats import NM, Dense
from sparsec.ir.graph import Graph
from sparsec.passes.sparsify import prunable_weights


def pack_nm(g: Graph, n: int, m: int) -> Graph:
    for name in prunable_weights(g):
        c = g.constant(name)
        if not isinstance(c.value, Dense) or len(c.value.shape) != 2 or not c.value.dtype.is_floating_point:
            continue
        try:
            packed = NM.from_dense(c.dense(), n=n, m=m)
        except FormatError:
            continue
        g = g.with_constant(name, packed)
    return g
