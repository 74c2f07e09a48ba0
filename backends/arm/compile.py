"""Whole-graph compile for aarch64: the LLVM planner with an aarch64 NEON target.

``compile_arm(graph, cpu)`` runs ``backends.llvm.compile.compile_graph`` with
``arm_target(cpu)``: the same kernel families and TE lowerings; their
schedules take the SIMD width (128-bit NEON: 4 fp32 lanes) from the target.
The result, ``ArmCompiledGraph``, cannot run on an x86 host directly: its
``executor()`` runs the generated C driver under qemu-aarch64; ``export``
writes the artifact's library with the aarch64 cross compiler and, with
``emit`` containing ``"c"``, the standalone C driver in ``c/``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sparsec.backends.arm.target import DEFAULT_CPU, arm_target, cpu_info
from sparsec.backends.llvm.compile import CompiledGraph, compile_graph
from sparsec.ir.errors import ModelError, ParameterError
from sparsec.ir.graph import Graph

EMITS = ("so", "c")
_NP = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64,
       "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


def parse_emit(emit) -> tuple[str, ...]:
    """``None`` -> ("so",); "c" or ["c"] -> ("so", "c") (the TVM-runtime library is always written)."""
    if emit is None:
        return ("so",)
    items = [emit] if isinstance(emit, str) else list(emit)
    out = ["so"]
    for e in items:
        for part in str(e).split(","):
            part = part.strip()
            if part not in EMITS:
                raise ParameterError(f"--emit {part!r}: choose from {', '.join(EMITS)}")
            if part not in out:
                out.append(part)
    return tuple(out)


@dataclass
class ArmCompiledGraph(CompiledGraph):
    cpu: str = DEFAULT_CPU
    emit: tuple = ("so",)
    _runner: object = None

    def executor(self) -> "CDriverExecutor":
        if self._runner is None:
            self._runner = CDriverExecutor(self)
        return self._runner

    @property
    def manifest_info(self) -> dict:
        return {"arch": "aarch64", "cpu": self.cpu, "cpu_doc": cpu_info(self.cpu).doc, "emit": list(self.emit),
                "runtimes": {"tvm": "lib.so (tvm.runtime.load_module on aarch64; run_on_device.py: numpy only)",
                             **({"c": "c/model (static aarch64 executable), c/Makefile"} if "c" in self.emit
                                else {})}}

    def export(self, module, lib_path: str) -> None:
        """``write_artifact``'s export hook: lib.so cross-compiled, plus c/ and the numpy runner."""
        from sparsec.backends.arm.cdriver import write_c_driver
        from sparsec.backends.arm.qemu import cross_compiler

        module.export_library(lib_path, fcompile=cross_compiler())
        folder = os.path.dirname(lib_path)
        shutil.copyfile(os.path.join(os.path.dirname(__file__), "device_runner.py"),
                        os.path.join(folder, "run_on_device.py"))
        if "c" in self.emit:
            write_c_driver(os.path.join(folder, "c"), module, self.plan, self.consts)


def compile_arm(g: Graph, cpu: str | None = None, emit=None, num_cores: int = 1,
                progress: Callable[[int, int, str], None] | None = None) -> ArmCompiledGraph:
    info = cpu_info(cpu)
    emit = parse_emit(emit)
    cg = compile_graph(g, target=arm_target(info.name, num_cores), progress=progress)
    return ArmCompiledGraph(cg.graph, cg.target, cg.module, cg.plan, cg.consts, cg.functions, cg.timings,
                            cpu=info.name, emit=emit)


class CDriverExecutor:
    """Runs an ``ArmCompiledGraph`` on this host: its C driver, built once, under qemu-aarch64."""

    def __init__(self, cg: ArmCompiledGraph, threads: int = 1):
        from sparsec.backends.arm.cdriver import write_c_driver

        self.plan = cg.plan
        self.threads = threads
        self.dir = tempfile.mkdtemp(prefix="sparsec-arm-")
        write_c_driver(self.dir, cg.module, cg.plan, cg.consts)
        self.last_stderr = ""

    def __del__(self):
        shutil.rmtree(getattr(self, "dir", ""), ignore_errors=True)

    def __call__(self, *inputs) -> tuple:
        return run_c_driver(self.dir, self.plan, inputs, threads=self.threads, runner=self)


def run_c_driver(folder: str, plan: dict, inputs, threads: int = 1, runner=None, timeout: float = 600) -> tuple:
    """Run ``folder/model`` (a built C driver) under qemu on ``inputs``; outputs as torch tensors
    (numpy arrays when every input is one)."""
    from sparsec.backends.arm.qemu import run_qemu

    specs = plan["inputs"]
    if len(inputs) != len(specs):
        raise ModelError(f"compiled model takes {len(specs)} inputs ({', '.join(s['name'] for s in specs)}), "
                         f"got {len(inputs)}")
    as_numpy = bool(inputs) and all(isinstance(x, np.ndarray) for x in inputs)
    io = tempfile.mkdtemp(prefix="io-", dir=folder)
    try:
        args = [os.path.join(folder, "model"), os.path.join(folder, "weights.bin")]
        for k, (s, x) in enumerate(zip(specs, inputs)):
            t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
            if not isinstance(t, torch.Tensor):
                raise ModelError(f"input {s['name']}: expected a tensor, got {type(x).__name__}")
            if list(t.shape) != list(s["shape"]) or str(t.dtype).replace("torch.", "") != s["dtype"]:
                raise ModelError(f"input {s['name']}: expected {s['dtype']}{list(s['shape'])}, got "
                                 f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}")
            p = os.path.join(io, f"in{k}.bin")
            t.detach().contiguous().numpy().tofile(p)
            args.append(p)
        outs = [os.path.join(io, f"out{k}.bin") for k in range(len(plan["outputs"]))]
        r = run_qemu(args + outs, env={"SPARSEC_NUM_THREADS": str(threads)}, timeout=timeout)
        if runner is not None:
            runner.last_stderr = r.stderr
        if r.returncode != 0:
            raise ModelError(f"C driver {folder}/model under qemu-aarch64 exited {r.returncode}: "
                             f"{(r.stderr or r.stdout).strip()[-1500:]}")
        res = []
        for name, p in zip(plan["outputs"], outs):
            v = plan["values"][name]
            a = np.fromfile(p, dtype=_NP[v["dtype"]]).reshape(v["shape"])
            res.append(a if as_numpy else torch.from_numpy(a))
        return tuple(res)
    finally:
        shutil.rmtree(io, ignore_errors=True)
