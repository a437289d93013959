"""Zero-shot labelling: built-in vocabularies, vocabulary parsing, scoring and the text cache.

No model: embeddings are hand-made and the encoder is a tiny fake with an ``embed_text`` method.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from macs_cli.clap import vocab
from macs_cli.clap.labels import (
    LOGIT_SCALE,
    LabelScore,
    TextEmbeddingCache,
    embed_labels,
    format_scores,
    label_stems,
    load_vocabulary,
    prompt,
    prompts,
    zero_shot,
    zero_shot_scores,
)
from macs_cli.errors import ConfigError


# -- built-in vocabularies ------------------------------------------------------------------------
def test_fsd50k_vocabulary():
    names = load_vocabulary("fsd50k")
    assert len(names) == 200 == vocab.SIZES["fsd50k"]
    assert len(set(names)) == 200
    assert names[0] == "Accelerating and revving and vroom"
    assert names[10] == "Bathtub (filling or washing)"
    assert names[158] == "Speech"
    assert names[199] == "Zipper (clothing)"
    assert "Fixed-wing aircraft and airplane" in names and "Hi-hat" in names
    assert all("_" not in n and n == n.strip() and n for n in names)

    table = vocab.read_table("fsd50k")
    assert [int(r["index"]) for r in table] == list(range(200))
    assert [r["name"] for r in table] == sorted(r["name"] for r in table)  # the official order
    assert [r["name"].replace("_", " ") for r in table] == names
    assert table[0] == {"index": "0", "name": "Accelerating_and_revving_and_vroom", "mid": "/m/07q2z82"}
    assert table[120] == {"index": "120", "name": "Music", "mid": "/m/04rlf"}
    assert table[199] == {"index": "199", "name": "Zipper_(clothing)", "mid": "/m/01s0vc"}
    assert len({r["mid"] for r in table}) == 200


def test_audioset_vocabulary():
    names = load_vocabulary("audioset")
    assert len(names) == 527 == vocab.SIZES["audioset"]
    assert len(set(names)) == 527
    assert names[0] == "Speech"
    assert names[1] == "Male speech, man speaking"
    assert names[137] == "Music"
    assert names[150] == "Zither"
    assert names[353] == "Accelerating, revving, vroom"
    assert names[521] == "Pink noise"
    assert names[526] == "Field recording"

    table = vocab.read_table("audioset")
    assert [int(r["index"]) for r in table] == list(range(527))
    assert [r["display_name"] for r in table] == names
    assert table[0]["mid"] == "/m/09x0r" and table[137]["mid"] == "/m/04rlf"
    assert table[433] == {"index": "433", "mid": "/g/122z_qxw", "display_name": "Firecracker"}
    assert len({r["mid"] for r in table}) == 527


def test_fsd50k_names_match_audioset_by_mid():
    """FSD50K's names are AudioSet's with ', ' (and ', and ') written '_and_' and spaces '_'."""
    audioset = {r["mid"]: r["display_name"] for r in vocab.read_table("audioset")}
    shared = 0
    for row in vocab.read_table("fsd50k"):
        if row["mid"] in audioset:
            shared += 1
            a = audioset[row["mid"]]
            assert a.replace(", and ", "_and_").replace(", ", "_and_").replace(" ", "_") == row["name"]
    assert shared == 192


@pytest.mark.parametrize("spelling", ["FSD50K", " fsd-50k ", "Fsd_50k"])
def test_builtin_names_are_case_and_dash_insensitive(spelling):
    assert load_vocabulary(spelling) == load_vocabulary("fsd50k")
    assert load_vocabulary("AudioSet") == load_vocabulary("audio_set") == load_vocabulary("audioset")


def test_builtin_lists_are_fresh_copies():
    a = load_vocabulary("fsd50k")
    a.clear()
    assert len(load_vocabulary("fsd50k")) == 200


# -- custom vocabularies --------------------------------------------------------------------------
def test_comma_separated_string():
    assert load_vocabulary("dog barking, car engine") == ["dog barking", "car engine"]
    assert load_vocabulary("  dog   barking ,, car engine,  ") == ["dog barking", "car engine"]
    # duplicates dropped case-insensitively, first spelling kept
    assert load_vocabulary("Dog, cat, dog, CAT, bird") == ["Dog", "cat", "bird"]
    assert load_vocabulary("siren") == ["siren"]


def test_list_input():
    assert load_vocabulary(["a b", " a  b ", "c"]) == ["a b", "c"]
    assert load_vocabulary(("Male speech, man speaking", "Music")) == ["Male speech, man speaking", "Music"]


def test_label_file(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("\ufeff# my labels\nDog barking\n\n  car engine  \nMale speech, man speaking\ndog barking\n",
                 encoding="utf-8")
    expected = ["Dog barking", "car engine", "Male speech, man speaking"]
    assert load_vocabulary(p) == expected           # a Path
    assert load_vocabulary(str(p)) == expected      # a string naming a file


def test_errors_are_one_line(tmp_path):
    def err(arg) -> str:
        with pytest.raises(ConfigError) as info:
            load_vocabulary(arg)
        msg = str(info.value)
        assert "\n" not in msg and msg
        return msg

    assert "empty" in err("")
    assert "empty" in err("   ")
    assert "no labels" in err(" , ,, ")
    assert "no labels" in err([])
    assert "no labels" in err(["", "  "])
    assert "strings" in err(["dog", 3])
    assert "does not exist" in err(str(tmp_path / "missing.txt"))
    assert "does not exist" in err("./nope/labels")
    assert "does not exist" in err(tmp_path / "missing")
    assert "not a file" in err(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    assert "no labels" in err(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert "UTF-8" in err(binary)
    assert "got int" in err(5)


def test_prompt():
    assert prompt("Dog") == "The sound of Dog"              # used as given, not lower-cased
    assert prompt("car engine") == "The sound of car engine"
    assert prompts(["a", "b"]) == ["The sound of a", "The sound of b"]
    assert prompt("x", template="A recording of {}.") == "A recording of x."


# -- scoring --------------------------------------------------------------------------------------
def _eye_text(k: int = 4, dim: int = 512, scale: float = 3.0) -> torch.Tensor:
    """K orthogonal text embeddings (scaled: zero_shot normalises them)."""
    return torch.eye(k, dim) * scale


def test_zero_shot_orthogonal_embeddings():
    labels = ["dog", "cat", "car", "rain"]
    text = _eye_text()
    audio = torch.zeros(3, 512)
    audio[0, 2] = 5.0                   # exactly "car"
    audio[1, 0], audio[1, 1] = 0.8, 0.6  # mostly "dog", then "cat"
    audio[2, 3] = -1.0                  # opposite of "rain"
    out = zero_shot(audio, text, labels, top_k=2)
    assert len(out) == 3 and all(len(row) == 2 for row in out)
    assert all(isinstance(s, LabelScore) for row in out for s in row)

    car = out[0][0]
    assert car.label == "car" and car.cosine == pytest.approx(1.0)
    expected = math.exp(100) / (math.exp(100) + 3)  # softmax of 100 * [0, 0, 1, 0]
    assert car.score == pytest.approx(expected, abs=1e-6)
    assert out[0][1].cosine == pytest.approx(0.0, abs=1e-6)

    assert [s.label for s in out[1]] == ["dog", "cat"]
    assert [s.cosine for s in out[1]] == pytest.approx([0.8, 0.6], abs=1e-6)
    logits = np.array([80.0, 60.0, 0.0, 0.0])
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [s.score for s in out[1]] == pytest.approx(p[:2].tolist(), abs=1e-6)

    # "rain" has cosine -1: last; the others tie at 0 and keep vocabulary order
    assert [s.label for s in out[2]] == ["dog", "cat"]
    full = zero_shot(audio[2], text, labels, top_k=10)[0]  # 1-D input, top_k clamped to K
    assert [s.label for s in full] == ["dog", "cat", "car", "rain"]
    assert full[-1].cosine == pytest.approx(-1.0)


def test_zero_shot_scores_sum_to_one():
    torch.manual_seed(0)
    audio, text = torch.randn(5, 512), torch.randn(7, 512)
    probs, cos = zero_shot_scores(audio, text)
    assert probs.shape == cos.shape == (5, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)
    ref = torch.nn.functional.normalize(audio, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    assert torch.allclose(cos, ref, atol=1e-6)
    assert torch.allclose(probs, torch.softmax(LOGIT_SCALE * ref, -1), atol=1e-6)

    labels = list("abcdefg")
    rows = zero_shot(audio, text, labels, top_k=7)
    for r, row in enumerate(rows):
        assert sum(s.score for s in row) == pytest.approx(1.0, abs=1e-5)
        assert [s.cosine for s in row] == sorted((s.cosine for s in row), reverse=True)
        assert {s.label for s in row} == set(labels)
        for s in row:
            assert s.score == pytest.approx(float(probs[r, labels.index(s.label)]), abs=1e-7)
    # a smaller logit scale flattens the distribution, the order stays
    flat = zero_shot(audio, text, labels, top_k=7, logit_scale=1.0)
    assert [s.label for s in flat[0]] == [s.label for s in rows[0]]
    assert max(s.score for s in flat[0]) < max(s.score for s in rows[0])


def test_zero_shot_accepts_numpy_and_checks_shapes():
    text = _eye_text(3, 8).numpy()
    audio = np.zeros((1, 8), dtype=np.float64)
    audio[0, 1] = 1.0
    assert zero_shot(audio, text, ["a", "b", "c"], top_k=1)[0][0].label == "b"
    with pytest.raises(ValueError, match="labels"):
        zero_shot(audio, text, ["a", "b"])
    with pytest.raises(ValueError, match="-d"):
        zero_shot(np.zeros((1, 9)), text, ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-finite"):
        zero_shot(np.full((1, 8), np.nan), text, ["a", "b", "c"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="top_k"):
            zero_shot(audio, text, ["a", "b", "c"], top_k=bad)
    assert zero_shot(np.zeros((0, 8)), text, ["a", "b", "c"]) == []


def test_format_scores():
    row = [LabelScore("Dog", 0.912, 0.3), LabelScore("Bark", 0.05, 0.2)]
    assert format_scores(row) == "Dog 0.91, Bark 0.05"


# -- label_stems with a fake encoder --------------------------------------------------------------
class FakeEncoder:
    """Text embedding: a one-hot on a hash of the label part of the prompt, times 2 (not unit)."""

    dim = 16

    def __init__(self, labels):
        self.index = {prompt(label): i for i, label in enumerate(labels)}
        self.calls: list[list[str]] = []

    def embed_text(self, texts):
        self.calls.append(list(texts))
        out = torch.zeros(len(texts), self.dim)
        for row, t in enumerate(texts):
            out[row, self.index[t]] = 2.0
        return out


def test_label_stems_batches_and_labels():
    labels = [f"sound {i}" for i in range(10)]
    enc = FakeEncoder(labels)
    audio = torch.zeros(2, 16)
    audio[0, 7] = 1.0
    audio[1, 3], audio[1, 4] = 0.6, 0.8
    out = label_stems(enc, audio, labels, top_k=2, batch_size=4, cache=TextEmbeddingCache())
    assert [len(c) for c in enc.calls] == [4, 4, 2]
    assert [t for c in enc.calls for t in c] == [f"The sound of sound {i}" for i in range(10)]
    assert out[0][0].label == "sound 7" and out[0][0].cosine == pytest.approx(1.0)
    assert [s.label for s in out[1]] == ["sound 4", "sound 3"]
    assert [s.cosine for s in out[1]] == pytest.approx([0.8, 0.6], abs=1e-6)

    # a comma-separated vocabulary goes through load_vocabulary
    enc2 = FakeEncoder(["sound 3", "sound 7"])
    out2 = label_stems(enc2, torch.eye(2, 16), "sound 3, sound 7, Sound 3", top_k=1, cache=False)
    assert [row[0].label for row in out2] == ["sound 3", "sound 7"]
    assert enc2.calls == [["The sound of sound 3", "The sound of sound 7"]]


def test_label_stems_caches_per_vocabulary_and_encoder():
    labels_a = ["dog", "cat", "car"]
    labels_b = ["rain", "wind"]
    enc = FakeEncoder(labels_a + labels_b)
    cache = TextEmbeddingCache()
    audio = torch.randn(4, 16)

    first = label_stems(enc, audio, labels_a, cache=cache, batch_size=2)
    assert len(enc.calls) == 2 and len(cache) == 1
    again = label_stems(enc, audio[:1], "dog, cat, car", cache=cache, batch_size=2)
    assert len(enc.calls) == 2                       # same vocabulary: no new embedding
    assert again[0] == first[0]
    label_stems(enc, audio, labels_b, cache=cache)
    assert len(enc.calls) == 3 and len(cache) == 2   # another vocabulary: embedded once
    label_stems(enc, audio, labels_a, cache=cache)
    label_stems(enc, audio, labels_b, cache=cache)
    assert len(enc.calls) == 3

    other = FakeEncoder(labels_a)                    # another encoder: its own entries
    label_stems(other, audio, labels_a, cache=cache)
    assert len(other.calls) == 1 and len(cache) == 3

    label_stems(enc, audio, labels_a, cache=False)   # no cache: embeds again
    assert len(enc.calls) == 4

    emb = embed_labels(enc, labels_a, cache=cache)
    assert emb.shape == (3, 16) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3))
    assert len(enc.calls) == 4

    del other
    gc.collect()
    assert len(cache) == 2                           # entries die with their encoder
    cache.clear()
    assert len(cache) == 0


def test_text_cache_is_bounded_and_default_cache_works():
    from macs_cli.clap import labels as labels_mod

    enc = FakeEncoder([f"l{i}" for i in range(6)])
    cache = TextEmbeddingCache(max_vocabularies=2)
    for vocab_ in (["l0"], ["l1"], ["l2"]):
        embed_labels(enc, vocab_, cache=cache)
    assert len(cache) == 2
    embed_labels(enc, ["l0"], cache=cache)           # evicted: embedded again
    assert len(enc.calls) == 4

    labels_mod.TEXT_CACHE.clear()
    try:
        embed_labels(enc, ["l4", "l5"])              # cache=True: the module cache
        embed_labels(enc, ["l4", "l5"])
        assert len(enc.calls) == 5 and len(labels_mod.TEXT_CACHE) == 1
    finally:
        labels_mod.TEXT_CACHE.clear()


def test_label_stems_errors():
    enc = FakeEncoder(["a"])
    with pytest.raises(ConfigError, match="batch_size"):
        label_stems(enc, torch.zeros(1, 16), ["a"], batch_size=0, cache=False)
    with pytest.raises(ConfigError, match="no labels"):
        label_stems(enc, torch.zeros(1, 16), " , ", cache=False)

    class Broken(FakeEncoder):
        def embed_text(self, texts):
            return torch.zeros(len(texts) + 1, self.dim)

    with pytest.raises(ValueError, match="embed_text returned"):
        label_stems(Broken(["a"]), torch.zeros(1, 16), ["a"], cache=False)
