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
