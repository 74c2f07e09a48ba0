"""The one-call Python API: `sparsec.compile`."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from sparsec import __version__
from sparsec.ir.errors import ParameterError
from sparsec.ir.graph import Graph
from sparsec.ir.printer import print_graph

TARGETS = ("llvm", "arm", "cuda")


@dataclass
class Compiled:
    graph: Graph
    compiled: object                  # backends.llvm.compile.CompiledGraph
    report: list[dict]
    timings: dict
    example_inputs: tuple | None = None
    _exec: object = field(default=None, repr=False)

    def __call__(self, *inputs):
        if self._exec is None:
            self._exec = self.compiled.executor()
        return self._exec(*inputs)

    def save(self, path: str) -> str:
        from sparsec.backends.artifact import write_artifact

        c = self.compiled
        info = {"sparsec_version": __version__, "tvm_version": _tvm_version(), "torch_version": torch.__version__,
                "target": str(c.target), "host": platform.machine(), "graph": print_graph(self.graph),
                "formats": {r["weight"]: r["format"] for r in self.report}, "report": self.report,
                "functions": c.functions, "timings": self.timings}
        info.update(getattr(c, "manifest_info", {}))        # target-specific entries (arm: cpu, emit)
        return write_artifact(path, c.module, c.plan, c.consts, info, export=getattr(c, "export", None))


def _tvm_version() -> str:
    import tvm

    return tvm.__version__


def layer_report(g: Graph, choices) -> list[dict]:
    users = {}
    for node, const in g.weights():
        users.setdefault(const.name, node)
    out = []
    for ch in choices:
        c = g.constant(ch.weight)
        node = users.get(ch.weight)
        out.append({"weight": ch.weight, "node": node.name if node else None,
                    "op": node.op.value if node else None, "shape": list(c.value.shape),
                    "sparsity": 1.0 - ch.density, "format": c.format, "params": c.value.param_values(),
                    "bytes": c.value.nbytes, "dense_bytes": c.value.dense_nbytes,
                    "bytes_vs_dense": c.value.nbytes / max(c.value.dense_nbytes, 1), "reason": ch.reason,
                    "tokens": ch.tokens, "candidates": ch.candidates, "epilogue": epilogue_of(node)})
    return out


def epilogue_of(node) -> str:
    """What the fusion pass folded into the node's kernel: "", "gelu", "residual", "gelu+residual"."""
    if node is None or node.op.value != "linear":
        return ""
    a = node.attr
    return "+".join(e for e in (a.get("activation"), "residual" if a.get("residual") else None) if e)


def compile(model, example_inputs=None, *, target: str = "llvm", sparsity: float | None = None,
            pattern: str | None = None, format: str = "auto", measure: bool = False,
            cpu: str | None = None, emit=None,
            spec: str | None = None, progress: Callable[[int, int, str], None] | None = None,
            tuning_db: str | bool | None = None, arch: str | None = None,
            dtype: str | None = None) -> Compiled:
    """Compile a model file path (or an nn.Module with ``example_inputs``) for ``target``.

    No pruning unless ``pattern`` is given: weights already sparse in a pattern
    are detected and kept exactly.

    ``tuning_db``: the `sparsec autotune` database to use (a path; None = the default,
    ``$SPARSEC_TUNING_DB`` or ``<cache>/tuning.jsonl``, when it exists; False = none). Its
    knobs are used for matching kernels, and in ``format="auto"`` a tuned format wins.

    ``target="cuda"``: ``arch`` (sm_90 default; sm_90a adds the Hopper wgmma GEMM; sm_80, ...) and ``dtype`` (float16 default,
    bfloat16, float32): the model's weights and floating inputs are cast to ``dtype`` before
    export; see docs/cuda.md.
    """
    from sparsec.backends.llvm.compile import compile_graph
    from sparsec.backends.llvm.pipeline import cpu_pipeline
    from sparsec.frontends import import_model, import_module
    from sparsec.passes.pipeline import run_passes

    if target not in TARGETS:
        raise ParameterError(f"unknown --target {target!r}; available: {', '.join(TARGETS)}")
    if sparsity is not None and pattern is None:
        pattern = "unstructured"
    if target == "cuda":
        return _compile_cuda(model, example_inputs, sparsity=sparsity, pattern=pattern, format=format,
                             measure=measure, spec=spec, progress=progress, arch=arch, dtype=dtype,
                             tuning_db=tuning_db)
    if arch is not None or dtype is not None:
        raise ParameterError("--arch and --dtype apply to --target cuda only")
    t0 = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):
        g, loaded = import_model(model)
        example_inputs = loaded.example_inputs
    else:
        if example_inputs is None:
            raise ParameterError("compile(nn.Module) needs example_inputs")
        g = import_module(model, tuple(example_inputs))
    t1 = time.perf_counter()
    choices = []
    measure_fn = None
    if measure and target == "arm":
        raise ParameterError("--measure times kernels on this host; it cannot measure --target arm")
    if measure:
        from sparsec.backends.llvm.measure import measure_matmul
        measure_fn = measure_matmul
    cost = None
    if target == "arm":     # format choice by the llvm-mca estimate of the chosen core
        from sparsec.backends.arm.cost import ArmCost
        cost = ArmCost(cpu)
    passes = cpu_pipeline(pattern, sparsity, format, choices, cost=cost, measure=measure_fn, spec=spec)
    db = None
    if tuning_db is not False and target == "llvm":
        from sparsec.passes.autotune.apply import open_db, tuned_selection
        db = open_db(tuning_db or None)
        if db is not None:
            passes = [(n, tuned_selection(fn, choices, db, fmt=format, pattern=pattern) if n == "select_formats"
                       else fn) for n, fn in passes]
    g = run_passes(g, passes)
    t2 = time.perf_counter()
    if target == "arm":     # aarch64 NEON (backends/arm): cpu picks the core, emit "c" adds the C driver
        from sparsec.backends.arm.compile import compile_arm

        cg = compile_arm(g, cpu=cpu, emit=emit, progress=progress)
    else:
        knobs_for = None
        if db is not None:
            from sparsec.passes.autotune.apply import knobs_for as db_knobs_for
            knobs_for = db_knobs_for(db)
        cg = compile_graph(g, progress=progress, knobs_for=knobs_for)
    t3 = time.perf_counter()
    timings = {"import_s": t1 - t0, "passes_s": t2 - t1, "codegen_s": t3 - t2, "total_s": t3 - t0, **cg.timings}
    return Compiled(g, cg, layer_report(g, choices), timings, tuple(example_inputs))


def cuda_graph(model, example_inputs, *, sparsity, pattern, format, spec, arch, dtype, tuning_db=None):
    """The model imported, cast to ``dtype``, pruned and with formats selected for the GPU (``tuning_db``: where
    it measured a layer's tiled and dense kernels, the faster decides its format; ``False``: predictions only):
    ``(graph, choices, inputs, import seconds, passes seconds)``."""
    from sparsec.backends.cuda.compile import cast_model, cuda_pipeline
    from sparsec.frontends.load import capture, load_model, lower_exported
    from sparsec.ir.errors import ModelError
    from sparsec.passes.pipeline import run_passes

    t0 = time.perf_counter()
    source = None
    if isinstance(model, (str, os.PathLike)):
        loaded = load_model(model)
        model, example_inputs, source = loaded.model, loaded.example_inputs, loaded.path
    elif example_inputs is None:
        raise ParameterError("compile(nn.Module) needs example_inputs")
    m, inputs = cast_model(model, tuple(example_inputs), dtype)
    ep = capture(m, inputs, where=source or "model")
    try:
        g = lower_exported(ep, source_file=source)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}" if source else str(exc)) from None
    t1 = time.perf_counter()
    choices: list = []
    g = run_passes(g, cuda_pipeline(pattern, sparsity, format, choices, spec=spec, arch=arch, tuning_db=tuning_db))
    return g, choices, inputs, t1 - t0, time.perf_counter() - t1


def _compile_cuda(model, example_inputs, *, sparsity, pattern, format, measure, spec, progress, arch, dtype,
                  tuning_db=None):
    """``compile(..., target="cuda")``: cast to ``dtype``, prune/select formats for the GPU, build; tiled kernels
    take the tuning database's knobs where it has them (``backends/cuda/tune.py``)."""
    from sparsec.backends.cuda.compile import DEFAULT_DTYPE, compile_graph_cuda
    from sparsec.backends.cuda.toolchain import DEFAULT_ARCH, check_arch

    arch = check_arch(arch or DEFAULT_ARCH)
    dtype = dtype or DEFAULT_DTYPE
    if measure:
        raise ParameterError("--measure times kernels on this host; it cannot measure --target cuda")
    db = None
    if tuning_db is not False:
        from sparsec.passes.autotune.apply import open_db
        db = open_db(tuning_db or None)
    g, choices, inputs, t_imp, t_pass = cuda_graph(model, example_inputs, sparsity=sparsity, pattern=pattern,
                                                   format=format, spec=spec, arch=arch, dtype=dtype,
                                                   tuning_db=False if tuning_db is False else db)
    t2 = time.perf_counter()
    cg = compile_graph_cuda(g, arch=arch, dtype=dtype, progress=progress, tuning_db=db)
    t3 = time.perf_counter()
    timings = {"import_s": t_imp, "passes_s": t_pass, "codegen_s": t3 - t2, "total_s": t_imp + t_pass + t3 - t2,
               **cg.timings}
    return Compiled(g, cg, layer_report(g, choices), timings, inputs)
