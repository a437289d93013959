"""Experiment (3 December 2026, not shipped): re-separate the sum of every pair of clean stems with the
default model (bf16) and measure whether the re-split follows the pair's boundary (purity, SI-SDR of
the best 2-way regrouping). Reads the grouping dev cache of fit_grouping.py (training split).

    python benchmarks/grouping_resep_probe.py 80 /work/cache/rsep/rsep80.pkl   # 24 min on 2 cores
    python benchmarks/grouping_resep_analyze.py /work/cache/rsep/rsep80.pkl
"""
import sys,time,torch,numpy as np,pickle,itertools
sys.path.insert(0,"/work/main"); sys.path.insert(0,"/work/main/benchmarks")
from macs_cli.weights.separator import load_separator
from macs_cli.separation import grouping as G
from macs_cli.evaluation.sisdr import si_sdr
from fit_grouping import spectra
torch.set_num_threads(2)
m=load_separator("default",device="cpu").eval()
d=np.load('/work/cache/dev/gdev.npz')
N=int(sys.argv[1]); out=sys.argv[2]
res={}
t0=time.time()
for s in (2,3,4):
  for n in range(N):
    clean=G.clean_stems(d[f'stems{s}'][n],400)
    pairs=list(itertools.combinations(range(6),2))
    x=np.stack([clean[i]+clean[j] for i,j in pairs])
    with torch.inference_mode(), torch.autocast("cpu",dtype=torch.bfloat16):
      u=m(torch.from_numpy(x).float()).float().numpy()
    C=spectra(clean,400); PC=np.abs(C)**2  # (T,6,F)
    feats=np.zeros((15,4))
    for p,(i,j) in enumerate(pairs):
      uc=G.clean_stems(u[p],400)
      U=spectra(uc,400); PU=np.abs(U)**2
      r=PC[:,i]/np.maximum(PC[:,i]+PC[:,j],1e-30)
      a=(PU*r[:,None]).sum((0,2)); b=(PU*(1-r[:,None])).sum((0,2))
      pur=np.maximum(a,b).sum()/max((a+b).sum(),1e-30)
      A=a>b
      ei=uc[A].sum(0); ej=x[p]-ei
      ci=torch.from_numpy(clean[i]); cj=torch.from_numpy(clean[j])
      sd=float(si_sdr(torch.from_numpy(ei)[None],ci[None])[0]+si_sdr(torch.from_numpy(ej)[None],cj[None])[0])/2
      bs=float(si_sdr(torch.from_numpy(x[p])[None],ci[None])[0]+si_sdr(torch.from_numpy(x[p])[None],cj[None])[0])/2
      # soft version: each re-sep stem split by a/(a+b)
      feats[p]=[pur,sd,sd-bs,A.sum()]
    res[(s,n)]=feats
    if n%10==0: print(s,n,time.time()-t0,flush=True); pickle.dump(res,open(out,'wb'))
pickle.dump(res,open(out,'wb'))
print("done",time.time()-t0)
