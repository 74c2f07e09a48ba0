"""Dev measurement (session 16): what a synchronize before each timed graph replay adds to the time per call.

    python scripts/gpu/dev_gap.py        (GPU machine, torch only)

cuBLAS (``F.linear``, 8 weight copies cycled) and a tiny kernel (``zero_``) on three LLM shapes, each a CUDA graph of
20 calls timed two ways: ``single`` = event, replay, event, synchronize (``env.bench_graph`` before session 16: the GPU
waits for the graph's launch inside the timed span); ``busy`` = the replays queued back to back behind an untimed one.
H100, 2026-11-25: busy is 0.25-0.7 us per call faster (cuBLAS 4096x4096 T=8 14.35 -> 13.81 us, ``zero_`` 1.25 ->
1.00 us); ``env.bench_graph`` and ``env.replay_interleaved`` now time the busy way.
"""
import sys, statistics, torch, torch.nn.functional as F
sys.path.insert(0, "scripts/gpu")
import env
def capture(fn, iters=20):
    return env.capture_graph(fn, iters)
def per_call_single(g, reps=9, iters=20):
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / iters)
    return statistics.median(ts)
def per_call_busy(g, reps=9, n=5, iters=20):
    ts = []
    for _ in range(reps):
        g.replay()                      # the GPU is busy when a is recorded
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            g.replay()
        b.record(); b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / (iters * n))
    return statistics.median(ts)
dev = "cuda"
for O, K, T in ((4096, 4096, 8), (11008, 4096, 32), (4096, 4096, 1)):
    ws = [torch.randn(O, K, device=dev, dtype=torch.half) for _ in range(8)]
    x = torch.randn(T, K, device=dev, dtype=torch.half)
    g = capture(env.cycling(lambda w: F.linear(x, w), [(w,) for w in ws]))
    y = torch.empty(T, O, device=dev, dtype=torch.half)
    z = capture(lambda: y.zero_())
    for _ in range(2):
        print(f"{O}x{K} T={T}: cuBLAS single {per_call_single(g):.2f} us, busy {per_call_busy(g):.2f} us; "
              f"zero_ single {per_call_single(z):.2f} busy {per_call_busy(z):.2f}", flush=True)
