"""Running a compiled graph: a sequence of compiled functions over pre-planned buffers.

This module needs only the TVM *runtime* (``tvm.runtime``), torch (for
storage and DLPack zero-copy) and the standard library — not the compiler —
so an artifact loads on a machine with just the runtime bundle.

The plan (JSON, stored in the artifact's manifest):

- ``inputs``: ``[{name, shape, dtype}]``; ``outputs``: value names;
- ``storages``: ``[nbytes]`` — byte buffers shared by values whose lifetimes
  don't overlap (assigned by liveness at compile time);
- ``values``: ``name -> {kind: input|storage|const, storage, shape, dtype}``; a
  ``const`` value names a weight buffer (``const`` key ``"<weight>/<buffer>"``);
- ``steps``: ``[{func, args, node}]`` in order; ``args`` are value names.

Reshapes are free: a reshaped value is a view of its source's storage.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch

from sparsec.ir.errors import ModelError

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


def _dl(t: torch.Tensor):
    import tvm

    return tvm.runtime.from_dlpack(t)


def _bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a numpy array (shares memory)."""
    return t.reshape(-1).view(torch.uint8).numpy()


def serial_copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)`` for same-dtype same-shape CPU tensors through numpy's memcpy, not torch's
    OpenMP-parallel copy: after a parallel region torch's worker threads spin for ~1-5 ms, and on a
    machine with few cores they then take a core from TVM's pool, whose kernels wait at their barrier
    for it (measured on the 2-core CI box: BERT-base x2 at 90 % 3.6 ms with this copy, 11.6 ms with
    ``copy_`` of the 393 KB output; docs/cpu.md "Threads")."""
    if (dst.device.type == "cpu" and src.device.type == "cpu" and dst.dtype == src.dtype
            and dst.is_contiguous() and src.is_contiguous() and dst.numel() == src.numel()):
        if dst.numel():
            np.copyto(_bytes(dst), _bytes(src))
    else:
        dst.copy_(src)


def serial_clone(t: torch.Tensor) -> torch.Tensor:
    """``t.clone()`` of a contiguous CPU tensor without torch's parallel copy (see ``serial_copy``)."""
    if t.device.type != "cpu" or not t.is_contiguous() or t.numel() == 0:
        return t.clone()
    return torch.from_numpy(_bytes(t).copy()).view(t.dtype).view(t.shape)


def copy_inputs(slots: Sequence[tuple], inputs: Sequence, non_blocking: bool = False) -> bool:
    """Check ``inputs`` against the compiled input slots ``(name, buffer, torch dtype, shape)`` and copy
    each into its buffer; True when they were all numpy arrays (the caller then returns numpy)."""
    if len(inputs) != len(slots):
        raise ModelError(f"compiled model takes {len(slots)} inputs "
                         f"({', '.join(n for n, *_ in slots)}), got {len(inputs)}")
    as_numpy = bool(inputs) and all(isinstance(x, np.ndarray) for x in inputs)
    for (name, buf, dt, shape), x in zip(slots, inputs):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"input {name}: expected a tensor, got {type(x).__name__}")
        if tuple(x.shape) != shape or x.dtype != dt:
            raise ModelError(f"input {name}: expected {str(dt).replace('torch.', '')}{list(shape)}, "
                             f"got {str(x.dtype).replace('torch.', '')}{list(x.shape)}")
        if buf.device.type == "cpu":
            serial_copy(buf, x)
        else:
            buf.copy_(x, non_blocking=non_blocking)
    return as_numpy


class Executor:
    """Runs ``plan`` with the functions of ``lib`` and the constant tensors ``consts``."""

    def __init__(self, lib, plan: dict, consts: Mapping[str, torch.Tensor]):
        self.plan = plan
        self.lib = lib
        self._storages = [torch.empty(max(int(n), 1), dtype=torch.uint8) for n in plan["storages"]]
        self.views: dict[str, torch.Tensor] = {}
        for name, v in plan["values"].items():
            dt = _TORCH[v["dtype"]]
            shape = tuple(v["shape"])
            if v["kind"] == "const":
                t = consts[v["const"]]
                if tuple(t.shape) != shape or t.dtype != dt:
                    raise ModelError(f"constant {v['const']}: expected {v['dtype']}{list(shape)}, "
                                     f"got {t.dtype}{list(t.shape)}")
                t = t.contiguous()
                # TVM requires 64-byte aligned data (torch's allocator gives that; np.load may not)
                self.views[name] = t if t.data_ptr() % 64 == 0 else t.clone()
            else:
                n = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dt).element_size()
                raw = self._storages[v["storage"]][:n]
                self.views[name] = (raw.view(dt) if n else torch.empty(0, dtype=dt)).view(shape)
        # bind every step's arguments once: a call is then a loop of plain function calls
        self._funcs = {}
        self._steps = []
        dl = {name: _dl(t) for name, t in self.views.items()}
        for s in plan["steps"]:
            f = self._funcs.get(s["func"])
            if f is None:
                f = self._funcs[s["func"]] = lib[s["func"]]
            self._steps.append((f, [dl[a] for a in s["args"]], s))
        self._inputs = [(v["name"], self.views[v["name"]], _TORCH[v["dtype"]], tuple(v["shape"]))
                        for v in plan["inputs"]]
        self.profile: dict[str, float] | None = None

    def __call__(self, *inputs) -> tuple:
        as_numpy = copy_inputs(self._inputs, inputs)
        prof = self.profile
        for f, args, s in self._steps:
            if prof is None:
                f(*args)
            else:
                t0 = time.perf_counter()
                f(*args)
                prof[s["node"]] = prof.get(s["node"], 0.0) + time.perf_counter() - t0
        outs = tuple(serial_clone(self.views[o]) for o in self.plan["outputs"])
        return tuple(o.numpy() for o in outs) if as_numpy else outs

    def run_profiled(self, *inputs) -> tuple[tuple, dict[str, float]]:
        """Run once with per-node wall times (seconds)."""
        self.profile = {}
        try:
            out = self(*inputs)
            return out, dict(self.profile)
        finally:
            self.profile = None


def plan_storages(order: Sequence[str], defs: Mapping[str, int], uses: Mapping[str, list[int]],
                  alias_of: Mapping[str, str], nbytes: Mapping[str, int], keep: set[str]) -> dict[str, int]:
    """Assign storages by liveness.

    ``order``: values in definition order; ``defs[v]``: step defining v;
    ``uses[v]``: steps reading v; ``alias_of[v]``: the value v is a view of;
    ``keep``: values whose storage is never reused (inputs, outputs).
    Returns ``value -> storage id`` and stores sizes in ``plan_storages.sizes``.
    """
    root = {}
    for v in order:
        r = v
        while r in alias_of:
            r = alias_of[r]
        root[v] = r
    last: dict[str, int] = {}
    pinned = set()
    for v in order:
        r = root[v]
        last[r] = max([last.get(r, defs[v])] + uses.get(v, []) + [defs[v]])
        if v in keep:
            pinned.add(r)
    sizes: list[int] = []
    free: list[int] = []
    assign: dict[str, int] = {}
    releases: dict[int, list[int]] = {}
    for v in order:
        r = root[v]
        if r != v:
            assign[v] = assign[r]
            continue
        need = nbytes[v]
        # best fit among free storages (never one freed at this very step: no in-place hazards)
        cand = [s for s in free if sizes[s] >= need]
        if cand:
            s = min(cand, key=lambda s: sizes[s])
            free.remove(s)
        elif free:
            s = max(free, key=lambda s: sizes[s])
            free.remove(s)
            sizes[s] = need
        else:
            s = len(sizes)
            sizes.append(need)
        assign[v] = s
        if r not in pinned:
            releases.setdefault(last[r], []).append(s)
        step = defs[v]
        # storages whose last use was before this step become free
        for k in sorted(list(releases)):
            if k < step:
                free.extend(releases.pop(k))
    plan_storages.sizes = sizes
    return assign
