"""bf16 autocast error of the CPU inference copy against fp32, next to the model's own, on the first and
last 8 s of examples/mixture.wav (one thread; prints one line per window).

    python benchmarks/cpu_copy_bf16_error.py
"""
import torch, numpy as np, time
torch.set_num_threads(1)
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from macs_cli.weights.separator import load_separator
from macs_cli.separation.model import cpu_inference_copy
from macs_cli.audio.io import read_audio
m = load_separator("default", device="cpu").eval(); fast = cpu_inference_copy(m)
a,_ = read_audio(Path(__file__).resolve().parents[1] / "examples" / "mixture.wav", 16000)
L = m.config.window_samples
for name, seg in (("first 8 s", a[:L]), ("last 8 s", a[-L:])):
    x = torch.from_numpy(seg.copy())[None]
    with torch.inference_mode():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t=time.process_time(); yb = m(x); t1=time.process_time()-t
            t=time.process_time(); yf = fast(x); t2=time.process_time()-t
        rel = lambda y: float((y.float()-ref).norm()/ref.norm())
        print(name, "bf16 model vs fp32 %.2e, bf16 copy vs fp32 %.2e, (emulated bf16 CPU s: %.1f, %.1f)" % (rel(yb), rel(yf), t1, t2), "sum err %.1e" % float((yf.float().sum(1)-x).abs().max()))
