"""Where the kernel-level R1/R2 time goes at T=128: graph_attention with and without the non-finite
check (kernels.finite.isolated patched to True for the second) against SDPA, B=8, H=8, D=64,
fp32, 2 threads, median of 25 interleaved calls; prints milliseconds and ratios.

    python experiments/kernel_ratio_attribution.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

from gnn_attention import graphs
from gnn_attention.attention import kernels
from gnn_attention.attention.functional import graph_attention

torch.set_num_threads(2)
B,H,D,T=8,8,64,128
real = kernels.finite.isolated
for pat in ("full","causal"):
    g=getattr(graphs,pat)([T]*B); q,k,v=(torch.randn(B*T,H,D) for _ in range(3))
    q4,k4,v4=(x.view(B,T,H,D).transpose(1,2) for x in (q,k,v))
    fns={"lib":lambda: graph_attention(q,k,v,g),
         "lib_nocheck":None,
         "sdpa":lambda: F.scaled_dot_product_attention(q4,k4,v4,is_causal=pat=="causal")}
    ts={k:[] for k in fns}
    for _ in range(3): fns["lib"](); fns["sdpa"]()
    for _ in range(25):
        for name in fns:
            if name=="lib_nocheck":
                kernels.finite.isolated=lambda *a: True
                a=time.perf_counter(); graph_attention(q,k,v,g); ts[name].append(time.perf_counter()-a)
                kernels.finite.isolated=real
            else:
                a=time.perf_counter(); fns[name](); ts[name].append(time.perf_counter()-a)
    med={k:round(statistics.median(x)*1e3,3) for k,x in ts.items()}
    print(pat, med, "ratio", round(med["lib"]/med["sdpa"],3), "no check", round(med["lib_nocheck"]/med["sdpa"],3))
