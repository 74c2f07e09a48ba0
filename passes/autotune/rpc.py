"""Measurement on remote devices through TVM's RPC tracker (``python -m tvm.exec.rpc_tracker`` /
``python -m tvm.exec.rpc_server --tracker HOST:PORT --key NAME``).

Kernels are built here (the compiler host) and exported as shared libraries;
each configuration is measured by one tracker session on a free device of
``key``: upload, load, run once into a NaN-filled output that is downloaded
and checked against the float64 reference **before** any timing, then
``time_evaluator`` (warm-up call, ``repeat`` samples of at least
``min_sample_s``), outliers dropped, median. Up to ``parallel`` sessions run
at once (default: the devices the tracker lists as free), so a fleet of
boards measures in parallel. A session has a timeout; a device that dies or
hangs marks its configuration ``timeout``/``error``.

The records' machine features are ``rpc:<key>``: timings from one device key
are only reused for the same key.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sparsec.ir.errors import ParameterError
from sparsec.passes.autotune.measure import (
    MeasureResult, Settings, check_output, reference, robust_median,
)
from sparsec.passes.autotune.space import TESTING_ONLY_CORRUPT, Config, pack, target_signature


def parse_tracker(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError(f"--rpc {addr!r}: expected HOST:PORT of a TVM RPC tracker")
    return host, int(port)


class RPCRunner:
    def __init__(self, tracker: str, key: str, target=None, settings: Settings | None = None,
                 timeout_s: float = 60.0, parallel: int | None = None):
        from sparsec.backends.target import host_target

        self.host, self.port = parse_tracker(tracker)
        self.key = key
        self.target = target or host_target()
        self.target_sig = target_signature(self.target)
        self.settings = settings or Settings()
        self.timeout_s = timeout_s
        self.parallel = parallel
        self.name = f"rpc:{key}"

    @property
    def features(self) -> str:
        return f"rpc:{self.key}"

    def free_devices(self) -> int:
        import tvm.rpc

        try:
            summary = tvm.rpc.connect_tracker(self.host, self.port).summary()
        except Exception as exc:      # noqa: BLE001
            raise ParameterError(f"--rpc {self.host}:{self.port}: cannot reach the tracker: {exc}") from exc
        q = summary.get("queue_info", {}).get(self.key, {})
        return int(q.get("free", 0))

    def _build(self, w2, tokens, c: Config, d: str, i: int):
        from sparsec.backends.kernels import build_matmul

        knobs = c.knobs_dict
        corrupt = bool(knobs.pop(TESTING_ONLY_CORRUPT, False))
        fo = pack(w2, c.format, c.params_dict)
        kern = build_matmul(fo, tokens, target=self.target, knobs=knobs)
        if corrupt:
            mod, name = _corrupt_module(kern.args, self.target), "corrupt"
        else:
            mod, name = kern.module, kern.name
        path = os.path.join(d, f"k{i}.so")
        mod.export_library(path)
        return fo, path, name

    def _one(self, fo, path, name, tokens, xt, ref) -> tuple:
        import tvm
        import tvm.rpc

        sess = tvm.rpc.connect_tracker(self.host, self.port).request(
            self.key, priority=1, session_timeout=int(self.timeout_s))
        sess.upload(path)
        m = sess.load_module(os.path.basename(path))
        dev = sess.cpu(0)
        args = [tvm.runtime.tensor(getattr(fo, b).contiguous().numpy(), dev) for b in fo.buffers]
        args.append(tvm.runtime.tensor(xt.numpy(), dev))
        yt = tvm.runtime.tensor(np.full((fo.rows, tokens), np.nan, dtype=xt.numpy().dtype), dev)
        args.append(yt)
        m[name](*args)
        why = check_output(torch.from_numpy(yt.numpy()), ref, str(xt.dtype).replace("torch.", ""))
        if why:
            return "wrong", None, [], why
        s = self.settings
        fe = m.time_evaluator(name, dev, number=1, repeat=s.repeat, min_repeat_ms=max(1, int(s.min_sample_s * 1e3)))
        times = list(fe(*args).results)
        med, kept = robust_median(times)
        return "ok", med, kept, ""

    def run(self, w2: torch.Tensor, tokens: int, configs: list[Config]) -> list[MeasureResult]:
        if not configs:
            return []
        g = torch.Generator().manual_seed(self.settings.seed)
        xt = torch.randn(w2.shape[1], tokens, generator=g).to(w2.dtype)
        par = self.parallel or max(1, self.free_devices())
        out: list[MeasureResult | None] = [None] * len(configs)
        with tempfile.TemporaryDirectory(prefix="sparsec-rpc-") as d:
            jobs = []
            refs = {}
            for i, c in enumerate(configs):
                try:
                    fo, path, name = self._build(w2, tokens, c, d, i)
                except Exception as exc:           # noqa: BLE001 - the trial's status
                    out[i] = MeasureResult(c, "error", error=f"{type(exc).__name__}: {exc}"[:400], runner=self.name)
                    continue
                pk = (c.format, c.params)
                if pk not in refs:
                    refs[pk] = reference(fo, xt)
                jobs.append((i, c, fo, path, name, refs[pk]))

            def work(job):
                i, c, fo, path, name, ref = job
                try:
                    status, t, ts, err = self._one(fo, path, name, tokens, xt, ref)
                except Exception as exc:           # noqa: BLE001 - a device or session failure
                    msg = f"{type(exc).__name__}: {exc}"
                    status = "timeout" if "timeout" in msg.lower() else "error"
                    return i, MeasureResult(c, status, error=msg[:400], runner=self.name)
                return i, MeasureResult(c, status, t, ts, err, self.name)

            with ThreadPoolExecutor(max_workers=par) as pool:
                for i, r in pool.map(work, jobs):
                    out[i] = r
        return out


def _corrupt_module(args, target):
    """The corrupt kernel as a module (so it can be exported and sent to a device)."""
    import tvm
    from tvm import te

    syms, ins = {}, []
    for a in args[:-1]:
        shape = [syms.setdefault(s, te.var(s)) if isinstance(s, str) else s for s in a.shape]
        ins.append(te.placeholder(shape, a.dtype, name=a.name))
    y = args[-1]
    out = te.compute(y.shape, lambda *i: tvm.tirx.const(1.0, y.dtype), name="YT")
    func = te.create_prim_func(ins + [out]).with_attr("global_symbol", "corrupt")
    return tvm.tirx.build(tvm.IRModule({"corrupt": func}), target=target)
