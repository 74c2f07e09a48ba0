"""Non-GEMM work of a training step: vector passes, activation matmuls, the weight update, the switch."""
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sparsec.passes.bdwp import DENSE, parse_nm
from sparsec.sim.sat import builtin, compare, cycle, fast, load_config, simulate, vector
from sparsec.sim.sat.pipeline import Opts, build_step
from sparsec.sim.sat.simulator import gemm_only
from sparsec.sim.sat.workloads import Layer, MatMul, Vec, matmul_gemms

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "sim_sat.json"


def _cfg(lanes=16, pipeline=8):
    return load_config(overrides={"vector": {"lanes": lanes, "pipeline_cycles": pipeline}})


def test_relu_pass_cycles_by_hand():
    """ReLU forward over 1000 bf16 elements, 16 lanes, default DRAM (4 ch × 76 B/cycle, 64 B bursts, 40 latency).

    compute = ceil(1000·1/16) + 8 = 71; load = write = 2000 B = 32 bursts = 8 per channel = 512 B
    -> 40 + ceil(512/76) = 47 cycles. Pipeline (lag 2): load 0..47, compute 47..118, write-back
    job 2 starts when step 0 ends: 118 + 47 = 165.
    """
    cfg = _cfg()
    spec = vector.KINDS["relu"][0](2, Fraction(1))[0]
    assert (spec.reads, spec.writes, spec.ops) == ((2,), (2,), 1)
    vp = vector.VecPass("r", "VF", spec, 1000)
    st = vector.build(vp, cfg)
    assert st.fold.tolist() == [71] and st.load_bursts.tolist() == [32] and st.write_bursts.tolist() == [32]
    from sparsec.sim.sat.pipeline import Block, _concat
    seq = _concat([Block([st], np.zeros(1, np.int64), np.arange(1))], cfg, Opts())
    assert fast.evaluate(seq).total == 165
    assert cycle.run(seq, {}).total == 165
    assert vector.VectorUnit(cfg).run(1000, Fraction(1)) == 71


def test_chunking_and_bn_passes():
    """BN forward is two passes (stats: read only; normalise: read + write); chunks fit one buffer slot."""
    cfg = _cfg(lanes=128)
    fwd = vector.KINDS["bn"][0](2, Fraction(1))
    assert [(p.name, sum(p.reads), sum(p.writes), p.ops) for p in fwd] == [("stats", 2, 0, 2), ("norm", 2, 2, 1)]
    vp = vector.VecPass("bn", "VF", fwd[1], 300_000)
    st = vector.build(vp, cfg)
    # one A slot of 2-byte inputs, one Out slot of 2-byte outputs (double buffered)
    c = min(cfg.buffers.capacity("a"), cfg.buffers.capacity("out")) // 2 // 2
    assert st.elems.tolist() == [c] * (300_000 // c) + [300_000 % c]
    assert int(st.load.sum()) == int(st.write.sum()) == 600_000
    assert st.fold.tolist()[0] == -(-c // 128) + 8


@pytest.mark.parametrize("opt,srste,sparse", [("sgd", False, False), ("adamw", True, True), ("sgd", True, False)])
def test_optimiser_update_by_formula(opt, srste, sparse):
    """Per parameter: read master f + grad e + states·f (+ 1 mask bit per pruned weight with SR-STE),
    write master + states + the e-byte working copy; ops 3 (SGD) / 11 (AdamW) (+2 per pruned weight)."""
    layer = Layer("fc", "linear", 64, 32, h=1, bias=True)
    P, W = layer.params, layer.pruned_params
    assert (P, W) == (64 * 32 + 32, 64 * 32)
    e, f, lanes = 2, 4, 16
    spec = vector.optimiser_pass(opt, P, W if sparse else 0, e, f, srste)
    states = {"sgd": 1, "adamw": 2}[opt]
    mask = Fraction(W, 8 * P) if srste and sparse else 0
    assert sum(spec.reads) == f + e + states * f + mask
    assert sum(spec.writes) == f + states * f + e
    ops = {"sgd": 3, "adamw": 11}[opt] + (Fraction(2 * W, P) if srste and sparse else 0)
    assert spec.ops == ops
    cfg = _cfg(lanes)
    st = vector.build(vector.VecPass("fc.update", "OPT", spec, P), cfg)
    assert st.fold.tolist() == [-(-P * ops.numerator // (ops.denominator * lanes)) + 8]
    mask_bytes = -(-W // 8) if srste and sparse else 0
    assert int(st.load.sum()) == P * (f + e + states * f) + mask_bytes
    assert int(st.write.sum()) == P * (f + states * f + e)


def test_array_as_vector_unit_uses_cols_lanes():
    cfg = load_config(overrides={"vector": {"unit": "array"}})
    assert vector.lanes(cfg) == cfg.array.cols


def test_gemm_only_switch_reproduces_gemm_only_figures():
    """[step] gemm_only = true gives the GEMM-only model's cycles (ResNet-18, batch 32: the numbers
    committed before the non-GEMM work was added, 99,362,990 sparse / 184,196,915 dense)."""
    cfg = gemm_only(load_config())
    r = compare(builtin("resnet18"), cfg, "2:8", 32, Opts())
    assert (r["sparse"].totals["cycles"], r["dense"].totals["cycles"]) == (99362990, 184196915)
    assert r["speedup_gemm_only"] == r["speedup"]
    assert not any(row.kind in ("vector", "update", "matmul") for row in r["sparse"].rows)


def test_full_step_adds_the_same_work_to_both_modes():
    """The vector unit's work is the same in dense and sparse runs (SR-STE off), and the
    full-step speedup is below the GEMM-only one."""
    lays = [Layer("c1", "conv2d", 8, 16, 3, 3, 1, 1, 8, 8, post=(Vec("c1.bn", "bn", 16 * 64, params=32),
                                                                   Vec("c1.relu", "relu", 16 * 64))),
            Layer("fc", "linear", 16 * 64, 10, bias=True, post=(Vec("loss", "loss", 10),))]
    cfg = load_config(overrides={"step": {"srste": False}})
    r = compare(lays, cfg, "2:8", 4, Opts())
    work = lambda res: [(x.layer, x.phase, x.compute, x.dram_bytes) for x in res.rows
                        if x.kind in ("vector", "update")]
    assert work(r["sparse"]) == work(r["dense"]) and len(work(r["dense"])) == 10   # bn 2+2, relu 1+1, loss 1+1, two updates
    assert r["speedup"] < r["speedup_gemm_only"] <= r["bound"]


def test_attention_matmuls_are_dense_and_cl_equals_fast():
    """MatMul gemms: dense in both modes; CL moves each instance's data, equals numpy and the fast path."""
    mm = MatMul("att.qk", 3, 4, 5, count=2)
    ff, bp, wu = matmul_gemms(mm, batch=1)
    assert [(g.phase, g.m, g.k, g.n, g.count, g.sparse) for g in (ff, bp, wu)] == [
        ("FF", 3, 4, 5, 2, False), ("BP", 3, 5, 4, 2, False), ("WU", 4, 3, 5, 2, False)]
    lay = Layer("fc", "linear", 4, 8, h=3, post=(mm, Vec("sm", "softmax", 2 * 3 * 5)))
    cfg = load_config(overrides={"array": {"rows": 4, "cols": 4},
                                 "buffers": {"a_kib": 4, "b_kib": 2, "out_kib": 2},
                                 "tiling": {"t_candidates": [4, 8]}, "vector": {"lanes": 4}})
    seq = build_step([lay], 1, parse_nm("2:4"), cfg, Opts())
    rng = np.random.default_rng(0)
    from sparsec.sim.sat import functional
    data = {("fc", ph): v for ph, v in functional.layer_operands(
        lay, rng.standard_normal((3, 4)), rng.standard_normal((8, 4)), rng.standard_normal((3, 8)), "2:4").items()}
    inst = {}
    for g in (ff, bp, wu):
        inst[g.phase] = [(rng.standard_normal((g.m, g.k)), rng.standard_normal((g.k, g.n)), None,
                          g.groups) for _ in range(2)]
        data[("att.qk", g.phase)] = inst[g.phase]
    cl = cycle.run(seq, data)
    assert cl.total == fast.evaluate(seq).total
    np.testing.assert_array_equal(cl.comp_end, fast.evaluate(seq).comp_end)
    for ph, ops in inst.items():
        np.testing.assert_allclose(cl.outputs[("att.qk", ph)], np.stack([a @ b for a, b, _, _ in ops]),
                                   rtol=1e-9, atol=1e-9)


def test_bert_and_vit_have_attention_matmuls():
    for w, t in (("vit_b16", 197), ("bert_base", 128)):
        mms = [p for l in builtin(w) for p in l.post if isinstance(p, MatMul)]
        assert len(mms) == 24 and {(m.m, m.k, m.n, m.count) for m in mms} == {(t, 64, t, 12), (t, t, 64, 12)}


def test_builtin_parameter_counts():
    """The optimiser updates the networks' real parameter counts (torchvision / HF figures)."""
    got = {w: sum(l.params for l in builtin(w)) for w in ("resnet18", "resnet50", "vgg16", "vit_b16", "bert_base")}
    assert got == {"resnet18": 11689512, "resnet50": 25557032, "vgg16": 138357544, "vit_b16": 86567656,
                   "bert_base": 109483778}


def test_batch_one_speedups_within_bound():
    """Full step and GEMM-only at batch 1 (the committed batch-32 run covers all five built-ins below)."""
    cfg = load_config()
    for w in ("resnet18",):
        r = compare(builtin(w), cfg, "2:8", 1, Opts())
        assert 1.0 < r["speedup"] <= r["speedup_gemm_only"] <= r["bound"], w


def test_committed_benchmark_respects_bound():
    """benchmarks/results/sim_sat.json (batch 32, all five workloads): both figures within the bound."""
    res = json.loads(RESULTS.read_text())
    assert set(res["workloads"]) == {"resnet18", "resnet50", "vgg16", "vit_b16", "bert_base"}
    for w, r in res["workloads"].items():
        assert 1.0 < r["speedup"] <= r["speedup_gemm_only"] <= r["bound"] == 2.0, w
