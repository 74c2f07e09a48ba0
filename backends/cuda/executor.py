"""Running a CUDA artifact on the GPU with the TVM *runtime* only (no compiler).

``CudaExecutor(lib, plan, consts)`` is the CPU executor's plan
(``sparsec.backends.runtime``) with every storage and weight on the GPU:
storages are torch CUDA tensors, handed to the kernels through DLPack (zero
copy; bound once), inputs are copied in (from the CPU or the GPU), outputs are
new CUDA tensors (or numpy arrays when the inputs were numpy). Kernels launch
on torch's current stream, so a call can be captured in a CUDA graph
(``torch.cuda.graph``) and is ordered with torch's own work.

``CudaLoaded(path)`` loads an artifact written by ``--target cuda``: hashes
checked, ``libtvm_runtime_cuda.so`` loaded (runtime-only TVM skips its
autoload), weights moved to the GPU once.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch

from sparsec.ir.errors import ModelError, SerializationError

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


def _require_gpu() -> torch.device:
    if not torch.cuda.is_available():
        raise ModelError("this artifact was compiled for --target cuda: running it needs an NVIDIA GPU "
                         "(torch.cuda.is_available() is False here)")
    return torch.device("cuda", torch.cuda.current_device())


class CudaExecutor:
    """Runs ``plan`` with the functions of ``lib`` on the GPU (see the module docstring)."""

    def __init__(self, lib, plan: dict, consts: Mapping[str, torch.Tensor]):
        from sparsec.backends.cuda.runtime import as_dl, load_runtime

        dev = _require_gpu()
        load_runtime()
        self.plan = plan
        self.lib = lib
        self.device = dev
        self._storages = [torch.empty(max(int(n), 1), dtype=torch.uint8, device=dev) for n in plan["storages"]]
        self.views: dict[str, torch.Tensor] = {}
        for name, v in plan["values"].items():
            dt = _TORCH[v["dtype"]]
            shape = tuple(v["shape"])
            if v["kind"] == "const":
                t = consts[v["const"]]
                if tuple(t.shape) != shape or t.dtype != dt:
                    raise ModelError(f"constant {v['const']}: expected {v['dtype']}{list(shape)}, "
                                     f"got {t.dtype}{list(t.shape)}")
                self.views[name] = t.contiguous().to(dev)
            else:
                n = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dt).element_size()
                raw = self._storages[v["storage"]][:n]
                self.views[name] = (raw.view(dt) if n else torch.empty(0, dtype=dt, device=dev)).view(shape)
        funcs = {}
        self._steps = []
        dl = {name: as_dl(t) for name, t in self.views.items()}
        for s in plan["steps"]:
            f = funcs.get(s["func"])
            if f is None:
                f = funcs[s["func"]] = lib[s["func"]]
            self._steps.append((f, [dl[a] for a in s["args"]], s))
        self._inputs = [(v["name"], self.views[v["name"]], _TORCH[v["dtype"]], tuple(v["shape"]))
                        for v in plan["inputs"]]

    @property
    def inputs(self) -> list[dict]:
        return self.plan["inputs"]

    def load_inputs(self, *inputs) -> bool:
        """Copy ``inputs`` into the input buffers; True when they were numpy arrays."""
        from sparsec.backends.runtime import copy_inputs

        return copy_inputs(self._inputs, inputs, non_blocking=True)

    def launch(self) -> None:
        """Run every step on torch's current stream (capturable in a CUDA graph)."""
        from sparsec.backends.cuda.runtime import on_torch_stream

        with on_torch_stream():
            for f, args, _ in self._steps:
                f(*args)

    def output_views(self) -> tuple:
        """The output buffers themselves (overwritten by the next call)."""
        return tuple(self.views[o] for o in self.plan["outputs"])

    def __call__(self, *inputs) -> tuple:
        as_numpy = self.load_inputs(*inputs)
        self.launch()
        outs = tuple(o.clone() for o in self.output_views())
        return tuple(o.cpu().numpy() for o in outs) if as_numpy else outs


class CudaLoaded:
    """A ``--target cuda`` artifact loaded on a GPU machine; call it with tensors (torch or numpy)."""

    def __init__(self, path: str, manifest: dict | None = None, shared: dict | None = None):
        """``manifest``: the artifact's manifest, already read and its files verified (a variant of a dispatch
        artifact); ``shared``: (sha256, dtype, shape) -> GPU tensor, so that a weight file identical across
        variants is on the GPU once."""
        from sparsec.backends.artifact import LIB, load_weights, read_manifest, verify_files
        from sparsec.backends.cuda.runtime import load_runtime

        self.path = os.path.abspath(os.fspath(path))
        if manifest is None:
            manifest = read_manifest(self.path)
            verify_files(self.path, manifest)
        self.manifest = manifest
        dev = _require_gpu()
        tvm = load_runtime()
        try:
            self.module = tvm.runtime.load_module(os.path.join(self.path, LIB))
        except Exception as exc:
            raise SerializationError(f"{os.path.join(self.path, LIB)}: cannot load ({exc})") from None
        consts = load_weights(self.path, manifest)
        if shared is not None:
            for key, rel in manifest["weights"].items():
                digest, t = manifest["files"].get(rel), consts[key]
                if digest is not None:          # same bytes read as the same dtype and shape: one GPU copy
                    k = (digest, t.dtype, tuple(t.shape))
                    if k not in shared:
                        shared[k] = t.contiguous().to(dev)
                    consts[key] = shared[k]
        self.executor = CudaExecutor(self.module, manifest["plan"], consts)

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["plan"]["inputs"]

    def __call__(self, *inputs):
        return self.executor(*inputs)


def is_cuda_artifact(manifest: dict) -> bool:
    return manifest.get("device") == "cuda" or manifest.get("plan", {}).get("device") == "cuda"
