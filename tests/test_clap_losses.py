"""MACS's CLAP-space losses: soft ranks, Spearman, the contrastive and rank losses against
independent computations, gradients through the frozen CLAP encoder, the curriculum, and
``macs train-sep`` with the CLAP terms on (tiny local CLAP models, CPU, no network).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from scipy.stats import rankdata, spearmanr
from typer.testing import CliRunner

from macs_cli.cli.main import app
from macs_cli.clap import load_clap
from macs_cli.separation.model import Separator
from macs_cli.training import softrank
from macs_cli.training.clap_losses import (TAU2_INIT, AlignLoss, ClapSpace, RankLoss, align_loss, clap_alpha,
                                           label_texts, mixit_weight, rank_loss, texts_per_mixture)
from macs_cli.training.losses import MixtureBatch
from macs_cli.training.softrank import hard_rank, pairwise_soft_rank, soft_rank, spearman

from . import clap_fixtures as cf
from .conftest import make_clip_folder, tiny_config

runner = CliRunner()
needs_torchsort = pytest.mark.skipif(not softrank.torchsort_available(), reason="torchsort not installed")
BACKENDS = [pytest.param("torchsort", marks=needs_torchsort), "pairwise"]


# -- fixtures: tiny CLAP models built locally -------------------------------------------------------
@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clap-losses")


@pytest.fixture(scope="module")
def tok_dir(clap_dir) -> Path:
    return cf.make_tokenizer(clap_dir / "tokenizer")


@pytest.fixture(scope="module")
def laion_ckpt(clap_dir) -> Path:
    path = clap_dir / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), path)
    return path


@pytest.fixture(scope="module")
def laion(laion_ckpt, tok_dir):
    return load_clap(laion_ckpt, tokenizer=tok_dir, require_text=True)


@pytest.fixture(scope="module")
def hf(clap_dir, tok_dir):
    return load_clap(cf.make_hf_clap(clap_dir / "hf-clap", tok_dir))


def separated(x: torch.Tensor, gap: float) -> torch.Tensor:
    """Rows whose values are at least ``gap`` apart (a random permutation of a spaced grid)."""
    b, m = x.shape
    grid = torch.arange(m, dtype=x.dtype) * gap
    return torch.stack([grid[torch.randperm(m)] for _ in range(b)]) + x[:, :1]


# -- soft ranks and Spearman -----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_rank_converges_to_hard_ranks(backend):
    torch.manual_seed(0)
    x = separated(torch.randn(16, 6, dtype=torch.float64), gap=0.05) + 0.01 * torch.rand(16, 6, dtype=torch.float64)
    hard = torch.from_numpy(np.stack([rankdata(r) for r in x.numpy()]))
    assert torch.equal(hard_rank(x), hard)
    errors = [float((soft_rank(x, s, backend) - hard).abs().max()) for s in (1.0, 0.1, 0.01, 0.002)]
    assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:])), errors   # monotone convergence
    # gaps >= 0.04 = 20 x strength: torchsort is exact once gaps >= strength; the pairwise error is
    # at most (M - 1) sigmoid(-20) = 1e-8 per element
    assert errors[-1] < 1e-6, errors
    # ties count one half each, as scipy's average ranks
    tied = torch.tensor([[0.3, 0.1, 0.3, -2.0]], dtype=torch.float64)
    assert torch.allclose(soft_rank(tied, 1e-4, backend), torch.tensor([[3.5, 2.0, 3.5, 1.0]], dtype=torch.float64))


@needs_torchsort
def test_torchsort_and_pairwise_agree():
    torch.manual_seed(1)
    x = torch.randn(32, 6, dtype=torch.float64)
    gap = float(x.sort(-1).values.diff(dim=-1).min())
    assert gap > 0
    s = gap / 20  # both within 1e-6 of the hard ranks (see above), so within 2e-6 of each other
    a, b = soft_rank(x, s, "torchsort"), soft_rank(x, s, "pairwise")
    assert (a - b).abs().max() < 2e-6
    # at any strength both keep the order of x and the sum M (M + 1) / 2 of the ranks
    for s in (0.05, 0.5, 5.0):
        for r in (soft_rank(x, s, "torchsort"), soft_rank(x, s, "pairwise")):
            assert torch.allclose(r.sum(-1), torch.full((32,), 21.0, dtype=torch.float64))
            assert (r.gather(-1, x.argsort(-1)).diff(dim=-1) >= -1e-12).all()   # weakly increasing in x


def test_pairwise_is_the_documented_formula_and_differentiable():
    x = torch.tensor([[0.2, -0.1, 0.5]], dtype=torch.float64, requires_grad=True)
    eps = 0.3
    v = x.detach()[0].tolist()
    expected = [1 + sum(1 / (1 + math.exp(-(v[i] - v[j]) / eps)) for j in range(3) if j != i) for i in range(3)]
    r = pairwise_soft_rank(x, eps)
    assert torch.allclose(r, torch.tensor([expected], dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda v: pairwise_soft_rank(v, eps), (x,))


def test_soft_rank_falls_back_when_torchsort_is_missing(monkeypatch):
    monkeypatch.setattr(softrank, "_torchsort", None)
    x = torch.randn(2, 5, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="pairwise"):
        r = soft_rank(x, 0.2)
    assert torch.equal(r, pairwise_soft_rank(x, 0.2))
    with pytest.raises(ImportError):
        soft_rank(x, 0.2, "torchsort")
    with pytest.raises(ValueError):
        soft_rank(x[0], 0.2)


def test_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 6)), rng.standard_normal((20, 6))
    x[3, 2] = x[3, 4]  # a tie
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ours = spearman(hard_rank(tx), hard_rank(ty))
    ref = [spearmanr(a, b).statistic for a, b in zip(x, y)]
    assert np.allclose(ours.numpy(), ref, atol=1e-12)
    # the soft-rank Spearman tends to scipy's as the regularisation goes to 0
    for backend in ("pairwise",) + (("torchsort",) if softrank.torchsort_available() else ()):
        soft = spearman(soft_rank(tx, 1e-6, backend), hard_rank(ty))
        assert np.allclose(soft.numpy(), ref, atol=1e-6)


# -- label texts -----------------------------------------------------------------------------------
def test_label_texts_rule():
    assert texts_per_mixture(6) == [3, 3] and texts_per_mixture(5) == [3, 2]
    assert label_texts([["Dog_bark", "Dog bark", "Rain"], ["Speech"]], 6) == [
        "The sound of dog bark", "The sound of rain", "Noise", "The sound of speech", "Noise", "Noise"]
    # more labels than a mixture's share are cut; unlabelled clips give only Noise
    assert label_texts([["a", "b", "c", "d"], []], 4) == ["The sound of a", "The sound of b", "Noise", "Noise"]
    assert label_texts(None, 4) == ["Noise"] * 4
    assert label_texts([["Bark"], ["Rain"]], 2, template="a {} sound", lowercase=False) == ["a Bark sound",
                                                                                            "a Rain sound"]


def test_fsd50k_generic_classes_are_dropped(tmp_path):
    from macs_cli.training.data import clips_from_fsd50k, fsd50k_labels

    assert fsd50k_labels("Electric_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music") == [
        "Electric guitar", "Guitar", "Plucked string instrument", "Music"]
    assert fsd50k_labels("Bark,Dog,Domestic_animals_and_pets,Animal") == ["Bark", "Dog", "Animal"]
    assert fsd50k_labels("a,b,c,d,e,f,g") == ["a", "b", "c", "d", "e"]
    (tmp_path / "ground_truth").mkdir()
    (tmp_path / "ground_truth" / "dev.csv").write_text(
        'fname,labels,mids,split\n1,"Car,Vehicle",/m/1,train\n')
    assert clips_from_fsd50k(tmp_path)[0].labels == ["Car"]


# -- the losses against independent computations --------------------------------------------------
def brute_align(a, t, tau2, tau1):
    """The contrastive loss with explicit loops over batch items, stems and texts."""
    b_, m_, _ = a.shape
    k_ = t.shape[1]
    rows = cols = 0.0
    for b in range(b_):
        an = [a[b, i] / a[b, i].norm() for i in range(m_)]
        tn = [t[b, k] / t[b, k].norm() for k in range(k_)]
        tp = []
        for i in range(m_):
            s = [tau1 * float(an[i] @ tn[k]) for k in range(k_)]
            e = [math.exp(v - max(s)) for v in s]
            v = sum(e[k] / sum(e) * tn[k] for k in range(k_))
            tp.append(v / v.norm())
        logit = [[math.exp(tau2) * float(an[i] @ tp[j]) for j in range(m_)] for i in range(m_)]
        for i in range(m_):
            rows += -logit[i][i] + math.log(sum(math.exp(v) for v in logit[i]))
            cols += -logit[i][i] + math.log(sum(math.exp(logit[j][i]) for j in range(m_)))
    return 0.5 * (rows + cols) / (b_ * m_)


def test_align_loss_matches_brute_force():
    torch.manual_seed(2)
    a = torch.randn(3, 4, 8, dtype=torch.float64)
    t = a[:, [1, 0, 3, 2]] + 0.5 * torch.randn(3, 4, 8, dtype=torch.float64)   # related texts
    for tau1, tau2 in ((100.0, TAU2_INIT), (3.0, 0.5)):
        ours = align_loss(a, t, torch.tensor(tau2, dtype=torch.float64), tau1)
        assert abs(float(ours) - brute_align(a, t, tau2, tau1)) < 1e-9
    # any number of texts K (e.g. 5 labels per clip as the official FSD50K loader makes)
    t10 = torch.randn(3, 10, 8, dtype=torch.float64)
    assert abs(float(align_loss(a, t10, TAU2_INIT)) - brute_align(a, t10, TAU2_INIT, 100.0)) < 1e-9
    # perfectly matched, well separated stems and texts: the loss goes to 0 as exp(tau2) grows
    eye = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    assert float(align_loss(eye, eye, 10.0)) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_loss_matches_scipy(backend):
    torch.manual_seed(3)
    a = torch.randn(5, 6, 16, dtype=torch.float64)
    m = torch.randn(5, 16, dtype=torch.float64)
    sims = np.array([[float(a[b, i] @ m[b] / (a[b, i].norm() * m[b].norm())) for i in range(6)] for b in range(5)])
    assert np.diff(np.sort(sims, axis=1), axis=1).min() > 2e-3  # strength 1e-4 is 20x below every gap
    ref = np.mean([1 - spearmanr(s, [6, 5, 4, 3, 2, 1]).statistic for s in sims])
    assert abs(float(rank_loss(a, m, 1e-4, backend)) - ref) < 1e-6
    # stems already ordered by similarity: 0; reversed: 2
    order = np.argsort(-sims, axis=1)
    ordered = torch.stack([a[b, order[b]] for b in range(5)])
    assert float(rank_loss(ordered, m, 1e-4, backend)) < 1e-6
    assert abs(float(rank_loss(ordered.flip(1), m, 1e-4, backend)) - 2.0) < 1e-6
    # differentiable at the default strength
    x = a.clone().requires_grad_(True)
    rank_loss(x, m, 1.0, backend).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_curriculum_weights():
    epochs = 10
    alphas = [clap_alpha(e, epochs) for e in range(epochs)]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0
    assert np.allclose(np.diff(alphas), 1 / 9)  # linear
    assert all(mixit_weight(e, epochs) == 1 - clap_alpha(e, epochs) for e in range(epochs))
    assert clap_alpha(0, 1) == 1.0 and mixit_weight(0, 1) == 0.0  # one epoch is also the last


# -- through the frozen encoder ---------------------------------------------------------------------
def _batch(length: int, b: int = 2) -> MixtureBatch:
    g = torch.Generator().manual_seed(0)
    m1, m2 = 0.1 * torch.randn(b, length, generator=g), 0.1 * torch.randn(b, length, generator=g)
    labels = [[["dog"], ["rain", "speech"]], [["music", "music"], []]][:b]
    return MixtureBatch(torch.zeros(b, 2, length), torch.zeros(b, 2), m1, m2, labels)


@pytest.mark.parametrize("name", ["laion", "hf"])
def test_gradients_reach_the_separator_through_clap(request, name):
    encoder = request.getfixturevalue(name)
    torch.manual_seed(0)
    model = Separator(tiny_config()).train()
    batch = _batch(model.config.window_samples)
    space = ClapSpace(encoder, 16_000, model.config.num_sources, batch_chunk=3)
    align, rank = AlignLoss(space), RankLoss(space, 1.0)
    stems = model(batch.mix)
    loss = align(batch, stems) + rank(batch, stems)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert align.tau2.grad is not None and torch.isfinite(align.tau2.grad)
    assert all(p.grad is None and not p.requires_grad for p in encoder.model.parameters())
    # the rank term alone also reaches the separator (through the stems' embeddings)
    model.zero_grad()
    rank(batch, model(batch.mix)).backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    # chunked + checkpointed embeddings equal the plain ones
    wav = 0.1 * torch.randn(5, 8000)
    plain = ClapSpace(encoder, 16_000, 4).embed_audio(wav)
    assert torch.allclose(space.embed_audio(wav.requires_grad_(True)), plain, atol=1e-5)


def test_text_embeddings_are_cached(laion):
    calls = []
    space = ClapSpace(laion, 16_000, 4)
    real = laion.embed_text
    space.encoder = type("Spy", (), {"embed_text": lambda self, t: calls.append(list(t)) or real(t),
                                     "device": laion.device})()
    batch = _batch(16_000)
    t1 = space.text_embeddings(batch)
    t2 = space.text_embeddings(batch)
    assert t1.shape == (2, 4, 512) and torch.equal(t1, t2)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 5   # 4 labels + Noise, once each
    assert torch.allclose(t1.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    ref = torch.nn.functional.normalize(real(["The sound of dog", "Noise"]), dim=-1)
    assert torch.allclose(t1[0, 0], ref[0], atol=1e-6) and torch.allclose(t1[0, 1], ref[1], atol=1e-6)


# -- train-sep with the CLAP terms --------------------------------------------------------------------
TINY_SETS = ["model.channels=4", "model.depth=3", "model.num_sources=4", "model.window_seconds=1.0",
             "validation.mixtures=2", "validation.every=100", "checkpoint.every=2", "log.every=1",
             "optim.batch_size=2", "train.epochs=3"]


def _sets(*extra):
    out = []
    for s in (*TINY_SETS, *extra):
        out += ["--set", s]
    return out


def _clap_sets(laion_ckpt, tok_dir):
    return _sets("clap.losses=true", f"clap.model={laion_ckpt}", f"clap.tokenizer={tok_dir}")


def test_train_sep_with_clap_losses_and_resume(tmp_path, laion_ckpt, tok_dir, monkeypatch):
    clips = make_clip_folder(tmp_path / "clips", n_labels=3, per_label=2)
    full, broken = tmp_path / "full", tmp_path / "broken"
    args = ["train-sep", "--data", str(clips), "--steps", "4", "--device", "cpu", "-q",
            *_clap_sets(laion_ckpt, tok_dir)]
    r = runner.invoke(app, [*args, "-o", str(full)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(full / "metrics.csv")))
    assert [int(x["step"]) for x in rows] == [1, 2, 3, 4]
    # epochs 0, 0, 1, 2 of 3: alpha = 0, 0, 0.5, 1
    assert [float(x["w_align"]) for x in rows] == [0.0, 0.0, 0.5, 1.0]
    assert [float(x["w_rank"]) for x in rows] == [0.0, 0.0, 0.5, 1.0]
    assert [float(x["w_mixit"]) for x in rows] == [1.0, 1.0, 0.5, 0.0]
    for x in rows[2:]:
        assert math.isfinite(float(x["align"])) and float(x["align"]) > 0
        assert math.isfinite(float(x["rank"])) and 0 <= float(x["rank"]) <= 2
        expected = sum(float(x[f"w_{k}"]) * float(x[k]) for k in ("mixit", "align", "rank"))
        assert abs(float(x["loss"]) - expected) < 1e-4
    # tau2 is trained and checkpointed, but the exported separator is unchanged
    state = torch.load(full / "checkpoint.pt", weights_only=True)
    tau2 = state["losses"]["align"]["tau2"]
    assert float(tau2) != pytest.approx(TAU2_INIT, abs=1e-7)
    assert not any("tau2" in k for k in load_file(str(full / "separator.safetensors")))
    from macs_cli.weights.separator import load_separator

    assert load_separator(str(full)).config.num_sources == 4

    # killed after step 3 (last checkpoint: step 2), then resumed: ends where the unbroken run ends
    def killed(code):
        raise SystemExit(code)

    monkeypatch.setenv("MACS_FAULT_AFTER_STEP", "3")
    monkeypatch.setattr(os, "_exit", killed)
    r = runner.invoke(app, [*args, "-o", str(broken)])
    assert r.exit_code == 137, r.output
    assert int(torch.load(broken / "checkpoint.pt", weights_only=True)["step"]) == 2
    monkeypatch.delenv("MACS_FAULT_AFTER_STEP")
    r = runner.invoke(app, [*args, "-o", str(broken), "--resume"])
    assert r.exit_code == 0, r.output
    resumed = torch.load(broken / "checkpoint.pt", weights_only=True)
    assert torch.allclose(resumed["losses"]["align"]["tau2"], tau2, atol=1e-6)
    a, b = load_file(str(full / "separator.safetensors")), load_file(str(broken / "separator.safetensors"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    la = [float(x["loss"]) for x in rows]
    lb = [float(x["loss"]) for x in csv.DictReader(open(broken / "metrics.csv"))]
    assert np.allclose(la, lb, atol=1e-5)


@pytest.mark.parametrize("extra,needle", [
    (["clap.losses=true"], "clap.losses=true needs clap.model"),
    (["clap.rank_regularization=0"], "clap.rank_regularization"),
    (["clap.soft_rank=fast"], "clap.soft_rank"),
    (["clap.losses=true", "clap.model=/nonexistent/clap.pt"], "no such CLAP checkpoint"),
])
def test_train_sep_clap_config_errors(tmp_path, extra, needle):
    clips = make_clip_folder(tmp_path / "clips", n_labels=1, per_label=1)
    r = runner.invoke(app, ["train-sep", "--data", str(clips), "-o", str(tmp_path / "r"), "-q", "--device", "cpu",
                            *_sets(*extra)])
    assert r.exit_code != 0 and "Traceback" not in r.output and needle in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_train_sep_clap_losses_need_labels(tmp_path, laion_ckpt, tok_dir):
    root = tmp_path / "flat"
    root.mkdir()
    for k in range(2):  # clips in the root folder have no label
        sf.write(root / f"{k}.wav", (0.1 * np.random.default_rng(k).standard_normal(16_000)).astype(np.float32),
                 16_000)
    r = runner.invoke(app, ["train-sep", "--data", str(root), "-o", str(tmp_path / "r"), "-q", "--device", "cpu",
                            "--steps", "1", *_clap_sets(laion_ckpt, tok_dir)])
    assert r.exit_code != 0 and "needs labelled clips" in r.output and "Traceback" not in r.output, r.output
