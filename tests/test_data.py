"""Readers, tokenization and batching of training data (simcse_hub.data): every format, and a clear error for each
kind of bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from simcse_hub.data import DataError, SimCSECollator, load_hub_examples, read_examples, resolve_train_file

NLI_HEADER = "sent0,sent1,hard_neg"


def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if gz:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("gz", [False, True])
def test_text_file_one_sentence_per_line(tmp_path, gz):
    path = write(tmp_path / ("s.txt.gz" if gz else "s.txt"), "A man plays a guitar.\r\n  The dog runs.  \n", gz)
    examples = read_examples(path)
    assert examples.rows == [("A man plays a guitar.",), ("The dog runs.",)]
    assert examples.columns == ["text"] and not examples.supervised


def test_csv_with_the_header_of_nli_for_simcse(tmp_path):
    # Standard CSV quoting, as in the original nli_for_simcse.csv: a quoted field may hold commas, quotes, newlines.
    text = f'{NLI_HEADER}\n"A man, in a hat, plays.",A man plays.,"Nobody ""plays""."\nTwo dogs run.,Dogs run.,"Cats\nsleep."\n'
    examples = read_examples(write(tmp_path / "nli.csv", text))
    assert examples.columns == ["sent0", "sent1", "hard_neg"] and examples.supervised
    assert examples.rows == [
        ("A man, in a hat, plays.", "A man plays.", 'Nobody "plays".'),
        ("Two dogs run.", "Dogs run.", "Cats\nsleep."),
    ]


def test_tsv_splits_on_tabs_only_and_keeps_quotes_literal(tmp_path):
    # ../shared/data has no CSV quoting: a sentence may start with a quote that never closes.
    text = 'sent0\tsent1\thard_neg\n"Stop," he said.\tHe spoke.\t"Nobody said anything\nA b.\t"c"\td, e.\n'
    examples = read_examples(write(tmp_path / "t.tsv.gz", text, gz=True))
    assert examples.rows == [('"Stop," he said.', "He spoke.", '"Nobody said anything'), ("A b.", '"c"', "d, e.")]


def test_jsonl_and_column_selection(tmp_path):
    lines = [{"premise": "A man sleeps.", "id": 1, "hypothesis": "A person rests."},
             {"premise": "A cat eats.", "id": 2, "hypothesis": "An animal eats."}]
    path = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    examples = read_examples(path, columns=["premise", "hypothesis"])
    assert examples.columns == ["premise", "hypothesis"]
    assert examples.rows == [("A man sleeps.", "A person rests."), ("A cat eats.", "An animal eats.")]


def test_csv_column_selection_and_max_examples(tmp_path):
    path = write(tmp_path / "pairs.csv", "label,anchor,positive\n1,a b,c d\n0,e f,g h\n1,i j,k l\n")
    examples = read_examples(path, columns=["anchor", "positive"], max_examples=2)
    assert examples.rows == [("a b", "c d"), ("e f", "g h")]


def test_shared_nli_triplets(shared_data):
    examples = read_examples(shared_data / "nli" / "snli_devtest_triplets.tsv.gz")
    assert examples.columns == ["sent0", "sent1", "hard_neg"]
    assert len(examples.rows) == 6339 and examples.skipped == 0


def test_packaged_quickstart_corpus_is_large_varied_and_clean():
    path = resolve_train_file("package:data/quickstart_sentences.txt")
    examples = read_examples(path)
    sentences = [row[0] for row in examples.rows]
    assert len(sentences) >= 1000 and examples.skipped == 0
    assert len(set(sentences)) == len(sentences), "duplicate sentences in the quickstart corpus"
    openings = {" ".join(sentence.split()[:2]) for sentence in sentences}
    assert len(openings) > 0.6 * len(sentences), "too many sentences start alike (templated)"
    assert all((sentence[0].isupper() or sentence[0].isdigit()) and sentence[-1] in ".!?" for sentence in sentences)


# ---------------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        read_examples(tmp_path / "nope.txt")


@pytest.mark.parametrize("name", ["empty.txt", "empty.csv", "empty.tsv.gz", "empty.jsonl"])
def test_empty_file(tmp_path, name):
    path = write(tmp_path / name, "", gz=name.endswith(".gz"))
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: the file is empty"):
        read_examples(path)


def test_header_only_csv_has_no_examples(tmp_path):
    with pytest.raises(DataError, match=r"h\.csv: the file is empty"):
        read_examples(write(tmp_path / "h.csv", NLI_HEADER + "\n"))


def test_wrong_number_of_columns_names_the_line(tmp_path):
    path = write(tmp_path / "t.tsv", "sent0\tsent1\thard_neg\na\tb\tc\nd\te\n")
    with pytest.raises(DataError, match=r"t\.tsv, line 3: 2 field\(s\) separated by tabs, but the header \(line 1\) has 3"):
        read_examples(path)


def test_wrong_number_of_columns_in_csv_counts_quoted_newlines(tmp_path):
    path = write(tmp_path / "n.csv", f'{NLI_HEADER}\n"a\nb",c,d\ne,f\n')
    with pytest.raises(DataError, match=r"n\.csv, line 4: 2 field\(s\) separated by commas"):
        read_examples(path)


@pytest.mark.parametrize("gz", [False, True])
def test_undecodable_bytes_name_the_line(tmp_path, gz):
    path = write(tmp_path / ("latin.txt.gz" if gz else "latin.txt"), "Fine line.\nCaf\xe9 au lait.\n".encode("latin-1"), gz)
    with pytest.raises(DataError, match=r"latin\.txt(\.gz)?, line 2: invalid UTF-8 \(byte 0xe9 at byte 4"):
        read_examples(path)


def test_empty_sentences_are_skipped_and_counted(tmp_path, caplog):
    path = write(tmp_path / "p.tsv", "a\tb\nx y\tz w\n\t only positive\nk l\t \nm n\to p\n")
    with caplog.at_level("WARNING", logger="simcse_hub.data"):
        examples = read_examples(path)
    assert examples.rows == [("x y", "z w"), ("m n", "o p")] and examples.skipped == 2
    assert "skipped 2 example(s) with an empty sentence (first on line 3)" in caplog.text


def test_all_sentences_empty_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"blank\.txt: all 3 examples have an empty sentence"):
        read_examples(write(tmp_path / "blank.txt", "\n  \n\n"))


def test_invalid_json_names_the_line(tmp_path):
    path = write(tmp_path / "b.jsonl", '{"a": "x", "b": "y"}\n{"a": "x", "b": \n')
    with pytest.raises(DataError, match=r"b\.jsonl, line 2: invalid JSON"):
        read_examples(path)


def test_jsonl_missing_key_names_the_line(tmp_path):
    path = write(tmp_path / "k.jsonl", '{"a": "x", "b": "y"}\n{"a": "x", "c": "y"}\n')
    with pytest.raises(DataError, match=r"k\.jsonl, line 2: no key \['b'\]"):
        read_examples(path)


def test_unknown_columns_and_too_many_columns(tmp_path):
    path = write(tmp_path / "c.csv", "a,b,c,d\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"c\.csv, line 1 \(header\): 4 columns .* Set columns"):
        read_examples(path)
    with pytest.raises(DataError, match=r"no column named \['zz'\] \(the header has \['a', 'b', 'c', 'd'\]\)"):
        read_examples(path, columns=["a", "zz"])


def test_unknown_suffix_and_broken_gzip(tmp_path):
    with pytest.raises(DataError, match=r"data\.xlsx: unknown training file type '\.xlsx'"):
        read_examples(write(tmp_path / "data.xlsx", "a\n"))
    with pytest.raises(DataError, match=r"fake\.txt\.gz, line 1: not a complete gzip file"):
        read_examples(write(tmp_path / "fake.txt.gz", "not gzip at all\n"))


def test_hub_dataset_offline_gives_a_clear_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"dataset_name='princeton-nlp/datasets-for-simcse': the Hugging Face Hub cannot be reached"):
        load_hub_examples("princeton-nlp/datasets-for-simcse", data_files="nli_for_simcse.csv")


def test_hub_dataset_code_path_on_a_local_dataset_folder(tmp_path):
    # `datasets.load_dataset` reads a local folder exactly as a Hub repository: the Hub path, without the network.
    pytest.importorskip("datasets")
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    write(folder / "nli_for_simcse.csv", f"{NLI_HEADER}\nA b.,C d.,E f.\nG h.,,I j.\nK l.,M n.,O p.\n")
    examples = load_hub_examples(str(folder), split="train", data_files="nli_for_simcse.csv")
    assert examples.columns == ["sent0", "sent1", "hard_neg"]
    assert examples.rows == [("A b.", "C d.", "E f."), ("K l.", "M n.", "O p.")] and examples.skipped == 1


# ---------------------------------------------------------------------------------------------------- tokenize, batch


def test_unsupervised_sentence_is_tokenized_once_and_doubled(tmp_path, tokenizer, monkeypatch):
    examples = read_examples(write(tmp_path / "s.txt", "a man is playing a guitar .\nthe dog runs .\n"))
    calls = []
    original = type(tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        calls.append(list(text))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    batch = SimCSECollator(tokenizer, max_seq_length=32)([examples.dataset[0], examples.dataset[1]])
    assert calls == [["a man is playing a guitar .", "the dog runs ."]]  # one call, each sentence once
    assert batch["input_ids"].shape == (2, 2, 9)  # (batch, num_sent = 2 copies, longest)
    assert torch.equal(batch["input_ids"][:, 0], batch["input_ids"][:, 1])
    expected = tokenizer("a man is playing a guitar .")["input_ids"]
    assert batch["input_ids"][0, 0].tolist() == expected


def test_dynamic_padding_truncation_and_masks(tmp_path, tokenizer):
    rows = "sent0\tsent1\thard_neg\na man\ta woman is slicing an onion\tthe cat\n" + "dog " * 40 + "\tb\tc\n"
    dataset = read_examples(write(tmp_path / "t.tsv", rows)).dataset
    collate = SimCSECollator(tokenizer, max_seq_length=10)
    assert collate([dataset[1]])["attention_mask"][0].sum(-1).tolist() == [10, 3, 3]  # truncated, specials included
    first = collate([dataset[0]])
    assert first["input_ids"].shape == (1, 3, 8)  # padded to the longest of this batch only
    assert first["attention_mask"][0].sum(-1).tolist() == [4, 8, 4]
    assert (first["input_ids"][0, 0, 4:] == tokenizer.pad_token_id).all()
    assert torch.equal(first["token_type_ids"], torch.zeros_like(first["input_ids"]))
    assert collate([dataset[0], dataset[1]])["input_ids"].shape == (2, 3, 10)
    tokenizer.padding_side = "left"  # the encoders here have absolute positions: always padded on the right
    try:
        assert (collate([dataset[0]])["input_ids"][0, 0, 4:] == tokenizer.pad_token_id).all()
    finally:
        tokenizer.padding_side = "right"


def test_examples_are_memory_mapped_and_a_changed_file_is_read_again(tmp_path):
    path = write(tmp_path / "s.txt", "a man\nthe dog runs\n")
    first = read_examples(path)
    assert first.dataset.cache_files  # an Arrow file, memory-mapped, not Python strings
    assert read_examples(path).dataset.cache_files == first.dataset.cache_files  # read once, then from the cache
    write(path, "a man\nthe dog runs\nthe cat sleeps\n")
    assert read_examples(path).rows[-1] == ("the cat sleeps",)
