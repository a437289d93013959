"""AIS-z / IIS-z: embed-once evaluation (``macs eval``) against the official per-query scripts.

The official scripts (one per metric) loop over the N queries (audio clips for AIS, ground-truth
frames for IIS) and for each one embed the query, its generated image, and then all N - 1 other
generated images again (batches of 100) to get the z-score's calibration set. ``macs eval``
embeds every file once and takes all similarities from one matrix product.

What this script measures, for N = 200 and 1000 (``--sizes``):

1. **Forward passes, exact.** Counted by wrapping the networks (images through the image network,
   its batched calls, audio clips through the audio network) and checked against the closed forms:
   official AIS: N^2 images + N audio clips; official IIS: N(N + 1) images; ``macs eval`` (AIS and
   IIS together): 2N images (each generated and ground-truth image once) + N audio clips.
2. **Wall time with small stand-in networks** (random weights, same for both methods), files on
   disk, decoding and clean-fid's CLIP preprocessing (PIL bicubic resize to 224, centre crop)
   included: ``macs eval`` from a cold and from a warm embedding cache, and a re-implementation of
   the official loop. The official loop runs all queries where ``--queries`` says ``all`` and
   otherwise the first q queries, its total then extrapolated linearly (every query embeds the same
   N + 1 images, so the per-query cost is constant). The z-scores of the queries run are checked
   against ``macs eval``'s.
3. **Estimated time with the real architectures**: the seconds per image of CLIP ViT-B/32 and per
   clip of Wav2CLIP (the real architectures, randomly initialised: no weights needed), measured
   here, times the counts of (1), plus the measured per-image decode+preprocess time times the
   number of image loads. An estimate, labelled as such in the results.

    python benchmarks/eval_similarity.py --sizes 200,1000 --queries all,20 \
        --out benchmarks/results/eval_similarity_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macs_cli.audio.io import read_audio  # noqa: E402
from macs_cli.evaluation.embedding import EmbeddingCache  # noqa: E402
from macs_cli.evaluation.encoders import CleanFidImageEncoder, Encoders, ModuleAudioEncoder  # noqa: E402
from macs_cli.evaluation.image_eval import ImageEvalOptions, evaluate_images  # noqa: E402
from macs_cli.evaluation.pairing import pair_files  # noqa: E402

DIM = 512
OFFICIAL_BATCH = 100


# -- stand-in networks (random weights), with counters ----------------------------------------------
class SmallImageNet(torch.nn.Module):
    """(B, 3, 224, 224) in [0, 255] -> (B, 512): two strided convolutions, pooling, a projection."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 8, stride=8), torch.nn.GELU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.GELU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, DIM)).eval()
        self.images = 0
        self.calls = 0

    @torch.no_grad()
    def forward(self, x):
        self.images += x.shape[0]
        self.calls += 1
        return self.net(x / 255.0 - 0.5)


class SmallAudioNet(torch.nn.Module):
    """(1, T) -> (1, 512): log-magnitude STFT, one convolution, pooling, a projection."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv1d(257, 128, 5, padding=2)
        self.proj = torch.nn.Linear(128, DIM)
        self.clips = 0

    @torch.no_grad()
    def forward(self, wave):
        self.clips += wave.shape[0]
        spec = torch.stft(wave, 512, 256, window=torch.hann_window(512), return_complex=True)
        h = torch.nn.functional.gelu(self.conv(torch.log(spec.abs() + 1e-5)))
        return self.proj(h.mean(-1))


def stand_ins() -> tuple[Encoders, SmallImageNet, SmallAudioNet]:
    from cleanfid.clip_features import img_preprocess_clip

    img, aud = SmallImageNet(), SmallAudioNet()
    enc = Encoders(clip=CleanFidImageEncoder("bench-image", img, fn_resize=img_preprocess_clip),
                   wav2clip=ModuleAudioEncoder("bench-audio", aud, 16000))
    return enc, img, aud


# -- data -------------------------------------------------------------------------------------------
def make_data(root: Path, n: int, image_px: int, audio_s: float) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(n)
    for sub in ("pred", "gt", "audio"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    t = np.arange(int(audio_s * 16000)) / 16000
    for i in range(n):
        base = rng.uniform(0, 255, size=(8, 8, 3))
        gt = np.kron(base, np.ones((image_px // 8, image_px // 8, 1)))
        gt = np.clip(gt + rng.normal(0, 25, gt.shape), 0, 255).astype(np.uint8)
        gen = np.clip(gt + rng.normal(0, 50, gt.shape), 0, 255).astype(np.uint8)
        Image.fromarray(gt).save(root / "gt" / f"c{i:05d}.jpg", quality=90)
        Image.fromarray(gen).save(root / "pred" / f"c{i:05d}.jpg", quality=90)
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(root / "audio" / f"c{i:05d}.wav", x.astype(np.float32), 16000)
    return root / "pred", root / "gt", root / "audio"


# -- the official per-query procedure, re-implemented with the same networks ------------------------
def official_queries(kind: str, gens: list[Path], queries: list[Path], enc: Encoders,
                     which: list[int]) -> tuple[list[float], list[float]]:
    """For each query i in ``which``: embed the query and gen i, then every other gen image again
    in batches of 100; z against those. Returns (scores, z) of the queries run."""
    img = enc.clip
    cos = torch.nn.functional.cosine_similarity
    scores, zs = [], []
    for i in which:
        if kind == "ais":
            wave, _ = read_audio(queries[i], 16000)
            q = enc.wav2clip.forward(torch.from_numpy(wave)[None])
        else:
            q = img.forward(img.load(queries[i])[None])
        g = img.forward(img.load(gens[i])[None])
        s = float(cos(q, g)[0])
        others = [f for j, f in enumerate(gens) if j != i]
        calib = []
        for b in range(len(others) // OFFICIAL_BATCH + 1):
            chunk = others[b * OFFICIAL_BATCH:(b + 1) * OFFICIAL_BATCH]
            if not chunk:        # the official loop would torch.cat an empty list here
                continue
            feats = img.forward(torch.stack([img.load(f) for f in chunk]))
            calib.extend(cos(q, feats).numpy().tolist())
        calib = np.array(calib)
        scores.append(s)
        zs.append((s - calib.mean()) / calib.std())
    return scores, zs


def official_counts(n: int) -> dict:
    batches = -(-(n - 1) // OFFICIAL_BATCH)   # calibration batches of <= 100 images per query
    return {"ais": {"image_forwards": n * n, "image_calls": n * (1 + batches), "audio_forwards": n,
                    "image_loads": n * n},
            "iis": {"image_forwards": n * (n + 1), "image_calls": n * (2 + batches),
                    "audio_forwards": 0, "image_loads": n * (n + 1)}}


# -- per-forward costs of the real architectures (random init) ---------------------------------------
def real_arch_costs(batch: int, audio_s: float, repeats: int) -> dict:
    import clip.model
    from wav2clip.model.encoder import ResNetExtractor

    torch.manual_seed(0)
    vit = clip.model.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).eval()  # ViT-B/32
    x = torch.rand(batch, 3, 224, 224)
    w2c = ResNetExtractor(scenario="supervise").eval()
    wave = torch.randn(1, int(audio_s * 16000))
    with torch.no_grad():
        vit.encode_image(x[:2])
        w2c(wave)
        per_image = best_of(lambda: vit.encode_image(x), repeats) / batch
        per_clip = best_of(lambda: w2c(wave), repeats)
    return {"clip_vit_b32_s_per_image": per_image, "clip_batch": batch,
            "wav2clip_s_per_clip": per_clip, "wav2clip_clip_seconds": audio_s,
            "timing": f"best of {repeats} runs (shared machine)"}


def best_of(fn, repeats: int) -> float:
    """Shortest of ``repeats`` timed calls: the least disturbed by other jobs on the machine."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decode_cost(files: list[Path], enc: Encoders, repeats: int) -> float:
    return best_of(lambda: [enc.clip.load(f) for f in files], repeats) / len(files)


# -- one size ---------------------------------------------------------------------------------------
def bench_size(n: int, queries: str, work: Path, args, costs: dict) -> dict:
    root = work / f"n{n}"
    t0 = time.time()
    pred, gt, audio = make_data(root, n, args.image_px, args.audio_seconds)
    print(f"[n={n}] data written in {time.time() - t0:.1f} s", flush=True)
    pairing = pair_files("folder", pred, gt, audio)
    gens = [p.pred for p in pairing.pairs]
    gts = [p.gt for p in pairing.pairs]
    auds = [p.audio for p in pairing.pairs]
    out: dict = {"n": n}

    os.sync()  # no pending write-back of the new files during the timings
    # ours: cold cache (fresh cache folder each time, best of --ours-repeats), then warm cache
    opts = ImageEvalOptions(metrics=["ais", "iis"], batch_size=args.batch_size, device="cpu")
    colds = []
    for r in range(args.ours_repeats):
        enc, img, aud = stand_ins()
        cache = EmbeddingCache(root / f"cache{r}")
        t0 = time.perf_counter()
        rep = evaluate_images(pairing, enc, opts, cache)
        colds.append(time.perf_counter() - t0)
    cold = min(colds)
    ours_counts = {"image_forwards": img.images, "image_calls": img.calls, "audio_forwards": aud.clips,
                   "image_loads": img.images}
    enc2, img2, aud2 = stand_ins()
    t0 = time.perf_counter()
    rep2 = evaluate_images(pairing, enc2, opts, cache)
    warm = time.perf_counter() - t0
    assert img2.images == 0 and aud2.clips == 0 and rep2["results"] == rep["results"]
    expected = {"image_forwards": 2 * n, "audio_forwards": n}
    assert ours_counts["image_forwards"] == expected["image_forwards"], ours_counts
    assert ours_counts["audio_forwards"] == expected["audio_forwards"], ours_counts
    out["macs_eval"] = {"counts": ours_counts, "wall_s_cold_cache": cold, "wall_s_cold_cache_runs": colds,
                        "wall_s_warm_cache": warm,
                        "AIS": rep["results"]["AIS"], "AIS-z": rep["results"]["AIS-z"],
                        "IIS": rep["results"]["IIS"], "IIS-z": rep["results"]["IIS-z"]}
    print(f"[n={n}] macs eval: cold {cold:.2f} s, warm {warm:.2f} s, {ours_counts}", flush=True)

    # the official per-query loops
    q = n if queries == "all" else min(n, int(queries))
    which = list(range(q))
    item_z = {"ais": [it["ais_z"] for it in rep["per_item"]], "iis": [it["iis_z"] for it in rep["per_item"]]}
    analytic = official_counts(n)
    out["official"] = {}
    for kind, qfiles in (("ais", auds), ("iis", gts)):
        enc3, img3, aud3 = stand_ins()
        t0 = time.perf_counter()
        _, zs = official_queries(kind, gens, qfiles, enc3, which)
        wall = time.perf_counter() - t0
        err = float(np.max(np.abs(np.array(zs) - np.array(item_z[kind])[:q])))
        # the official loop computes cosines in float32, macs eval in float64
        assert err < 2e-3, f"{kind}: official-loop z differs from macs eval by {err}"
        scale = n / q
        measured = {"image_forwards": img3.images, "image_calls": img3.calls, "audio_forwards": aud3.clips}
        per_query = {k: v / q for k, v in measured.items()}
        assert abs(per_query["image_forwards"] * n - analytic[kind]["image_forwards"]) < 1e-6, \
            (kind, per_query, analytic[kind])
        out["official"][kind] = {"queries_run": q, "counts_measured": measured,
                                 "counts_total": analytic[kind], "wall_s_measured": wall,
                                 "wall_s_total": wall * scale,
                                 "extrapolated": q < n, "max_abs_z_diff_vs_macs_eval": err}
        print(f"[n={n}] official {kind}: {q} queries in {wall:.1f} s -> total "
              f"{wall * scale:.1f} s{' (extrapolated)' if q < n else ''}; z max diff {err:.2e}",
              flush=True)
    off_total = sum(out["official"][k]["wall_s_total"] for k in ("ais", "iis"))
    out["speedup_stand_in_cold"] = off_total / cold
    out["speedup_stand_in_warm"] = off_total / warm

    # estimate with the real architectures' per-forward cost
    dec = costs["decode_preprocess_s_per_image"]
    c_img, c_aud = costs["clip_vit_b32_s_per_image"], costs["wav2clip_s_per_clip"]

    def est(counts_img, loads, counts_aud):
        return counts_img * c_img + loads * dec + counts_aud * c_aud

    off = analytic
    out["estimate_real_architectures_cpu"] = {
        "official_s": est(off["ais"]["image_forwards"] + off["iis"]["image_forwards"],
                          off["ais"]["image_loads"] + off["iis"]["image_loads"],
                          off["ais"]["audio_forwards"]),
        "macs_eval_s": est(2 * n, 2 * n, n),
        "note": "counts x measured seconds per forward (random-init ViT-B/32, Wav2CLIP ResNet) "
                "+ image loads x measured decode/preprocess seconds; not run end to end",
    }
    e = out["estimate_real_architectures_cpu"]
    e["speedup"] = e["official_s"] / e["macs_eval_s"]
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200,1000")
    ap.add_argument("--queries", default="all,20",
                    help="per size: 'all' or the number of official queries to time")
    ap.add_argument("--image-px", type=int, default=256)
    ap.add_argument("--audio-seconds", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed runs of the per-forward costs (the shortest is kept)")
    ap.add_argument("--ours-repeats", type=int, default=3, help="cold-cache runs of macs eval (best)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: least disturbed by other jobs on a shared machine)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_similarity_cpu.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    queries = args.queries.split(",")
    if len(queries) != len(sizes):
        ap.error("--queries needs one entry per size")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="macs-eval-bench-"))
    try:
        enc, _, _ = stand_ins()
        probe_dir = work / "probe"
        pred, _, _ = make_data(probe_dir, 20, args.image_px, args.audio_seconds)
        costs = real_arch_costs(args.batch_size, 10.0, args.repeats)
        costs["decode_preprocess_s_per_image"] = decode_cost(sorted(pred.glob("*.jpg")), enc,
                                                             args.repeats)
        costs["decode_image_px"] = args.image_px
        print(f"per-forward costs: {costs}", flush=True)
        results = [bench_size(n, q, work, args, costs) for n, q in zip(sizes, queries)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "benchmark": "eval_similarity",
        "what": "AIS-z + IIS-z: macs eval (embed once) vs the official per-query scripts",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "settings": {"image_px": args.image_px, "audio_seconds": args.audio_seconds,
                     "batch_size": args.batch_size, "official_batch": OFFICIAL_BATCH,
                     "stand_in_image_net": "2 strided convs + pooling + linear, 224 px input",
                     "stand_in_audio_net": "log-STFT + 1 conv + pooling + linear"},
        "per_forward_costs_cpu": costs,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
