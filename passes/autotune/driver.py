"""Tuning a whole model: its sparse layers grouped by what their kernels depend on.

Layers whose weights have the same shape, token count, dtype and density
share kernels' timings (the database key holds the format's stored fraction,
not the values), so each group is tuned once on its first weight. The budget
(trials and/or seconds) is split evenly over the groups that still need work.
Before them, the graph's non-matmul functions (``te.py``: softmax, layer norm,
attention bmm, permutes, transposes) are tuned; their spaces are small.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from sparsec.ir.formats import matrix_dims
from sparsec.ir.graph import Graph
from sparsec.passes.autotune.search import Layer, LayerResult, Tuner


def layers_of(g: Graph, pattern=None, fmt: str = "auto") -> list[Layer]:
    """One ``Layer`` per group of prunable weights with equal (shape, tokens, dtype, density)."""
    from sparsec.passes.prune import parse_pattern
    from sparsec.passes.select import weight_tokens
    from sparsec.passes.sparsify import prunable_weights

    pat = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    lossy = fmt == "groupquant" or (pat is not None and pat.kind == "group")
    tokens = weight_tokens(g)
    groups: dict[tuple, Layer] = {}
    for name in prunable_weights(g):
        w = g.constant(name).dense()
        if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            continue
        rows, k = matrix_dims(tuple(w.shape))
        w2 = w.reshape(rows, k)
        t = tokens.get(name, 1)
        density = float(torch.count_nonzero(w2)) / max(w2.numel(), 1)
        key = (rows, k, t, str(w2.dtype), round(density, 2))
        if key not in groups:
            groups[key] = Layer(f"{rows}x{k} T={t} d={density:.2f}", w2.contiguous(), t, pat, lossy, [])
        groups[key].weights.append(name)
    return list(groups.values())


def prepare_graph(model, example_inputs=None, pattern: str | None = None, sparsity: float | None = None,
                  spec: str | None = None) -> Graph:
    """The model's graph after canonicalisation and pruning: the weights ``sparsec compile`` will select for."""
    from sparsec.backends.llvm.pipeline import cpu_pipeline
    from sparsec.frontends import import_model, import_module
    from sparsec.passes.pipeline import run_passes

    if sparsity is not None and pattern is None:
        pattern = "unstructured"
    if isinstance(model, str):
        g, _ = import_model(model)
    else:
        g = import_module(model, tuple(example_inputs))
    passes = cpu_pipeline(pattern, sparsity, "auto", [], spec=spec)
    cut = [i for i, (name, _) in enumerate(passes) if name == "select_formats"][0]
    return run_passes(g, passes[:cut])


def tune_graph(g: Graph, tuner: Tuner, pattern=None, trials: int | None = None, budget_s: float | None = None,
               on_layer: Callable[[int, int, Layer], None] | None = None, sites: bool = True,
               sites_share: float = 0.35, site_results: list | None = None,
               on_sites: Callable[[dict], None] | None = None) -> list[LayerResult]:
    """Tune the graph's non-matmul functions first (``sites``: at most ``sites_share`` of the
    budget; their spaces are small), then its sparse layers with the rest. ``site_results``
    (a list) receives the sites' ``SiteResult``s."""
    t0 = time.time()
    if sites and hasattr(tuner.runner, "run_sites"):      # RPC runners measure matmuls only
        from sparsec.passes.autotune.te import graph_sites, tune_sites

        dl = None if budget_s is None else t0 + budget_s * sites_share
        res = tune_sites(graph_sites(g, tuner.target), tuner.runner, tuner.db, tuner.target, deadline=dl,
                         progress=on_sites)
        if site_results is not None:
            site_results.extend(res)
        if budget_s is not None:
            budget_s = max(1.0, budget_s - (time.time() - t0))
    layers = layers_of(g, pattern)
    out = []
    t0 = time.time()
    for i, layer in enumerate(layers):
        left = len(layers) - i
        per_trials = None if trials is None else max(1, (trials - sum(r.trials for r in out)) // left)
        deadline = None
        if budget_s is not None:
            deadline = time.time() + max(1.0, (budget_s - (time.time() - t0)) / left)
        if on_layer:
            on_layer(i, len(layers), layer)
        out.append(tuner.tune_layer(layer, trials=per_trials, deadline=deadline))
    return out
