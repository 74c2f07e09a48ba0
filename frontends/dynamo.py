"""``torch.compile(model, backend="sparsec")``: the torch.compile backend.

A backend is a plain function ``(GraphModule, example_inputs) -> callable``
(registered by name here and through the ``torch_dynamo_backends`` entry point
of pyproject.toml). Both backends hand dynamo's graph to aot_autograd with the
same decomposition table as ``sparsec compile``; every ATen graph it produces
(inference, or forward and backward) goes through the ONE lowering
(``sparsec.frontends.lower.FxLowering``), the CPU pass pipeline and
``compile_graph`` (see ``dynamo_runtime``):

- ``sparsec``: compiled TVM code;
- ``sparsec_interp``: the same lowering and passes, run by the reference
  interpreter (for bisecting: if ``sparsec_interp`` agrees with eager and
  ``sparsec`` does not, the bug is in the backend).

Options (``torch.compile(m, backend="sparsec", options={...})``):
``target`` ("llvm"), ``pattern`` / ``sparsity`` / ``format`` (as ``sparsec
compile``: prune at inference, pick formats), ``fullgraph`` (an op outside the
IR raises instead of running eagerly; ``torch.compile(fullgraph=True)`` sets
it too), ``train="bdwp"`` with ``pattern="N:M"``, ``mask_interval=k`` and
``srste``: BDWP training (below).

BDWP training: every ``linear`` of the dynamo graph becomes
``sparsec.training``'s BDWP autograd function, so aot_autograd's forward graph
computes ``x · (W ⊙ mask_ff)ᵀ`` and its backward ``dY · (W ⊙ mask_bp)`` (the
second N:M mask, on Wᵀ) and dense ``dYᵀ · X``. Masks are inputs treated as
constants, so the fold + canonicalize passes make both weight products
``linear`` with an N:M weight (generated N:M kernels for W and for Wᵀ), and
the weight gradient a generated dense matmul. Mask rule (the one of
``sparsec.training``): at every training call (grad enabled) with
``step % mask_interval == 0`` both masks are recomputed from the current dense
weight, before the forward; the packed formats follow through the weight guard.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import torch
import torch.fx as fx

from sparsec.frontends.dynamo_runtime import SUMMARIES, Options, SpecializedFx, Statics, Summary  # noqa: F401
from sparsec.ir.errors import ParameterError

__all__ = ["sparsec_backend", "sparsec_interp_backend", "SUMMARIES", "Summary", "Options", "parse_options"]

_counter = [0]


def parse_options(options: dict | None, mode: str) -> Options:
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(Options)} - {"mode"}
    unknown = set(options) - known
    if unknown:
        raise ParameterError(f"torch.compile(backend='sparsec'): unknown option(s) {sorted(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
    opts = Options(mode=mode, **options)
    if opts.target != "llvm":
        raise ParameterError(f"torch.compile(backend='sparsec'): unknown target {opts.target!r}; available: llvm")
    if opts.train not in (None, "bdwp"):
        raise ParameterError(f"option train={opts.train!r}: expected None or 'bdwp'")
    if opts.train == "bdwp":
        from sparsec.passes.bdwp import parse_nm

        parse_nm(opts.pattern or "2:8")
        if opts.pattern is None:
            opts = dataclasses.replace(opts, pattern="2:8")
        if opts.mask_interval < 1:
            raise ParameterError(f"option mask_interval must be >= 1, got {opts.mask_interval}")
    return opts


def _dynamo_fullgraph() -> bool:
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        return bool(getattr(tx, "one_graph", False) or getattr(getattr(tx, "output", None), "one_graph", False))
    except Exception:
        return False


def _param_like(ph: fx.Node) -> bool:
    ga = ph.meta.get("grapharg")
    src = getattr(ga, "source", None)
    name = src.name() if callable(getattr(src, "name", None)) else str(getattr(src, "name", "") or "")
    return "_parameters" in name or "_buffers" in name


def _backend(gm: fx.GraphModule, example_inputs, options: dict | None, mode: str):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    from sparsec.frontends.load import decompositions

    opts = parse_options(options, mode)
    if not opts.fullgraph and _dynamo_fullgraph():
        opts = dataclasses.replace(opts, fullgraph=True)
    _counter[0] += 1
    gid = f"graph{_counter[0]}"
    statics = Statics()
    phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for ph, x in zip(phs, example_inputs):
        if _param_like(ph):
            statics.add(x)
    extra: list[torch.Tensor] = []
    bdwp = None
    if opts.train == "bdwp":
        gm, bdwp = _bdwp_rewrite(gm, list(example_inputs), opts)
        extra = bdwp.flat_masks()
        for t in extra:
            statics.add(t)

    static_pos = {i for i, (ph, x) in enumerate(zip(phs, example_inputs)) if x in statics}
    static_pos |= set(range(len(phs), len(phs) + len(extra)))

    def compiler(kind):
        def compile_fn(agm: fx.GraphModule, _example):
            # forward/inference inputs are dynamo's (then the masks) in order: which are constants is
            # known now, so fullgraph fails at compile time; backward inputs are known at the first call
            fw_static = None if kind == "backward" else static_pos
            return make_boxed_func(SpecializedFx(agm, opts, statics, f"{gid}.{kind}", fw_static))
        return compile_fn

    inner = aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward"),
                         inference_compiler=compiler("inference"),
                         decompositions=decompositions())(gm, list(example_inputs) + extra)
    if bdwp is None:
        return inner

    def run(*args):
        bdwp.maybe_refresh()
        return inner(*args, *extra)

    return run


# -- BDWP training ----------------------------------------------------------------------------

# weight -> [mask_ff, mask_bp, training calls]: shared by every graph over that weight (the
# grad-enabled and the no-grad graph of one model see the same masks, as in sparsec.training)
# (keyed by id, with a weak reference that tells a reused id apart; tensors can't be dict keys by value)
_MASKS: dict[int, list] = {}


def _entry(w: torch.Tensor) -> list | None:
    e = _MASKS.get(id(w))
    return e if e is not None and e[3]() is w else None


class _BDWPState:
    """The two masks of every BDWP weight of one graph, refreshed in place every ``mask_interval`` training calls."""

    def __init__(self, pattern: str, mask_interval: int):
        self.pattern, self.mask_interval = pattern, mask_interval
        self.weights: list[torch.Tensor] = []

    def add(self, w: torch.Tensor) -> int:
        from sparsec.passes import bdwp

        if _entry(w) is None:
            ff, bp = bdwp.masks(w.detach().cpu(), self.pattern)
            _MASKS[id(w)] = [ff.clone(), bp.clone(), 0, weakref.ref(w)]
        self.weights.append(w)
        return len(self.weights) - 1

    def flat_masks(self) -> list[torch.Tensor]:
        return [m for w in self.weights for m in _entry(w)[:2]]

    def maybe_refresh(self) -> None:
        """Before a training call: masks from the current weight at step 0, k, 2k, ... (step 0: at compile)."""
        from sparsec.passes import bdwp

        if not torch.is_grad_enabled():
            return
        for w in self.weights:
            entry = _entry(w)
            if entry[2] % self.mask_interval == 0 and entry[2] > 0:
                nff, nbp = bdwp.masks(w.detach().cpu(), self.pattern)
                for old, new in ((entry[0], nff), (entry[1], nbp)):
                    if not torch.equal(old, new):      # an unchanged mask keeps its version: no re-pack
                        with torch.no_grad():
                            old.copy_(new)
            entry[2] += 1


def _bdwp_rewrite(gm: fx.GraphModule, example_inputs: list, opts: Options):
    """A copy of dynamo's graph whose linears are BDWP functions; the masks become trailing inputs."""
    from sparsec.training import _BDWPLinearFn

    state = _BDWPState(opts.pattern, opts.mask_interval)
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = g.graph_copy(gm.graph, env)
    g.output(out)
    phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    last = [n for n in g.nodes if n.op == "placeholder"][-1]
    for src in gm.graph.nodes:
        if not (src.op == "call_function" and src.target in (torch._C._nn.linear, torch.nn.functional.linear)):
            continue
        w_node = src.args[1] if len(src.args) > 1 else src.kwargs["weight"]
        if w_node not in phs or not isinstance(example_inputs[phs.index(w_node)], torch.nn.Parameter):
            continue                     # only linears over a parameter are BDWP layers
        idx = state.add(example_inputs[phs.index(w_node)])
        n = env[src]
        with g.inserting_after(last):
            ff = g.placeholder(f"bdwp_ff_{idx}")
        with g.inserting_after(ff):
            bp = g.placeholder(f"bdwp_bp_{idx}")
        last = bp
        x = n.args[0] if n.args else n.kwargs["input"]
        b = n.args[2] if len(n.args) > 2 else n.kwargs.get("bias")
        with g.inserting_before(n):
            new = g.call_function(_BDWPLinearFn.apply, (x, n.args[1] if len(n.args) > 1 else n.kwargs["weight"],
                                                         b, ff, bp, float(opts.srste)))
        n.replace_all_uses_with(new)
        g.erase_node(n)
    g.lint()
    return fx.GraphModule(gm, g), state


def sparsec_backend(gm: fx.GraphModule, example_inputs, options: dict | None = None, **kw: Any):
    """torch.compile backend: lower with sparsec's one lowering, run its passes, compile for the CPU."""
    return _backend(gm, example_inputs, {**(options or {}), **kw}, "compile")


def sparsec_interp_backend(gm: fx.GraphModule, example_inputs, options: dict | None = None, **kw: Any):
    """Debug backend: the same lowering and passes, run by the reference interpreter."""
    return _backend(gm, example_inputs, {**(options or {}), **kw}, "interp")


def _register() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    for name, fn in (("sparsec", sparsec_backend), ("sparsec_interp", sparsec_interp_backend)):
        if name not in _BACKENDS or _BACKENDS[name] is None:
            register_backend(fn, name=name)


_register()
