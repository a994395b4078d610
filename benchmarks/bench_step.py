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
* ``+ fast dropout``: masks drawn four to a 64-bit random number (``simcse_hub.speed``; ``fast_dropout=True``);
* ``+ shared lookup``: the tokens of all buckets looked up in one call (``simcse_hub.speed.looked_up_once``):
  the defaults, what ``simcse-hub train`` runs;
* ``buckets=N`` (``--buckets``): the defaults with ``length_buckets=N``.

The table gives the median step time, examples per second, and three ratios: against the peer at the same
precision, against the peer in fp32 (its default), and against the row above (the change of that row alone). Step
times only: no data loading, no evaluation (``bench_train.py`` measures the whole run).

How close a step gets to the machine: ``model GFLOP/s`` is the model's useful work per step (:func:`step_flops`: the
encoder's matrix products on the real tokens, forward and backward; padding not counted) over the median step time,
the same work for every variant; ``of GEMM rate`` is its share of what this CPU computes in the encoder's own matrix
products alone at that precision (:func:`gemm_rate`, measured in the same run). ``--profile`` adds the operators a
default step spends its time in (``torch.profiler``), which is what bounds that share.
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


def step_flops(lengths: list[int], hidden: int, ffn: int, layers: int) -> float:
    """Model FLOPs of one training step on sentences of these token lengths: per layer and sentence of n tokens,
    2n(4h^2 + 2hf) in the linear layers and 4n^2h in attention (scores and weighted values), times 3 for the forward
    and backward passes. Padding, embeddings, LayerNorm, dropout and the loss are not counted."""
    per_layer = sum(2 * n * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * n * n * hidden for n in lengths)
    return 3.0 * layers * per_layer


def gemm_rate(torch, precision: str, rows: int, hidden: int, ffn: int, repeats: int = 10) -> float:
    """GFLOP/s of one encoder layer's linear layers alone at ``precision`` (bf16 tensors for bf16): the forward and
    both backward matrix products of ``rows`` tokens through the four h x h projections and the two feed-forward
    layers, best of ``repeats`` after a warm-up."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    shapes = [(hidden, hidden)] * 4 + [(hidden, ffn), (ffn, hidden)]  # (in, out) of each linear layer
    generator = torch.Generator().manual_seed(0)
    tensors = [(torch.randn(rows, k, generator=generator).to(dtype).requires_grad_(),
                torch.randn(n, k, generator=generator).to(dtype).requires_grad_(),
                torch.randn(rows, n, generator=generator).to(dtype)) for k, n in shapes]
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for x, weight, grad in tensors:
            torch.nn.functional.linear(x, weight).backward(grad)
        times.append(time.perf_counter() - start)
    best = min(times[1:])  # the first call warms up
    return sum(3 * 2 * rows * k * n for k, n in shapes) / best / 1e9


def print_profile(torch, step, examples: list[list[str]], label: str, rows: int = 15) -> None:
    """The operators ``step`` spends its time in over three calls (after one warm-up), by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    step(examples)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(3):
            step(examples)
    print(f"\nprofile of {label} (3 steps, self CPU time):")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


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
    parser.add_argument("--profile", action="store_true",
                        help="also profile a step of the defaults (+ shared lookup) per task and precision")
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
    from transformers import AutoConfig, AutoTokenizer

    from simcse_hub import SimCSEModel
    from simcse_hub.inference import pad, tokenize
    from simcse_hub.losses import contrastive_loss
    from simcse_hub.speed import TrainingForward, autocast

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

    results, flops, rates = {}, {}, {}
    config = AutoConfig.from_pretrained(encoder)
    shape = (config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    device = torch.device("cpu")
    for task in tasks:  # the model's work per step, and the GEMM rate, measured before any model exists
        timed = [s for example in data[task][args.batch_size:] for s in example]  # the batches after the warm-up
        lengths = [len(feature["input_ids"]) for feature in tokenize(tokenizer, timed, args.max_length)]
        flops[task] = step_flops(lengths, *shape) / args.batches
        rates[task] = {precision: gemm_rate(torch, precision, round(sum(lengths) / args.batches / 4), *shape[:2],
                                            repeats=20) for precision in precisions}
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
        if args.profile:
            for precision in precisions:
                print_profile(torch, steps[precision, CHANGES[-1]], data[task][:args.batch_size],
                              f"{task}, {precision}, {CHANGES[-1]}")
        del steps, models

    rows = []
    for task, medians in results.items():
        previous = None
        for (precision, variant), median in medians.items():
            peer, peer_fp32 = medians[precision, "peer"], medians.get(("fp32", "peer"))
            achieved = flops[task] / median / 1e9
            rows.append([task, precision, variant, f"{median:.3f}", common.fmt(args.batch_size / median, 1),
                         common.ratio(peer, median) if variant != "peer" else "-",
                         common.ratio(peer_fp32, median) if (precision, variant) != ("fp32", "peer") else "-",
                         common.ratio(previous, median) if variant in CHANGES[1:] else "-",
                         common.fmt(achieved, 1), f"{achieved / rates[task][precision]:.0%}"])
            previous = median
    print()
    print(common.table(rows, ["task", "precision", "variant", "median step (s)", "examples/s",
                              "speed vs peer (same precision)", "speed vs peer fp32", "speed vs row above",
                              "model GFLOP/s", "of GEMM rate"]))
    for task in results:
        print(f"{task}: {flops[task] / 1e9:.1f} GFLOP of model work per step; GEMM rate of the encoder's linear layers "
              "(fwd + bwd, a quarter of a step's tokens per pass): "
              + ", ".join(f"{precision} {rate:.0f} GFLOP/s" for precision, rate in rates[task].items()))
    print(common.machine_line(threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
