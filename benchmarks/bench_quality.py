"""Quality: the model simcse_hub trains against the one sentence-transformers trains, from the same encoder and data,
over several seeds (mean and spread).

    python benchmarks/bench_quality.py                                   # 3 seeds: base, peer, ours
    python benchmarks/bench_quality.py --seeds 42 --variants ours --candidate lr3e5 learning_rate=3e-5

The peer's setting (issue 17): all-MiniLM-L6-v2 with mean pooling, the 6,339 SNLI triplets of ``../shared/data/nli``,
batch 64, learning rate 5e-5 (linear decay, no warm-up), max length 32, one epoch, ``MultipleNegativesRankingLoss``
with scale 20 (InfoNCE at temperature 0.05) in ``SentenceTransformerTrainer``. Variants:

* ``base``: the encoder as it is (once; it has no seed);
* ``peer``: sentence-transformers, the peer's setting;
* ``ours``: ``simcse_hub.train`` with the same settings (mean pooling, temperature 0.05, no evaluation);
* ``preset:NAME``: a preset of simcse_hub (``simcse_hub/presets/NAME.yaml``) on the same triplets, with the seed of
  the run; a preset of two sources (``minilm-mixed``) gets the triplets and ``--sentences-file`` (default: the 2021
  wiki sentences), in fp32 as every run here;
* ``--candidate NAME KEY=VALUE ...``: the peer's setting in simcse_hub with these settings changed (for choosing a
  preset on the dev splits).

Every model is scored by the same code (``simcse_hub.evaluation.evaluate_model`` over ``SimCSE(folder).encode``,
fp32, max length 128): STS-B test and SICK-R test, the figures reported, and STS-B dev and SICK-R trial, the only
ones a preset may be chosen on. Each training run is its own process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

PEER = {"batch_size": 64, "learning_rate": 5e-5, "max_seq_length": 32, "num_train_epochs": 1}
SENTENCES_FILE = Path("wiki") / "enwiki2021_413k_sentences.txt.gz"
SCORES = (("stsb_test", "STSBenchmark", "test"), ("sickr_test", "SICKRelatedness", "test"),
          ("stsb_dev", "STSBenchmark", "dev"), ("sickr_dev", "SICKRelatedness", "dev"))


def score(folder: str, data_dir: str) -> dict[str, float]:
    """Spearman x100 on the test and dev splits of STS-B and SICK-R, by the same code for every model."""
    from simcse_hub import SimCSE
    from simcse_hub.evaluation import evaluate_model

    tool = SimCSE(folder, device="cpu")

    def encode(sentences: list[str]):
        return tool.encode(sentences, batch_size=128, max_length=128, normalize_to_unit=False, return_numpy=True,
                           show_progress_bar=False)

    figures = {}
    for split in ("test", "dev"):
        results = evaluate_model(encode, folder, tasks=["STSBenchmark", "SICKRelatedness"], data_dir=data_dir,
                                 split=split, alignment_uniformity=False)
        for key, task, wanted in SCORES:
            if wanted == split:
                figures[key] = float(results["tasks"][task]["spearman"])
    return figures


def worker_peer(args: argparse.Namespace) -> dict:
    """sentence-transformers: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss(scale=20)``."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    lines = common.read_lines(Path(args.train_file))
    rows = [line.split("\t") for line in lines[1:]]  # header: sent0 sent1 hard_neg
    dataset = Dataset.from_dict({name: [row[i] for row in rows] for i, name in enumerate(("anchor", "positive",
                                                                                            "negative"))})
    start = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = PEER["max_seq_length"]
    output = Path(args.work_dir) / f"peer-{args.seed}"
    training_args = Arguments(
        output_dir=str(output / "run"), per_device_train_batch_size=PEER["batch_size"],
        num_train_epochs=PEER["num_train_epochs"], learning_rate=PEER["learning_rate"], lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=args.seed, data_seed=args.seed, report_to="none",
        save_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset,
                               loss=MultipleNegativesRankingLoss(model, scale=20.0)).train()
    model.max_seq_length = 128
    model.save(str(output / "model"))
    return {"seconds": time.perf_counter() - start, **score(str(output / "model"), args.data_dir)}


def worker_ours(args: argparse.Namespace) -> dict:
    """simcse_hub: the peer's setting, a preset, or a candidate (the peer's setting with changes)."""
    from simcse_hub.config import TrainConfig, preset_path, read_yaml
    from simcse_hub.train import train

    config = TrainConfig(train_file=args.train_file)
    if args.variant.startswith("preset:"):  # the preset's recipe on the run's triplets (replacing its dataset)
        name = args.variant.removeprefix("preset:")
        config.update(read_yaml(preset_path(name)), source=f"preset {name!r}")
        config.update({"train_file": args.train_file, "mixed_precision": "no"}, source="benchmark")
    else:
        config.update({"train_file": args.train_file, "pooler_type": "avg", "temperature": 0.05,
                       "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0, "eval_steps": 0,
                       "mixed_precision": "no", **PEER}, source="the peer's setting")
        config.update(dict(item.split("=", 1) for item in args.set), source="--candidate")
    output = Path(args.work_dir) / f"{args.variant.replace(':', '-')}-{args.seed}"
    config.update({"model_name_or_path": args.model, "seed": args.seed, "output_dir": str(output),
                   "overwrite_output_dir": True, "report_to": "none", "data_dir": args.data_dir}, source="benchmark")
    start = time.perf_counter()
    train(config.validate())
    return {"seconds": time.perf_counter() - start, **score(str(output), args.data_dir)}


def preset_files(variant: str, train_file: Path, folder: Path, sentences_file: str) -> str:
    """The ``train_file`` of a run: the triplets; for a preset of two sources, the triplets and the sentences file."""
    if not variant.startswith("preset:"):
        return str(train_file)
    from simcse_hub.config import layered_config

    name = variant.removeprefix("preset:")
    count = len(layered_config(preset=name).sources())
    if count > 2:
        raise SystemExit(f"preset {name!r} has {count} sources; bench_quality.py maps at most 2 (the triplets, then "
                         "--sentences-file).")
    files = [train_file, common.require_file(folder, Path(sentences_file))][:count]
    return ",".join(str(path) for path in files)


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated training seeds (default: 42,43,44)")
    parser.add_argument("--variants", default="base,peer,ours",
                        help="comma-separated: base, peer, ours, preset:NAME (default: %(default)s)")
    parser.add_argument("--candidate", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                        help="also train the peer's setting with these changes, e.g. --candidate lr2 "
                             "learning_rate=2e-5 (repeatable)")
    parser.add_argument("--sentences-file", default=str(SENTENCES_FILE),
                        help="a two-source preset's second source, in --data-dir (default: %(default)s)")
    parser.add_argument("--work-dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--worker", choices=["peer", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--set", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        common.set_threads(args.threads)
        common.emit(worker_peer(args) if args.worker == "peer" else worker_ours(args))
        return 0

    folder = common.data_dir(args.data_dir)
    model = common.model_path(args.model)
    train_file = common.require_file(folder, common.SNLI_FILE)
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    variants = [(name, []) for name in args.variants.split(",") if name.strip()]
    variants += [(f"candidate:{name}", settings) for name, *settings in args.candidate]
    print(common.machine_line(args.threads))
    print(f"encoder: {model}; data: {train_file.name}; the peer's setting: {PEER}, mean pooling, scale 20; seeds "
          f"{seeds}", flush=True)
    results: dict[str, list[dict]] = {}
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory(prefix="bench_quality_", dir=args.work_dir) as work:
        for name, settings in variants:
            if name == "base":
                results[name] = [score(model, str(folder))]
                print(f"base: {results[name][0]}", flush=True)
                continue
            files = preset_files(name, train_file, folder, args.sentences_file)
            for seed in seeds:
                worker = ["peer" if name == "peer" else "ours", "--variant", name, "--seed", str(seed),
                          "--model", model, "--data-dir", str(folder), "--train-file", files,
                          "--work-dir", work, *(["--threads", str(args.threads)] if args.threads else []),
                          "--set", *settings]
                result = common.run_worker(script, worker)
                results.setdefault(name, []).append(result)
                print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)
    print("\n| model | STS-B test | SICK-R test | mean of the two | STS-B dev | SICK-R trial | runs |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        cells = [summary([run[key] for run in runs]) for key in ("stsb_test", "sickr_test")]
        cells.append(summary([(run["stsb_test"] + run["sickr_test"]) / 2 for run in runs]))
        cells += [summary([run[key] for run in runs]) for key in ("stsb_dev", "sickr_dev")]
        print(f"| {name} | " + " | ".join(cells) + f" | {len(runs)} |")
    json.dump(results, sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
