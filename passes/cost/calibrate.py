"""Calibrating the cost model from measured micro-benchmarks on this machine.

The calibration grid (shapes, densities, tokens) is deliberately different
from the BERT shapes the quality benchmark evaluates on. Results are stored
as JSON under the cache directory (``$SPARSEC_CACHE`` or ``~/.cache/sparsec``),
keyed by CPU model and thread count, and re-used by every compile.

Besides the coefficients, calibration stores each fit's *measured error* by
leave-one-shape-out cross-validation (fit on four shapes, predict the fifth).
The number format selection needs is ``vs_dense``: how much the model
*overstated a format's advantage over dense* on held-out shapes, the median
(``ERROR_QUANTILE``) of log((measured_fmt / measured_dense) / (predicted_fmt /
predicted_dense)) over the same (shape, tokens) pairs. ``select_formats``
requires a sparse format to be predicted faster than dense by at least that
factor, and never by less than its flat 10% (which covers run-to-run noise).
Errors both fits share (a shape that is slow for every kernel) cancel in the
ratio and do not widen it. ``slow``/``fast`` (how much slower / faster than
predicted an unseen shape ran, same quantile) are kept for the report.
(A 90th percentile was tried: on the quality grid it rejected correct CSR picks
at 70% sparsity whose predicted 1.11-1.14x gain measured 1.19-1.31x.)
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant
from sparsec.passes.cost.model import CostModel, Stats, features, fit, regime
from sparsec.passes.cost.targets import TargetDesc, host_desc
from sparsec.passes.prune import prune

SHAPES = ((256, 512), (1024, 512), (512, 2048), (2048, 1024), (1024, 2048))
# 2: error bands, samples, full-block BSR samples; 3: full-block BSR fitted as its own variant
# ("bsr:8x8+full"). An older file still loads (no error bands: select_formats falls back to its flat
# margin; no "+full" fits: the block-sparse ones are used); `sparsec calibrate` again to get them.
# 4: the calibrated K range and each fit's extrapolation error (a v3 file with samples is refitted
# from its stored samples, not re-measured)
# 5: measured with TVM's pool sized to ``threads`` (sparsec sets TVM_NUM_THREADS at import; before, the
# pool had half the logical CPUs: ONE thread on a 2-vCPU VM, whatever ``threads`` said). A v3/v4 file
# keyed by threads > 1 measured one-thread kernels and is calibrated again (threads == 1: still true,
# refitted from its samples like v3)
CALIBRATION_VERSION = 5
ERROR_QUANTILE = 0.5     # the median: the typical (systematic) overstatement, not the noise tail
# beyond the calibrated K the model extrapolates, which the held-out error above does not measure:
# the upper quartile of the overstatement seen when the largest calibrated K is itself extrapolated
EXTRAP_QUANTILE = 0.75
TOKENS = (1, 16, 64, 256)
DENSITIES = (0.05, 0.2, 0.5)
BLOCKS = ((4, 4), (8, 8), (16, 1), (1, 16))
NMS = ((1, 4), (2, 4), (2, 8))


def cache_dir() -> str:
    return os.environ.get("SPARSEC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sparsec")


def host_key(threads: int) -> str:
    """Cache key: the CPU model string and thread count (calibration is per machine)."""
    import hashlib
    import platform

    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cost-{hashlib.sha1(model.encode()).hexdigest()[:10]}-{threads}t"


def calibration_path(threads: int) -> str:
    return os.path.join(cache_dir(), host_key(threads) + ".json")


def candidates_for(w: torch.Tensor, density: float, first: bool):
    """Format samples for one weight: every family and every variant auto-selection may pick."""
    un = prune(w, "unstructured", 1 - density).weight
    out = [CSR.from_dense(un), Bitmap.from_dense(un, tile=(8, 8))]
    for b in BLOCKS:
        out.append(BSR.from_dense(prune(w, f"block:{b[0]}x{b[1]}", 1 - density).weight, block=b))
    if density >= 0.5:
        # BSR of an *unstructured* weight at low sparsity: every block is stored (half of it zeros), so
        # the kernel does dense work plus its block-index overhead. Auto selection meets this case on
        # every unstructured layer; block-pruned samples alone never show the model a full block row.
        # Their Stats variant is "RxC+full": fitted apart from the block-sparse samples (a different
        # access pattern: one linear fit of both mispredicted each, by up to 2x at one token).
        out += [BSR.from_dense(un, block=b) for b in BLOCKS]
    out.append(GroupQuant.from_dense(prune(w, "group:32", 1 - density).weight, group=32, bits=4))
    if first:   # density-independent formats once per shape
        out.append(Dense.from_dense(w))
        out += [NM.from_dense(prune(w, f"{n}:{m}").weight, n=n, m=m) for n, m in NMS]
    return out


def calibrate(measure: Callable, threads: int, progress: Callable[[int, int, str], None] | None = None,
              desc: TargetDesc | None = None) -> CostModel:
    """Measure the grid with ``measure(fmt, tokens) -> seconds`` and fit (c, a, b, d) per format/regime."""
    desc = desc or host_desc(threads)
    g = torch.Generator().manual_seed(0)
    jobs = []
    for si, (o, k) in enumerate(SHAPES):
        w = torch.randn(o, k, generator=g)
        for i, d in enumerate(DENSITIES):
            for fmt in candidates_for(w, d, i == 0):
                for t in TOKENS:
                    jobs.append((si, fmt, t))
    samples: dict[str, list] = {}     # key -> [(shape index, tokens, features, seconds)]
    for i, (si, fmt, t) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), f"{fmt.name} {fmt.rows}x{fmt.cols} T={t}")
        s = measure(fmt, t)
        st = Stats.of(fmt)
        f = features(st, t)
        samples.setdefault(f"{fmt.name}/{regime(t)}", []).append((si, t, f, s))
        if st.variant:
            samples.setdefault(f"{fmt.name}:{st.variant}/{regime(t)}", []).append((si, t, f, s))
    model = fit_model(desc, samples, f"calibrated on {len(jobs)} kernels")
    model.kernels = kernels_hash()
    return model


def fit_model(desc: TargetDesc, samples: dict[str, list], source: str, shapes=None) -> CostModel:
    """Coefficients and cross-validated error bands per key from ``key -> [(group, tokens, Features, s)]``
    (group = index into ``shapes``, default ``SHAPES``: the calibrated (O, K) of each group)."""
    shapes = SHAPES if shapes is None else shapes
    cols = {gi: k for gi, (_, k) in enumerate(shapes)}
    far = {gi for gi, k in cols.items() if k == max(cols.values())}
    coef = {key: fit([(f, s) for _, _, f, s in v]) for key, v in samples.items()}
    error = {}
    for key, v in samples.items():
        dense = samples.get("dense/" + key.split("/")[1])
        e = cv_error(v, dense if dense is not v else None)
        if e is not None:
            x = extrapolation_error(v, dense, far) if dense is not None and dense is not v else None
            if x is not None:
                e["extrap_vs_dense"] = x
            error[key] = e
    raw = {key: [[gi, t, *f.vector()[1:], s] for gi, t, f, s in v] for key, v in samples.items()}
    return CostModel(desc, coef, source, error, raw, cols_max=max(cols.values()))


def refit(model: CostModel, shapes=None) -> CostModel:
    """The same measurements fitted again (a newer layout of the error bands; nothing re-measured)."""
    from sparsec.passes.cost.model import Features

    samples = {key: [(int(r[0]), int(r[1]), Features(*r[2:6]), float(r[6])) for r in rows]
               for key, rows in model.samples.items()}
    out = fit_model(model.target, samples, model.source, shapes)
    out.kernels = model.kernels
    return out


def extrapolation_error(samples: list, dense: list, far: set, q: float | None = None) -> float | None:
    """How much the model overstates a format's gain over dense when it extrapolates in K: both fits
    made without the groups ``far`` (those with the largest calibrated K), the ``q``-quantile
    (``EXTRAP_QUANTILE``) over those groups of log((measured / measured_dense) / (predicted /
    predicted_dense)), floored at 0. None when there is nothing to hold out or to fit on."""
    import math

    import numpy as np

    q = EXTRAP_QUANTILE if q is None else q

    def held(rows):
        train = [(f, s) for gi, _, f, s in rows if gi not in far]
        if not train or len(train) == len(rows):
            return None
        c = fit(train)
        return {(gi, t, i): (s, max(sum(ci * xi for ci, xi in zip(c, f.vector())), 1e-12))
                for i, (gi, t, f, s) in enumerate(rows) if gi in far}

    ho, hd = held(samples), held(dense)
    if not ho or not hd:
        return None
    hd = {(gi, t): sp for (gi, t, _), sp in hd.items()}
    rel = [math.log(s / p) - math.log(hd[(gi, t)][0] / hd[(gi, t)][1])
           for (gi, t, _), (s, p) in ho.items() if (gi, t) in hd]
    return max(0.0, float(np.quantile(np.array(rel), q))) if rel else None


def _held_out(samples: list) -> dict:
    """(group, tokens, index) -> (measured, predicted by the fit on every other group)."""
    out = {}
    for held in sorted({gi for gi, _, _, _ in samples}):
        c = fit([(f, s) for gi, _, f, s in samples if gi != held])
        for i, (gi, t, f, s) in enumerate(samples):
            if gi == held:
                out[(gi, t, i)] = (s, max(sum(ci * xi for ci, xi in zip(c, f.vector())), 1e-12))
    return out


def cv_error(samples: list, dense: list | None = None, q: float | None = None) -> dict | None:
    """Leave-one-group-out error of a fit (log ratios, floored at 0): ``{"slow", "fast", "vs_dense", "n"}``.

    ``slow``: the q-quantile of log(measured / predicted) over held-out samples (how much slower
    than predicted an unseen shape ran); ``fast``: the same of log(predicted / measured).
    ``vs_dense`` (with the ``dense`` samples of the same regime): the q-quantile, over held-out
    samples paired with dense on the same shape and tokens, of log((measured / measured_dense) /
    (predicted / predicted_dense)): how much the model overstated the format's gain over dense.
    None with fewer than two groups (nothing to hold out).
    """
    import math

    import numpy as np

    q = ERROR_QUANTILE if q is None else q
    if len({gi for gi, _, _, _ in samples}) < 2:
        return None
    ho = _held_out(samples)
    logs = np.array([math.log(s / p) for s, p in ho.values()])
    out = {"slow": max(0.0, float(np.quantile(logs, q))), "fast": max(0.0, float(np.quantile(-logs, q))),
           "n": len(logs)}
    if dense:
        hd = {(gi, t): sp for (gi, t, _), sp in _held_out(dense).items()}
        rel = [math.log(s / p) - math.log(hd[(gi, t)][0] / hd[(gi, t)][1])
               for (gi, t, _), (s, p) in ho.items() if (gi, t) in hd]
        if rel:
            out["vs_dense"] = max(0.0, float(np.quantile(np.array(rel), q)))
    return out


def kernels_hash() -> str:
    """sha256 (12 hex) of the CPU kernel families' sources: a calibration measured other kernels
    when it differs."""
    import hashlib
    from pathlib import Path

    import sparsec.backends.kernels as K

    root = Path(K.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _refittable(d: dict, threads: int) -> bool:
    """An older file whose stored samples are still true measurements of this key: v3/v4 at one
    thread (the pool fix of v5 changed nothing there; refit adds v4's K range and extrapolation errors)."""
    v = d.get("version", 1)
    return bool(d.get("samples")) and 3 <= v < CALIBRATION_VERSION and threads == 1


def ensure_calibrated(measure: Callable, threads: int, say: Callable[[str], None] = print) -> CostModel:
    """The stored calibration if it is of the current layout and measured the current kernels,
    else calibrate now and store it (benchmarks: a stale cache file must not silently stand for
    the current model; `sparsec compile` uses whatever is stored)."""
    import json

    p = calibration_path(threads)
    try:
        with open(p) as f:
            d = json.load(f)
        if _refittable(d, threads) and d.get("kernels") == kernels_hash():
            say(f"calibration {p} is version {d['version']}: refitting its stored samples (nothing re-measured)")
            model = refit(CostModel.from_json(d))
            model.save(p)
            return model
        if d.get("version", 1) < CALIBRATION_VERSION:
            why = " (measured with a one-thread TVM pool)" if d.get("version", 1) >= 3 and threads > 1 else ""
            say(f"calibration {p} is version {d.get('version', 1)} < {CALIBRATION_VERSION}{why}: calibrating again")
        elif d.get("kernels") != kernels_hash():
            say(f"calibration {p} measured other kernel sources: calibrating again")
        else:
            return CostModel.from_json(d)
    except (OSError, ValueError):
        say(f"no calibration at {p}: calibrating (a few minutes)")
    model = calibrate(measure, threads)
    model.save(p)
    return model


def load_calibrated(threads: int) -> CostModel | None:
    import json

    p = calibration_path(threads)
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            d = json.load(f)
        model = CostModel.from_json(d)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if d.get("version", 1) < CALIBRATION_VERSION and threads > 1:
        return None                     # measured one-thread kernels for a multi-thread key (see v5)
    if _refittable(d, threads):
        model = refit(model)            # same measurements, current error bands (K range, extrapolation)
        model.save(p)
    return model
