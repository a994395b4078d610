"""Training step time by ``length_buckets``: the same wiki batches through simcse_hub's training forward with 1, 2, 4
and 8 length buckets, in turn, so that every setting sees the same batches under the same machine load.

    python benchmarks/bench_buckets.py
    python benchmarks/bench_buckets.py --batches 20 --buckets 1,4 --pooler cls

One process, all-MiniLM-L6-v2, unsupervised SimCSE (each sentence twice, dropout on), batch 64, max length 32, fp32,
fused AdamW. Each batch goes through every setting (the order reversed every other batch), one optimizer step each;
the first batch is a warm-up. The table gives the median step time and its ratio to one bucket (one padded pass, as
without buckets), and the share of positions in each setting's forward passes that are real tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--batches", type=int, default=10, help="batches through every setting (default: 10)")
    parser.add_argument("--buckets", default="1,2,4,8", help="length_buckets settings to compare (default: 1,2,4,8)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch (default: 64)")
    parser.add_argument("--max-length", type=int, default=32, help="truncation in tokens (default: 32)")
    parser.add_argument("--pooler", default="avg", help="SimCSE pooler (default: avg)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        settings = [int(value) for value in args.buckets.split(",")]
        if not settings or min(settings) < 1 or args.batches < 2:
            raise ValueError
    except ValueError:
        parser.error("--buckets takes integers >= 1 separated by commas (e.g. 1,4) and --batches at least 2.")
    try:
        folder, encoder = common.data_dir(args.data_dir), common.model_path(args.model)
        sentences = common.sample(common.read_lines(common.require_file(folder, common.WIKI_FILE), 50_000),
                                  args.batches * args.batch_size, args.seed)
    except common.BenchmarkError as error:
        print(f"bench_buckets: {error}", file=sys.stderr)
        return 2

    import torch
    from transformers import AutoTokenizer

    from simcse_hub import SimCSEModel
    from simcse_hub.batching import TrainingForward, length_buckets, pad, tokenize
    from simcse_hub.losses import contrastive_loss

    threads = common.set_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    features = tokenize(tokenizer, sentences, args.max_length)
    model = SimCSEModel.from_encoder(encoder, pooler_type=args.pooler).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-5, fused=True)
    times: dict[int, list[float]] = {setting: [] for setting in settings}
    real: dict[int, list[float]] = {setting: [] for setting in settings}
    print(f"encoder: {encoder}\nsettings: {args.batches} batches of {args.batch_size} wiki sentences (each twice), "
          f"max length {args.max_length}, pooler {args.pooler}, fp32", flush=True)
    for index in range(args.batches):
        part = features[index * args.batch_size:(index + 1) * args.batch_size]
        flat = pad([feature for feature in part for _ in range(2)], tokenizer)  # (2 * batch, seq_len)
        batch = {key: value.view(len(part), 2, -1) for key, value in flat.items()}
        lengths = flat["attention_mask"].sum(-1).tolist()
        for setting in settings if index % 2 else settings[::-1]:
            step = TrainingForward(model, setting)
            start = time.perf_counter()
            embeddings, _ = step(**batch)  # (batch, 2, hidden)
            loss = contrastive_loss(embeddings[:, 0].float(), embeddings[:, 1].float(), temperature=0.05)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if index:  # the first batch warms up
                times[setting].append(time.perf_counter() - start)
            groups = length_buckets(lengths, setting)
            real[setting].append(sum(lengths) / sum(len(group) * max(lengths[i] for i in group) for group in groups))
        print(f"  batch {index + 1}/{args.batches}", flush=True)
    base = statistics.median(times[settings[0]]) if settings[0] == 1 else None
    rows = []
    for setting in settings:
        median = statistics.median(times[setting])
        rows.append([setting, f"{median:.3f}", common.fmt(statistics.mean(real[setting]) * 100, 1) + "%",
                     common.ratio(base, median) if base else "-"])
    print()
    print(common.table(rows, ["length_buckets", "median step (s)", "real tokens", "speed vs 1 bucket"]))
    print(common.machine_line(threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
