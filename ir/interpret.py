"""The reference interpreter: runs a graph with torch semantics.

It is the executable spec that every backend, the torch.compile backend and
the simulators' functional modes are compared with. Sparse constants are
unpacked with ``to_dense()`` (GroupQuant: the dequantised weight).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sparsec.ir.errors import ModelError
from sparsec.ir.graph import Graph
from sparsec.ir.ops import evaluate
from sparsec.ir.types import TensorType


def check_inputs(g: Graph, inputs: Sequence) -> list[torch.Tensor]:
    if len(inputs) != len(g.inputs):
        raise ModelError(f"graph {g.name} takes {len(g.inputs)} inputs "
                         f"({', '.join('%' + v.name for v in g.inputs)}), got {len(inputs)}")
    out = []
    for v, x in zip(g.inputs, inputs):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"input %{v.name}: expected a tensor, got {type(x).__name__}")
        t = TensorType.of(x)
        if t != v.type:
            raise ModelError(f"input %{v.name}: expected {v.type}, got {t}")
        out.append(x)
    return out


def interpret(g: Graph, *inputs, constants: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """Run ``g`` on ``inputs``; ``constants`` may carry already-unpacked constants (a cache)."""
    env: dict[str, torch.Tensor] = dict(zip((v.name for v in g.inputs), check_inputs(g, inputs)))
    for c in g.constants:
        env[c.name] = constants[c.name] if constants and c.name in constants else c.dense()
    with torch.no_grad():
        for n in g.nodes:
            try:
                env[n.name] = evaluate(n.op, [env[i] for i in n.inputs], n.attr)
            except Exception as exc:
                raise ModelError(f"interpreter: {n.where()}: {exc}") from exc
    return tuple(env[o] for o in g.outputs)
