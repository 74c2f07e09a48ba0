"""GPU-machine side: make ``sparsec.*`` importable from the checkout (no pip install) and load the
TVM runtime bundle (runtime only). Import this first in every scripts/gpu program."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
import sparsec  # noqa: E402

if REPO not in sparsec.__path__:          # sparsec.ir -> REPO/ir, sparsec.backends -> REPO/backends, ...
    sparsec.__path__.append(REPO)


# max |y - ref| / max |ref| a kernel may show against F.linear in fp32, per dtype (the kernel check, tuning)
KERNEL_TOL = {"float16": 1e-2, "bfloat16": 3e-2, "float32": 1e-4}


def machine_info() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1))
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = "unknown"
    import datetime

    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def make_weight(c: dict, seed: int = 0):
    """The dense (pruned) fp32 weight for a case, drawn on the CPU with torch (deterministic)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    O, K = c["O"], c["K"]
    w = torch.randn(O, K, generator=g) * (1.0 / K ** 0.5)
    pat = c["pattern"] or ["dense"]
    kind = pat[0]
    if kind == "unstructured":
        w = w * (torch.rand(O, K, generator=g) >= pat[1])
        if pat[2]:                                     # empty rows: first, a middle one, the last
            for r in {0, O // 2, O - 1}:
                w[r] = 0
    elif kind == "nm":
        n, m = pat[1], pat[2]
        G = -(-K // m)
        score = torch.rand(O, G * m, generator=g)
        keep = torch.zeros(O, G * m, dtype=torch.bool)
        idx = score.view(O, G, m).argsort(-1)[..., :n] + (torch.arange(G) * m).view(1, G, 1)
        keep.scatter_(1, idx.reshape(O, G * n), True)
        w = w * keep[:, :K]
    elif kind == "block":
        r, cc, s = pat[1], pat[2], pat[3]
        nbr, nbc = -(-O // r), -(-K // cc)
        keep = (torch.rand(nbr, nbc, generator=g) >= s).repeat_interleave(r, 0).repeat_interleave(cc, 1)
        w = w * keep[:O, :K]
    elif kind == "group":
        grp, s = pat[1], pat[2]
        ng = -(-K // grp)
        keep = (torch.rand(O, ng, generator=g) >= s).repeat_interleave(grp, 1)
        w = w * keep[:, :K]
    return w


def case_io(c: dict, fmt, i: int):
    """A check case's inputs and fp32 reference on the CPU: ``(x, bias or None, F.linear in fp32 + act)``.

    ``i`` (the case's index) seeds the activations, so every check script draws the same inputs."""
    import torch
    import torch.nn.functional as F

    acts = {None: lambda v: v, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}
    dt = getattr(torch, c["dtype"])
    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(c["T"], c["K"], generator=g).to(dt)
    b = (torch.randn(c["O"], generator=g) * 0.1).to(dt) if c["bias"] else None
    ref = x.float() @ fmt.to_dense().float().t()
    if b is not None:
        ref = ref + b.float()
    return x, b, acts[c["activation"]](ref)


def pack(c: dict, w):
    """The case's format object from the dense weight (in the case's dtype)."""
    import torch

    from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant

    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[c["dtype"]]
    w = w.to(dt)
    p = c["params"]
    f = c["format"]
    if f == "dense":
        return Dense.from_dense(w)
    if f == "bitmap":
        return Bitmap.from_dense(w, tile=tuple(p["tile"]))
    if f == "csr":
        return CSR.from_dense(w)
    if f == "nm":
        return NM.from_dense(w, n=p["n"], m=p["m"])
    if f == "bsr":
        return BSR.from_dense(w, block=tuple(p["block"]))
    if f == "groupquant":
        return GroupQuant.from_dense(w, group=p["group"], bits=p["bits"])
    raise ValueError(f)


def l2_bytes() -> int:
    """The GPU's L2 cache in bytes (50 MB on an H100 when torch does not say)."""
    import torch

    return getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20) or (50 << 20)


def n_copies(nbytes: int, mode: str) -> int:
    """How many copies of a weight operand of ``nbytes`` a graph cycles through: ``mode="cold"`` (the benchmarks'
    and the tuner's default) enough for twice the L2, so every call reads its weight from DRAM as a layer of a
    whole model does (at most 20, the calls of a graph); ``"warm"`` one."""
    return 1 if mode == "warm" else max(1, min(20, -(-2 * l2_bytes() // max(int(nbytes), 1))))


def weight_copies(ws: list, mode: str) -> list[list]:
    """The weight operand ``ws`` (tensors) and, under ``mode="cold"``, clones of it (``n_copies``)."""
    return [ws] + [[t.clone() for t in ws] for _ in range(n_copies(sum(t.numel() * t.element_size() for t in ws),
                                                                    mode) - 1)]


def cycling(fn, sets: list):
    """``fn(*weights)`` on the next copy of the weight operand each call (a graph of 20 calls records them in
    turn)."""
    i = [0]

    def run():
        ws = sets[i[0] % len(sets)]
        i[0] += 1
        fn(*ws)
    return run


def capture_graph(fn, iters: int = 20):
    """A CUDA graph of ``iters`` calls of ``fn`` (warmed up on a side stream first); raises if capture fails."""
    import torch

    from sparsec.backends.cuda.runtime import on_torch_stream

    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    with on_torch_stream(torch.cuda.graph(g)):
        for _ in range(iters):
            fn()
    return g


def capture_graphs(fns: dict, iters: int = 20) -> dict:
    """``capture_graph`` of each function (each run once first, each graph replayed once), by key."""
    import torch

    out = {}
    for k, fn in fns.items():
        fn()
        torch.cuda.synchronize()
        out[k] = capture_graph(fn, iters)
        out[k].replay()
    torch.cuda.synchronize()
    return out


def replay_interleaved(graphs: dict, rounds: int, iters: int = 20) -> dict:
    """Per key, the µs per call of each of ``rounds`` round-robin replays of its graph (``iters`` calls each).
    A round's replays are queued back to back behind an untimed one, so the GPU never idles inside a timed replay
    (as ``bench_graph``)."""
    import torch

    times = {k: [] for k in graphs}
    for _ in range(rounds):
        evs = []
        next(iter(graphs.values())).replay()        # the GPU busy before the first timed replay
        for k, g in graphs.items():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            evs.append((k, a, b))
        torch.cuda.synchronize()
        for k, a, b in evs:
            times[k].append(a.elapsed_time(b) * 1e3 / iters)
    return times


def interleaved_medians(fns: dict, rounds: int, iters: int = 20) -> dict:
    """Per key, the median µs per call of ``fns[key]()``: each captured in a graph of ``iters`` calls, the graphs
    replayed in turn ``rounds`` times (``replay_interleaved``)."""
    import statistics

    times = replay_interleaved({k: capture_graph(f, iters) for k, f in fns.items()}, rounds, iters)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_graph(fn, iters: int = 20, reps: int = 5):
    """Median GPU time (ms) of one ``fn()``: ``iters`` calls captured in a CUDA graph, replayed ``reps``
    times back to back (no launch gaps, the GPU never idle inside the timed span); falls back to a plain loop timed
    with events if capture fails."""
    import torch

    fn()
    torch.cuda.synchronize()
    method = "graph"
    try:
        run = capture_graph(fn, iters).replay
    except Exception:  # noqa: BLE001  (library that cannot be captured)
        method = "loop"
        torch.cuda.synchronize()

        def run():
            for _ in range(iters):
                fn()
    run()
    torch.cuda.synchronize()
    # the timed replays are queued back to back behind an untimed one: the GPU never idles between the start and
    # the stop event (with a synchronize before each replay, as before session 16, the GPU waited for the graph's
    # launch inside the timed span: +0.25-0.7 us per call on the H100, 1.00 -> 1.25 us for a 1-us kernel,
    # 13.8 -> 14.35 us for cuBLAS on 4096x4096, scripts/gpu/dev_gap.py)
    run()
    evs = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        evs.append((a, b))
    torch.cuda.synchronize()
    times = sorted(a.elapsed_time(b) / iters for a, b in evs)
    return times[len(times) // 2], method


def check_cases_file(kdir: str, outp: str, weight_args, tol: dict) -> None:
    """The dev scripts' correctness pass: every case of ``kdir/cases.json``'s ``check`` list run from
    ``kdir/check.so`` vs ``F.linear`` in fp32 (``case_io``); ``weight_args(fmt, dev)`` gives the kernel's weight
    arguments (``weight_args(fmt, dev, case=c)`` when it takes ``case``). Writes ``{"check": [...]}`` to ``outp`` after every case (a hang leaves the cases before it)."""
    import json

    import torch

    from sparsec.backends.cuda.runtime import load_library

    import inspect

    meta = json.load(open(os.path.join(kdir, "cases.json")))
    dev = torch.device("cuda")
    res = {"check": []}
    lib = load_library(os.path.join(kdir, "check.so"))
    takes_case = "case" in inspect.signature(weight_args).parameters     # buffers that depend on the case's knobs
    for i, c in enumerate(meta["check"]):
        r = {"name": c["name"], "knobs": c["resolved_knobs"]}
        try:
            fmt = pack(c, make_weight(c, seed=i))
            x, b, ref = case_io(c, fmt, i)
            y = torch.full((c["T"], c["O"]), float("nan"), dtype=getattr(torch, c["dtype"]), device=dev)
            wargs = weight_args(fmt, dev, case=c) if takes_case else weight_args(fmt, dev)
            lib[c["name"]](*wargs, x.to(dev), *([b.to(dev)] if b is not None else []), y)
            torch.cuda.synchronize()
            r["rel_err"] = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
            r["ok"] = r["rel_err"] <= tol[c["dtype"]]       # NaN (an unwritten output) is not ok
        except Exception as exc:  # noqa: BLE001
            r["ok"], r["error"] = False, f"{type(exc).__name__}: {exc}"[:300]
        res["check"].append(r)
        print(f"[{'OK ' if r['ok'] else 'BAD'}] {c['name']:<44} err {r.get('rel_err', float('nan')):.2e} "
              f"{r['knobs']} {r.get('error', '')}", flush=True)
        json.dump(res, open(outp, "w"), indent=1)


def checks_in_child(script: str, kdir: str, outp: str, timeout: float) -> tuple[list, bool]:
    """Run ``script check kdir JSON`` in a child process with a time limit (a kernel waiting forever on an
    mbarrier must not take the caller with it): ``(check results, timed out)``."""
    import json

    part = outp + ".check.json"
    timed_out = False
    try:
        subprocess.run([sys.executable, os.path.abspath(script), "check", kdir, part], timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print("CHECK TIMED OUT (a kernel hung)", flush=True)
        timed_out = True
    checks = []
    if os.path.exists(part):
        checks = json.load(open(part))["check"]
        os.remove(part)
    return checks, timed_out
