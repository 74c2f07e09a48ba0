"""Choosing each weight's storage format by predicted (or measured) time.

``select_formats(g, format, pattern, cost, measure)`` packs every prunable
weight. ``--format dense|csr|bitmap|nm|bsr|groupquant`` forces a format;
``auto`` (the default) takes, among the candidates that represent the weight
*exactly* (dense, CSR, bitmap, BSR at several block shapes, N:M when the weight
follows N:M; GroupQuant only when asked for, as it is lossy), the one with the
least time predicted by the cost model (``sparsec.passes.cost``) for the
layer's token count.

No-regression guarantee: dense is always a candidate, and a sparse format is
chosen only when predicted faster than dense by its *required margin*: at
least ``NO_REGRESSION_MARGIN`` (10%), widened to the calibrated model's
measured error for that format and regime (``no_regression_margin``: by
how much the model overstated the format's gain over dense on the shapes
calibration held out). So ``auto`` never picks a format
predicted slower than dense, nor one whose predicted gain is inside the
model's error for that format and regime. With ``measure`` the best predicted
candidates and dense are timed on the real kernels and the fastest measured
wins. Every decision, with every candidate's prediction, is recorded in a
``Choice`` (the explain report).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from sparsec.ir.errors import ParameterError
from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant, SparseFormat, matrix_dims
from sparsec.ir.graph import Graph
from sparsec.passes.prune import Pattern, parse_pattern
from sparsec.passes.sparsify import prunable_weights

FORMAT_CHOICES = ("auto", "dense", "csr", "bitmap", "nm", "bsr", "groupquant")
NM_CANDIDATES = ((1, 4), (2, 4), (1, 8), (2, 8), (4, 8), (4, 16), (8, 16))
BLOCK_CANDIDATES = ((16, 16), (8, 8), (4, 4), (1, 16), (16, 1), (2, 2))


@dataclass
class Choice:
    weight: str
    format: str
    params: dict
    density: float
    reason: str
    tokens: int = 0
    candidates: list = field(default_factory=list)   # [{format, params, bytes, predicted_s, measured_s}]


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
    raise ParameterError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMAT_CHOICES)}")


def pack_choice(w: torch.Tensor, ch: Choice) -> SparseFormat:
    cls = {"dense": Dense, "csr": CSR, "bitmap": Bitmap, "nm": NM, "bsr": BSR, "groupquant": GroupQuant}[ch.format]
    return cls.from_dense(w, **ch.params)


AUTO_BLOCKS = ((4, 4), (8, 8), (16, 1), (1, 16))
# A sparse format must be predicted at least this much faster than dense to be chosen
# (the cost model's typical error; measured choices with --measure need no margin).
NO_REGRESSION_MARGIN = 1.10


def no_regression_margin(cost, fmt: str, params: dict, tokens: int, variant: str | None = None,
                         cols: int | None = None) -> float:
    """How much faster than dense ``fmt`` must be predicted to be chosen over it (>= 1.10).

    With a calibrated model: ``exp(vs_dense)`` of the fit used for ``fmt`` at these tokens, the
    calibrated (held-out) amount by which the model overstated that format's gain over dense
    (``sparsec.passes.cost.calibrate.cv_error``); the flat ``NO_REGRESSION_MARGIN`` where the
    model has no measured error (analytic, or other cost models). For a layer whose K (``cols``)
    is beyond the largest K calibrated, at least ``exp(extrap_vs_dense)``: the overstatement the
    fit showed when it was itself made to extrapolate in K (``calibrate.extrapolation_error``).
    """
    import math

    from sparsec.passes.cost.model import variant_of

    band = getattr(cost, "error_band", None)
    variant = variant_of(fmt, params) if variant is None else variant
    e = band(fmt, variant, tokens) if band is not None else None
    if not e or "vs_dense" not in e:
        return NO_REGRESSION_MARGIN
    m = max(NO_REGRESSION_MARGIN, math.exp(e["vs_dense"]))
    beyond = cols is not None and getattr(cost, "cols_max", 0) and cols > cost.cols_max
    if beyond and "extrap_vs_dense" in e:
        m = max(m, math.exp(e["extrap_vs_dense"]))
    return m


def _variant_note(c: dict) -> str:
    p = c.get("params") or {}
    return " " + ",".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                          for k, v in p.items()) if p else ""


def auto_candidates(w2: torch.Tensor, pattern: Pattern | None, lossy_ok: bool) -> list[tuple[str, dict]]:
    cands = [("dense", {}), ("csr", {}), ("bitmap", {"tile": (8, 8)})]
    blocks = list(AUTO_BLOCKS)
    if pattern is not None and pattern.kind == "block" and pattern.block not in blocks:
        blocks.append(pattern.block)
    cands += [("bsr", {"block": b}) for b in blocks]
    nm = (pattern.n, pattern.m) if pattern is not None and pattern.kind == "nm" else detect_nm(w2)
    if nm is not None and detect_nm_exact(w2, *nm):
        cands.append(("nm", {"n": nm[0], "m": nm[1]}))
    if lossy_ok:
        g = pattern.group if pattern is not None and pattern.kind == "group" else 32
        cands.append(("groupquant", {"group": g, "bits": 4}))
    return cands


def detect_nm_exact(w2: torch.Tensor, n: int, m: int) -> bool:
    rows, k = w2.shape
    g = -(-k // m)
    p = torch.zeros(rows, g * m, dtype=torch.bool)
    p[:, :k] = w2 != 0
    counts = p.reshape(rows, g, m).sum(-1)
    return counts.numel() == 0 or int(counts.max()) <= n


def weight_tokens(g: Graph) -> dict[str, int]:
    """Tokens (the non-reduction extent) each weight's matmul runs with, from the graph's shapes."""
    types = g.types()
    out = {}
    for node, const in g.weights():
        o = const.value.shape[0]
        out[const.name] = max(out.get(const.name, 0), max(1, types[node.name].numel // max(o, 1)))
    return out


def select_formats(g: Graph, fmt: str = "auto", pattern: str | Pattern | None = None, cost=None,
                   measure: Callable | None = None) -> tuple[Graph, list[Choice]]:
    """Pack each prunable weight; see the module docstring. ``measure(fmt_obj, tokens) -> s``."""
    from sparsec.passes.cost.model import Stats

    if fmt not in FORMAT_CHOICES:
        raise ParameterError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMAT_CHOICES)}")
    pat = parse_pattern(pattern) if pattern is not None else None
    lossy_ok = fmt == "groupquant" or (pat is not None and pat.kind == "group")
    tokens = weight_tokens(g)
    choices = []
    for name in prunable_weights(g):
        c = g.constant(name)
        w = c.dense()
        if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            continue
        rows, k = matrix_dims(tuple(w.shape))
        w2 = w.reshape(rows, k)
        t = tokens.get(name, 1)
        if fmt == "auto" and not (pat is not None and pat.kind == "group"):
            ch = _auto(name, w2, t, pat, lossy_ok, cost, measure)
        else:
            ch = choose(name, w, fmt, pat)
            ch.tokens = t
            if cost is not None:
                for cand_name, params in [(ch.format, ch.params), ("dense", {})]:
                    st = Stats.estimate(w2, cand_name, params)
                    obj = (pack_choice(w2, Choice(name, cand_name, params, 0.0, ""))
                           if getattr(cost, "needs_packed", False) else st)
                    ch.candidates.append({"format": cand_name, "params": _jsonable(params), "bytes": st.nbytes,
                                          "predicted_s": cost.predict(obj, t)})
        choices.append(ch)
        if ch.format != "dense" or not isinstance(c.value, Dense):
            g = g.with_constant(name, pack_choice(w, ch))
    return g, choices


def _jsonable(params: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def _auto(name, w2, t, pat, lossy_ok, cost, measure) -> Choice:
    from sparsec.passes.cost.model import Stats

    if cost is None:
        raise ParameterError("select_formats(auto) needs a cost model")
    density = float(torch.count_nonzero(w2)) / max(w2.numel(), 1)
    cands = []
    packed = getattr(cost, "needs_packed", False)     # e.g. the ARM static estimate reads real kernels
    for cname, params in auto_candidates(w2, pat, lossy_ok):
        st = Stats.estimate(w2, cname, params)
        obj = pack_choice(w2, Choice(name, cname, params, density, "")) if packed else st
        cands.append({"format": cname, "params": _jsonable(params), "bytes": st.nbytes,
                      "predicted_s": cost.predict(obj, t), "_params": params, "_variant": st.variant})
    cands.sort(key=lambda c: c["predicted_s"])
    dense = next(c for c in cands if c["format"] == "dense")
    for c in cands:
        if c is not dense:
            c["required_margin"] = round(no_regression_margin(cost, c["format"], c["_params"], t,
                                                              c["_variant"], int(w2.shape[1])), 4)
    # a predicted gain inside the model's error band is not worth the risk of a regression
    safe = [c for c in cands if c is dense or c["predicted_s"] * c["required_margin"] <= dense["predicted_s"]]
    best = safe[0]
    how = "predicted"
    margin_note = ""
    if best is not cands[0]:
        top = cands[0]
        margin_note = (f" ({top['format']}{_variant_note(top)} predicted "
                       f"{dense['predicted_s'] / top['predicted_s']:.2f}x faster than dense, below its "
                       f"{top['required_margin']:.2f}x margin)")
    if measure is not None:
        margin_note = ""        # measured: the fastest measured wins, no margin
        timed = cands[:2] + ([dense] if dense not in cands[:2] else [])
        for c in timed:
            c["measured_s"] = measure(pack_choice(w2, Choice(name, c["format"], c["_params"], density, "")), t)
        best = min(timed, key=lambda c: c["measured_s"])
        how = "measured"
    key = "measured_s" if how == "measured" else "predicted_s"
    if best is dense:
        reason = (f"dense kept ({how} {dense[key] * 1e6:.1f} us){margin_note}" if margin_note else
                  f"dense is fastest ({how} {dense[key] * 1e6:.1f} us)")
    else:
        reason = (f"lowest {how} time: {best[key] * 1e6:.1f} us vs dense {dense[key] * 1e6:.1f} us "
                  f"({dense[key] / best[key]:.2f}x){margin_note}")
    for c in cands:
        c.pop("_params", None)
        c.pop("_variant", None)
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in best["params"].items()}
    return Choice(name, best["format"], params, density, reason, t, cands)
