"""Tuning the non-matmul functions of a model: softmax, layer norm, attention bmm, permutes,
the layout transposes around the feature-major matmuls ("sites", ``backends/te/sites.py``).

- ``graph_sites(g, target)``: the sites ``compile_graph`` builds for the graph (lowered, not built);
- ``SiteSpace``: the knob assignments (``TE_KNOBS`` / ``TRANSPOSE_KNOBS``, declared by the
  schedules) that give *different* scheduled functions for this site (structural hash), the
  default (the knobs' defaults: the rules, what compile builds without a database) first;
- ``tune_sites``: every distinct assignment measured (the spaces are small: at most 9) by
  the runner, a batch of sites per process; each kernel checked against the site's reference
  (the IR's torch semantics in float64) before it is timed; then the best and the default
  re-measured interleaved when they differ (a confirmation, as for matmuls);
- ``site_key`` / ``best_knobs``: the database key of a site, and the knobs ``sparsec compile``
  uses (the fastest configuration with no failed check in any record).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

from sparsec.passes.autotune.db import CONFIRM, INCUMBENT, Record, TuningDB, TuningKey, canon_knobs


def graph_sites(g, target=None) -> list:
    """The tunable sites of ``g`` (after format selection or not: sites do not depend on formats)."""
    from sparsec.backends.llvm.compile import compile_graph
    from sparsec.passes.fuse import fuse_epilogues

    return [s for s in compile_graph(fuse_epilogues(g), target, lower_only=True).sites if s.count > 0]


def site_key(site, target_sig: str, features: str, versions_: str) -> TuningKey:
    shape, dtype = site.output
    return TuningKey(f"te:{site.op}", tuple(int(x) for x in shape), dtype, site.kind, (("site", site.key),),
                     "-", target_sig, features, versions_)


def best_knobs(db: TuningDB, key: TuningKey) -> Record | None:
    """The fastest configuration of ``key`` none of whose records failed, among the confirmation
    measurements when there are some (``TuningDB.best``)."""
    return db.best(key)


class SiteSpace:
    def __init__(self, site, target=None):
        from sparsec.backends.te.schedule import TE_KNOBS, TRANSPOSE_KNOBS

        self.site = site
        self.knobs = TRANSPOSE_KNOBS if site.kind == "transpose" else TE_KNOBS
        self.default = {k.name: k.default for k in self.knobs}
        self.configs = self._distinct(target)

    def _schedule(self, knobs, target):
        import tvm

        if self.site.kind == "transpose":
            from sparsec.backends.llvm.compile import transpose_func
            return transpose_func(*self.site.func_json, knobs=knobs)
        from sparsec.backends.te.schedule import schedule_cpu
        return schedule_cpu(tvm.ir.load_json(self.site.func_json), target, knobs=knobs)

    def _distinct(self, target) -> list[dict]:
        """Knob assignments that schedule to different TIR (the default first)."""
        import tvm_ffi

        out, seen = [], set()
        names = [k.name for k in self.knobs]
        combos = [self.default] + [dict(zip(names, vals)) for vals in
                                   itertools.product(*(k.candidates for k in self.knobs))]
        for kn in combos:
            try:
                h = tvm_ffi.structural_hash(self._schedule(kn, target))
            except Exception:      # noqa: BLE001 - a value the schedule refuses: not in the space
                continue
            if h not in seen:
                seen.add(h)
                out.append(dict(kn))
        return out


@dataclass
class SiteResult:
    site: object
    space: int
    trials: int
    default_s: float | None
    best_s: float | None
    best_knobs: dict | None
    statuses: dict = field(default_factory=dict)


def tune_sites(sites: list, runner, db: TuningDB, target=None, deadline: float | None = None,
               batch_configs: int = 32, progress: Callable[[dict], None] | None = None) -> list[SiteResult]:
    """Measure every distinct knob assignment of each tunable site (resumable: the database's
    configurations are not measured again), most called sites first; confirm the winners."""
    from sparsec.passes.autotune.space import host_features, target_signature, versions

    progress = progress or (lambda info: None)
    tsig = getattr(runner, "target_sig", None) or target_signature(target)
    feats, vers = runner.features, versions()
    sites = sorted((s for s in sites if s.tunable), key=lambda s: -s.count)
    spaces = {s.key: SiteSpace(s, target) for s in sites}
    keys = {s.key: site_key(s, tsig, feats, vers) for s in sites}
    todo = [(s, kn) for s in sites for kn in spaces[s.key].configs if db.measured(keys[s.key], kn) is None]
    done = 0
    state = {"stage": "sites", "trials": 0, "total": len(todo)}
    progress(dict(state))

    def record(batch, results, runner_tag=""):
        for (s, kn), r in zip(batch, results):
            if r.status == "skipped":
                continue
            tag = runner_tag
            if tag == CONFIRM and canon_knobs(kn) == canon_knobs(spaces[s.key].default):
                tag = INCUMBENT        # the default a tuned schedule must beat (TuningDB.best)
            db.append(Record(keys[s.key], kn, r.status, r.time_s, r.times_s, r.error, r.runner + tag))

    def run(batch, tag=""):
        uniq = list(dict.fromkeys(s.key for s, _ in batch))
        idx = {k: i for i, k in enumerate(uniq)}
        by_key = {s.key: s for s, _ in batch}
        res = runner.run_sites([by_key[k] for k in uniq], [(idx[s.key], kn) for s, kn in batch])
        record(batch, res, tag)
        return res

    i = 0
    while i < len(todo) and not (deadline is not None and time.time() >= deadline):
        batch = todo[i:i + batch_configs]
        # keep a site's configurations in one batch (they are timed interleaved)
        while i + len(batch) < len(todo) and todo[i + len(batch)][0] is batch[-1][0]:
            batch.append(todo[i + len(batch)])
        run(batch)
        i += len(batch)
        done += len(batch)
        state["trials"] = done
        progress(dict(state))
    # confirmation: where the best is not the default, both re-measured interleaved
    confirm = []
    for s in sites:
        b = best_knobs(db, keys[s.key])
        d = spaces[s.key].default
        if b is not None and canon_knobs(b.knobs) != canon_knobs(d):
            confirm += [(s, d), (s, dict(b.knobs))]
    if confirm and not (deadline is not None and time.time() >= deadline):
        for j in range(0, len(confirm), batch_configs):
            run(confirm[j:j + batch_configs], CONFIRM)
    out = []
    for s in sites:
        recs = db.for_key(keys[s.key])
        d = spaces[s.key].default
        dts = [r.time_s for r in recs if r.ok and canon_knobs(r.knobs) == canon_knobs(d)]
        b = best_knobs(db, keys[s.key])
        statuses = {}
        for r in recs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        out.append(SiteResult(s, len(spaces[s.key].configs), sum(1 for bb, _ in todo if bb is s),
                              min(dts) if dts else None, b.time_s if b else None,
                              dict(b.knobs) if b else None, statuses))
    return out


def site_knobs_for(db: TuningDB, target=None, features: str | None = None) -> Callable:
    """The ``compile_graph(te_knobs_for=...)`` hook: a site's best correct knobs, or None."""
    from sparsec.passes.autotune.space import host_features, target_signature, versions

    tsig, feats, vers = target_signature(target), features or host_features(), versions()

    def lookup(site) -> dict | None:
        rec = best_knobs(db, site_key(site, tsig, feats, vers))
        return dict(rec.knobs) if rec is not None else None
    return lookup
