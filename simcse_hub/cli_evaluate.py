"""``simcse-hub evaluate``: STS (SentEval's tasks and settings), alignment and uniformity of one or more models,
optionally after BERT-whitening or BERT-flow fitted on a corpus, or the comparison table of both; the results of a
SimCSE folder are recorded in its card data and model card."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from simcse_hub.cli_common import CLIError, load_tool, model_options, one_line, writable_file

logger = logging.getLogger("simcse_hub")


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
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


def run_evaluate(args: argparse.Namespace) -> int:
    from simcse_hub.evaluation import canonical_task, evaluate_model
    from simcse_hub.reporting import (
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
    writable_file(args.out, "--out", (".json",))
    writable_file(args.plot, "--plot", (".png",))
    corpus = _read_corpus(corpus_file, args) if corpus_file else None
    settings = {"tasks": tasks, "data_dir": args.data_dir, "setting": args.setting, "split": args.split,
                "alignment_uniformity": not args.no_alignment_uniformity}
    all_results = []
    for name in args.models:
        model = load_tool(name, args)
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
            raise CLIError(one_line(error)) from None
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
        raise CLIError(f"{option}: {one_line(error)}") from None


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
        raise CLIError(f"{option}: {one_line(error)}") from None
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
    from simcse_hub.reporting import plot_alignment_uniformity

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
