"""Sparsity specs (config files), the GMP schedule and the cost model's pieces."""
import json
import math
import textwrap

import pytest
import torch
from hypothesis import given, strategies as st

import zoo
from sparsec.errors import ConfigError
from sparsec.frontends import import_module
from sparsec.ir import formats as F
from sparsec.passes.canonicalize import canonicalize_matmul
from sparsec.passes.cost import CostModel, Stats, features, host_desc
from sparsec.passes.cost.model import fit
from sparsec.passes.prune import prune
from sparsec.passes.spec import default_exclusions, gmp_sparsity, load_spec, parse_spec, plan_spec, sparsify_by_spec


@pytest.fixture(scope="module")
def bert_graph():
    m, x = zoo.bert()
    return canonicalize_matmul(import_module(m, x))


@pytest.fixture(scope="module")
def cnn_graph():
    m, x = zoo.hand_models()["cnn"]
    return import_module(m, x)


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_spec_rules_first_match_wins(tmp_path, bert_graph):
    path = write(tmp_path, """
        [[rule]]
        layers = "encoder.layer.*.intermediate.dense"
        pattern = "2:4"

        [[rule]]
        layers = "encoder.layer.0.*"
        pattern = "dense"

        [[rule]]
        layers = "*"
        pattern = "unstructured"
        sparsity = 0.8
        """)
    spec = load_spec(path)
    plan = plan_spec(bert_graph, spec)
    assert plan["encoder.layer.0.intermediate.dense.weight"].pattern == "2:4"
    assert plan["encoder.layer.0.attention.self.query.weight"].pattern == "dense"
    assert plan["encoder.layer.1.attention.self.query.weight"].sparsity == 0.8
    assert "pooler.dense.weight" not in plan            # the output head is excluded by default
    g = sparsify_by_spec(bert_graph, spec)
    q1 = g.constant("encoder.layer.1.attention.self.query.weight").dense()
    assert float((q1 == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    q0 = g.constant("encoder.layer.0.attention.self.query.weight").dense()
    assert torch.equal(q0, bert_graph.constant("encoder.layer.0.attention.self.query.weight").dense())


def test_default_exclusions_first_conv_and_head(cnn_graph):
    spec = parse_spec({"rule": [{"layers": "*", "pattern": "unstructured", "sparsity": 0.5}]})
    ex = default_exclusions(cnn_graph, spec)
    assert ex == {"conv1.weight", "fc.weight"}
    spec2 = parse_spec({"exclude_first_conv": False, "exclude_head": False,
                        "rule": [{"layers": "*", "pattern": "unstructured", "sparsity": 0.5}]})
    assert default_exclusions(cnn_graph, spec2) == set()


@pytest.mark.parametrize("rule, match", [
    ({"layers": "*", "pattern": "diagonal", "sparsity": 0.5}, r"rule 1 \(layers = '\*'\): unknown sparsity pattern"),
    ({"layers": "*", "pattern": "4:4"}, r"rule 1 .*1 <= N < M"),
    ({"layers": "*", "pattern": "unstructured", "sparsity": 1.0}, r"rule 1 .*sparsity must be a number in \[0, 1\)"),
    ({"layers": "*", "pattern": "unstructured", "sparsity": -0.1}, r"sparsity must be"),
    ({"layers": "*", "pattern": "unstructured"}, r"rule 1 .*needs a 'sparsity'"),
    ({"pattern": "2:4"}, r"rule 1: 'layers'"),
    ({"layers": "*", "pattern": "2:4", "colour": "red"}, r"unknown key"),
])
def test_spec_errors_name_the_rule(rule, match):
    with pytest.raises(ConfigError, match=match):
        parse_spec({"rule": [rule]}, "s.toml")


def test_rule_matching_nothing_is_an_error(bert_graph):
    spec = parse_spec({"rule": [{"layers": "*", "pattern": "2:4"},
                                {"layers": "decoder.*", "pattern": "2:4"}]}, "s.toml")
    with pytest.raises(ConfigError, match=r"rule 2 \(layers = 'decoder\.\*'\) matches no layer"):
        plan_spec(bert_graph, spec)


def test_json_spec_and_bad_files(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"rule": [{"layers": "*", "pattern": "1:4"}]}))
    assert load_spec(str(p)).rules[0].pattern == "1:4"
    with pytest.raises(ConfigError, match="cannot parse"):
        load_spec(write(tmp_path, "[[rule]\nlayers = ", "bad.toml"))
    with pytest.raises(ConfigError, match="no such sparsity spec"):
        load_spec(str(tmp_path / "none.toml"))


def test_gmp_cubic_schedule():
    f = lambda t: gmp_sparsity(t, final=0.9, begin_step=100, end_step=1100, initial=0.0, frequency=100)
    assert f(0) == 0.0 and f(100) == 0.0 and f(1100) == 0.9 and f(5000) == 0.9
    assert f(600) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert f(650) == f(600)                  # held between updates
    vals = [f(t) for t in range(0, 1200, 50)]
    assert vals == sorted(vals)
    with pytest.raises(ConfigError):
        gmp_sparsity(0, final=1.2, begin_step=0, end_step=10)


# -- cost model pieces --------------------------------------------------------------

@given(st.integers(1, 40), st.integers(1, 70), st.sampled_from([0.0, 0.3, 0.9]), st.integers(0, 1000))
def test_stats_estimate_equals_packed(rows, cols, s, seed):
    w = prune(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)), "unstructured", s).weight
    for name, params, cls in [("dense", {}, F.Dense), ("csr", {}, F.CSR), ("bitmap", {"tile": (8, 8)}, F.Bitmap),
                              ("bsr", {"block": (4, 4)}, F.BSR), ("bsr", {"block": (1, 16)}, F.BSR),
                              ("groupquant", {"group": 16, "bits": 4}, F.GroupQuant)]:
        assert Stats.estimate(w, name, params) == Stats.of(cls.from_dense(w, **params))
    w = prune(w, "2:8").weight
    assert Stats.estimate(w, "nm", {"n": 2, "m": 8}) == Stats.of(F.NM.from_dense(w, n=2, m=8))


def test_features_count_wasted_work():
    w = torch.zeros(8, 8)
    w[0, 0] = 1.0                                     # one non-zero, one 4x4 block
    bsr = F.BSR.from_dense(w, block=(4, 4))
    csr = F.CSR.from_dense(w)
    assert features(bsr, 10).macs == 16 * 10          # the block's 15 zeros are computed too
    assert features(csr, 10).macs == 1 * 10
    assert features(F.Dense.from_dense(w), 10).macs == 64 * 10


def test_fit_recovers_known_coefficients():
    true = [3e-6, 2e-11, 5e-11, 1e-10, 4e-9]
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(30):
        from sparsec.passes.cost.model import Features
        f = Features(float(torch.randint(1, 10**7, (1,), generator=g)), float(torch.randint(1, 10**7, (1,), generator=g)),
                     float(torch.randint(0, 10**6, (1,), generator=g)), float(torch.randint(1, 10**4, (1,), generator=g)))
        samples.append((f, sum(a * b for a, b in zip(true, f.vector()))))
    got = fit(samples)
    for a, b in zip(got, true):
        assert a == pytest.approx(b, rel=1e-3)


def test_analytic_model_orders_by_sparsity():
    cm = CostModel.analytic(host_desc(2))
    w = torch.randn(768, 768)
    t50 = cm.predict(Stats.estimate(prune(w, "unstructured", 0.5).weight, "csr", {}), 128)
    t90 = cm.predict(Stats.estimate(prune(w, "unstructured", 0.9).weight, "csr", {}), 128)
    assert t90 < t50
    d = cm.predict(Stats.estimate(w, "dense", {}), 128)
    assert d > 0 and math.isfinite(d)


def test_cost_model_json_round_trip(tmp_path):
    cm = CostModel.analytic(host_desc(2))
    cm.coef["csr/tokens"] = [1e-6, 2e-11, 3e-11, 4e-11, 5e-9]
    p = str(tmp_path / "c.json")
    cm.save(p)
    back = CostModel.from_json(json.loads(open(p).read()))
    assert back.coef == cm.coef and back.target == cm.target
