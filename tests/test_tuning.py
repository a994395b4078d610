"""``simcse-hub tune`` (simcse_hub.tune): trials that are real training runs of a tiny encoder, one pruned on its
first evaluation, the record of the search, a best_config.yaml that ``simcse-hub train --config`` runs, a resumed
search, and bad input in one line before any trial."""

from __future__ import annotations

import csv
import gzip
import json
import random
import sys
from pathlib import Path

import pytest
from conftest import WORDS

optuna = pytest.importorskip("optuna")

import simcse_hub.tune as tuning
from simcse_hub.cli import main
from simcse_hub.config import TrainConfig

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes the trials numbered ``numbers`` at their first report, and no other."""

    def __init__(self, numbers: set[int]) -> None:
        self.numbers = numbers

    def prune(self, study, trial) -> bool:
        return trial.number in self.numbers


def sentence(rng: random.Random, k: int = 8) -> str:
    return " ".join(rng.choices(WORDS, k=k)) + " ."


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Triplets and pairs to train on, and a data folder with a small STS-B dev set (no SICK-R)."""
    root = tmp_path_factory.mktemp("tune_data")
    rng = random.Random(1)
    triplets, pairs = ["sent0\tsent1\thard_neg"], ["sent0\tsent1"]
    for _ in range(64):
        words = rng.choices(WORDS, k=10)
        triplets.append(f"{' '.join(words)}\t{' '.join(words[:7])}\t{sentence(rng)}")
        pairs.append(f"{' '.join(words)}\t{' '.join(words[:7])}")
    (root / "triplets.tsv").write_text("\n".join(triplets) + "\n", encoding="utf-8")
    (root / "pairs.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    rows = ["sentence1\tsentence2\tscore"]
    for _ in range(40):
        words, score = rng.choices(WORDS, k=8), rng.uniform(0, 5)
        kept = round(8 * score / 5)
        rows.append(f"{' '.join(words)} .\t{' '.join(words[:kept] + rng.choices(WORDS, k=8 - kept))} .\t{score:.2f}")
    (root / "sts" / "stsb").mkdir(parents=True)
    (root / "sts" / "stsb" / "dev.tsv.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    (root / "empty").mkdir()
    return {"triplets": root / "triplets.tsv", "pairs": root / "pairs.tsv", "sts": root / "sts",
            "empty": root / "empty"}


def tune_args(encoder: Path, data: dict[str, Path], output: Path, *extra: str, train_file: str = "triplets") -> list:
    """``simcse-hub tune`` on the tiny encoder: trials of 4 updates, evaluated on STS-B dev at updates 2 and 4."""
    return ["tune", "--set", f"model_name_or_path={encoder}", f"train_file={data[train_file]}", "pooler_type=avg",
            "max_seq_length=16", "batch_size=16", "mixed_precision=no", f"data_dir={data['sts']}", "logging_steps=1",
            "--trial-set", "max_steps=4", "eval_steps=2", "--output-dir", str(output),
            "--search", "learning_rate,temperature,hard_negative_weight", "--range", "learning_rate=1e-4:1e-2", *extra]


def read_table(output: Path) -> list[dict[str, str]]:
    with open(output / "trials.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_tune_runs_three_trials_prunes_one_and_writes_a_config_that_train_runs(tmp_path, encoder_dir, data,
                                                                              monkeypatch, capsys):
    monkeypatch.setattr(tuning, "make_pruner", lambda options: PruneTrial({1}))
    output = tmp_path / "tune"
    assert main(tune_args(encoder_dir, data, output, "--trials", "3", "--seed", "0")) == 0
    table = read_table(output)
    assert [(row["trial"], row["state"]) for row in table] == [("0", "COMPLETE"), ("1", "PRUNED"), ("2", "COMPLETE")]
    assert [row["updates"] for row in table] == ["4", "2", "4"]  # trial 1 stopped at its first evaluation
    assert table[1]["score"] == "" and all(-100 <= float(table[i]["score"]) <= 100 for i in (0, 2))
    assert all(row["stsb_dev_spearman"] and float(row["runtime_s"]) >= 0 for row in table)
    assert set(table[0]) >= {"learning_rate", "temperature", "hard_negative_weight"}
    assert len({row["learning_rate"] for row in table}) == 3  # each trial sampled its own value
    assert not list((output / "trials").iterdir())  # every trial's model folder deleted once scored
    markdown = (output / "trials.md").read_text()
    assert "3 trials: 2 complete, 1 pruned, 0 failed" in markdown and markdown.count("\n| ") == 4
    assert "The starting encoder, untrained, scores " in markdown
    out = capsys.readouterr().out
    assert "3 trials in study 'tune': 2 complete, 1 pruned, 0 failed" in out

    best_row = max((row for row in table if row["state"] == "COMPLETE"), key=lambda row: float(row["score"]))
    assert f"Best: trial {best_row['trial']}, score {float(best_row['score']):.2f} (the untrained encoder: " in out
    best = TrainConfig.from_yaml(output / "best_config.yaml")
    # trials.csv holds the sampled values exactly as best_config.yaml does
    assert (best.learning_rate, best.temperature) == (float(best_row["learning_rate"]), float(best_row["temperature"]))
    assert best.output_dir == "outputs/tuned" and best.max_steps is None and best.eval_steps == 125  # no --trial-set
    assert best.model_name_or_path == str(encoder_dir) and best.pooler_type == "avg" and best.batch_size == 16
    assert (output / "best_config.yaml").read_text().startswith("# simcse-hub tune, study tune: trial ")

    final = tmp_path / "final"
    assert main(["train", "--config", str(output / "best_config.yaml"), "--set", f"output_dir={final}",
                 "max_steps=2", "eval_steps=0", "report_to=none"]) == 0
    assert (final / "model.safetensors").is_file()
    assert TrainConfig.from_yaml(final / "train_config.yaml").temperature == best.temperature


def test_a_search_in_a_database_resumes_where_it_stopped(tmp_path, encoder_dir, data, monkeypatch):
    monkeypatch.setattr(tuning, "make_pruner", lambda options: PruneTrial(set()))
    output, storage = tmp_path / "tune", f"sqlite:///{tmp_path / 'tune.db'}"
    args = tune_args(encoder_dir, data, output, "--storage", storage, "--keep-trials",
                     "--search", "learning_rate,batch_size", "--range", "batch_size=8,16")
    assert main([*args, "--trials", "1"]) == 0
    assert main([*args, "--trials", "2"]) == 0  # the same folder and study: one more trial
    table = read_table(output)
    assert [(row["trial"], row["state"]) for row in table] == [("0", "COMPLETE"), ("1", "COMPLETE")]
    assert "hard_negative_weight" not in table[0] and table[0]["batch_size"] in ("8", "16")
    assert sorted(p.name for p in (output / "trials").iterdir()) == ["trial-000", "trial-001"]  # --keep-trials
    assert main([*args, "--trials", "2"]) == 0  # nothing left to run
    assert len(read_table(output)) == 2
    # The baseline of trials.md is the untouched encoder as a trial's own run scored it before its first update.
    card = json.loads((output / "trials" / "trial-000" / "simcse_card.json").read_text())
    start = card["before_after"]["before"]["stsb_dev_spearman"]
    beaten = sum(float(row["score"]) > start for row in read_table(output))
    assert (f"The starting encoder, untrained, scores {start:.2f} (STS-B dev {start:.2f}); {beaten} of 2 complete "
            "trials beat it.") in (output / "trials.md").read_text()


def test_the_mix_of_two_sources_is_searched_and_kept_in_the_best_config(tmp_path, encoder_dir, data, monkeypatch):
    monkeypatch.setattr(tuning, "make_pruner", lambda options: PruneTrial(set()))
    output = tmp_path / "tune"
    args = tune_args(encoder_dir, data, output, "--trials", "1", "--search", "learning_rate,source_weights",
                     "--range", "source_weights=0.5:2")
    args[args.index(f"train_file={data['triplets']}")] = f"train_file={data['triplets']},{data['pairs']}"
    assert main(args) == 0
    row = read_table(output)[0]
    assert row["state"] == "COMPLETE" and 0.5 <= float(row["source_weight_1"]) <= 2
    best = TrainConfig.from_yaml(output / "best_config.yaml")
    assert best.source_weights[0] == 1.0 and best.source_weights[1] == float(row["source_weight_1"])
    assert best.train_file == f"{data['triplets']},{data['pairs']}"


def test_sampled_values_become_settings():
    options = tuning.TuneOptions(mini_batch_size=64)
    space = {"batch_size": tuning.Param(choices=(32, 128)), "mlm_weight": tuning.Param(0.02, 0.3, log=True)}
    assert tuning.sample(optuna.trial.FixedTrial({"batch_size": 128, "do_mlm": False}), space) == {
        "batch_size": 128, "do_mlm": False}
    values = tuning.sample(optuna.trial.FixedTrial({"batch_size": 32, "do_mlm": True, "mlm_weight": 0.1}), space)
    assert values == {"batch_size": 32, "do_mlm": True, "mlm_weight": 0.1}
    assert tuning.settings_for({"batch_size": 128}, options) == {"batch_size": 128, "mini_batch_size": 64}
    assert tuning.settings_for({"batch_size": 64}, options) == {"batch_size": 64}
    # A trial's Optuna parameters (best_config.yaml is written from them): one weight per source after the first.
    assert tuning.settings_for({"source_weight_2": 0.5, "source_weight_1": 2.0}, options) == {
        "source_weights": [1.0, 2.0, 0.5]}


# ---------------------------------------------------------------------------------------------------- bad input


BAD = [
    (["--search", "learning_rate,dropout"], "--search 'dropout': not a setting tune searches"),
    (["--search", "temperature"], "--range learning_rate: learning_rate is not searched"),
    (["--range", "temperature=0:0.1"], "LOW > 0 (log-uniform)"),
    (["--range", "batch_size=1,64", "--search", "learning_rate,batch_size"], "batch_size=1: a contrastive batch"),
    (["--range", "pooler_type=cls,mean", "--search", "learning_rate,pooler_type"], "pooler_type='mean'"),
    (["--range", "learning_rate=fast"], "learning_rate='fast'"),
    (["--trial-set", "eval_steps=0"], "eval_steps=0: every trial is scored"),
    (["--trial-set", "learnin_rate=1"], "did you mean 'learning_rate'"),
    (["--set", "data_dir={empty}"], "STS-B dev scores the trials but cannot be read"),
    (["--objective", "stsb+sickr"], "SICK-R trial scores the trials but cannot be read"),
    (["--set", "model_name_or_path={empty}/no-model"], "no-model"),
    (["--trials", "0"], "--trials 0"),
    (["--storage", "tune.db"], "expected a database URL"),
    (["--search", "learning_rate,source_weights"], "--search source_weights: there is one training source"),
    (["--search", "learning_rate,source_weights", "--range", "source_weights=1,2"], "source_weights=LOW:HIGH"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD, ids=[message.split(":")[0][:30] for _, message in BAD])
def test_bad_input_ends_in_one_line_before_any_trial(tmp_path, encoder_dir, data, extra, expected, capsys):
    extra = [item.replace("{empty}", str(data["empty"])) for item in extra]
    output = tmp_path / "tune"
    assert main(tune_args(encoder_dir, data, output, *extra)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("simcse-hub")]
    assert len(lines) == 1 and lines[0].startswith("simcse-hub tune: error: "), err
    assert expected in lines[0] and "Traceback" not in err, lines[0]
    assert not output.exists()  # nothing was written


def test_an_encoder_that_does_not_load_is_named_before_anything_is_written(tmp_path, encoder_dir, data, capsys):
    """The baseline (the untouched encoder's score) loads the encoder before the output folder is touched, so an
    encoder that resolves but does not load ends the search with nothing written."""
    import shutil

    broken = tmp_path / "no-tokenizer"
    shutil.copytree(encoder_dir, broken)
    for path in broken.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()
    output = tmp_path / "tune"
    assert main(tune_args(broken, data, output)) == 2
    assert "has no tokenizer" in capsys.readouterr().err
    assert not output.exists()


def test_output_folders_and_data_that_do_not_fit_are_refused(tmp_path, encoder_dir, data, monkeypatch, capsys):
    def error_of(argv: list[str]) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    hard = ["--search", "learning_rate,hard_negative_weight"]
    assert "has no hard-negative column" in error_of(tune_args(encoder_dir, data, tmp_path / "a", *hard,
                                                               train_file="pairs"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    assert "is not empty and holds no earlier search" in error_of(tune_args(encoder_dir, data, tmp_path / "mine"))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tune.json").write_text('{"study_name": "old"}\n')
    assert "holds an earlier search (study 'old'); pass --overwrite" in error_of(
        tune_args(encoder_dir, data, tmp_path / "old"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine\n" and (tmp_path / "old" / "tune.json").exists()
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if Optuna were not installed
    assert error_of(tune_args(encoder_dir, data, tmp_path / "b")).endswith("pip install 'simcse-hub[tune]'")


@pytest.mark.integration
def test_the_stsb_sickr_objective_averages_the_two_dev_scores(tmp_path, encoder_dir, data, shared_data, monkeypatch):
    """With --objective stsb+sickr (on the real STS-B dev and SICK-R trial), a trial's score is the mean of its best
    STS-B dev Spearman and its exported model's SICK-R trial Spearman, and the baseline gives both."""
    monkeypatch.setattr(tuning, "make_pruner", lambda options: PruneTrial(set()))
    output = tmp_path / "tune"
    args = tune_args(encoder_dir, data, output, "--trials", "1", "--objective", "stsb+sickr")
    args[args.index(f"data_dir={data['sts']}")] = f"data_dir={shared_data}"
    assert main(args) == 0
    row = read_table(output)[0]
    stsb, sickr = float(row["stsb_dev_spearman"]), float(row["sickr_dev_spearman"])
    assert float(row["score"]) == pytest.approx((stsb + sickr) / 2)
    markdown = (output / "trials.md").read_text()
    assert "averaged with the exported model's SICK-R trial Spearman" in markdown
    assert "(STS-B dev " in markdown and ", SICK-R trial " in markdown
