"""`macs eval` and macs_cli.evaluation: every metric against an independent computation on the same
features, clean-fid's own functions on the same folders, pairing, folds, cache, weights, CLI.

Tiny random networks (tests/eval_fixtures.py) stand in for Inception, CLIP and Wav2CLIP.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from scipy import linalg
from typer.testing import CliRunner

from macs_cli.cli.eval import evaluate
from macs_cli.evaluation import encoders as enc_mod
from macs_cli.evaluation.embedding import EmbeddingCache, embed_images
from macs_cli.evaluation.encoders import MissingWeightsError, find_weights
from macs_cli.evaluation.image_eval import ImageEvalOptions, evaluate_images, parse_metrics
from macs_cli.evaluation.image_metrics import fid_from_features, kid_from_features
from macs_cli.evaluation.pairing import assign_folds, pair_files
from macs_cli.evaluation.separation_eval import (SILENT_RMS, SepItem, evaluate_item,
                                                evaluate_separation, pair_separation)
from macs_cli.evaluation.similarity import similarity_scores
from macs_cli.errors import ConfigError, MacsError

from .eval_fixtures import (make_llp, noisy, random_image, save_audio, save_image, tiny_encoders,
                            tone)

runner = CliRunner()


def cli_app() -> typer.Typer:
    """A tiny app registering the command the way macs_cli/cli/main.py registers its verbs."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        pass

    app.command("eval", no_args_is_help=True)(evaluate)
    return app


def run(*args):
    return runner.invoke(cli_app(), ["eval", *[str(a) for a in args]])


def one_line_error(r, *needles):
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.output
    for n in needles:
        assert n in errors[0], r.output


@pytest.fixture()
def tiny(monkeypatch):
    """The CLI's networks replaced by the tiny stand-ins (built fresh per test)."""
    made = []

    def build(metrics, device, weights_dir=None, use_defaults=True):
        made.append(tiny_encoders())
        return made[-1]

    monkeypatch.setattr(enc_mod, "build_encoders", build)
    return made


@pytest.fixture(scope="module")
def llp(tmp_path_factory):
    return make_llp(tmp_path_factory.mktemp("llp"), clips=12, frames=2)


# -- metrics against independent implementations ----------------------------------------------------
def official_z(query, gen, gen_index, row_clips, gen_clips):
    """The official definition with explicit loops: cosine of the matched pair; z against the
    generated images of the other clips (population std)."""
    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    scores, zs = [], []
    for i in range(len(query)):
        s = cos(query[i], gen[gen_index[i]])
        calib = [cos(query[i], gen[j]) for j in range(len(gen)) if gen_clips[j] != row_clips[i]]
        scores.append(s)
        zs.append((s - np.mean(calib)) / np.std(calib))
    return np.mean(scores), np.mean(zs), np.array(scores), np.array(zs)


def test_ais_iis_match_explicit_loops():
    rng = np.random.default_rng(0)
    # one row per clip: z over j != i
    q, g = rng.normal(size=(15, 6)), rng.normal(size=(15, 6))
    r = similarity_scores(q, g)
    ref = official_z(q, g, np.arange(15), np.arange(15), np.arange(15))
    assert np.isclose(r.score, ref[0], atol=1e-12) and np.isclose(r.z, ref[1], atol=1e-12)
    np.testing.assert_allclose(r.zs, ref[3], atol=1e-12)
    # several frames per clip, one generated image per clip, some clips with per-frame images
    row_clips = np.array(["a", "a", "b", "c", "c", "c", "d", "e"], dtype=object)
    gen_clips = np.array(["a", "b", "c", "c", "d", "e"], dtype=object)
    gen_index = np.array([0, 0, 1, 2, 3, 3, 4, 5])
    q, g = rng.normal(size=(8, 5)), rng.normal(size=(6, 5))
    r = similarity_scores(q, g, gen_index, row_clips, gen_clips)
    ref = official_z(q, g, gen_index, row_clips, gen_clips)
    assert np.isclose(r.score, ref[0], atol=1e-12) and np.isclose(r.z, ref[1], atol=1e-12)
    np.testing.assert_allclose(r.scores, ref[2], atol=1e-12)
    with pytest.raises(MacsError, match="at least 2 other clips"):
        similarity_scores(q[:2], g[:2])


def scipy_fid(f1, f2):
    """Independent FID: tr sqrt(S1 S2) from the eigenvalues of sqrt(S1) S2 sqrt(S1)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    r1 = linalg.sqrtm(s1).real
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev.clip(0)).sum())


def test_fid_matches_cleanfid_and_scipy():
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(1)
    a = rng.normal(size=(60, 8))
    b = rng.normal(size=(45, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 0.3
    ours = fid_from_features(a, b)
    ref = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isclose(ours, ref, rtol=1e-10)
    assert np.isclose(ours, scipy_fid(a, b), rtol=1e-6)
    assert abs(fid_from_features(a, a)) < 1e-6
    with pytest.raises(MacsError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_kid_matches_cleanfid_and_unbiased_mmd():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 6)), rng.normal(size=(50, 6)) + 0.2
    state = np.random.get_state()
    ours = kid_from_features(a, b, seed=5, num_subsets=20)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # caller's state restored
    np.random.seed(5)
    assert ours == kernel_distance(a, b, num_subsets=20)
    # subsets as large as both sets: every subset is the whole set -> the full unbiased MMD^2
    b = b[:30]
    d = a.shape[1]

    def k(x, y):
        return (np.dot(x, y) / d + 1) ** 3

    n = len(a)
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / (n * n)
    assert np.isclose(kid_from_features(a, b, seed=None, num_subsets=3), xx + yy - 2 * xy, rtol=1e-9)


def test_image_metrics_match_cleanfid_on_the_same_folders(tmp_path, monkeypatch):
    """compute_fid / compute_kid / CLIP-FID run by clean-fid itself (with the stand-in networks
    patched in where it builds its own) give the numbers of the pipeline on the same folders."""
    import cleanfid.clip_features
    import cleanfid.fid
    from cleanfid.fid import compute_fid, compute_kid

    # clip-level generated images (16) vs two frames per clip (32): KID's subsets are smaller than
    # the sets, so even the order of the features must match clean-fid's folder scan
    for c in range(16):
        for k in range(2):
            gt = random_image(50 * c + k)
            save_image(tmp_path / "gt" / f"clip{c:02d}_frame_{k}.png", gt)
        save_image(tmp_path / "pred" / f"clip{c:02d}.png", noisy(gt, c))
    enc = tiny_encoders()
    pairing = pair_files("llp-multi", tmp_path / "pred", tmp_path / "gt", want_audio=False)
    assert len(pairing.pairs) == 32 and len({p.pred for p in pairing.pairs}) == 16
    opts = ImageEvalOptions(metrics=["fid", "kid", "clip-fid"], kid_seed=7)
    res = evaluate_images(pairing, enc, opts)["results"]

    cpu = torch.device("cpu")
    kw = dict(mode="clean", num_workers=0, batch_size=32, device=cpu, verbose=False)
    fid = compute_fid(str(tmp_path / "pred"), str(tmp_path / "gt"),
                      custom_feat_extractor=enc.inception.model_fn, **kw)
    monkeypatch.setattr(cleanfid.fid, "build_feature_extractor",
                        lambda mode, device, use_dataparallel=True: enc.inception.model_fn)
    np.random.seed(7)
    kid = compute_kid(str(tmp_path / "pred"), str(tmp_path / "gt"), **kw)

    class TinyClipFx:
        def __init__(self, name="ViT-B/32", device="cuda"):
            pass

        def __call__(self, x):
            return enc.clip.model_fn(x)

    monkeypatch.setattr(cleanfid.clip_features, "CLIP_fx", TinyClipFx)
    clip_fid = compute_fid(str(tmp_path / "pred"), str(tmp_path / "gt"), model_name="clip_vit_b_32",
                           **kw)
    assert np.isclose(res["FID"], fid, rtol=1e-5, atol=1e-9)
    assert np.isclose(res["KID"], kid, rtol=1e-5, atol=1e-9)
    assert np.isclose(res["CLIP-FID"], clip_fid, rtol=1e-5, atol=1e-9)


def test_pipeline_ais_iis_match_loops_over_direct_embeddings(llp):
    """End to end: per-file embeddings computed directly, then the explicit-loop definitions."""
    from macs_cli.audio.io import read_audio

    pred, gt, audio = llp
    enc = tiny_encoders()
    pairing = pair_files("llp-multi", pred, gt, audio)
    rep = evaluate_images(pairing, enc, ImageEvalOptions(metrics=["ais", "iis"]))
    clip, wav = enc.clip, enc.wav2clip
    gens = sorted({p.pred for p in pairing.pairs}, key=str)
    g = np.stack([clip.forward(clip.load(f)[None]).numpy()[0] for f in gens])
    gen_clips = [next(p.clip for p in pairing.pairs if p.pred == f) for f in gens]
    idx = [gens.index(p.pred) for p in pairing.pairs]
    rows = [p.clip for p in pairing.pairs]
    qa = np.stack([wav.forward(torch.from_numpy(read_audio(p.audio, 16000)[0])[None]).numpy()[0]
                   for p in pairing.pairs])
    qi = np.stack([clip.forward(clip.load(p.gt)[None]).numpy()[0] for p in pairing.pairs])
    ais = official_z(qa, g, idx, rows, gen_clips)
    iis = official_z(qi, g, idx, rows, gen_clips)
    res = rep["results"]
    assert np.allclose([res["AIS"], res["AIS-z"]], ais[:2], rtol=1e-5)
    assert np.allclose([res["IIS"], res["IIS-z"]], iis[:2], rtol=1e-5)
    assert res["FID"] is None and res["KID"] is None


# -- embedding once, cache ------------------------------------------------------------------------
def test_each_file_embedded_once_and_cached(llp, tmp_path):
    pred, gt, audio = llp
    pairing = pair_files("llp-multi", pred, gt, audio)
    enc = tiny_encoders()
    cache = EmbeddingCache(tmp_path / "cache")
    rep = evaluate_images(pairing, enc, ImageEvalOptions(folds=3, batch_size=8), cache)
    n = len(pairing.pairs)                       # 24 frames, 24 generated images, 12 clips
    assert enc.inception.model_fn.images == 2 * n and enc.clip.model_fn.images == 2 * n
    assert enc.clip.model_fn.calls == 6           # 48 images in batches of 8
    assert enc.wav2clip.module.calls == 12        # one forward per audio clip
    assert rep["embeddings"]["embedded"] == 4 * n + 12
    enc2 = tiny_encoders()
    rep2 = evaluate_images(pairing, enc2, ImageEvalOptions(folds=3, batch_size=8), cache)
    assert enc2.inception.model_fn.calls == enc2.clip.model_fn.calls == enc2.wav2clip.module.calls == 0
    assert rep2["embeddings"]["cache_hits"] == 4 * n + 12
    assert rep2["results"] == rep["results"]
    # the cache is keyed by content: a renamed copy hits, an edited file misses
    copy = tmp_path / "renamed.png"
    copy.write_bytes(pairing.pairs[0].pred.read_bytes())
    edited = save_image(tmp_path / "edited.png", random_image(999))
    enc3 = tiny_encoders()
    embed_images([copy, edited], enc3.clip, "cpu", cache=cache)
    assert enc3.clip.model_fn.images == 1


def test_unreadable_image_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(MacsError, match="bad.png: cannot read image"):
        embed_images([bad], tiny_encoders().clip, "cpu")


# -- pairing and folds -----------------------------------------------------------------------------
def test_pairing_llp_multi_reports_unpaired(tmp_path):
    for c in range(3):
        save_audio(tmp_path / "audio" / f"yt_{c}-x.wav", tone(c))
        for k in range(2):
            save_image(tmp_path / "gt" / "sub" / f"yt_{c}-x_frame_{k}.jpg", random_image(c * 10 + k))
    save_image(tmp_path / "pred" / "yt_0-x_frame_0.png", random_image(1))     # frame level
    save_image(tmp_path / "pred" / "yt_0-x_frame_1.png", random_image(2))
    save_image(tmp_path / "pred" / "yt_1-x.png", random_image(3))             # clip level
    save_image(tmp_path / "pred" / "stray.png", random_image(4))
    p = pair_files("llp-multi", tmp_path / "pred", tmp_path / "gt", tmp_path / "audio")
    assert [(x.key, x.clip, x.pred.name, x.audio.name) for x in p.pairs] == [
        ("yt_0-x_frame_0", "yt_0-x", "yt_0-x_frame_0.png", "yt_0-x.wav"),
        ("yt_0-x_frame_1", "yt_0-x", "yt_0-x_frame_1.png", "yt_0-x.wav"),
        ("yt_1-x_frame_0", "yt_1-x", "yt_1-x.png", "yt_1-x.wav"),
        ("yt_1-x_frame_1", "yt_1-x", "yt_1-x.png", "yt_1-x.wav")]
    s = p.summary()
    assert [Path(x).name for x in s["unpaired_pred"]] == ["stray.png"]
    assert [Path(x).name for x in s["unpaired_gt"]] == ["yt_2-x_frame_0.jpg", "yt_2-x_frame_1.jpg"]
    assert [Path(x).name for x in s["unpaired_audio"]] == ["yt_2-x.wav"]
    assert s["generated_images"] == 3 and s["clips"] == 2


def test_pairing_landscape_and_folder(tmp_path):
    for split in ("train", "test"):
        for c in range(2):
            cid = f"{split}{c}"
            save_audio(tmp_path / "land" / split / "audio" / f"{cid}.wav", tone(c))
            save_image(tmp_path / "land" / split / "image" / f"{cid}_frame_0.jpg", random_image(c))
            save_image(tmp_path / "gen" / f"{cid}_frame_0.png", random_image(c + 5))
    p = pair_files("landscape", tmp_path / "gen", tmp_path / "land")   # audio defaults to --gt
    assert len(p.pairs) == 4 and all(x.audio and x.audio.parent.name == "audio" for x in p.pairs)
    assert {x.clip for x in p.pairs} == {"train0", "train1", "test0", "test1"}
    # folder: names are compared whole, "_frame_" means nothing
    f = pair_files("folder", tmp_path / "gen", tmp_path / "gen", want_audio=False)
    assert all(x.key == x.clip for x in f.pairs)
    save_image(tmp_path / "other" / "zzz.png", random_image(0))
    with pytest.raises(MacsError, match="no pairs"):
        pair_files("folder", tmp_path / "other", tmp_path / "land")
    with pytest.raises(MacsError, match="no such folder"):
        pair_files("folder", tmp_path / "nope", tmp_path / "land")
    save_image(tmp_path / "gen" / "sub" / "train0_frame_0.png", random_image(0))
    with pytest.raises(MacsError, match="two files named"):
        pair_files("folder", tmp_path / "gen", tmp_path / "land")
    with pytest.raises(ConfigError):
        pair_files("vggsound", tmp_path / "gen", tmp_path / "land")


def test_folds_deterministic_balanced_by_clip():
    clips = [f"c{i}" for i in range(23)]
    a = assign_folds(clips, 5)
    assert a == assign_folds(list(reversed(clips)) + clips[:3], 5)
    sizes = np.bincount(list(a.values()))
    assert sizes.max() - sizes.min() <= 1 and len(sizes) == 5
    with pytest.raises(MacsError, match="only 23 clips"):
        assign_folds(clips, 30)


def test_parse_metrics():
    assert parse_metrics(None) == ["fid", "kid", "clip-fid", "ais", "iis"]
    assert parse_metrics("IIS-z, fid") == ["fid", "iis"]
    assert parse_metrics("all, kid") == ["fid", "kid", "clip-fid", "ais", "iis"]
    with pytest.raises(ConfigError, match="unknown metric 'lpips'"):
        parse_metrics("fid,lpips")


# -- weights ---------------------------------------------------------------------------------------
def test_missing_weights_one_line_naming_file_and_place(tmp_path, monkeypatch):
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(MissingWeightsError) as e:
        find_weights(["inception", "clip", "wav2clip"], empty, use_defaults=False)
    msg = str(e.value)
    assert "\n" not in msg
    for name in ("inception-2015-12-05.pt", "ViT-B-32.pt", "Wav2CLIP.pt", str(empty)):
        assert name in msg
    # the libraries' own cache folders are searched too (here: a temporary one)
    monkeypatch.setattr(enc_mod, "WEIGHTS", {k: enc_mod.WeightsSpec(
        s.key, s.filename, s.purpose, s.url, lambda: [tmp_path / "libcache"])
        for k, s in enc_mod.WEIGHTS.items()})
    with pytest.raises(MissingWeightsError, match=r"libcache/inception-2015-12-05.pt"):
        find_weights(["inception"])
    (tmp_path / "libcache").mkdir()
    (tmp_path / "libcache" / "inception-2015-12-05.pt").write_bytes(b"x")
    assert find_weights(["inception"])["inception"].parent.name == "libcache"


def test_cli_missing_weights_no_report(llp, tmp_path, monkeypatch):
    pred, gt, audio = llp
    monkeypatch.setattr(enc_mod, "WEIGHTS", {k: enc_mod.WeightsSpec(
        s.key, s.filename, s.purpose, s.url, lambda: [tmp_path / "libcache"])
        for k, s in enc_mod.WEIGHTS.items()})
    (tmp_path / "w").mkdir()
    out = tmp_path / "rep"
    r = run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "--metrics", "kid",
            "--weights-dir", tmp_path / "w", "-o", out, "--device", "cpu", "-q")
    one_line_error(r, "inception-2015-12-05.pt", str(tmp_path / "w"))
    assert not out.exists()
    r = run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "--audio", audio, "--metrics", "ais",
            "--weights-dir", tmp_path / "w", "-o", out, "--device", "cpu", "-q")
    one_line_error(r, "ViT-B-32.pt", "Wav2CLIP.pt")
    assert not out.exists()


def test_weights_loaders_read_local_files(tmp_path):
    """The real loaders, on tiny networks saved in the real file formats (no download)."""
    import clip.model
    from wav2clip.model.encoder import ResNetExtractor

    torch.manual_seed(0)
    # Wav2CLIP: a checkpoint with the released file's key layout
    ref = ResNetExtractor(scenario="supervise")
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(512, 512))
    state = {**{f"audio_encoder.{k}": v for k, v in ref.encoder.state_dict().items()},
             **{f"audio_transform.sequential.{k}": v for k, v in mlp.state_dict().items()}}
    torch.save(state, tmp_path / "Wav2CLIP.pt")
    w = enc_mod.load_wav2clip(tmp_path / "Wav2CLIP.pt", "cpu")
    assert tuple(w.forward(torch.from_numpy(tone(0))[None]).shape) == (1, 512)
    # CLIP: a one-layer ViT/32 state dict at 224 px, loaded by clip.load(<file>) via clean-fid CLIP_fx
    tiny_clip = clip.model.CLIP(16, 224, 1, 64, 32, 77, 49408, 64, 1, 1)
    torch.save(tiny_clip.state_dict(), tmp_path / "ViT-B-32.pt")
    c = enc_mod.load_clip(tmp_path / "ViT-B-32.pt", "cpu")
    img = save_image(tmp_path / "a.png", random_image(0, size=(300, 200)))
    x = c.load(img)
    assert tuple(x.shape) == (3, 224, 224) and tuple(c.forward(x[None]).shape) == (1, 16)
    # Inception: a torchscript archive with clean-fid's interface (.layers -> 2048 features)

    class Layers(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 683)[:, :2048]

    class Base(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x, return_features: bool = False):
            return self.layers(x)

    torch.jit.script(Base()).save(str(tmp_path / "inception-2015-12-05.pt"))
    i = enc_mod.load_inception(tmp_path / "inception-2015-12-05.pt", "cpu")
    y = i.load(img)
    assert tuple(y.shape) == (3, 299, 299) and tuple(i.forward(y[None]).shape) == (1, 2048)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ViT-B-32.pt").write_bytes(b"garbage")
    with pytest.raises(MacsError, match="cannot load the CLIP weights"):
        enc_mod.load_clip(tmp_path / "bad" / "ViT-B-32.pt", "cpu")


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_images_report_folds_cache_force(llp, tmp_path, tiny):
    pred, gt, audio = llp
    out = tmp_path / "rep"
    r = run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "--audio", audio, "-o", out,
            "--folds", "3", "--device", "cpu", "--batch-size", "5", "--name", "tiny")
    assert r.exit_code == 0, r.output
    assert "IIS-z" in r.output and "report:" in r.output
    rep = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert "| LLP-multi | FID | CLIP-FID | KID | AIS | AIS-z | IIS | IIS-z |" in md
    assert "| tiny | " in md and " ± " in md
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert rep["folds"]["k"] == 3 and len(rep["folds"]["per_fold"]) == 3
    assert set(rep["results"]) == {"FID", "CLIP-FID", "KID", "AIS", "AIS-z", "IIS", "IIS-z"}
    assert all(isinstance(v, float) for v in rep["results"].values())
    folds_of_clip = {}
    for it in rep["per_item"]:
        folds_of_clip.setdefault(it["clip"], set()).add(it["fold"])
    assert all(len(f) == 1 for f in folds_of_clip.values())  # a clip never straddles folds
    assert (out / "cache").is_dir() and not list(out.glob(".*"))
    one_line_error(run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "-o", out, "-q"),
                   "already exists")
    r = run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "--audio", audio, "-o", out,
            "--folds", "3", "--device", "cpu", "--force", "-q", "--name", "tiny")
    assert r.exit_code == 0, r.output
    rep2 = json.loads((out / "report.json").read_text())
    assert rep2["embeddings"]["embedded"] == 0 and rep2["results"] == rep["results"]


def test_cli_images_without_audio_skips_ais_by_default(llp, tmp_path, tiny):
    pred, gt, _ = llp
    r = run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "-o", tmp_path / "r",
            "--no-cache", "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["results"]["AIS"] is None and rep["results"]["IIS"] is not None
    assert not (tmp_path / "r" / "cache").exists()
    assert "no audio found" in r.output
    # an --audio folder whose names match nothing: the note says so instead of "pass --audio"
    (tmp_path / "aud").mkdir()
    sf.write(tmp_path / "aud" / "unrelated.wav", np.zeros(16000, np.float32), 16000)
    r = run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "--audio", tmp_path / "aud", "-o", tmp_path / "r3",
            "--no-cache", "--device", "cpu", "-q")
    assert r.exit_code == 0 and "none of the 1 audio files" in r.output, r.output
    one_line_error(run("--dataset", "llp-multi", "--pred", pred, "--gt", gt, "--metrics", "ais",
                       "-o", tmp_path / "r2", "--device", "cpu", "-q"), "AIS needs audio")
    assert not (tmp_path / "r2").exists()


def test_cli_bad_inputs_one_line_no_report(llp, tmp_path, tiny):
    pred, gt, audio = llp
    out = tmp_path / "rep"
    one_line_error(run("--pred", tmp_path / "missing", "--gt", gt, "-o", out), "no such folder")
    one_line_error(run("--pred", pred, "--gt", audio, "-o", out), "no images found")
    (tmp_path / "other").mkdir()
    save_image(tmp_path / "other" / "zzz.png", random_image(0))
    one_line_error(run("--dataset", "llp-multi", "--pred", tmp_path / "other", "--gt", gt, "-o", out),
                   "no pairs")
    r = run("--pred", pred, "--gt", gt, "--metrics", "fid,lpips", "-o", out)
    one_line_error(r, "lpips")
    assert r.exit_code == 2
    assert run("--pred", pred, "--gt", gt, "--task", "video", "-o", out).exit_code == 2
    one_line_error(run("--pred", pred, "--gt", gt, "--folds", "99", "-o", out, "--dataset",
                       "llp-multi"), "only 12 clips")
    # an undecodable image and an undecodable audio file, found mid-run
    bad = tmp_path / "badset"
    p2, g2, a2 = make_llp(bad, clips=4, frames=1)
    (p2 / "vid002_frame_0.png").write_bytes(b"\x89PNG broken")
    one_line_error(run("--dataset", "llp-multi", "--pred", p2, "--gt", g2, "--metrics", "fid",
                       "-o", out, "--device", "cpu", "-q"), "vid002_frame_0.png", "cannot read image")
    assert not (out / "report.json").exists()
    p3, g3, a3 = make_llp(tmp_path / "badaudio", clips=4, frames=1)
    (a3 / "vid001.wav").write_bytes(b"RIFF nonsense")
    one_line_error(run("--dataset", "llp-multi", "--pred", p3, "--gt", g3, "--audio", a3,
                       "--metrics", "ais", "-o", out, "--device", "cpu", "-q"), "vid001.wav")
    assert not (out / "report.json").exists()


# -- separation ------------------------------------------------------------------------------------
def sources(seed, n=3, length=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t + rng.uniform(0, 6))
             * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))).astype(np.float32)
            for _ in range(n)]


def test_separation_sisdr_matches_torchmetrics_brute_force(tmp_path):
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as tm_sisdr

    refs = sources(0, n=2)
    rng = np.random.default_rng(1)
    # realistic stems (SI-SDR well below 60 dB, where the absolute eps of sisdr.py is negligible)
    stems = [refs[0] * 0.7 + 0.05 * rng.standard_normal(16000),
             refs[1] * 0.5 + 0.002 * rng.standard_normal(16000),
             refs[0] * 0.3 + 0.1 * refs[1], 0.02 * rng.standard_normal(16000)]
    paths = [save_audio(tmp_path / "s" / f"stem_{i:02d}.wav", s.astype(np.float32))
             for i, s in enumerate(stems)]
    rpaths = [save_audio(tmp_path / "r" / f"src{i}.wav", r) for i, r in enumerate(refs)]
    out = evaluate_item(SepItem("x", paths, rpaths), 16000, "refs")
    S = torch.from_numpy(np.stack([sf.read(p, dtype="float32")[0] for p in paths])).double()
    R = torch.from_numpy(np.stack([sf.read(p, dtype="float32")[0] for p in rpaths])).double()

    def score(est_rows):
        return float(np.mean([tm_sisdr(e, R[j], zero_mean=True) for j, e in enumerate(est_rows)]))

    grouped, best = max((score([S[[m for m in range(4) if a[m] == j]].sum(0) for j in range(2)]), a)
                        for a in itertools.product(range(2), repeat=4) if len(set(a)) == 2)
    one = max(score([S[p[j]] for j in range(2)]) for p in itertools.permutations(range(4), 2))
    mix = score([R.sum(0)] * 2)
    assert abs(out["sisdr_grouped"] - grouped) < 1e-4 and abs(out["sisdr_one_to_one"] - one) < 1e-4
    assert abs(out["sisdr_mixture"] - mix) < 1e-4
    assert abs(out["sisdri_grouped"] - (grouped - mix)) < 1e-4
    assert out["grouping"] == [[m for m in range(4) if best[m] == j] for j in range(2)]
    assert out["one_to_one"] == [0, 1]


def test_cli_separation(tmp_path):
    pred, ref = tmp_path / "stems", tmp_path / "refs"
    for i in range(3):
        srcs = sources(10 + i, n=2, length=22050)
        mix_path = save_audio(tmp_path / "mixes" / f"m{i}.wav", srcs[0] + srcs[1], 22050)
        for j, s in enumerate(srcs):                       # references at 22.05 kHz
            save_audio(ref / f"m{i}" / f"source_{j}.wav", s, 22050)
        from macs_cli.audio.io import resample
        est = [resample(srcs[0], 22050, 16000), resample(srcs[1], 22050, 16000) * 0.9,
               np.zeros(16000, dtype=np.float32) + 1e-4]   # stems at 16 kHz
        for k, e in enumerate(est):
            save_audio(pred / f"m{i}" / f"stem_{k:02d}.wav", e, 16000)
        manifest = {"source": str(mix_path), "stems": [{"file": f"stem_{k:02d}.wav"} for k in range(3)]}
        (pred / f"m{i}" / "manifest.json").write_text(json.dumps(manifest))
    save_audio(pred / "lonely" / "stem_00.wav", tone(0))                 # no references
    save_audio(pred / "few" / "stem_00.wav", tone(0))                    # fewer stems than sources
    save_audio(ref / "few" / "a.wav", tone(1))
    save_audio(ref / "few" / "b.wav", tone(2))
    out = tmp_path / "rep"
    r = run("--task", "separation", "--pred", pred, "--ref", ref, "-o", out)
    assert r.exit_code == 0, r.output
    assert "1 stem folders without a reference folder (lonely)" in r.output
    assert "few: skipped (1 stems for 2 references)" in r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["pairing"]["scored"] == 3 and rep["pairing"]["skipped"][0]["name"] == "few"
    assert rep["pairing"]["unpaired_pred"] == ["lonely"]
    items = [it for it in rep["per_item"] if "skipped" not in it]
    assert all(it["mixture"] == "manifest" and it["sample_rate"] == 16000 for it in items)
    assert all(it["sisdri_grouped"] > 20 and it["sisdr_one_to_one"] > 20 for it in items)
    res = rep["results"]["sisdri_grouped"]
    assert res["n"] == 3 and np.isclose(res["mean"], np.mean([it["sisdri_grouped"] for it in items]))
    assert np.isclose(res["median"], np.median([it["sisdri_grouped"] for it in items]))
    assert "SI-SDRi, best grouping" in (out / "report.md").read_text()
    assert (out / "report.png").exists()
    one_line_error(run("--task", "separation", "--pred", pred, "--ref", tmp_path / "none", "-o",
                       tmp_path / "r2"), "no such folder")
    one_line_error(run("--task", "separation", "--pred", pred, "-o", tmp_path / "r2"), "--ref")


def sep_item(pred, ref, name, seed, refs=None, manifest=None):
    """PRED/<name>/stem_00..01.wav (the sources plus a little noise) and REF/<name>/src_0..1.wav."""
    srcs = sources(seed, n=2) if refs is None else refs
    rng = np.random.default_rng(seed)
    for j, x in enumerate(srcs):
        save_audio(ref / name / f"src_{j}.wav", np.asarray(x, dtype=np.float32))
        stem = sources(seed, n=2)[j] + 0.01 * rng.standard_normal(16000)
        save_audio(pred / name / f"stem_{j:02d}.wav", stem.astype(np.float32))
    if manifest is not None:
        (pred / name / "manifest.json").write_text(manifest)


def sep_dirs(tmp_path):
    pred, ref = tmp_path / "stems", tmp_path / "refs"
    sep_item(pred, ref, "good1", 21)
    sep_item(pred, ref, "good2", 22)
    return pred, ref


@pytest.mark.parametrize("manifest, needle", [
    ('{"stems": 5}', "'stems' is not a list"),
    ("[1]", "not a JSON object"),
    ('{"stems": [1]}', "'stems'[0] is not an object"),
    ('{"stems": [{"file": 3}]}', "'stems'[0].file"),
    ('{"source": 7, "stems": []}', "'source' is not a path"),
    ("{not json", "unreadable manifest"),
])
def test_separation_bad_manifest_is_a_per_item_error(tmp_path, manifest, needle):
    pred, ref = sep_dirs(tmp_path)
    sep_item(pred, ref, "bad", 23, manifest=manifest)
    rep = evaluate_separation(pair_separation(pred, ref))
    assert rep["pairing"]["scored"] == 2 and rep["pairing"]["failed"] == 1
    (sk,) = rep["pairing"]["skipped"]
    assert sk["name"] == "bad" and sk["kind"] == "error"
    assert "manifest.json" in sk["reason"] and needle in sk["reason"]
    out = tmp_path / "rep"
    r = run("--task", "separation", "--pred", pred, "--ref", ref, "-o", out)
    one_line_error(r, "bad", "manifest.json", needle)       # exit 1, no traceback
    assert r.exit_code == 1
    rep = json.loads((out / "report.json").read_text())    # ... and the others still evaluated
    assert rep["pairing"]["scored"] == 2 and rep["results"]["sisdri_grouped"]["n"] == 2
    assert [s["name"] for s in rep["pairing"]["skipped"]] == ["bad"]


@pytest.mark.parametrize("where", ["stem", "reference"])
def test_separation_unreadable_file_skips_that_item_only(tmp_path, where):
    pred, ref = tmp_path / "stems", tmp_path / "refs"
    sep_item(pred, ref, "good", 31)
    sep_item(pred, ref, "bad", 32)
    bad = pred / "bad" / "stem_01.wav" if where == "stem" else ref / "bad" / "src_1.wav"
    bad.write_text("not audio")
    good_only = evaluate_item(SepItem("good", sorted((pred / "good").glob("*.wav")),
                                      sorted((ref / "good").glob("*.wav"))))
    out = tmp_path / "rep"
    r = run("--task", "separation", "--pred", pred, "--ref", ref, "-o", out)
    one_line_error(r, "bad", bad.name)
    assert r.exit_code == 1
    assert "report:" in r.output and "(1 items)" in r.output          # the summary still printed
    rep = json.loads((out / "report.json").read_text())
    assert rep["pairing"]["items"] == 2 and rep["pairing"]["scored"] == 1
    assert rep["pairing"]["failed"] == 1
    assert rep["pairing"]["skipped"] == [{"name": "bad", "kind": "error",
                                          "reason": rep["per_item"][0]["skipped"]}]
    assert str(bad) in rep["pairing"]["skipped"][0]["reason"]
    res = rep["results"]["sisdri_one_to_one"]
    assert res["n"] == 1 and np.isclose(res["mean"], good_only["sisdri_one_to_one"])
    assert "1 unreadable or invalid input" in (out / "report.md").read_text()
    assert (out / "report.png").exists() and not list(out.glob(".*.tmp"))
    # every item unreadable: one error line and no report at all
    (pred / "good" / "stem_00.wav").write_text("not audio either")
    out2 = tmp_path / "rep2"
    one_line_error(run("--task", "separation", "--pred", pred, "--ref", ref, "-o", out2),
                   "no item could be scored")
    assert not out2.exists() or not any(out2.iterdir())


def test_separation_silent_references_and_mixtures_are_excluded(tmp_path):
    pred, ref = sep_dirs(tmp_path)
    zero = np.zeros(16000, dtype=np.float32)
    sep_item(pred, ref, "one_zero", 41, refs=[sources(41, n=2)[0], zero])
    sep_item(pred, ref, "all_zero", 42, refs=[zero, zero])
    sep_item(pred, ref, "offset", 43, refs=[sources(43, n=2)[0], zero + 0.2])   # DC only
    silent_mix = save_audio(tmp_path / "mix" / "silent.wav", zero)
    sep_item(pred, ref, "silent_mix", 44,
             manifest=json.dumps({"source": str(silent_mix),
                                  "stems": [{"file": "stem_00.wav"}, {"file": "stem_01.wav"}]}))
    quiet = [x * 1e-3 for x in sources(45, n=2)]                 # quiet (-60 dBFS), not silent
    sep_item(pred, ref, "quiet", 45, refs=quiet)
    out = tmp_path / "rep"
    r = run("--task", "separation", "--pred", pred, "--ref", ref, "-o", out)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output  # a warning, not an error
    flat = " ".join(r.output.split())
    assert "one_zero: skipped (silent reference src_1.wav" in flat
    assert "all_zero: skipped (silent references src_0.wav, src_1.wav" in flat
    assert "offset: skipped (silent reference src_1.wav" in flat
    assert "silent_mix: skipped (silent mixture (manifest source" in flat
    rep = json.loads((out / "report.json").read_text())
    pr = rep["pairing"]
    assert {s["name"]: s["kind"] for s in pr["skipped"]} == {
        "one_zero": "silent", "all_zero": "silent", "offset": "silent", "silent_mix": "silent"}
    assert pr["scored"] == 3 and pr["failed"] == 0
    scored = [it for it in rep["per_item"] if "skipped" not in it]
    assert sorted(it["name"] for it in scored) == ["good1", "good2", "quiet"]
    for col in ("sisdri_grouped", "sisdri_one_to_one", "sisdr_mixture"):
        res = rep["results"][col]
        assert res["n"] == 3 and np.isclose(res["mean"], np.mean([it[col] for it in scored]))
        assert np.isclose(res["median"], np.median([it[col] for it in scored]))
    assert all(it["sisdri_one_to_one"] > 10 for it in scored)
    assert "4 silent reference or mixture" in (out / "report.md").read_text()
    assert SILENT_RMS == 1e-5



@pytest.mark.parametrize("seed", [-5, 2 ** 32])
def test_kid_seed_out_of_range_is_an_option_error(seed):
    from macs_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="--seed"):
        ImageEvalOptions(metrics=["kid"], kid_seed=seed).validate()
