"""Encoding: ``simcse_hub.SimCSE.encode`` against ``SentenceTransformer.encode`` on the same 10,000 STS sentences.

    python benchmarks/bench_encode.py
    python benchmarks/bench_encode.py --num-sentences 2000 --repeats 2 --precisions fp32

Both sides: all-MiniLM-L6-v2 (the same folder: ``SimCSE`` loads a sentence-transformers model as such), the same
sentences (the first N distinct sentences of STS-B train/dev/test and SICK-R train/trial/test), batch size, max
length and precision, unit-length float32 numpy output, no progress bar. Precisions: fp32 (both sides' default), and
bf16 autocast (``SimCSE(..., precision="bf16")``, our opt-in reduced-precision mode; the peer's ``encode`` inside
``torch.autocast("cpu", dtype=torch.bfloat16)``). Each side runs in its own process, warms up on 128 sentences, then
encodes all N once per repeat (repeats alternate the order: peer, ours, ours, peer, ...; the best time of each side
is kept, which is the figure least disturbed by other work on the machine). The agreement is the row-wise cosine
with the peer's fp32 embeddings (mean and min).
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


def worker(args: argparse.Namespace) -> dict:
    """Encode the sentences once with one side (after a warm-up); save the embeddings; report the times."""
    import numpy as np
    import torch

    from simcse_hub.encoding import autocast

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

        def encode(batch: list[str]):
            return tool.encode(batch, batch_size=args.batch_size, return_numpy=True, show_progress_bar=False)
    load_seconds = time.perf_counter() - start
    encode(sentences[:128])  # warm-up: first-call allocations and kernel selection
    start, cpu_start = time.perf_counter(), time.process_time()
    embeddings = encode(sentences)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    np.save(args.output, np.asarray(embeddings, dtype=np.float32))
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "load_seconds": load_seconds,
            "peak_rss": common.peak_rss_bytes()}


def cosine_agreement(embeddings, reference) -> str:
    """Row-wise cosine of two ``(n, dim)`` arrays: ``"mean / min"``."""
    import numpy as np

    cosine = np.sum(embeddings * reference, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1))  # (n,)
    return f"{cosine.mean():.7f} / {cosine.min():.7f}"


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--num-sentences", type=int, default=10_000, help="STS sentences to encode (default: 10000)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default: 64)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation in tokens (default: 128)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed passes per side, interleaved between the sides; the best is kept (default: 2)")
    parser.add_argument("--precisions", default=None,
                        help="fp32 and/or bf16 (autocast), comma-separated, each measured on both sides (default: "
                             "both where the CPU computes bfloat16 natively, else fp32)")
    parser.add_argument("--worker", choices=["peer", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--sentences", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        common.set_threads(args.threads)
        common.emit(worker(args))
        return 0

    import numpy as np

    folder = common.data_dir(args.data_dir)
    model = common.model_path(args.model)
    precisions = common.precisions(args.precisions, parser)
    sentences = common.sts_sentences(folder, args.num_sentences)
    print(common.machine_line(args.threads))
    print(f"encoder: {model}\nsettings: {len(sentences)} STS sentences, batch {args.batch_size}, max length "
          f"{args.max_length}, unit vectors as float32 numpy, {args.repeats} timed pass(es) per side", flush=True)
    sides = [("peer", "fp32")] + [(side, precision) for precision in precisions for side in ("peer", "ours")
                                  if (side, precision) != ("peer", "fp32")]
    best: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as work_dir:
        work = Path(work_dir)
        (work / "sentences.json").write_text(json.dumps(sentences), encoding="utf-8")
        for repeat in range(args.repeats):  # alternate the order so that slow spells hit both sides alike
            for side, precision in (sides if repeat % 2 == 0 else sides[::-1]):
                worker_args = [side, "--sentences", str(work / "sentences.json"), "--model", model,
                               "--output", str(work / f"{side}-{precision}.npy"), "--precision", precision,
                               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
                if args.threads:
                    worker_args += ["--threads", str(args.threads)]
                result = common.run_worker(Path(__file__), worker_args)
                for key in ("seconds", "cpu_seconds"):
                    best.setdefault((side, precision), {})[key] = min(
                        best.get((side, precision), {}).get(key, float("inf")), result[key])
                print(f"  pass {repeat + 1} {side} {precision}: {result['seconds']:.2f} s, CPU "
                      f"{result['cpu_seconds']:.2f} s ({len(sentences) / result['seconds']:.1f} sentences/s; load "
                      f"{result['load_seconds']:.1f} s, peak RSS {result['peak_rss'] / 2**20:.0f} MiB)", flush=True)
        reference = np.load(work / "peer-fp32.npy")  # (n, dim), unit rows
        rows = []
        comparisons = [(precision, precision) for precision in precisions]
        if "bf16" in precisions:  # our opt-in bf16 against the peer as it runs by default
            comparisons.append(("bf16", "fp32"))
        for precision, peer_precision in comparisons:
            peer, ours = best["peer", peer_precision], best["ours", precision]
            label = precision if precision == peer_precision else f"ours {precision}, peer {peer_precision}"
            for name, key in (("sentences/s (wall clock, best pass)", "seconds"),
                              ("sentences per CPU-second (best pass)", "cpu_seconds")):
                rate_peer, rate_ours = len(sentences) / peer[key], len(sentences) / ours[key]
                rows.append([label, name, common.fmt(rate_peer), common.fmt(rate_ours),
                             common.ratio(rate_ours, rate_peer)])
            if precision == peer_precision:  # agreement of each side with the peer's fp32 embeddings
                peer_agreement = ("-" if precision == "fp32" else
                                  cosine_agreement(np.load(work / f"peer-{precision}.npy"), reference))
                rows.append([label, "cosine with the peer's fp32 embeddings, mean / min", peer_agreement,
                             cosine_agreement(np.load(work / f"ours-{precision}.npy"), reference), "-"])
    print()
    print(common.table(rows, ["precision", "figure", "sentence-transformers", "simcse_hub", "ours/peer"]))
    print(common.machine_line(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
