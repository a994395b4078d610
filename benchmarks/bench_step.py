"""Training step time, change by change: the same batches through sentence-transformers' step and through
simcse_hub's training forward with its speed changes turned on one after the other, in one process, interleaved.

    python benchmarks/bench_step.py
    python benchmarks/bench_step.py --tasks unsup --batches 20 --buckets 2,8

Each variant has its own copy of all-MiniLM-L6-v2 (mean pooling, dropout on, fp32) and its own fused AdamW; every batch
goes through every variant (the order reversed every other batch), one forward, backward, clipping and optimizer step
each; the first batch warms up. The variants:

* ``peer``: ``SentenceTransformer`` + ``MultipleNegativesRankingLoss(scale=20)``, each column of the batch tokenized
  and encoded as the ``SentenceTransformerTrainer`` does (``bench_train.py`` times the trainer itself);
* ``one pass``: simcse_hub with none of the changes: the batch as one padded tensor, torch's dropout;
* ``+ length buckets``: 4 groups of similar length, each padded to its own longest (``length_buckets=4``);
* ``+ fast dropout``: masks drawn four to a 64-bit random number (``simcse_hub.dropout``; ``fast_dropout=True``):
  the defaults, what ``simcse-hub train`` runs;
* ``buckets=N`` (``--buckets``): the defaults with ``length_buckets=N``.

The table gives the median step time, examples per second, and two ratios: against the peer, and against the row
above (the change of that row alone). Step times only: no data loading, no evaluation (``bench_train.py`` measures
the whole run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

CHANGES = ["one pass", "+ length buckets", "+ fast dropout"]


def read_batches(folder: Path, task: str, count: int, seed: int) -> list[list[str]]:
    """``count`` examples: ``[sentence, sentence]`` (unsupervised) or ``[anchor, entailment, contradiction]``."""
    if task == "unsup":
        sentences = common.sample(common.read_lines(common.require_file(folder, common.WIKI_FILE), 50_000), count, seed)
        return [[sentence, sentence] for sentence in sentences]
    lines = common.read_lines(common.require_file(folder, common.SNLI_FILE))
    return common.sample([line.split("\t") for line in lines[1:]], count, seed)  # header: sent0 sent1 hard_neg


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--tasks", default="unsup,sup", help="unsup (wiki sentences), sup (SNLI triplets)")
    parser.add_argument("--batches", type=int, default=10, help="batches through every variant (default: 10)")
    parser.add_argument("--buckets", default="", help="extra variants: the defaults with these length_buckets (e.g. 2,8)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch (default: 64)")
    parser.add_argument("--max-length", type=int, default=32, help="truncation in tokens (default: 32)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    try:
        extra = [int(value) for value in args.buckets.split(",") if value.strip()]
        if args.batches < 2 or set(tasks) - {"unsup", "sup"} or not tasks or any(value < 1 for value in extra):
            raise ValueError
    except ValueError:
        parser.error("--tasks takes unsup and/or sup, --batches at least 2, --buckets integers >= 1 (e.g. 2,8).")
    try:
        folder, encoder = common.data_dir(args.data_dir), common.model_path(args.model)
        data = {task: read_batches(folder, task, (args.batches + 1) * args.batch_size, args.seed) for task in tasks}
    except common.BenchmarkError as error:
        print(f"bench_step: {error}", file=sys.stderr)
        return 2

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import AutoTokenizer

    from simcse_hub import SimCSEModel
    from simcse_hub.batching import TrainingForward, pad, tokenize
    from simcse_hub.losses import contrastive_loss

    threads = common.set_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    variants = CHANGES + [f"buckets={value}" for value in extra]
    print(f"encoder: {encoder}\nsettings: {args.batches} batches of {args.batch_size} examples per task, max length "
          f"{args.max_length}, mean pooling, fp32, {threads} threads", flush=True)

    def make_step(variant: str):
        """A training step ``step(examples)`` of ``variant``, with its own model and optimizer."""
        torch.manual_seed(args.seed)
        if variant == "peer":
            model = SentenceTransformer(encoder, device="cpu")
            model.max_seq_length = args.max_length
            loss = MultipleNegativesRankingLoss(model, scale=20.0)
            parameters = list(model.parameters())
        else:
            model = SimCSEModel.from_encoder(encoder, pooler_type="avg")
            buckets = int(variant.split("=")[1]) if variant.startswith("buckets=") else 4
            forward = TrainingForward(model, 1 if variant == "one pass" else buckets,
                                      fast_dropout=variant not in CHANGES[:2])
            parameters = [p for p in model.parameters() if p.requires_grad]
        model.train()
        optimizer = torch.optim.AdamW(parameters, lr=3e-5, fused=True)

        def step(examples: list[list[str]]) -> None:
            columns = list(zip(*examples))
            if variant == "peer":  # the trainer's collator tokenizes each column; the loss encodes each
                value = loss([model.tokenize(list(column)) for column in columns], None)
            else:
                features = tokenize(tokenizer, [sentence for example in examples for sentence in example],
                                    args.max_length)
                batch = {key: tensor.view(len(examples), len(columns), -1)
                         for key, tensor in pad(features, tokenizer).items()}
                embeddings, _ = forward(**batch)  # (batch, num_sent, hidden)
                value = contrastive_loss(embeddings[:, 0], embeddings[:, 1],
                                         embeddings[:, 2] if len(columns) == 3 else None, temperature=0.05)
            value.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad()

        return step

    results = {}
    for task in tasks:
        steps = {variant: make_step(variant) for variant in ["peer"] + variants}
        times: dict[str, list[float]] = {variant: [] for variant in steps}
        for index in range(args.batches + 1):
            examples = data[task][index * args.batch_size:(index + 1) * args.batch_size]
            for variant in list(steps) if index % 2 else list(steps)[::-1]:
                start = time.perf_counter()
                steps[variant](examples)
                if index:  # the first batch warms up
                    times[variant].append(time.perf_counter() - start)
            print(f"  {task}: batch {index + 1}/{args.batches + 1}", flush=True)
        results[task] = {variant: statistics.median(values) for variant, values in times.items()}
        del steps

    rows = []
    for task, medians in results.items():
        previous = None
        for variant, median in medians.items():
            rows.append([task, variant, f"{median:.3f}", common.fmt(args.batch_size / median, 1),
                         common.ratio(medians["peer"], median) if variant != "peer" else "-",
                         common.ratio(previous, median) if variant in CHANGES[1:] else "-"])
            previous = median
    print()
    print(common.table(rows, ["task", "variant", "median step (s)", "examples/s", "speed vs peer",
                              "speed vs row above"]))
    print(common.machine_line(threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
