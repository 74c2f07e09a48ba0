"""CUDA autotuning of the tiled kernel (``backends/cuda/tune.py``, ``scripts/gpu/tune_tiled.py``,
``sparsec autotune --target cuda``).

The GPU step cannot run here; its result file is made with the GPU script's own assembly functions
(``finalists``, ``cell_result``) from drawn times, so what is tested is everything around the measurement: the
candidates, the import into the tuning database, the choice (a wrong kernel never; a faster one only beyond the
margin), and that ``sparsec compile --target cuda`` then runs the tuned knobs.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

from sparsec.backends.cuda import tune
from sparsec.backends.cuda.kernels.tiled import resolve
from sparsec.backends.kernels.common import MatmulSpec
from sparsec.ir.errors import ParameterError, SerializationError
from sparsec.passes.autotune.db import TuningDB

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "gpu"))
import tune_tiled  # noqa: E402

HAS_NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


@pytest.fixture(autouse=True)
def _no_shipped(monkeypatch):
    """The shipped H100 records would answer these lookups; each test brings its own database."""
    monkeypatch.setenv("SPARSEC_CUDA_SHIPPED_TUNING", "0")


@pytest.mark.parametrize("O,K,T,d", [(11008, 4096, 32, 0.3), (4096, 11008, 16, 0.1), (9216, 36864, 8, 0.2),
                                     (4096, 4096, 1, 0.1)])
def test_candidates_planner_first_splits_around_each_variant(O, K, T, d):
    c = tune.Cell(O, K, T, d)
    cands = tune.candidates(c)
    assert cands[0] == tune.planner_knobs(c)
    assert len({json.dumps(k, sort_keys=True) for k in cands}) == len(cands)
    spec = MatmulSpec(T, O, K, False, None, "float16")
    for kn in cands:                 # each one is what the kernel resolves it to (the build asserts the same)
        r = resolve(spec, kn).knobs()
        r.pop("design")
        assert r == kn
    d0 = cands[0]["ksplit"]
    same = {k["ksplit"] for k in cands if {a: b for a, b in k.items() if a != "ksplit"}
            == {a: b for a, b in cands[0].items() if a != "ksplit"}}
    assert same == set(tune.split_candidates(d0))
    assert {d0 - 1, d0 + 1, 2 * d0} - {0} <= same
    # the neighbouring density class's variant is tried too
    assert any({a: b for a, b in k.items() if a != "ksplit"} != {a: b for a, b in cands[0].items() if a != "ksplit"}
               for k in cands)


def test_candidates_refuse_a_shape_the_kernel_cannot_take():
    with pytest.raises(ParameterError, match="does not take"):
        tune.candidates(tune.Cell(2048, 2052, 16, 0.3, where="m.py: fc.weight"))   # K % 8 != 0 under mma="wg"


def _results(cells, times_of, wrong=(), gpu="NVIDIA H100 80GB HBM3"):
    """A results.json as tune_tiled.py writes it, for tune.json cells, with drawn per-candidate times."""
    out = {"schema": tune.SCHEMA, "machine": {"gpu": gpu}, "when": "2026-11-24T14:00:00", "cells": []}
    for ci, cell in enumerate(cells):
        entries, times, conf = [], {}, {}
        for j, cd in enumerate(cell["candidates"]):
            e = {"name": cd["name"], "knobs": cd["knobs"]}
            if (ci, j) in wrong:
                e.update(status="wrong", error="relative error 3e-1 vs F.linear")
            else:
                e["status"] = "ok"
                times[cd["name"]] = times_of(ci, j, 3)
            entries.append(e)
        fin = tune_tiled.finalists(cell, entries, times)
        for e in fin:
            conf[e["name"]] = times_of(ci, cell["candidates"].index(next(c for c in cell["candidates"]
                                                                         if c["name"] == e["name"])), 9)
        out["cells"].append(tune_tiled.cell_result(cell, entries, fin, conf))
    return out


def _times(base, rel):
    """Samples around ``base * rel[j]`` with a 0.4 % spread."""
    def f(ci, j, n):
        return [base[ci] * rel[ci].get(j, 1.0) * (1 + 0.002 * ((k % 3) - 1)) for k in range(n)]
    return f


def test_import_and_lookup_choose_reliably_faster_never_wrong(tmp_path):
    cells = [tune.cell_doc(tune.Cell(11008, 4096, 32, 0.3), 0), tune.cell_doc(tune.Cell(4096, 11008, 16, 0.3), 1),
             tune.cell_doc(tune.Cell(9216, 36864, 32, 0.1), 2)]
    # cell 0: candidate 4 is 8 % faster; cell 1: candidate 2 only 1 % faster (within the margin); cell 2: candidate
    # 3 would be 20 % faster but is wrong, candidate 5 is 5 % faster
    rel = [{4: 0.92}, {2: 0.99}, {3: 0.8, 5: 0.95}]
    res = _results(cells, _times([25.0, 20.0, 60.0], rel), wrong={(2, 3)})
    p = tmp_path / "results.json"
    p.write_text(json.dumps(res))
    db = TuningDB(str(tmp_path / "db.jsonl"))
    s = tune.import_results(str(p), db)
    assert s["cells"] == 3 and s["not_ok"] == 1
    assert len(s["changed"]) == 2
    kn, rec, src = tune.lookup(11008, 4096, 32, 0.3, "float16", "sm_90a", db)
    assert kn == cells[0]["candidates"][4]["knobs"] and src == db.path and abs(rec.time_s - 23e-6) < 1e-7
    assert tune.lookup(4096, 11008, 16, 0.3, "float16", "sm_90a", db)[0] == cells[1]["planner"]
    assert tune.lookup(9216, 36864, 32, 0.1, "float16", "sm_90a", db)[0] == cells[2]["candidates"][5]["knobs"]
    # the key: another density class, token count or arch is a miss; the stored fraction to two decimals is a hit
    assert tune.lookup(11008, 4096, 32, 0.2, "float16", "sm_90a", db) is None
    assert tune.lookup(11008, 4096, 16, 0.3, "float16", "sm_90a", db) is None
    assert tune.lookup(11008, 4096, 32, 0.3, "float16", "sm_90", db) is None
    assert tune.lookup(11008, 4096, 32, 0.3012, "float16", "sm_90a", db)[0] == kn
    assert tune.lookup(11008, 4096, 32, 0.3, "float16", "sm_90a", False) is None
    # the shipped form: only the records the choice rests on, the same choices
    small = TuningDB(str(tmp_path / "small.jsonl"))
    tune.import_results(str(p), small, decisive_only=True)
    assert len(small) < len(db) / 2
    for c in cells:
        args = (c["O"], c["K"], c["T"], c["density"], "float16", "sm_90a")
        assert tune.lookup(*args, small)[0] == tune.lookup(*args, db)[0]


def test_import_replace_decides_a_cell_by_the_new_run_alone(tmp_path):
    """A re-tune (``--replace``): the earlier run's records of the measured cells go, other cells' stay. Without it
    a faster record from the first run (e.g. measured warm) would still win the cell."""
    cells = [tune.cell_doc(tune.Cell(11008, 4096, 32, 0.3), 0), tune.cell_doc(tune.Cell(4096, 11008, 16, 0.3), 1)]
    first = tmp_path / "first.json"
    first.write_text(json.dumps(_results(cells, _times([25.0, 20.0], [{4: 0.8}, {2: 0.9}]))))
    db = TuningDB(str(tmp_path / "db.jsonl"))
    tune.import_results(str(first), db, decisive_only=True)
    n_other = len(db.for_key(tune.cell_key(tune.Cell(4096, 11008, 16, 0.3))))
    again = tmp_path / "again.json"                       # cell 0 only, re-measured: candidate 4 no faster now
    again.write_text(json.dumps(_results(cells[:1], _times([25.0], [{1: 0.9}]))))
    mixed = TuningDB(str(tmp_path / "mixed.jsonl"))
    tune.import_results(str(first), mixed, decisive_only=True)
    tune.import_results(str(again), mixed, decisive_only=True)
    assert tune.lookup(11008, 4096, 32, 0.3, "float16", "sm_90a", mixed)[0] == cells[0]["candidates"][4]["knobs"]
    s = tune.import_results(str(again), db, decisive_only=True, replace=True)
    assert s["replaced"] > 0
    assert tune.lookup(11008, 4096, 32, 0.3, "float16", "sm_90a", db)[0] == cells[0]["candidates"][1]["knobs"]
    assert len(db.for_key(tune.cell_key(tune.Cell(4096, 11008, 16, 0.3)))) == n_other
    assert TuningDB(db.path).records == db.records and not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_import_rejects_a_file_that_is_not_a_result(tmp_path):
    db = TuningDB(str(tmp_path / "db.jsonl"))
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema": "something else", "cells": []}))
    with pytest.raises(SerializationError, match="not a tuning result file"):
        tune.import_results(str(p), db)
    p.write_text("{not json")
    with pytest.raises(SerializationError, match="not a tuning result file"):
        tune.import_results(str(p), db)
    p.write_text(json.dumps({"schema": tune.SCHEMA, "cells": [{"O": 1}]}))
    with pytest.raises(SerializationError, match="cell 0: missing field"):
        tune.import_results(str(p), db)
    assert len(TuningDB(str(tmp_path / "db.jsonl"))) == 0


def _model_88(T=32):
    import torch.nn as nn

    torch.manual_seed(0)
    m = nn.Linear(2048, 2048).eval()
    with torch.no_grad():
        w = m.weight
        w[w.abs() <= w.abs().flatten().kthvalue(int(0.88 * w.numel())).values] = 0
    return m, (torch.randn(1, T, 2048),)


def _lowered(m, inputs, db):
    from sparsec.api import cuda_graph
    from sparsec.backends.cuda.compile import lower_graph_cuda

    g, *_ = cuda_graph(m, inputs, sparsity=None, pattern=None, format="auto", spec=None, arch="sm_90a",
                       dtype="float16", tuning_db=db)
    (k,) = lower_graph_cuda(g, "sm_90a", tuning_db=db).kernels.values()
    return k


def test_compile_runs_the_tuned_knobs_and_falls_back_when_they_do_not_fit(tmp_path):
    from sparsec.passes.autotune.db import Record

    m, inputs = _model_88()
    k = _lowered(m, inputs, False)
    assert k["design"] == "tiled" and "tuned" not in k
    planner = {a: b for a, b in k["knobs"].items() if a != "design"}
    db = TuningDB(str(tmp_path / "db.jsonl"))
    key = tune.tiled_key(2048, 2048, 32, k["density"], "float16", "sm_90a")
    tuned = dict(planner, ksplit=planner["ksplit"] + 1)
    db.append(Record(key, planner, "ok", 20e-6, [20e-6] * 5, runner="gpu:H100"))
    db.append(Record(key, tuned, "ok", 17e-6, [17e-6] * 5, runner="gpu:H100", host="H100"))
    k2 = _lowered(m, inputs, db)
    assert {a: b for a, b in k2["knobs"].items() if a != "design"} == tuned
    assert k2["tuned"] == {"measured_us": 17.0, "on": "H100", "db": db.path}
    # a record whose knobs this kernel refuses (sc=256 needs sp=1): the planner's knobs, no "tuned"
    db2 = TuningDB(str(tmp_path / "db2.jsonl"))
    db2.append(Record(key, dict(planner, sc=256, sp=0), "ok", 1e-6, [1e-6] * 5))
    k3 = _lowered(m, inputs, db2)
    assert {a: b for a, b in k3["knobs"].items() if a != "design"} == planner and "tuned" not in k3


def test_fused_activation_cells_tune_split_one_under_keys_of_their_own(tmp_path):
    """A layer with a fused activation cannot split K with atomics: its cell is tuned over the ``mma.sync``
    variants at split 1 and the wgmma variants at every split with the fixup (``fx=1``: the last block sums the
    splits, then the activation), under a key with ``epilogue=act``; compile looks that key up for such a layer,
    never the plain matmul's, nor the other way round."""
    import torch.nn as nn

    from sparsec.passes.autotune.db import Record

    plain, fused = tune.Cell(11008, 4096, 32, 0.3), tune.Cell(11008, 4096, 32, 0.3, fused=True)
    assert any(kn["ksplit"] > 1 for kn in tune.candidates(plain))
    cands = tune.candidates(fused)
    assert len(cands) > 1 and cands[0] == tune.planner_knobs(fused)
    assert all(kn["ksplit"] == 1 or (kn.get("mma") == "wg" and kn.get("fx") == 1) for kn in cands)
    assert any(kn["ksplit"] > 1 for kn in cands)
    kp = tune.tiled_key(11008, 4096, 32, 0.3, "float16", "sm_90a")
    kf = tune.tiled_key(11008, 4096, 32, 0.3, "float16", "sm_90a", fused=True)
    assert kp != kf and tune.cell_doc(fused, 0)["key"] == kf.to_json()

    lin, (x,) = _model_88()
    m = nn.Sequential(lin, nn.ReLU()).eval()
    k = _lowered(m, (x,), False)
    assert k["design"] == "tiled" and k["activation"] == "relu"
    assert k["knobs"]["mma"] == "wg" and k["knobs"]["fx"] == 1 and k["knobs"]["ksplit"] > 1   # the fixup sums splits
    planner = {a: b for a, b in k["knobs"].items() if a != "design"}
    cands = tune.candidates(tune.Cell(2048, 2048, 32, k["density"], fused=True))
    assert cands[0] == planner
    other = cands[1]                                      # another split of the wgmma variant
    db = TuningDB(str(tmp_path / "db.jsonl"))
    key_plain = tune.tiled_key(2048, 2048, 32, k["density"], "float16", "sm_90a")
    key_fused = tune.tiled_key(2048, 2048, 32, k["density"], "float16", "sm_90a", fused=True)
    db.append(Record(key_plain, planner, "ok", 20e-6, [20e-6] * 5))
    db.append(Record(key_plain, other, "ok", 10e-6, [10e-6] * 5))        # the plain matmul's: not this layer's
    assert "tuned" not in _lowered(m, (x,), db)
    db.append(Record(key_fused, planner, "ok", 20e-6, [20e-6] * 5))
    db.append(Record(key_fused, other, "ok", 15e-6, [15e-6] * 5, host="H100"))
    k2 = _lowered(m, (x,), db)
    assert {a: b for a, b in k2["knobs"].items() if a != "design"} == other and k2["tuned"]["on"] == "H100"
    # the plain layer reads the plain key, whose fastest record is `other` at 10 us
    assert {a: b for a, b in _lowered(lin, (x,), db)["knobs"].items() if a != "design"} == other


def test_dense_wgmma_cells_tune_the_split_and_schedule(tmp_path):
    """A dense layer on the wgmma GEMM (``kind="dense"``): the planner's knobs first, then every split of K within
    two waves and the stream-K schedules for each token tile; under a fused activation no split (``sk=3`` stays: it
    adds no atomics). Its key (format ``dense``, ``design=wgmma``) is apart from the tiled ones, and compile runs a
    dense layer's tuned knobs, falling back to the defaults without a record."""
    import torch.nn as nn

    from sparsec.passes.autotune.db import Record

    c = tune.Cell(2048, 2048, 256, 1.0, kind="dense")
    cands = tune.candidates(c)
    assert cands[0] == tune.planner_knobs(c) and cands[0]["ks"] == 4          # 16 tiles: the default split
    assert {kn["ks"] for kn in cands} >= {1, 2, 3, 4, 6, 8} and any(kn["sk"] == 3 for kn in cands)
    assert {kn["bn"] for kn in cands} == {256, 128}
    assert len({json.dumps(kn, sort_keys=True) for kn in cands}) == len(cands)
    fused = tune.candidates(tune.Cell(2048, 2048, 256, 1.0, kind="dense", fused=True))
    assert all(kn["ks"] == 1 for kn in fused) and {kn["sk"] for kn in fused} == {0, 3}
    kd = tune.cell_key(c)
    assert kd.format == "dense" and kd != tune.tiled_key(2048, 2048, 256, 1.0, "float16", "sm_90a")
    assert kd != tune.cell_key(tune.Cell(2048, 2048, 256, 1.0, kind="dense", fused=True))

    torch.manual_seed(0)
    m = nn.Linear(2048, 2048).eval()
    x = torch.randn(1, 256, 2048)
    k = _lowered(m, (x,), False)
    assert k["design"] == "wgmma" and k["format"] == "dense" and "tuned" not in k
    db = TuningDB(str(tmp_path / "db.jsonl"))
    other = next(kn for kn in cands if kn["sk"] == 3)
    db.append(Record(kd, cands[0], "ok", 20e-6, [20e-6] * 5))
    db.append(Record(kd, other, "ok", 15e-6, [15e-6] * 5, host="H100"))
    k2 = _lowered(m, (x,), db)
    assert k2["knobs"]["sk"] == 3 and k2["knobs"]["ks"] == 1 and k2["knobs"]["bn"] == other["bn"]
    assert k2["tuned"]["on"] == "H100"


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not installed")
def test_dense_cells_build_with_the_weight_as_it_is(tmp_path):
    """``build`` compiles a dense cell's candidates as wgmma kernels over the dense weight (arguments values, X, Y):
    what ``tune_tiled.py`` calls with the weight itself; each candidate's knobs resolve to the kernel built."""
    doc = tune.build([tune.Cell(300, 512, 200, 1.0, kind="dense")], str(tmp_path))
    (cell,) = doc["cells"]
    assert cell["kind"] == "dense" and cell["key"]["format"] == "dense" and len(cell["candidates"]) > 3
    assert all(cd["args"] == ["values", "X", "Y"] for cd in cell["candidates"])
    assert (tmp_path / "tune.so").exists() and json.load(open(tmp_path / "tune.json"))["kernels"] == \
        len(cell["candidates"])


def test_cli_cuda_errors(tmp_path, capsys):
    from sparsec.cli import main

    assert main(["autotune", "m.py", "--target", "cuda"]) == 1
    assert "three steps" in capsys.readouterr().err
    assert main(["autotune", "--target", "cuda", "--import", str(tmp_path / "nope.json"),
                 "--db", str(tmp_path / "db.jsonl")]) == 1
    assert "not a tuning result file" in capsys.readouterr().err
    assert main(["autotune", "m.py", "--emit", str(tmp_path / "x")]) == 1
    assert "--target cuda only" in capsys.readouterr().err
    assert main(["autotune", "--target", "cuda", "m.py", "--emit", str(tmp_path / "x"), "--replace"]) == 1
    assert "apply to --import" in capsys.readouterr().err
    model = tmp_path / "tiny.py"
    model.write_text("import torch\nimport torch.nn as nn\nmodel = nn.Linear(64, 64)\n"
                     "def example_inputs():\n    return (torch.randn(4, 64),)\n")
    assert main(["autotune", str(model), "--target", "cuda", "--emit", str(tmp_path / "x")]) == 1
    assert "no layer runs the tiled kernel or the dense wgmma GEMM" in capsys.readouterr().err
    assert not (tmp_path / "x" / "tune.json").exists()


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not installed")
def test_cli_emit_import_then_compile(tmp_path, capsys):
    """The three steps with the GPU one made from drawn times: --emit builds every candidate (a fatbin for
    sm_90a) of both cells of the 88 %-sparse layer (the tiled kernel and the dense GEMM), --import records the
    results, compile takes the faster split; and where the dense GEMM measured faster, the dense format."""
    from sparsec.backends.cuda import toolchain
    from sparsec.cli import main

    model = tmp_path / "m88.py"
    model.write_text("import torch\nimport torch.nn as nn\ntorch.manual_seed(0)\nmodel = nn.Linear(2048, 2048)\n"
                     "with torch.no_grad():\n    w = model.weight\n"
                     "    w[w.abs() <= w.abs().flatten().kthvalue(int(0.88 * w.numel())).values] = 0\n"
                     "def example_inputs():\n    return (torch.randn(1, 32, 2048),)\n")
    d = tmp_path / "tune"
    assert main(["autotune", str(model), "--target", "cuda", "--emit", str(d)]) == 0, capsys.readouterr().err
    assert sorted(os.listdir(d)) == ["tune.json", "tune.so"]          # written to temp paths and renamed
    doc = json.loads((d / "tune.json").read_text())
    cell, dcell = doc["cells"]
    assert (cell["O"], cell["K"], cell["T"]) == (2048, 2048, 32) and cell["kind"] == "tiled"
    assert (dcell["O"], dcell["K"], dcell["T"], dcell["kind"]) == (2048, 2048, 32, "dense")
    assert doc["kernels"] == len(cell["candidates"]) + len(dcell["candidates"])
    assert cell["candidates"][0]["knobs"] == cell["planner"] and cell["where"].endswith("weight")
    assert toolchain.fatbin_embedded(str(d / "tune.so"))
    j = len(cell["candidates"]) - 1
    res = _results(doc["cells"], _times([30.0, 40.0], [{j: 0.9}, {}]))
    res["l2"] = "cold"
    (d / "results.json").write_text(json.dumps(res))
    dbp = tmp_path / "db.jsonl"
    assert main(["autotune", "--target", "cuda", "--import", str(d / "results.json"), "--db", str(dbp)]) == 0
    out = capsys.readouterr().out
    assert "1 cells take tuned knobs" in out and "0.90x" not in out and "1.11x the planner's" in out
    assert all(r.runner.startswith("gpu:NVIDIA H100 80GB HBM3:l2=cold") for r in TuningDB(str(dbp)).records)
    from sparsec.frontends.load import load_model

    lm = load_model(str(model))
    k = _lowered(lm.model, lm.example_inputs, TuningDB(str(dbp)))
    assert {a: b for a, b in k["knobs"].items() if a != "design"} == cell["candidates"][j]["knobs"]
    assert k["format"] == "bitmap" and k["design"] == "tiled"      # measured 27 us against 40 us dense
    # the same layer where the dense GEMM measured faster (20 us): the dense format, on the measured wgmma kernel
    res = _results(doc["cells"], _times([30.0, 20.0], [{j: 0.9}, {}]))
    res["l2"] = "cold"
    (d / "results2.json").write_text(json.dumps(res))
    dbp2 = tmp_path / "db2.jsonl"
    assert main(["autotune", "--target", "cuda", "--import", str(d / "results2.json"), "--db", str(dbp2)]) == 0
    k = _lowered(lm.model, lm.example_inputs, TuningDB(str(dbp2)))
    assert k["format"] == "dense" and k["design"] == "wgmma" and k["tuned"]["measured_us"] < 21


def test_benchmark_variants_carry_the_planner_and_tuned_roles(tmp_path, monkeypatch):
    """``benchmarks/spmm_gpu.py`` reports the variant compile runs untuned and tuned: the bench cases tag them."""
    import cases as C
    from sparsec.passes.autotune.db import Record

    shipped = tmp_path / "shipped.jsonl"
    planner = tune.planner_knobs(tune.Cell(11008, 4096, 16, 0.3))
    tuned = dict(planner, ksplit=planner["ksplit"] + 1)
    TuningDB(str(shipped)).append(Record(tune.tiled_key(11008, 4096, 16, 0.3, "float16", "sm_90a"), tuned, "ok",
                                         1e-5, [1e-5] * 3))
    monkeypatch.setenv("SPARSEC_CUDA_SHIPPED_TUNING", "1")
    monkeypatch.setattr(tune, "SHIPPED", str(shipped))
    monkeypatch.setattr(tune, "_SHIPPED_DB", None)
    roles: dict = {}
    vs = C.tiled_variants(11008, 4096, 16, roles)
    where = {r: i for i, rs in roles.items() for r in rs}
    strip = (lambda k: {a: b for a, b in k.items() if a != "design"})  # noqa: E731
    assert strip(vs[where["planner70"]]) == planner and strip(vs[where["tuned70"]]) == tuned
    assert "tuned80" not in where and strip(vs[where["planner90"]]) == tune.planner_knobs(tune.Cell(11008, 4096, 16,
                                                                                                   0.1))


def test_shipped_h100_records_are_readable_current_and_resolvable(monkeypatch):
    """The shipped records answer lookups only while their key's versions match this build: a TVM or sparsec
    version change must fail here (re-tune: ``scripts/gpu/build_tune.py``), not silently stop matching."""
    from sparsec.backends.cuda import select as S

    db = TuningDB(tune.SHIPPED)
    assert len(db) > 0 and db.skipped == 0
    keys = {r.key.digest(): r.key for r in db.records}
    assert {k.versions for k in keys.values()} == {tune.versions()}
    monkeypatch.setenv("SPARSEC_CUDA_SHIPPED_TUNING", "1")
    changed = 0
    fused_keys = 0
    dense_keys = 0
    for k in keys.values():
        O, K, T = k.shape
        d = float(k.pattern.split("=")[1])
        fused = ("epilogue", "act") in k.params          # a layer with a fused activation (session 13)
        fused_keys += fused
        if k.format == "dense":                          # a dense layer on the wgmma GEMM (session 15)
            from sparsec.backends.cuda.kernels.wgmma_gemm import resolve as wg_resolve

            dense_keys += 1
            kn, rec, src = tune.lookup(O, K, T, 1.0, k.dtype, k.target.split(":")[1], fused=fused, kind="dense")
            assert src == tune.SHIPPED and rec.ok and rec.key == k
            spec = MatmulSpec(T, O, K, False, "relu" if fused else None, k.dtype)
            assert tune._wgmma_knobs(wg_resolve(O, K, T, kn, spec)) == kn
            continue
        kn, rec, src = tune.lookup(O, K, T, d, k.dtype, k.target.split(":")[1], fused=fused)
        assert src == tune.SHIPPED and rec.ok and rec.key == k
        r = resolve(MatmulSpec(T, O, K, False, "relu" if fused else None, k.dtype), kn).knobs()
        r.pop("design")
        assert r == kn
        changed += kn != tune.planner_knobs(tune.Cell(O, K, T, d, fused=fused))
        assert S.tiled_knobs(d, T, "sm_90a")     # a cell of the planner's tiled kernel
    assert changed > 0 and fused_keys > 0 and dense_keys > 0


def test_import_warns_when_the_results_come_from_another_build(tmp_path, capsys):
    """Records keyed with other versions never answer a lookup here: the import says so instead of staying quiet."""
    from sparsec.cli import main

    cells = [tune.cell_doc(tune.Cell(11008, 4096, 16, 0.3), 0)]
    res = _results(cells, _times([25.0], [{}]))
    for versions, warned in ((tune.versions(), False), ("sparsec=0.0.1;tvm=0.26.0", True)):
        res["versions"] = versions
        p = tmp_path / "r.json"
        p.write_text(json.dumps(res))
        assert main(["autotune", "--target", "cuda", "--import", str(p), "--db", str(tmp_path / "db.jsonl")]) == 0
        assert ("will not match compiles here" in capsys.readouterr().err) == warned


def test_wide_space_adds_single_knob_neighbours():
    c = tune.Cell(11008, 4096, 32, 0.1)
    base, wide = tune.candidates(c), tune.candidates(tune.Cell(11008, 4096, 32, 0.1, space="wide"))
    key = (lambda k: json.dumps(k, sort_keys=True))  # noqa: E731
    assert wide[:len(base)] == base and len(wide) > 2 * len(base)
    planner = base[0]
    for knob, v in (("wgs", 1), ("xd", 2), ("code", "pos7")):      # the planner's 90 % T=32 variant, one knob off
        assert planner[knob] != v
        assert any(k[knob] == v and all(k[a] == planner[a] for a in planner if a not in (knob, "ksplit"))
                   for k in wide), knob
    assert len({key(k) for k in wide}) == len(wide)
    assert any(k.get("fx") == 1 and k["mma"] == "wg" for k in wide)       # the split summed in one launch
    with pytest.raises(ParameterError, match="tuning space"):
        tune.candidates(tune.Cell(11008, 4096, 32, 0.1, space="huge"))
    # below 8 tokens the wide space also times the wg kernel (an 8-token tile), with and without the fixup, each
    # at half, one and two times its split; the default space keeps the mma.sync kernel only
    one = tune.candidates(tune.Cell(4096, 4096, 1, 0.1, space="wide"))
    wg = [k for k in one if k.get("mma") == "wg"]
    assert {k.get("fx", 0) for k in wg} == {0, 1} and len({k["ksplit"] for k in wg}) == 3
    assert not any(k.get("mma") == "wg" for k in tune.candidates(tune.Cell(4096, 4096, 1, 0.1)))
    assert not any(k.get("mma") == "wg" for k in tune.candidates(tune.Cell(4096, 4096, 1, 0.1, arch="sm_80",
                                                                            space="wide")))
    spec = MatmulSpec(1, 4096, 4096, False, None, "float16")
    for kn in wg:
        r = resolve(spec, kn).knobs()
        r.pop("design")
        assert r == kn


def test_cluster_space_sums_the_splits_of_the_planner_and_tuned_knobs_across_a_cluster(monkeypatch):
    """space="cluster": the planner's and the tuned record's knobs as they are, then each with fx=2 at splits 2-8 (a
    tile's splits are one thread-block cluster, at most 8 blocks); a dense cell keeps its two knob sets."""
    tuned = {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1, "wgs": 2, "ksplit": 11, "pdl": 2, "tn": 32}
    monkeypatch.setattr(tune, "lookup", lambda *a, **k: None if k.get("kind") == "dense" else (tuned, None))
    c = tune.Cell(4096, 4096, 32, 0.1, space="cluster")
    cands = tune.candidates(c)
    planner = tune.candidates(tune.Cell(4096, 4096, 32, 0.1))[0]
    assert cands[0] == planner
    plain = [k for k in cands if k.get("fx") != 2]
    assert [k["ksplit"] for k in plain] == [planner["ksplit"], 11]
    for base in (planner, plain[1]):
        cl = [k for k in cands if k.get("fx") == 2
              and all(k[a] == base[a] for a in base if a not in ("ksplit", "fx"))]
        assert sorted(k["ksplit"] for k in cl) == list(range(2, 9)), base
    assert len({json.dumps(k, sort_keys=True) for k in cands}) == len(cands)
    spec = MatmulSpec(32, 4096, 4096, False, None, "float16")
    for kn in cands:
        r = resolve(spec, kn).knobs()
        r.pop("design")
        assert r == kn
    dense = tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense", space="cluster"))
    assert 1 <= len(dense) <= 2 and not any(k.get("fx") for k in dense)


def test_refine_space_walks_one_knob_from_the_tuned_record(monkeypatch):
    """space="refine": the tuned record, each single-knob neighbour of it at its split (minb: register caps for more
    blocks per SM, at its split and one either side), and the record at more splits; all resolvable."""
    tuned = {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1, "wgs": 2, "ksplit": 11, "pdl": 2, "tn": 32}
    monkeypatch.setattr(tune, "lookup", lambda *a, **k: (tuned, None))
    cands = tune.candidates(tune.Cell(4096, 4096, 32, 0.1, space="refine"))
    spec = MatmulSpec(32, 4096, 4096, False, None, "float16")
    base = {k: v for k, v in resolve(spec, tuned).knobs().items() if k != "design"}
    assert cands[1] == base
    diff = (lambda k: {a for a in set(k) | set(base) if k.get(a) != base.get(a)})  # noqa: E731
    one = [k for k in cands[2:] if k["ksplit"] == 11 and len(diff(k)) == 1]
    assert {a for k in one for a in diff(k)} >= {"wgs", "xd", "code", "sc", "pdl", "minb", "fx"}
    assert {k["ksplit"] for k in cands if diff(k) == {"ksplit"}} >= {6, 8, 10, 12, 16}
    assert {(k["minb"], k["ksplit"]) for k in cands if k.get("minb") == 4} == {(4, 10), (4, 11), (4, 12)}
    assert not any(k.get("minb", 0) > 4 for k in cands)     # 256 threads x 5 blocks: under 64 registers
    monkeypatch.setattr(tune, "lookup", lambda *a, **k: None)
    dense = tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense", space="refine"))
    assert dense == tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense"))[:1]     # the planner's knobs
    assert len({json.dumps(k, sort_keys=True) for k in cands}) == len(cands)
    for kn in cands:
        r = resolve(spec, kn).knobs()
        r.pop("design")
        assert r == kn


def test_hint_space_tries_each_cache_hint_on_the_tuned_and_planner_knobs(monkeypatch):
    """space="hint": the planner's variant and the tuned record's, each at its split and one either side with every
    ``ldw`` and with the bulk L2 prefetch (``l2f``); a dense cell: the planner's and the tuned knobs with and without pdl=2, with every ``l2p``."""
    tuned = {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1, "wgs": 2, "ksplit": 11, "pdl": 2, "tn": 32}
    monkeypatch.setattr(tune, "lookup", lambda *a, **k: (tuned, None))
    cands = tune.candidates(tune.Cell(4096, 4096, 32, 0.1, space="hint"))
    spec = MatmulSpec(32, 4096, 4096, False, None, "float16")
    base = {k: v for k, v in resolve(spec, tuned).knobs().items() if k != "design"}
    got = {(k["ksplit"], k.get("ldw", 0), k.get("l2f", 0)) for k in cands
           if {a: v for a, v in k.items() if a not in ("ksplit", "ldw", "l2f")} == {a: v for a, v in base.items()
                                                                                      if a not in ("ksplit", "ldw")}}
    assert got == {(s, h, 0) for s in (10, 11, 12) for h in tune.HINT_LDW} | {(s, 0, 1) for s in (10, 11, 12)}
    assert len({json.dumps(k, sort_keys=True) for k in cands}) == len(cands)
    assert cands[0] == tune.candidates(tune.Cell(4096, 4096, 32, 0.1))[0]            # the planner's first
    for kn in cands:
        r = resolve(spec, kn).knobs()
        r.pop("design")
        assert r == kn
    dtuned = {"bm": 128, "bn": 32, "stages": 5, "ks": 4, "gm": 1, "wip": 1, "ws": 1, "tma": 1, "sk": 0}
    monkeypatch.setattr(tune, "lookup", lambda *a, **k: (dtuned, None))
    dense = tune.candidates(tune.Cell(4096, 4096, 32, 1.0, kind="dense", space="hint"))
    for kn in (tune.planner_knobs(tune.Cell(4096, 4096, 32, 1.0, kind="dense")), dtuned):
        core = {a: v for a, v in kn.items() if a not in ("pdl", "l2p")}
        variants = {(k.get("pdl", 0), k.get("l2p", 0)) for k in dense
                    if {a: v for a, v in k.items() if a not in ("pdl", "l2p")} == core}
        assert variants == {(p, h) for p in (0, 2) for h in tune.HINT_L2P}, kn


def test_cross_space_tries_the_records_of_other_token_counts_and_densities(monkeypatch):
    """space="cross": the tuned records of the same layer at the other token counts and density classes, retiled to
    this token count (their ``tn`` dropped), each at its split and one either side; a dense cell keeps the planner's
    and the tuned knobs."""
    recs = {(8, 0.1): {"mma": "wg", "code": "pos7", "sc": 256, "sp": 1, "wgs": 1, "ksplit": 9, "tn": 8, "pdl": 2},
            (32, 0.2): {"mma": "wg", "code": "pos7", "sc": 128, "wgs": 2, "ksplit": 9, "tn": 32, "pdl": 2}}
    seen = []

    def lookup(O, K, T, d, *a, **k):
        seen.append((T, d))
        return (recs[(T, d)], None) if (T, d) in recs else None

    monkeypatch.setattr(tune, "lookup", lookup)
    cands = tune.candidates(tune.Cell(4096, 4096, 32, 0.1, space="cross"))
    assert {(t, d) for t in tune.CROSS_TOKENS for d in tune.VARIANT_DENSITIES} <= set(seen)
    spec = MatmulSpec(32, 4096, 4096, False, None, "float16")
    for (t, d), rec in recs.items():
        want = {k: v for k, v in resolve(spec, {k: v for k, v in rec.items() if k != "tn" or t == 32}).knobs().items()
                if k != "design"}
        got = [k for k in cands if {a: v for a, v in k.items() if a != "ksplit"}
               == {a: v for a, v in want.items() if a != "ksplit"}]
        assert sorted(k["ksplit"] for k in got) == [8, 9, 10], (t, d)
        assert all(k["tn"] == 32 for k in got)                    # retiled to this token count
    assert cands[0] == tune.candidates(tune.Cell(4096, 4096, 32, 0.1))[0]
    monkeypatch.setattr(tune, "lookup", lambda *a, **k: None)
    dense = tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense", space="cross"))
    assert dense == tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense"))[:1]


def test_dense_wide_space_adds_row_tiles_and_pipeline_depths():
    """A dense cell's wide space: 64-row tiles (twice the blocks) and 4-8 stages at every split within four waves."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import SMS

    c = tune.Cell(4096, 4096, 8, 1.0, kind="dense")
    base, wide = tune.candidates(c), tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense", space="wide"))
    assert wide[:len(base)] == base and len(wide) > 3 * len(base)
    assert {k["bm"] for k in base} == {128} and {k["bm"] for k in wide} == {64, 128}
    assert {k["stages"] for k in wide} >= {4, 5, 6, 8}
    assert max(k["ks"] * 4096 // k["bm"] for k in wide) <= 4 * SMS
    assert any(k["bm"] == 64 and k["ks"] == 8 for k in wide)
    assert len({json.dumps(k, sort_keys=True) for k in wide}) == len(wide)
    fused = tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense", fused=True, space="wide"))
    assert all(k["ks"] == 1 for k in fused) and {k["bm"] for k in fused} == {64, 128}


def test_build_tune_cells_parse_sparse_and_dense(capsys):
    import build_tune as B

    cells = B.parse_cells("4096x4096@8:dense,11008x4096@32:0.9", "sm_90a", "wide")
    assert [(c.O, c.K, c.T, c.kind, c.density, c.space) for c in cells] == [
        (4096, 4096, 8, "dense", 1.0, "wide"), (11008, 4096, 32, "tiled", 0.1, "wide")]
    with pytest.raises(SystemExit, match="11008x4096@32"):
        B.parse_cells("11008x4096@32", "sm_90a", "default")


def test_benchmark_times_the_tuned_dense_kernel_compile_runs(tmp_path, monkeypatch):
    """A shipped dense record whose knobs differ from the defaults adds the kernel compile runs for that layer to
    the benchmark; a record that resolves to the defaults (or none) adds nothing."""
    import cases as C
    from sparsec.passes.autotune.db import Record

    shipped = tmp_path / "shipped.jsonl"
    c = tune.Cell(4096, 4096, 8, 1.0, kind="dense")
    planner = tune.planner_knobs(c)
    other = next(k for k in tune.candidates(tune.Cell(4096, 4096, 8, 1.0, kind="dense", space="wide"))
                 if k["bm"] == 64)
    TuningDB(str(shipped)).append(Record(tune.cell_key(c), other, "ok", 1e-5, [1e-5] * 3))
    TuningDB(str(shipped)).append(Record(tune.cell_key(tune.Cell(4096, 4096, 16, 1.0, kind="dense")),
                                         tune.planner_knobs(tune.Cell(4096, 4096, 16, 1.0, kind="dense")), "ok",
                                         1e-5, [1e-5] * 3))
    monkeypatch.setenv("SPARSEC_CUDA_SHIPPED_TUNING", "1")
    monkeypatch.setattr(tune, "SHIPPED", str(shipped))
    monkeypatch.setattr(tune, "_SHIPPED_DB", None)
    assert planner["bm"] == 128
    kn = C.tuned_dense_knobs(4096, 4096, 8)
    assert kn["bm"] == 64 and kn["ks"] == other["ks"]
    assert C.tuned_dense_knobs(4096, 4096, 16) is None and C.tuned_dense_knobs(4096, 4096, 32) is None
    names = {b["name"] for b in C.bench_cases()}
    assert "b_wgdensetuned_4096x4096x8" in names and "b_wgdensetuned_4096x4096x16" not in names


def test_cli_emit_keys_cells_by_the_compile_dtype(tmp_path, monkeypatch):
    """``--dtype bfloat16``: the cells (and so the records' keys) are bf16, what a ``compile --dtype bfloat16``
    looks up; the build itself is stubbed here (the nvcc build is the test above)."""
    from sparsec.cli import main

    seen = []
    monkeypatch.setattr(tune, "build", lambda cells, out, arch, progress=None: seen.extend(cells) or
                        {"cells": [tune.cell_doc(c, i) for i, c in enumerate(cells)], "kernels": 0})
    model = tmp_path / "m.py"
    model.write_text("import torch\nimport torch.nn as nn\ntorch.manual_seed(0)\nmodel = nn.Linear(2048, 2048)\n"
                     "def example_inputs():\n    return (torch.randn(1, 32, 2048),)\n")
    assert main(["autotune", str(model), "--target", "cuda", "--sparsity", "0.88", "--dtype", "bfloat16",
                 "--emit", str(tmp_path / "t")]) == 0
    c, cd = seen                          # the tiled kernel and the dense GEMM: the format decided by measurement
    assert c.dtype == cd.dtype == "bfloat16" and abs(c.density - 0.12) < 1e-3 and cd.kind == "dense"
    assert tune.cell_doc(c, 0)["key"]["dtype"] == tune.cell_doc(cd, 1)["key"]["dtype"] == "bfloat16"
    assert main(["autotune", str(model), "--dtype", "bfloat16"]) == 1


def test_format_decided_by_measurement_only_between_like_records(tmp_path):
    """``cuda_choice`` takes the measured faster of the tiled kernel and the dense wgmma GEMM when one database
    holds both for the layer's keys, measured under the same condition (GPU, L2 mode); a record of one side alone,
    or of the two sides under different conditions, leaves the cost rule's choice. The report says which."""
    from sparsec.backends.cuda.compile import cuda_choice
    from sparsec.passes.autotune.db import Record

    m, _ = _model_88()
    w = m.weight.detach().half()
    d = float(torch.count_nonzero(w)) / w.numel()
    predicted = cuda_choice("w", w, "auto", None, 32, "sm_90a", False)
    assert predicted.format == "bitmap" and "cost rule" in predicted.reason
    kt = tune.tiled_key(2048, 2048, 32, d, "float16", "sm_90a")
    kd = tune.dense_key(2048, 2048, 32, "float16", "sm_90a")
    planner_t = tune.planner_knobs(tune.Cell(2048, 2048, 32, d))
    planner_d = tune.planner_knobs(tune.Cell(2048, 2048, 32, 1.0, kind="dense"))

    db = TuningDB(str(tmp_path / "db.jsonl"))
    db.append(Record(kt, planner_t, "ok", 30e-6, [30e-6] * 5, runner="gpu:H100:l2=cold", host="H100"))
    assert cuda_choice("w", w, "auto", None, 32, "sm_90a", db).reason == predicted.reason       # one side only
    db.append(Record(kd, planner_d, "ok", 20e-6, [20e-6] * 5, runner="gpu:H100", host="H100"))
    assert cuda_choice("w", w, "auto", None, 32, "sm_90a", db).format == "bitmap"               # warm vs cold
    db.append(Record(kd, planner_d, "ok", 20e-6, [20e-6] * 5, runner="gpu:H100:l2=cold", host="H100"))
    ch = cuda_choice("w", w, "auto", None, 32, "sm_90a", db)
    assert ch.format == "dense" and "measured 30.0 us (tiled) vs 20.0 us (dense wgmma) on H100" in ch.reason
    chosen = [c for c in ch.candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["design"] == "wgmma" and chosen[0]["measured_us"] == 20.0
    assert cuda_choice("w", w, "auto", None, 32, "sm_90a", False).format == "bitmap"           # no database
    # the fused key is another layer: its records do not decide the plain one, nor the other way round
    assert cuda_choice("w", w, "auto", None, 32, "sm_90a", db, fused=True).format == "bitmap"
    # compile: the lowered layer runs the dense wgmma GEMM, not the dense design the rule predicts faster
    k = _lowered(m, _model_88()[1], db)
    assert k["format"] == "dense" and k["design"] == "wgmma"
