"""Autotuning the non-matmul functions ("sites"): the TE schedules' knobs (every value correct
against eager torch), the sites compile_graph reports, the correctness gate on real
measurements, the confirmation, and `sparsec compile` taking a site's knobs from the database."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sparsec.ir.errors import ParameterError
from sparsec.passes.autotune.db import Record, TuningDB
from sparsec.passes.autotune.measure import MeasureResult, Settings
from sparsec.passes.autotune.space import TESTING_ONLY_CORRUPT, Config


class Attn(nn.Module):
    """softmax(q kᵀ / 8 + mask) v, then layer norm: the BERT shapes in small."""

    def __init__(self, d=32, heads=2):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.ln = nn.LayerNorm(d)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.view(b, t, self.h, self.dh).permute(0, 2, 1, 3)
        k = k.view(b, t, self.h, self.dh).permute(0, 2, 1, 3)
        v = v.view(b, t, self.h, self.dh).permute(0, 2, 1, 3)
        a = torch.softmax(q @ k.transpose(-1, -2) / 8 + mask, dim=-1)
        o = (a @ v).permute(0, 2, 1, 3).reshape(b, t, d)
        return self.ln(o + x)


def attn_model():
    torch.manual_seed(0)
    return Attn().eval(), (torch.randn(1, 16, 32), torch.randn(1, 1, 16, 16))


def _te(node_op, shapes, attrs):
    from sparsec.backends.te_ops import build_node_func
    from sparsec.ir.graph import make_node
    from sparsec.ir.types import TensorType

    ts = [TensorType(s, "float32") for s in shapes]
    names = [f"x{i}" for i in range(len(ts))]
    node = make_node("n", node_op, names, attrs, dict(zip(names, ts)))
    return build_node_func(node, ts, {}, "f")


def _run(func, ins, out_shape):
    import tvm

    from sparsec.backends.target import host_target

    f = tvm.tirx.build(tvm.IRModule({"f": func.with_attr("global_symbol", "f")}), target=host_target())["f"]
    y = torch.full(out_shape, float("nan"))
    f(*ins, y)
    return y


# -- the schedules' knobs ------------------------------------------------------------------------
@pytest.mark.parametrize("parallel", [None, False, True])
@pytest.mark.parametrize("lanes", [None, 8, 16])
def test_softmax_and_layer_norm_knobs_match_torch(parallel, lanes):
    import tvm_ffi

    from sparsec.backends.te.schedule import schedule_cpu
    from sparsec.backends.target import host_target
    from sparsec.ir.ops import Op

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 64, generator=g) * 4
    f = _te(Op.SOFTMAX, [(2, 3, 8, 64)], {"dim": -1})
    knobs = {"parallel": parallel, "reduce_lanes": lanes}
    sf = schedule_cpu(f, host_target(), knobs=knobs)
    torch.testing.assert_close(_run(sf, [x], (2, 3, 8, 64)), torch.softmax(x, -1), rtol=1e-5, atol=1e-6)
    xs, w, b = torch.randn(4, 16, 96, generator=g), torch.randn(96, generator=g), torch.randn(96, generator=g)
    f = _te(Op.LAYER_NORM, [(4, 16, 96), (96,), (96,)], {"normalized_shape": (96,), "eps": 1e-5})
    sl = schedule_cpu(f, host_target(), knobs=knobs)
    torch.testing.assert_close(_run(sl, [xs, w, b], (4, 16, 96)),
                               torch.nn.functional.layer_norm(xs, (96,), w, b, 1e-5), rtol=1e-4, atol=1e-5)
    if parallel is None and lanes == 16:          # the knobs' defaults = no knobs at all, the same function
        assert tvm_ffi.structural_equal(sl, schedule_cpu(f, host_target()))
    if lanes is None:                              # scalar reduction asked: no rfactor block
        assert "ln_mean_rf" not in sl.script()
    if lanes is not None:                          # the knob changes the schedule: a vectorised rfactor block
        assert "ln_mean_rf" in sl.script() and "T.vectorized" in sl.script()
    if parallel is False:
        assert "T.parallel" not in sl.script() and "T.parallel" not in sf.script()


def test_unknown_knob_or_value_refused():
    from sparsec.backends.te.schedule import schedule_cpu
    from sparsec.ir.ops import Op

    f = _te(Op.SOFTMAX, [(4, 32)], {"dim": -1})
    with pytest.raises(ParameterError, match="tile"):
        schedule_cpu(f, None, knobs={"tile": 4})
    with pytest.raises(ParameterError, match="reduce_lanes"):
        schedule_cpu(f, None, knobs={"reduce_lanes": 3})


def test_transpose_parallel_knob():
    from sparsec.backends.llvm.compile import transpose_func

    assert "T.parallel" in transpose_func(64, 48, "float32").script()
    f = transpose_func(64, 48, "float32", knobs={"parallel": False})
    assert "T.parallel" not in f.script()
    x = torch.randn(64, 48)
    torch.testing.assert_close(_run(f, [x], (48, 64)), x.t())


# -- sites of a graph ------------------------------------------------------------------------------
def test_graph_sites_and_their_reference():
    from sparsec.backends.te.sites import random_inputs, reference
    from sparsec.passes.autotune.driver import prepare_graph
    from sparsec.passes.autotune.te import SiteSpace, graph_sites

    m, x = attn_model()
    sites = graph_sites(prepare_graph(m, x))
    ops = {s.op for s in sites}
    assert {"softmax", "layer_norm", "bmm", "transpose"} <= ops and all(s.tunable for s in sites)
    assert len({s.key for s in sites}) == len(sites)
    sm = next(s for s in sites if s.op == "softmax")
    assert "fused" in sm.doc and len(sm.inputs) == 2        # scores and the mask; / 8 and + mask fused in
    ins = random_inputs(sm)
    scores, mask = ins
    torch.testing.assert_close(reference(sm, ins), torch.softmax(scores.double() / 8 + mask.double(), -1))
    space = SiteSpace(sm)
    assert space.configs[0] == {"parallel": None, "reduce_lanes": 16}      # the default first
    assert len(space.configs) > 1 and len(space.configs) <= 9
    tr = next(s for s in sites if s.kind == "transpose")
    assert [c["parallel"] for c in SiteSpace(tr).configs][0] is None


def test_site_measurement_checks_before_timing():
    """A kernel writing a constant (TESTING_ONLY_CORRUPT) is 'wrong' with no time; real knobs are ok."""
    from sparsec.passes.autotune.driver import prepare_graph
    from sparsec.passes.autotune.measure import LocalRunner
    from sparsec.passes.autotune.te import graph_sites

    m, x = attn_model()
    sites = [s for s in graph_sites(prepare_graph(m, x)) if s.op in ("softmax", "layer_norm")]
    runner = LocalRunner(settings=Settings(repeat=3, min_sample_s=2e-4, warm_s=1e-4))
    cfgs = [(0, {"parallel": False, "reduce_lanes": 16}), (0, {TESTING_ONLY_CORRUPT: True}),
            (1, {"parallel": None, "reduce_lanes": 8}), (1, {"reduce_lanes": 5})]
    res = runner.run_sites(sites, cfgs)
    assert [r.status for r in res] == ["ok", "wrong", "ok", "error"], [(r.status, r.error) for r in res]
    assert res[1].time_s is None and "relative error" in res[1].error
    assert res[0].time_s > 0 and res[2].time_s > 0
    assert "reduce_lanes" in res[3].error


class FakeSiteRunner:
    """Times from a function of (site, knobs); the fastest configuration of every site is wrong."""

    target_sig = None
    features = None
    name = "fake"

    def __init__(self, timef, wrong=lambda site, kn: False):
        from sparsec.passes.autotune.space import host_features, target_signature

        self.target_sig, self.features = target_signature(None), host_features()
        self.timef, self.wrong, self.calls = timef, wrong, []

    def run_sites(self, sites, configs):
        self.calls.append(configs)
        out = []
        for si, kn in configs:
            c = Config.make("te", {"site": sites[si].key}, kn)
            if self.wrong(sites[si], kn):
                out.append(MeasureResult(c, "wrong", error="max relative error 1 > 0.0001", runner=self.name))
            else:      # never two identical times (the DB drops a record equal to one of the same second)
                t = self.timef(sites[si], kn) * (1 + 1e-9 * len(self.calls))
                out.append(MeasureResult(c, "ok", t, [t], runner=self.name))
        return out


def _fast_serial(site, kn):
    return 1e-5 * (0.5 if kn.get("parallel") is False else 1.0) * (0.5 if kn.get("reduce_lanes") == 8 else 1.0)


def test_tune_sites_never_picks_a_wrong_kernel_and_resumes(tmp_path):
    from sparsec.passes.autotune.driver import prepare_graph
    from sparsec.passes.autotune.space import versions
    from sparsec.passes.autotune.te import SiteSpace, best_knobs, graph_sites, site_key, tune_sites

    m, x = attn_model()
    sites = graph_sites(prepare_graph(m, x))
    spaces = {s.key: SiteSpace(s).configs for s in sites}
    # later configurations of a site's space are faster; its fastest one fails its check
    timef = lambda s, kn: 1e-5 / (1 + spaces[s.key].index(kn))            # noqa: E731
    wrong = lambda s, kn: len(spaces[s.key]) > 1 and kn == spaces[s.key][-1]   # noqa: E731
    runner = FakeSiteRunner(timef, wrong)
    db = TuningDB(str(tmp_path / "t.jsonl"))
    res = tune_sites(sites, runner, db)
    assert len(res) == len(sites) and any(len(spaces[r.site.key]) > 2 for r in res)
    for r in res:
        sp = spaces[r.site.key]
        want = sp[-2] if len(sp) > 1 else sp[0]
        assert r.best_knobs == want and r.best_s <= r.default_s
        assert r.statuses.get("wrong", 0) == (len(sp) > 1)
        k = site_key(r.site, runner.target_sig, runner.features, versions())
        assert best_knobs(db, k).knobs == want
    # resumable: a second run measures nothing new, only the confirmations again
    n = len(runner.calls)
    tune_sites(sites, runner, db)
    again = [kn for c in runner.calls[n:] for _, kn in c]
    assert len(again) == 2 * sum(1 for r in res if r.best_knobs != spaces[r.site.key][0])


def test_confirmation_decides(tmp_path):
    """A configuration that measured fastest once but loses the interleaved re-measurement is not used."""
    from sparsec.passes.autotune.db import TuningKey
    from sparsec.passes.autotune.te import best_knobs

    db = TuningDB(str(tmp_path / "t.jsonl"))
    k = TuningKey("te:softmax", (4, 4), "float32", "te", (("site", "abc"),), "-", "t", "f", "v")
    d, fast = {"parallel": None, "reduce_lanes": None}, {"parallel": False, "reduce_lanes": None}
    db.append(Record(k, d, "ok", 2e-5, [2e-5]))
    db.append(Record(k, fast, "ok", 1e-5, [1e-5]))          # a lucky first sample
    assert best_knobs(db, k).knobs == fast
    db.append(Record(k, d, "ok", 2.1e-5, [2.1e-5], runner="local:confirm"))
    db.append(Record(k, fast, "ok", 3e-5, [3e-5], runner="local:confirm"))
    assert best_knobs(db, k).knobs == d


def test_compile_uses_site_knobs_from_db(tmp_path):
    """`sparsec compile` with a database: the sites' tuned knobs are used (serial softmax here),
    the output still matches the interpreter; without a database the rules' schedule is built.
    (At these small sizes the rules build serial code already: the rfactor knob is what differs.)"""
    import sparsec
    from sparsec.ir.interpret import interpret
    from sparsec.passes.autotune.driver import prepare_graph
    from sparsec.passes.autotune.te import graph_sites, tune_sites

    m, x = attn_model()
    db = TuningDB(str(tmp_path / "t.jsonl"))
    tune_sites(graph_sites(prepare_graph(m, x)), FakeSiteRunner(_fast_serial), db)
    asked = []
    import sparsec.backends.te.schedule as sched
    orig = sched.schedule_cpu

    def spy(func, target=None, knobs=None):
        asked.append(knobs)
        return orig(func, target, knobs=knobs)
    import sparsec.backends.te_ops as te_ops
    mp = pytest.MonkeyPatch()
    mp.setattr(te_ops, "schedule_cpu", spy)
    try:
        c = sparsec.compile(m, x, tuning_db=str(db.path))
        tuned = list(asked)
        asked.clear()
        c0 = sparsec.compile(m, x, tuning_db=False)
        untuned = list(asked)
    finally:
        mp.undo()
    assert {"parallel": None, "reduce_lanes": 8} in tuned and None not in tuned
    assert untuned and all(k is None for k in untuned)          # no database: the rules (knob defaults)
    ref = interpret(c.graph, *x)[0]
    torch.testing.assert_close(c(*x)[0], ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c0(*x)[0], ref, rtol=1e-4, atol=1e-5)


def test_embedding_site_measured_with_valid_indices():
    """An index input gets indices valid in the table: the lookup passes its check and is timed."""
    from sparsec.passes.autotune.driver import prepare_graph
    from sparsec.passes.autotune.measure import LocalRunner
    from sparsec.passes.autotune.te import SiteSpace, graph_sites

    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(50, 64), nn.LayerNorm(64)).eval()
    sites = [s for s in graph_sites(prepare_graph(m, (torch.randint(0, 50, (2, 32)),))) if s.op == "embedding"]
    assert len(sites) == 1 and sites[0].tunable and sites[0].inputs[1][1] == "int64"
    runner = LocalRunner(settings=Settings(repeat=3, min_sample_s=2e-4, warm_s=1e-4))
    res = runner.run_sites(sites, [(0, kn) for kn in SiteSpace(sites[0]).configs] + [(0, {TESTING_ONLY_CORRUPT: True})])
    assert [r.status for r in res[:-1]] == ["ok"] * (len(res) - 1) and res[-1].status == "wrong"
