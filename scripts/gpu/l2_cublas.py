import torch, statistics, json, sys
dev='cuda'; L2=torch.cuda.get_device_properties(0).L2_cache_size
res=[]
for (O,K) in [(11008,4096),(4096,11008),(4096,4096)]:
    for T in (16,32):
        x=torch.randn(T,K,device=dev,dtype=torch.float16)
        w=torch.randn(O,K,device=dev,dtype=torch.float16)
        n=max(1,min(20,-(-2*L2//(w.numel()*2))))
        ws=[w]+[w.clone() for _ in range(n-1)]
        out={}
        for mode,sets in (('warm',[w]),('cold',ws)):
            g=torch.cuda.CUDAGraph(); s=torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s): torch.nn.functional.linear(x,w)
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(g):
                for i in range(20): y=torch.nn.functional.linear(x,sets[i%len(sets)])
            ts=[]
            for r in range(15):
                a,b=torch.cuda.Event(enable_timing=True),torch.cuda.Event(enable_timing=True)
                a.record(); g.replay(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b)*1e3/20)
            out[mode]=statistics.median(ts)
        res.append({'O':O,'K':K,'T':T,'copies':n,**out})
        print(f'cuBLAS {O}x{K} T={T}: warm {out["warm"]:.1f} us cold {out["cold"]:.1f} us ({n} copies)', flush=True)
json.dump({'l2_bytes':L2,'gpu':torch.cuda.get_device_name(0),'cublas':res}, open(sys.argv[1],'w'), indent=1)
