"""Autotuning: the tuning database (round trip, keys, crash safety, merge), the search with
injected measurements, the correctness gate with real kernels, and `sparsec compile` using the DB."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sparsec.passes.autotune import space as space_mod
from sparsec.passes.autotune.db import Record, TuningDB, TuningKey, merge
from sparsec.passes.autotune.measure import LocalRunner, MeasureResult, Settings, robust_median
from sparsec.passes.autotune.search import Layer, Tuner
from sparsec.passes.autotune.space import TESTING_ONLY_CORRUPT, Config, make_key


def key(**over):
    base = dict(fmt="csr", params={}, shape=(64, 32, 8), dtype="float32", stored=0.1,
                target_sig='{"kind":"llvm","mcpu":"znver5"}', features="cpuA|abc", versions_="sparsec=0.1.0;tvm=0.27")
    base.update(over)
    return make_key(base["fmt"], base["params"], base["shape"], base["dtype"], base["stored"], base["target_sig"],
                    base["features"], base["versions_"])


def rec(k, t, status="ok", **knobs):
    return Record(k, knobs or {"t_tile": 8}, status, t if status == "ok" else None, [t] if t else [])


# -- database ------------------------------------------------------------------------------------
def test_db_round_trip_and_best(tmp_path):
    p = tmp_path / "t.jsonl"
    db = TuningDB(str(p))
    k = key(fmt="bsr", params={"block": (4, 4)})
    db.append(rec(k, 3e-5, t_tile=8))
    db.append(rec(k, 1e-5, t_tile=16))
    db.append(rec(k, 1e-9, "wrong", t_tile=32))        # a fast wrong kernel
    db2 = TuningDB(str(p))
    assert len(db2) == 3 and db2.skipped == 0
    assert [r.key for r in db2.records] == [k, k, k]
    assert db2.records[0].key.params == (("block", (4, 4)),)
    assert db2.best(k).knobs == {"t_tile": 16} and db2.best(k).time_s == 1e-5
    assert db2.measured(k, {"t_tile": 32}).status == "wrong"


@pytest.mark.parametrize("field,value", [("target_sig", '{"kind":"llvm","mcpu":"skylake"}'),
                                         ("versions_", "sparsec=0.2.0;tvm=0.27"),
                                         ("features", "cpuB|def"), ("shape", (64, 32, 16)),
                                         ("stored", 0.3), ("fmt", "bitmap"), ("dtype", "float16")])
def test_db_key_misses_on_any_difference(tmp_path, field, value):
    db = TuningDB(str(tmp_path / "t.jsonl"))
    db.append(rec(key(), 1e-5))
    assert db.best(key()) is not None
    assert db.best(key(**{field: value})) is None


def test_db_survives_truncated_tail_and_repairs_it(tmp_path):
    p = tmp_path / "t.jsonl"
    db = TuningDB(str(p))
    for i in range(3):
        db.append(rec(key(), (i + 1) * 1e-5, t_tile=8 * (i + 1)))
    data = p.read_bytes()
    p.write_bytes(data[:-25])                  # a write killed mid-line
    db2 = TuningDB(str(p))
    assert len(db2) == 2 and db2.skipped == 1
    assert db2.best(key()).time_s == 1e-5
    db2.append(rec(key(), 5e-6, t_tile=64))    # the next append cuts the partial line first
    db3 = TuningDB(str(p))
    assert len(db3) == 3 and db3.skipped == 0
    assert db3.best(key()).knobs == {"t_tile": 64}
    assert p.read_bytes().count(b"\n") == 3


def test_db_crc_rejects_a_damaged_line(tmp_path):
    p = tmp_path / "t.jsonl"
    db = TuningDB(str(p))
    db.append(rec(key(), 2e-5, t_tile=8))
    db.append(rec(key(), 9e-5, t_tile=16))
    lines = p.read_text().splitlines()
    lines[1] = lines[1].replace("9e-05", "1e-09")        # still valid JSON, wrong checksum
    p.write_text("\n".join(lines) + "\n")
    db2 = TuningDB(str(p))
    assert db2.skipped == 1 and db2.best(key()).time_s == 2e-5


def test_db_merge_union_without_duplicates(tmp_path):
    a, b, out = (str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "out.jsonl"))
    ka, kb = key(), key(features="cpuB|def")
    r1, r2 = rec(ka, 1e-5), rec(kb, 2e-5)
    TuningDB(a).append(r1)
    dbb = TuningDB(b)
    dbb.append(r1)              # the same measurement, copied between machines
    dbb.append(r2)
    m = merge(out, a, b)
    assert len(m) == 2
    again = TuningDB(out)
    assert len(again) == 2 and again.best(ka).time_s == 1e-5 and again.best(kb).time_s == 2e-5
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    merge(out, a)               # idempotent
    assert len(TuningDB(out)) == 2


def test_robust_median_drops_outliers():
    med, kept = robust_median([1.0, 1.1, 0.9, 1.0, 50.0, 1.05, 0.95])
    assert 50.0 not in kept and abs(med - 1.0) < 0.06


# -- search with injected measurements ----------------------------------------------------------
class FakeRunner:
    """Injected measurements: time = f(config); configs with corrupt=True are 'wrong' (and fastest)."""

    name = "fake"
    target_sig = '{"kind":"llvm","test":1}'
    features = "fake-cpu"

    def __init__(self, timef):
        self.timef, self.calls = timef, []

    def run(self, w2, tokens, configs):
        self.calls.append(list(configs))
        out = []
        for c in configs:
            if c.knobs_dict.get(TESTING_ONLY_CORRUPT):
                out.append(MeasureResult(c, "wrong", error="max relative error 1.0", runner=self.name))
            else:
                out.append(MeasureResult(c, "ok", self.timef(c), [self.timef(c)], runner=self.name))
        return out


def small_layer(density=0.1, o=64, k=64, t=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, k, generator=g)
    w[torch.rand(o, k, generator=g) > density] = 0
    return Layer("test", w, t, None, False, ["w"])


def _timef(c):
    # csr with t_tile=8 is best; everything else slower
    t = {"dense": 10.0, "csr": 2.0}.get(c.format, 5.0)
    if c.format == "csr" and c.knobs_dict.get("t_tile") == 8:
        t = 1.0
    return t * 1e-5


@pytest.fixture
def two_formats(monkeypatch):
    """Restrict the space to dense and CSR (a small, quick space)."""
    monkeypatch.setattr(space_mod, "format_candidates", lambda w2, pattern=None, lossy_ok=False:
                        [("dense", {}), ("csr", {})])
    import sparsec.passes.autotune.search as search_mod
    monkeypatch.setattr(search_mod, "format_candidates", space_mod.format_candidates)


@pytest.fixture
def corrupt_knob(monkeypatch):
    """Give every family the test-only knob: the tuner sees configurations that compute garbage, fast."""
    orig = space_mod.FormatSpace.relevant_knobs

    def with_corrupt(self):
        return {**orig(self), TESTING_ONLY_CORRUPT: [False, True]}
    monkeypatch.setattr(space_mod.FormatSpace, "relevant_knobs", with_corrupt)


def test_tuner_picks_fastest_correct_and_resumes(tmp_path, two_formats, corrupt_knob):
    db = TuningDB(str(tmp_path / "t.jsonl"))
    runner = FakeRunner(lambda c: 1e-9 if c.knobs_dict.get(TESTING_ONLY_CORRUPT) else _timef(c))
    layer = small_layer()
    r = Tuner(db, runner, batch_size=8, confirm=0).tune_layer(layer, trials=200)
    assert r.best.config.format == "csr" and r.best.config.knobs_dict["t_tile"] == 8
    assert not r.best.config.knobs_dict.get(TESTING_ONLY_CORRUPT)
    wrong = [x for x in db.records if x.status == "wrong"]
    assert wrong and all(x.time_s is None for x in wrong)
    assert r.trials == r.space_size + 2 or r.trials >= r.space_size   # exhaustive (defaults measured too)
    assert r.baseline is not None and r.default_best is not None
    # resume: nothing measured twice
    n = len(db)
    r2 = Tuner(db, runner, batch_size=8, confirm=0).tune_layer(layer, trials=200)
    assert r2.trials == 0 and r2.reused >= r.space_size and len(db) == n
    assert r2.best.config == r.best.config


def test_tuner_model_guided_on_large_space_respects_budget(tmp_path):
    db = TuningDB(str(tmp_path / "t.jsonl"))
    runner = FakeRunner(_timef)
    r = Tuner(db, runner, batch_size=6, confirm=0).tune_layer(small_layer(), trials=20)
    assert r.trials <= 20 and r.space_size > 20
    assert r.best is not None and r.best.status == "ok"
    sent = [c for batch in runner.calls for c in batch]
    assert len(sent) == len(set(sent)) == r.trials          # no configuration measured twice


# -- real measurement: correctness before time ---------------------------------------------------
def test_local_measurement_rejects_wrong_kernel():
    layer = small_layer(o=48, k=40, t=8)
    good = Config.make("csr", {}, {"strategy": None, "t_tile": None, "lanes": None, "gather": True, "parallel": True})
    bad = Config.make("csr", {}, {**good.knobs_dict, TESTING_ONLY_CORRUPT: True})
    refused = Config.make("csr", {}, {**good.knobs_dict, "strategy": "gemv"})      # T=8: the family refuses
    res = LocalRunner(settings=Settings(repeat=3)).run(layer.w2, layer.tokens, [bad, good, refused])
    by = {r.config: r for r in res}
    assert by[bad].status == "wrong" and by[bad].time_s is None and "relative error" in by[bad].error
    assert by[good].status == "ok" and by[good].time_s > 0
    assert by[refused].status == "error" and "gemv" in by[refused].error


@pytest.mark.slow
def test_tuner_with_real_kernels_never_picks_the_wrong_one(tmp_path, two_formats, corrupt_knob):
    db = TuningDB(str(tmp_path / "t.jsonl"))
    runner = LocalRunner(settings=Settings(repeat=3))
    r = Tuner(db, runner, batch_size=64, confirm=2).tune_layer(small_layer(o=32, k=32, t=8), trials=64)
    corrupt = [x for x in db.records if x.knobs.get(TESTING_ONLY_CORRUPT)]
    assert corrupt and all(x.status == "wrong" and x.time_s is None for x in corrupt)
    assert r.best is not None and not r.best.config.knobs_dict.get(TESTING_ONLY_CORRUPT)
    assert db.best(Tuner(db, runner).key(r.layer, r.best.config)).status == "ok"


# -- sparsec compile uses the database ------------------------------------------------------------
def test_compile_uses_tuned_format_and_knobs(tmp_path, two_formats):
    import sparsec
    from sparsec.passes.autotune.driver import layers_of, prepare_graph
    from zoo import MLP

    torch.manual_seed(0)
    m = MLP(32, 64, 10).eval()
    x = (torch.randn(16, 32),)
    g = prepare_graph(m, x, pattern="unstructured", sparsity=0.8)
    layers = layers_of(g, "unstructured")
    assert len(layers) == 3
    db = TuningDB(str(tmp_path / "t.jsonl"))

    class HostFake(FakeRunner):             # the host's real target/features, so compile's lookup matches
        target_sig = space_mod.target_signature(None)
        features = space_mod.host_features()
    for layer in layers:
        Tuner(db, HostFake(_timef), confirm=0).tune_layer(layer, trials=100)
    c = sparsec.compile(m, x, pattern="unstructured", sparsity=0.8, tuning_db=str(db.path))
    assert all(r["format"] == "csr" and r["reason"].startswith("tuned") for r in c.report)
    assert any("'t_tile': 8" in doc for doc in c.compiled.functions.values())
    from sparsec.ir.interpret import interpret
    ref = interpret(c.graph, *x)[0]
    assert torch.allclose(c(*x)[0], ref, rtol=1e-4, atol=1e-4)
    # without the database: the selection pass decides (no "tuned" reasons)
    c0 = sparsec.compile(m, x, pattern="unstructured", sparsity=0.8, tuning_db=False)
    assert not any(r["reason"].startswith("tuned") for r in c0.report)


def test_compile_ignores_db_of_other_version(tmp_path, two_formats, monkeypatch):
    import sparsec
    from sparsec.passes.autotune.driver import layers_of, prepare_graph
    from zoo import MLP

    m = MLP(32, 64, 10).eval()
    x = (torch.randn(16, 32),)
    g = prepare_graph(m, x, pattern="unstructured", sparsity=0.8)
    db = TuningDB(str(tmp_path / "t.jsonl"))

    class HostFake(FakeRunner):
        target_sig = space_mod.target_signature(None)
        features = space_mod.host_features()
    monkeypatch.setattr("sparsec.passes.autotune.search.versions", lambda: "sparsec=0.0.1;tvm=0.0")
    for layer in layers_of(g, "unstructured"):
        Tuner(db, HostFake(_timef), confirm=0).tune_layer(layer, trials=100)
    c = sparsec.compile(m, x, pattern="unstructured", sparsity=0.8, tuning_db=str(db.path))
    assert not any(r["reason"].startswith("tuned") for r in c.report)


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_autotune_errors_and_merge(tmp_path, capsys):
    from sparsec.cli import main
    from sparsec.commands.autotune import parse_budget

    assert parse_budget("10m") == 600 and parse_budget("90s") == 90 and parse_budget("2") == 2
    assert main(["autotune", "m.py", "--rpc", "127.0.0.1:9190"]) == 1
    assert "--key" in capsys.readouterr().err
    assert main(["autotune", "m.py", "--budget", "ten minutes"]) == 1
    assert main(["autotune", "m.py", "--target", "cuda"]) == 1
    a = tmp_path / "a.jsonl"
    TuningDB(str(a)).append(rec(key(), 1e-5))
    assert main(["autotune", "--merge", str(tmp_path / "out.jsonl"), str(a)]) == 0
    assert len(TuningDB(str(tmp_path / "out.jsonl"))) == 1


def test_cli_autotune_runs_and_resumes(tmp_path):
    model = tmp_path / "tiny.py"
    model.write_text("import torch\nimport torch.nn as nn\ntorch.manual_seed(0)\n"
                     "model = nn.Sequential(nn.Linear(32, 48))\n"
                     "def example_inputs():\n    return (torch.randn(8, 32),)\n")
    dbp = tmp_path / "db.jsonl"
    cmd = [sys.executable, "-m", "sparsec", "autotune", str(model), "--sparsity", "0.9", "--trials", "4",
           "--db", str(dbp), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "48x32 T=8" in r.stdout and "4 new trials" in r.stdout
    recs = [json.loads(line) for line in dbp.read_text().splitlines()]
    mm = [x for x in recs if x["key"]["op"] == "matmul"]
    assert len(mm) >= 4 and all(x["key"]["shape"] == [48, 32, 8] for x in mm)
    # the layout transposes around the matmul are tuned too (their own keys), and tabled
    assert {x["key"]["op"] for x in recs} - {"matmul"} == {"te:transpose"}
    assert "transpose 8x32" in r.stdout


def test_db_best_is_decided_by_confirmation_and_drops_flaky_configs(tmp_path):
    """`sparsec compile` reads a layer's knobs through TuningDB.best: the interleaved confirmation of the
    finalists decides over a lucky first sample, and a configuration that ever failed never counts."""
    db = TuningDB(str(tmp_path / "t.jsonl"))
    k = TuningKey("matmul:csr", (64, 64, 1), "float32", "csr", (), "-", "t", "f", "v")
    d, lucky, flaky = {"parallel": None}, {"parallel": False}, {"parallel": True}
    db.append(Record(k, d, "ok", 2e-5, [2e-5]))
    db.append(Record(k, lucky, "ok", 1e-5, [1e-5]))
    assert db.best(k).knobs == lucky                      # no confirmation yet: the fastest sample
    db.append(Record(k, d, "ok", 2.1e-5, [2.1e-5], runner="local:confirm"))
    db.append(Record(k, lucky, "ok", 2.4e-5, [2.4e-5], runner="local:confirm"))
    assert db.best(k).knobs == d                          # the confirmation decides
    db.append(Record(k, flaky, "ok", 0.5e-5, [0.5e-5], runner="local:confirm"))
    assert db.best(k).knobs == flaky
    db.append(Record(k, flaky, "wrong", None, [], "max relative error 1 > 1e-4", runner="local:confirm"))
    assert db.best(k).knobs == d                          # failed once: out


def test_db_best_keeps_the_default_unless_reliably_faster(tmp_path):
    """A tuned configuration replaces the confirmed default (INCUMBENT) only when it is MIN_GAIN faster
    and the two interquartile ranges are apart: a within-noise "win" of a 10-70 us kernel measured
    slower than the default on re-measurement."""
    from sparsec.passes.autotune.db import CONFIRM, INCUMBENT, MIN_GAIN, beats

    db = TuningDB(str(tmp_path / "t.jsonl"))
    k = TuningKey("matmul:csr", (64, 64, 1), "float32", "csr", (), "-", "t", "f", "v")
    d, a, b = {"chains": None}, {"chains": 2}, {"chains": 8}
    tight = lambda m: [m * f for f in (0.99, 0.995, 1.0, 1.0, 1.005, 1.01, 1.0)]   # noqa: E731
    db.append(Record(k, d, "ok", 2e-5, tight(2e-5), runner="local" + INCUMBENT))
    db.append(Record(k, a, "ok", 2e-5 * (1 - MIN_GAIN / 2), tight(2e-5 * (1 - MIN_GAIN / 2)), runner="local" + CONFIRM))
    assert db.best(k).knobs == d                           # 1 % faster: inside the margin
    wide = [1.2e-5, 1.4e-5, 1.6e-5, 1.7e-5, 2.2e-5, 2.4e-5, 1.6e-5]
    db.append(Record(k, b, "ok", 1.6e-5, wide, runner="local" + CONFIRM))
    assert db.best(k).knobs == d                           # 20 % faster median, but its spread overlaps
    db.append(Record(k, b, "ok", 1.61e-5, tight(1.61e-5), runner="local" + CONFIRM))
    assert db.best(k).knobs == b                           # the latest confirmation: reliably faster
    assert beats(db.best(k), Record(k, d, "ok", 2e-5, tight(2e-5)))
    assert not beats(Record(k, d, "ok", 2e-5, tight(2e-5)), db.best(k))


def test_tuner_keeps_default_knobs_within_the_margin(tmp_path, two_formats):
    """Search with injected times: a non-default CSR schedule 1 % faster than CSR's default is not picked,
    one 30 % faster is."""
    from sparsec.passes.autotune.db import INCUMBENT

    for gain, want_default in ((0.01, True), (0.30, False)):
        def timef(c, gain=gain):
            if c.format == "dense":
                return 1e-4
            return 1e-5 * (1 - gain if c.knobs_dict.get("t_tile") == 8 else 1.0)
        db = TuningDB(str(tmp_path / f"t{gain}.jsonl"))
        r = Tuner(db, FakeRunner(timef)).tune_layer(small_layer())
        assert r.best.config.format == "csr"
        assert (r.best.config == r.default_best.config) == want_default, r.best.config.label
        k = Tuner(db, FakeRunner(timef)).key(r.layer, r.best.config)
        assert db.best(k).knobs == r.best.config.knobs_dict          # what compile reads agrees
        assert any(x.runner.endswith(INCUMBENT) for x in db.for_key(k))
