"""Hard-negative mining (simcse_hub.mine, ``simcse-hub mine``): the rules a negative follows, on embeddings the
test chooses and on a tiny SimCSE model; the triplet file the trainer reads; bad input in one line."""

from __future__ import annotations

import gzip
import json
import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, make_model

from simcse_hub.cli import main
from simcse_hub.data import read_examples
from simcse_hub.mine import mine_hard_negatives
from simcse_hub.train import save_model


class FixedModel:
    """Embeddings the test chooses: 2-d unit vectors at the given angles (degrees)."""

    def __init__(self, angles: dict[str, float]) -> None:
        self.angles = angles

    def encode(self, sentences, batch_size=64, normalize_to_unit=True, return_numpy=False):
        radians = np.deg2rad([self.angles[s] for s in sentences])
        return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)  # (n, 2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_model(make_model("bert", seed=2, pooler_type="avg"), tmp_path_factory.mktemp("mine") / "model",
                      tokenizer)


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    """40 pairs (the positive a shortened copy of the anchor); some anchors have two positives, and one positive is
    also an anchor."""
    rng = random.Random(5)
    rows = []
    for _ in range(30):
        words = rng.choices(WORDS, k=9)
        rows.append((" ".join(words), " ".join(words[:6])))
    rows += [(anchor, positive + " too") for anchor, positive in rows[:10]]  # a second positive for 10 anchors
    rows.append((rows[0][1], rows[1][0]))  # a positive that is also an anchor
    path = tmp_path_factory.mktemp("mine") / "pairs.tsv.gz"
    path.write_bytes(gzip.compress(("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p in rows)).encode()))
    return path


def read_pairs_of(path: Path) -> dict[str, set[str]]:
    positives: dict[str, set[str]] = {}
    for anchor, positive in read_examples(path).rows:
        positives.setdefault(anchor, set()).add(positive)
    return positives


# ---------------------------------------------------------------------------------------------------- the rules


def test_the_negative_is_the_most_similar_candidate_below_the_margin_past_range_min(tmp_path):
    angles = {"a": 0, "p": 10, "near": 12, "x": 20, "y": 40, "b": 90, "q": 95}
    model = FixedModel(angles)
    pairs = [("a", "p"), ("x", "y"), ("b", "q"), ("a", "near"), ("a", "p")]
    # Candidates are the positives (p, near, q, y), never the pair's anchor nor any positive of the same anchor; the
    # margin is below the anchor's lowest positive cosine.
    # For a: near and p are its own; y (cos 40 deg = .766) is below cos(12 deg) - .05 = .928 -> y.
    # For b: q is its own; y (cos 50 deg = .643) is below cos(5 deg) - .05 = .946 -> y.
    # For x: y is its own; near (cos 8 deg = .990) is not below cos(20 deg) - .05 = .890, p (.985) neither, q
    # (cos 75 deg = .259) is -> q.
    result = mine_hard_negatives(pairs, model, tmp_path / "t.tsv", margin=0.05)
    # Grouped by anchor, in the order of each anchor's first pair; the repeated pair once.
    assert read_examples(tmp_path / "t.tsv").rows == [("a", "p", "y"), ("a", "near", "y"), ("x", "y", "q"),
                                                      ("b", "q", "y")]
    assert (result.pairs, result.mined, result.skipped) == (4, 4, 0)
    assert result.mean_positive == pytest.approx(np.mean(np.cos(np.deg2rad([10, 12, 20, 5]))), abs=1e-6)
    assert result.mean_negative == pytest.approx(np.mean(np.cos(np.deg2rad([40, 40, 75, 50]))), abs=1e-6)

    # range_min=1 skips the most similar candidate the margin keeps: a gets q instead of y, b near instead of y; x
    # has one candidate below the margin (q), so it is skipped.
    skipped = mine_hard_negatives(pairs, model, tmp_path / "r.tsv", margin=0.05, range_min=1)
    assert read_examples(tmp_path / "r.tsv").rows == [("a", "p", "q"), ("a", "near", "q"), ("b", "q", "near")]
    assert (skipped.mined, skipped.skipped) == (3, 1)
    # Both margins apply, each on its own (sentence-transformers' rule): for a (lowest positive .978), y (.766) is
    # below .978 - .05 = .928 and below .978 - .978 * .2 = .782, so it is kept, though not below .978 - .05 - .196.
    mine_hard_negatives(pairs, model, tmp_path / "m.tsv", margin=0.05, relative_margin=0.2)
    assert [row[2] for row in read_examples(tmp_path / "m.tsv").rows] == ["y", "y", "q", "y"]
    # A margin no candidate satisfies: every pair is skipped, and the file is empty.
    skipped = mine_hard_negatives(pairs, model, tmp_path / "s.jsonl", margin=2.0)
    assert (skipped.mined, skipped.skipped) == (0, 4)
    assert (tmp_path / "s.jsonl").read_text() == ""


def test_anchors_as_candidates_never_give_a_pair_its_own_anchor(tmp_path):
    model = FixedModel({"a": 0, "p": 10, "b": 50, "q": 60})
    pairs = [("a", "p"), ("b", "q")]
    # A margin of -1 keeps every candidate: what keeps a pair's own anchor (cosine 1) and positive out is the rule.
    mine_hard_negatives(pairs, model, tmp_path / "t.tsv", include_anchors=True, margin=-1.0)
    assert read_examples(tmp_path / "t.tsv").rows == [("a", "p", "b"), ("b", "q", "p")]
    mine_hard_negatives(pairs, model, tmp_path / "u.tsv", margin=-1.0)  # the positives only
    assert read_examples(tmp_path / "u.tsv").rows == [("a", "p", "q"), ("b", "q", "p")]


def test_random_sampling_is_seeded_and_stays_within_the_rules(tmp_path):
    rng = random.Random(0)
    angles = {f"s{i}": rng.uniform(0, 360) for i in range(60)}
    pairs = [(f"s{i}", f"s{i + 30}") for i in range(30)]
    model = FixedModel(angles)
    random.seed(7)
    state = random.getstate()
    first = mine_hard_negatives(pairs, model, tmp_path / "1.tsv", sampling="random", seed=3, margin=0.0)
    assert random.getstate() == state  # the seed is used, and the global state left as it was
    mine_hard_negatives(pairs, model, tmp_path / "2.tsv", sampling="random", seed=3, margin=0.0)
    mine_hard_negatives(pairs, model, tmp_path / "3.tsv", sampling="random", seed=4, margin=0.0)
    top = mine_hard_negatives(pairs, model, tmp_path / "top.tsv", margin=0.0)
    assert (tmp_path / "1.tsv").read_bytes() == (tmp_path / "2.tsv").read_bytes()
    assert (tmp_path / "1.tsv").read_bytes() != (tmp_path / "3.tsv").read_bytes()
    assert first.mined == top.mined > 0
    cos = {(a, b): np.cos(np.deg2rad(angles[a] - angles[b])) for a in angles for b in angles}
    for anchor, positive, negative in read_examples(tmp_path / "1.tsv").rows:
        assert negative not in (anchor, positive) and cos[anchor, negative] < cos[anchor, positive] + 1e-6


# ---------------------------------------------------------------------------------------------------- a tiny model


def test_mine_on_a_tiny_model_writes_triplets_the_trainer_reads(tmp_path, model_dir, pair_file, capsys):
    output = tmp_path / "triplets.tsv.gz"
    assert main(["mine", str(model_dir), "--input", str(pair_file), "--output", str(output), "--margin", "0.0",
                 "--include-anchors"]) == 0
    out = capsys.readouterr().out
    examples = read_examples(output)
    assert examples.columns == ["sent0", "sent1", "hard_neg"]
    positives = read_pairs_of(pair_file)
    assert 0 < len(examples.rows) <= 41
    assert f"Mined a hard negative for {len(examples.rows)} of 41 pairs; {41 - len(examples.rows)} skipped" in out
    for anchor, positive, negative in examples.rows:
        assert positive in positives[anchor]
        assert negative.strip() != anchor.strip() and negative not in positives[anchor]
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask  # an ordinary file, not a private 0600 one

    from simcse_hub import SimCSE

    model = SimCSE(model_dir)
    for anchor, positive, negative in examples.rows:
        assert model.similarity(anchor, negative) < model.similarity(anchor, positive) + 1e-5

    # JSON lines hold the same triplets; --overwrite replaces a file.
    jsonl = tmp_path / "triplets.jsonl"
    jsonl.write_text("old\n")
    assert main(["mine", str(model_dir), "--input", str(pair_file), "--output", str(jsonl), "--margin", "0.0",
                 "--include-anchors", "--overwrite"]) == 0
    assert [tuple(json.loads(line).values()) for line in jsonl.read_text().splitlines()] == examples.rows
    assert read_examples(jsonl).rows == examples.rows


# ---------------------------------------------------------------------------------------------------- bad input


def bad_input_cases(root: Path) -> list[tuple[list[str], str]]:
    return [
        (["--input", str(root / "one.tsv"), "--output", str(root / "out.tsv")], "mining needs exactly 2"),
        (["--input", str(root / "three.tsv"), "--output", str(root / "out.tsv")], "--columns ANCHOR,POSITIVE"),
        (["--input", str(root / "sentences.txt"), "--output", str(root / "out.tsv")], "holds single sentences"),
        (["--input", str(root / "missing.tsv"), "--output", str(root / "out.tsv")], "no such file"),
        (["--input", str(root / "pairs.tsv"), "--output", str(root / "exists.tsv")], "exists; pass --overwrite"),
        (["--input", str(root / "pairs.tsv"), "--output", str(root / "out.csv")], "expected a file name ending in"),
        (["--input", str(root / "pairs.tsv"), "--output", str(root / "no" / "out.tsv")], "does not exist"),
        (["--input", str(root / "pairs.tsv"), "--output", str(root / "out.tsv"), "--range-min", "5",
          "--range-max", "5"], "expected 0 <= range-min < range-max"),
        (["--input", str(root / "three.tsv"), "--output", str(root / "out.tsv"), "--columns", "a"],
         "expected 2 names"),
        (["--input", str(root / "tabs.jsonl"), "--output", str(root / "out.tsv")], "pair 1 holds a tab"),
    ]


def test_bad_input_ends_in_one_line_with_status_2(tmp_path, model_dir, capsys):
    (tmp_path / "one.tsv").write_text("text\na man plays\n")
    (tmp_path / "three.tsv").write_text("a\tb\tc\nx y\tx\tz\n")
    (tmp_path / "sentences.txt").write_text("a man plays\n")
    (tmp_path / "pairs.tsv").write_text("a\tb\na man plays\ta man is playing\n")
    (tmp_path / "tabs.jsonl").write_text(json.dumps({"a": "a\tman", "b": "a man"}) + "\n")
    (tmp_path / "exists.tsv").write_text("keep me\n")
    for argv, expected in bad_input_cases(tmp_path):
        assert main(["mine", str(model_dir), *argv]) == 2, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("simcse-hub")]
        assert len(lines) == 1 and lines[0].startswith("simcse-hub mine: error: "), err
        assert expected in lines[0] and "Traceback" not in err, (argv, lines[0])
    assert (tmp_path / "exists.tsv").read_text() == "keep me\n"
    assert not (tmp_path / "out.tsv").exists()
    assert main(["mine", str(tmp_path / "no-model"), "--input", str(tmp_path / "pairs.tsv"), "--output",
                 str(tmp_path / "out.tsv")]) == 2
    assert "no-model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- a real encoder


@pytest.mark.integration
def test_minilm_mines_what_sentence_transformers_mines_on_snli(minilm_path, shared_data, tmp_path):
    """On 300 SNLI (premise, entailment) pairs, all-MiniLM-L6-v2 loaded by SimCSE gives the triplets that
    sentence-transformers' own mine_hard_negatives gives with the SentenceTransformer (up to float near-ties)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

    from simcse_hub import SimCSE
    from simcse_hub.mine import read_pairs

    pairs = read_pairs(shared_data / "nli" / "snli_devtest_triplets.tsv.gz", ["sent0", "sent1"], 300)
    result = mine_hard_negatives(pairs, SimCSE(minilm_path, device="cpu"), tmp_path / "t.tsv", range_max=20,
                                 relative_margin=0.05)
    ours = read_examples(tmp_path / "t.tsv").rows
    distinct = list(dict.fromkeys(pairs))
    theirs = st_mine_hard_negatives(
        Dataset.from_dict({"sent0": [a for a, _ in distinct], "sent1": [p for _, p in distinct]}),
        SentenceTransformer(str(minilm_path), device="cpu"), range_max=20, absolute_margin=0.05, relative_margin=0.05,
        num_negatives=1, verbose=False)
    theirs = list(zip(theirs["sent0"], theirs["sent1"], theirs["negative"]))
    assert (result.pairs, result.mined, result.skipped) == (len(distinct), len(ours), len(distinct) - len(ours))
    assert len(ours) > 0.8 * len(distinct) and abs(len(ours) - len(theirs)) <= 3
    assert len(set(ours) & set(theirs)) >= 0.97 * len(theirs)
    assert 0 < result.mean_negative < result.mean_positive < 1
