"""torch.compile(backend="sparsec"): compiled vs eager torch (never vs sparsec's own lowering).

Inference on the hand models, the bundled examples and transformers models
(with and without pruning: pruned runs are compared with the eager model
carrying the same pruned weights), the weight guard, graph breaks and
fullgraph, the debug backend, shapes, and BDWP training (gradients of one step
vs eager autograd with the same masks; digits training under -m slow).
"""
import copy
import importlib.metadata
import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import zoo
from sparsec.errors import ModelError
from sparsec.frontends.load import load_model
from sparsec.passes.prune import prune

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def leaves(out):
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def rel_err(a, b):
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def check(m, x, backend="sparsec", **options):
    """torch.compile(m)(*x) == m(*x) (eager torch) within RTOL, every output."""
    c = torch.compile(m, backend=backend, options=options or None)
    with torch.no_grad():
        got, want = leaves(c(*x)), leaves(m(*x))
    assert len(got) == len(want) and got
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert rel_err(g, w) <= RTOL
    return c


def prune_linears(m, pattern, sparsity=None):
    """The eager model with every nn.Linear / nn.Conv2d weight pruned as sparsec's sparsify pass does."""
    m = copy.deepcopy(m)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                mod.weight.copy_(prune(mod.weight, pattern, sparsity).weight)
    return m


# -- registration ---------------------------------------------------------------------------

def test_backends_registered_by_entry_point_and_name():
    eps = {e.name: e.value for e in importlib.metadata.entry_points(group="torch_dynamo_backends")}
    assert eps["sparsec"] == "sparsec.frontends.dynamo:sparsec_backend"
    assert eps["sparsec_interp"] == "sparsec.frontends.dynamo:sparsec_interp_backend"
    from torch._dynamo import list_backends
    assert {"sparsec", "sparsec_interp"} <= set(list_backends(exclude_tags=()))


def test_unknown_option_is_a_clear_error():
    m, x = zoo.hand_models()["mlp"]
    with pytest.raises(Exception, match="unknown option.*sparsityy"):
        with torch.no_grad():
            torch.compile(m, backend="sparsec", options={"sparsityy": 0.9})(*x)


# -- inference vs eager -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder_block"])
def test_hand_models(name):
    m, x = zoo.hand_models()[name]
    check(m, x)


@pytest.mark.parametrize("name", ["mlp", pytest.param("cnn", marks=pytest.mark.slow),
                                  pytest.param("bert_encoder", marks=pytest.mark.slow)])
def test_bundled_examples(name):
    loaded = load_model(ROOT / "examples" / f"{name}.py")
    check(loaded.model, loaded.example_inputs)


@pytest.mark.parametrize("name", [pytest.param("bert", marks=pytest.mark.slow), pytest.param("vit", marks=pytest.mark.slow),
                                  pytest.param("resnet", marks=pytest.mark.slow),
                                  pytest.param("gpt2", marks=pytest.mark.slow)])
def test_transformers_models(name):
    m, x = zoo.TRANSFORMERS[name]()
    check(m, x)


@pytest.mark.parametrize("pattern, sparsity", [("2:4", None), ("unstructured", 0.9)])
def test_pruned_mlp_matches_eager_with_the_same_pruned_weights(pattern, sparsity):
    m, x = zoo.hand_models()["mlp"]
    c = torch.compile(m, backend="sparsec", options={"pattern": pattern, "sparsity": sparsity})
    ref = prune_linears(m, pattern, sparsity)
    with torch.no_grad():
        got, want, dense = c(*x), ref(*x), m(*x)
    assert rel_err(got, want) <= RTOL
    assert rel_err(got, dense) > 1e-3          # it did prune


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "vit", "gpt2"])
def test_pruned_transformers_match_eager(name):
    m, x = zoo.TRANSFORMERS[name]()
    c = torch.compile(m, backend="sparsec", options={"pattern": "unstructured", "sparsity": 0.9})
    ref = prune_linears(m, "unstructured", 0.9)
    if name == "gpt2":   # GPT-2's Conv1D stores W as [in, out]: prune its transpose, as canonicalize does
        with torch.no_grad():
            for mod in ref.modules():
                if type(mod).__name__ == "Conv1D":
                    mod.weight.copy_(prune(mod.weight.t().contiguous(), "unstructured", 0.9).weight.t())
    with torch.no_grad():
        for g, w in zip(leaves(c(*x)), leaves(ref(*x))):
            assert rel_err(g, w) <= RTOL


def test_debug_backend_runs_the_interpreter():
    m, x = zoo.hand_models()["encoder_block"]
    check(m, x, backend="sparsec_interp")


def test_shapes_are_cached_per_shape():
    m, _ = zoo.hand_models()["mlp"]
    c = torch.compile(m, backend="sparsec")
    with torch.no_grad():
        for t in (4, 7, 4, 1, 7):
            x = torch.randn(t, 32)
            assert rel_err(c(x), m(x)) <= RTOL


# -- the weight guard -----------------------------------------------------------------------

def test_in_place_weight_change_is_followed():
    m, x = zoo.hand_models()["mlp"]
    c = check(m, x)
    with torch.no_grad():
        m.fc2.weight.mul_(-0.5)
        m.head.bias.add_(1.0)
        assert rel_err(c(*x), m(*x)) <= RTOL
        m.fc1.weight.copy_(prune(m.fc1.weight, "unstructured", 0.8).weight)   # a different sparsity
        assert rel_err(c(*x), m(*x)) <= RTOL


def test_weight_change_under_pruning_is_repacked():
    m, x = zoo.hand_models()["mlp"]
    c = torch.compile(m, backend="sparsec", options={"pattern": "2:4"})
    with torch.no_grad():
        c(*x)
        m.fc1.weight.copy_(torch.randn_like(m.fc1.weight))
        assert rel_err(c(*x), prune_linears(m, "2:4")(*x)) <= RTOL


# -- graph breaks -----------------------------------------------------------------------------

class WithCumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        h = torch.relu(self.a(x)).cumsum(-1) / 10
        return self.b(h)


def test_unsupported_op_runs_eagerly_and_is_named(caplog):
    torch.manual_seed(0)
    m, x = WithCumsum().eval(), (torch.randn(4, 16),)
    with caplog.at_level(logging.INFO, logger="sparsec.dynamo"):
        check(m, x)
    msgs = [r.getMessage() for r in caplog.records if r.name == "sparsec.dynamo"]
    assert len(msgs) == 1, msgs                         # logged once
    assert "aten.cumsum x1" in msgs[0] and "1 run eagerly" in msgs[0] and "2 subgraph(s)" in msgs[0]


def test_fullgraph_with_unsupported_op_names_it():
    torch.manual_seed(0)
    m, x = WithCumsum().eval(), torch.randn(4, 16)
    with pytest.raises(Exception, match=r"fullgraph=True, but aten\.cumsum .*cumsum\(-1\)"):
        with torch.no_grad():
            torch.compile(m, backend="sparsec", fullgraph=True)(x)


def test_constant_subgraphs_fold_instead_of_breaking():
    # BERT gathers its token-type buffer: an op outside the IR, but on constants only
    from sparsec.frontends.dynamo_runtime import SUMMARIES
    m, x = zoo.bert(layers=1)
    check(m, x)
    assert SUMMARIES[-1].fallback_nodes == 0


# -- BDWP training ------------------------------------------------------------------------------

def _mlp(seed=0, d_in=64, hidden=64, d_out=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, d_out))


def test_bdwp_gradients_of_one_step_match_eager_autograd():
    from sparsec.frontends.dynamo_runtime import LAST_GRAPHS
    from sparsec.training import bdwp_wrap, layer_masks

    m = _mlp()
    ref = bdwp_wrap(copy.deepcopy(m), "2:8")
    c = torch.compile(m, backend="sparsec", options={"train": "bdwp", "pattern": "2:8"})
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    loss = nn.functional.cross_entropy(c(x), y)
    loss.backward()
    want = nn.functional.cross_entropy(ref(x), y)
    want.backward()
    assert abs(loss.item() - want.item()) <= 1e-5
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert (p.grad - q.grad).abs().max() <= RTOL * max(q.grad.abs().max(), 1e-3), n
    # the BP mask is not the FF mask: the input gradient is not FF's exact gradient
    ff, bp = layer_masks(ref)["2"]
    assert not torch.equal(ff, bp)
    # forward: N:M weights; backward: the N:M Wᵀ (2:8 along C_out) as a sparse linear, dW dense matmuls
    fw = next(g for k, g in LAST_GRAPHS.items() if k.endswith("forward"))
    bw = next(g for k, g in LAST_GRAPHS.items() if k.endswith("backward"))
    assert {c.format for _, c in fw.weights()} == {"nm"}
    bw_sparse = [(n, c) for n, c in bw.weights() if n.op.value == "linear"]
    assert len(bw_sparse) == 2 and {c.format for _, c in bw_sparse} == {"nm"}
    assert {tuple(c.value.shape) for _, c in bw_sparse} == {(64, 64), (64, 10)}   # [C_in, C_out]
    assert bw.op_counts().get("mm", 0) == 3                                       # dW = dYᵀ·X, dense


def _train(model, x, y, steps, lr=0.1, batch=64):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def test_bdwp_training_follows_eager_for_a_few_steps():
    from sparsec.training import bdwp_wrap

    xtr, ytr, _, _ = _digits()
    m = _mlp(d_in=64)
    ref = bdwp_wrap(copy.deepcopy(m), "2:8", mask_interval=2)
    c = torch.compile(m, backend="sparsec", options={"train": "bdwp", "pattern": "2:8", "mask_interval": 2})
    _train(c, xtr, ytr, 6)
    _train(ref, xtr, ytr, 6)
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert (p - q).abs().max() <= 1e-4, n


@pytest.mark.slow
def test_bdwp_digits_training_reaches_eager_accuracy():
    from sparsec.training import bdwp_wrap

    xtr, ytr, xte, yte = _digits()
    m = _mlp(d_in=64, hidden=128)
    ref = bdwp_wrap(copy.deepcopy(m), "2:8", mask_interval=10)
    c = torch.compile(m, backend="sparsec", options={"train": "bdwp", "pattern": "2:8", "mask_interval": 10})
    _train(c, xtr, ytr, 300)
    _train(ref, xtr, ytr, 300)
    ref.eval()
    acc_c, acc_ref = _accuracy(c, xte, yte), _accuracy(ref, xte, yte)
    assert acc_ref > 0.7
    assert abs(acc_c - acc_ref) <= 0.02, (acc_c, acc_ref)
