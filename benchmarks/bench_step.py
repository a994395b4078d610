"""Training step time, change by change: the same batches through sentence-transformers' step and through
simcse_hub's training forward with its speed changes turned on one after the other, in one process, interleaved.

    python benchmarks/bench_step.py
    python benchmarks/bench_step.py --tasks unsup --batches 20 --buckets 2,8 --precisions bf16

The variants train copies of all-MiniLM-L6-v2 (mean pooling, dropout on) with fused AdamW; every batch
goes through every variant (the order reversed every other batch), one forward, backward, clipping and optimizer step
each; the first batch warms up. The variants, at each precision of ``--precisions`` (fp32, and bf16 autocast as
``simcse-hub train --mixed-precision bf16`` and the peer's trainer with ``bf16=True`` run it):

* ``peer``: ``SentenceTransformer`` + ``MultipleNegativesRankingLoss(scale=20)``, each column of the batch tokenized
  and encoded as the ``SentenceTransformerTrainer`` does (``bench_train.py`` times the trainer itself);
* ``one pass``: simcse_hub with none of the changes: the batch as one padded tensor, torch's dropout;
* ``+ length buckets``: 4 groups of similar length, each padded to its own longest (``length_buckets=4``);
* ``+ fast dropout``: masks drawn four to a 64-bit random number (``simcse_hub.dropout``; ``fast_dropout=True``);
* ``+ shared lookup``: the tokens of all buckets looked up in one call (``simcse_hub.batching.looked_up_once``):
  the defaults, what ``simcse-hub train`` runs;
* ``buckets=N`` (``--buckets``): the defaults with ``length_buckets=N``.

The table gives the median step time, examples per second, and three ratios: against the peer at the same
precision, against the peer in fp32 (its default), and against the row above (the change of that row alone). Step
times only: no data loading, no evaluation (``bench_train.py`` measures the whole run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

CHANGES = ["one pass", "+ length buckets", "+ fast dropout", "+ shared lookup"]


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
    parser.add_argument("--precisions", default=None,
                        help="fp32 and/or bf16, comma-separated (default: both where the CPU computes bfloat16 "
                             "natively, else fp32)")
    args = parser.parse_args(argv)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    precisions = common.precisions(args.precisions, parser)
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
    from simcse_hub.batching import TrainingForward
    from simcse_hub.encoding import autocast, pad, tokenize
    from simcse_hub.losses import contrastive_loss

    threads = common.set_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    variants = ["peer", *CHANGES, *(f"buckets={value}" for value in extra)]
    print(f"encoder: {encoder}\nsettings: {args.batches} batches of {args.batch_size} examples per task, max length "
          f"{args.max_length}, mean pooling, {' and '.join(precisions)}, {threads} threads", flush=True)

    def make_models() -> dict[str, tuple]:
        """The models the variants train, each with its own fused AdamW: the peer's ``SentenceTransformer`` and
        ``MultipleNegativesRankingLoss``, and two simcse_hub models, with torch's dropout and with fast dropout. The
        variants of one kind share a model (they change how a step is computed, not the model), which keeps the
        process small: ten models side by side made step times wander more."""
        models = {}
        for kind in ("peer", "torch dropout", "fast dropout"):
            torch.manual_seed(args.seed)
            if kind == "peer":
                model = SentenceTransformer(encoder, device="cpu")
                model.max_seq_length = args.max_length
                loss = MultipleNegativesRankingLoss(model, scale=20.0)
                parameters = list(model.parameters())
            else:
                model, loss = SimCSEModel.from_encoder(encoder, pooler_type="avg"), None
                parameters = [p for p in model.parameters() if p.requires_grad]
            models[kind] = (model.train(), loss, parameters, torch.optim.AdamW(parameters, lr=3e-5, fused=True))
        return models

    def make_step(variant: str, precision: str, models: dict[str, tuple]):
        """A training step ``step(examples)`` of ``variant`` at ``precision``."""
        kind = "peer" if variant == "peer" else "torch dropout" if variant in CHANGES[:2] else "fast dropout"
        model, loss, parameters, optimizer = models[kind]
        if variant != "peer":
            buckets = int(variant.split("=")[1]) if variant.startswith("buckets=") else 4
            forward = TrainingForward(model, 1 if variant == "one pass" else buckets,
                                      fast_dropout=kind == "fast dropout", shared_lookup=variant not in CHANGES[:3])

        def step(examples: list[list[str]]) -> None:
            columns = list(zip(*examples))
            if variant == "peer":  # the trainer's collator tokenizes each column; the loss encodes each
                inputs = [model.preprocess(list(column)) for column in columns]
                with autocast(precision, device):  # the trainer's autocast covers the loss's forward
                    value = loss(inputs, None)
            else:
                features = tokenize(tokenizer, [sentence for example in examples for sentence in example],
                                    args.max_length)
                batch = {key: tensor.view(len(examples), len(columns), -1)
                         for key, tensor in pad(features, tokenizer).items()}
                with autocast(precision, device):  # as Accelerate's around the prepared TrainingForward
                    embeddings, _ = forward(**batch)  # (batch, num_sent, hidden)
                embeddings = embeddings.float()  # the loss in fp32, as training_step computes it
                value = contrastive_loss(embeddings[:, 0], embeddings[:, 1],
                                         embeddings[:, 2] if len(columns) == 3 else None, temperature=0.05)
            value.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad()

        return step

    results = {}
    device = torch.device("cpu")
    for task in tasks:
        models = make_models()
        steps = {(precision, variant): make_step(variant, precision, models) for precision in precisions
                 for variant in variants}
        times: dict[tuple[str, str], list[float]] = {variant: [] for variant in steps}
        for index in range(args.batches + 1):
            examples = data[task][index * args.batch_size:(index + 1) * args.batch_size]
            for variant in list(steps) if index % 2 else list(steps)[::-1]:
                start = time.perf_counter()
                steps[variant](examples)
                if index:  # the first batch warms up
                    times[variant].append(time.perf_counter() - start)
            print(f"  {task}: batch {index + 1}/{args.batches + 1}", flush=True)
        results[task] = {variant: statistics.median(values) for variant, values in times.items()}
        del steps, models

    rows = []
    for task, medians in results.items():
        previous = None
        for (precision, variant), median in medians.items():
            peer, peer_fp32 = medians[precision, "peer"], medians.get(("fp32", "peer"))
            rows.append([task, precision, variant, f"{median:.3f}", common.fmt(args.batch_size / median, 1),
                         common.ratio(peer, median) if variant != "peer" else "-",
                         common.ratio(peer_fp32, median) if (precision, variant) != ("fp32", "peer") else "-",
                         common.ratio(previous, median) if variant in CHANGES[1:] else "-"])
            previous = median
    print()
    print(common.table(rows, ["task", "precision", "variant", "median step (s)", "examples/s",
                              "speed vs peer (same precision)", "speed vs peer fp32", "speed vs row above"]))
    print(common.machine_line(threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
