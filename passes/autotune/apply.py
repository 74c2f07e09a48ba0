"""Using the tuning database in `sparsec compile`.

- ``knobs_for(db, target)``: the ``compile_graph`` hook; for a packed weight
  and token count, the knobs of the fastest *correct* record with the same
  key (format, parameters, shape, stored fraction, target, machine, versions).
  Bias and activation epilogues are not part of the key: they are tuned on the
  plain matmul and applied to the fused kernel. Its ``.te`` attribute is the
  hook for the non-matmul functions (softmax, layer norm, bmm, transposes:
  ``passes/autotune/te.py``), which ``compile_graph`` picks up.
- ``tuned_selection(select_pass, choices, db, target)``: wraps the
  format-selection pass; for each weight it selected in ``auto`` mode, when
  the database has correct timings for the layer's dense kernel and at least
  one other candidate, the fastest tuned candidate wins (dense included, so
  tuning never picks a format measured slower than dense). The Choice records
  it (reason ``tuned``).
- ``default_db_path()``: ``$SPARSEC_TUNING_DB`` or ``<cache dir>/tuning.jsonl``.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from sparsec.passes.autotune.db import TuningDB, beats
from sparsec.passes.autotune.space import (
    Config, format_candidates, host_features, key_of_format, make_key, stored_fraction, target_signature,
    versions,
)


def default_db_path() -> str:
    from sparsec.passes.cost.calibrate import cache_dir

    return os.environ.get("SPARSEC_TUNING_DB") or os.path.join(cache_dir(), "tuning.jsonl")


def open_db(path: str | None = None) -> TuningDB | None:
    """The database at ``path`` (must exist), or at the default path if it exists, else None."""
    from sparsec.ir.errors import ParameterError

    if path is not None and not os.path.exists(path):
        raise ParameterError(f"tuning database {path} does not exist (run `sparsec autotune ... --db {path}`)")
    path = path or default_db_path()
    return TuningDB(path) if os.path.exists(path) else None


def knobs_for(db: TuningDB, target=None, features: str | None = None) -> Callable:
    tsig, feats, vers = target_signature(target), features or host_features(), versions()

    def lookup(fmt_obj, tokens: int) -> dict | None:
        rec = db.best(key_of_format(fmt_obj, tokens, tsig, feats, vers))
        return dict(rec.knobs) if rec is not None else None
    from sparsec.passes.autotune.te import site_knobs_for
    lookup.te = site_knobs_for(db, target, feats)     # compile_graph's te_knobs_for (non-matmul functions)
    return lookup


def tuned_choice(db: TuningDB, w2: torch.Tensor, tokens: int, pattern, lossy_ok: bool, tsig: str, feats: str,
                 vers: str):
    """``(format, params, record, dense record, records)`` of the fastest tuned candidate (``records``:
    ``(format, Config params) -> TuningDB.best`` of every tuned candidate), or None when not tuned."""
    shape = (w2.shape[0], w2.shape[1], int(tokens))
    dt = str(w2.dtype).replace("torch.", "")
    best, dense, recs = None, None, {}
    for f, p in format_candidates(w2, pattern, lossy_ok):
        rec = db.best(make_key(f, p, shape, dt, stored_fraction(w2, f, p), tsig, feats, vers))
        if rec is None:
            continue
        recs[(f, Config.make(f, p, {}).params)] = rec
        if f == "dense":
            dense = rec
        if best is None or rec.time_s < best[2].time_s:
            best = (f, p, rec)
    if best is None or dense is None or len(recs) < 2:     # dense and at least one sparse format tuned
        return None
    return best[0], best[1], best[2], dense, recs


def tuned_selection(select_pass: Callable, choices: list, db: TuningDB, target=None, fmt: str = "auto",
                    pattern=None) -> Callable:
    """``select_pass`` (a Graph -> Graph pass that appends Choices to ``choices``) with tuned formats winning."""
    from sparsec.passes.prune import parse_pattern
    from sparsec.passes.select import pack_choice

    tsig, feats, vers = target_signature(target), host_features(), versions()
    pat = parse_pattern(pattern) if isinstance(pattern, str) else pattern

    def run(g):
        n0 = len(choices)
        out = select_pass(g)
        if fmt != "auto":
            return out
        for ch in choices[n0:]:
            if ch.format == "groupquant":
                continue
            w = g.constant(ch.weight).dense()
            rows = w.shape[0]
            w2 = w.reshape(rows, -1)
            got = tuned_choice(db, w2, ch.tokens, pat, False, tsig, feats, vers)
            if got is None:
                continue
            f, p, rec, dense, recs = got
            t, dense_t = rec.time_s, dense.time_s
            params = Config.make(f, p, {}).params_dict
            same = f == ch.format and params == {k: tuple(v) if isinstance(v, list) else v
                                                  for k, v in ch.params.items()}
            sel = recs.get((ch.format, Config.make(ch.format, ch.params, {}).params))
            if not same and sel is not None and not beats(rec, sel):
                # the selection's own format was tuned too, and the faster one is not reliably faster
                ch.reason = (f"tuned: kept {ch.format} ({sel.time_s * 1e6:.1f} us): {f} "
                             f"{t * 1e6:.1f} us is within the measurement's spread")
                continue
            ch.reason = (f"tuned: {t * 1e6:.1f} us vs dense {dense_t * 1e6:.1f} us ({dense_t / t:.2f}x)"
                         + ("" if same else f"; selection alone picked {ch.format}"))
            if not same:
                ch.format, ch.params = f, params
                out = out.with_constant(ch.weight, pack_choice(w, ch))
        return out
    return run
