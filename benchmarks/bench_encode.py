"""Encoding: ``simcse_hub.SimCSE.encode`` against ``SentenceTransformer.encode`` on the same 10,000 sentences.

    python benchmarks/bench_encode.py
    python benchmarks/bench_encode.py --corpus wiki --num-sentences 3000 --token-budgets 2048,4096
    python benchmarks/bench_encode.py --num-sentences 2000 --repeats 2 --precisions fp32
    python benchmarks/bench_encode.py --precisions fp32 --token-budgets 2048 --onnx fp32,int8

Both sides: all-MiniLM-L6-v2 (the same folder: ``SimCSE`` loads a sentence-transformers model as such), the same
sentences (``--corpus sts``: the first N distinct sentences of STS-B train/dev/test and SICK-R train/trial/test;
``--corpus wiki``: N wiki sentences drawn with a seed), batch size, max length and precision, unit-length float32
numpy output, no progress bar. Precisions: fp32 (both sides' default), bf16 autocast (``SimCSE(...,
precision="bf16")``; the peer's ``encode`` inside ``torch.autocast("cpu", dtype=torch.bfloat16)``) and int8
(``SimCSE(..., precision="int8")``, our opt-in dynamic quantization; the peer has no such mode and is compared at
fp32). ``--token-budgets`` adds our fp32 encoding with batches formed by a padded-token budget
(``max_tokens_per_batch``) instead of ``--batch-size`` sentences. ``--onnx fp32,int8`` (the default where
onnxruntime is installed) adds the model exported once with ``simcse_hub.inference.export_onnx`` (fp32, and
``quantize="int8"``) and encoded by ``SimCSE`` through onnxruntime in batches of ``--onnx-token-budget`` padded tokens
(SimCSE's default, 2,048).

Each variant runs in its own process, warms up on 128 sentences, then encodes all N once per repeat (repeats
alternate the order: peer, ours, ..., then backwards; the best time of each variant is kept, the figure least
disturbed by other work on the machine). The agreement is the row-wise cosine with the peer's fp32 embeddings (mean
and min); the quality is the STS-B dev Spearman of each variant's embeddings (encoded once, untimed, after the first
timed pass).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common


def worker(args: argparse.Namespace) -> dict:
    """Encode the sentences once with one variant (after a warm-up); save the embeddings; report the times. (Or,
    ``--worker export``: write the ONNX export of ``--model`` in ``--precision`` to the folder ``--output``.)"""
    import numpy as np
    import torch

    from simcse_hub.speed import autocast

    if args.worker == "export":
        from simcse_hub.inference import export_onnx

        quantize = None if args.precision == "fp32" else args.precision
        export_onnx(args.model, args.output, quantize=quantize, max_length=args.max_length)
        return {}

    sentences = json.loads(Path(args.sentences).read_text(encoding="utf-8"))
    start = time.perf_counter()
    if args.worker == "peer":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(args.model, device="cpu")
        model.max_seq_length = args.max_length

        def encode(batch: list[str]):
            with autocast(args.precision, torch.device("cpu")):  # bf16: how a user runs the peer in bf16 autocast
                return model.encode(batch, batch_size=args.batch_size, convert_to_numpy=True,
                                    show_progress_bar=False, normalize_embeddings=True)
    else:
        from simcse_hub import SimCSE

        options = {} if args.precision == "fp32" else {"precision": args.precision}
        tool = SimCSE(args.model, device="cpu", max_length=args.max_length, **options)
        batching = ({"max_tokens_per_batch": args.token_budget} if args.token_budget
                    else {"batch_size": args.batch_size})

        def encode(batch: list[str]):
            return tool.encode(batch, return_numpy=True, show_progress_bar=False, **batching)
    load_seconds = time.perf_counter() - start
    encode(sentences[:128])  # warm-up: first-call allocations and kernel selection
    start, cpu_start = time.perf_counter(), time.process_time()
    embeddings = encode(sentences)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    np.save(args.output, np.asarray(embeddings, dtype=np.float32))
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "load_seconds": load_seconds,
              "peak_rss": common.peak_rss_bytes()}
    if args.stsb:
        result["stsb_dev"] = common.stsb_spearman(encode, Path(args.stsb))
    return result


def cosine_agreement(embeddings, reference) -> str:
    """Row-wise cosine of two ``(n, dim)`` arrays: ``"mean / min"``."""
    import numpy as np

    cosine = np.sum(embeddings * reference, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1))  # (n,)
    return f"{cosine.mean():.7f} / {cosine.min():.7f}"


def time_processes(model: str, sentences: list[str], work: Path, args: argparse.Namespace) -> list[list[str]]:
    """``simcse-hub encode`` on the sentences (a text file, a .npy output), in one process (torch's threads) and with
    ``--num-processes N`` (the CPU threads shared out): the whole command's wall time, best of the repeats."""
    import subprocess

    import numpy as np

    (work / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    seconds: dict[int, float] = {}
    for repeat in range(args.repeats):
        for processes in ((1, args.processes) if repeat % 2 == 0 else (args.processes, 1)):
            command = [sys.executable, "-m", "simcse_hub.cli", "encode", model, "--input", str(work / "sentences.txt"),
                       "--output", str(work / f"cli-{processes}.npy"), "--max-length", str(args.max_length),
                       "--num-processes", str(processes)]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env, cwd=common.REPO_ROOT)
            seconds[processes] = min(seconds.get(processes, float("inf")), time.perf_counter() - start)
            print(f"  pass {repeat + 1} encode --num-processes {processes}: {seconds[processes]:.2f} s", flush=True)
    one = np.load(work / "cli-1.npy")
    return [[f"{processes} process(es)", f"{seconds[processes]:.2f}", common.fmt(len(sentences) / seconds[processes]),
             common.ratio(seconds[1], seconds[processes]),
             cosine_agreement(np.load(work / f"cli-{processes}.npy"), one)] for processes in (1, args.processes)]


def variant_name(side: str, precision: str, budget: int | None) -> str:
    return f"{side}-{precision}" + (f"-tokens{budget}" if budget else "")


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--corpus", choices=["sts", "wiki"], default="sts",
                        help="sts: distinct STS-B and SICK-R sentences (short); wiki: wiki sentences (longer) "
                             "(default: sts)")
    parser.add_argument("--num-sentences", type=int, default=10_000, help="sentences to encode (default: 10000)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default: 64)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation in tokens (default: 128)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed passes per variant, interleaved; the best is kept (default: 2)")
    parser.add_argument("--precisions", default=None,
                        help="fp32, bf16 (autocast, both sides) and/or int8 (ours), comma-separated (default: fp32 "
                             "and int8, plus bf16 where the CPU computes bfloat16 natively)")
    parser.add_argument("--token-budgets", default="",
                        help="padded tokens per batch (comma-separated) of extra fp32 variants of ours with "
                             "max_tokens_per_batch instead of --batch-size (default: none)")
    parser.add_argument("--onnx", default=None,
                        help="ONNX exports encoded through onnxruntime: fp32 and/or int8, comma-separated, or none "
                             "(default: fp32,int8 where onnxruntime is installed)")
    parser.add_argument("--onnx-token-budget", type=int, default=2048,
                        help="padded tokens per batch of the ONNX variants (default: 2048, SimCSE's default)")
    parser.add_argument("--processes", type=int, default=0,
                        help="also time `simcse-hub encode --num-processes N` against one process (default: skip)")
    parser.add_argument("--no-stsb", action="store_true", help="skip the STS-B dev Spearman of each variant")
    parser.add_argument("--seed", type=int, default=0, help="seed of the wiki sample (default: 0)")
    parser.add_argument("--worker", choices=["peer", "ours", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--sentences", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--token-budget", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stsb", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        common.set_threads(args.threads)
        common.emit(worker(args))
        return 0

    import numpy as np

    folder = common.data_dir(args.data_dir)
    model = common.model_path(args.model)
    asked = [item.strip() for item in args.precisions.split(",") if item.strip()] if args.precisions else None
    with_int8 = asked is None or "int8" in asked
    float_asked = [item for item in asked if item != "int8"] if asked else None
    precisions = common.precisions(",".join(float_asked) if float_asked else None, parser)
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # int8 and the token budgets are read against fp32
    try:
        budgets = [int(item) for item in args.token_budgets.split(",") if item.strip()]
    except ValueError:
        parser.error(f"--token-budgets {args.token_budgets!r}: expected positive integers, comma-separated.")
    if any(budget < 1 for budget in budgets):
        parser.error(f"--token-budgets {args.token_budgets!r}: expected positive integers.")
    onnx = args.onnx if args.onnx is not None else "fp32,int8" if importlib.util.find_spec("onnxruntime") else ""
    onnx_precisions = [item.strip() for item in onnx.split(",") if item.strip() and item.strip() != "none"]
    if set(onnx_precisions) - {"fp32", "int8"}:
        parser.error(f"--onnx {args.onnx!r}: expected fp32 and/or int8, comma-separated, or none.")
    if args.corpus == "sts":
        sentences = common.sts_sentences(folder, args.num_sentences)
    else:
        sentences = common.wiki_sentences(folder, args.num_sentences, args.seed)
    print(common.machine_line(args.threads))
    print(f"encoder: {model}\nsettings: {len(sentences)} {args.corpus} sentences, batch {args.batch_size}, max "
          f"length {args.max_length}, unit vectors as float32 numpy, {args.repeats} timed pass(es) per variant",
          flush=True)
    variants = [("peer", precision, None) for precision in precisions]
    variants += [("ours", precision, None) for precision in precisions]
    variants += [("ours", "int8", None)] if with_int8 else []
    variants += [("ours", "fp32", budget) for budget in budgets]
    variants += [("onnx", precision, None) for precision in onnx_precisions]
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as work_dir:
        work = Path(work_dir)
        (work / "sentences.json").write_text(json.dumps(sentences), encoding="utf-8")
        for precision in onnx_precisions:  # exported once, untimed, in a worker (this process stays small: a
            # child's peak RSS starts from its parent's); the folder is what the onnx workers load
            common.run_worker(Path(__file__), ["export", "--model", model, "--output", str(work / f"onnx-{precision}"),
                                               "--precision", precision, "--max-length", str(args.max_length)])
        for repeat in range(args.repeats):  # alternate the order so that slow spells hit every variant alike
            for side, precision, budget in (variants if repeat % 2 == 0 else variants[::-1]):
                name = variant_name(side, precision, budget)
                source, mode = (work / name, "fp32") if side == "onnx" else (model, precision)  # int8: in the file
                worker_args = ["ours" if side == "onnx" else side, "--sentences", str(work / "sentences.json"),
                               "--model", str(source), "--output", str(work / f"{name}.npy"), "--precision", mode,
                               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
                if budget or side == "onnx":
                    worker_args += ["--token-budget", str(budget or args.onnx_token_budget)]
                if args.threads:
                    worker_args += ["--threads", str(args.threads)]
                if repeat == 0 and not args.no_stsb:
                    worker_args += ["--stsb", str(folder)]
                result = common.run_worker(Path(__file__), worker_args)
                record = best.setdefault(name, {})
                for key in ("seconds", "cpu_seconds"):
                    record[key] = min(record.get(key, float("inf")), result[key])
                if "stsb_dev" in result:
                    record["stsb_dev"] = result["stsb_dev"]
                print(f"  pass {repeat + 1} {name}: {result['seconds']:.2f} s, CPU {result['cpu_seconds']:.2f} s "
                      f"({len(sentences) / result['seconds']:.1f} sentences/s; load {result['load_seconds']:.1f} s, "
                      f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB)", flush=True)
        reference = np.load(work / "peer-fp32.npy")  # (n, dim), unit rows

        def agreement(name: str) -> str:
            return cosine_agreement(np.load(work / f"{name}.npy"), reference)

        def stsb(name: str) -> str:
            return common.fmt(best[name].get("stsb_dev"), 2)

        rows = []
        comparisons = [(precision, "peer-" + precision, "ours-" + precision) for precision in precisions]
        if "bf16" in precisions:  # our opt-in bf16 against the peer as it runs by default
            comparisons.append(("ours bf16, peer fp32", "peer-fp32", "ours-bf16"))
        if with_int8:
            comparisons.append(("ours int8, peer fp32", "peer-fp32", "ours-int8"))
        comparisons += [(f"fp32, ours {budget} tokens per batch", "peer-fp32", variant_name("ours", "fp32", budget))
                        for budget in budgets]
        comparisons += [(f"onnxruntime {precision}, peer fp32", "peer-fp32", f"onnx-{precision}")
                        for precision in onnx_precisions]
        for label, peer_name, ours_name in comparisons:
            peer, ours = best[peer_name], best[ours_name]
            for figure, key in (("sentences/s (wall clock, best pass)", "seconds"),
                                ("sentences per CPU-second (best pass)", "cpu_seconds")):
                rate_peer, rate_ours = len(sentences) / peer[key], len(sentences) / ours[key]
                rows.append([label, figure, common.fmt(rate_peer), common.fmt(rate_ours),
                             common.ratio(rate_ours, rate_peer)])
            peer_agreement = "-" if peer_name == "peer-fp32" else agreement(peer_name)
            rows.append([label, "cosine with the peer's fp32 embeddings, mean / min", peer_agreement,
                         agreement(ours_name), "-"])
            if not args.no_stsb:
                rows.append([label, "STS-B dev Spearman", stsb(peer_name), stsb(ours_name), "-"])
        own = [variant_name("ours", "fp32", None)] + [variant_name("ours", p, None) for p in precisions if p != "fp32"]
        own += [variant_name("ours", "int8", None)] if with_int8 else []
        own += [variant_name("ours", "fp32", budget) for budget in budgets]
        own += [f"onnx-{precision}" for precision in onnx_precisions]
        base = best["ours-fp32"]
        own_rows = []
        for name in own:
            rate = len(sentences) / best[name]["seconds"]
            own_rows.append([name.removeprefix("ours-"), common.fmt(rate),
                             common.ratio(rate, len(sentences) / base["seconds"]),
                             common.ratio(base["cpu_seconds"], best[name]["cpu_seconds"]), agreement(name),
                             "-" if args.no_stsb else stsb(name),
                             "-" if args.no_stsb else f"{best[name]['stsb_dev'] - base['stsb_dev']:+.2f}"])
        process_rows = time_processes(model, sentences, work, args) if args.processes > 1 else []
    print()
    print(common.table(rows, ["precision", "figure", "sentence-transformers", "simcse_hub", "ours/peer"]))
    print()
    print(common.table(own_rows, ["simcse_hub variant", "sentences/s", "vs ours fp32 (wall)", "vs ours fp32 (CPU)",
                                  "cosine with the peer's fp32, mean / min", "STS-B dev", "vs ours fp32"]))
    if process_rows:
        print()
        print(common.table(process_rows, ["simcse-hub encode (whole command)", "wall seconds (best pass)",
                                          "sentences/s", "vs 1 process", "cosine with 1 process, mean / min"]))
    print(common.machine_line(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
