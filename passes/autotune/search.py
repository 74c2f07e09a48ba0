"""Searching one layer's space (formats × knobs) with a measurement runner.

Order of work for a layer (``Tuner.tune_layer``):

1. **Warm start from the analytic cost model**: every candidate format is
   ranked by ``CostModel.predict``; its default-knob configuration is measured
   first, in that order (this is also the "format selection with default
   schedules" baseline).
2. **Exhaustive** when what is left of the space fits the trial budget
   (formats in predicted order, so a cut-off budget still covered the
   promising ones).
3. Otherwise a **model-guided evolutionary search**: a population of the best
   measured configurations is mutated (one knob) and crossed (within a
   format); children are ranked by a learned surrogate of log-time (gradient
   boosted trees from scikit-learn when it is installed and there are enough
   samples, the cost model's prediction as one of its features; before that,
   the cost model alone) and the best, plus a few random ones for
   exploration, are measured.
4. **Confirmation**: the best few configurations and the baseline are
   re-measured interleaved in one batch; that measurement decides.

TVM's meta_schedule is not used for the search itself: its search space is
a schedule trace over one TIR block, while a sparse family's variants here
are different TIR programs (knobs select the algorithm, e.g. gemv vs token
tiles, unrolling, register blocking) that meta_schedule's feature extractor
and mutators do not describe; its XGBoost model also needs ``xgboost``, not
installed here.

Resuming: a configuration already in the database for the layer's key (same
machine, target, versions) is not measured again; it seeds the search.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from sparsec.passes.autotune.db import CONFIRM, INCUMBENT, Record, TuningDB, beats
from sparsec.passes.autotune.measure import MeasureResult
from sparsec.passes.autotune.space import (
    Config, FormatSpace, format_candidates, make_key, stored_fraction, versions,
)


@dataclass
class Layer:
    """One layer to tune: its (pruned) dense weight ``w2[O, K]``, tokens, and the weights it stands for."""

    name: str
    w2: torch.Tensor
    tokens: int
    pattern: object = None          # sparsec.passes.prune.Pattern or None
    lossy_ok: bool = False
    weights: list = field(default_factory=list)


@dataclass
class LayerResult:
    layer: Layer
    best: MeasureResult | None
    baseline: MeasureResult | None    # the cost model's favourite format, default knobs
    default_best: MeasureResult | None   # fastest format with default knobs
    trials: int                        # new measurements
    reused: int                        # configurations found in the database
    space_size: int
    results: list = field(default_factory=list)


def _beats(a: MeasureResult, b: MeasureResult) -> bool:
    return beats(Record(None, {}, "ok", a.time_s, list(a.times_s)), Record(None, {}, "ok", b.time_s, list(b.times_s)))


class Tuner:
    def __init__(self, db: TuningDB, runner, target=None, cost=None, batch_size: int = 12,
                 seed: int = 0, confirm: int = 3,
                 progress: Callable[[dict], None] | None = None):
        from sparsec.passes.autotune.space import target_signature

        self.db, self.runner = db, runner
        self.target = target
        self.target_sig = getattr(runner, "target_sig", None) or target_signature(target)
        self.features = runner.features
        self.versions = versions()
        self.cost = cost
        self.batch_size, self.confirm = batch_size, confirm
        self.rng = random.Random(seed)
        self.progress = progress or (lambda info: None)
        self._stored_cache: dict = {}

    # -- keys ---------------------------------------------------------------------------------
    def key(self, layer: Layer, c: Config):
        w2 = layer.w2
        return make_key(c.format, c.params_dict, (w2.shape[0], w2.shape[1], layer.tokens),
                        str(w2.dtype).replace("torch.", ""),
                        self._stored(layer, c.format, c.params), self.target_sig, self.features, self.versions)

    def _stored(self, layer, fmt, params):
        k = (id(layer), fmt, params)
        if k not in self._stored_cache:
            self._stored_cache[k] = stored_fraction(layer.w2, fmt, dict(params))
        return self._stored_cache[k]

    # -- the search ---------------------------------------------------------------------------
    def tune_layer(self, layer: Layer, trials: int | None = None, deadline: float | None = None) -> LayerResult:
        from sparsec.passes.cost.model import Stats

        self._stored_cache = {}
        cost = self.cost
        if cost is None:
            from sparsec.backends.llvm.pipeline import cost_model
            cost = self.cost = cost_model()
        fmts = format_candidates(layer.w2, layer.pattern, layer.lossy_ok)
        pred = {}
        for f, p in fmts:
            pred[(f, Config.make(f, p, {}).params)] = cost.predict(Stats.estimate(layer.w2, f, p), layer.tokens)
        fmts.sort(key=lambda fp: pred[(fp[0], Config.make(*fp, {}).params)])
        spaces = {}
        for f, p in fmts:
            try:
                s = FormatSpace(layer.w2, f, p, layer.tokens, self.target)
            except Exception:      # noqa: BLE001 - a format the families refuse for this layer
                continue
            spaces[(s.format, s.default().params)] = s
        size = sum(s.size for s in spaces.values())
        measured: dict[Config, MeasureResult] = {}
        reused = 0
        for s in spaces.values():
            for c in [s.default(), *(s.all() if s.size <= 256 else [])]:
                rec = self.db.measured(self.key(layer, c), c.knobs_dict)
                if rec is not None:
                    measured[c] = MeasureResult(c, rec.status, rec.time_s, rec.times_s, rec.error, rec.runner)
                    reused += 1
        new = 0
        budget = trials if trials is not None else math.inf
        state = {"layer": layer.name, "trials": 0, "budget": trials, "space": size, "best": None,
                 "best_label": "", "reused": reused}

        def best_ok():
            ok = [r for r in measured.values() if r.status == "ok"]
            return min(ok, key=lambda r: r.time_s) if ok else None

        def out_of_budget():
            return new >= budget or (deadline is not None and time.time() >= deadline)

        def measure(configs):
            nonlocal new
            configs = [c for c in dict.fromkeys(configs) if c not in measured]
            if not configs:
                return []
            room = budget - new
            configs = configs[:int(room)] if room != math.inf else configs
            results = self.runner.run(layer.w2, layer.tokens, configs)
            for r in results:
                if r.status == "skipped":
                    continue
                measured[r.config] = r
                new += 1
                self.db.append(Record(self.key(layer, r.config), r.config.knobs_dict, r.status, r.time_s,
                                      r.times_s, r.error, r.runner))
            b = best_ok()
            state.update(trials=new, best=b.time_s if b else None, best_label=b.config.label if b else "")
            self.progress(dict(state))
            return results

        self.progress(dict(state))
        # 1. warm start: default knobs of every format, in predicted order
        defaults = [s.default() for s in spaces.values()]
        for i in range(0, len(defaults), self.batch_size):
            if out_of_budget():
                break
            measure(defaults[i:i + self.batch_size])
        # 2./3. exhaustive or model-guided
        remaining = [c for s in spaces.values() for c in (s.all() if s.size <= 256 else [])
                     if c not in measured]
        exhaustive = all(s.size <= 256 for s in spaces.values()) and len(remaining) <= budget - new
        if exhaustive:
            for i in range(0, len(remaining), self.batch_size):
                if out_of_budget():
                    break
                measure(remaining[i:i + self.batch_size])
        else:
            stall = 0
            while not out_of_budget() and stall < 3:
                cands = self._propose(spaces, measured, pred, self.batch_size)
                if not cands:
                    break
                before = best_ok()
                measure(cands)
                after = best_ok()
                stall = stall + 1 if (before is not None and after is not None
                                      and after.time_s >= before.time_s * 0.99) else 0
        # 4. confirmation, interleaved in one batch
        # the selection pass alone: the cost model's favourite of *its* candidates, default knobs
        from sparsec.passes.select import auto_candidates
        sel = {(f, Config.make(f, p, {}).params) for f, p in auto_candidates(layer.w2, layer.pattern, layer.lossy_ok)}
        baseline_cfg = next((c for c in defaults if (c.format, c.params) in sel), defaults[0] if defaults else None)
        ok_defaults = [measured[c] for c in defaults if c in measured and measured[c].status == "ok"]
        default_best = min(ok_defaults, key=lambda r: r.time_s) if ok_defaults else None
        top = sorted((r for r in measured.values() if r.status == "ok"), key=lambda r: r.time_s)[:max(1, self.confirm)]
        finalists = list(dict.fromkeys([r.config for r in top]
                                       + ([baseline_cfg] if baseline_cfg in measured else [])
                                       + ([default_best.config] if default_best else [])))
        final = {}
        if len(finalists) > 1 and self.confirm > 0:
            for r in self.runner.run(layer.w2, layer.tokens, finalists):
                # the format's default knobs are the incumbent a tuned schedule must beat (TuningDB.best)
                tag = INCUMBENT if r.config in defaults else CONFIRM
                if r.status == "ok":
                    final[r.config] = r
                    self.db.append(Record(self.key(layer, r.config), r.config.knobs_dict, r.status, r.time_s,
                                          r.times_s, r.error, r.runner + tag))
                elif r.status in ("wrong", "error"):       # a flaky kernel is out, whatever it timed before
                    measured[r.config] = r
                    self.db.append(Record(self.key(layer, r.config), r.config.knobs_dict, r.status, None, [],
                                          r.error, r.runner + tag))
        pick = {c: final.get(c, measured[c]) for c in finalists if measured[c].status == "ok"}
        best = min(pick.values(), key=lambda r: r.time_s) if pick else best_ok()
        # a tuned configuration replaces the defaults only when it is reliably faster (db.beats)
        dflt_now = pick.get(default_best.config) if default_best else None
        if best is not None and dflt_now is not None and best is not dflt_now and not _beats(best, dflt_now):
            best = dflt_now
        base = pick.get(baseline_cfg) or measured.get(baseline_cfg)
        dflt = pick.get(default_best.config) if default_best else None
        return LayerResult(layer, best, base if base and base.status == "ok" else None, dflt or default_best,
                           new, reused, size, list(measured.values()))

    # -- model-guided proposals ------------------------------------------------------------------
    def _features(self, c: Config, pred) -> list[float]:
        v = [math.log(pred.get((c.format, c.params), 1e-3))]
        v += [1.0 if c.format == f else 0.0 for f in ("dense", "csr", "bitmap", "bsr", "nm", "groupquant")]
        for _, val in c.params:
            v += list(val) if isinstance(val, tuple) else [val]
        v += [0.0] * (3 - min(3, len(c.params)))
        for _, val in c.knobs:
            if val is None:
                v.append(-1.0)
            elif isinstance(val, bool):
                v.append(float(val))
            elif isinstance(val, (int, float)):
                v.append(math.log2(max(val, 1)) + 1)
            else:
                v.append(float(hash(val) % 7))
        return v

    def _surrogate(self, measured, pred):
        ok = [r for r in measured.values() if r.status == "ok"]
        if len(ok) < 8:
            return None
        try:
            from sklearn.ensemble import GradientBoostingRegressor
        except ImportError:
            return None
        X = [self._features(r.config, pred) for r in ok]
        width = max(len(x) for x in X)
        X = [x + [0.0] * (width - len(x)) for x in X]
        y = [math.log(r.time_s) for r in ok]
        m = GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=0).fit(X, y)

        def score(c):
            x = self._features(c, pred)
            return float(m.predict([(x + [0.0] * width)[:width]])[0])
        return score

    def _propose(self, spaces, measured, pred, n) -> list[Config]:
        ok = sorted((r for r in measured.values() if r.status == "ok"), key=lambda r: r.time_s)
        parents = [r.config for r in ok[:6]]
        if not parents:
            return []
        pool = set()
        for _ in range(40 * n):
            a = self.rng.choice(parents)
            s = spaces.get((a.format, a.params))
            if s is None:
                continue
            same = [p for p in parents if (p.format, p.params) == (a.format, a.params)]
            c = s.crossover(a, self.rng.choice(same), self.rng) if len(same) > 1 and self.rng.random() < 0.3 else a
            c = s.mutate(c, self.rng)
            if self.rng.random() < 0.3:
                c = s.mutate(c, self.rng)
            if c not in measured:
                pool.add(c)
        # exploration: random points of the top formats
        for s in list(spaces.values())[:4]:
            for _ in range(n):
                c = s.random(self.rng)
                if c not in measured:
                    pool.add(c)
        if not pool:
            return []
        score = self._surrogate(measured, pred)
        pool = list(pool)
        if score is None:      # warm start: the analytic model's format ranking, then random knobs
            pool.sort(key=lambda c: (pred.get((c.format, c.params), 1.0), self.rng.random()))
        else:
            pool.sort(key=score)
        n_explore = max(1, n // 4)
        picked = pool[:n - n_explore]
        rest = pool[n - n_explore:]
        picked += self.rng.sample(rest, min(n_explore, len(rest)))
        return picked
