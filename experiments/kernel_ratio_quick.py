"""Quick side-by-side of graph_attention vs SDPA (full, causal) and of the non-finite check alone (one reduction over an [N, H, D] tensor):
B=8, H=8, D=64, fp32, 2 threads, median of 15 interleaved calls; prints milliseconds and ratios."""
import torch, time, statistics, torch.nn.functional as F
from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels.finite import all_finite
torch.set_num_threads(2)
B,H,D=8,8,64
for T in (128, 512):
    for pat in ("full","causal"):
        g = getattr(graphs, pat)([T]*B)
        q,k,v=(torch.randn(B*T,H,D) for _ in range(3))
        q4,k4,v4=(t.view(B,T,H,D).transpose(1,2) for t in (q,k,v))
        fns = {"lib": lambda: graph_attention(q,k,v,g),
               "sdpa": lambda: F.scaled_dot_product_attention(q4,k4,v4,is_causal=(pat=="causal")),
               "check": lambda: all_finite(q)}
        for f in fns.values(): f(); f()
        ts={n:[] for n in fns}
        for _ in range(15):
            for n,f in fns.items():
                t=time.perf_counter(); f(); ts[n].append(time.perf_counter()-t)
        m={n:statistics.median(x) for n,x in ts.items()}
        print(T, pat, {n: round(x*1e3,3) for n,x in m.items()}, "ratio", round(m["lib"]/m["sdpa"],3), "check/sdpa", round(m["check"]/m["sdpa"],3))
