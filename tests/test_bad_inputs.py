"""Bad input, as a hostile new user types it, through the real command line (``simcse_hub.cli.main``, in process):
each case ends with exit status 2 and one line on standard error that names the file, line or setting at fault, no
traceback, and a finished run in the output folder exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from conftest import WORDS, make_model

from simcse_hub.cli import main
from simcse_hub.train import save_model

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory, encoder_dir, tokenizer) -> dict[str, Path]:
    """Files and folders the cases refer to: an encoder, data files good and bad, a finished run, model folders."""
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = random.Random(0)
    (root / "sentences.txt").write_text("".join(" ".join(rng.choices(WORDS, k=8)) + " .\n" for _ in range(40)),
                                        encoding="utf-8")
    (root / "pairs.csv").write_text("sent0,sent1\na man plays,a man is playing\na dog,runs,fast\n", encoding="utf-8")
    (root / "latin1.txt").write_bytes(b"a man plays\ncaf\xe9 au lait\n")
    (root / "data.xyz").write_text("a man plays\n", encoding="utf-8")
    (root / "blank.txt").write_text("\n  \n", encoding="utf-8")
    (root / "bad.yaml").write_text("learning_rate: [1e-5\n", encoding="utf-8")
    (root / "empty").mkdir()
    (root / "config-only").mkdir()
    shutil.copy(encoder_dir / "config.json", root / "config-only" / "config.json")
    (root / "stsb-bad" / "stsb").mkdir(parents=True)
    (root / "stsb-bad" / "stsb" / "dev.tsv").write_text("sentence1\tsentence2\tscore\na b\tc d\tmany\n",
                                                        encoding="utf-8")
    (root / "readme-model").mkdir()
    save_model(make_model("bert", pooler_type="avg"), root / "model", tokenizer)
    save_model(make_model("bert", pooler_type="avg"), root / "readme-model", tokenizer)
    (root / "readme-model" / "README.md").write_text("# My own card\n", encoding="utf-8")
    finished = root / "finished"
    assert main(["train", "--model-name-or-path", str(encoder_dir), "--train-file", str(root / "sentences.txt"),
                 "--output-dir", str(finished), "--batch-size", "8", "--max-steps", "2", "--eval-steps", "0",
                 "--pooler-type", "avg", "--max-seq-length", "16", "--report-to", "none",
                 "--mixed-precision", "no"]) == 0
    return {"root": root, "encoder": encoder_dir, "finished": finished}


def train_args(world, *extra: str, output: str = "run") -> list[str]:
    """``simcse-hub train`` with working settings (a copy of the finished run as output, to be replaced), then
    ``extra``, which makes one of them bad."""
    return ["train", "--model-name-or-path", str(world["encoder"]), "--train-file",
            str(world["root"] / "sentences.txt"), "--output-dir", output, "--overwrite-output-dir",
            "--batch-size", "8", "--max-steps", "2", "--eval-steps", "0", "--max-seq-length", "16",
            "--report-to", "none", "--mixed-precision", "no", *extra]


R = "{root}"  # replaced by the module's folder of files
CASES = [
    # ---- training settings: refused before anything is read or written
    ("lr-inf", "train", ["--learning-rate", "inf"], "learning_rate=inf: expected a finite number"),
    ("wd-nan", "train", ["--weight-decay", "nan"], "weight_decay=nan: expected a finite number"),
    ("hnw-nan", "train", ["--hard-negative-weight", "nan"], "hard_negative_weight=nan: expected a finite number"),
    ("batch-1", "train", ["--batch-size", "1"], "batch_size=1: a contrastive batch needs at least 2 examples"),
    ("temperature-0", "train", ["--temperature", "0"], "temperature=0.0: expected a number in [0.001, 10]"),
    ("temperature-huge", "train", ["--temperature", "1e30"], "temperature=1e+30: expected a number in [0.001, 10]"),
    ("temperature-tiny", "train", ["--temperature", "1e-30"], "temperature=1e-30: expected a number in [0.001, 10]"),
    ("lr-huge", "train", ["--learning-rate", "1e30"], "learning_rate=1e+30: expected a number in [1e-8, 1]"),
    ("warmup", "train", ["--warmup-ratio", "1.5"], "warmup_ratio=1.5: expected a number in [0, 1)"),
    ("precision", "train", ["--mixed-precision", "fp8"], "mixed_precision='fp8': expected one of"),
    ("pooler", "train", ["--pooler-type", "max"], "pooler_type='max': expected one of"),
    ("epochs-0", "train", ["--num-train-epochs", "0"], "num_train_epochs=0: expected an integer >= 1"),
    ("not-a-number", "train", ["--learning-rate", "fast"], "learning_rate='fast': expected a number"),
    ("fp16-on-cpu", "train", ["--mixed-precision", "fp16"], "mixed_precision='fp16' needs a GPU"),
    ("unknown-set", "train", ["--set", "learning_rat=1e-5"], "unknown setting 'learning_rat'; did you mean"),
    ("set-no-value", "train", ["--set", "learning_rate"], "--set 'learning_rate': expected KEY=VALUE"),
    ("preset", "train", ["--preset", "unsup-bert-tiny"], "--preset 'unsup-bert-tiny': no such preset"),
    ("config-missing", "train", ["--config", f"{R}/missing.yaml"], "missing.yaml: no such configuration file"),
    ("config-bad-yaml", "train", ["--config", f"{R}/bad.yaml"], "bad.yaml: not valid YAML"),
    # ---- data: the file and the line
    ("train-file-missing", "train", ["--train-file", f"{R}/sentence.txt"], "sentence.txt: no such file"),
    ("train-file-before-encoder", "train", ["--model-name-or-path", f"{R}/empty", "--train-file", f"{R}/nope.txt"],
     "nope.txt: no such file"),  # named before the encoder (which would not load) is even tried
    ("train-file-type", "train", ["--train-file", f"{R}/data.xyz"], "data.xyz: unknown training file type '.xyz'"),
    ("train-file-columns", "train", ["--train-file", f"{R}/pairs.csv"], "pairs.csv, line 3: 3 field(s)"),
    ("train-file-utf8", "train", ["--train-file", f"{R}/latin1.txt"], "latin1.txt, line 2: invalid UTF-8"),
    ("data-dir", "train", ["--data-dir", f"{R}/no-data", "--eval-steps", "1"], "no-data' is not a folder"),
    ("sts-file", "train", ["--data-dir", f"{R}/stsb-bad", "--eval-steps", "1"],
     "dev.tsv, line 2: the score 'many' is not a finite number"),
    # ---- the encoder
    ("model-typo", "train", ["--model-name-or-path", f"{R}/encodr"], "encodr': no such folder"),
    ("model-empty", "train", ["--model-name-or-path", f"{R}/empty"], "is not an encoder AutoModel can load"),
    ("model-no-weights", "train", ["--model-name-or-path", f"{R}/config-only"], "is not an encoder AutoModel can load"),
    ("max-seq-length", "train", ["--max-seq-length", "1024"],
     "max_seq_length=1024 exceeds what the encoder accepts (64 tokens"),
    # ---- the output folder: one message, the one command that works
    ("finished-no-flag", "train-raw", ["--output-dir", "run"], "holds a finished model; to train again, replace it "
     "with --overwrite-output-dir"),
    ("finished-resume", "train-raw", ["--output-dir", "run", "--resume"], "finished, so there is nothing to "
     "continue; to train again, pass --overwrite-output-dir instead of --resume"),
    ("resume-and-overwrite", "train", ["--resume"], "pass one of them"),
    ("resume-checkpoint", "train-raw", ["--output-dir", "fresh", "--resume", f"{R}/empty"],
     "not a whole simcse_hub checkpoint"),
    # ---- evaluate
    ("eval-task", "evaluate", [f"{R}/model", "--tasks", "STS99"], "--tasks: unknown STS task 'STS99'"),
    ("eval-model-typo", "evaluate", [f"{R}/modle"], "modle': no such folder"),
    ("eval-not-a-model", "evaluate", [f"{R}/empty"], "has neither config.json nor modules.json"),
    ("eval-no-weights", "evaluate", [f"{R}/config-only", "--pooler", "avg"], "cannot load"),
    ("eval-data-dir", "evaluate", [f"{R}/model", "--data-dir", f"{R}/no-data"], "no-data' is not a folder"),
    ("eval-whiten-k", "evaluate", [f"{R}/model", "--whiten-k", "4"], "--whiten-k needs --whiten or --compare"),
    ("eval-two-corpora", "evaluate", [f"{R}/model", "--whiten", f"{R}/sentences.txt", "--flow", f"{R}/sentences.txt"],
     "pass one of them"),
    ("eval-save-flow", "evaluate", [f"{R}/model", "--save-flow"], "--save-flow needs --flow CORPUS_FILE"),
    ("eval-flow-corpus", "evaluate", [f"{R}/model", "--flow", f"{R}/latin1.txt"],
     "latin1.txt, line 2: not valid UTF-8"),
    ("eval-whiten-corpus", "evaluate", [f"{R}/model", "--whiten", f"{R}/corpus.txt"], "corpus.txt: no such corpus"),
    ("eval-out-folder", "evaluate", [f"{R}/model", "--out", f"{R}/no/such/results.json"], "does not exist"),
    ("eval-plot-name", "evaluate", [f"{R}/model", "--plot", f"{R}/plot.jpg"], "expected a file name ending in .png"),
    # ---- encode
    ("encode-output-type", "encode", [f"{R}/model", "--output", f"{R}/e.csv"], "ending in .npy or .jsonl"),
    ("encode-output-folder", "encode", [f"{R}/model", "--output", f"{R}/no/such/e.npy"], "does not exist"),
    ("encode-input", "encode", [f"{R}/model", "--input", f"{R}/missing.txt"], "cannot read --input"),
    ("encode-input-utf8", "encode", [f"{R}/model", "--input", f"{R}/latin1.txt"], "latin1.txt': not UTF-8 text"),
    ("encode-batch-size", "encode", [f"{R}/model", "--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    ("encode-max-length", "encode", [f"{R}/model", "--max-length", "100000", "--input", f"{R}/sentences.txt"],
     "--max-length 100000: max_length=100000: expected an integer in [2, 48]"),
    ("encode-empty-input", "encode", [f"{R}/model", "--input", f"{R}/blank.txt"],
     "--input '{root}/blank.txt': no sentences (the input is empty or blank); give one sentence per line"),
    ("encode-binary-before-model", "encode", [f"{R}/config-only", "--input", f"{R}/latin1.txt"],
     "latin1.txt': not UTF-8 text"),  # named before the model (which would not load) is even tried
    ("encode-max-length-1", "encode", [f"{R}/model", "--max-length", "1", "--input", f"{R}/sentences.txt"],
     "--max-length 1: max_length=1: expected an integer in [2, 48]"),
    ("encode-plain-encoder", "encode", ["{encoder}", "--input", f"{R}/sentences.txt"], "pass pooler="),
    ("encode-pooler", "encode", [f"{R}/model", "--pooler", "max"], "pooler='max' is not supported"),
    # ---- info, card, push
    ("info-typo", "info", [f"{R}/modle"], "modle': no such folder"),
    ("info-plain-encoder", "info", ["{encoder}"], "is a 'bert' model, not a SimCSE model"),
    ("card-not-a-model", "card", [f"{R}/empty"], "is not a model folder (no config.json)"),
    ("card-hand-written", "card", [f"{R}/readme-model", "--write"], "hand-written card; pass --force"),
    ("push-not-ready", "push", [f"{R}/empty", "--repo-id", "me/x"], "is not ready to push"),
    ("push-space-id", "push-space", ["--model", "not a repo id", "--space-id", "me/demo"],
     "must be a Hub repo id (user/name)"),
    # ---- export
    ("export-no-format", "export", [f"{R}/model"], "give a format, --portable OUT"),
    ("export-not-simcse", "export", ["{encoder}", "--portable", "out"], "is a 'bert' model, not a SimCSE model"),
    ("export-out-exists", "export", [f"{R}/model", "--portable", "run"], "already exists and is not an empty folder"),
    ("export-quantize-alone", "export", [f"{R}/model", "--quantize", "int8"], "give --onnx OUT too"),
]


@pytest.mark.parametrize(("case", "command", "argv", "expected"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_ends_in_one_clear_line(world, case, command, argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "NotUsedBecauseTheInputIsBad" * 2)
    shutil.copytree(world["finished"], tmp_path / "run")
    before = snapshot(tmp_path / "run")
    argv = [a.replace(R, str(world["root"])).replace("{encoder}", str(world["encoder"])) for a in argv]
    if command == "train":
        full = train_args(world, *argv)
    elif command == "train-raw":
        full = train_args(world, *argv)
        full.remove("--overwrite-output-dir")
    else:
        full = [command, *argv]
    status = main(full)
    err = capsys.readouterr().err
    assert status == 2, (status, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("simcse-hub")]
    assert len(lines) == 1, err
    shown = command.removesuffix("-raw")
    assert lines[0].startswith(f"simcse-hub {shown}: error: "), lines[0]
    assert expected.replace("{root}", str(world["root"])) in lines[0], lines[0]
    assert snapshot(tmp_path / "run") == before  # the finished run is exactly as it was
    if os.environ.get("SIMCSE_BAD_INPUTS_TABLE"):  # collect (case, input, message) for a report
        with open(os.environ["SIMCSE_BAD_INPUTS_TABLE"], "a", encoding="utf-8") as table:
            shown_argv = " ".join(argv).replace(str(world["root"]), "…").replace(str(world["encoder"]), "ENCODER")
            table.write(json.dumps({"case": case, "command": shown, "input": shown_argv, "message": lines[0]}) + "\n")


def test_the_table_covers_every_command_and_thirty_kinds():
    assert len({case[0] for case in CASES}) == len(CASES) >= 30
    assert {case[1].removesuffix("-raw") for case in CASES} >= {"train", "evaluate", "encode", "info", "card", "push",
                                                                  "push-space", "export"}


def test_the_demo_refuses_bad_input_without_a_server_traceback(capsys):
    gradio = pytest.importorskip("gradio")
    from simcse_hub.demo import app

    for call in (lambda: app.compare_pair("", "a b"), lambda: app.compare_many("one line"),
                 lambda: app.search_corpus("a\nb", "   ")):
        with pytest.raises(gradio.Error) as raised:
            call()
        assert raised.value.print_exception is False  # Gradio prints no traceback for it
    assert "Traceback" not in capsys.readouterr().err


def test_json_of_the_finished_run_is_valid(world):
    for line in (world["finished"] / "training_log.jsonl").read_text().splitlines():
        json.loads(line)


def test_v_after_the_command_shows_the_traceback(world, capsys):
    """`-v` is accepted after a command as before it, and shows the traceback of the error (here `encode` of a
    missing input file), which without it is one line."""
    argv = ["encode", str(world["root"] / "model"), "--input", str(world["root"] / "no-such.txt")]
    assert main(argv) == 2
    quiet = capsys.readouterr().err
    assert "Traceback" not in quiet and "no-such.txt" in quiet
    for verbose in ([*argv, "-v"], ["-v", *argv]):
        assert main(verbose) == 2
        assert "Traceback" in capsys.readouterr().err
