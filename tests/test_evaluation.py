"""Tests of simcse_hub.evaluation and the whitening of simcse_hub.postprocess: the STS scores, the SentEval settings,
alignment and uniformity against values computed here by hand; file errors; missing tasks; whitening; the reports; the
CLI; and the real all-MiniLM-L6-v2 figures (integration)."""

from __future__ import annotations

import gzip
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model
from scipy.stats import ConstantInputWarning

from simcse_hub import evaluation
from simcse_hub.evaluation import (
    STSDataError,
    alignment,
    embed,
    evaluate_alignment_uniformity,
    evaluate_model,
    evaluate_sts,
    format_results_table,
    load_sts_task,
    plot_alignment_uniformity,
    read_sts_file,
    results_to_markdown,
    save_results,
    spearman,
    uniformity,
)
from simcse_hub.postprocess import WHITENING_FILE, Whitening, fit_whitening, read_corpus

# ---------------------------------------------------------------------------------------------------- helpers


def write_sts(path: Path, rows, header: str = "sentence1\tsentence2\tscore") -> Path:
    """Write an STS file (gzip'd when the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header] + [f"{a}\t{b}\t{s}" for a, b, s in rows]) + "\n"
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def average_ranks(values):
    """1-based ranks, ties sharing the mean of their positions (computed without scipy)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def hand_spearman(x, y):
    """Spearman x100 as the Pearson correlation of average ranks, in plain Python."""
    rx, ry = average_ranks(list(x)), average_ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return 100 * cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


class AngleEncoder:
    """Hand-made embeddings: each sentence is a 2-d vector of angle ``ANGLES[sentence]`` and length ``1 + index``
    (lengths differ so that normalisation matters); records every batch it is called with."""

    def __init__(self, angles: dict[str, float], as_torch: bool = False) -> None:
        self.angles, self.as_torch, self.batches = angles, as_torch, []

    def __call__(self, batch):
        self.batches.append(list(batch))
        rows = [[(1 + i % 3) * math.cos(self.angles[s]), (1 + i % 3) * math.sin(self.angles[s])]
                for i, s in enumerate(batch)]
        return torch.tensor(rows) if self.as_torch else np.asarray(rows)


def cosine_from_angles(a: float, b: float) -> float:
    return math.cos(a - b)


# Three sub-tasks of STS13 with known per-sub-task Spearman: FNWN perfectly ordered (100), headlines perfectly reversed
# (-100), OnWN ranks (1, 3, 2, 4) against (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15) = 0.8 (80).
# Sentence 2 of each pair sits at an angle from its anchor (angle 0), so the cosine is cos(angle).
STS13_PAIRS = {
    "FNWN": [(0.2, 4.0), (0.9, 2.0), (1.4, 0.5)],
    "headlines": [(0.1, 0.0), (0.5, 1.0), (0.8, 2.0), (1.1, 3.5), (1.5, 4.5)],
    "OnWN": [(1.3, 1.0), (0.7, 2.0), (1.0, 3.0), (0.3, 5.0)],
}


@pytest.fixture
def sts_dir(tmp_path) -> tuple[Path, dict[str, float], dict]:
    """A data folder with sts13/ (three sub-tasks), stsb/{dev,test} and sickr/{trial,test}, and the angles of every
    sentence; returns (folder, angles, {file key: (cosines, gold)})."""
    angles: dict[str, float] = {"anchor": 0.0}
    expected: dict[str, tuple[list[float], list[float]]] = {}
    for name, pairs in STS13_PAIRS.items():
        rows = []
        for i, (angle, gold) in enumerate(pairs):
            sentence = f"{name} sentence {i}"
            angles[sentence] = angle
            rows.append(("anchor", sentence, gold))
        write_sts(tmp_path / "sts13" / f"{name}.tsv.gz", rows)
        expected[name] = ([math.cos(a) for a, _ in pairs], [g for _, g in pairs])
    rng = np.random.default_rng(0)
    for folder, split, n in (("stsb", "dev", 9), ("stsb", "test", 7), ("sickr", "trial", 6), ("sickr", "test", 8)):
        rows = []
        for i in range(n):
            a, b = f"{folder} {split} left {i}", f"{folder} {split} right {i}"
            angles[a], angles[b] = float(rng.uniform(0, 3)), float(rng.uniform(0, 3))
            rows.append((a, b, f"{rng.uniform(0, 5):.2f}"))
        write_sts(tmp_path / folder / f"{split}.tsv.gz", rows)
        expected[f"{folder}/{split}"] = (
            [cosine_from_angles(angles[a], angles[b]) for a, b, _ in rows], [float(s) for _, _, s in rows])
    return tmp_path, angles, expected


# ---------------------------------------------------------------------------------------------------- spearman


def test_spearman_matches_hand_computed_values():
    # d = (0, 1, 1, 0): 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(80.0)
    # ties in x: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(100 * 4.5 / math.sqrt(22.5))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-100.0)
    x, y = np.random.default_rng(1).normal(size=(2, 30))
    assert spearman(x, y) == pytest.approx(hand_spearman(x, y))


# ---------------------------------------------------------------------------------------------------- settings


def test_all_mean_wmean_equal_hand_computed_values(sts_dir):
    folder, angles, expected = sts_dir
    per = {name: hand_spearman(*expected[name]) for name in STS13_PAIRS}
    assert per == pytest.approx({"FNWN": 100.0, "headlines": -100.0, "OnWN": 80.0})
    sizes = {name: len(pairs) for name, pairs in STS13_PAIRS.items()}
    concatenated = [[value for name in STS13_PAIRS for value in expected[name][k]] for k in (0, 1)]
    want = {
        "all": hand_spearman(*concatenated),
        "mean": (100 - 100 + 80) / 3,
        "wmean": (3 * 100 - 5 * 100 + 4 * 80) / 12,
    }
    assert len({round(v, 6) for v in want.values()}) == 3  # the fixture tells the three settings apart
    for setting, value in want.items():
        results = evaluate_sts(AngleEncoder(angles), tasks=["STS13"], data_dir=folder, setting=setting)
        task = results["tasks"]["STS13"]
        assert task["spearman"] == pytest.approx(value, abs=1e-9)
        assert task["n_pairs"] == 12
        assert {name: entry["spearman"] for name, entry in task["subtasks"].items()} == pytest.approx(per)
        assert {name: entry["n_pairs"] for name, entry in task["subtasks"].items()} == sizes
        assert results["setting"] == setting and results["average"] == pytest.approx(value)


@pytest.mark.parametrize("as_torch", [False, True])
def test_single_file_tasks_settings_coincide_and_splits(sts_dir, as_torch):
    folder, angles, expected = sts_dir
    for split, files in (("test", ("stsb/test", "sickr/test")), ("dev", ("stsb/dev", "sickr/trial"))):
        scores = set()
        for setting in ("all", "mean", "wmean"):
            results = evaluate_sts(AngleEncoder(angles, as_torch), tasks=["STSBenchmark", "SICKRelatedness"],
                                   data_dir=folder, setting=setting, split=split)
            stsb, sickr = results["tasks"]["STSBenchmark"], results["tasks"]["SICKRelatedness"]
            assert stsb["spearman"] == pytest.approx(hand_spearman(*expected[files[0]]), abs=1e-6)
            assert sickr["spearman"] == pytest.approx(hand_spearman(*expected[files[1]]), abs=1e-6)
            assert stsb["n_pairs"] == len(expected[files[0]][1]) and "subtasks" not in stsb
            assert results["average"] == pytest.approx((stsb["spearman"] + sickr["spearman"]) / 2)
            assert results["split"] == split and results["missing"] == {}
            scores.add((round(stsb["spearman"], 9), round(sickr["spearman"], 9)))
        assert len(scores) == 1


def test_results_keys_and_json_round_trip(sts_dir, tmp_path):
    folder, angles, _ = sts_dir
    results = evaluate_sts(AngleEncoder(angles), tasks=["STS13", "STSBenchmark"], data_dir=folder,
                           model_name="hand-made")
    assert set(results) == {"model", "setting", "split", "tasks", "average", "missing", "alignment", "uniformity",
                            "mean_cosine", "whitening", "flow"}
    assert results["model"] == "hand-made" and results["alignment"] is None and results["whitening"] is None
    path = save_results(results, tmp_path / "out" / "results.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))


def test_each_distinct_sentence_encoded_once(sts_dir):
    folder, angles, _ = sts_dir
    encoder = AngleEncoder(angles)
    evaluate_sts(encoder, tasks=["STS13", "STSBenchmark"], data_dir=folder)
    seen = [s for batch in encoder.batches for s in batch]
    assert len(seen) == len(set(seen)) == 1 + 12 + 14  # anchor, the STS13 sentences, STS-B test's 7 pairs
    # With alignment and uniformity on STS-B dev, the dev sentences are encoded once for both measures.
    encoder = AngleEncoder(angles)
    evaluate_model(encoder, "m", tasks=["STSBenchmark"], data_dir=folder, split="dev")
    seen = [s for batch in encoder.batches for s in batch]
    assert len(seen) == len(set(seen))


def test_encode_fn_with_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"encode_fn returned shape \(1, 3\) for 2 sentences"):
        embed(lambda batch: np.ones((1, 3)), ["a", "b"])


# ---------------------------------------------------------------------------------------------------- alignment


def test_alignment_uniformity_equal_hand_computed_values(tmp_path):
    # unit vectors by angle; lengths vary so the function must normalise
    vectors = {"a": (2.0, 0.0), "b": (0.0, 3.0), "c": (-1.0, 0.0), "d": (1.0, 1.0), "e": (0.5, -0.5)}
    rows = [("a", "d", "4.5"), ("b", "c", "4.0"), ("a", "b", "5.0"), ("c", "e", "1.0"), ("d", "a", "4.01")]
    write_sts(tmp_path / "stsb" / "dev.tsv.gz", rows)

    def unit(v):
        n = math.hypot(*v)
        return (v[0] / n, v[1] / n)

    def sq(u, v):
        return (unit(u)[0] - unit(v)[0]) ** 2 + (unit(u)[1] - unit(v)[1]) ** 2

    positive = [(a, b) for a, b, s in rows if float(s) > 4]  # 4.0 itself is not above 4
    want_alignment = sum(sq(vectors[a], vectors[b]) for a, b in positive) / len(positive)
    distinct = ["a", "d", "b", "c", "e"]
    pair_terms = [math.exp(-2 * sq(vectors[u], vectors[v])) for i, u in enumerate(distinct) for v in distinct[i + 1:]]
    want_uniformity = math.log(sum(pair_terms) / len(pair_terms))

    def encode(batch):
        return np.asarray([vectors[s] for s in batch])

    got = evaluate_alignment_uniformity(encode, tmp_path, split="dev")
    assert got["alignment"] == pytest.approx(want_alignment, abs=1e-6)
    assert got["uniformity"] == pytest.approx(want_uniformity, abs=1e-6)
    # the functions themselves, chunked or not
    x = np.random.default_rng(2).normal(size=(9, 4))
    direct = math.log(np.mean([math.exp(-2 * np.sum((x[i] / np.linalg.norm(x[i]) - x[j] / np.linalg.norm(x[j])) ** 2))
                               for i in range(9) for j in range(i + 1, 9)]))
    assert uniformity(x, chunk_size=4) == pytest.approx(direct) and uniformity(x) == pytest.approx(direct)
    assert alignment(x[:4], x[4:8]) == pytest.approx(
        np.mean([np.sum((x[i] / np.linalg.norm(x[i]) - x[i + 4] / np.linalg.norm(x[i + 4])) ** 2) for i in range(4)]))


# ---------------------------------------------------------------------------------------------------- data errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"the file is empty"),
        (b"sentence1\tsentence2\tscore\n", r"no sentence pairs after the header"),
        (b"a\tb\t1.0\n", r"line 1: expected the header"),
        (b"sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\n", r"line 3: expected 3 tab-separated fields .* found 2"),
        (b"sentence1\tsentence2\tscore\na\tb\thigh\n", r"line 2: the score 'high' is not a finite number"),
        (b"sentence1\tsentence2\tscore\na\tb\t1\nc\xff\td\t2\n",
         r"line 3: byte b'\\xff' at column 2 is not valid UTF-8"),
        (b"sentence1\tsentence2\tscore\na\t\t1\n", r"line 2: empty sentence"),
    ],
)
@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_malformed_file_gives_error_naming_file_and_line(tmp_path, content, message, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(content) if suffix.endswith(".gz") else content)
    with pytest.raises(STSDataError, match=message) as info:
        read_sts_file(path)
    assert str(path) in str(info.value)


def test_missing_file_and_bad_gzip_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tsv\.gz: no such STS data file"):
        read_sts_file(tmp_path / "nowhere.tsv.gz")
    (tmp_path / "plain.tsv.gz").write_bytes(b"sentence1\tsentence2\tscore\n")
    with pytest.raises(STSDataError, match=r"plain\.tsv\.gz: not a valid gzip file"):
        read_sts_file(tmp_path / "plain.tsv.gz")


def test_files_are_parsed_once_and_reread_when_changed(tmp_path, monkeypatch):
    path = write_sts(tmp_path / "stsb" / "dev.tsv.gz", [("a b", "c d", "1.5"), ("e", "f", "4.25")])
    calls = []
    parse = evaluation._parse_sts_file
    monkeypatch.setattr(evaluation, "_parse_sts_file", lambda p, *rest: calls.append(p) or parse(p, *rest))
    s1, s2, scores = read_sts_file(path)
    assert (s1, s2, scores.tolist()) == (["a b", "e"], ["c d", "f"], [1.5, 4.25])
    s1.append("mutating the copy does not touch the cache")
    for _ in range(3):
        evaluate_sts(lambda batch: np.arange(4 * len(batch)).reshape(-1, 4) % 3, tasks=["STSBenchmark"],
                     data_dir=tmp_path, split="dev")
    assert len(calls) == 1 and read_sts_file(path)[0] == ["a b", "e"]
    write_sts(path, [("a b", "c d", "1.5"), ("e", "f", "4.25"), ("g", "h", "0")])
    os.utime(path, ns=(1, 1))  # a different modification time even on coarse clocks
    assert len(read_sts_file(path)[0]) == 3 and len(calls) == 2



def test_constant_gold_scores_are_warned_once_naming_the_file(tmp_path, caplog):
    """All gold scores equal: Spearman is undefined; one warning names the file (not scipy's, pointing at our code)."""
    path = write_sts(tmp_path / "stsb" / "test.tsv", [("a b", "c d", "3"), ("e f", "g h", "3"), ("i j", "k l", "3")])
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="simcse_hub.evaluation"):
        warnings.simplefilter("error", ConstantInputWarning)
        for _ in range(2):  # the parsed file is cached: one warning
            results = evaluate_sts(lambda batch: np.random.default_rng(0).normal(size=(len(batch), 4)),
                                   tasks=["STSBenchmark"], data_dir=tmp_path)
    assert math.isnan(results["tasks"]["STSBenchmark"]["spearman"])
    assert [record.getMessage() for record in caplog.records] == [
        f"{path}: every gold score is 3; Spearman is undefined (NaN) for this task."]
    assert "| STS-B | – | 3 |" in format_results_table(results)

# ---------------------------------------------------------------------------------------------------- missing tasks


def test_missing_tasks_are_reported_with_reason(sts_dir):
    folder, angles, _ = sts_dir
    results = evaluate_sts(AngleEncoder(angles), tasks=["STS12", "STS13", "STSBenchmark"], data_dir=folder)
    assert set(results["tasks"]) == {"STS13", "STSBenchmark"}
    assert set(results["missing"]) == {"STS12"}
    assert "sts12/<sub-task>.tsv.gz not found" in results["missing"]["STS12"]
    assert "offline" in results["missing"]["STS12"] and "mteb/sts12-sts" in results["missing"]["STS12"]
    scored = [results["tasks"][t]["spearman"] for t in ("STS13", "STSBenchmark")]
    assert results["average"] == pytest.approx(sum(scored) / 2)
    assert "STS12 not evaluated" in results_to_markdown(results)
    # STS12-16 have no dev split: reported, not dropped
    dev = evaluate_sts(AngleEncoder(angles), tasks=["STS13", "STS-B"], data_dir=folder, split="dev")
    assert "no dev split" in dev["missing"]["STS13"] and set(dev["tasks"]) == {"STSBenchmark"}


def test_incomplete_year_folder_and_bad_arguments_are_errors(sts_dir):
    folder, angles, _ = sts_dir
    (folder / "sts13" / "OnWN.tsv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"sts13/OnWN\.tsv\.gz: missing sub-task file of STS13"):
        evaluate_sts(AngleEncoder(angles), tasks=["STS13"], data_dir=folder)
    with pytest.raises(ValueError, match=r"unknown STS task 'STS17'"):
        evaluate_sts(AngleEncoder(angles), tasks=["STS17"], data_dir=folder)
    with pytest.raises(ValueError, match=r"setting must be one of"):
        evaluate_sts(AngleEncoder(angles), data_dir=folder, setting="median")
    with pytest.raises(FileNotFoundError, match=r"data_dir .*nope.* is not a directory"):
        evaluate_sts(AngleEncoder(angles), data_dir=folder / "nope")


def test_hub_copy_is_used_when_online_and_unreachable_hub_is_reported(sts_dir, monkeypatch):
    """The Hub code path on an in-memory dataset of the MTEB copies' columns (no network here)."""
    import datasets

    folder, angles, _ = sts_dir
    calls = []
    rows = {"sentence1": [], "sentence2": [], "score": [], "dataset": []}
    for name, pairs in STS13_PAIRS.items():
        for i, (_, gold) in enumerate(pairs):
            rows["sentence1"].append("anchor")
            rows["sentence2"].append(f"{name} sentence {i}")
            rows["score"].append(gold)
            rows["dataset"].append(name)

    def fake_load_dataset(repo, split):
        calls.append((repo, split))
        if repo == "mteb/sts13-sts":
            return datasets.Dataset.from_dict(rows)
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub")

    monkeypatch.setattr(evaluation, "_hub_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    evaluation._HUB_CACHE.clear()
    (folder / "sts13").rename(folder / "elsewhere")
    results = evaluate_sts(AngleEncoder(angles), tasks=["STS13", "STS12", "STS14"], data_dir=folder,
                           setting="wmean")
    evaluation._HUB_CACHE.clear()
    assert results["tasks"]["STS13"]["spearman"] == pytest.approx((3 * 100 - 5 * 100 + 4 * 80) / 12, abs=1e-9)
    assert results["tasks"]["STS13"]["source"] == "hf://datasets/mteb/sts13-sts"
    assert "could not fetch mteb/sts12-sts" in results["missing"]["STS12"]
    assert "the Hub was unreachable" in results["missing"]["STS14"]
    assert calls == [("mteb/sts13-sts", "test"), ("mteb/sts12-sts", "test")]  # no second wait for STS14


def test_load_sts_task_offline_without_data_dir_reports_reason():
    with pytest.raises(evaluation.TaskUnavailableError, match=r"no local data directory.*offline"):
        load_sts_task("SICK-R", None, split="test")


# ---------------------------------------------------------------------------------------------------- whitening


def correlated_embeddings(n: int = 400, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim) * 5


def test_whitening_gives_identity_covariance_on_its_corpus():
    x = correlated_embeddings()
    assert not np.allclose(np.cov(x, rowvar=False), np.eye(16), atol=0.1)
    whitening = Whitening().fit(x)
    y = whitening.transform(x)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(16), atol=1e-9)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-9)
    reduced = Whitening().fit(torch.tensor(x, dtype=torch.float64), k=5)
    y5 = reduced.transform(x)
    assert y5.shape == (400, 5)
    np.testing.assert_allclose(np.cov(y5, rowvar=False), np.eye(5), atol=1e-9)
    # the first k columns are the directions of largest variance of the corpus
    eigenvalues = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]
    np.testing.assert_allclose(np.var(x @ reduced.W * np.sqrt(eigenvalues[:5]), axis=0, ddof=1), eigenvalues[:5],
                               rtol=1e-9)
    # tensors in, tensors out (same device and dtype)
    as_tensor = reduced.transform(torch.tensor(x, dtype=torch.float32))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), y5, atol=1e-3)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 16\]"):
        Whitening().fit(x, k=17)


def test_whitening_warns_of_a_singular_covariance_only_where_it_harms_and_says_what_was_measured(caplog):
    """all-MiniLM-L6-v2's [CLS] vector has 3 constant dimensions of 384 (measured on 5,000 STS-B train sentences:
    rank 381): those directions stay near 0 on other sentences, so 5,000 sentences get no warning; 300 sentences of
    dimension 384 leave 85 directions unspanned, which would amplify noise: a warning with the rank and the count."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(384, 384))

    def sentences(n):
        x = rng.normal(size=(n, 384)) @ mix
        x[:, [127, 223, 319]] = 0.25  # constant dimensions
        return x

    with caplog.at_level("INFO", logger="simcse_hub.postprocess"):
        whitening = Whitening().fit(sentences(5000))
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    assert "5000 embeddings of size 384: the covariance has rank 381 (condition number" in caplog.text
    assert np.abs(whitening.transform(sentences(200))[:, -3:]).max() < 1e-3  # the 3 unspanned directions
    caplog.clear()
    with caplog.at_level("WARNING", logger="simcse_hub.postprocess"):
        Whitening().fit(sentences(300))
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "300 embeddings of size 384: the covariance has rank 299 (condition number" in warning
    assert "85 directions have no variance on the corpus; they amplify noise" in warning and "k <= 299" in warning
    caplog.clear()
    with caplog.at_level("INFO", logger="simcse_hub.postprocess"):
        Whitening().fit(rng.normal(size=(1000, 384)) @ mix)  # full rank: nothing said about it
    assert "rank" not in caplog.text

def test_whitening_save_load_round_trip(tmp_path):
    from safetensors import safe_open

    x = correlated_embeddings(dim=12)
    whitening = Whitening().fit(x, k=7, corpus="wiki.txt")
    path = whitening.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [WHITENING_FILE] and path.name == WHITENING_FILE
    with safe_open(str(path), framework="np") as handle:
        assert sorted(handle.keys()) == ["W", "mean"]
        assert handle.get_tensor("mean").shape == (1, 12) and handle.get_tensor("W").shape == (12, 7)
    loaded = Whitening.load(tmp_path / "model")
    assert (loaded.dim, loaded.k, loaded.corpus) == (12, 7, "wiki.txt")
    np.testing.assert_allclose(loaded.transform(x), whitening.transform(x), rtol=1e-5, atol=1e-5)
    assert Whitening.load(tmp_path) is None  # no whitening file: None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / WHITENING_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"broken/whitening\.safetensors: not a readable safetensors file"):
        Whitening.load(tmp_path / "broken")


def test_fit_whitening_from_encode_fn_and_corpus_files(tmp_path, sts_dir):
    folder = sts_dir[0]
    text = tmp_path / "corpus.txt.gz"
    text.write_bytes(gzip.compress(b"one\n\ntwo\none\nthree\n"))
    assert read_corpus(text) == ["one", "two", "three"]
    assert read_corpus(folder / "stsb" / "test.tsv.gz", max_sentences=4) == [
        "stsb test left 0", "stsb test right 0", "stsb test left 1", "stsb test right 1"]
    with pytest.raises(FileNotFoundError, match=r"absent\.txt: no such corpus file"):
        read_corpus(tmp_path / "absent.txt")
    vectors = {s: np.random.default_rng(len(s) + i).normal(size=3) for i, s in enumerate(read_corpus(
        folder / "sickr" / "test.tsv.gz"))}
    whitening = fit_whitening(lambda batch: np.stack([vectors[s] for s in batch]), list(vectors), k=2)
    y = whitening.transform(np.stack(list(vectors.values())))
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(2), atol=1e-9)


# ---------------------------------------------------------------------------------------------------- reporting


def test_markdown_console_table_and_plot(sts_dir, tmp_path):
    folder, angles, _ = sts_dir
    results = evaluate_sts(AngleEncoder(angles), tasks=["STS12", "STS13", "STSBenchmark", "SICKRelatedness"],
                           data_dir=folder, model_name="hand-made")
    results.update(alignment=0.25, uniformity=-2.5, whitening={"corpus": "wiki.txt", "k": 64})
    markdown = results_to_markdown(results)
    header, _, row = markdown.splitlines()[:3]
    assert header == "| Model | STS12 | STS13 | STS-B | SICK-R | Avg. |"
    assert row == "| hand-made | – | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(
        results["tasks"]["STS13"]["spearman"], results["tasks"]["STSBenchmark"]["spearman"],
        results["tasks"]["SICKRelatedness"]["spearman"], results["average"])
    assert "alignment 0.2500, uniformity -2.5000" in markdown and "`wiki.txt` (k=64)" in markdown
    table = format_results_table(results)
    assert "  headlines" in table and f"{results['tasks']['STS13']['subtasks']['headlines']['spearman']:.2f}" in table
    assert "STS12 not evaluated:" in table and "| Average (3 of 4 tasks) |" in table
    assert "alignment 0.2500, uniformity -2.5000" in table and "`wiki.txt` (k=64)" in table
    out = plot_alignment_uniformity(
        [{"label": "step 0", "alignment": 0.4, "uniformity": -1.2}, {"label": "step 250", "alignment": 0.25,
                                                                      "uniformity": -2.5}], tmp_path / "au.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"points\[0\] must have"):
        plot_alignment_uniformity([{"label": "x", "alignment": 0.1}], tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------------- tiny models


def model_encode_fn(model, tokenizer):
    """One sentence per forward pass, so an embedding does not depend on the batch it came in (no padding)."""
    model.eval()

    @torch.inference_mode()
    def encode(batch):
        features = [tokenizer([sentence], return_tensors="pt") for sentence in batch]  # (1, seq_len) each
        return torch.cat([model(**f).pooler_output for f in features])  # (batch, hidden)

    return encode


@pytest.mark.parametrize("pooler_type", ["cls_before_pooler", "avg_first_last"])
def test_tiny_model_encode_fn_scores_equal_direct_computation(tmp_path, tokenizer, sentences, pooler_type):
    folder = tmp_path
    rows = [(sentences[i], sentences[j], f"{(i * 7 + j * 3) % 11 / 2:.1f}") for i in range(8) for j in range(i + 1, 8)]
    write_sts(folder / "stsb" / "test.tsv.gz", rows)
    encode = model_encode_fn(make_model("bert", pooler_type=pooler_type), tokenizer)
    results = evaluate_sts(encode, tasks=["STSBenchmark"], data_dir=folder)
    s1, s2, gold = read_sts_file(folder / "stsb" / "test.tsv.gz")
    a, b = encode(s1).double().numpy(), encode(s2).double().numpy()  # (n, hidden) each
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.max() - cosines.min() > 1e-6  # far above float64 noise: the ranks are well defined
    assert results["tasks"]["STSBenchmark"]["spearman"] == pytest.approx(hand_spearman(cosines, gold), abs=1e-4)


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_evaluate_writes_results_whitening_and_plot(sts_dir, tmp_path, tokenizer, capsys):
    from simcse_hub.cli import main
    from simcse_hub.inference import SimCSE
    from simcse_hub.train import save_model

    folder, _, _ = sts_dir
    checkpoints = []
    for seed in (0, 1):
        checkpoints.append(save_model(make_model("bert", seed=seed, pooler_type="avg"), tmp_path / f"step-{seed}",
                                      tokenizer))
    corpus = folder / "sickr" / "test.tsv.gz"
    out, png = tmp_path / "results.json", tmp_path / "au.png"
    code = main(["evaluate", *map(str, checkpoints), "--tasks", "STSBenchmark,SICK-R", "STS12", "--data-dir",
                 str(folder), "--whiten", str(corpus), "--whiten-k", "8", "--save-whitening", "--batch-size", "4",
                 "--device", "cpu", "--out", str(out), "--plot", str(png)])
    assert code == 0
    written = json.loads(out.read_text())
    assert [r["model"] for r in written] == [str(c) for c in checkpoints]
    first = written[0]
    assert set(first["tasks"]) == {"STSBenchmark", "SICKRelatedness"} and "offline" in first["missing"]["STS12"]
    assert first["whitening"] == {"corpus": "test.tsv.gz", "k": 8}
    assert isinstance(first["alignment"], float) and isinstance(first["uniformity"], float)
    assert png.read_bytes()[:4] == b"\x89PNG"
    # saved inside the model (every loader applies it), no file beside it: the library call gives the CLI's figures
    assert not (checkpoints[0] / WHITENING_FILE).exists()
    assert json.loads((checkpoints[0] / "config.json").read_text())["whitening_dim"] == 8
    model = SimCSE(str(checkpoints[0]), device="cpu")
    assert model.whitening is None and model.model.whitening is not None and model.embedding_dim == 8
    direct = evaluate_sts(lambda b: model.encode(b, normalize_to_unit=False, return_numpy=True),
                          tasks=["STSBenchmark", "SICKRelatedness"], data_dir=folder)
    for task in ("STSBenchmark", "SICKRelatedness"):
        assert first["tasks"][task]["spearman"] == pytest.approx(direct["tasks"][task]["spearman"], abs=1e-3)
    au = evaluate_alignment_uniformity(lambda b: model.encode(b, normalize_to_unit=False), folder)
    assert first["alignment"] == pytest.approx(au["alignment"], abs=1e-4)
    printed = capsys.readouterr().out
    assert "STS-B" in printed and "| Model | STS12 | STS-B | SICK-R | Avg. |" in printed
    assert printed.count("STS12 not evaluated") == 1  # two models, one reason: said once
    # whitening again fits on the raw embeddings, not on the whitened ones, and replaces the first
    card = json.loads((checkpoints[0] / "simcse_card.json").read_text())
    assert card["whitening"] == {"corpus": "test.tsv.gz", "k": 8} and len(card["evaluations"]) == 1
    assert main(["evaluate", str(checkpoints[0]), "--tasks", "STSBenchmark", "--data-dir", str(folder), "--whiten",
                 str(corpus), "--whiten-k", "4", "--save-whitening", "--device", "cpu"]) == 0
    raw = SimCSE(save_model(make_model("bert", seed=0, pooler_type="avg"), tmp_path / "raw", tokenizer), device="cpu")
    refit = fit_whitening(lambda b: raw.encode(b, normalize_to_unit=False), read_corpus(corpus), k=4)
    again = SimCSE(str(checkpoints[0]), device="cpu")
    sentences = ["A man is playing a guitar.", "A cat eats food."]
    np.testing.assert_allclose(again.encode(sentences, normalize_to_unit=False),
                               refit.transform(raw.encode(sentences, normalize_to_unit=False)), atol=1e-4)
    assert json.loads((checkpoints[0] / "simcse_card.json").read_text())["whitening"]["k"] == 4
    capsys.readouterr()
    # user errors: exit status 2 and a message naming the problem
    assert main(["evaluate", str(checkpoints[0]), "--data-dir", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
    assert main(["evaluate", str(checkpoints[0]), "--tasks", "STS99"]) == 2
    assert "unknown STS task 'STS99'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- integration


@pytest.mark.integration
def test_all_minilm_l6_v2_scores_through_both_loaders(minilm_path, shared_data, tmp_path):
    """all-MiniLM-L6-v2 (mean pooling): STS-B test 82.03 and SICK-R test 77.15, through sentence-transformers and
    through a SimCSE folder made from the same encoder."""
    from transformers import AutoTokenizer

    from simcse_hub import SimCSEModel
    from simcse_hub.inference import SimCSE
    from simcse_hub.train import save_model

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder = save_model(SimCSEModel.from_encoder(minilm_path, pooler_type="avg"), tmp_path / "minilm-simcse",
                        AutoTokenizer.from_pretrained(minilm_path))
    for model in (SimCSE(str(minilm_path), device="cpu"), SimCSE(str(folder), device="cpu")):
        results = evaluate_sts(lambda b, m=model: m.encode(b, batch_size=128, normalize_to_unit=False,
                                                          return_numpy=True),
                               tasks=["STSBenchmark", "SICKRelatedness"], data_dir=shared_data)
        assert results["tasks"]["STSBenchmark"]["spearman"] == pytest.approx(82.03, abs=0.05), model
        assert results["tasks"]["SICKRelatedness"]["spearman"] == pytest.approx(77.15, abs=0.05), model
        assert results["tasks"]["STSBenchmark"]["n_pairs"] == 1379
        assert results["tasks"]["SICKRelatedness"]["n_pairs"] == 4927


def test_cli_evaluate_keeps_results_in_the_card_of_a_model_folder(sts_dir, tmp_path, tokenizer):
    """The results of a SimCSE folder go into its simcse_card.json and README.md; a dev check never replaces the
    test results the card shows."""
    import yaml

    from simcse_hub.cli import main
    from simcse_hub.train import save_model

    folder, _, _ = sts_dir
    model_dir = save_model(make_model("bert", pooler_type="avg"), tmp_path / "model", tokenizer)
    common = ["--data-dir", str(folder), "--device", "cpu", "--batch-size", "4"]
    assert main(["evaluate", str(model_dir), "--tasks", "STSBenchmark", "SICKRelatedness", *common]) == 0
    card = json.loads((model_dir / "simcse_card.json").read_text())
    (test,) = card["evaluations"]
    assert test["split"] == "test" and set(test["tasks"]) == {"STSBenchmark", "SICKRelatedness"}
    readme = (model_dir / "README.md").read_text()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert {r["dataset"]["split"] for r in metadata["model-index"][0]["results"]} == {"test"}

    assert main(["evaluate", str(model_dir), "--tasks", "STSBenchmark", "--split", "dev", *common]) == 0
    card = json.loads((model_dir / "simcse_card.json").read_text())
    assert [r["split"] for r in card["evaluations"]] == ["test", "dev"] and card["evaluations"][0] == test
    readme = (model_dir / "README.md").read_text()
    assert yaml.safe_load(readme.split("---")[1]) == metadata  # the card still shows the test results
    assert "* Split: test" in readme and "Also evaluated" in readme and "dev split (STS-B)" in readme
    assert not (model_dir / "eval_results.json").exists()

    # Results of another model than the folder holds (another pooler) are not recorded.
    assert main(["evaluate", str(model_dir), "--tasks", "STSBenchmark", "--pooler", "cls_before_pooler",
                 *common]) == 0
    assert json.loads((model_dir / "simcse_card.json").read_text()) == card


def test_gold_scores_outside_the_task_range_are_warned_with_file_and_line(tmp_path, caplog):
    path = tmp_path / "stsb" / "test.tsv"
    path.parent.mkdir()
    path.write_text("sentence1\tsentence2\tscore\na b\tc d\t4.5\ne f\tg h\t99\ni j\tk l\t-3\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        pairs = load_sts_task("STSBenchmark", tmp_path)["STSBenchmark"]
    assert len(pairs) == 3  # still scored: a warning, not a refusal
    assert f"{path}, line 3: the gold score 99 is outside the task's range 0-5 (and 1 more line)" in caplog.text
