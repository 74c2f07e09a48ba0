"""The no-regression margin from the calibrated model's measured error, and the calibration's
cross-validated error bands (synthetic timings: no measurement, no timing asserts)."""
import json
import math

import pytest
import torch

from sparsec.ir.formats import BSR
from sparsec.passes.cost import CostModel, Stats, features, host_desc
from sparsec.passes.cost.calibrate import calibrate, candidates_for, cv_error, ensure_calibrated
from sparsec.passes.prune import prune
from sparsec.passes.select import NO_REGRESSION_MARGIN, _auto, no_regression_margin


def test_calibration_samples_full_block_bsr():
    """BSR of an unstructured 50% weight (every block stored) is in the calibration grid: the
    regime auto-selection meets on unstructured layers at low sparsity."""
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    fmts = candidates_for(w, 0.5, False)
    full = [f for f in fmts if isinstance(f, BSR) and f.nnzb == f.grid[0] * f.grid[1]]
    assert {tuple(f.block) for f in full} == {(4, 4), (8, 8), (16, 1), (1, 16)}


def _synthetic(per_shape_bias: dict, fmt_slowdown: float, seed=0):
    """Samples of 'dense/tokens' and 'csr/tokens' over 4 shapes; csr measures fmt_slowdown x what a
    linear model would say on shape 3 only."""
    g = torch.Generator().manual_seed(seed)
    from sparsec.passes.cost.model import Features
    dense, csr = [], []
    for gi in range(4):
        for t in (16, 64, 256):
            macs = float(1e6 * (gi + 1) * t)
            fd = Features(macs, macs * 0.1, 0.0, 100.0 * t)
            fc = Features(macs * 0.3, macs * 0.05, macs * 0.3, 100.0 * t)
            noise = 1 + 0.001 * float(torch.rand((), generator=g))
            b = per_shape_bias.get(gi, 1.0)
            dense.append((gi, t, fd, (2e-6 + 1e-11 * macs) * b * noise))
            csr.append((gi, t, fc, (3e-6 + 2e-11 * macs * 0.3) * b * noise * (fmt_slowdown if gi == 3 else 1.0)))
    return dense, csr


def test_cv_error_vs_dense_ignores_shared_error_and_sees_format_error():
    # a shape that is slow for every kernel alike: no overstatement of csr's gain over dense
    dense, csr = _synthetic({2: 1.5}, 1.0)
    e = cv_error(csr, dense, q=0.9)
    assert e["vs_dense"] < 0.1
    # csr alone 2x slower than the model on one shape: its gain was overstated there
    dense, csr = _synthetic({}, 2.0)
    e = cv_error(csr, dense, q=0.9)
    assert e["vs_dense"] > math.log(1.5)
    assert e["slow"] > math.log(1.5) and e["n"] == len(csr)
    assert cv_error([s for s in csr if s[0] == 0], dense) is None      # one group: nothing held out


def _model(vs_dense: float | None) -> CostModel:
    cm = CostModel.analytic(host_desc(2))
    cm.coef["dense/tokens"] = [0.0, 1e-11, 0.0, 0.0, 0.0]
    cm.coef["bsr:8x8/tokens"] = [0.0, 1e-11, 0.0, 0.0, 0.0]
    if vs_dense is not None:
        cm.error["bsr:8x8/tokens"] = {"slow": 0.0, "fast": 0.0, "vs_dense": vs_dense, "n": 10}
    return cm


def test_margin_is_the_flat_floor_without_error_bands():
    assert no_regression_margin(CostModel.analytic(host_desc(2)), "csr", {}, 16) == NO_REGRESSION_MARGIN
    assert no_regression_margin(_model(None), "bsr", {"block": (8, 8)}, 16) == NO_REGRESSION_MARGIN
    assert no_regression_margin(_model(0.01), "bsr", {"block": (8, 8)}, 16) == NO_REGRESSION_MARGIN
    assert no_regression_margin(_model(math.log(1.5)), "bsr", {"block": (8, 8)}, 16) == pytest.approx(1.5)
    assert no_regression_margin(object(), "bsr", {"block": (8, 8)}, 16) == NO_REGRESSION_MARGIN


def test_auto_refuses_a_gain_inside_the_measured_error():
    """A block-sparse weight predicted 1.33x faster in BSR 8x8: taken when the model's measured error
    for bsr:8x8 is small, refused (dense, with the reason naming the margin) when it is 1.5x."""
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    w = prune(w, "block:8x8", 0.25).weight
    ch = _auto("w", w, 16, None, False, _model(0.0), None)
    assert ch.format == "bsr" and ch.params["block"] == (8, 8)
    ch = _auto("w", w, 16, None, False, _model(math.log(1.5)), None)
    assert ch.format == "dense"
    assert "below its 1.50x margin" in ch.reason
    bsr = next(c for c in ch.candidates if c["format"] == "bsr" and c["params"]["block"] == [8, 8])
    assert bsr["required_margin"] == pytest.approx(1.5)


def _linear_calibration(monkeypatch, shapes) -> CostModel:
    """calibrate() on a small grid of ``shapes`` with a synthetic measure: time = a linear function
    of the features (no kernel is built or timed)."""
    import sparsec.passes.cost.calibrate as C

    monkeypatch.setattr(C, "SHAPES", shapes)
    monkeypatch.setattr(C, "DENSITIES", (0.2, 0.5))
    monkeypatch.setattr(C, "TOKENS", (1, 16, 64))

    def measure(fmt, t):
        f = features(Stats.of(fmt), t)
        return 1e-6 + 1e-11 * f.macs + 1e-12 * f.bytes + 1e-10 * f.meta

    return calibrate(measure, 2)


def test_calibrate_stores_error_bands_and_round_trips(tmp_path, monkeypatch):
    """calibrate() with a synthetic measure (time = a linear function of the features + a per-format
    bias on one shape): every key gets coefficients and an error band; JSON round trip keeps them."""
    cm = _linear_calibration(monkeypatch, ((32, 64), (64, 32), (48, 48)))
    assert "dense/tokens" in cm.coef and "bsr:8x8/tokens" in cm.coef
    assert "vs_dense" in cm.error["bsr:8x8/tokens"] and "vs_dense" not in cm.error["dense/tokens"]
    assert cm.error["bsr:8x8/tokens"]["vs_dense"] < 0.05          # an exact linear truth: no error
    p = str(tmp_path / "c.json")
    cm.save(p)
    back = CostModel.from_json(json.loads(open(p).read()))
    assert back.error == cm.error and back.coef == cm.coef
    assert back.samples.keys() == cm.samples.keys()


def test_ensure_calibrated_redoes_an_old_layout(tmp_path, monkeypatch):
    import sparsec.passes.cost.calibrate as C

    monkeypatch.setenv("SPARSEC_CACHE", str(tmp_path))
    calls = []
    fake = CostModel.analytic(host_desc(2))
    fake.kernels = C.kernels_hash()
    monkeypatch.setattr(C, "calibrate", lambda measure, threads: calls.append(threads) or fake)
    old = {"target": fake.to_json()["target"], "coef": {}, "source": "v1"}
    (tmp_path / (C.host_key(2) + ".json")).write_text(json.dumps(old))
    msgs = []
    ensure_calibrated(None, 2, msgs.append)
    assert calls == [2] and "version 1" in msgs[0]
    assert json.loads((tmp_path / (C.host_key(2) + ".json")).read_text())["version"] == C.CALIBRATION_VERSION
    ensure_calibrated(None, 2, msgs.append)          # now current: not redone
    assert calls == [2]
    # measured other kernel sources: redone
    p = tmp_path / (C.host_key(2) + ".json")
    d = json.loads(p.read_text())
    d["kernels"] = "0" * 12
    p.write_text(json.dumps(d))
    ensure_calibrated(None, 2, msgs.append)
    assert calls == [2, 2] and "other kernel sources" in msgs[-1]


def test_full_block_bsr_is_its_own_variant_with_fallback():
    """BSR storing (nearly) every block is the variant "RxC+full", predicted by its own fit, or by the
    block-sparse "RxC" fit where a calibration has none."""
    from sparsec.passes.cost.model import FULL

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g)
    full = Stats.estimate(prune(w, "unstructured", 0.5).weight, "bsr", {"block": (8, 8)})
    sparse = Stats.estimate(prune(w, "block:8x8", 0.5).weight, "bsr", {"block": (8, 8)})
    assert full.variant == "8x8" + FULL and sparse.variant == "8x8"
    assert Stats.of(BSR.from_dense(prune(w, "unstructured", 0.5).weight, block=(8, 8))).variant == "8x8" + FULL
    cm = CostModel.analytic(host_desc(2))
    cm.coef["bsr:8x8/tokens"] = [1e-6, 1e-11, 0.0, 0.0, 0.0]
    assert cm.fit_key("bsr", full.variant, 16) == "bsr:8x8/tokens"
    a = cm.predict(full, 16)
    cm.coef["bsr:8x8+full/tokens"] = [1e-6, 2e-11, 0.0, 0.0, 0.0]
    cm.error["bsr:8x8+full/tokens"] = {"slow": 0, "fast": 0, "vs_dense": math.log(1.3), "n": 5}
    assert cm.fit_key("bsr", full.variant, 16) == "bsr:8x8+full/tokens"
    assert cm.predict(full, 16) > a and cm.predict(sparse, 16) < cm.predict(full, 16)
    assert no_regression_margin(cm, "bsr", {"block": (8, 8)}, 16, full.variant) == pytest.approx(1.3)
    assert no_regression_margin(cm, "bsr", {"block": (8, 8)}, 16, sparse.variant) == NO_REGRESSION_MARGIN


def _extrap_model(extrap: float) -> CostModel:
    cm = _model(0.0)
    cm.cols_max = 2048
    cm.error["bsr:8x8/tokens"]["extrap_vs_dense"] = extrap
    return cm


def test_margin_widens_only_beyond_the_calibrated_k():
    cm = _extrap_model(math.log(1.3))
    blk = {"block": (8, 8)}
    assert no_regression_margin(cm, "bsr", blk, 16, cols=1024) == NO_REGRESSION_MARGIN
    assert no_regression_margin(cm, "bsr", blk, 16, cols=2048) == NO_REGRESSION_MARGIN
    assert no_regression_margin(cm, "bsr", blk, 16, cols=3072) == pytest.approx(1.3)
    assert no_regression_margin(cm, "bsr", blk, 16) == NO_REGRESSION_MARGIN     # K unknown
    cm.cols_max = 0                                                           # range unknown: no guard
    assert no_regression_margin(cm, "bsr", blk, 16, cols=3072) == NO_REGRESSION_MARGIN


def test_auto_keeps_dense_for_an_extrapolated_gain():
    """A 1.33x predicted BSR gain on a layer with K = 4096 > the calibrated 2048: refused when the fit
    overstated gains by 1.5x while extrapolating in K, kept on a K = 1024 layer of the same weight."""
    w = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
    w = prune(w, "block:8x8", 0.25).weight
    ch = _auto("w", w, 16, None, False, _extrap_model(math.log(1.5)), None)
    assert ch.format == "dense" and "1.50x margin" in ch.reason
    ch = _auto("w", w[:, :1024].contiguous(), 16, None, False, _extrap_model(math.log(1.5)), None)
    assert ch.format == "bsr"


def test_extrapolation_error_sees_a_fit_that_breaks_at_large_k():
    from sparsec.passes.cost.calibrate import extrapolation_error

    dense, csr = _synthetic({}, 2.0)            # csr 2x slower than linear on group 3 only
    assert extrapolation_error(csr, dense, {3}, q=0.5) > math.log(1.5)
    assert extrapolation_error(csr, dense, {2}, q=0.5) < 0.1         # group 2 is linear: no overstatement
    assert extrapolation_error(csr, dense, {0, 1, 2, 3}) is None       # nothing left to fit on


def test_ensure_calibrated_refits_a_v3_file_without_measuring(tmp_path, monkeypatch):
    """A version-3 file of the current kernels is refitted from its stored samples (gaining cols_max
    and extrapolation errors), never re-measured."""
    import sparsec.passes.cost.calibrate as C

    monkeypatch.setenv("SPARSEC_CACHE", str(tmp_path))
    cm = _linear_calibration(monkeypatch, ((32, 64), (64, 32), (48, 128), (40, 128)))
    d = cm.to_json()
    d["version"] = 3
    d.pop("cols_max")
    for e in d["error"].values():
        e.pop("extrap_vs_dense", None)
    (tmp_path / (C.host_key(1) + ".json")).write_text(json.dumps(d))
    monkeypatch.setattr(C, "calibrate", lambda *a, **k: pytest.fail("re-measured"))
    msgs = []
    back = ensure_calibrated(None, 1, msgs.append)
    assert "refitting" in msgs[0] and back.cols_max == 128
    assert "extrap_vs_dense" in back.error["bsr:8x8/tokens"]
    assert back.coef == cm.coef
    assert json.loads((tmp_path / (C.host_key(1) + ".json")).read_text())["version"] == C.CALIBRATION_VERSION


def test_old_multithread_calibration_is_not_used(tmp_path, monkeypatch):
    """v3/v4 files were measured with TVM's pool at one thread whatever their key said: for threads > 1
    `sparsec compile` does not use one (analytic model instead) and ensure_calibrated measures again."""
    import sparsec.passes.cost.calibrate as C

    monkeypatch.setenv("SPARSEC_CACHE", str(tmp_path))
    cm = _linear_calibration(monkeypatch, ((32, 64), (64, 32), (48, 128), (40, 128)))
    d = cm.to_json()
    d["version"] = 4
    (tmp_path / (C.host_key(2) + ".json")).write_text(json.dumps(d))
    assert C.load_calibrated(2) is None
    calls = []
    monkeypatch.setattr(C, "calibrate", lambda measure, threads: calls.append(threads) or cm)
    msgs = []
    ensure_calibrated(None, 2, msgs.append)
    assert calls == [2] and "one-thread TVM pool" in msgs[0]
    assert C.load_calibrated(2) is not None          # the new file (v5) is used
