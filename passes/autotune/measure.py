"""Trusted measurement of matmul kernel configurations.

This module (with ``rpc.py``) is the one place where ``sparsec.passes`` reaches
into ``sparsec.backends``: measuring a configuration means building its kernel.

A batch of configurations of one layer is measured in **one fresh process**
(``python -m sparsec.passes.autotune.measure JOB``) under a timeout, so a
kernel that crashes or hangs takes down only its batch; results stream back
one line per configuration, so the ones finished before a timeout count.

For every configuration the worker

1. builds the kernel (a build failure is status ``error``);
2. **checks it before timing it**: runs it once on random inputs into an output
   filled with NaN and compares with a float64 reference (``W.to_dense() @
   XT``); a mismatch is status ``wrong`` and the configuration gets no time,
   so a fast wrong kernel can never win;
3. times it: warm-up, then ``repeat`` samples *interleaved* across the batch's
   configurations (drift on a shared machine hits them alike), each sample
   preceded by a few ms of untimed calls (thread pools awake) and long enough
   (``min_sample_s``) for the timer; outliers (outside 1.5 IQR) are dropped
   and the median of the rest is the time.

``TESTING_ONLY_CORRUPT`` (a knob only this layer knows, never a family's) swaps
the kernel for one that writes a constant without computing: the fastest
possible, and wrong. Tests use it to show the check gates the time.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch

from sparsec.ir.errors import ParameterError
from sparsec.passes.autotune.space import TESTING_ONLY_CORRUPT, Config

TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}


@dataclass
class MeasureResult:
    config: Config
    status: str                       # ok | wrong | error | timeout | skipped
    time_s: float | None = None
    times_s: list = field(default_factory=list)
    error: str = ""
    runner: str = "local"


@dataclass
class Settings:
    repeat: int = 7
    min_sample_s: float = 1e-3
    warm_s: float = 2e-3
    seed: int = 0


def robust_median(times: list[float]) -> tuple[float, list[float]]:
    """Median after dropping samples outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR]; returns (median, kept)."""
    if len(times) < 4:
        return statistics.median(times), list(times)
    q = statistics.quantiles(times, n=4)
    lo, hi = q[0] - 1.5 * (q[2] - q[0]), q[2] + 1.5 * (q[2] - q[0])
    kept = [t for t in times if lo <= t <= hi] or list(times)
    return statistics.median(kept), kept


def check_output(got: torch.Tensor, ref: torch.Tensor, dtype: str) -> str:
    """'' when ``got`` matches the float64 reference within the dtype's tolerance, else why not."""
    got = got.double()
    if not torch.isfinite(got).all():
        return "output has NaN/inf (unwritten or overflowed)"
    scale = float(ref.abs().max().clamp_min(1e-30))
    err = float((got - ref).abs().max()) / scale
    tol = TOLERANCE.get(dtype, 1e-4)
    return "" if err <= tol else f"max relative error {err:.3g} > {tol:g}"


def reference(fmt_obj, xt: torch.Tensor) -> torch.Tensor:
    return fmt_obj.to_dense().reshape(fmt_obj.rows, fmt_obj.cols).double() @ xt.double()


def corrupt_kernel(args, target):
    """A kernel with the matmul's signature that writes 1.0 into YT and computes nothing."""
    import tvm
    from tvm import te

    syms, ins = {}, []
    for a in args[:-1]:
        shape = [syms.setdefault(s, te.var(s)) if isinstance(s, str) else s for s in a.shape]
        ins.append(te.placeholder(shape, a.dtype, name=a.name))
    y = args[-1]
    out = te.compute(y.shape, lambda *i: tvm.tirx.const(1.0, y.dtype), name="YT")
    func = te.create_prim_func(ins + [out]).with_attr("global_symbol", "corrupt")
    return tvm.tirx.build(tvm.IRModule({"corrupt": func}), target=target)["corrupt"]


class LocalRunner:
    """Measures on this host, one subprocess per batch."""

    name = "local"

    def __init__(self, target=None, settings: Settings | None = None, timeout_s: float = 120.0,
                 per_config_s: float = 20.0, threads: int | None = None):
        from sparsec.passes.autotune.space import target_signature

        self.target_sig = target_signature(target)
        self.settings = settings or Settings()
        self.timeout_s, self.per_config_s = timeout_s, per_config_s
        self.threads = threads

    @property
    def features(self) -> str:
        from sparsec.passes.autotune.space import host_features
        return host_features()

    def run(self, w2: torch.Tensor, tokens: int, configs: list[Config]) -> list[MeasureResult]:
        if not configs:
            return []
        out, err, timed_out, rc = self._spawn(
            {"w2": w2.contiguous(), "tokens": int(tokens), "target": self.target_sig,
             "configs": [(c.format, c.params, c.knobs) for c in configs], "settings": vars(self.settings)},
            len(configs))
        return parse_results(out, err, configs, timed_out, rc, self.name)

    def _spawn(self, job: dict, n_configs: int) -> tuple[str, str, bool, int]:
        """Run one measurement job in a fresh process (own session, killed whole on timeout);
        returns (stdout, stderr, timed out, return code)."""
        with tempfile.TemporaryDirectory(prefix="sparsec-tune-") as d:
            path = os.path.join(d, "job.pt")
            torch.save(job, path)
            env = dict(os.environ)
            if self.threads:
                env["TVM_NUM_THREADS"] = str(self.threads)
            timeout = self.timeout_s + self.per_config_s * n_configs
            proc = subprocess.Popen([sys.executable, "-m", "sparsec.passes.autotune.measure", path],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
            try:
                out, err = proc.communicate(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)       # our own child's process group
                out, err = proc.communicate()
                timed_out = True
        return out, err, timed_out, proc.returncode


    def run_sites(self, sites: list, configs: list[tuple[int, dict]]) -> list["MeasureResult"]:
        """Measure schedule knobs of non-matmul functions (``backends/te/sites.py``): ``configs``
        are (index into ``sites``, knobs); one process, checked against the site's reference first."""
        if not configs:
            return []
        out, err, timed_out, rc = self._spawn(
            {"kind": "te", "sites": sites, "target": self.target_sig,
             "configs": [(si, dict(k)) for si, k in configs], "settings": vars(self.settings)}, len(configs))
        cfgs = [Config.make("te", {"site": sites[si].key}, k) for si, k in configs]
        return parse_results(out, err, cfgs, timed_out, rc, self.name)


def parse_results(out: str, err: str, configs: list[Config], timed_out: bool, rc, runner: str):
    got: dict[int, MeasureResult] = {}
    seen: set[int] = set()
    for line in out.splitlines():
        if not line.startswith("RESULT "):
            continue
        d = json.loads(line[7:])
        i = d["i"]
        seen.add(i)
        if d["status"] == "checked":
            continue
        got[i] = MeasureResult(configs[i], d["status"], d.get("time_s"), d.get("times_s", []), d.get("error", ""),
                               runner)
    res = []
    blamed = False
    tail = (err or "").strip().splitlines()[-1:] if err else []
    for i, c in enumerate(configs):
        if i in got:
            res.append(got[i])
        elif not blamed and i not in seen and seen >= set(range(i)) and (timed_out or rc):
            # the first configuration without a result is the one the process died or hung in
            why = "timed out" if timed_out else f"worker exited with {rc}: {' '.join(tail)}"
            res.append(MeasureResult(c, "timeout" if timed_out else "error", error=why, runner=runner))
            blamed = True
        else:
            res.append(MeasureResult(c, "skipped", error="batch ended before it was measured", runner=runner))
    return res


# -- the worker (a fresh process per batch) -------------------------------------------------------
def _emit(i: int, **kw) -> None:
    print("RESULT " + json.dumps({"i": i, **kw}), flush=True)


def _sampler(f, call_args, settings: Settings):
    f(*call_args)
    t0 = time.perf_counter()
    f(*call_args)
    one = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(settings.min_sample_s / one))

    def sample():
        t = time.perf_counter()
        while time.perf_counter() - t < settings.warm_s:
            f(*call_args)
        t = time.perf_counter()
        for _ in range(reps):
            f(*call_args)
        return (time.perf_counter() - t) / reps
    return sample


def corrupt_site_kernel(site, target):
    """A function with the site's signature that writes 1 into its output and computes nothing."""
    import tvm
    from tvm import te

    ins = [te.placeholder(tuple(shape), dt, name=f"in{k}") for k, (shape, dt) in enumerate(site.inputs)]
    shape, dt = site.output
    out = te.compute(tuple(shape), lambda *i: tvm.tirx.const(1, dt), name="out")
    func = te.create_prim_func(ins + [out]).with_attr("global_symbol", "corrupt")
    return tvm.tirx.build(tvm.IRModule({"corrupt": func}), target=target)["corrupt"]


def build_site(site, knobs: dict, target):
    """The site's function scheduled with ``knobs``, built."""
    import tvm

    if site.kind == "transpose":
        from sparsec.backends.llvm.compile import transpose_func
        func = transpose_func(*site.func_json, knobs=knobs)
    else:
        from sparsec.backends.te.schedule import schedule_cpu
        func = schedule_cpu(tvm.ir.load_json(site.func_json), target, knobs=knobs)
    func = func.with_attr("global_symbol", "site")
    with target:
        return tvm.tirx.build(tvm.IRModule({"site": func}), target=target)["site"]


def worker_sites(job: dict) -> int:
    import tvm

    from sparsec.backends.te.sites import random_inputs, reference

    settings = Settings(**job["settings"])
    target = tvm.target.Target(job["target"])
    sites = job["sites"]
    inputs, refs = {}, {}
    samplers = {}
    for i, (si, knobs) in enumerate(job["configs"]):
        site = sites[si]
        knobs = dict(knobs)
        try:
            if si not in inputs:
                inputs[si] = random_inputs(site, settings.seed)
                refs[si] = reference(site, inputs[si]).double()
            corrupt = bool(knobs.pop(TESTING_ONLY_CORRUPT, False))
            f = corrupt_site_kernel(site, target) if corrupt else build_site(site, knobs, target)
            shape, dt = site.output
            tdt = getattr(torch, dt)
            out = (torch.full(tuple(shape), float("nan"), dtype=tdt) if tdt.is_floating_point
                   else torch.zeros(tuple(shape), dtype=tdt))
            call = list(inputs[si]) + [out]
            f(*call)
        except Exception as exc:                              # noqa: BLE001 - reported as the trial's status
            _emit(i, status="error", error=f"{type(exc).__name__}: {exc}"[:400])
            continue
        why = check_output(out, refs[si], dt)
        if why:
            _emit(i, status="wrong", error=why)
            continue
        _emit(i, status="checked")
        samplers[i] = _sampler(f, call, settings)
    times = {i: [] for i in samplers}
    for _ in range(settings.repeat):
        for i, s in samplers.items():
            times[i].append(s())
    for i, ts in times.items():
        med, kept = robust_median(ts)
        _emit(i, status="ok", time_s=med, times_s=kept)
    return 0


def worker(job_path: str) -> int:
    import tvm

    from sparsec.backends.kernels import build_matmul
    from sparsec.passes.autotune.space import pack

    job = torch.load(job_path, weights_only=False)
    if job.get("kind") == "te":
        return worker_sites(job)
    w2, tokens = job["w2"], job["tokens"]
    settings = Settings(**job["settings"])
    target = tvm.target.Target(job["target"])
    g = torch.Generator().manual_seed(settings.seed)
    xt = torch.randn(w2.shape[1], tokens, generator=g).to(w2.dtype)
    packed, refs = {}, {}
    samplers = {}
    for i, (fmt, params, knobs) in enumerate(job["configs"]):
        params, knobs = dict(params), dict(knobs)
        try:
            pk = (fmt, tuple(sorted(params.items())))
            if pk not in packed:
                packed[pk] = pack(w2, fmt, params)
                refs[pk] = reference(packed[pk], xt)
            fo = packed[pk]
            corrupt = bool(knobs.pop(TESTING_ONLY_CORRUPT, False))
            kern = build_matmul(fo, tokens, target=target, knobs=knobs)
            f = corrupt_kernel(kern.args, target) if corrupt else kern.func
            bufs = [getattr(fo, b).contiguous() for b in fo.buffers]
            yt = torch.full((fo.rows, tokens), float("nan"), dtype=w2.dtype)
            call = bufs + [xt, yt]
            f(*call)
        except Exception as exc:                              # noqa: BLE001 - reported as the trial's status
            _emit(i, status="error", error=f"{type(exc).__name__}: {exc}"[:400])
            continue
        why = check_output(yt, refs[pk], str(w2.dtype).replace("torch.", ""))
        if why:
            _emit(i, status="wrong", error=why)
            continue
        _emit(i, status="checked")
        samplers[i] = _sampler(f, call, settings)
    times = {i: [] for i in samplers}
    for _ in range(settings.repeat):
        for i, s in samplers.items():
            times[i].append(s())
    for i, ts in times.items():
        med, kept = robust_median(ts)
        _emit(i, status="ok", time_s=med, times_s=kept)
    return 0


def check_settings(s: Settings) -> Settings:
    if s.repeat < 1 or s.min_sample_s <= 0:
        raise ParameterError(f"measure settings: repeat must be >= 1 and min_sample_s > 0, got {s}")
    return s


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
