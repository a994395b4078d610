"""Largest unsupervised batch that trains in a memory budget (8 GiB), with and without gradient caching, and its
step time: simcse_hub against sentence-transformers.

    python benchmarks/bench_batch.py
    python benchmarks/bench_batch.py --memory-gib 4 --max-batch 1024 --time-budget 1800

Each trial trains all-MiniLM-L6-v2 for ``--steps`` step(s) on wiki sentences (max length 32, mean pooling,
temperature 0.05; ``--precision`` on both sides: bf16 autocast by default where the CPU computes it natively, as
simcse_hub's ``mixed_precision="auto"`` does, else fp32) at one batch size, in its own process, watched from outside:
the trial "fits" when the resident memory of its process tree never exceeds the budget (it is killed the moment it
does). Two trials (``--start`` and twice that) give the memory growth per example; the batch it predicts for the
budget is tried next, then its neighbours ``--resolution`` apart until a fit sits next to a failure. Without caching:
simcse_hub's loop vs ``MultipleNegativesRankingLoss``. With caching (the same number of sequences per forward pass on
both sides): simcse_hub's ``mini_batch_size=M/2`` examples (each example is two sequences) vs
``CachedMultipleNegativesRankingLoss(mini_batch_size=M)`` (per column). When a search reaches ``--max-batch`` without
failing, the table says so (``>= max``) and gives the memory growth per 64 examples measured on the way, with the
batch it predicts for the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

SEARCHES = [("no caching", "ours"), ("no caching", "peer"), ("gradient caching", "ours"), ("gradient caching", "peer")]


# ---------------------------------------------------------------------------------------------------- one trial


def worker(args: argparse.Namespace) -> dict:
    """Train ``args.steps`` step(s) at batch ``args.batch`` on one side; report loop seconds and peak memory."""
    sentences = common.read_lines(Path(args.train_file))
    work = Path(args.work_dir)
    if args.worker == "ours":
        from simcse_hub.config import TrainConfig
        from simcse_hub.train import train

        config = TrainConfig(
            model_name_or_path=args.model, pooler_type="avg", temperature=0.05, train_file=args.train_file,
            max_seq_length=32, batch_size=args.batch, max_steps=args.steps, learning_rate=3e-5,
            mini_batch_size=args.mini // 2 if args.mini else None, output_dir=str(work / "ours"),
            overwrite_output_dir=True, eval_steps=0, report_to="none", seed=42,
            mixed_precision="bf16" if args.precision == "bf16" else "no",
        )
        train(config)
        summary = json.loads((work / "ours" / "simcse_card.json").read_text(encoding="utf-8"))
        seconds = float(summary["train_runtime_seconds"])
    else:
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )

        model = SentenceTransformer(args.model, device="cpu")
        model.max_seq_length = 32
        loss = (CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=args.mini) if args.mini
                else MultipleNegativesRankingLoss(model, scale=20.0))
        training_args = SentenceTransformerTrainingArguments(
            output_dir=str(work / "peer"), per_device_train_batch_size=args.batch, max_steps=args.steps,
            learning_rate=3e-5, warmup_steps=0, seed=42, report_to="none", save_strategy="no", use_cpu=True,
            disable_tqdm=True, bf16=args.precision == "bf16",
        )
        dataset = Dataset.from_dict({"anchor": sentences, "positive": sentences})
        trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss)
        seconds = float(trainer.train().metrics["train_runtime"])
    return {"seconds_per_step": seconds / args.steps, "peak_rss": common.peak_rss_bytes()}


# ---------------------------------------------------------------------------------------------------- the search


def trial(args: argparse.Namespace, side: str, batch: int, mini: int, work: Path, pool: list[str],
          deadline: float) -> dict:
    train_file = work / f"batch-{batch}.txt"
    if not train_file.exists():
        train_file.write_text("\n".join(common.sample(pool, batch * args.steps, args.seed)) + "\n", encoding="utf-8")
    trial_dir = Path(tempfile.mkdtemp(prefix=f"{side}-{batch}-", dir=work))
    worker_args = [side, "--batch", str(batch), "--mini", str(mini), "--steps", str(args.steps),
                   "--train-file", str(train_file), "--work-dir", str(trial_dir), "--model", args.model,
                   "--precision", args.precision]
    if args.threads:
        worker_args += ["--threads", str(args.threads)]
    limit = int(args.memory_gib * common.GIB)
    result = common.run_worker(Path(__file__), worker_args, rss_limit=limit,
                               timeout=max(deadline - time.perf_counter(), 1.0))
    result["fits"] = "killed" not in result and result["peak_rss"] <= limit
    state = ("fits" if result["fits"] else f"does not fit ({result['killed']})" if "killed" in result
             else "does not fit")
    step = f", {result['seconds_per_step']:.1f} s/step" if "seconds_per_step" in result else ""
    print(f"    batch {batch}: {state}, peak RSS {result['peak_rss'] / 2**20:,.0f} MiB{step}", flush=True)
    return result


def search(args: argparse.Namespace, side: str, mini: int, work: Path, pool: list[str], budget: float) -> dict:
    """Two trials (``start`` and ``2 * start``) give the memory growth per example; the batch it predicts for the
    budget is then tried, and the search steps by ``resolution`` until a fit sits next to a failure (or the cap, or
    the time budget, is reached). Returns the largest fitting batch, its step time and the growth."""
    deadline = time.perf_counter() + budget
    limit = args.memory_gib * common.GIB
    fits: dict[int, dict] = {}
    failed: set[int] = set()

    def attempt(batch: int) -> bool | None:
        result = trial(args, side, batch, mini, work, pool, deadline)
        if result.get("killed") == "time":
            return None
        if result["fits"]:
            fits[batch] = result
        else:
            failed.add(batch)
        return result["fits"]

    outcome = attempt(args.start)
    if outcome and 2 * args.start <= args.max_batch:
        outcome = attempt(2 * args.start)
    growth = None
    if outcome and len(fits) == 2:  # bytes per example, from the two trials
        growth = max((fits[2 * args.start]["peak_rss"] - fits[args.start]["peak_rss"]) / args.start, 1.0)
        predicted = 2 * args.start + (limit - fits[2 * args.start]["peak_rss"]) / growth
        batch = min(max(int(predicted) // args.resolution * args.resolution, 2 * args.start), args.max_batch)
        if batch in fits and batch < args.max_batch:  # the prediction is a batch already tried: look one step up
            batch = min(batch + args.resolution, args.max_batch)
        while outcome is not None and batch not in fits and batch not in failed:
            outcome = attempt(batch)
            if outcome:
                if batch >= args.max_batch or batch + args.resolution in failed:
                    break
                batch = min(batch + args.resolution, args.max_batch)
            elif outcome is False:
                batch -= args.resolution
                if batch in fits or batch <= 2 * args.start:
                    break
    if not fits:
        return {"largest": None, "stopped": outcome is None, "fits": {}}
    largest = max(fits)
    return {"largest": largest, "seconds_per_step": fits[largest]["seconds_per_step"],
            "peak_rss": fits[largest]["peak_rss"], "capped": largest >= args.max_batch,
            "stopped": outcome is None, "exact": largest + args.resolution in failed,
            "next_failed": min((batch for batch in failed if batch > largest), default=None),
            "growth": None if growth is None else growth * 64 / 2**20, "fits": fits}


def describe(result: dict, memory_gib: float) -> str:
    if result["largest"] is None:
        return "none fits" + (" (time)" if result["stopped"] else "")
    if result["stopped"] and not result["capped"]:
        return f">= {result['largest']} (time budget)"
    if result["capped"]:
        text = f">= {result['largest']} (cap)"
        if result["growth"] is not None and result["growth"] < 1:  # MiB per 64 examples
            text += "; memory flat"
        elif result["growth"]:
            room = (memory_gib * common.GIB - result["peak_rss"]) / 2**20
            text += f"; ~{int(result['largest'] + room / result['growth'] * 64):,} predicted"
        return text
    if not result["exact"] and result["next_failed"]:
        return f"{result['largest']} ({result['next_failed']} does not fit)"
    return str(result["largest"])


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--memory-gib", type=float, default=8.0, help="memory budget in GiB (default: 8)")
    parser.add_argument("--start", type=int, default=128, help="first batch size tried (default: 128)")
    parser.add_argument("--max-batch", type=int, default=1536, help="largest batch size tried (default: 1536)")
    parser.add_argument("--max-batch-cached", type=int, default=512,
                        help="largest batch size tried with gradient caching, whose memory hardly grows (default: 512)")
    parser.add_argument("--resolution", type=int, default=64, help="bisect down to this gap (default: 64)")
    parser.add_argument("--mini-batch", type=int, default=64,
                        help="sequences per forward pass with gradient caching (default: 64)")
    parser.add_argument("--steps", type=int, default=1, help="training steps per trial (default: 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--time-budget", type=float, default=780.0,
                        help="seconds for all the searches, shared equally, time left over rolling on (default: 780)")
    parser.add_argument("--searches", default="all",
                        help="'all', or a comma-separated subset of: ours, peer, ours-cache, peer-cache")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="both sides: fp32 or bf16 autocast (default: bf16 where the CPU computes it natively, "
                             "else fp32)")
    parser.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mini", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.precision = args.precision or ("bf16" if "bf16" in common.precisions(None, parser) else "fp32")

    if args.worker:
        common.set_threads(args.threads)
        common.emit(worker(args))
        return 0

    folder = common.data_dir(args.data_dir)
    args.model = common.model_path(args.model)
    names = {"ours": ("no caching", "ours"), "peer": ("no caching", "peer"),
             "ours-cache": ("gradient caching", "ours"), "peer-cache": ("gradient caching", "peer")}
    chosen = SEARCHES if args.searches == "all" else [names[name.strip()] for name in args.searches.split(",")]
    pool = common.read_lines(common.require_file(folder, common.WIKI_FILE), 200_000)
    print(common.machine_line(args.threads))
    print(f"encoder: {args.model}\nsettings: unsupervised wiki, max length 32, {args.precision}, {args.steps} step(s) "
          f"per trial, "
          f"budget {args.memory_gib:g} GiB, batches {args.start}..{args.max_batch}, gradient caching "
          f"{args.mini_batch} sequences per forward pass", flush=True)
    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as work_dir:
        deadline = time.perf_counter() + args.time_budget
        for index, (mode, side) in enumerate(chosen):
            print(f"  {mode}, {side}:", flush=True)
            share = (deadline - time.perf_counter()) / (len(chosen) - index)  # time left over rolls on
            mini = args.mini_batch if mode == "gradient caching" else 0
            settings = argparse.Namespace(**{**vars(args), "max_batch": args.max_batch_cached if mini else
                                             args.max_batch})
            results[mode, side] = search(settings, side, mini, Path(work_dir), pool, max(share, 1.0))
    rows = []
    for mode in dict.fromkeys(mode for mode, _ in chosen):
        peer, ours = results.get((mode, "peer")), results.get((mode, "ours"))
        cells = [describe(result, args.memory_gib) if result else "-" for result in (peer, ours)]
        exact = all(result and result["largest"] and result["exact"] for result in (peer, ours))
        rows.append([mode, "largest batch in budget", *cells,
                     common.ratio(ours["largest"], peer["largest"]) if exact else "-"])
        if not (peer and ours):
            continue
        step = [f"{result['seconds_per_step']:.2f} (batch {result['largest']})" if result["largest"] else "-"
                for result in (peer, ours)]
        rows.append([mode, "step time at that batch (s)", *step, "-"])
        common_batches = set(peer["fits"]) & set(ours["fits"])
        if common_batches:  # the same batch on both sides: time and memory side by side
            batch = max(common_batches)
            times = [result["fits"][batch]["seconds_per_step"] for result in (peer, ours)]
            memory = [result["fits"][batch]["peak_rss"] / 2**20 for result in (peer, ours)]
            rows.append([mode, f"step time at batch {batch} (s)", common.fmt(times[0], 2), common.fmt(times[1], 2),
                         common.ratio(times[1], times[0])])
            rows.append([mode, f"peak RSS at batch {batch} (MiB)", common.fmt(memory[0], 0),
                         common.fmt(memory[1], 0), common.ratio(memory[1], memory[0])])
    print()
    print(common.table(rows, ["mode", "figure", "sentence-transformers", "simcse_hub", "ours/peer"]))
    print(common.machine_line(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
