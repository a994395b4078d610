"""Training: simcse_hub's Accelerate loop against sentence-transformers' ``SentenceTransformerTrainer`` with
``MultipleNegativesRankingLoss(scale=20)`` (= InfoNCE at temperature 0.05), on the same encoder, data and settings.

    python benchmarks/bench_train.py                      # unsupervised (wiki) and supervised (SNLI triplets)
    python benchmarks/bench_train.py --tasks unsup --steps 50 --batch-size 64 --precisions fp32

Both sides: all-MiniLM-L6-v2 with mean pooling ("avg"), the same training examples (a seeded sample), batch size,
max length (32), learning rate (linear decay, no warm-up), AdamW, gradient clipping at 1.0, precision, number of
steps and seed; each side runs in its own process (so its peak resident memory is its own) and is then scored by the
same code (``simcse_hub.evaluation.evaluate_sts``, in fp32) on STS-B dev and test. Each precision of
``--precisions`` is run on both sides: fp32, and bf16 autocast (``mixed_precision="bf16"`` here, ``bf16=True`` in
the peer's training arguments). Where both run, a last group of rows compares each side's default: simcse_hub's
``mixed_precision="auto"`` (bf16 on a CPU that computes it natively) against the peer's fp32. Examples/second is
given end to end (model load, data, training, saving: what a user waits for) and for the training loop alone;
examples per CPU-second (end to end, all threads) is the figure least disturbed by other work on a shared machine.
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

TASKS = {"unsup": "unsupervised, wiki sentences", "sup": "supervised, SNLI triplets"}


# ---------------------------------------------------------------------------------------------------- workers


def _score(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """STS-B dev and test Spearman x100 of the model saved in ``folder``, by the same code for both sides:
    ``simcse_hub.evaluation.evaluate_sts`` over ``SimCSE(folder).encode`` (a sentence-transformers folder is encoded
    by sentence-transformers itself, a simcse_hub folder by its pooler: mean pooling on both)."""
    from simcse_hub import SimCSE
    from simcse_hub.evaluation import evaluate_sts

    tool = SimCSE(str(folder), device="cpu")

    def encode(sentences: list[str]):
        return tool.encode(sentences, batch_size=args.eval_batch_size, max_length=args.eval_max_length,
                           normalize_to_unit=False, return_numpy=True, show_progress_bar=False)

    scores = {}
    for split in ("dev", "test"):  # every sentence of a split in one call, batched by encode
        result = evaluate_sts(encode, tasks=["STSBenchmark"], data_dir=args.data_dir, split=split)
        scores[f"stsb_{split}"] = float(result["tasks"]["STSBenchmark"]["spearman"])
    return scores


def worker_peer(args: argparse.Namespace) -> dict:
    """sentence-transformers: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss(scale=20)``."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    rows = json.loads(Path(args.examples).read_text(encoding="utf-8"))
    output_dir = Path(args.work_dir) / "peer"
    start, cpu_start = time.perf_counter(), time.process_time()
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    pooling = model[1].pooling_mode
    if pooling != "mean":
        raise common.BenchmarkError(f"{args.model} pools with {pooling!r}; this benchmark compares mean pooling.")
    columns = ["anchor", "positive", "negative"]
    if args.task == "unsup":  # each sentence is its own positive under another dropout mask
        dataset = Dataset.from_dict({"anchor": rows, "positive": rows})
    else:
        dataset = Dataset.from_dict({name: [row[i] for row in rows] for i, name in enumerate(columns)})
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "run"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        seed=args.seed, data_seed=args.seed, report_to="none", save_strategy="no", logging_steps=10, use_cpu=True,
        disable_tqdm=True, bf16=args.precision == "bf16",
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(model, scale=20.0))
    metrics = trainer.train().metrics
    model.max_seq_length = args.eval_max_length  # saved with the model: scored at the same truncation as ours
    model.save(str(output_dir / "model"))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = common.peak_rss_bytes()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "loop_seconds": float(metrics["train_runtime"]),
            "peak_rss": peak, "last_loss": losses[-1] if losses else None, **_score(output_dir / "model", args)}


def worker_ours(args: argparse.Namespace) -> dict:
    """simcse_hub: ``simcse_hub.train.train`` (the Accelerate loop), then the exported model through ``SimCSE``."""
    # Imported before the clock starts, as the peer's worker imports its library: the export writes the
    # sentence-transformers module files with it (3 s of import that would otherwise count on our side only).
    import sentence_transformers  # noqa: F401

    from simcse_hub.config import TrainConfig
    from simcse_hub.train import train

    output_dir = Path(args.work_dir) / "ours"
    config = TrainConfig(
        model_name_or_path=args.model, pooler_type="avg", temperature=0.05, train_file=args.train_file,
        max_seq_length=args.max_length, batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.lr,
        warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0, seed=args.seed,
        mixed_precision="bf16" if args.precision == "bf16" else "no",
        output_dir=str(output_dir), overwrite_output_dir=True, eval_steps=0, logging_steps=10, report_to="none",
        data_dir=args.data_dir,
    )
    config.update(dict(item.split("=", 1) for item in args.set), source="--set")
    start, cpu_start = time.perf_counter(), time.process_time()
    train(config)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = common.peak_rss_bytes()
    summary = json.loads((output_dir / "simcse_card.json").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (output_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "loop_seconds": float(summary["train_runtime_seconds"]),
            "peak_rss": peak, "last_loss": losses[-1] if losses else None, **_score(output_dir, args)}


# ---------------------------------------------------------------------------------------------------- parent


def prepare_examples(args: argparse.Namespace, folder: Path, work: Path, task: str) -> tuple[Path, Path]:
    """The same seeded sample of training examples for both sides: a JSON list (peer) and a data file (ours)."""
    count = args.steps * args.batch_size
    if task == "unsup":
        pool = common.read_lines(common.require_file(folder, common.WIKI_FILE), args.wiki_pool)
        rows = common.sample(pool, count, args.seed)
        train_file = work / "unsup.txt"
        train_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    else:
        lines = common.read_lines(common.require_file(folder, common.SNLI_FILE))
        triplets = [line.split("\t") for line in lines[1:]]  # header: sent0 sent1 hard_neg
        rows = common.sample(triplets, min(count, len(triplets)), args.seed)
        train_file = work / "sup.tsv"
        train_file.write_text("sent0\tsent1\thard_neg\n" + "".join("\t".join(row) + "\n" for row in rows),
                              encoding="utf-8")
    examples = work / f"{task}.json"
    examples.write_text(json.dumps(rows), encoding="utf-8")
    return examples, train_file


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--tasks", default="unsup,sup", help="comma-separated: unsup (wiki), sup (SNLI triplets)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps on each side (default: 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step (default: 64)")
    parser.add_argument("--max-length", type=int, default=32, help="training truncation in tokens (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-5, help="peak learning rate (default: 3e-5)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--wiki-pool", type=int, default=200_000,
                        help="sample the unsupervised examples from the first N wiki sentences (default: 200000)")
    parser.add_argument("--eval-max-length", type=int, default=128, help="truncation when scoring STS-B")
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--precisions", default=None,
                        help="fp32 and/or bf16, comma-separated, each run on both sides (default: both where the "
                             "CPU computes bfloat16 natively, else fp32)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra TrainConfig settings for our side only (e.g. to measure an option)")
    parser.add_argument("--work-dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--worker", choices=["peer", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=list(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--examples", help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        common.set_threads(args.threads)
        result = (worker_peer if args.worker == "peer" else worker_ours)(args)
        common.emit(result)
        return 0

    folder = common.data_dir(args.data_dir)
    model = common.model_path(args.model)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; expected some of {list(TASKS)}.")
    precisions = common.precisions(args.precisions, parser)
    import torch

    from simcse_hub.speed import resolve_precision

    ours_default = resolve_precision("auto", torch.device("cpu"))
    print(common.machine_line(args.threads))
    print(f"encoder: {model}\nsettings: batch {args.batch_size}, max length {args.max_length}, {args.steps} steps, "
          f"lr {args.lr}, seed {args.seed}, {' and '.join(precisions)} on both sides, mean pooling, temperature 0.05 "
          f"(scale 20)" + (f"; ours also {' '.join(args.set)}" if args.set else ""), flush=True)
    seen = args.steps * args.batch_size
    figures = [
        ("examples/s (end to end)", lambda r: seen / r["seconds"], 1),
        ("examples/s (training loop)", lambda r: seen / r["loop_seconds"], 1),
        ("examples per CPU-second (end to end)", lambda r: seen / r["cpu_seconds"], 2),
        ("peak RSS (MiB)", lambda r: r["peak_rss"] / 2**20, 0),
        ("STS-B dev Spearman", lambda r: r["stsb_dev"], 2),
        ("STS-B test Spearman", lambda r: r["stsb_test"], 2),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_", dir=args.work_dir) as work_dir:
        work = Path(work_dir)
        for task in tasks:
            examples, train_file = prepare_examples(args, folder, work, task)
            results = {}
            for precision in precisions:
                for side in ("peer", "ours"):
                    side_dir = work / f"{task}-{side}-{precision}"
                    side_dir.mkdir()
                    worker_args = [
                        side, "--task", task, "--examples", str(examples), "--train-file", str(train_file),
                        "--work-dir", str(side_dir), "--data-dir", str(folder), "--model", model,
                        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                        "--max-length", str(args.max_length), "--lr", str(args.lr), "--seed", str(args.seed),
                        "--eval-max-length", str(args.eval_max_length), "--eval-batch-size", str(args.eval_batch_size),
                        "--precision", precision,
                    ]
                    if args.threads:
                        worker_args += ["--threads", str(args.threads)]
                    if args.set and side == "ours":
                        worker_args += ["--set", *args.set]
                    results[side, precision] = common.run_worker(Path(__file__), worker_args)
                    print(f"  {task} {side} {precision}: {json.dumps(results[side, precision])}", flush=True)
            pairs = [(precision, precision, precision) for precision in precisions]
            if ours_default == "bf16" and set(precisions) == {"fp32", "bf16"}:  # each side's default: ours "auto"
                pairs.append((f"defaults: ours {ours_default}, peer fp32", ours_default, "fp32"))
            for label, ours_precision, peer_precision in pairs:
                for name, get, digits in figures:
                    peer, ours = get(results["peer", peer_precision]), get(results["ours", ours_precision])
                    rows.append([TASKS[task], label, name, common.fmt(peer, digits), common.fmt(ours, digits),
                                 common.ratio(ours, peer)])
    print()
    print(common.table(rows, ["task", "precision", "figure", "sentence-transformers", "simcse_hub", "ours/peer"]))
    print(common.machine_line(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
